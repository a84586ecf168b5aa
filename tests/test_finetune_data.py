"""lm_jax.finetune.data: readers of labelled files, label sets, encoding and truncation."""

import json

import numpy as np
import pytest

from lm_jax.errors import DataError
from lm_jax.finetune.data import (
    encode,
    label_ids,
    label_set,
    padded_batches,
    read_examples,
    row_layout,
    special_count,
    split_off,
    truncate_pair,
)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def test_tsv_is_read_without_quoting_and_columns_by_name_or_position(tmp_path):
    f = write(tmp_path / "a.tsv", 'label\tsentence\n1\tit \'s "great" , really\n0\tdull\n')
    by_name = read_examples(f, "sentence", "label")
    by_position = read_examples(f, "1", "0")
    assert by_name.texts == by_position.texts == ['it \'s "great" , really', "dull"]
    assert by_name.labels == ["1", "0"] and by_name.pairs is None
    headerless = write(tmp_path / "b.tsv", "x\ty\tone\ttwo\t4.5\n")
    pair = read_examples(headerless, "2", "4", pair_column="3", header=False)
    assert (pair.texts, pair.pairs, pair.labels) == (["one"], ["two"], ["4.5"])


def test_csv_quotes_and_jsonl_keys(tmp_path):
    f = write(tmp_path / "c.csv", 'label,review\n1,"good, ""really"" good"\n0,bad\n')
    assert read_examples(f, "review", "label").texts == ['good, "really" good', "bad"]
    lines = [{"text": "a", "label": 1}, {"text": "b", "label": 0}]
    g = write(tmp_path / "d.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n")
    examples = read_examples(g, "text", "label")
    assert examples.texts == ["a", "b"] and examples.labels == [1, 0]


def test_bad_files_are_named_errors(tmp_path):
    f = write(tmp_path / "a.tsv", "label\tsentence\n1\tgood\n")
    with pytest.raises(
        DataError, match="no text column 'text'.*columns: \\['label', 'sentence'\\]"
    ):
        read_examples(f, "text", "label")
    with pytest.raises(DataError, match="not found"):
        read_examples(tmp_path / "missing.tsv", "sentence", "label")
    with pytest.raises(DataError, match="holds no examples"):
        read_examples(write(tmp_path / "e.tsv", "label\tsentence\n"), "sentence", "label")
    short = write(tmp_path / "s.tsv", "label\tsentence\n1\n")
    with pytest.raises(DataError, match="row 2: no text column"):
        read_examples(short, "sentence", "label")
    with pytest.raises(DataError, match="line 2: not a JSON object"):
        read_examples(write(tmp_path / "j.jsonl", '{"a": 1}\n{oops\n'), "a", "a")
    with pytest.raises(DataError, match="set config.data.format"):
        read_examples(write(tmp_path / "x.txt", "a\n"), "a", "b")


def test_label_sets_and_ids(tmp_path):
    f = write(tmp_path / "a.tsv", "label\tsentence\nneg\ta\npos\tb\nneg\tc\n")
    train = read_examples(f, "sentence", "label")
    assert label_set(train, ()) == ["neg", "pos"]
    np.testing.assert_array_equal(label_ids(train, "classification", ["neg", "pos"]), [0, 1, 0])
    with pytest.raises(DataError, match=r"labels \['pos'\] are outside the label set \['neg'\]"):
        label_ids(train, "classification", ["neg"])
    mixed = read_examples(
        write(tmp_path / "m.jsonl", '{"t": "a", "l": 1}\n{"t": "b", "l": "x"}\n'), "t", "l"
    )
    with pytest.raises(DataError, match="mixed types"):
        label_set(mixed, ())
    with pytest.raises(DataError, match="not a number"):
        label_ids(train, "regression", [])
    one = read_examples(write(tmp_path / "o.tsv", "label\tsentence\n1\ta\n"), "sentence", "label")
    with pytest.raises(DataError, match="one label only"):
        label_set(one, ())


