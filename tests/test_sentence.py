"""Sentence-level objectives: NSP, SOP, StructBERT, XLM's TLM (shared/OBJECTIVES.md)."""

import functools
import random

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lm_jax.objectives as obj
from lm_jax.data.tokenizer import VocabInfo
from lm_jax.objectives.sentence import truncated_lengths

VOCAB = VocabInfo(size=5000, pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)
SPECIALS = (VOCAB.cls_id, VOCAB.sep_id)


def documents(batch, length, lengths, sentence_len=5):
    """Row b holds tokens 10 + 100 * (b % 48) + i (distinct across 48 rows, so every token says
    which row it came from), sentences of `sentence_len` tokens."""
    tokens = np.zeros((batch, length), np.int32)
    starts = np.zeros((batch, length), bool)
    for b in range(batch):
        n = lengths[b % len(lengths)]
        tokens[b, :n] = 10 + 100 * (b % 48) + np.arange(n)
        starts[b, :n:sentence_len] = True
    return jnp.asarray(tokens), jnp.asarray((tokens > 0).astype(np.int32)), jnp.asarray(starts)


@functools.lru_cache(maxsize=None)
def jitted(name, **options):
    return jax.jit(functools.partial(obj.get(name), vocab=VOCAB, **options))


def run(name, key, tokens, segments, starts=None, **options):
    """The objective, jitted once per name and options (eager calls dispatch op by op)."""
    return jitted(name, **options)(key, tokens, segment_ids=segments, sentence_starts=starts)


def split_pair(row, types, real):
    """(A, B) token lists of an assembled [CLS] A [SEP] B [SEP] row."""
    row, types = np.asarray(row)[real > 0], np.asarray(types)[real > 0]
    assert row[0] == VOCAB.cls_id and row[-1] == VOCAB.sep_id
    first_sep = int(np.argmax(types)) - 1
    assert row[first_sep] == VOCAB.sep_id and (types[: first_sep + 1] == 0).all()
    assert (types[first_sep + 1 :] == 1).all()
    return list(row[1:first_sep]), list(row[first_sep + 1 : -1])


def unmasked(batch, b):
    """The assembled row before masking (targets hold the originals at masked positions)."""
    inputs, targets = np.asarray(batch.inputs[b]), np.asarray(batch.targets[b])
    return np.where(np.asarray(batch.loss_weights[b]) > 0, targets, inputs)


def origin(token):
    return (int(token) - 10) // 100


def test_truncate_seq_pair_closed_form():
    rng = random.Random(0)
    for _ in range(3000):
        la, lb, m = rng.randint(0, 40), rng.randint(0, 40), rng.randint(1, 50)
        a, b = la, lb
        while a + b > m:  # BERT's truncate_seq_pair (which side, not front/back)
            if a > b:
                a -= 1
            else:
                b -= 1
        assert tuple(int(x) for x in truncated_lengths(la, lb, m)) == (a, b), (la, lb, m)


@pytest.mark.parametrize("name", ["nsp", "sop", "structbert"])
def test_pairs_are_built_from_the_right_text(name):
    rows = 48
    tokens, segments, starts = documents(rows, 48, [20, 25, 30, 40])  # fit: no truncation
    batch = run(name, jax.random.key(0), tokens, segments, starts, short_seq_prob=0.0)
    labels = np.asarray(batch.sentence_labels)
    kinds = {"nsp": ["next", "random"], "sop": ["next", "swapped"]}.get(
        name, ["next", "swapped", "random"]
    )
    for b in range(rows):
        a, bb = split_pair(unmasked(batch, b), batch.token_type_ids[b], batch.segment_ids[b])
        assert a and bb and origin(a[0]) == b
        kind = kinds[labels[b]]
        if kind == "random":
            assert origin(bb[0]) != b  # another document
            assert np.all(np.diff(bb) == 1)
        else:
            first, second = (a, bb) if kind == "next" else (bb, a)
            assert origin(first[0]) == origin(second[0]) == b
            assert second[0] == first[-1] + 1  # consecutive text of the same document
            assert (np.diff(first + second) == 1).all()
            if kind == "next":
                assert (a[0] - 10) % 100 == 0  # A starts the document
    # Labels balanced: 1/2 each for NSP and SOP, 1/3 each for StructBERT.
    shares = np.bincount(labels, minlength=len(kinds)) / rows
    np.testing.assert_allclose(shares, 1 / len(kinds), atol=0.2)
    assert (np.asarray(batch.sentence_weights) == 1).all()


def test_label_balance_over_many_rows():
    tokens, segments, starts = documents(48, 48, [20, 25, 30, 40])  # shapes shared: one compile
    for name, classes in (("nsp", 2), ("sop", 2), ("structbert", 3)):
        labels = np.concatenate(
            [
                np.asarray(
                    run(name, k, tokens, segments, starts, short_seq_prob=0.0).sentence_labels
                )
                for k in jax.random.split(jax.random.key(1), 8)
            ]
        )
        shares = np.bincount(labels, minlength=classes) / len(labels)
        np.testing.assert_allclose(shares, 1 / classes, atol=0.06, err_msg=name)


def test_nsp_single_sentence_gets_a_random_b_and_long_pairs_are_trimmed():
    tokens, segments, _ = documents(8, 40, [40])
    batch = run("nsp", jax.random.key(2), tokens, segments)  # no sentence starts
    assert (np.asarray(batch.sentence_labels) == 1).all()  # one sentence: NotNext (BERT)
    for b in range(8):
        a, bb = split_pair(unmasked(batch, b), batch.token_type_ids[b], batch.segment_ids[b])
        assert len(a) + len(bb) <= 40 - 3
        assert (np.diff(a) == 1).all() and (np.diff(bb) == 1).all()  # trimmed at the ends only


