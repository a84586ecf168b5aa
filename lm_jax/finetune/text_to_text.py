"""Text-to-text fine-tuning (Raffel et al. 2020, T5 sec. 2.4 and appendix D): every
classification, regression and QA task as a model that reads the task's text with a prefix
("sst2 sentence: ...", "rte sentence1: ... sentence2: ...", "question: ... context: ...") and
writes its answer: the label's word, the STS-B score rounded to the nearest 0.2 as text, or
the answer's span. The model is an encoder-decoder (T5, BART, MASS) or a shared encoder under
a causal, prefix-LM or UniLM mask (`text_to_text_architectures`). Trained on the answer's
tokens, scored by generating (`lm_jax.generation`, inside the jitted predict step) and
comparing with the heads' metrics (an answer that is no label counts as wrong; an unparsable
score as -1, T5's `string_to_float`), or by rank classification (the label word with the
highest likelihood)."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lm_jax.data.tokenizer import Tokenizer
from lm_jax.errors import ConfigError
from lm_jax.finetune.data import REGRESSION, EncodedSplit, Examples, label_ids, label_set
from lm_jax.finetune.metrics import accuracy, binary_f1, regression_metrics
from lm_jax.finetune.outputs import plot_dev_metric, write_atomically
from lm_jax.finetune.qa import read_qa_splits
from lm_jax.finetune.schema import main_metric
from lm_jax.finetune.sequence import read_splits
from lm_jax.finetune.squad_metrics import squad_v2_metrics
from lm_jax.finetune.task_data import TaskData, task_tokenizer
from lm_jax.finetune.text_to_text_architectures import (
    Architecture,
    EncoderDecoderArchitecture,
    SharedEncoderArchitecture,
)
from lm_jax.finetune.weights import Initial
from lm_jax.generation import GenerationConfig
from lm_jax.generation.generate import text_of
from lm_jax.models.config import TransformerConfig
from lm_jax.train.step import StepTask

log = logging.getLogger(__name__)


def t5_input(prefix: str, text: str, pair: str | None) -> str:
    """T5's input format: `prefix sentence: A`, or `prefix sentence1: A sentence2: B`."""
    if pair is None:
        return f"{prefix} sentence: {text}"
    return f"{prefix} sentence1: {text} sentence2: {pair}"


def score_text(score: float) -> str:
    """STS-B's target as T5 writes it: the score rounded to the nearest 0.2, one decimal."""
    return f"{round(float(score) * 5) / 5:.1f}"


def text_to_float(text: str, default: float = -1.0) -> float:
    """T5's `string_to_float` postprocessor: the number, or `default` when it is none."""
    try:
        return float(text)
    except ValueError:
        return default


def text_to_text_architecture(config, initial: Initial, tokenizer: Tokenizer) -> Architecture:
    """A shared encoder when `initial` generates under a mask (`Initial.lm_mask`), else an
    encoder-decoder: the pretrained one, or T5 from scratch."""
    t, vocab = config.text_to_text, tokenizer.vocab
    generation = dict(
        eos_id=vocab.eos_id,
        pad_id=vocab.pad_id,
        max_new_tokens=t.max_target_length,
        num_beams=t.num_beams,
    )
    source_length = config.data.max_seq_length
    if initial.lm_mask:
        generation = GenerationConfig(**generation, mask_id=vocab.mask_id)
        return SharedEncoderArchitecture(
            tokenizer,
            source_length,
            generation,
            initial.lm_mask,
            t.target_mask_prob,
            initial.family,
        )
    family = initial.family if initial.encoder_cfg else "t5"
    start = vocab.pad_id if family == "t5" else vocab.eos_id
    generation = GenerationConfig(**generation, decoder_start_id=start)
    return EncoderDecoderArchitecture(tokenizer, source_length, generation, family)


@dataclasses.dataclass(frozen=True)
class Cast:
    """A task as text to text: each split's inputs, target texts and the labels its metrics
    read (class indices, scores, or example indices for QA)."""

    train_sources: list[str]
    train_targets: list[str]
    train_labels: np.ndarray
    dev_sources: list[str]
    dev_targets: list[str]
    dev_labels: np.ndarray


