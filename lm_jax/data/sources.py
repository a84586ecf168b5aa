"""Text sources: each returns a list of documents (strings). Nothing here downloads.

- `wikipedia_sample`: the default corpus, 106 English Wikipedia articles (3 M characters) that
  ship inside gensim's wheel as test data, cleaned of MediaWiki markup with gensim's filter.
- `python_docs`: CPython's own documentation topics (`pydoc_data.topics`, about 0.7 MB).
- `text`: a UTF-8 text file, or a folder of `*.txt` files; documents separated by blank lines.
- `jsonl`: one JSON object per line, the document in `field`.
- `tsv`: a tab-separated file with a header row, the document in column `field`.
- `tfds`: a TensorFlow Datasets dataset already prepared under `data_dir` (ArrayRecord format,
  read with `tfds.data_source`, no TensorFlow); `download=False`, so a missing dataset is an error.
- `peoples_daily`, `annotated_jsonl`: the texts of the entity-annotated corpora of
  `lm_jax.data.entities` (the `entity` objective reads their annotations too).
"""

from __future__ import annotations

import bz2
import csv
import gzip
import json
import logging
import os
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

from lm_jax.data.entities import load_annotated_documents
from lm_jax.data.files import BLANK_LINES, existing, text_files, utf8_lines
from lm_jax.errors import DataError

log = logging.getLogger(__name__)
_WIKI_HEADING = re.compile(r"^\s*=+\s*(.*?)\s*=+\s*$", re.MULTILINE)
_WIKI_QUOTES = re.compile(r"'{2,}")
_SPACES = re.compile(r"[ \t]+")


def wikipedia_sample() -> list[str]:
    """The English Wikipedia sample bundled in gensim's wheel, one document per article."""
    try:
        from gensim.corpora.wikicorpus import extract_pages, filter_wiki
        from gensim.test.utils import datapath
    except ImportError as e:  # pragma: no cover - gensim is a runtime dependency
        raise DataError("the default corpus needs gensim (pip install gensim)") from e
    path = datapath("enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2")
    if not os.path.isfile(path):
        raise DataError(f"gensim's Wikipedia sample is missing from its install: {path}")
    docs = []
    with bz2.BZ2File(path) as f:
        for _title, markup, _page_id in extract_pages(f, filter_namespaces=("0",)):
            if markup.lstrip().upper().startswith("#REDIRECT"):
                continue
            text = filter_wiki(markup)
            text = _WIKI_HEADING.sub(r"\1", text)
            text = _WIKI_QUOTES.sub("", text)
            paragraphs = [_SPACES.sub(" ", p).strip() for p in BLANK_LINES.split(text)]
            text = "\n".join(p for p in paragraphs if p)
            if text:
                docs.append(text)
    return docs


def python_docs() -> list[str]:
    """CPython's documentation topics, one document per topic."""
    from pydoc_data.topics import topics

    return [t.strip() for _, t in sorted(topics.items()) if t.strip()]


def jsonl_documents(path: Path, field: str = "text") -> Iterator[str]:
    """Documents from field `field` of each line of a JSON-lines file (gzip-compressed when
    it ends in `.gz`), one at a time; the field must be a string (null, numbers, lists and
    objects are errors, not documents)."""
    lines = utf8_lines(path, gzip.open if path.suffix == ".gz" else open)
    for n, line in lines:
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{n}: invalid JSON ({e.msg})") from e
        if not isinstance(record, dict) or field not in record:
            raise DataError(f"{path}:{n}: no field {field!r} (config.data.field)")
        value = record[field]
        if not isinstance(value, str):
            kind = "null" if value is None else type(value).__name__
            raise DataError(f"{path}:{n}: field {field!r} must be a string, got {kind}")
        if value.strip():
            yield value.strip()


def jsonl_file(path: str | os.PathLike, field: str = "text") -> list[str]:
    """Every document of a JSON-lines file (`jsonl_documents`)."""
    return list(jsonl_documents(existing(path, "jsonl", file=True), field))


def parquet_documents(path: Path, field: str = "text") -> Iterator[str]:
    """Documents from column `field` of a Parquet file (as Hugging Face `datasets` exports
    them), read in record batches so memory stays bounded."""
    import pyarrow.parquet as pq

    try:
        table = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises ArrowInvalid / OSError for a bad file
        raise DataError(f"{path} is not a readable Parquet file: {e}") from e
    if field not in table.schema_arrow.names:
        raise DataError(
            f"{path} has no column {field!r} (--field); columns: {table.schema_arrow.names}"
        )
    for batch in table.iter_batches(batch_size=1024, columns=[field]):
        for value in batch.column(0).to_pylist():
            if isinstance(value, str) and value.strip():
                yield value.strip()