def test_structbert_word_structure():
    tokens, segments, starts = documents(64, 48, [40, 45])
    batch = run("structbert", jax.random.key(3), tokens, segments, starts, trigram_rate=0.5)
    shuffled_trigrams = 0
    for b in range(64):
        inputs, targets = np.asarray(batch.inputs[b]), np.asarray(batch.targets[b])
        weights = np.asarray(batch.loss_weights[b]) > 0
        changed = weights & (inputs != targets) & (inputs != VOCAB.mask_id)
        # Sparse layout = every predicted position, with the original tokens.
        slots = np.asarray(batch.masked_weights[b]) > 0
        np.testing.assert_array_equal(
            np.asarray(batch.masked_positions[b])[slots], np.flatnonzero(weights)
        )
        np.testing.assert_array_equal(np.asarray(batch.masked_targets[b])[slots], targets[weights])
        # A shuffled trigram holds a permutation of its original tokens.
        for i in np.flatnonzero(changed):
            lo = i - (i - 1) % 3
            if lo + 3 <= len(inputs) and sorted(inputs[lo : lo + 3]) == sorted(
                targets[lo : lo + 3]
            ):
                shuffled_trigrams += 1
    assert shuffled_trigrams > 64  # about half the aligned unmasked trigrams, most orders moved


@settings(max_examples=6, deadline=None)
@given(
    lengths=st.lists(st.integers(0, 24), min_size=4, max_size=4),
    with_starts=st.booleans(),
    name=st.sampled_from(["nsp", "sop", "structbert"]),
    seed=st.integers(0, 2**16),
)
def test_odd_documents_give_valid_batches(lengths, with_starts, name, seed):
    tokens, segments, starts = documents(len(lengths), 24, lengths, sentence_len=3)
    starts = starts if with_starts else jnp.zeros_like(starts)  # no starts: one sentence each
    batch = run(name, jax.random.key(seed), tokens, segments, starts)
    assert batch.inputs.shape == tokens.shape and batch.sentence_labels.shape == (len(lengths),)
    for b, n in enumerate(lengths):
        real = int(batch.segment_ids[b].sum())
        valid = float(batch.sentence_weights[b])
        if n < 2 and name == "sop":
            assert valid == 0  # one token cannot be split into two (SOP has no random B)
        if valid:
            a, bb = split_pair(unmasked(batch, b), batch.token_type_ids[b], batch.segment_ids[b])
            assert a and bb and real == len(a) + len(bb) + 3
        else:
            assert real == 0 and not np.asarray(batch.loss_weights[b]).any()


def test_sentence_objective_errors():
    tokens, segments, starts = documents(1, 24, [20])
    with pytest.raises(ValueError, match=">= 2 rows"):
        obj.nsp(jax.random.key(0), tokens, vocab=VOCAB, segment_ids=segments)
    with pytest.raises(ValueError, match="at least 5 tokens"):
        obj.sop(jax.random.key(0), tokens[:, :4], vocab=VOCAB)
    with pytest.raises(ValueError, match="batch of documents"):
        obj.sop(jax.random.key(0), tokens[0], vocab=VOCAB)
    with pytest.raises(ValueError, match="segment_ids"):
        obj.tlm(jax.random.key(0), tokens, vocab=VOCAB)


def test_sentence_objectives_are_deterministic():
    tokens, segments, starts = documents(48, 48, [20, 25, 30, 40])
    for name in ("nsp", "sop", "structbert"):
        a = run(name, jax.random.key(0), tokens, segments, starts, short_seq_prob=0.0)
        again = run(name, jax.random.key(0), tokens, segments, starts, short_seq_prob=0.0)
        jax.tree.map(np.testing.assert_array_equal, a, again)
        other = run(name, jax.random.key(1), tokens, segments, starts, short_seq_prob=0.0)
        assert not np.array_equal(a.inputs, other.inputs)


def test_tlm_pairs():
    rows, length = 300, 40
    rng = np.random.default_rng(0)
    tokens = rng.integers(10, 4000, (rows, length)).astype(np.int32)
    first = rng.integers(5, 20, rows)
    total = first + rng.integers(5, 20, rows)
    idx = np.arange(length)
    segments = np.where(idx < first[:, None], 1, np.where(idx < total[:, None], 2, 0))
    tokens[segments == 0] = 0
    batch = obj.tlm(
        jax.random.key(0), jnp.asarray(tokens), vocab=VOCAB, segment_ids=jnp.asarray(segments)
    )
    positions = np.asarray(batch.positions)
    for b in range(3):
        np.testing.assert_array_equal(positions[b, : first[b]], np.arange(first[b]))
        np.testing.assert_array_equal(
            positions[b, first[b] : total[b]], np.arange(total[b] - first[b])
        )
    np.testing.assert_array_equal(batch.token_type_ids, np.maximum(segments - 1, 0))
    # The two halves see each other (one example), padding sees nothing.
    dense = np.asarray(batch.attention.dense())
    real = segments > 0
    np.testing.assert_array_equal(dense, real[:, :, None] & real[:, None, :])
    # Both halves are masked, about 15% each.
    w = np.asarray(batch.loss_weights)
    for half in (1, 2):
        share = w[segments == half].mean()
        assert 0.12 < share < 0.18, (half, share)
