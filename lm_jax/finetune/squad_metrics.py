"""SQuAD 2.0's metrics by the rules of its official `evaluate-v2.0.py` (Rajpurkar et al. 2018):
answers normalised (lower case, punctuation and the articles a / an / the removed, whitespace
collapsed), an unanswerable question's gold answer the empty string, the maximum over gold
answers; `exact` and `f1` (token-overlap F1) in percent, over all questions and over the
answerable (`HasAns_*`) and unanswerable (`NoAns_*`) ones; and, from the null odds, the
threshold sweep that gives `best_exact` / `best_f1` and their thresholds.
"""

from __future__ import annotations

import collections
import re
import string

import numpy as np

_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lower case, no punctuation, no articles, single spaces (the official normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    return " ".join(_ARTICLES.sub(" ", text).split())


def exact_match(gold: str, predicted: str) -> float:
    return float(normalize_answer(gold) == normalize_answer(predicted))


def token_f1(gold: str, predicted: str) -> float:
    """F1 of the normalised tokens' overlap; 1 when both are empty, 0 when one is."""
    gold_tokens = normalize_answer(gold).split()
    predicted_tokens = normalize_answer(predicted).split()
    if not gold_tokens or not predicted_tokens:
        return float(gold_tokens == predicted_tokens)
    same = sum((collections.Counter(gold_tokens) & collections.Counter(predicted_tokens)).values())
    if not same:
        return 0.0
    precision, recall = same / len(predicted_tokens), same / len(gold_tokens)
    return 2 * precision * recall / (precision + recall)


def raw_scores(
    gold: dict[str, tuple[str, ...]], predictions: dict[str, str]
) -> tuple[dict[str, float], dict[str, float]]:
    """(exact, f1) per question with a prediction, max over its gold answers (those that
    normalise to nothing dropped; none left means the gold answer is "")."""
    exact, f1 = {}, {}
    for qid, answers in gold.items():
        if qid not in predictions:
            continue
        answers = [a for a in answers if normalize_answer(a)] or [""]
        exact[qid] = max(exact_match(a, predictions[qid]) for a in answers)
        f1[qid] = max(token_f1(a, predictions[qid]) for a in answers)
    return exact, f1


def threshold_curve(
    predictions: dict[str, str],
    scores: dict[str, float],
    null_odds: dict[str, float],
    has_answer: dict[str, bool],
) -> tuple[np.ndarray, np.ndarray]:
    """(thresholds, score in percent): questions taken in increasing null odds, each in turn
    answered as predicted while the rest abstain (the official `find_best_thresh` sweep); the
    first point, every question abstaining, is reported at threshold 0 as the official
    script does."""
    total = sum(not v for v in has_answer.values())
    thresholds, totals = [0.0], [total]
    for qid in sorted(null_odds, key=null_odds.get):
        if qid not in scores:
            continue
        if has_answer[qid]:
            total += scores[qid]
        elif predictions[qid]:
            total -= 1
        thresholds.append(null_odds[qid])
        totals.append(total)
    return np.array(thresholds), 100.0 * np.array(totals, np.float64) / len(scores)


def best_threshold(
    predictions: dict[str, str],
    scores: dict[str, float],
    null_odds: dict[str, float],
    has_answer: dict[str, bool],
) -> tuple[float, float]:
    """(best score in percent, its threshold): the sweep's first maximum (the official script
    moves only on a strict improvement)."""
    thresholds, percents = threshold_curve(predictions, scores, null_odds, has_answer)
    best = int(np.argmax(percents))
    return float(percents[best]), float(thresholds[best])


def _means(exact: dict, f1: dict, qids: list[str]) -> dict[str, float]:
    return {
        "exact": 100.0 * float(np.sum([exact[q] for q in qids])) / len(qids),
        "f1": 100.0 * float(np.sum([f1[q] for q in qids])) / len(qids),
        "total": len(qids),
    }


def squad_v2_metrics(
    gold: dict[str, tuple[str, ...]],
    predictions: dict[str, str],
    null_odds: dict[str, float] | None = None,
    null_odds_threshold: float = 1.0,
) -> dict[str, float]:
    """The official evaluation of `predictions` against `gold` (question id -> gold answer
    texts, empty for unanswerable questions). With `null_odds`, a question whose odds exceed
    `null_odds_threshold` counts as abstaining, and best_exact / best_f1 and their thresholds
    are added. Every gold question needs a prediction."""
    if not gold:
        raise ValueError("no questions to score")
    missing = sorted(set(gold) - set(predictions))
    if missing:
        raise ValueError(f"no prediction for {len(missing)} questions, e.g. {missing[:3]}")
    has_answer = {qid: bool(answers) for qid, answers in gold.items()}
    exact_raw, f1_raw = raw_scores(gold, predictions)
    odds = null_odds if null_odds is not None else {qid: 0.0 for qid in predictions}

    def thresholded(scores: dict[str, float]) -> dict[str, float]:
        return {
            q: float(not has_answer[q]) if odds[q] > null_odds_threshold else s
            for q, s in scores.items()
        }

    exact, f1 = thresholded(exact_raw), thresholded(f1_raw)
    out = _means(exact, f1, list(gold))
    for prefix, wanted in (("HasAns", True), ("NoAns", False)):
        qids = [q for q in gold if has_answer[q] == wanted]
        if qids:
            out.update({f"{prefix}_{k}": v for k, v in _means(exact, f1, qids).items()})
    if null_odds is not None:
        out["best_exact"], out["best_exact_thresh"] = best_threshold(
            predictions, exact_raw, odds, has_answer
        )
        out["best_f1"], out["best_f1_thresh"] = best_threshold(
            predictions, f1_raw, odds, has_answer
        )
    return out