def tsv_file(path: str | os.PathLike, field: str = "text") -> list[str]:
    """Documents from column `field` of a tab-separated file with a header row; rows too short
    to have the column are skipped with a warning that counts them."""
    p = existing(path, "tsv", file=True)
    csv.field_size_limit(sys.maxsize)
    reader = csv.DictReader(
        (line for _, line in utf8_lines(p)), delimiter="\t", quoting=csv.QUOTE_NONE
    )
    if reader.fieldnames is None:
        return []
    if field not in reader.fieldnames:
        raise DataError(
            f"{p} has no column {field!r} (config.data.field); columns: {reader.fieldnames}"
        )
    docs, short = [], 0
    for row in reader:
        if row[field] is None:
            short += 1
        elif row[field].strip():
            docs.append(row[field].strip())
    if short:
        log.warning("%s: %d row(s) have too few columns for %r; skipped", p, short, field)
    return docs


def tfds_documents(
    name: str, split: str = "train", data_dir: str | os.PathLike | None = None, field: str = "text"
) -> Iterator[str]:
    """Documents from a prepared TFDS dataset, read one at a time through ArrayRecord without
    TensorFlow."""
    import tensorflow_datasets as tfds

    from lm_jax.data import tfds_text  # noqa: F401  (registers the local text builder)

    if not name:
        raise DataError("the tfds corpus needs a dataset name (config.data.tfds_name)")
    try:
        source = tfds.data_source(name, split=split, data_dir=data_dir, download=False)
    except Exception as e:  # TFDS raises several types for "not prepared" / "unknown name"
        raise DataError(
            f"TFDS dataset {name!r} (split {split!r}) is not available under "
            f"{data_dir or 'the default TFDS data_dir'}: {e}"
        ) from e
    for i in range(len(source)):
        record = source[i]
        if field not in record:
            raise DataError(
                f"TFDS dataset {name!r} has no feature {field!r} (config.data.field); "
                f"features: {sorted(record)}"
            )
        value = record[field]
        text = value.decode("utf-8") if isinstance(value, bytes) else str(value)
        if text.strip():
            yield text.strip()


def tfds_dataset(
    name: str, split: str = "train", data_dir: str | os.PathLike | None = None, field: str = "text"
) -> list[str]:
    """Every document of a prepared TFDS dataset (`tfds_documents`)."""
    return list(tfds_documents(name, split, data_dir, field))


def _annotated_texts(corpus: str) -> Callable[..., list[str]]:
    def texts(path: str | os.PathLike = "", field: str = "text") -> list[str]:
        return [doc.text for doc in load_annotated_documents(corpus, str(path))]

    return texts


CORPORA: dict[str, Callable[..., list[str]]] = {
    "wikipedia_sample": wikipedia_sample,
    "python_docs": python_docs,
    "text": text_files,
    "jsonl": jsonl_file,
    "tsv": tsv_file,
    "tfds": tfds_dataset,
    "peoples_daily": _annotated_texts("peoples_daily"),
    "annotated_jsonl": _annotated_texts("annotated_jsonl"),
}


def load_documents(
    corpus: str,
    path: str = "",
    field: str = "text",
    tfds_name: str = "",
    tfds_split: str = "train",
    data_dir: str = "",
) -> list[str]:
    """Load the documents of corpus kind `corpus` (one of `CORPORA`); fails on an empty corpus."""
    if corpus not in CORPORA:
        raise DataError(
            f"unknown corpus {corpus!r} (config.data.corpus); choose from {sorted(CORPORA)}"
        )
    if corpus in ("wikipedia_sample", "python_docs"):
        docs = CORPORA[corpus]()
    elif corpus == "text":
        docs = text_files(path)
    elif corpus == "tfds":
        docs = tfds_dataset(tfds_name, tfds_split, data_dir or None, field)
    else:
        docs = CORPORA[corpus](path, field)
    if not docs:
        where = path or tfds_name or corpus
        raise DataError(f"corpus {where!r} is empty: it holds no non-blank document")
    return docs
