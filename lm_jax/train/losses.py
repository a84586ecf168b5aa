"""Losses with their metrics."""

from __future__ import annotations

import jax.numpy as jnp
import optax


def weighted_cross_entropy(logits: jnp.ndarray, targets: jnp.ndarray,
                           weights: jnp.ndarray) -> dict[str, jnp.ndarray]:
    """Sums for a weighted token cross-entropy: BERT's loss is `nll_sum / (weight_sum + 1e-5)`.

    Returns sums (not means) so that metrics over several batches combine exactly:
    `nll_sum`, `correct_sum` and `weight_sum`.
    """
    nll = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), targets)
    correct = (logits.argmax(-1) == targets).astype(jnp.float32)
    return {"nll_sum": (nll * weights).sum(), "correct_sum": (correct * weights).sum(),
            "weight_sum": weights.sum()}


def summarize(sums: dict[str, jnp.ndarray]) -> dict[str, float]:
    """Loss and accuracy from `weighted_cross_entropy` sums."""
    w = float(sums["weight_sum"])
    return {"loss": float(sums["nll_sum"]) / (w + 1e-5),
            "accuracy": float(sums["correct_sum"]) / max(w, 1e-5),
            "predictions": w}
