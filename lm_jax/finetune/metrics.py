"""Task metrics as the benchmarks define them: accuracy and binary F1 (GLUE; F1 of the
positive class, label index 1, as scikit-learn's `f1_score`), Pearson and Spearman correlation
(GLUE STS-B; Spearman on average ranks, as `scipy.stats.spearmanr`)."""

from __future__ import annotations

import numpy as np


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """log p over the last axis, computed stably in the logits' dtype."""
    shifted = logits - logits.max(-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))


def accuracy(predictions: np.ndarray, labels: np.ndarray) -> float:
    return float(np.mean(np.asarray(predictions) == np.asarray(labels)))


def binary_f1(predictions: np.ndarray, labels: np.ndarray, positive: int = 1) -> float:
    """F1 of class `positive`: 2 tp / (2 tp + fp + fn); 0 when there is no positive at all."""
    predicted, actual = np.asarray(predictions) == positive, np.asarray(labels) == positive
    tp = float(np.sum(predicted & actual))
    denominator = 2 * tp + float(np.sum(predicted & ~actual)) + float(np.sum(~predicted & actual))
    return 2 * tp / denominator if denominator else 0.0


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson's r; nan when either side is constant."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    dx, dy = x - x.mean(), y - y.mean()
    scale = np.sqrt((dx * dx).sum() * (dy * dy).sum())
    return float((dx * dy).sum() / scale) if scale > 0 else float("nan")


def average_ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks, ties sharing the mean of their ranks (`scipy.stats.rankdata`)."""
    x = np.asarray(x)
    order = np.argsort(x, kind="stable")
    sorted_x = x[order]
    starts = np.flatnonzero(np.r_[True, sorted_x[1:] != sorted_x[:-1]])
    ends = np.r_[starts[1:], len(x)]
    ranks = np.empty(len(x), np.float64)
    for s, e in zip(starts, ends):
        ranks[order[s:e]] = (s + e + 1) / 2  # mean of ranks s+1 .. e
    return ranks


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman's rho: Pearson's r of the average ranks."""
    return pearson(average_ranks(x), average_ranks(y))


def classification_metrics(logits: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """accuracy, and f1 when there are two classes."""
    predictions = np.argmax(logits, axis=-1)
    out = {"accuracy": accuracy(predictions, labels)}
    if logits.shape[-1] == 2:
        out["f1"] = binary_f1(predictions, labels)
    return out


def regression_metrics(scores: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """pearson, spearman, and their mean (GLUE's STS-B "combined score")."""
    p, s = pearson(scores, labels), spearman(scores, labels)
    return {"pearson": p, "spearman": s, "combined": (p + s) / 2}