class TextToTextTaskData(TaskData):
    """A task's sources, targets and labels, encoded for its `Architecture`: an
    encoder-decoder (T5, BART, MASS; T5 from scratch) or a shared encoder generating under
    `config.text_to_text.mask` (or its pretraining objective's: clm, prefix_lm, unilm)."""

    def __init__(self, config, initial: Initial, workdir: Path, resuming: bool):
        self.config = config
        cast = self._cast(config)
        texts = cast.train_sources + list(dict.fromkeys(cast.train_targets))
        self.tokenizer = task_tokenizer(config, initial, texts, workdir, resuming)
        self.architecture = text_to_text_architecture(config, initial, self.tokenizer)
        self.word_ids = self._targets(self.words) if self.words else None
        self.train = self._encode(cast.train_sources, cast.train_targets, cast.train_labels)
        self.dev = self._encode(cast.dev_sources, cast.dev_targets, cast.dev_labels)
        self.dev_sources, self.dev_targets = cast.dev_sources, cast.dev_targets
        self.metric = main_metric(config)
        self.step_task = StepTask(
            prepare=self.architecture.prepare, sums=self.architecture.sums, loss=_mean
        )

    def _cast(self, config) -> Cast:
        """Classification and regression examples as T5 casts them (sets `labels`, `words`)."""
        train, dev = read_splits(config)
        self.regression = config.task == REGRESSION
        self.labels = [] if self.regression else label_set(train, config.data.labels)
        self.words = list(config.text_to_text.label_words) or self.labels
        if len(self.words) != len(self.labels):
            raise ConfigError(
                f"config.text_to_text.label_words has {len(self.words)} words for the "
                f"{len(self.labels)} labels {self.labels}"
            )
        prefix = config.text_to_text.prefix or config.name
        splits = []
        for examples in (train, dev):
            labels = label_ids(examples, config.task, self.labels)
            if self.regression:
                targets = [score_text(x) for x in labels]
            else:
                targets = [self.words[i] for i in labels]
            splits += [_sources(prefix, examples), targets, labels]
        return Cast(*splits)

    def _targets(self, words: list[str], cut: bool = False) -> np.ndarray:
        """Each target's ids and end-of-sequence, padded to max_target_length. A target that
        does not fit is an error (a cut label word could never be written whole), or with
        `cut` (answers) cut to fit, counted in the log."""
        width = self.config.text_to_text.max_target_length
        out = np.full((len(words), width), self.tokenizer.vocab.pad_id, np.int32)
        too_long = 0
        for i, ids in enumerate(self.tokenizer.encode_ids(words)):
            if len(ids) >= width and not cut:
                raise ConfigError(
                    f"the target {words[i]!r} is {len(ids)} tokens and its end-of-sequence; "
                    f"config.text_to_text.max_target_length={width} is too short"
                )
            too_long += len(ids) >= width
            ids = list(ids[: width - 1])
            out[i, : len(ids) + 1] = [*ids, self.tokenizer.vocab.eos_id]
        if too_long:
            log.warning(
                "%d of %d targets were longer than config.text_to_text.max_target_length=%d "
                "tokens and cut",
                too_long,
                len(words),
                width,
            )
        return out

    def _encode(self, sources: list[str], targets: list[str], labels: np.ndarray) -> EncodedSplit:
        if self.word_ids is not None:
            index = {w: i for i, w in enumerate(self.words)}
            target_ids = self.word_ids[[index[t] for t in targets]]
        else:
            target_ids = self._targets(targets, cut=True)
        arrays, truncated = self.architecture.rows(self.tokenizer.encode_ids(sources), target_ids)
        if truncated:
            log.warning(
                "%d of %d inputs were longer than %d tokens and truncated "
                "(config.data.max_seq_length)",
                truncated,
                len(sources),
                self.config.data.max_seq_length,
            )
        weights = np.ones(len(sources), np.float32)
        return EncodedSplit({**arrays, "labels": labels, "weights": weights}, truncated)

    def describe(self) -> str:
        kind = f"targets {self.words}" if self.words else "scores as text"
        return f"{len(self.train)} train / {len(self.dev)} dev examples, text to text, {kind}"

    def model(self, cfg: TransformerConfig, rngs: nnx.Rngs) -> nnx.Module:
        return self.architecture.model(cfg, rngs)

    def predict(self, model: nnx.Module, rows: dict):
        """Generated token ids [rows, max_target_length], or (rank classification) each
        label word's log-likelihood [rows, labels]."""
        if not self.config.text_to_text.rank_classification:
            return self.architecture.generate(model, rows)
        scores = [
            self.architecture.token_log_likelihoods(model, rows, jnp.asarray(word)).sum(-1)
            for word in self.word_ids
        ]
        return jnp.stack(scores, axis=-1)

    def answers(self, outputs: np.ndarray) -> list[str]:
        """The generated texts, up to each row's end-of-sequence."""
        return [text_of(self.tokenizer, row, self.tokenizer.vocab.eos_id) for row in outputs]

    def predictions(self, outputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(predicted label indices or scores, which answers are no label / no number): an
        invalid label is -1, an invalid score -1.0 (T5's `string_to_float`)."""
        if self.config.text_to_text.rank_classification:
            return outputs.argmax(-1), np.zeros(len(outputs), bool)
        texts = [t.strip() for t in self.answers(outputs)]
        if self.regression:
            scores = np.array([text_to_float(t, np.nan) for t in texts], np.float32)
            invalid = np.isnan(scores)
            return np.where(invalid, -1.0, scores), invalid
        index = {w.strip(): i for i, w in enumerate(self.words)}
        labels = np.array([index.get(t, -1) for t in texts], np.int32)
        return labels, labels < 0

    def metrics(self, outputs: np.ndarray) -> dict[str, float]:
        """accuracy (f1) or pearson / spearman, as the heads report them, and the share of
        answers that are no label or no number (`invalid`)."""
        labels = self.dev.arrays["labels"][: len(outputs)]
        predicted, invalid = self.predictions(outputs)
        if self.regression:
            out = regression_metrics(predicted, labels)
        else:
            out = {"accuracy": accuracy(predicted, labels)}
            if len(self.labels) == 2:
                out["f1"] = binary_f1(predicted, labels)
        return {**out, "invalid": float(np.mean(invalid))}

    def write_outputs(self, workdir: Path, outputs: np.ndarray, evaluations: list[dict]):
        if self.config.text_to_text.rank_classification:
            written = [self.words[i] for i in outputs.argmax(-1)]
        else:
            written = self.answers(outputs)
        lines = ["input\ttarget\tprediction"]
        lines += [f"{s}\t{g}\t{w}" for s, g, w in zip(self.dev_sources, self.dev_targets, written)]
        name = self.config.name
        return {
            "predictions": write_atomically(workdir / "predictions.tsv", "\n".join(lines) + "\n"),
            "dev metric": plot_dev_metric(
                workdir / "dev_metric.png", evaluations, self.metric, f"{name}: dev {self.metric}"
            ),
        }

    def export(self, model, folder: Path) -> Path | None:
        return self.architecture.export(
            model, folder, {"eos_token_id": self.tokenizer.vocab.eos_id}
        )


def _sources(prefix: str, examples: Examples) -> list[str]:
    pairs = examples.pairs or [None] * len(examples)
    return [t5_input(prefix, a, b) for a, b in zip(examples.texts, pairs, strict=True)]


class QATextToTextTaskData(TextToTextTaskData):
    """SQuAD 2.0 as text to text (T5 appendix D, with SQuAD 2.0's unanswerable questions):
    `question: Q context: C` -> the answer's text, or `config.text_to_text.no_answer` for an
    unanswerable question. Scored with the official SQuAD 2.0 metrics (`exact`, `f1`,
    `HasAns_*`, `NoAns_*`), the no-answer text counting as abstaining; generation gives no
    null odds, so `best_*` are not reported. Writes the official `predictions.json`."""

    def _cast(self, config) -> Cast:
        train, dev = read_qa_splits(config)
        self.regression, self.labels, self.words = False, [], []
        self.dev_examples = dev.examples
        no_answer = config.text_to_text.no_answer

        def cast(examples, training: bool) -> list:
            sources = [f"question: {e.question} context: {e.context}" for e in examples]
            if training:
                targets = [
                    e.context[e.answer_start : e.answer_end] if e.answerable else no_answer
                    for e in examples
                ]
            else:
                targets = [e.answers[0] if e.answers else no_answer for e in examples]
            return [sources, targets, np.arange(len(examples), dtype=np.int32)]

        return Cast(*cast(train.examples, True), *cast(dev.examples, False))

    def describe(self) -> str:
        unanswerable = sum(not e.answers for e in self.dev_examples)
        return (
            f"{len(self.train)} train / {len(self.dev)} dev questions ({unanswerable} dev "
            "unanswerable), text to text"
        )

    def predicted_answers(self, outputs: np.ndarray) -> dict[str, str]:
        """Question id -> the generated answer ("" for the no-answer text)."""
        no_answer = self.config.text_to_text.no_answer
        texts = [t.strip() for t in self.answers(outputs)]
        return {
            e.qid: "" if text == no_answer else text for e, text in zip(self.dev_examples, texts)
        }

    def metrics(self, outputs: np.ndarray) -> dict[str, float]:
        predictions = self.predicted_answers(outputs)
        gold = {e.qid: e.answers for e in self.dev_examples[: len(outputs)]}
        return squad_v2_metrics(gold, predictions)

    def write_outputs(self, workdir: Path, outputs: np.ndarray, evaluations: list[dict]):
        paths = super().write_outputs(workdir, outputs, evaluations)
        answers = json.dumps(self.predicted_answers(outputs), indent=1, ensure_ascii=False)
        paths["answers"] = write_atomically(workdir / "predictions.json", answers)
        return paths


def _mean(sums: dict) -> jax.Array:
    return sums["nll_sum"] / jnp.maximum(sums["weight_sum"], 1.0)