def test_truncation_is_longest_first_like_hugging_face(tmp_path):
    """The longer text loses its last token until the pair fits, as Hugging Face's
    "longest_first"; on a tie BERT's `_truncate_seq_pair` cuts the second text, which
    Hugging Face's Rust truncation does not always do (an odd budget splits the other way)."""
    transformers = pytest.importorskip("transformers")
    tokens = [f"w{i}" for i in range(40)]
    write(
        tmp_path / "vocab.txt", "\n".join(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *tokens])
    )
    hf = transformers.BertTokenizer.from_pretrained(tmp_path)
    for n_a, n_b, budget in [(10, 3, 8), (3, 10, 8), (7, 7, 10), (12, 9, 11), (5, 5, 20)]:
        a, b = tokens[:n_a], tokens[20 : 20 + n_b]
        want = hf(" ".join(a), " ".join(b), truncation="longest_first", max_length=budget + 3)
        got_a, got_b = truncate_pair(a, b, budget)
        ours = hf.convert_tokens_to_ids(["[CLS]", *got_a, "[SEP]", *got_b, "[SEP]"])
        assert ours == want.input_ids, (n_a, n_b, budget)
    assert [len(x) for x in truncate_pair(tokens[:7], tokens[:7], 9)] == [5, 4]  # BERT's tie


class _Words:
    """A tokenizer stand-in: one id per whitespace word."""

    from lm_jax.vocab import VocabInfo

    vocab = VocabInfo(size=100, pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)

    def encode_ids(self, texts):
        return [np.array([10 + len(w) for w in t.split()], np.int32) for t in texts]


def test_encode_rows_types_segments_and_truncation_count(tmp_path, caplog):
    f = write(tmp_path / "p.tsv", "a\tb\tl\none two\tthree\t1\n" + "w " * 20 + "\tx\t0\n")
    examples = read_examples(f, "a", "l", pair_column="b")
    split = encode(examples, np.array([1, 0], np.int32), _Words(), max_length=8)
    row = split.row(0)
    np.testing.assert_array_equal(row["input_ids"], [2, 13, 13, 3, 15, 3, 0, 0])
    np.testing.assert_array_equal(row["token_type_ids"], [0, 0, 0, 0, 1, 1, 0, 0])
    np.testing.assert_array_equal(row["segment_ids"], [1, 1, 1, 1, 1, 1, 0, 0])
    assert split.truncated == 1 and "1 of 2 examples" in caplog.text
    batches = padded_batches(split, 3)
    assert len(batches) == 1 and batches[0]["weights"].tolist() == [1, 1, 0]


def test_split_off_is_seeded_and_disjoint(tmp_path):
    lines = "".join(f"{i % 2}\ttext {i}\n" for i in range(50))
    examples = read_examples(write(tmp_path / "a.tsv", lines), "1", "0", header=False)
    train, dev = split_off(examples, 0.2, seed=0)
    again = split_off(examples, 0.2, seed=0)[1]
    assert len(dev) == 10 and dev.texts == again.texts
    assert not set(train.texts) & set(dev.texts) and len(train) + len(dev) == 50


def test_row_layouts_of_each_family(vocab):
    """BERT's [CLS] A [SEP] B [SEP], RoBERTa's <s> A </s></s> B </s> and XLNet's
    A <sep> B <sep> <cls> (Hugging Face's build_inputs_with_special_tokens and token types)."""
    cls, sep = vocab.cls_id, vocab.sep_id
    a, b = [11, 12], [21]
    assert row_layout(a, b, vocab, "bert") == ([cls, 11, 12, sep, 21, sep], [0, 0, 0, 0, 1, 1])
    assert row_layout(a, b, vocab, "roberta") == ([cls, 11, 12, sep, sep, 21, sep], [0] * 7)
    assert row_layout(a, b, vocab, "xlnet") == ([11, 12, sep, 21, sep, cls], [0, 0, 0, 1, 1, 2])
    assert row_layout(a, None, vocab, "xlnet") == ([11, 12, sep, cls], [0, 0, 0, 2])
    assert [special_count(layout, True) for layout in ("bert", "roberta", "xlnet")] == [3, 4, 3]
