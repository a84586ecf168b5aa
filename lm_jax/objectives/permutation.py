"""Permutation objectives with two-stream attention: XLNet's permutation LM (Yang et al. 2019;
zihangdai/xlnet `data_utils.py`) and MPNet's masked and permuted LM (Song et al. 2020;
microsoft/MPNet). See shared/OBJECTIVES.md."""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from lm_jax.attention.mask import AttentionMask
from lm_jax.batch import TwoStreamBatch
from lm_jax.layout import positions_from_segments
from lm_jax.objectives.masking import (
    candidates_of,
    check_rates,
    corrupt,
    count_table,
    random_ranks,
    select_positions,
    word_layout,
)
from lm_jax.objectives.options import Options
from lm_jax.objectives.registry import Model, map_rows, register
from lm_jax.vocab import VocabInfo

XLNET_NGRAM_PROBS = tuple(1.0 / n for n in range(1, 6))  # n-gram spans 1..5, p ∝ 1/n
TARGET_SELECTIONS = ("plain", "span")


def xlnet_span_targets(
    key,
    candidates,
    segment_ids,
    word_starts,
    goal,
    *,
    alpha: int = 6,
    beta: int = 1,
    ngram_probs=XLNET_NGRAM_PROBS,
):
    """XLNet's span-based target selection (`_sample_mask`), on one row.

    Walk left to right: draw n (1..5 words, p ∝ 1/n), skip a random left context of
    l ~ U{0..n*alpha/beta - 1} tokens, snap to the next word start, take n words, skip the rest of
    the context, until `goal` targets; then top up with uniformly random tokens. The reference
    checks the word boundary at the span's first piece (so it takes n pieces, not n words); here
    n whole words are taken, cut at the goal so the count is exact.
    """
    length = candidates.shape[-1]
    idx = jnp.arange(length)
    starts, word_index, word_begin, _, run_end = word_layout(candidates, segment_ids, word_starts)
    next_start = jax.lax.cummin(jnp.where(starts, idx, length), reverse=True)
    next_start = jnp.concatenate([next_start, jnp.array([length])])
    log_p = jnp.log(jnp.asarray(ngram_probs) / sum(ngram_probs))
    k_walk, k_fill = jax.random.split(key)

    def cond(state):
        cur, count, _, _, done = state
        return (cur < length) & (count < goal) & ~done

    def body(state):
        cur, count, mask, step_key, _ = state
        step_key, k_n, k_ctx = jax.random.split(step_key, 3)
        n = jnp.minimum(jax.random.categorical(k_n, log_p) + 1, goal - count)
        ctx = n * alpha // beta
        left = jax.random.randint(k_ctx, (), 0, jnp.maximum(ctx, 1))
        beg = next_start[jnp.minimum(cur + left, length)]
        safe = jnp.minimum(beg, length - 1)
        end = jnp.minimum(word_begin[jnp.minimum(word_index[safe] + n, length)], run_end[safe])
        end = jnp.minimum(end, beg + goal - count)
        done = (beg >= length) | (end >= length)
        take = ~done & (idx >= beg) & (idx < end)
        return (end + ctx - left, count + take.sum(), mask | take, step_key, done)

    init = (
        jnp.zeros((), jnp.int32),
        jnp.zeros((), jnp.int32),
        jnp.zeros(length, bool),
        k_walk,
        jnp.zeros((), bool),
    )
    _, count, mask, _, _ = jax.lax.while_loop(cond, body, init)
    fill = select_positions(k_fill, candidates & ~mask, goal - count, length)
    return mask | fill


