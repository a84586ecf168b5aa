"""lm_jax.objectives.masked_lm: BERT / RoBERTa masked LM, whole-word, n-gram and entity masking,
ELECTRA's masking and replacement sampling, against the references in shared/OBJECTIVES.md."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from objective_rows import (
    bert_budget,
    call,
    random_rows,
    rows,
)

import lm_jax.objectives as obj
from lm_jax.data.tokenizer import VocabInfo
from lm_jax.errors import ConfigError


def word_spans(starts_row, candidates_row):
    words, current = [], []
    for i, (s, c) in enumerate(zip(starts_row, candidates_row)):
        if not c or s or not current:
            if current:
                words.append(current)
            current = [i] if c else []
        else:
            current.append(i)
    if current:
        words.append(current)
    return words


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


@pytest.mark.parametrize("name", ["wwm", "ngram"])
def test_whole_words_are_all_or_nothing(name, vocab):
    tokens, segs, starts = rows(vocab, 64, 64, docs=2)
    batch = call(name, jax.random.key(4), tokens, vocab, segs, starts)
    sel = np.asarray(batch.loss_weights) > 0
    candidates = (np.asarray(segs) > 0) & ~np.isin(np.asarray(tokens), vocab.special_ids)
    for r in range(64):
        for word in word_spans(np.asarray(starts[r]), candidates[r]):
            assert sel[r, word].all() or not sel[r, word].any()
        assert sel[r].sum() <= max(1, round(0.15 * 64))


def test_wwm_with_single_token_words_hits_the_budget_and_accepts_word_ids(vocab):
    tokens, segs, _ = rows(vocab, 16, 50)
    batch = obj.wwm(
        jax.random.key(0), tokens, vocab=vocab, word_ids=jnp.arange(50)[None].repeat(16, 0)
    )
    assert (np.asarray(batch.loss_weights).sum(-1) == round(0.15 * 50)).all()
    # Chinese: word ids from a segmenter; characters of one word share an id.
    word_ids = jnp.asarray(np.repeat(np.arange(25), 2))[None].repeat(16, 0)
    batch = obj.wwm(jax.random.key(1), tokens, vocab=vocab, word_ids=word_ids)
    sel = np.asarray(batch.loss_weights) > 0
    pairs = sel[:, 2:48].reshape(16, 23, 2)  # words 1..23 lie fully between [CLS] and [SEP]
    assert (pairs[..., 0] == pairs[..., 1]).all()
    with pytest.raises(ValueError, match="exactly one"):
        obj.wwm(jax.random.key(0), tokens, vocab=vocab)


def test_ngram_lengths_follow_one_over_n(vocab):
    """With one-token words and a small rate, selected runs are the sampled n-grams."""
    tokens, segs, _ = rows(vocab, 512, 512)
    batch = jax.jit(
        lambda k: obj.ngram(
            k,
            tokens,
            vocab=vocab,
            segment_ids=segs,
            word_starts=jnp.ones_like(tokens, bool),
            rate=0.03,
        )
    )(jax.random.key(5))
    sel = np.asarray(batch.loss_weights) > 0
    runs = []
    for r in sel:
        edges = np.diff(np.concatenate([[0], r.astype(int), [0]]))
        runs += (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()
    hist = np.bincount(runs, minlength=5)[1:4] / len(runs)
    # Budget shortening and rare touching n-grams move a little mass; the shape is 1/n.
    np.testing.assert_allclose(hist, [6 / 11, 3 / 11, 2 / 11], atol=0.05)


def test_entity_spans_masked_whole(vocab):
    tokens, segs, _ = rows(vocab, 256, 40)
    entity_ids = np.zeros((256, 40), np.int32)
    entity_ids[:, 5:9], entity_ids[:, 9:11], entity_ids[:, 20:24] = 1, 2, 3
    batch = obj.entity(
        jax.random.key(6), tokens, vocab=vocab, segment_ids=segs, entity_ids=jnp.asarray(entity_ids)
    )
    sel = np.asarray(batch.loss_weights) > 0
    for a, b in [(5, 9), (9, 11), (20, 24)]:
        assert ((sel[:, a:b].all(1)) | (~sel[:, a:b].any(1))).all()
    assert sel[:, 5:9].all(1).mean() > 0.05  # entities do get masked


def test_electra_masking_85_15_no_random(vocab):
    tokens, segs, _ = rows(vocab, 1024, 128)
    batch = jax.jit(lambda k: obj.electra(k, tokens, vocab=vocab, segment_ids=segs))(
        jax.random.key(9)
    )
    assert batch.masked_positions.shape[-1] == int((0.15 + 0.005) * 128)
    sel = np.asarray(batch.loss_weights) > 0
    inputs, orig = np.asarray(batch.inputs)[sel], np.asarray(tokens)[sel]
    assert abs((inputs == vocab.mask_id).mean() - 0.85) < 0.01
    assert ((inputs == vocab.mask_id) | (inputs == orig)).all()  # never a random token


def test_electra_replace_labels_and_gumbel_sampling(vocab):
    tokens, segs, _ = rows(vocab, 2048, 32)
    batch = obj.electra(jax.random.key(10), tokens, vocab=vocab, segment_ids=segs)
    P = batch.masked_positions.shape[-1]
    # A generator that always predicts the original: nothing is labelled replaced.
    perfect = jax.nn.one_hot(batch.masked_targets, vocab.size) * 1e4
    out = obj.electra_replace(jax.random.key(0), batch, perfect)
    np.testing.assert_array_equal(out.inputs, tokens)
    assert int(out.labels.sum()) == 0
    # Logits over three tokens: samples follow the softmax; labels mark real replacements only.
    logits = jnp.full((2048, P, vocab.size), -1e9).at[..., 10].set(0.0).at[..., 11].set(1.0)
    logits = logits.at[..., 12].set(2.0)
    out = obj.electra_replace(jax.random.key(1), batch, logits)
    w = np.asarray(batch.masked_weights) > 0
    sampled = np.take_along_axis(np.asarray(out.inputs), np.asarray(batch.masked_positions), 1)[w]
    freq = np.bincount(sampled, minlength=13)[10:13] / w.sum()
    np.testing.assert_allclose(freq, jax.nn.softmax(jnp.array([0.0, 1.0, 2.0])), atol=0.01)
    np.testing.assert_array_equal(out.labels, np.asarray(out.inputs) != np.asarray(tokens))
    np.testing.assert_array_equal(out.loss_weights, np.asarray(segs) > 0)


def test_two_stage_sampling_follows_the_softmax_across_blocks():
    """Ids in different blocks, a block with no possible id, -inf ids: the frequency of every id
    in 200,000 draws lies within 5 standard errors of its softmax probability."""
    from lm_jax.objectives.masked_lm import sample_from_logits

    logits = 1.5 * jax.random.normal(jax.random.key(0), (300,))
    logits = logits.at[128:256].set(-jnp.inf).at[::7].set(-jnp.inf)  # block 1 impossible
    rows = jnp.broadcast_to(logits, (200_000, 300))
    draws = np.asarray(jax.jit(sample_from_logits)(jax.random.key(1), rows))
    freq = np.bincount(draws, minlength=300) / len(draws)
    assert freq[128:256].sum() == 0 and freq[::7].sum() == 0
    p = np.asarray(jax.nn.softmax(logits))
    assert (np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / len(draws))).all()
