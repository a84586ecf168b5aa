"""Text sources: the offline default corpus, local files, TFDS (offline builder), errors."""

import json

import pytest

from lm_jax.data.sources import load_documents, python_docs
from lm_jax.errors import DataError


def test_default_corpus_is_clean_wikipedia(wiki_docs):
    assert len(wiki_docs) == 106
    assert sum(map(len, wiki_docs)) > 2_500_000
    text = "\n".join(wiki_docs)
    for markup in ("[[", "]]", "{{", "'''", "<ref", "#REDIRECT"):
        assert markup not in text, markup
    assert wiki_docs[0].startswith("Anarchism is a political philosophy")


def test_python_docs():
    docs = python_docs()
    assert len(docs) > 50 and all(d.strip() for d in docs)


def test_text_jsonl_tsv(tmp_path):
    (tmp_path / "a.txt").write_text("first doc\nline two\n\n\nsecond doc\n", encoding="utf-8")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text("third doc", encoding="utf-8")
    assert load_documents("text", path=str(tmp_path / "a.txt")) == [
        "first doc\nline two",
        "second doc",
    ]
    assert load_documents("text", path=str(tmp_path)) == [
        "first doc\nline two",
        "second doc",
        "third doc",
    ]

    jsonl = tmp_path / "c.jsonl"
    jsonl.write_text("\n".join(json.dumps({"body": t}) for t in ["x y", "", "z"]), encoding="utf-8")
    assert load_documents("jsonl", path=str(jsonl), field="body") == ["x y", "z"]
    with pytest.raises(DataError, match="no field 'text'"):
        load_documents("jsonl", path=str(jsonl))
    jsonl.write_text('{"text": "ok"}\nnot json\n', encoding="utf-8")
    with pytest.raises(DataError, match=r"c.jsonl:2: invalid JSON"):
        load_documents("jsonl", path=str(jsonl))

    tsv = tmp_path / "d.tsv"
    tsv.write_text('label\tsentence\n1\tgood movie\n0\tbad "quoted" film\n', encoding="utf-8")
    assert load_documents("tsv", path=str(tsv), field="sentence") == [
        "good movie",
        'bad "quoted" film',
    ]
    with pytest.raises(DataError, match="no column 'text'"):
        load_documents("tsv", path=str(tsv))


def test_sst2_tsv_from_shared_data(data_dir):
    docs = load_documents("tsv", path=str(data_dir / "sst2" / "train.tsv"), field="sentence")
    assert len(docs) == 67_349


def test_errors_name_the_problem(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        load_documents("text", path=str(tmp_path / "nope.txt"))
    (tmp_path / "empty.txt").write_text("\n\n   \n")
    with pytest.raises(DataError, match="is empty"):
        load_documents("text", path=str(tmp_path / "empty.txt"))
    with pytest.raises(DataError, match="unknown corpus 'web'"):
        load_documents("web")
    (tmp_path / "latin1.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        load_documents("text", path=str(tmp_path / "latin1.txt"))


def test_tfds_local_builder_round_trip(tmp_path):
    from lm_jax.data.tfds_text import NAME, prepare_local_text_dataset

    corpus = tmp_path / "corpus"
    corpus.mkdir()
    (corpus / "a.txt").write_text("doc one\n\ndoc two has more words\n\n", encoding="utf-8")
    (corpus / "b.txt").write_text("doc three", encoding="utf-8")
    prepared = prepare_local_text_dataset(corpus, tmp_path / "tfds")
    assert any(p.name.startswith(f"{NAME}-train.array_record") for p in prepared.iterdir())
    docs = load_documents("tfds", tfds_name=NAME, data_dir=str(tmp_path / "tfds"))
    assert sorted(docs) == ["doc one", "doc three", "doc two has more words"]
    with pytest.raises(DataError, match="is not available"):
        load_documents("tfds", tfds_name="imdb_reviews", data_dir=str(tmp_path / "tfds"))
    with pytest.raises(DataError, match="no feature 'content'"):
        load_documents("tfds", tfds_name=NAME, data_dir=str(tmp_path / "tfds"), field="content")


def test_malformed_files_are_errors_naming_the_line(tmp_path):
    bad = b"\xff\xfe not utf-8\n"
    (tmp_path / "bad.jsonl").write_bytes(b'{"text": "fine"}\n' + bad)
    with pytest.raises(DataError, match=r"bad.jsonl:2 is not UTF-8"):
        load_documents("jsonl", path=str(tmp_path / "bad.jsonl"))
    (tmp_path / "bad.tsv").write_bytes(b"text\nfine\n" + bad)
    with pytest.raises(DataError, match=r"bad.tsv:3 is not UTF-8"):
        load_documents("tsv", path=str(tmp_path / "bad.tsv"))
    (tmp_path / "bad.txt").write_bytes(bad)
    with pytest.raises(DataError, match=r"bad.txt:1 is not UTF-8"):
        load_documents("text", path=str(tmp_path / "bad.txt"))
    for value, kind in (("null", "null"), ("[1, 2, 3]", "list"), ("7", "int"), ("{}", "dict")):
        (tmp_path / "typed.jsonl").write_text(f'{{"text": "ok"}}\n{{"text": {value}}}\n')
        with pytest.raises(
            DataError, match=f"typed.jsonl:2: field 'text' must be a string, got {kind}"
        ):
            load_documents("jsonl", path=str(tmp_path / "typed.jsonl"))
    (tmp_path / "folder.jsonl").mkdir()
    with pytest.raises(DataError, match="must be a file; .*folder.jsonl is a directory"):
        load_documents("jsonl", path=str(tmp_path / "folder.jsonl"))


def test_text_folders_and_short_tsv_rows(tmp_path, caplog):
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "notes.md").write_text("not a text file")
    with pytest.raises(DataError, match="holds no .txt files"):
        load_documents("text", path=str(tmp_path / "corpus"))
    (tmp_path / "corpus" / "chapter.txt").mkdir()  # a directory named *.txt is not a document
    (tmp_path / "corpus" / "chapter.txt" / "one.txt").write_text("inside")
    assert load_documents("text", path=str(tmp_path / "corpus")) == ["inside"]
    (tmp_path / "short.tsv").write_text("id\ttext\n1\tfirst\n2\n3\tthird\n4\n")
    with caplog.at_level("WARNING"):
        assert load_documents("tsv", path=str(tmp_path / "short.tsv")) == ["first", "third"]
    assert "2 row(s) have too few columns for 'text'" in caplog.text