def _plm_row(
    key,
    tokens,
    segment_ids,
    word_starts,
    *,
    vocab,
    partial_prediction,
    max_predictions,
    target_selection,
):
    length = tokens.shape[-1]
    k_perm, k_targets = jax.random.split(key)
    candidates = candidates_of(tokens, segment_ids, vocab)
    real = segment_ids != 0
    goal = jnp.minimum(jnp.round(real.sum() / partial_prediction), max_predictions)
    goal = jnp.minimum(goal, candidates.sum()).astype(jnp.int32)
    rank = random_ranks(k_perm, length)  # a uniformly random factorisation order
    if target_selection == "plain":
        # The last `goal` maskable tokens of the factorisation order.
        order = jnp.where(candidates, rank, -1)
        _, last = jax.lax.top_k(order, max_predictions)
        is_target = jnp.zeros(length, bool).at[last].set(jnp.arange(max_predictions) < goal)
    else:
        is_target = xlnet_span_targets(k_targets, candidates, segment_ids, word_starts, goal)
    functional = real & ~candidates  # [CLS], [SEP] and other specials keep their order
    # Non-targets (not functional) are tied lowest: everyone sees them, they see no target.
    rank = jnp.where(is_target | functional, rank, -1)
    (target_pos,) = jnp.nonzero(is_target, size=max_predictions, fill_value=length)
    weights = target_pos < length
    target_pos = jnp.where(weights, target_pos, 0)
    positions = positions_from_segments(segment_ids)
    query_segments = jnp.where(weights, segment_ids[target_pos], 0)
    return TwoStreamBatch(
        inputs=tokens,  # the content stream keeps the real tokens
        targets=tokens,
        loss_weights=is_target.astype(jnp.float32),
        positions=positions,
        segment_ids=segment_ids,
        attention=AttentionMask.ordered(segment_ids, 2 * rank),
        masked_positions=target_pos,
        masked_targets=jnp.where(weights, tokens[target_pos], vocab.pad_id),
        masked_weights=weights.astype(jnp.float32),
        query_inputs=jnp.full(max_predictions, vocab.mask_id, jnp.int32),
        query_positions=positions[target_pos],
        query_segment_ids=query_segments,
        query_attention=AttentionMask(
            q_segment_ids=query_segments,
            kv_segment_ids=segment_ids,
            q_ranks=2 * rank[target_pos] - 1,
            kv_ranks=2 * rank,
        ),
    )


@dataclasses.dataclass(frozen=True)
class PLMOptions(Options):
    """Options of `plm` (see its docstring)."""

    partial_prediction: float = 6.0
    max_predictions: int | None = None
    target_selection: str = "plain"


@register("plm", model=Model.TWO_STREAM, options=PLMOptions, inputs=("word_starts",))
def plm(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: PLMOptions,
    word_starts: jnp.ndarray | None = None,
) -> TwoStreamBatch:
    """XLNet permutation LM with partial prediction and two-stream attention.

    A uniformly random factorisation order is drawn per row; round(n / K) maskable tokens are
    predicted (K = `partial_prediction`, 6; 85 of 512 in the reference): with
    `target_selection="plain"` (the paper) the last ones in the order, with "span" the
    reference code's n-gram span sampling (`xlnet_span_targets`). Non-target tokens are tied
    lowest in the order (everyone sees them; they see no target); [CLS]/[SEP] keep their rank.

    Masks from the rank r: content stream i sees j iff r[j] <= r[i]; query stream i sees j iff
    r[j] < r[i] (doubled ranks in the compact mask), so a query never sees its own content.
    The content stream input is the real tokens; the query stream has one row per target
    (`query_*`), whose model input is a learned mask embedding plus the position. Nothing is
    permuted or attended across packed segments. The reference splits each row into two halves
    permuted separately (for Transformer-XL memory reuse); here one permutation covers the row.
    """
    partial_prediction, max_predictions, target_selection = (
        options.partial_prediction,
        options.max_predictions,
        options.target_selection,
    )
    if target_selection not in TARGET_SELECTIONS:
        raise ValueError(f"target_selection must be one of {TARGET_SELECTIONS}")
    if partial_prediction < 1:
        raise ValueError(f"partial_prediction (K) must be >= 1, got {partial_prediction}")
    tokens = jnp.asarray(tokens)
    length = tokens.shape[-1] if tokens.ndim else 0
    if max_predictions is None:
        max_predictions = max(1, math.ceil(length / partial_prediction))
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    if word_starts is None:
        word_starts = jnp.ones(tokens.shape, bool)
    return map_rows(
        _plm_row,
        key,
        tokens,
        {"segment_ids": segment_ids, "word_starts": jnp.asarray(word_starts, bool)},
        vocab=vocab,
        partial_prediction=partial_prediction,
        max_predictions=min(max_predictions, max(length, 1)),
        target_selection=target_selection,
    )


