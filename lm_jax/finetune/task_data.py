"""What a fine-tuning run needs to know about its task, behind one interface: the encoded
training and dev rows, the model with its head, the step's loss, the dev metrics, the files
written at the end and the Hugging Face export. `SequenceTaskData` (classification,
regression) and `QATaskData` (extractive QA) implement it; `lm_jax.finetune.run` trains any
of them the same way."""

from __future__ import annotations

import abc
import hashlib
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from lm_jax.data.pipeline import get_tokenizer
from lm_jax.data.tokenizer import Tokenizer
from lm_jax.finetune.data import EncodedSplit
from lm_jax.finetune.weights import Initial
from lm_jax.models.config import TransformerConfig
from lm_jax.train.step import StepTask


class TaskData(abc.ABC):
    """A task's encoded splits and tokenizer, and the task-specific parts of a run."""

    train: EncodedSplit
    dev: EncodedSplit
    tokenizer: Tokenizer
    metric: str  # the dev metric that picks the best model
    step_task: StepTask

    @abc.abstractmethod
    def describe(self) -> str:
        """The splits' sizes and the labels, for the log."""

    @abc.abstractmethod
    def model(self, cfg: TransformerConfig, rngs: nnx.Rngs) -> nnx.Module:
        """The encoder with this task's new head."""

    @staticmethod
    @abc.abstractmethod
    def predict(model: nnx.Module, rows: dict):
        """The outputs kept for evaluation (traced in the jitted predict step)."""

    @abc.abstractmethod
    def metrics(self, outputs: np.ndarray) -> dict[str, float]:
        """The benchmark's metrics and the mean loss (`loss`) of the first `len(outputs)` dev
        rows' outputs."""

    @abc.abstractmethod
    def write_outputs(
        self, workdir: Path, outputs: np.ndarray, evaluations: list[dict]
    ) -> dict[str, Path]:
        """Write the best model's dev predictions and pictures; name -> path."""

    @abc.abstractmethod
    def export(self, model: nnx.Module, folder: Path) -> Path | None:
        """Write the model as a Hugging Face folder (None when it does not export)."""

    def fingerprint(self) -> str:
        """A digest of the encoded rows: a resumed run must see the same data."""
        digest = hashlib.sha256()
        for split in (self.train, self.dev):
            for name in sorted(split.arrays):
                digest.update(name.encode() + split.arrays[name].tobytes())
        return digest.hexdigest()


def task_tokenizer(
    config: ml_collections.ConfigDict,
    initial: Initial,
    texts: list[str],
    workdir: Path,
    resuming: bool,
) -> Tokenizer:
    """The pretrained source's tokenizer, else config.tokenizer's file, else one trained on
    `texts` (the task's training text) and kept in the run directory."""
    if initial.tokenizer is not None:
        return initial.tokenizer
    return get_tokenizer(config.tokenizer, texts, workdir, reuse=resuming)
