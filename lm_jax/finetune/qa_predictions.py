"""From start/end logits to answers, as BERT's `run_squad.py` (`write_predictions`) and Hugging
Face's `compute_predictions_logits` do it for SQuAD 2.0: the `n_best_size` best start and end
tokens of every window, spans inside the context, at most `max_answer_length` tokens long and
starting in a token's maximum-context window, ranked by start + end logit; the no-answer score
is the classification token's span ([CLS]; XLNet's <cls>), minimum over the example's
windows. An example's answer is its best span
unless the no-answer score beats it by more than `null_threshold` (its "null odds").

Answers are cut from the context by the tokens' character offsets, so they are exact context
substrings for every tokenizer (no re-alignment of detokenized text).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from lm_jax.finetune.qa_data import OUTSIDE, QAExample, QAWindows


@dataclasses.dataclass(frozen=True)
class SpanSettings:
    """BERT's SQuAD post-processing defaults."""

    n_best_size: int = 20
    max_answer_length: int = 30
    null_threshold: float = 0.0


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One n-best answer: its text ("" = no answer), logits and n-best probability."""

    text: str
    start_logit: float
    end_logit: float
    probability: float = 0.0


@dataclasses.dataclass(frozen=True)
class Answers:
    """Per question id: the answer text, the null odds (no-answer score minus the best span's)
    and the n-best list."""

    predictions: dict[str, str]
    null_odds: dict[str, float]
    nbest: dict[str, list[Candidate]]


def best_indexes(logits: np.ndarray, n: int) -> np.ndarray:
    """The `n` largest logits' indices, ties in index order (a stable descending sort)."""
    return np.argsort(-logits, kind="stable")[:n]


def _window_spans(
    windows: QAWindows, f: int, start: np.ndarray, end: np.ndarray, s: SpanSettings
) -> list[tuple[float, int, int, int, float, float]]:
    """(score, window, start, end, start logit, end logit) of window f's valid spans, in the
    order of the reference's loops (best starts outer, best ends inner)."""
    i = best_indexes(start, s.n_best_size)[:, None]
    j = best_indexes(end, s.n_best_size)[None, :]
    in_context = windows.offsets[f, :, 0] != OUTSIDE
    valid = (
        in_context[i]
        & in_context[j]
        & windows.max_context[f][i]
        & (j >= i)
        & (j - i + 1 <= s.max_answer_length)
    )
    rows, cols = np.nonzero(valid)  # row-major: the reference's loop order
    starts, ends = i[rows, 0], j[0, cols]
    return [
        (float(start[a] + end[b]), f, int(a), int(b), float(start[a]), float(end[b]))
        for a, b in zip(starts, ends)
    ]


def _softmax(scores: list[float]) -> list[float]:
    top = max(scores)
    exps = [math.exp(x - top) for x in scores]
    return [x / sum(exps) for x in exps]


def _example_answers(
    example: QAExample,
    windows: QAWindows,
    features: np.ndarray,
    logits: np.ndarray,
    s: SpanSettings,
) -> tuple[str, float, list[Candidate]]:
    prelim, null = [], (math.inf, 0.0, 0.0)
    for f in features:
        start, end = logits[f, 0], logits[f, 1]
        c = windows.null_index[f]
        if start[c] + end[c] < null[0]:
            null = (float(start[c] + end[c]), float(start[c]), float(end[c]))
        prelim += _window_spans(windows, f, start, end, s)
    prelim.append((null[0], -1, 0, 0, null[1], null[2]))
    prelim.sort(key=lambda p: p[0], reverse=True)  # stable, as the reference's sorted()
    nbest, seen = [], set()
    for _, f, i, j, start_logit, end_logit in prelim:
        if len(nbest) >= s.n_best_size:
            break
        text = ""
        if f >= 0:
            text = example.context[windows.offsets[f, i, 0] : windows.offsets[f, j, 1]].strip()
            if text in seen:
                continue
        seen.add(text)
        nbest.append(Candidate(text, start_logit, end_logit))
    if "" not in seen:
        nbest.append(Candidate("", null[1], null[2]))
    if len(nbest) == 1:  # only the null answer: the reference's placeholder span
        nbest.insert(0, Candidate("empty", 0.0, 0.0))
    probabilities = _softmax([c.start_logit + c.end_logit for c in nbest])
    nbest = [dataclasses.replace(c, probability=p) for c, p in zip(nbest, probabilities)]
    best = next(c for c in nbest if c.text)
    odds = null[0] - best.start_logit - best.end_logit
    return ("" if odds > s.null_threshold else best.text), odds, nbest


def predict_answers(
    examples: list[QAExample],
    windows: QAWindows,
    logits: np.ndarray,
    settings: SpanSettings = SpanSettings(),
) -> Answers:
    """Answers of the examples that have windows in `logits` ([F, 2, L]: start and end logits
    of `windows`' first F windows); an example is answered only when all its windows are
    scored."""
    scored = len(logits)
    bounds = np.flatnonzero(np.diff(windows.example_index, prepend=-1, append=-2))
    predictions, null_odds, nbest = {}, {}, {}
    for first, stop in zip(bounds[:-1], bounds[1:]):
        if stop > scored:
            break
        example = examples[windows.example_index[first]]
        answer, odds, candidates = _example_answers(
            example, windows, np.arange(first, stop), logits, settings
        )
        predictions[example.qid], null_odds[example.qid] = answer, odds
        nbest[example.qid] = candidates
    return Answers(predictions, null_odds, nbest)
