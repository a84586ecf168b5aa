"""The contract every objective keeps (lm_jax.objectives and its registry): one signature,
jit / vmap / determinism, no attention across segments, specials never predicted, valid batches
on odd inputs, inputs checked at the boundary. Each objective's reference behaviour is tested
beside its module (test_masked_lm.py, test_span.py, ...). See shared/OBJECTIVES.md."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from objective_rows import (
    ALL,
    OBJECTIVES_II,
    call,
    masks_of,
    rows,
)

import lm_jax.objectives as obj
from lm_jax.data.tokenizer import VocabInfo


@st.composite
def odd_rows(draw):
    length = draw(st.sampled_from([1, 2, 7, 33]))  # few shapes: one compilation each
    kind = draw(st.sampled_from(["random", "padding", "specials", "many_docs"]))
    tokens = np.array(draw(st.lists(st.integers(5, 990), min_size=length, max_size=length)))
    segs = np.ones(length, np.int32)
    if kind == "padding":
        tokens[:], segs[:] = 0, 0
    elif kind == "specials":
        tokens[:] = draw(st.sampled_from([2, 3, 4, 999]))
    elif kind == "many_docs":
        segs = (
            np.cumsum(np.array(draw(st.lists(st.booleans(), min_size=length, max_size=length)))) + 1
        )
        pad_from = draw(st.integers(0, length))
        segs[pad_from:], tokens[pad_from:] = 0, 0
    return jnp.asarray(tokens[None]), jnp.asarray(segs[None].astype(np.int32))


@functools.lru_cache(maxsize=None)
def jitted(name, vocab):
    return jax.jit(lambda key, tokens, segs, starts: call(name, key, tokens, vocab, segs, starts))


def test_registry_lists_every_objective():
    assert obj.names() == sorted(
        [
            *OBJECTIVES_II,
            "mlm",
            "wwm",
            "ngram",
            "entity",
            "span",
            "electra",
            "plm",
            "mpnet",
            "clm",
            "prefix_lm",
            "unilm",
        ]
    )
    for name in obj.names():
        assert obj.get(name) is getattr(obj, name)


@pytest.mark.parametrize("name", ALL)
def test_contract_jit_vmap_determinism(name, vocab):
    tokens, segs, starts = rows(vocab, 4, 48, docs=2, pad=5)
    fn = jax.jit(functools.partial(call, name, vocab=vocab))
    a = fn(jax.random.key(0), tokens, segs=segs, starts=starts)
    b = fn(jax.random.key(0), tokens, segs=segs, starts=starts)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # The batch equals the per-row function vmapped with the split keys.
    per_row = jax.vmap(lambda k, t, s, w: call(name, k, t, vocab, s, w))(
        jax.random.split(jax.random.key(0), 4), tokens, segs, starts
    )
    jax.tree.map(np.testing.assert_array_equal, a, per_row)
    if name != "clm":  # the only deterministic objective
        c = fn(jax.random.key(1), tokens, segs=segs, starts=starts)
        assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))
    # Padding is never predicted.
    assert not np.asarray(a.loss_weights)[np.asarray(segs) == 0].any()


@pytest.mark.parametrize("name", ALL)
def test_nothing_attends_across_segments(name, vocab):
    tokens, segs, starts = rows(vocab, 3, 40, docs=3, pad=4)
    batch = call(name, jax.random.key(2), tokens, vocab, segs, starts)
    content_seg = np.asarray(batch.segment_ids)
    query_segs = [content_seg]
    if isinstance(batch, obj.TwoStreamBatch):
        query_segs.append(np.asarray(batch.query_segment_ids))
    for mask, q_seg in zip(masks_of(batch), query_segs):
        mask = np.asarray(mask)
        same = (q_seg[:, :, None] == content_seg[:, None, :]) & (q_seg[:, :, None] > 0)
        assert not (mask & ~same).any()


@pytest.mark.parametrize("name", ALL)
def test_specials_never_predicted(name, vocab):
    tokens, segs, starts = rows(vocab, 8, 40, docs=2)
    tokens = tokens.at[:, 7].set(vocab.mask_id).at[:, 8].set(vocab.sentinel_ids[1])
    batch = call(name, jax.random.key(3), tokens, vocab, segs, starts)
    special = np.isin(np.asarray(tokens), vocab.special_ids)
    weights = np.asarray(batch.loss_weights)
    if name in ("clm", "prefix_lm"):  # next-token targets: [SEP] may be a target, pad never
        assert not np.isin(np.asarray(batch.targets)[weights > 0], [vocab.pad_id]).any()
    else:
        assert not weights[special].any()


@settings(max_examples=8, deadline=None)
@given(data=odd_rows())
@pytest.mark.parametrize("name", ALL)
def test_property_valid_batch_on_odd_inputs(name, vocab, data):
    tokens, segs = data
    starts = jnp.ones(tokens.shape, bool)
    batch = jitted(name, vocab)(jax.random.key(0), tokens, segs, starts)
    for leaf in jax.tree.leaves(batch):
        assert np.isfinite(np.asarray(leaf, np.float64)).all()
    weights = np.asarray(batch.loss_weights)
    assert weights.shape == tokens.shape
    if name not in ("clm", "prefix_lm"):
        candidates = (np.asarray(segs) > 0) & ~np.isin(np.asarray(tokens), vocab.special_ids)
        assert not (weights > 0)[~candidates].any()
        if batch.masked_weights is not None:
            assert batch.masked_weights.sum() == weights.sum()


def test_inputs_are_checked_at_the_boundary(vocab):
    """Out-of-range, negative or float inputs and a vocabulary without regular ids are named at
    the call, not 17 frames deep in JAX (values only outside jit, where they are concrete)."""
    from lm_jax.errors import DataError

    key, tokens = jax.random.key(0), np.full((2, 16), 7, np.int32)
    cases = [
        (dict(tokens=np.full((2, 16), 1000)), r"token ids must lie in \[0, 1000\).*1000 to 1000"),
        (dict(tokens=np.full((2, 16), -3)), "token ids must lie in .* from -3"),
        (dict(tokens=tokens.astype(np.float32)), "tokens must be integer ids, got dtype float32"),
        (dict(segment_ids=np.ones((2, 16), np.float32)), "segment_ids must be integer ids"),
        (dict(segment_ids=-np.ones((2, 16), np.int32)), "segment_ids must be >= 0"),
    ]
    for name in ("mlm", "clm", "t5"):
        for arguments, message in cases:
            arguments = {"tokens": tokens, **arguments}
            with pytest.raises(DataError, match=f"{name}: {message}"):
                obj.get(name)(key, arguments.pop("tokens"), vocab=vocab, **arguments)
    specials_only = VocabInfo(size=5, pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)
    with pytest.raises(DataError, match="no regular, non-special id"):
        obj.mlm(key, np.full((2, 16), 2), vocab=specials_only)
    with pytest.raises(DataError, match="word_starts must be bool or integer flags"):
        obj.wwm(key, tokens, vocab=vocab, word_starts=np.ones((2, 16), np.float32))
