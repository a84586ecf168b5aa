"""Losses with their metrics."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import optax


def weighted_cross_entropy(
    logits: jnp.ndarray, targets: jnp.ndarray, weights: jnp.ndarray
) -> dict[str, jnp.ndarray]:
    """Sums for a weighted token cross-entropy: BERT's loss is `nll_sum / (weight_sum + 1e-5)`.

    Returns sums (not means) so that metrics over several batches combine exactly:
    `nll_sum`, `correct_sum` and `weight_sum`. A prediction is correct when the target's logit
    is the largest (an exact tie counts as correct): the same as `argmax == target` without
    tie, and a plain max reduction where XLA's CPU argmax over a vocabulary is slow (48 ms of
    the BERT-small MLM step).
    """
    logits = logits.astype(jnp.float32)
    nll = optax.softmax_cross_entropy_with_integer_labels(logits, targets)
    target_logits = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    correct = (target_logits >= logits.max(-1)).astype(jnp.float32)
    return {
        "nll_sum": (nll * weights).sum(),
        "correct_sum": (correct * weights).sum(),
        "weight_sum": weights.sum(),
    }


def summarize(sums: dict[str, jnp.ndarray]) -> dict[str, float]:
    """Loss and accuracy from `weighted_cross_entropy` sums: the main head's `loss`,
    `accuracy` and `predictions`, and `<head>_loss` / `<head>_accuracy` for every prefixed
    head (`sbo_`, `rtd_`)."""
    out = {}
    heads = sorted(k[: -len("nll_sum")] for k in sums if k.endswith("nll_sum"))
    for prefix in heads:
        w = float(sums[f"{prefix}weight_sum"])
        out[f"{prefix}loss"] = float(sums[f"{prefix}nll_sum"]) / (w + 1e-5)
        out[f"{prefix}accuracy"] = float(sums[f"{prefix}correct_sum"]) / max(w, 1e-5)
    out["predictions"] = float(sums["weight_sum"])
    return out


def unigram_cross_entropy(
    train_counts: np.ndarray, eval_counts: np.ndarray, ignore_ids: tuple[int, ...] = ()
) -> float:
    """Cross-entropy (nats/token) of held-out tokens under the add-one-smoothed unigram
    distribution of the training tokens: the loss a model that ignores context would reach.
    Both arguments count each id's occurrences (`PackedRows.token_counts`)."""
    counts = np.asarray(train_counts, np.float64) + 1.0
    counts[list(ignore_ids)] = 0.0
    log_p = np.log(np.where(counts > 0, counts, 1.0) / counts.sum())
    held_out = np.asarray(eval_counts, np.float64).copy()
    held_out[list(ignore_ids)] = 0.0
    return float(-(held_out * log_p).sum() / held_out.sum())
