"""Masked LM: BERT (Devlin et al. 2019) and RoBERTa dynamic masking (Liu et al. 2019).

Reference: google-research/bert `create_pretraining_data.py` and fairseq's `MaskTokensDataset`.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp

from lm_jax.attention.mask import AttentionMask
from lm_jax.data.tokenizer import VocabInfo
from lm_jax.objectives.batch import Batch
from lm_jax.objectives.registry import map_rows, positions_from_segments, register

BUDGETS = ("round", "probabilistic")


def default_max_predictions(length: int, rate: float) -> int:
    """ceil(rate * length): 20 at length 128 and 77 at 512 for rate 0.15 (BERT used 20 / 76-80)."""
    return max(1, math.ceil(rate * length))


def prediction_budget(
    key: jax.Array, num_tokens: jnp.ndarray, rate: float, max_predictions: int, budget: str
) -> jnp.ndarray:
    """How many tokens a row predicts.

    "round" (BERT): min(max_predictions, max(1, round(rate * n))), n counting [CLS]/[SEP].
    "probabilistic" (RoBERTa/fairseq): int(rate * n + U[0, 1)), so the mean is exactly rate * n.
    """
    if budget == "round":
        count = jnp.maximum(1, jnp.round(num_tokens * rate))
    else:
        count = jnp.floor(num_tokens * rate + jax.random.uniform(key))
    return jnp.minimum(count, max_predictions).astype(jnp.int32)


def select_positions(
    key: jax.Array, candidates: jnp.ndarray, count: jnp.ndarray, max_predictions: int
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """Choose `count` candidate positions uniformly without replacement.

    Same distribution as BERT's "shuffle the candidates, take greedily", with static shapes:
    random scores, top-k. Returns (selected bool [L], positions int [P] sorted ascending with
    unused slots at the end set to 0, weights bool [P]).
    """
    length = candidates.shape[-1]
    scores = jnp.where(candidates, jax.random.uniform(key, candidates.shape), -1.0)
    _, top = jax.lax.top_k(scores, max_predictions)
    chosen = jnp.arange(max_predictions) < jnp.minimum(count, candidates.sum())
    selected = jnp.zeros(length, bool).at[top].max(chosen)
    order = jnp.sort(jnp.where(chosen, top, length))
    weights = order < length
    return selected, jnp.where(weights, order, 0), weights


def corrupt(
    key: jax.Array,
    tokens: jnp.ndarray,
    selected: jnp.ndarray,
    vocab: VocabInfo,
    mask_prob: float,
    random_prob: float,
    random_excludes_specials: bool,
) -> jnp.ndarray:
    """BERT's 80/10/10: selected tokens become [MASK] w.p. mask_prob, a random token w.p.
    random_prob, and stay unchanged otherwise; decided independently per token.

    Random tokens are uniform over the non-special ids by default; the reference draws from the
    whole vocabulary (specials included), which `random_excludes_specials=False` reproduces.
    """
    k_action, k_random = jax.random.split(key)
    u = jax.random.uniform(k_action, tokens.shape)
    support = vocab.regular_ids() if random_excludes_specials else jnp.arange(vocab.size)
    random_tokens = jnp.asarray(support, jnp.int32)[
        jax.random.randint(k_random, tokens.shape, 0, len(support))
    ]
    out = jnp.where(selected & (u < mask_prob), vocab.mask_id, tokens)
    return jnp.where(selected & (u >= 1.0 - random_prob), random_tokens, out)


def _mlm_row(
    key,
    tokens,
    segment_ids,
    *,
    vocab,
    rate,
    max_predictions,
    mask_prob,
    random_prob,
    budget,
    random_excludes_specials,
) -> Batch:
    k_budget, k_select, k_corrupt = jax.random.split(key, 3)
    real = segment_ids != 0
    candidates = real & ~jnp.isin(tokens, jnp.asarray(vocab.special_ids, jnp.int32))
    count = prediction_budget(k_budget, real.sum(), rate, max_predictions, budget)
    selected, masked_positions, masked_weights = select_positions(
        k_select, candidates, count, max_predictions
    )
    inputs = corrupt(
        k_corrupt, tokens, selected, vocab, mask_prob, random_prob, random_excludes_specials
    )
    return Batch(
        inputs=inputs,
        targets=tokens,
        loss_weights=selected.astype(jnp.float32),
        positions=jnp.where(real, positions_from_segments(segment_ids), 0),
        segment_ids=segment_ids,
        attention=AttentionMask.bidirectional(segment_ids),
        masked_positions=masked_positions,
        masked_targets=jnp.where(masked_weights, tokens[masked_positions], vocab.pad_id),
        masked_weights=masked_weights.astype(jnp.float32),
    )


@register("mlm")
def mlm(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None = None,
    rate: float = 0.15,
    max_predictions: int | None = None,
    mask_prob: float = 0.8,
    random_prob: float = 0.1,
    budget: str = "round",
    random_excludes_specials: bool = True,
) -> Batch:
    """BERT masked LM with RoBERTa-style dynamic masking (a new mask for every key).

    Args:
      key: PRNG key; the same key gives the same batch.
      tokens: int ids [..., L]; leading axes are independent rows.
      vocab: vocabulary description (special ids are never selected; pad never predicted).
      segment_ids: packed-document ids [..., L] (0 = padding); default: 1 where not pad.
      rate: fraction of tokens to predict (0.15).
      max_predictions: static size of the sparse layout; default ceil(rate * L).
      mask_prob, random_prob: the 80/10/10 split (the rest stays unchanged).
      budget: "round" (BERT, exact per row) or "probabilistic" (RoBERTa, exact in expectation).
      random_excludes_specials: random replacements never produce special tokens (default; the
        reference samples the whole vocabulary).
    """
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1.0:
        raise ValueError(
            f"mask_prob ({mask_prob}) and random_prob ({random_prob}) must be "
            "non-negative with a sum of at most 1"
        )
    if budget not in BUDGETS:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    tokens = jnp.asarray(tokens)
    length = tokens.shape[-1] if tokens.ndim else 0
    if max_predictions is None:
        max_predictions = default_max_predictions(length, rate)
    if max_predictions < 1:
        raise ValueError(f"max_predictions must be >= 1, got {max_predictions}")
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    return map_rows(
        _mlm_row,
        key,
        tokens,
        {"segment_ids": segment_ids},
        vocab=vocab,
        rate=rate,
        max_predictions=min(max_predictions, max(length, 1)),
        mask_prob=mask_prob,
        random_prob=random_prob,
        budget=budget,
        random_excludes_specials=random_excludes_specials,
    )
