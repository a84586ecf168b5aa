"""Sequence-level tasks (Devlin et al. 2019, sec. 4.1): classification of one text or a text
pair (SST-2, RTE, the Chinese review sets) and regression (STS-B), on the pooled [CLS] state;
accuracy (and F1 when binary) or Pearson / Spearman on dev, predictions.tsv and a confusion
matrix, exported as `BertForSequenceClassification`."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from lm_jax.finetune.data import (
    FAMILY_LAYOUTS,
    REGRESSION,
    TFDS,
    Examples,
    encode,
    label_ids,
    label_set,
    read_examples,
    split_off,
)
from lm_jax.finetune.export import export_model
from lm_jax.finetune.metrics import classification_metrics, log_softmax, regression_metrics
from lm_jax.finetune.outputs import (
    confusion_matrix,
    plot_confusion,
    plot_dev_metric,
    write_predictions,
)
from lm_jax.finetune.schema import main_metric
from lm_jax.finetune.task_data import TaskData, task_tokenizer
from lm_jax.finetune.tasks import predict_logits, sequence_task
from lm_jax.finetune.tfds_tasks import read_tfds_examples
from lm_jax.finetune.weights import Initial
from lm_jax.models.config import TransformerConfig
from lm_jax.models.encoder import EncoderForSequenceClassification
from lm_jax.models.lstm import LSTMConfig, LSTMRegClassifier
from lm_jax.models.seq2seq import BartForSequenceClassification
from lm_jax.models.xlnet import XLNetForSequenceClassification

log = logging.getLogger(__name__)
DEV_SPLIT_SEED = 0  # one held-out split for every seed of a task without a dev file
SEQUENCE_CLASSIFICATION = {  # family -> the exported class
    "bert": "BertForSequenceClassification",
    "electra": "ElectraForSequenceClassification",
    "roberta": "RobertaForSequenceClassification",
    "xlnet": "XLNetForSequenceClassification",
    "bart": "BartForSequenceClassification",
}


def read_splits(config: ml_collections.ConfigDict) -> tuple[Examples, Examples]:
    """(train, dev) examples: the dev file (or TFDS split), or a held-out fraction of the
    training examples."""
    d = config.data
    if d.format == TFDS:
        read = functools.partial(
            read_tfds_examples,
            d.tfds_name,
            data_dir=d.tfds_data_dir,
            text_column=d.text_column,
            label_column=d.label_column,
            pair_column=d.text_pair_column,
        )
        train, dev_source = read(d.train_split), d.dev_split
    else:
        read = functools.partial(
            read_examples,
            text_column=d.text_column,
            label_column=d.label_column,
            pair_column=d.text_pair_column,
            fmt=d.format,
            header=d.header,
        )
        train, dev_source = read(d.train_path), d.dev_path
    if dev_source:
        dev = read(dev_source)
    else:
        train, dev = split_off(train, d.dev_fraction, DEV_SPLIT_SEED)
    if d.max_train_examples and d.max_train_examples < len(train):
        n = d.max_train_examples
        pairs = None if train.pairs is None else train.pairs[:n]
        train = Examples(train.texts[:n], pairs, train.labels[:n], train.source)
    return train, dev


class SequenceTaskData(TaskData):
    """Encoded rows of a classification or regression task, its label names (empty for
    regression) and its dev texts (for predictions.tsv)."""

    def __init__(self, config, initial: Initial, workdir: Path, resuming: bool):
        train, dev = read_splits(config)
        self.config, self.regression = config, config.task == REGRESSION
        self.family = initial.family
        self.labels = [] if self.regression else label_set(train, config.data.labels)
        train_labels = label_ids(train, config.task, self.labels)
        dev_labels = label_ids(dev, config.task, self.labels)
        texts = train.texts + (train.pairs or [])
        self.tokenizer = task_tokenizer(config, initial, texts, workdir, resuming)
        max_len = config.data.max_seq_length
        layout = FAMILY_LAYOUTS[self.family]
        self.train = encode(train, train_labels, self.tokenizer, max_len, layout)
        self.dev = encode(dev, dev_labels, self.tokenizer, max_len, layout)
        pairs = dev.pairs or [None] * len(dev)
        self.dev_texts = [a if b is None else f"{a} ||| {b}" for a, b in zip(dev.texts, pairs)]
        self.metric = main_metric(config)
        self.step_task = sequence_task(config.task)

    def describe(self) -> str:
        kind = f"labels {self.labels}" if self.labels else "regression"
        return f"{len(self.train)} train / {len(self.dev)} dev examples, {kind}"

    def model(self, cfg: TransformerConfig, rngs: nnx.Rngs) -> nnx.Module:
        num_labels = len(self.labels) or 1
        if self.config.lstm.enabled:
            settings = {k: v for k, v in self.config.lstm.items() if k != "enabled"}
            lstm = LSTMConfig(vocab_size=self.tokenizer.vocab.size, **settings)
            return LSTMRegClassifier(lstm, num_labels, rngs=rngs)
        if self.family == "xlnet":
            return XLNetForSequenceClassification(cfg, num_labels, rngs=rngs)
        if self.family == "bart":  # the decoder starts behind </s>
            eos = self.tokenizer.vocab.eos_id
            return BartForSequenceClassification(cfg, num_labels, eos, rngs=rngs)
        return EncoderForSequenceClassification(cfg, num_labels, self.family, rngs=rngs)

    predict = staticmethod(predict_logits)

    def metrics(self, outputs: np.ndarray) -> dict[str, float]:
        """accuracy (f1) or pearson / spearman, and the training loss's mean."""
        labels = self.dev.arrays["labels"][: len(outputs)]
        if self.regression:
            scores = outputs[:, 0]
            loss = float(np.mean((scores - labels) ** 2))
            return {**regression_metrics(scores, labels), "loss": loss}
        loss = float(-np.mean(log_softmax(outputs)[np.arange(len(labels)), labels]))
        return {**classification_metrics(outputs, labels), "loss": loss}

    def write_outputs(self, workdir: Path, outputs: np.ndarray, evaluations: list[dict]):
        name, labels = self.config.name, self.dev.arrays["labels"]
        paths = {
            "predictions": write_predictions(
                workdir / "predictions.tsv", self.dev_texts, labels, outputs, self.labels
            ),
            "dev metric": plot_dev_metric(
                workdir / "dev_metric.png", evaluations, self.metric, f"{name}: dev {self.metric}"
            ),
        }
        if self.labels:
            counts = confusion_matrix(labels, outputs.argmax(-1), len(self.labels))
            paths["confusion matrix"] = plot_confusion(
                workdir / "confusion.png", counts, self.labels, f"{name}: dev (best model)"
            )
        return paths

    def export(self, model, folder: Path) -> Path | None:
        names = self.labels or ["score"]
        fields = dict(
            num_labels=len(names),
            id2label={str(i): n for i, n in enumerate(names)},
            label2id={n: i for i, n in enumerate(names)},
            problem_type="regression" if self.regression else "single_label_classification",
        )
        architecture = (
            None if self.config.lstm.enabled else SEQUENCE_CLASSIFICATION.get(self.family)
        )
        return export_model(model, folder, architecture, fields, self.tokenizer)
