"""Document-aware packing: exact layout, segment ids, positions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from conftest import stacked_rows

from lm_jax.data.packing import pack_documents
from lm_jax.errors import DataError
from lm_jax.layout import positions_from_segments


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
    """One function for the host pipeline (NumPy) and the objectives (JAX, under jit)."""
    rng = np.random.default_rng(0)
    seg = np.sort(rng.integers(0, 5, size=(16, 40)), axis=1)
    on_host = positions_from_segments(seg)
    assert isinstance(on_host, np.ndarray) and on_host.dtype == np.int32
    np.testing.assert_array_equal(on_host, jax.jit(positions_from_segments)(jnp.asarray(seg)))
    np.testing.assert_array_equal(
        positions_from_segments(np.array([1, 1, 2, 2, 2, 0])), [0, 1, 0, 1, 2, 0]
    )


def test_split_sentences():
    from lm_jax.data.sentences import split_sentences

    text = (
        'Hello there. This is (a test.) Next one! 3.5 kg, "Quote." What?\nLine break 你好。再见！'
    )
    assert split_sentences(text) == [
        "Hello there.",
        "This is (a test.)",
        "Next one!",
        '3.5 kg, "Quote."',
        "What?",
        "Line break 你好。",
        "再见！",
    ]
    assert split_sentences("  \n\n ") == []


def test_document_rows_cut_at_sentence_boundaries(wiki_tokenizer, wiki_docs):
    from lm_jax.data.pipeline import document_rows
    from lm_jax.data.sentences import split_sentences

    docs = wiki_docs[:3]
    rows = stacked_rows(document_rows(docs, wiki_tokenizer, 64))
    sentence_ids = [[wiki_tokenizer.encode_ids([s])[0] for s in split_sentences(d)] for d in docs]
    stream = np.concatenate([x for doc in sentence_ids for x in doc])
    # Every token kept, in order, one document piece per row, padding after the text.
    text = rows.segment_ids == 1
    assert np.array_equal(rows.tokens[text], stream)
    assert np.all(np.diff(rows.segment_ids, axis=1) <= 0)  # 1...1 0...0
    assert np.array_equal(rows.positions[text], np.nonzero(text)[1])
    # Sentence starts: exactly the first token of each sentence (and of each row's text).
    starts = np.concatenate(
        [np.r_[True, np.zeros(len(x) - 1, bool)] for d in sentence_ids for x in d]
    )
    got = rows.sentence_starts[text]
    long_cut = ~starts & got  # a sentence longer than a row continues at the next row's start
    assert np.all(got[starts]) and np.all(rows.sentence_starts[:, 0])
    assert np.all(long_cut == (~starts & np.isin(np.arange(len(got)), np.cumsum(text.sum(1))[:-1])))
    # Rows end at sentence boundaries unless the next sentence would not have fitted.
    lengths = text.sum(1)
    assert lengths.max() <= 64 and (lengths > 32).mean() > 0.5
    assert np.array_equal(rows.word_starts[text], wiki_tokenizer.word_starts(stream))
