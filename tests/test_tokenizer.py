"""Tokenizers: training, loading, round trips, word starts (English and Chinese), errors."""

import csv

import numpy as np
import pytest

from lm_jax.data.tokenizer import (
    SentencePieceTokenizer,
    WordPieceTokenizer,
    chinese_word_ids,
    load_tokenizer,
    split_long_lines,
    train_sentencepiece,
)
from lm_jax.errors import DataError


def words_from_word_starts(tokenizer, ids, starts):
    """Regroup ids into words at the word-start flags and decode each word."""
    bounds = [*np.flatnonzero(starts), len(ids)]
    words = [tokenizer.decode(ids[a:b]).strip() for a, b in zip(bounds[:-1], bounds[1:])]
    return [w for w in words if w]


@pytest.mark.parametrize("model_type", ["unigram", "bpe"])
def test_sentencepiece_round_trip_and_word_starts(model_type, wiki_docs, tmp_path):
    tok = train_sentencepiece(
        wiki_docs[:30], tmp_path / "m.model", vocab_size=1500, model_type=model_type, extra_ids=5
    )
    held_out = wiki_docs[50:60]
    for doc in held_out:
        enc = tok.encode(doc)
        assert tok.decode(enc.ids) == tok.normalize(doc)
        assert words_from_word_starts(tok, enc.ids, enc.word_starts) == tok.normalize(doc).split()
        np.testing.assert_array_equal(tok.word_starts(enc.ids), enc.word_starts)
    # The batched path gives the same ids.
    for doc, ids in zip(held_out, tok.encode_ids(held_out)):
        np.testing.assert_array_equal(ids, tok.encode(doc).ids)


def test_special_tokens_and_sentinels(wiki_tokenizer):
    v = wiki_tokenizer.vocab
    assert (v.pad_id, v.unk_id, v.cls_id, v.sep_id, v.mask_id) == (0, 1, 2, 3, 4)
    assert [wiki_tokenizer.id_to_piece(i) for i in (2, 3, 4)] == ["[CLS]", "[SEP]", "[MASK]"]
    assert v.sentinel_ids[0] == v.size - 1 and v.sentinel_ids == tuple(
        range(v.size - 1, v.size - 11, -1)
    )
    assert wiki_tokenizer.id_to_piece(v.size - 1) == "<extra_id_0>"
    ids = wiki_tokenizer.encode("hello world").ids
    assert (
        wiki_tokenizer.decode([v.cls_id, *ids, v.sentinel_ids[2], v.sep_id])
        == "hello world<extra_id_2>"
    )
    # Control symbols in raw text are not special tokens.
    assert v.mask_id not in wiki_tokenizer.encode("a [MASK] b").ids
    regular = v.regular_ids()
    assert not set(regular) & set(v.special_ids) and len(regular) == v.size - len(v.special_ids)


def test_offsets_are_character_offsets(wiki_tokenizer):
    text = "Café naïve 中文 text"
    enc = wiki_tokenizer.encode(text)
    for i, (s, e) in zip(enc.ids, enc.offsets):
        piece = wiki_tokenizer.id_to_piece(int(i)).replace("▁", "")
        assert 0 <= s <= e <= len(text)
        if not piece.startswith("<0x"):  # byte pieces cover part of a character
            assert text[s:e].strip() == piece


def test_load_tokenizer_dispatch_and_errors(wiki_tokenizer, tmp_path):
    model_path = tmp_path / "t.model"
    model_path.write_bytes(wiki_tokenizer.model_proto)
    loaded = load_tokenizer(model_path, extra_ids=10)
    assert isinstance(loaded, SentencePieceTokenizer) and loaded.vocab == wiki_tokenizer.vocab
    with pytest.raises(DataError, match="not found"):
        load_tokenizer(tmp_path / "missing.model")
    (tmp_path / "bad.model").write_bytes(b"\x00\x01garbage")
    with pytest.raises(DataError, match="not a valid SentencePiece model"):
        load_tokenizer(tmp_path / "bad.model")
    with pytest.raises(DataError, match="empty corpus"):
        train_sentencepiece(["", "  \n "], tmp_path / "e.model", vocab_size=400)
    with pytest.raises(DataError, match="vocab_size 100 is too small"):
        train_sentencepiece(["some text"], tmp_path / "s.model", vocab_size=100)


def test_wordpiece_vocab(tmp_path):
    pieces = [
        "[PAD]",
        "[UNK]",
        "[CLS]",
        "[SEP]",
        "[MASK]",
        "the",
        "un",
        "##aff",
        "##able",
        "runn",
        "##ing",
        "!",
        "中",
        "文",
    ]
    vocab_file = tmp_path / "vocab.txt"
    vocab_file.write_text("\n".join(pieces) + "\n", encoding="utf-8")
    tok = load_tokenizer(vocab_file)
    assert isinstance(tok, WordPieceTokenizer)
    enc = tok.encode("The unaffable running! 中文")
    assert [pieces[i] for i in enc.ids] == [
        "the",
        "un",
        "##aff",
        "##able",
        "runn",
        "##ing",
        "!",
        "中",
        "文",
    ]
    assert enc.word_starts.tolist() == [True, True, False, False, True, False, True, True, True]
    assert tok.decode(enc.ids) == "the unaffable running! 中 文"
    assert tok.decode(enc.ids) == tok.normalize("The unaffable running! 中文")
    assert enc.offsets[1].tolist() == [4, 6]
    (tmp_path / "bad.txt").write_text("[PAD]\nhello\n")
    with pytest.raises(DataError, match="lacks special tokens"):
        load_tokenizer(tmp_path / "bad.txt")


