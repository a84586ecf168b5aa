"""Dev-set evaluation during fine-tuning: every dev example once (padded batches), the
model's outputs gathered on the host, the task's metrics and loss computed there."""

from __future__ import annotations

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from lm_jax.finetune.best import BestModel
from lm_jax.finetune.data import REGRESSION, EncodedSplit, padded_batches
from lm_jax.finetune.metrics import classification_metrics, regression_metrics
from lm_jax.sharding import global_batch


def task_metrics(
    config: ml_collections.ConfigDict, outputs: np.ndarray, split: EncodedSplit
) -> dict[str, float]:
    """The benchmark's metrics of `outputs` (logits [N, labels] or scores [N, 1]) on `split`,
    with the mean loss the training minimises (`loss`)."""
    labels = split.arrays["labels"]
    if config.task == REGRESSION:
        scores = outputs[:, 0]
        return {
            **regression_metrics(scores, labels),
            "loss": float(np.mean((scores - labels) ** 2)),
        }
    shifted = outputs - outputs.max(-1, keepdims=True)
    log_p = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
    loss = float(-np.mean(log_p[np.arange(len(labels)), labels]))
    return {**classification_metrics(outputs, labels), "loss": loss}


class Evaluator:
    """`evaluator(params, step)` -> the dev metrics (the loop's `evaluate`), offering each
    evaluation to the run's `BestModel`. `config.train.eval_batches` > 0 scores only the first
    batches during training; `outputs(params, full=True)` always scores every example."""

    def __init__(
        self,
        predict_step,
        mesh: Mesh,
        split: EncodedSplit,
        config: ml_collections.ConfigDict,
        best: BestModel,
    ):
        self.predict_step, self.mesh, self.split = predict_step, mesh, split
        self.config, self.best = config, best
        self.batches = padded_batches(split, config.train.batch_size)
        share = config.train.batch_size // jax.process_count()
        self.rows_of = slice(jax.process_index() * share, (jax.process_index() + 1) * share)

    def global_rows(self, index: int) -> dict[str, jax.Array]:
        local = {k: v[self.rows_of] for k, v in self.batches[index].items()}
        return global_batch(local, self.mesh)

    def outputs(self, params, full: bool = False) -> np.ndarray:
        """The model's outputs on the dev examples, in order, padding dropped."""
        count = len(self.batches)
        if not full and self.config.train.eval_batches:
            count = min(count, self.config.train.eval_batches)
        with jax.set_mesh(self.mesh):
            out = [np.asarray(self.predict_step(params, self.global_rows(i))) for i in range(count)]
        return np.concatenate(out)[: len(self.split)]

    def __call__(self, params, step: int) -> dict[str, float]:
        outputs = self.outputs(params)
        scored = EncodedSplit({k: v[: len(outputs)] for k, v in self.split.arrays.items()}, 0)
        metrics = task_metrics(self.config, outputs, scored)
        self.best.offer(step, metrics, params)
        return metrics
