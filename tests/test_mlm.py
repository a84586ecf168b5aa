"""BERT / RoBERTa masked LM against the reference behaviour in shared/OBJECTIVES.md."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lm_jax.objectives as obj
from lm_jax.data.tokenizer import VocabInfo
from lm_jax.errors import ConfigError


def random_rows(vocab, batch, length, seed=0, lengths=None):
    """[CLS] tokens [SEP] rows of regular tokens, padded to `length` after `lengths[i]` tokens."""
    rng = np.random.default_rng(seed)
    regular = vocab.regular_ids()
    tokens = regular[rng.integers(0, len(regular), (batch, length))]
    lengths = np.full(batch, length) if lengths is None else np.asarray(lengths)
    for i, n in enumerate(lengths):
        tokens[i, 0], tokens[i, n - 1] = vocab.cls_id, vocab.sep_id
        tokens[i, n:] = vocab.pad_id
    return jnp.asarray(tokens)


def bert_budget(n, rate=0.15, max_predictions=20):
    return min(max_predictions, max(1, int(round(n * rate))))


def test_registry():
    assert "mlm" in obj.names() and obj.get("mlm") is obj.mlm
    with pytest.raises(ConfigError, match="unknown objective 'nope'"):
        obj.get("nope")


def test_exact_budget_with_bankers_rounding(vocab):
    lengths = [10, 30, 50, 100, 128, 7, 3, 1 + 2]  # 1.5 -> 2, 4.5 -> 4 (Python 3 round)
    tokens = random_rows(vocab, len(lengths), 128, lengths=lengths)
    batch = obj.mlm(jax.random.key(1), tokens, vocab=vocab, max_predictions=20)
    counts = np.asarray(batch.loss_weights.sum(-1)).astype(int)
    assert counts.tolist() == [min(bert_budget(n), n - 2) for n in lengths]
    assert counts.tolist()[:2] == [2, 4]


def test_specials_and_pad_never_selected(vocab):
    tokens = random_rows(vocab, 64, 64, lengths=np.random.default_rng(0).integers(3, 65, 64))
    tokens = (
        tokens.at[:, 5]
        .set(vocab.mask_id)
        .at[:, 6]
        .set(vocab.sentinel_ids[0])
        .at[:, 7]
        .set(vocab.unk_id)
    )
    batch = obj.mlm(jax.random.key(0), tokens, vocab=vocab)
    special = np.isin(np.asarray(tokens), vocab.special_ids)
    assert not np.asarray(batch.loss_weights)[special].any()
    # Padding stays padding and is never predicted.
    pad = np.asarray(tokens) == vocab.pad_id
    assert (np.asarray(batch.inputs)[pad] == vocab.pad_id).all()


def test_80_10_10_statistics(vocab):
    tokens = random_rows(vocab, 1024, 128)
    batch = jax.jit(lambda k, t: obj.mlm(k, t, vocab=vocab))(jax.random.key(7), tokens)
    sel = np.asarray(batch.loss_weights) > 0
    inputs, orig = np.asarray(batch.inputs)[sel], np.asarray(tokens)[sel]
    n = sel.sum()
    p_mask = (inputs == vocab.mask_id).mean()
    p_same = (inputs == orig).mean()
    p_random = ((inputs != orig) & (inputs != vocab.mask_id)).mean()
    tol = 4 * np.sqrt(0.25 / n)
    num_regular = len(vocab.regular_ids())
    assert abs(p_mask - 0.8) < tol
    assert abs(p_same - (0.1 + 0.1 / num_regular)) < tol
    assert abs(p_random - (0.1 - 0.1 / num_regular)) < tol
    # Random replacements never produce specials (the default).
    assert not np.isin(inputs[inputs != vocab.mask_id], vocab.special_ids).any()
    # Nothing changes outside the selection.
    np.testing.assert_array_equal(np.asarray(batch.inputs)[~sel], np.asarray(tokens)[~sel])


def test_selection_is_uniform_over_candidates(vocab):
    tokens = random_rows(vocab, 4096, 32)
    batch = obj.mlm(jax.random.key(3), tokens, vocab=vocab)
    per_position = np.asarray(batch.loss_weights).sum(0)[1:-1]  # candidates 1..30
    expected = 4096 * bert_budget(32) / 30
    chi2 = ((per_position - expected) ** 2 / expected).sum()
    assert chi2 < 70  # 29 degrees of freedom: p < 1e-4 beyond 70


def test_reference_random_tokens_include_specials():
    small = VocabInfo(size=10, pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)
    tokens = jnp.tile(jnp.array([2, 5, 6, 7, 8, 9, 5, 6, 7, 3]), (4096, 1))
    batch = obj.mlm(
        jax.random.key(0),
        tokens,
        vocab=small,
        mask_prob=0.0,
        random_prob=1.0,
        random_excludes_specials=False,
    )
    replaced = np.asarray(batch.inputs)[np.asarray(batch.loss_weights) > 0]
    share_special = np.isin(replaced, small.special_ids).mean()
    assert abs(share_special - 0.5) < 0.05  # 5 of 10 ids are special
    batch = obj.mlm(jax.random.key(0), tokens, vocab=small, mask_prob=0.0, random_prob=1.0)
    assert not np.isin(
        np.asarray(batch.inputs)[np.asarray(batch.loss_weights) > 0], small.special_ids
    ).any()


def test_probabilistic_budget_is_exact_in_expectation(vocab):
    tokens = random_rows(vocab, 4096, 50)
    batch = obj.mlm(jax.random.key(5), tokens, vocab=vocab, budget="probabilistic")
    counts = np.asarray(batch.loss_weights.sum(-1))
    assert set(np.unique(counts)) <= {7.0, 8.0}  # int(7.5 + U)
    assert abs(counts.mean() - 7.5) < 4 * 0.5 / np.sqrt(4096)


def test_deterministic_given_key_and_dynamic_across_keys(vocab):
    tokens = random_rows(vocab, 8, 64)
    a = obj.mlm(jax.random.key(0), tokens, vocab=vocab)
    b = obj.mlm(jax.random.key(0), tokens, vocab=vocab)
    c = obj.mlm(jax.random.key(1), tokens, vocab=vocab)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    assert not np.array_equal(a.loss_weights, c.loss_weights)


def test_batch_equals_vmap_of_rows(vocab):
    tokens = random_rows(vocab, 6, 40)
    key = jax.random.key(11)
    batched = jax.jit(lambda k, t: obj.mlm(k, t, vocab=vocab))(key, tokens)
    rows = jax.vmap(lambda k, t: obj.mlm(k, t, vocab=vocab))(jax.random.split(key, 6), tokens)
    jax.tree.map(np.testing.assert_array_equal, batched, rows)
    # Extra leading axes are rows too.
    nested = obj.mlm(key, tokens.reshape(2, 3, 40), vocab=vocab)
    np.testing.assert_array_equal(nested.inputs.reshape(6, 40), batched.inputs)


def test_sparse_layout_matches_dense(vocab):
    tokens = random_rows(vocab, 32, 64, lengths=np.random.default_rng(1).integers(3, 65, 32))
    b = obj.mlm(jax.random.key(2), tokens, vocab=vocab)
    for i in range(32):
        w = np.asarray(b.masked_weights[i]) > 0
        pos = np.asarray(b.masked_positions[i])
        k = w.sum()
        assert w[:k].all() and not w[k:].any()
        assert (np.diff(pos[:k]) > 0).all()
        assert sorted(np.flatnonzero(np.asarray(b.loss_weights[i]))) == pos[:k].tolist()
        np.testing.assert_array_equal(
            np.asarray(b.masked_targets[i])[:k], np.asarray(tokens[i])[pos[:k]]
        )
        assert (np.asarray(b.masked_targets[i])[k:] == vocab.pad_id).all()


def test_packed_rows_attend_within_documents(vocab):
    tokens = random_rows(vocab, 2, 12)
    segment_ids = jnp.array([[1, 1, 1, 1, 2, 2, 2, 3, 3, 3, 0, 0]] * 2)
    b = obj.mlm(jax.random.key(0), tokens, vocab=vocab, segment_ids=segment_ids)
    np.testing.assert_array_equal(b.positions[0], [0, 1, 2, 3, 0, 1, 2, 0, 1, 2, 0, 0])
    mask = np.asarray(obj.dense_attention_mask(b))
    seg = np.asarray(segment_ids)
    expected = (seg[:, :, None] == seg[:, None, :]) & (seg[:, :, None] > 0)
    np.testing.assert_array_equal(mask, expected)
    assert not np.asarray(b.loss_weights)[seg == 0].any()


def test_bad_options(vocab):
    tokens = random_rows(vocab, 2, 16)
    with pytest.raises(ValueError, match="rate"):
        obj.mlm(jax.random.key(0), tokens, vocab=vocab, rate=1.5)
    with pytest.raises(ValueError, match="budget"):
        obj.mlm(jax.random.key(0), tokens, vocab=vocab, budget="exact")
    with pytest.raises(ValueError, match="segment_ids has shape"):
        obj.mlm(jax.random.key(0), tokens, vocab=vocab, segment_ids=jnp.ones((2, 3), jnp.int32))
    with pytest.raises(ValueError, match="integer"):
        obj.mlm(jax.random.key(0), tokens.astype(jnp.float32), vocab=vocab)
    with pytest.raises(ValueError, match="length >= 1"):
        obj.mlm(jax.random.key(0), jnp.zeros((2, 0), jnp.int32), vocab=vocab)


@st.composite
def odd_rows(draw):
    length = draw(st.sampled_from([1, 2, 9, 31, 70]))  # few shapes: one compilation each
    batch = draw(st.sampled_from([1, 3]))
    ids = st.integers(0, 999)
    tokens = np.array(
        draw(
            st.lists(
                st.lists(ids, min_size=length, max_size=length), min_size=batch, max_size=batch
            )
        ),
        dtype=np.int32,
    )
    # Packed segments: non-decreasing ids, padding (0) only at the end.
    cuts = np.sort(np.array(draw(st.lists(st.integers(0, length), min_size=batch, max_size=batch))))
    segs = np.zeros((batch, length), np.int32)
    for i in range(batch):
        n_docs = draw(st.integers(1, 4))
        bounds = (
            np.sort(
                draw(st.lists(st.integers(0, length), min_size=n_docs - 1, max_size=n_docs - 1))
            )
            if n_docs > 1
            else []
        )
        segs[i] = 1 + np.searchsorted(np.asarray(bounds), np.arange(length), side="right")
        segs[i, cuts[i] :] = 0
    tokens[segs == 0] = 0
    return tokens, segs


@functools.lru_cache(maxsize=None)
def jitted_mlm(vocab, budget):
    return jax.jit(lambda k, t, s: obj.mlm(k, t, vocab=vocab, segment_ids=s, budget=budget))


@settings(max_examples=10, deadline=None)
@given(odd_rows(), st.sampled_from(["round", "probabilistic"]))
def test_property_valid_batch_on_odd_inputs(vocab, rows, budget):
    tokens, segs = rows
    b = jitted_mlm(vocab, budget)(jax.random.key(0), jnp.asarray(tokens), jnp.asarray(segs))
    length = tokens.shape[1]
    max_pred = min(length, max(1, int(np.ceil(0.15 * length))))
    assert b.inputs.shape == tokens.shape and b.masked_positions.shape == (
        tokens.shape[0],
        max_pred,
    )
    w = np.asarray(b.loss_weights) > 0
    candidates = (segs > 0) & ~np.isin(tokens, vocab.special_ids)
    assert not (w & ~candidates).any()
    np.testing.assert_array_equal(np.asarray(b.inputs)[~w], tokens[~w])
    counts = w.sum(-1)
    for i in range(tokens.shape[0]):
        n = (segs[i] > 0).sum()
        if budget == "round":
            assert counts[i] == min(
                candidates[i].sum(), min(max_pred, max(1, round(0.15 * n))) if n else 0
            )
        else:
            assert counts[i] <= min(candidates[i].sum(), int(0.15 * n) + 1)


LENGTHS = np.arange(3, 1025)  # [CLS] + n - 2 tokens + [SEP], every row length up to 1024


def predicted_per_row(batch) -> list[int]:
    return np.asarray(batch.masked_weights > 0).sum(-1).tolist()


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
