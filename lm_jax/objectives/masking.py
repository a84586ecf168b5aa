"""Shared pieces of the masking objectives, all on one row [L] (objectives vmap over rows).

Reference behaviour: google-research/bert and google-research/albert
`create_pretraining_data.py`, fairseq `MaskTokensDataset` (see shared/OBJECTIVES.md).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import jax
import jax.numpy as jnp

from lm_jax.attention.mask import AttentionMask
from lm_jax.batch import Batch
from lm_jax.layout import positions_from_segments
from lm_jax.vocab import VocabInfo

BUDGETS = ("round", "probabilistic")


def default_max_predictions(length: int, rate: float) -> int:
    """ceil(rate * length): 20 at length 128 and 77 at 512 for rate 0.15 (BERT used 20 / 76-80)."""
    return max(1, math.ceil(rate * length))


def check_rates(rate: float, mask_prob: float, random_prob: float) -> None:
    if not 0.0 < rate < 1.0:
        raise ValueError(f"rate must be in (0, 1), got {rate}")
    if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1.0:
        raise ValueError(
            f"mask_prob ({mask_prob}) and random_prob ({random_prob}) must be "
            "non-negative with a sum of at most 1"
        )


def candidates_of(tokens: jnp.ndarray, segment_ids: jnp.ndarray, vocab: VocabInfo) -> jnp.ndarray:
    """Positions that may be predicted: real (non-padding) and not a special token."""
    special = jnp.isin(tokens, jnp.asarray(vocab.special_ids, jnp.int32))
    return (segment_ids != 0) & ~special


def count_table(length: int, count: Callable[[int], int]) -> jnp.ndarray:
    """int32 [length + 1]: `count(n)` for every token count n = 0..length, evaluated on the
    host in Python's float64 arithmetic, as the references compute their budgets
    (`round(n * 0.15)`, `math.ceil(n * 0.15)`); a row indexes it by its token count. In float32
    the products drift: float32(0.15) * 100 = 15.0000009 and 190 * 0.15 rounds to 29, not 28."""
    return jnp.asarray([count(n) for n in range(length + 1)], jnp.int32)


def prediction_budget(
    key: jax.Array,
    num_tokens: jnp.ndarray,
    rate: float,
    max_predictions: int,
    budget: str,
    length: int,
) -> jnp.ndarray:
    """How many tokens a row of `length` slots holding `num_tokens` real tokens predicts.

    "round" (BERT): min(max_predictions, max(1, round(rate * n))), n counting [CLS]/[SEP], in
    Python's float64 arithmetic and half-to-even rounding (`count_table`). "probabilistic"
    (RoBERTa/fairseq): int(rate * n + U[0, 1)), as floor(rate * n) plus 1 with probability
    frac(rate * n), both from float64, so the mean is exactly rate * n. "round_float32": ELECTRA's
    TF code, which rounds the float32 product `tf.round(num_tokens * mask_prob)`.
    """
    if budget == "round":
        count = count_table(length, lambda n: max(1, round(n * rate)))[num_tokens]
    elif budget == "probabilistic":
        whole = count_table(length, lambda n: math.floor(n * rate))[num_tokens]
        fraction = jnp.asarray([n * rate - math.floor(n * rate) for n in range(length + 1)])
        count = whole + (jax.random.uniform(key) < fraction[num_tokens])
    elif budget == "round_float32":
        count = jnp.maximum(1, jnp.round(num_tokens * jnp.float32(rate)))
    else:
        raise ValueError(f"budget must be one of {BUDGETS}, got {budget!r}")
    return jnp.minimum(count, max_predictions).astype(jnp.int32)


def select_positions(
    key: jax.Array, candidates: jnp.ndarray, count: jnp.ndarray, max_predictions: int
) -> jnp.ndarray:
    """Choose min(count, #candidates) candidate positions uniformly without replacement (bool [L]).

    Same distribution as BERT's "shuffle the candidates, take greedily". Floyd's algorithm
    (Bentley & Floyd 1987) draws a uniform k-subset of the candidates' ranks in k <=
    `max_predictions` steps with no sort, which XLA:CPU makes expensive.
    """
    length = candidates.shape[-1]
    n = candidates.sum()
    k = jnp.minimum(count, n)
    (candidate_positions,) = jnp.nonzero(candidates, size=length, fill_value=length)
    u = jax.random.uniform(key, (max_predictions,))

    def add(i, chosen):  # for j = n-k .. n-1: t ~ U{0..j}; take t, or j if t is taken
        j = n - k + i
        t = jnp.minimum(jnp.floor(u[i] * (j + 1)).astype(jnp.int32), j)
        pick = jnp.where(chosen[t], j, t)
        return chosen.at[jnp.where(i < k, pick, length)].set(True, mode="drop")

    chosen = jax.lax.fori_loop(0, max_predictions, add, jnp.zeros(length, bool))
    where = jnp.where(chosen, candidate_positions, length)
    return jnp.zeros(length, bool).at[where].set(True, mode="drop")


def sparse_layout(
    selected: jnp.ndarray, tokens: jnp.ndarray, max_predictions: int, pad_id: int
) -> tuple[jnp.ndarray, jnp.ndarray, jnp.ndarray]:
    """(positions, targets, weights) [P] of the selected positions, ascending, padded with 0."""
    length = selected.shape[-1]
    (positions,) = jnp.nonzero(selected, size=max_predictions, fill_value=length)
    weights = positions < length
    positions = jnp.where(weights, positions, 0)
    targets = jnp.where(weights, tokens[positions], pad_id)
    return positions, targets, weights.astype(jnp.float32)


def random_tokens(
    key: jax.Array,
    shape: tuple[int, ...],
    vocab: VocabInfo,
    excludes_specials: bool = True,
    unigram_counts: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """Replacement tokens: uniform over non-special ids (default), over the whole vocabulary
    (`excludes_specials=False`, BERT's reference), or from corpus unigram counts [V]
    (SpanBERT's reference; inverse-CDF sampling, specials get no mass unless counted)."""
    if unigram_counts is not None:
        counts = jnp.asarray(unigram_counts, jnp.float32)
        if excludes_specials:
            counts = counts.at[jnp.asarray(vocab.special_ids)].set(0.0)
        cdf = jnp.cumsum(counts)
        u = jax.random.uniform(key, shape) * cdf[-1]
        return jnp.searchsorted(cdf, u, side="right").astype(jnp.int32)
    support = vocab.regular_ids() if excludes_specials else jnp.arange(vocab.size)
    index = jax.random.randint(key, shape, 0, len(support))
    return jnp.asarray(support, jnp.int32)[index]


def corrupt(
    key: jax.Array,
    tokens: jnp.ndarray,
    positions: jnp.ndarray,
    weights: jnp.ndarray,
    vocab: VocabInfo,
    mask_prob: float,
    random_prob: float,
    random_excludes_specials: bool = True,
    decision_groups: jnp.ndarray | None = None,
    unigram_counts: jnp.ndarray | None = None,
) -> jnp.ndarray:
    """BERT's 80/10/10 on the sparse prediction slots: the token at `positions[j]` (where
    `weights[j] > 0`) becomes [MASK] w.p. mask_prob, a random token w.p. random_prob, and stays
    unchanged otherwise. Returns the corrupted copy of `tokens` [L].

    The decision is per slot, or shared by the slots with the same `decision_groups` id in
    [0, P) (SpanBERT decides once per span). Draws are made for the P slots only, not all L.
    """
    slots = positions.shape[-1]
    k_action, k_random = jax.random.split(key)
    u = jax.random.uniform(k_action, (slots,))
    if decision_groups is not None:
        u = u[decision_groups]
    replacement = random_tokens(k_random, (slots,), vocab, random_excludes_specials, unigram_counts)
    original = tokens[positions]
    new = jnp.where(u < mask_prob, vocab.mask_id, original)
    new = jnp.where(u >= 1.0 - random_prob, replacement, new)
    target = jnp.where(weights > 0, positions, tokens.shape[-1])
    return tokens.at[target].set(new, mode="drop")


def word_layout(candidates: jnp.ndarray, segment_ids: jnp.ndarray, word_starts: jnp.ndarray):
    """Words within runs of maskable tokens, on one row.

    A word starts at a flagged token, after a non-candidate, or at a new segment. Returns
    (starts bool [L], word_index int [L] (-1 before the first word), word_begin int [L + 1]
    (first position of word w; L past the last word), word_first int [L] (first position of
    each token's word), run_end int [L] (end of each token's run of candidates)).
    """
    length = candidates.shape[-1]
    idx = jnp.arange(length)
    prev_cand = jnp.concatenate([jnp.zeros(1, bool), candidates[:-1]])
    prev_seg = jnp.concatenate([segment_ids[:1] - 1, segment_ids[:-1]])
    starts = candidates & (word_starts | ~prev_cand | (segment_ids != prev_seg))
    word_index = jnp.cumsum(starts) - 1
    word_begin = jnp.full(length + 1, length).at[jnp.where(starts, word_index, length)].set(idx)
    word_first = jax.lax.cummax(jnp.where(starts, idx, 0))
    run_end = jax.lax.cummin(jnp.where(candidates, length, idx), reverse=True)
    return starts, word_index, word_begin, word_first, run_end


def masked_batch_fields(
    tokens, inputs, selected, segment_ids, positions, targets, weights
) -> dict[str, jnp.ndarray]:
    """The `Batch` fields of a bidirectional masked-LM objective (one row)."""
    return dict(
        inputs=inputs,
        targets=tokens,
        loss_weights=selected.astype(jnp.float32),
        positions=positions_from_segments(segment_ids),
        segment_ids=segment_ids,
        attention=AttentionMask.bidirectional(segment_ids),
        masked_positions=positions,
        masked_targets=targets,
        masked_weights=weights,
    )


def unit_ids(
    unit_starts: jnp.ndarray, candidates: jnp.ndarray, segment_ids: jnp.ndarray
) -> jnp.ndarray:
    """Index (0, 1, ...) of the maskable unit (word, entity, ...) each token belongs to; -1 for
    non-candidates. A unit starts at a flagged token, after a non-candidate, and at a new segment.
    """
    prev_candidate = jnp.concatenate([jnp.zeros(1, bool), candidates[:-1]])
    prev_segment = jnp.concatenate([segment_ids[:1] - 1, segment_ids[:-1]])
    starts = candidates & (unit_starts | ~prev_candidate | (segment_ids != prev_segment))
    ids = jnp.cumsum(starts) - 1
    return jnp.where(candidates, ids, -1).astype(jnp.int32)


def select_ngram_units(
    key: jax.Array,
    units: jnp.ndarray,
    segment_ids: jnp.ndarray,
    budget: jnp.ndarray,
    ngram_probs: tuple[float, ...],
) -> jnp.ndarray:
    """ALBERT's n-gram masking over whole units (bool [L] of selected tokens).

    Exactly the reference greedy (albert `create_masked_lm_predictions`): every unit is a
    candidate n-gram start, visited in random order; n is drawn with probabilities
    `ngram_probs` (renormalised over the n-grams that fit in the segment); a too long n-gram is
    shortened until it fits the budget, else skipped; one that overlaps an earlier selection is
    skipped. With `ngram_probs=(1.0,)` this is BERT's whole-word masking (a word that would
    overflow the budget is skipped, not truncated). n-grams never leave a packed segment.
    """
    length = units.shape[-1]
    max_n = len(ngram_probs)
    k_order, k_n = jax.random.split(key)
    valid_token = units >= 0
    slot = jnp.where(valid_token, units, length)
    unit_len = jnp.zeros(length + 1, jnp.int32).at[slot].add(1)[:length]
    unit_seg = jnp.zeros(length + 1, jnp.int32).at[slot].max(segment_ids)[:length]
    num_units = jnp.max(units) + 1
    exists = jnp.arange(length) < num_units
    cum_len = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.cumsum(unit_len)])

    offsets = jnp.arange(max_n)
    follow = jnp.arange(length)[:, None] + offsets  # [U, max_n] unit indices of each n-gram
    follow_ok = (follow < num_units) & (
        unit_seg[jnp.minimum(follow, length - 1)] == unit_seg[:, None]
    )
    fits = jnp.cumprod(follow_ok, axis=1).astype(bool)  # n-gram of n = k + 1 stays in segment
    logits = jnp.where(fits, jnp.log(jnp.asarray(ngram_probs)), -jnp.inf)
    sampled_n = jax.random.categorical(k_n, logits) + 1  # [U]
    ngram_len = cum_len[jnp.minimum(follow + 1, length)] - cum_len[:length, None]  # [U, max_n]

    order = random_order(k_order, exists)
    covered = greedy_ngram_cover(order, sampled_n, ngram_len, exists, budget)
    return valid_token & covered[jnp.maximum(units, 0)]


def greedy_ngram_cover(
    order: jnp.ndarray,
    sampled_n: jnp.ndarray,
    ngram_len: jnp.ndarray,
    exists: jnp.ndarray,
    budget: jnp.ndarray,
) -> jnp.ndarray:
    """The deterministic core of ALBERT's n-gram greedy (bool [U]: units covered).

    Visits start units in `order`; for start u tries the n-gram of `sampled_n[u]` units, shortened
    while `count + ngram_len[u, n - 1]` exceeds `budget`; skips it if nothing fits or a unit is
    already covered; stops adding once `count` reaches `budget`.
    """
    num = order.shape[-1]
    max_n = ngram_len.shape[-1]
    offsets = jnp.arange(max_n)

    def visit(carry, u):
        count, covered = carry
        lens = ngram_len[u]
        ok = (offsets < sampled_n[u]) & (count + lens <= budget)
        n = jnp.where(ok.any(), jnp.max(jnp.where(ok, offsets + 1, 0)), 0)
        members = u + offsets
        in_gram = offsets < n
        overlap = (covered[jnp.minimum(members, num - 1)] & in_gram).any()
        take = exists[u] & (n > 0) & ~overlap & (count < budget)
        covered = covered.at[members].max(in_gram & take, mode="drop")
        return (count + jnp.where(take, lens[jnp.maximum(n - 1, 0)], 0), covered), None

    init = (jnp.zeros((), jnp.int32), jnp.zeros(num, bool))
    (_, covered), _ = jax.lax.scan(visit, init, order)
    return covered


def _masked_batch(
    k_corrupt,
    tokens,
    segment_ids,
    selected,
    *,
    vocab,
    max_predictions,
    mask_prob,
    random_prob,
    random_excludes_specials,
) -> Batch:
    positions, targets, weights = sparse_layout(selected, tokens, max_predictions, vocab.pad_id)
    inputs = corrupt(
        k_corrupt,
        tokens,
        positions,
        weights,
        vocab,
        mask_prob,
        random_prob,
        random_excludes_specials,
    )
    return Batch(
        **masked_batch_fields(tokens, inputs, selected, segment_ids, positions, targets, weights)
    )


def masked_row(
    key,
    tokens,
    segment_ids,
    unit_starts,
    *,
    vocab,
    rate,
    max_predictions,
    budget,
    ngram_probs,
    **corruption,
):
    """One row of every masked-LM objective (mlm, wwm, ngram, entity, electra, unilm's cloze):
    a budget, tokens chosen one by one (`unit_starts` None) or as whole-unit n-grams, then
    80/10/10 on the sparse slots. Returns the row's `Batch` (bidirectional attention)."""
    k_budget, k_select, k_corrupt = jax.random.split(key, 3)
    candidates = candidates_of(tokens, segment_ids, vocab)
    count = prediction_budget(
        k_budget, (segment_ids != 0).sum(), rate, max_predictions, budget, tokens.shape[-1]
    )
    if unit_starts is None:
        selected = select_positions(k_select, candidates, count, max_predictions)
    else:
        units = unit_ids(unit_starts, candidates, segment_ids)
        selected = select_ngram_units(k_select, units, segment_ids, count, ngram_probs)
    return _masked_batch(
        k_corrupt,
        tokens,
        segment_ids,
        selected,
        vocab=vocab,
        max_predictions=max_predictions,
        **corruption,
    )


def random_order(key: jax.Array, eligible: jnp.ndarray) -> jnp.ndarray:
    """Indices of the eligible entries in uniformly random order, then the others ([L])."""
    keys = jnp.where(eligible, jax.random.uniform(key, eligible.shape), 2.0)
    return jnp.argsort(keys)


def random_ranks(key: jax.Array, length: int, share: jnp.ndarray | None = None) -> jnp.ndarray:
    """Distinct random int32 ranks of `length` positions (a uniformly random order, ties broken
    by position) below 2**30, so doubled ranks fit int32: random high bits, the position in the
    low bits. `share` [L] gives the position whose random bits each position takes (a word's
    tokens share its first token's: the word stays contiguous in the order)."""
    shift = max(1, math.ceil(math.log2(length)))
    bits = (jax.random.bits(key, (length,)) >> (32 - (30 - shift))).astype(jnp.int32)
    if share is not None:
        bits = bits[share]
    return (bits << shift) | jnp.arange(length, dtype=jnp.int32)
