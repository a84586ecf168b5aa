"""What a fine-tuning run writes besides checkpoints: `eval_results.json` (every evaluation,
the best one), the dev predictions, the dev metric over steps and, for classification, the
confusion matrix. Files are written to a temporary name and renamed, so an interrupted write
never leaves a torn file."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from lm_jax.finetune.metrics import log_softmax
from lm_jax.train.metrics import new_figure, save_figure


def write_atomically(path: Path, text: str) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


def write_eval_results(path: Path, name: str, metric: str, evaluations: list[dict]) -> dict:
    """`eval_results.json`: the task, the metric that picks the best model, every evaluation
    (step and metrics, under the benchmarks' names), and the best one."""
    best = max(evaluations, key=lambda e: e[metric]) if evaluations else None
    results = {"task": name, "metric": metric, "best": best, "evaluations": evaluations}
    write_atomically(path, json.dumps(results, indent=1))
    return results


def write_predictions(
    path: Path, texts: list[str], labels: np.ndarray, outputs: np.ndarray, names: list[str]
) -> Path:
    """One row per dev example: index, text, gold label, prediction (and each class's
    probability); label names for classification, scores for regression."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8", newline="") as f:
        out = csv.writer(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL)
        if names:
            probabilities = np.exp(log_softmax(outputs))
            out.writerow(["index", "text", "label", "prediction", *(f"p_{n}" for n in names)])
            for i, (text, label, p) in enumerate(zip(texts, labels, probabilities)):
                row = [i, text, names[label], names[int(p.argmax())]]
                out.writerow(row + [f"{x:.4f}" for x in p])
        else:
            out.writerow(["index", "text", "label", "prediction"])
            for i, (text, label, score) in enumerate(zip(texts, labels, outputs[:, 0])):
                out.writerow([i, text, f"{label:.4f}", f"{score:.4f}"])
    tmp.replace(path)
    return path


def plot_dev_metric(path: Path, evaluations: list[dict], metric: str, title: str) -> Path | None:
    """The dev metric against step, the best evaluation marked."""
    points = [(e["step"], e[metric]) for e in evaluations if math.isfinite(e.get(metric, np.nan))]
    fig, ax = new_figure()
    if points:
        ax.plot(*zip(*points), "o-", markersize=4, label=f"dev {metric}")
        best = max(points, key=lambda p: p[1])
        ax.plot(*best, "r*", markersize=12, label=f"best {best[1]:.4f} at step {best[0]}")
        ax.legend()
    else:  # e.g. a correlation of constant predictions
        ax.text(
            0.5,
            0.5,
            f"dev {metric} undefined at every evaluation",
            ha="center",
            transform=ax.transAxes,
        )
    ax.set_xlabel("step")
    ax.set_ylabel(metric)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return save_figure(fig, path)


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray, classes: int) -> np.ndarray:
    """counts[gold, predicted]."""
    counts = np.zeros((classes, classes), np.int64)
    np.add.at(counts, (labels, predictions), 1)
    return counts


def plot_confusion(path: Path, counts: np.ndarray, names: list[str], title: str) -> Path | None:
    size = max(3.5, 0.6 * len(names) + 2)
    fig, ax = new_figure(size, size)
    ax.imshow(counts, cmap="Blues")
    for (gold, predicted), n in np.ndenumerate(counts):
        color = "white" if n > counts.max() / 2 else "black"
        ax.text(predicted, gold, str(n), ha="center", va="center", color=color)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("gold")
    ax.set_title(title)
    fig.tight_layout()
    return save_figure(fig, path)


def seeds_summary(path: Path, metric: str, per_seed: dict[int, dict[str, Any]]) -> dict:
    """`seeds.json`: each seed's best dev metrics, the mean +- sample standard deviation of
    every metric, and the best seed."""
    names = sorted({k for m in per_seed.values() for k in m if isinstance(m[k], float)})
    stats = {}
    for name in names:
        values = np.array([m[name] for m in per_seed.values()], np.float64)
        std = float(values.std(ddof=1)) if len(values) > 1 else 0.0
        stats[name] = {"mean": float(values.mean()), "std": std}
    best_seed = max(per_seed, key=lambda s: per_seed[s][metric])
    summary = {
        "metric": metric,
        "seeds": {str(s): m for s, m in per_seed.items()},
        "mean_std": stats,
        "best_seed": best_seed,
    }
    write_atomically(path, json.dumps(summary, indent=1))
    return summary