def _mpnet_intervals(length: int, a, p, P: int):
    """MPNet's visible key intervals, two per query row: the key layout is [non-predicted (a),
    predicted (p), unused (L - a - p = 0)] + [P mask slots]. Returns (content rows [L, 2, 2],
    content rows of the mask slots [P, 2, 2], query-stream rows [P, 2, 2])."""
    idx, i = jnp.arange(length), jnp.arange(P)
    nonpred_rows = jnp.stack(
        [
            jnp.stack([jnp.zeros_like(idx), jnp.full_like(idx, a)], -1),
            jnp.stack([jnp.full_like(idx, length), length + jnp.full_like(idx, p)], -1),
        ],
        -2,
    )
    k_of_slot = idx - a  # index among predicted for content slots >= a
    pred_rows = jnp.stack(
        [
            jnp.stack([jnp.zeros_like(idx), idx + 1], -1),
            jnp.stack([length + k_of_slot + 1, jnp.full_like(idx, length) + p], -1),
        ],
        -2,
    )
    content_x = jnp.where((idx >= a)[:, None, None], pred_rows, nonpred_rows)
    content_m = jnp.broadcast_to(nonpred_rows[:1], (P, 2, 2))
    query = jnp.stack(
        [
            jnp.stack([jnp.zeros_like(i), a + i], -1),
            jnp.stack([length + i, jnp.full_like(i, length) + p], -1),
        ],
        -2,
    )
    return content_x, content_m, query


def _mpnet_row(
    key,
    tokens,
    segment_ids,
    word_starts,
    *,
    vocab,
    rate,
    max_predictions,
    whole_word,
    mask_prob,
    random_prob,
    random_excludes_specials,
):
    length, P = tokens.shape[-1], max_predictions
    idx = jnp.arange(length)
    k_perm, k_corrupt = jax.random.split(key)
    candidates = candidates_of(tokens, segment_ids, vocab)
    real = segment_ids != 0
    p = jnp.minimum(
        count_table(length, lambda n: min(round(n * rate), P))[real.sum()], candidates.sum()
    )
    # A random order of the maskable tokens; whole words share their first token's random
    # bits, so a word stays contiguous in the order.
    share = None
    if whole_word:
        _, word_index, _, word_first, _ = word_layout(candidates, segment_ids, word_starts)
        share = jnp.where(word_index >= 0, word_first, idx)
    order = jnp.where(candidates, random_ranks(k_perm, length, share), -1)
    # The permutation: non-predicted tokens (in their original order: they all see each other,
    # so their order does not matter), then the p predicted ones, the last p maskable tokens of
    # the random order, in that order (top_k returns them last first).
    _, last = jax.lax.top_k(order, P)
    is_pred = jnp.zeros(length, bool).at[last].set(jnp.arange(P) < p)
    (nonpred,) = jnp.nonzero(~is_pred, size=length, fill_value=length - 1)
    a = length - p  # first predicted slot
    perm = jnp.where(idx < a, nonpred, last[jnp.clip(p - 1 - (idx - a), 0, P - 1)])
    positions = positions_from_segments(segment_ids)
    perm_tokens, perm_pos, perm_seg = tokens[perm], positions[perm], segment_ids[perm]

    # Predicted tokens in permutation order, packed to the front of P slots.
    pred_index = jnp.clip(a + jnp.arange(P), 0, length - 1)
    pred_used = jnp.arange(P) < p
    pred_tokens = jnp.where(pred_used, perm_tokens[pred_index], vocab.pad_id)
    pred_pos = jnp.where(pred_used, perm_pos[pred_index], 0)
    pred_seg = jnp.where(pred_used, perm_seg[pred_index], 0)
    mask_slots = corrupt(
        k_corrupt,
        pred_tokens,
        jnp.arange(P),
        pred_used,
        vocab,
        mask_prob,
        random_prob,
        random_excludes_specials,
    )

    content_x, content_m, query = _mpnet_intervals(length, a, p, P)
    content_seg = jnp.concatenate([perm_seg, pred_seg])
    inputs = jnp.concatenate([perm_tokens, mask_slots])
    return TwoStreamBatch(
        inputs=inputs,
        targets=tokens,
        loss_weights=is_pred.astype(jnp.float32),
        positions=jnp.concatenate([perm_pos, pred_pos]),
        segment_ids=content_seg,
        attention=AttentionMask(
            q_segment_ids=content_seg,
            kv_segment_ids=content_seg,
            q_intervals=jnp.concatenate([content_x, content_m]),
        ),
        masked_positions=jnp.where(pred_used, perm[pred_index], 0),
        masked_targets=pred_tokens,
        masked_weights=pred_used.astype(jnp.float32),
        query_inputs=mask_slots,
        query_positions=pred_pos,
        query_segment_ids=pred_seg,
        query_attention=AttentionMask(
            q_segment_ids=pred_seg, kv_segment_ids=content_seg, q_intervals=query
        ),
    )


