"""SpanBERT span masking with span-boundary targets (Joshi et al. 2020; facebookresearch/SpanBERT
`PairWithSpanMaskingScheme` and `span_masking`, see shared/OBJECTIVES.md)."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.batch import SpanBatch
from lm_jax.objectives.masking import (
    candidates_of,
    check_rates,
    corrupt,
    count_table,
    default_max_predictions,
    masked_batch_fields,
    sparse_layout,
    word_layout,
)
from lm_jax.objectives.options import Options
from lm_jax.objectives.registry import Model, map_rows, register
from lm_jax.vocab import VocabInfo


def span_length_probs(p: float = 0.2, max_length: int = 10) -> np.ndarray:
    """Geometric(p) span lengths (in words) clipped to 1..max_length and renormalised.

    Mean 3.8 at the paper's p = 0.2 (the code's default p = 0.3 gives 3.04).
    """
    lengths = np.arange(1, max_length + 1)
    probs = p * (1 - p) ** (lengths - 1)
    return probs / probs.sum()


def _select_spans(key, candidates, segment_ids, word_starts, budget, log_probs):
    """SpanBERT's span selection on one row: spans of whole words (lengths in words drawn from
    `log_probs`) at uniform anchors, added until exactly `budget` tokens are masked."""
    length = candidates.shape[-1]
    idx = jnp.arange(length)
    _, word_index, word_begin, word_first, run_end = word_layout(
        candidates, segment_ids, word_starts
    )

    def add_span(state):
        count, masked, step_key = state
        step_key, k_anchor, k_len = jax.random.split(step_key, 3)
        open_ = candidates & ~masked
        # Uniform among open candidates (the reference redraws anchors that are already
        # masked: the same distribution): the r-th open candidate for r ~ U{0..n_open-1}.
        rank = jnp.floor(jax.random.uniform(k_anchor) * open_.sum()).astype(jnp.int32)
        rank = jnp.minimum(rank, open_.sum() - 1)
        anchor = jnp.argmax(jnp.cumsum(open_) > rank)
        n_words = jax.random.categorical(k_len, log_probs) + 1
        begin = word_first[anchor]
        after = word_begin[jnp.minimum(word_index[anchor] + n_words, length)]
        end = jnp.minimum(after, run_end[anchor])
        new = (idx >= begin) & (idx < end) & ~masked
        take = new & (jnp.cumsum(new) <= budget - count)
        return count + take.sum(), masked | take, step_key

    _, masked, _ = jax.lax.while_loop(
        lambda s: s[0] < budget,
        add_span,
        (jnp.zeros((), jnp.int32), jnp.zeros(length, bool), key),
    )

    return masked


def _span_row(
    key,
    tokens,
    segment_ids,
    word_starts,
    *,
    vocab,
    rate,
    max_predictions,
    log_probs,
    mask_prob,
    random_prob,
    per_span_decision,
    random_excludes_specials,
    unigram_counts,
    max_pair_targets,
):
    length = tokens.shape[-1]
    idx = jnp.arange(length)
    k_loop, k_corrupt = jax.random.split(key)
    candidates = candidates_of(tokens, segment_ids, vocab)
    # SpanBERT's math.ceil(n * mask_ratio), in float64 (count_table).
    budget = count_table(length, lambda n: min(math.ceil(n * rate), max_predictions, n))[
        candidates.sum()
    ]

    masked = _select_spans(k_loop, candidates, segment_ids, word_starts, budget, log_probs)

    # Merged spans are the maximal runs of masked tokens (touching spans merge, as in the
    # reference's merge_intervals).
    prev_masked = jnp.concatenate([jnp.zeros(1, bool), masked[:-1]])
    span_start_flag = masked & ~prev_masked
    span_id = jnp.cumsum(span_start_flag)
    span_begin = jax.lax.cummax(jnp.where(span_start_flag, idx, 0))
    next_masked = jnp.concatenate([masked[1:], jnp.zeros(1, bool)])
    span_last = jax.lax.cummin(jnp.where(masked & ~next_masked, idx, length), reverse=True)
    positions, targets, weights = sparse_layout(masked, tokens, max_predictions, vocab.pad_id)
    inputs = corrupt(
        k_corrupt,
        tokens,
        positions,
        weights,
        vocab,
        mask_prob,
        random_prob,
        random_excludes_specials,
        decision_groups=jnp.clip(span_id[positions] - 1, 0, max_predictions - 1)
        if per_span_decision
        else None,
        unigram_counts=unigram_counts,
    )
    left = span_begin[positions] - 1
    right = span_last[positions] + 1
    offsets = positions - span_begin[positions]
    left_c, right_c = jnp.clip(left, 0, length - 1), jnp.clip(right, 0, length - 1)
    boundary_ok = (
        (left >= 0)
        & (right < length)
        & candidates[left_c]
        & candidates[right_c]
        & (segment_ids[left_c] == segment_ids[positions])
        & (segment_ids[right_c] == segment_ids[positions])
    )
    sbo_weights = weights * (boundary_ok & (offsets < max_pair_targets))
    return SpanBatch(
        **masked_batch_fields(tokens, inputs, masked, segment_ids, positions, targets, weights),
        sbo_left=jnp.where(weights > 0, left_c, 0),
        sbo_right=jnp.where(weights > 0, right_c, 0),
        sbo_offsets=jnp.where(weights > 0, offsets, 0),
        sbo_weights=sbo_weights.astype(jnp.float32),
    )


@dataclasses.dataclass(frozen=True)
class SpanOptions(Options):
    """Options of `span` (see its docstring)."""

    rate: float = 0.15
    geometric_p: float = 0.2
    max_span_length: int = 10
    max_predictions: int | None = None
    mask_prob: float = 0.8
    random_prob: float = 0.1
    per_span_decision: bool = True
    random_excludes_specials: bool = True
    max_pair_targets: int = 15


@register(
    "span",
    model=Model.SPAN_BOUNDARY,
    options=SpanOptions,
    inputs=("word_starts", "unigram_counts"),
)
def span(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: SpanOptions,
    word_starts: jnp.ndarray | None = None,
    unigram_counts: jnp.ndarray | None = None,
) -> SpanBatch:
    """SpanBERT span masking plus span-boundary-objective (SBO) targets.

    Spans are added until exactly ceil(rate * n) tokens are masked (n = maskable tokens; the
    last span is cut to hit the budget): an anchor is drawn uniformly among unmasked maskable
    tokens, snapped to its word start, and extended by whole words to a length in words drawn
    from `span_length_probs(geometric_p, max_span_length)`. Spans never leave a packed segment
    or cross a special token. 80/10/10 is decided once per (merged) span by default
    (`per_span_decision=False`: per token). Random tokens are uniform over non-special ids, or
    follow `unigram_counts` [V] (the reference samples the corpus unigram distribution).

    SBO: every masked token i of span s..e gets boundaries s - 1 and e + 1 and offset i - s;
    spans whose boundary is not a maskable token of the same document (the row edge, [CLS],
    [SEP], another document) get MLM but no SBO target, as do offsets >= `max_pair_targets`.
    """
    (
        rate,
        geometric_p,
        max_span_length,
        max_predictions,
        mask_prob,
        random_prob,
        per_span_decision,
        random_excludes_specials,
        max_pair_targets,
    ) = (
        options.rate,
        options.geometric_p,
        options.max_span_length,
        options.max_predictions,
        options.mask_prob,
        options.random_prob,
        options.per_span_decision,
        options.random_excludes_specials,
        options.max_pair_targets,
    )
    check_rates(rate, mask_prob, random_prob)
    if not 0.0 < geometric_p <= 1.0 or max_span_length < 1:
        raise ValueError(
            f"need 0 < geometric_p <= 1 and max_span_length >= 1, got {geometric_p}, "
            f"{max_span_length}"
        )
    tokens = jnp.asarray(tokens)
    length = tokens.shape[-1] if tokens.ndim else 0
    if max_predictions is None:
        max_predictions = default_max_predictions(length, rate)
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    if word_starts is None:
        word_starts = jnp.ones(tokens.shape, bool)
    probs = span_length_probs(geometric_p, max_span_length)
    return map_rows(
        _span_row,
        key,
        tokens,
        {"segment_ids": segment_ids, "word_starts": jnp.asarray(word_starts, bool)},
        vocab=vocab,
        rate=rate,
        max_predictions=min(max_predictions, max(length, 1)),
        log_probs=jnp.log(jnp.asarray(probs, jnp.float32)),
        mask_prob=mask_prob,
        random_prob=random_prob,
        per_span_decision=per_span_decision,
        random_excludes_specials=random_excludes_specials,
        unigram_counts=unigram_counts,
        max_pair_targets=max_pair_targets,
    )


def expected_span_length(p: float = 0.2, max_length: int = 10) -> float:
    """Mean span length in words of `span_length_probs` (3.8 at p = 0.2)."""
    probs = span_length_probs(p, max_length)
    return float((np.arange(1, max_length + 1) * probs).sum())
