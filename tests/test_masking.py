"""lm_jax.objectives.masking: the shared helpers, ALBERT's greedy n-gram cover and the prediction
budgets of every masked objective against the references' arithmetic."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from objective_rows import random_rows

import lm_jax.objectives as obj
from lm_jax.objectives.masking import greedy_ngram_cover

LENGTHS = np.arange(3, 1025)  # [CLS] + n - 2 tokens + [SEP], every row length up to 1024


def albert_reference_greedy(order, sampled_n, unit_len, num_units, budget):
    """Line-by-line port of ALBERT create_masked_lm_predictions' loop, given its random draws."""
    covered, count = set(), 0
    for u in order:
        if u >= num_units:
            continue
        if count >= budget:
            break
        n = sampled_n[u]
        grams = [list(range(u, min(u + k, num_units))) for k in range(1, n + 1)]
        index_set = grams[n - 1]
        n -= 1
        while count + sum(unit_len[i] for i in index_set) > budget:
            if n == 0:
                break
            index_set = grams[n - 1]
            n -= 1
        if count + sum(unit_len[i] for i in index_set) > budget:
            continue
        if any(i in covered for i in index_set):
            continue
        covered.update(index_set)
        count += sum(unit_len[i] for i in index_set)
    return covered


def predicted_per_row(batch) -> list[int]:
    return np.asarray(batch.masked_weights > 0).sum(-1).tolist()


@pytest.mark.parametrize("seed", range(12))
def test_ngram_greedy_matches_albert_reference_exactly(seed):
    rng = np.random.default_rng(seed)
    num_units, max_n = int(rng.integers(1, 30)), 3
    unit_len = rng.integers(1, 4, num_units)
    size = 32
    order = rng.permutation(size)
    sampled_n = np.minimum(
        rng.integers(1, max_n + 1, size), np.maximum(num_units - np.arange(size), 1)
    )
    cum = np.concatenate([[0], np.cumsum(np.pad(unit_len, (0, size)))])
    ngram_len = np.array(
        [[cum[min(u + k + 1, size)] - cum[u] for k in range(max_n)] for u in range(size)]
    )
    budget = int(rng.integers(1, 20))
    ours = greedy_ngram_cover(
        jnp.asarray(order),
        jnp.asarray(sampled_n),
        jnp.asarray(ngram_len),
        jnp.arange(size) < num_units,
        jnp.asarray(budget),
    )
    expected = albert_reference_greedy(order, sampled_n, unit_len, num_units, budget)
    assert set(np.flatnonzero(np.asarray(ours)).tolist()) == expected


@pytest.mark.parametrize(
    "name,reference",
    [
        # BERT's create_pretraining_data.py: round(len(tokens) * masked_lm_prob), Python floats.
        ("mlm", lambda n: max(1, round(n * 0.15))),
        # MPNet: round(0.15 n) of the n real tokens predicted.
        ("mpnet", lambda n: round(n * 0.15)),
        # SpanBERT: math.ceil(sent_length * mask_ratio) of the maskable tokens.
        ("span", lambda n: math.ceil((n - 2) * 0.15)),
        # ELECTRA's TF code: tf.round(num_tokens * mask_prob) in float32.
        ("electra", lambda n: max(1, int(np.round(np.float32(n) * np.float32(0.15))))),
    ],
)
def test_budgets_match_the_references_at_every_length(name, reference, vocab):
    """Every row length 3..1024: the number of predictions is the reference formula, computed
    as the reference computes it (Python float64, or float32 where the reference is TF)."""
    tokens = random_rows(vocab, len(LENGTHS), 1024, lengths=LENGTHS)
    kwargs = {"word_starts": jnp.ones(tokens.shape, bool)} if name == "span" else {}
    batch = jax.jit(lambda k, t: obj.get(name)(k, t, vocab=vocab, **kwargs))(
        jax.random.key(0), tokens
    )
    counts = predicted_per_row(batch)
    if name == "span":
        counts = np.asarray(batch.loss_weights > 0).sum(-1).tolist()
    cap = {"electra": int(0.155 * 1024)}.get(name, math.ceil(0.15 * 1024))
    expected = [min(reference(n), cap, n - 2) for n in LENGTHS]
    wrong = [(n, c, e) for n, c, e in zip(LENGTHS, counts, expected) if c != e]
    assert not wrong, f"(length, ours, reference) where they differ: {wrong[:10]}"
