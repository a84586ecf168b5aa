"""lm_jax.finetune.metrics against SciPy and the benchmarks' definitions."""

import warnings

import numpy as np
import pytest

from lm_jax.finetune.metrics import (
    average_ranks,
    binary_f1,
    classification_metrics,
    pearson,
    regression_metrics,
    spearman,
)

stats = pytest.importorskip("scipy.stats")


def test_correlations_match_scipy_with_ties():
    rng = np.random.default_rng(0)
    gold = rng.integers(0, 6, 300).astype(np.float32)  # STS-B-like: many tied scores
    predicted = gold + rng.normal(0, 1.5, 300)
    np.testing.assert_allclose(average_ranks(gold), stats.rankdata(gold))
    assert pearson(predicted, gold) == pytest.approx(stats.pearsonr(predicted, gold)[0], abs=1e-12)
    assert spearman(predicted, gold) == pytest.approx(
        stats.spearmanr(predicted, gold)[0], abs=1e-12
    )
    out = regression_metrics(predicted, gold)
    assert out["combined"] == pytest.approx((out["pearson"] + out["spearman"]) / 2)
    assert np.isnan(pearson(np.ones(5), np.arange(5)))


def test_accuracy_and_binary_f1():
    labels = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    predictions = np.array([1, 1, 0, 0, 0, 1, 0, 0])
    tp, fp, fn = 2, 1, 2
    assert binary_f1(predictions, labels) == pytest.approx(2 * tp / (2 * tp + fp + fn))
    assert binary_f1(np.zeros(4), np.zeros(4)) == 0.0
    logits = np.eye(2)[predictions] * 3.0
    metrics = classification_metrics(logits, labels)
    assert metrics == {"accuracy": 5 / 8, "f1": pytest.approx(4 / 7)}
    assert "f1" not in classification_metrics(np.eye(3)[[0, 1, 2]], np.array([0, 1, 1]))


def test_dev_metric_plot_of_undefined_correlations_says_so(tmp_path):
    from lm_jax.finetune.outputs import plot_dev_metric

    evaluations = [{"step": 0, "pearson": float("nan")}, {"step": 300, "pearson": float("nan")}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # matplotlib's "No artists with labels" warning
        path = plot_dev_metric(tmp_path / "dev.png", evaluations, "pearson", "stsb")
    assert path.stat().st_size > 0