@pytest.fixture(scope="module")
def chinese_reviews(data_dir):
    path = data_dir / "zh" / "ChnSentiCorp_htl_all.csv"
    if not path.is_file():
        pytest.skip(f"{path} not found")
    with path.open(encoding="utf-8") as f:
        return [row["review"] for row in csv.DictReader(f) if row["review"].strip()]


def test_chinese_character_tokenizer_with_jieba_word_ids(chinese_reviews, tmp_path):
    import jieba

    tok = train_sentencepiece(
        chinese_reviews[:2000],
        tmp_path / "zh.model",
        vocab_size=3000,
        model_type="char",
        character_coverage=0.9995,
        extra_ids=0,
    )
    for text in chinese_reviews[2000:2020]:
        enc = tok.encode(text)
        assert tok.decode(enc.ids) == tok.normalize(text)
        word_ids, starts = chinese_word_ids(text, enc)
        assert len(word_ids) == len(enc.ids)
        # Rebuild words from the tokens that share a word id; they must be jieba's words
        # (whitespace and characters the tokenizer maps to [UNK] aside).
        rebuilt = {}
        for (s, e), w in zip(enc.offsets, word_ids):
            rebuilt.setdefault(int(w), []).append(text[s:e])
        jieba_words = [w for w in jieba.lcut(text) if w.strip()]
        ours = ["".join(parts).strip() for _, parts in sorted(rebuilt.items())]
        assert [w for w in ours if w] == jieba_words
        assert starts[0] and np.array_equal(starts[1:], word_ids[1:] != word_ids[:-1])
    # A character model gives one token per Han character.
    enc = tok.encode("酒店服务很好")
    assert all(e - s == 1 for s, e in enc.offsets if s != e)


def test_chinese_word_ids_small_example(wiki_tokenizer):
    import jieba

    text = "我们喜欢自然语言处理"
    enc = wiki_tokenizer.encode(text)
    word_ids, starts = chinese_word_ids(text, enc)
    expected = []
    for w, (_, s, e) in enumerate(jieba.tokenize(text)):
        expected.extend([w] * (e - s))
    # Every token takes the word of its first character.
    assert [expected[min(s, len(text) - 1)] for s, _ in enc.offsets] == word_ids.tolist()


def test_wwm_on_chinese_text_with_the_default_tokenizer_predicts_15_percent(
    chinese_reviews, tmp_path
):
    """The default (unigram SentencePiece) tokenizer marks words only at "▁", which Chinese
    never shows; the pipeline takes jieba's words for Han text, so whole-word masking predicts
    about 15% of tokens (a word that would overflow the budget is skipped: a little under)."""
    import jax

    from lm_jax import objectives
    from lm_jax.data.packing import pack_documents
    from lm_jax.data.tokenizer import encode_with_word_starts

    tok = train_sentencepiece(chinese_reviews[:1500], tmp_path / "zh.model", vocab_size=3000)
    ids, starts = encode_with_word_starts(tok, chinese_reviews[1500:2500])
    rows = pack_documents(ids, 128, tok.vocab, word_starts=starts)
    real = rows.segment_ids != 0
    words_per_token = (rows.word_starts & real).sum() / real.sum()
    assert 0.4 < words_per_token < 0.9, words_per_token  # jieba words: 1-2.5 tokens each
    batch = objectives.get("wwm")(
        jax.random.key(0),
        rows.tokens,
        vocab=tok.vocab,
        segment_ids=rows.segment_ids,
        word_starts=rows.word_starts,
    )
    fraction = float((np.asarray(batch.masked_weights) > 0).sum() / real.sum())
    assert 0.13 < fraction <= 0.15, fraction


def test_vocab_of_only_special_tokens_is_refused(tmp_path):
    (tmp_path / "vocab.txt").write_text("[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\n")
    with pytest.raises(DataError, match="holds only special tokens"):
        load_tokenizer(tmp_path / "vocab.txt")


def test_a_corpus_of_only_over_long_lines_trains(tmp_path):
    """SentencePiece skips lines over 4192 bytes (and fails with `!sentences_.empty()` when no
    line is shorter); they are split at spaces first."""
    rng = np.random.default_rng(0)
    words = [f"word{i}" for i in range(300)]
    lines = [" ".join(rng.choice(words, 2000)) for _ in range(10)]  # ~15 kB each
    assert min(len(line.encode()) for line in lines) > 4192
    tok = train_sentencepiece(lines, tmp_path / "long.model", vocab_size=400, extra_ids=0)
    assert tok.decode(tok.encode(lines[0][:200]).ids).split()[:3] == lines[0].split()[:3]
    pieces = split_long_lines(["汉" * 3000, "a " * 3000], 4192)
    assert all(len(p.encode()) <= 4192 for p in pieces) and "".join(pieces[:3]) == "汉" * 3000