@dataclasses.dataclass(frozen=True)
class MPNetOptions(Options):
    """Options of `mpnet` (see its docstring)."""

    whole_word: bool = False
    rate: float = 0.15
    max_predictions: int | None = None
    mask_prob: float = 0.8
    random_prob: float = 0.1
    random_excludes_specials: bool = True


@register("mpnet", model=Model.MPNET, options=MPNetOptions, inputs=("word_starts",))
def mpnet(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: MPNetOptions,
    word_starts: jnp.ndarray | None = None,
) -> TwoStreamBatch:
    """MPNet masked and permuted LM with position compensation.

    A random permutation of the maskable tokens (of whole words with `whole_word=True`) puts
    p = round(rate * n) of them last; the content stream is [non-predicted tokens, predicted
    tokens, p mask slots] (length L + P, P = max_predictions static, unused slots padded) with
    positions [perm, perm[-p:]], and the query stream is p more mask slots at positions
    perm[-p:]. Mask slots hold [MASK] 80% / a random token 10% / the original 10%.

    Attention (reference `make_query_and_content_mask`): query row i sees the non-predicted
    tokens, predicted tokens j < i and mask slots j >= i; content rows of predicted token i see
    the non-predicted tokens, predicted j <= i and mask slots j > i; other content rows see the
    non-predicted tokens and all mask slots. Each row is at most two key intervals, so every
    prediction sees all n positions once (position compensation). Packed segments never mix.
    """
    whole_word, rate, max_predictions, mask_prob, random_prob, random_excludes_specials = (
        options.whole_word,
        options.rate,
        options.max_predictions,
        options.mask_prob,
        options.random_prob,
        options.random_excludes_specials,
    )
    check_rates(rate, mask_prob, random_prob)
    tokens = jnp.asarray(tokens)
    length = tokens.shape[-1] if tokens.ndim else 0
    if max_predictions is None:
        max_predictions = max(1, math.ceil(rate * length))
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    if word_starts is None:
        word_starts = jnp.ones(tokens.shape, bool)
    return map_rows(
        _mpnet_row,
        key,
        tokens,
        {"segment_ids": segment_ids, "word_starts": jnp.asarray(word_starts, bool)},
        vocab=vocab,
        rate=rate,
        max_predictions=min(max_predictions, max(length, 1)),
        whole_word=whole_word,
        mask_prob=mask_prob,
        random_prob=random_prob,
        random_excludes_specials=random_excludes_specials,
    )
