"""Dev-set evaluation during fine-tuning: every dev row once (padded batches), the model's
outputs gathered on the host, the task's metrics and loss computed there."""

from __future__ import annotations

from collections.abc import Callable

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from lm_jax.finetune.best import BestModel
from lm_jax.finetune.data import EncodedSplit, padded_batches
from lm_jax.sharding import global_batch


class Evaluator:
    """`evaluator(params, step)` -> the dev metrics (the loop's `evaluate`: the task's
    `metrics(outputs)`), offering each evaluation to the run's `BestModel`.
    `config.train.eval_batches` > 0 scores only the first batches during training;
    `outputs(params, full=True)` always scores every row. `outputs_at(step)` returns the
    outputs of this process's evaluation at `step` when it scored every row (the end of a run
    reuses its best evaluation's outputs instead of computing them again)."""

    def __init__(
        self,
        predict_step,
        mesh: Mesh,
        split: EncodedSplit,
        metrics: Callable[[np.ndarray], dict[str, float]],
        config: ml_collections.ConfigDict,
        best: BestModel,
    ):
        self.predict_step, self.mesh, self.split = predict_step, mesh, split
        self.metrics, self.config, self.best = metrics, config, best
        self.batches = padded_batches(split, config.train.batch_size)
        share = config.train.batch_size // jax.process_count()
        self.rows_of = slice(jax.process_index() * share, (jax.process_index() + 1) * share)
        self._full_outputs: dict[int, np.ndarray] = {}  # step -> every row's outputs

    def global_rows(self, index: int) -> dict[str, jax.Array]:
        local = {k: v[self.rows_of] for k, v in self.batches[index].items()}
        return global_batch(local, self.mesh)

    def outputs(self, params, full: bool = False) -> np.ndarray:
        """The model's outputs on the dev rows, in order, padding dropped."""
        count = len(self.batches)
        if not full and self.config.train.eval_batches:
            count = min(count, self.config.train.eval_batches)
        with jax.set_mesh(self.mesh):
            out = [np.asarray(self.predict_step(params, self.global_rows(i))) for i in range(count)]
        return np.concatenate(out)[: len(self.split)]

    def outputs_at(self, step: int | None) -> np.ndarray | None:
        return self._full_outputs.get(step)

    def __call__(self, params, step: int) -> dict[str, float]:
        outputs = self.outputs(params)
        metrics = self.metrics(outputs)
        if self.best.offer(step, metrics, params) and len(outputs) == len(self.split):
            self._full_outputs = {step: outputs}  # only the best's are ever asked for
        return metrics
