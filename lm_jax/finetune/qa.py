"""Extractive QA with unanswerable questions (SQuAD 2.0; Devlin et al. 2019, sec. 4.3): start
and end logits per token over windows of the context, answers by BERT's n-best post-processing,
the official SQuAD 2.0 metrics on dev, `predictions.json`, `null_odds.json` and
`nbest_predictions.json` in the formats the official evaluation and Hugging Face use, and the
model exported as the family's `...ForQuestionAnswering` (XLNet's `...Simple`)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import ml_collections
import numpy as np
from flax import nnx

from lm_jax.finetune.data import FAMILY_LAYOUTS, TFDS
from lm_jax.finetune.export import export_model
from lm_jax.finetune.metrics import log_softmax
from lm_jax.finetune.outputs import plot_dev_metric, write_atomically
from lm_jax.finetune.qa_data import QASplit, WindowSettings, make_windows, read_squad
from lm_jax.finetune.qa_predictions import Answers, SpanSettings, predict_answers
from lm_jax.finetune.schema import main_metric
from lm_jax.finetune.squad_metrics import raw_scores, squad_v2_metrics, threshold_curve
from lm_jax.finetune.task_data import TaskData, task_tokenizer
from lm_jax.finetune.tasks import predict_spans, span_task
from lm_jax.finetune.tfds_tasks import read_tfds_squad
from lm_jax.finetune.weights import Initial
from lm_jax.models.config import TransformerConfig
from lm_jax.models.encoder import EncoderForQuestionAnswering
from lm_jax.models.seq2seq import BartForQuestionAnswering
from lm_jax.models.xlnet import XLNetForQuestionAnswering
from lm_jax.train.metrics import new_figure, save_figure

QUESTION_ANSWERING = {  # family -> the exported class
    "bert": "BertForQuestionAnswering",
    "electra": "ElectraForQuestionAnswering",
    "roberta": "RobertaForQuestionAnswering",
    "xlnet": "XLNetForQuestionAnsweringSimple",
    "bart": "BartForQuestionAnswering",
}


def span_loss(logits: np.ndarray, rows: dict[str, np.ndarray]) -> float:
    """The training loss on the host: the mean over windows of (start + end cross-entropy) / 2."""
    log_p = log_softmax(logits)
    n = np.arange(len(logits))
    starts = log_p[n, 0, rows["start_positions"][: len(logits)]]
    ends = log_p[n, 1, rows["end_positions"][: len(logits)]]
    return float(-np.mean(starts + ends) / 2)


def read_qa_splits(config: ml_collections.ConfigDict) -> tuple[QASplit, QASplit]:
    """(train, dev) SQuAD-format questions from the files or TFDS splits config.data names."""
    d = config.data
    if d.format == TFDS:
        train = read_tfds_squad(d.tfds_name, d.train_split, d.tfds_data_dir, training=True)
        dev = read_tfds_squad(d.tfds_name, d.dev_split, d.tfds_data_dir, training=False)
    else:
        train = read_squad(d.train_path, training=True)
        dev = read_squad(d.dev_path, training=False)
    n = config.data.max_train_examples
    if n and n < len(train):
        train = QASplit(train.examples[:n], train.source, train.skipped)
    return train, dev


class QATaskData(TaskData):
    """Windows of a SQuAD-format task and what scoring them needs: the dev examples, their
    windows' offsets and the post-processing settings."""

    def __init__(self, config, initial: Initial, workdir: Path, resuming: bool):
        train, dev = read_qa_splits(config)
        contexts = list(dict.fromkeys(e.context for e in train.examples))
        texts = contexts + [e.question for e in train.examples]
        self.config, self.family = config, initial.family
        self.tokenizer = task_tokenizer(config, initial, texts, workdir, resuming)
        q = config.qa
        layout = FAMILY_LAYOUTS[initial.family]
        windows = WindowSettings(
            config.data.max_seq_length, q.doc_stride, q.max_query_length, layout
        )
        self.train = make_windows(train, self.tokenizer, windows).rows
        self.dev_windows = make_windows(dev, self.tokenizer, windows)
        self.dev, self.dev_examples = self.dev_windows.rows, dev.examples
        self.train_questions = len(train)
        self.spans = SpanSettings(q.n_best_size, q.max_answer_length, q.null_threshold)
        self.metric, self.step_task = main_metric(config), span_task()

    def describe(self) -> str:
        unanswerable = sum(not e.answers for e in self.dev_examples)
        return (
            f"{self.train_questions} train / {len(self.dev_examples)} dev questions "
            f"({unanswerable} dev unanswerable) in {len(self.train)} / {len(self.dev)} windows"
        )

    def model(self, cfg: TransformerConfig, rngs: nnx.Rngs) -> nnx.Module:
        if self.family == "xlnet":
            return XLNetForQuestionAnswering(cfg, rngs=rngs)
        if self.family == "bart":
            return BartForQuestionAnswering(cfg, self.tokenizer.vocab.eos_id, rngs=rngs)
        return EncoderForQuestionAnswering(cfg, rngs=rngs)

    predict = staticmethod(predict_spans)

    def answers(self, outputs: np.ndarray) -> Answers:
        return predict_answers(self.dev_examples, self.dev_windows, outputs, self.spans)

    def gold(self, qids) -> dict[str, tuple[str, ...]]:
        return {e.qid: e.answers for e in self.dev_examples if e.qid in qids}

    def metrics(self, outputs: np.ndarray) -> dict[str, float]:
        """The official SQuAD 2.0 metrics of the questions whose windows are all in `outputs`,
        with the null odds (best_* and thresholds), and the mean span loss."""
        answers = self.answers(outputs)
        metrics = squad_v2_metrics(
            self.gold(answers.predictions), answers.predictions, answers.null_odds
        )
        return {**metrics, "loss": span_loss(outputs, self.dev.arrays)}

    def write_outputs(self, workdir: Path, outputs: np.ndarray, evaluations: list[dict]):
        answers = self.answers(outputs)
        nbest = {
            qid: [dataclasses.asdict(c) for c in candidates]
            for qid, candidates in answers.nbest.items()
        }
        name = self.config.name
        paths = {
            "predictions": _write_json(workdir / "predictions.json", answers.predictions),
            "null odds": _write_json(workdir / "null_odds.json", answers.null_odds),
            "n-best": _write_json(workdir / "nbest_predictions.json", nbest),
            "dev metric": plot_dev_metric(
                workdir / "dev_metric.png", evaluations, self.metric, f"{name}: dev F1"
            ),
            "null threshold": self.plot_threshold(workdir / "null_threshold.png", answers),
        }
        return paths

    def plot_threshold(self, path: Path, answers: Answers) -> Path | None:
        """Dev exact and F1 against the null-odds threshold, the best F1's marked."""
        gold = self.gold(answers.predictions)
        has_answer = {q: bool(a) for q, a in gold.items()}
        fig, ax = new_figure()
        for name, scores in zip(("exact", "f1"), raw_scores(gold, answers.predictions)):
            thresholds, percents = threshold_curve(
                answers.predictions, scores, answers.null_odds, has_answer
            )
            ax.step(thresholds[1:], percents[1:], where="post", label=name)
            if name == "f1" and len(thresholds) > 1:
                best = int(np.argmax(percents))
                label = f"best F1 {percents[best]:.2f} at {thresholds[best]:.3f}"
                x = thresholds[best]
                if best == 0:  # abstaining on all: below every odds (the script reports 0)
                    x, label = thresholds[1:].min(), f"best F1 {percents[0]:.2f}: abstain on all"
                ax.plot(x, percents[best], "r*", markersize=12, label=label)
        ax.set_xlabel("null-odds threshold (no answer above it)")
        ax.set_ylabel("dev score (%)")
        ax.set_title(f"{self.config.name}: choosing the no-answer threshold")
        ax.grid(alpha=0.3)
        ax.legend()
        fig.tight_layout()
        return save_figure(fig, path)

    def export(self, model, folder: Path) -> Path | None:
        architecture = QUESTION_ANSWERING.get(self.family)
        return export_model(model, folder, architecture, {}, self.tokenizer)


def _write_json(path: Path, value) -> Path:
    return write_atomically(path, json.dumps(value, indent=1, ensure_ascii=False))
