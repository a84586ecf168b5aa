"""Document-aware packing: exact layout, segment ids, positions."""

import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.data.packing import pack_documents, segments_to_positions
from lm_jax.errors import DataError
from lm_jax.objectives.registry import positions_from_segments


def test_pack_exact_layout(vocab):
    docs = [np.array([10, 11, 12]), np.array([20]), np.array([30, 31, 32, 33, 34, 35, 36])]
    rows = pack_documents(docs, seq_len=8, vocab=vocab)
    np.testing.assert_array_equal(
        rows.tokens,
        [[2, 10, 11, 12, 3, 2, 20, 3], [2, 30, 31, 32, 33, 34, 35, 36], [3, 0, 0, 0, 0, 0, 0, 0]],
    )
    np.testing.assert_array_equal(
        rows.segment_ids,
        [[1, 1, 1, 1, 1, 2, 2, 2], [1, 1, 1, 1, 1, 1, 1, 1], [1, 0, 0, 0, 0, 0, 0, 0]],
    )
    np.testing.assert_array_equal(
        rows.positions,
        [[0, 1, 2, 3, 4, 0, 1, 2], [0, 1, 2, 3, 4, 5, 6, 7], [0, 0, 0, 0, 0, 0, 0, 0]],
    )
    assert rows.word_starts[0].all() and not rows.word_starts[2, 1:].any()


def test_word_starts_travel_with_tokens(vocab):
    docs = [np.array([10, 11, 12, 13])]
    starts = [np.array([True, False, True, False])]
    rows = pack_documents(docs, seq_len=6, vocab=vocab, word_starts=starts)
    np.testing.assert_array_equal(rows.word_starts[0], [True, True, False, True, False, True])
    with pytest.raises(DataError, match="align"):
        pack_documents(docs, seq_len=6, vocab=vocab, word_starts=[np.array([True])])


def test_pack_errors(vocab):
    with pytest.raises(DataError, match="no tokens"):
        pack_documents([np.array([], np.int32)], seq_len=8, vocab=vocab)
    with pytest.raises(DataError, match="seq_len"):
        pack_documents([np.array([5])], seq_len=2, vocab=vocab)


def test_positions_numpy_and_jax_agree():
    rng = np.random.default_rng(0)
    seg = np.sort(rng.integers(0, 5, size=(16, 40)), axis=1)
    np.testing.assert_array_equal(
        segments_to_positions(seg), positions_from_segments(jnp.asarray(seg))
    )
    np.testing.assert_array_equal(
        segments_to_positions(np.array([1, 1, 2, 2, 2, 0])), [0, 1, 0, 1, 2, 0]
    )
