"""Parallel (translation) corpora: the input of XLM's translation LM (Conneau & Lample 2019).

A `TranslationPair` is a source sentence and its human translation into a language. Sources:

- `django_translations`: the message catalogues of the Django web framework (installed with
  `pip install django`; compiled gettext `.mo` files, read here without importing Django):
  about 930 English interface strings per language with their translations by Django's
  translation teams, in about 100 languages (`config.data.languages` picks them, by Django's
  locale names: fr, de, es, ru, zh_Hans, ...). Short texts of one domain, but real and offline.
- `parallel_tsv`: your own pairs, a tab-separated file with a header row and the columns
  `source`, `target` and `language` (the target's language code).

`pair_rows` lays one pair per row, `[CLS] source [SEP]` as segment 1 then `[CLS] target [SEP]`
as segment 2 (XLM wraps each sentence in `</s>` the same way), positions restarting at the
translation, and `language_ids` per token: 0 for the source language, i for the i-th target
language of `languages` (fed to the model's language embeddings through `token_type_ids`).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import os
import re
import struct
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from lm_jax.data.files import utf8_lines
from lm_jax.data.shards import Document, DocumentsInMemory, PairRows
from lm_jax.data.tokenizer import Tokenizer
from lm_jax.errors import DataError

_SPACES = re.compile(r"\s+")
_MO_MAGIC = 0x950412DE


@dataclasses.dataclass(frozen=True)
class TranslationPair:
    """A source sentence, its translation, and the translation's language code."""

    source: str
    target: str
    language: str


def read_mo(path: str | os.PathLike) -> dict[str, str]:
    """The translations of a compiled gettext catalogue (`.mo`, UTF-8): msgid -> msgstr.

    Context prefixes (`context\\x04`) are dropped; for plural entries the singular is paired
    with the first form; the header and untranslated entries are skipped.
    """
    data = Path(path).read_bytes()
    if len(data) < 20:
        raise DataError(f"{path} is not a gettext .mo catalogue (too short)")
    for order in "<>":
        if struct.unpack(f"{order}I", data[:4])[0] == _MO_MAGIC:
            break
    else:
        raise DataError(f"{path} is not a gettext .mo catalogue (bad magic number)")
    _, count, originals, translations = struct.unpack(f"{order}4I", data[4:20])

    def string(table: int, i: int) -> str:
        length, offset = struct.unpack(f"{order}2I", data[table + 8 * i : table + 8 * i + 8])
        if offset + length > len(data):
            raise DataError(f"{path} is truncated: entry {i} points past the end")
        return data[offset : offset + length].decode("utf-8")

    catalogue = {}
    for i in range(count):
        msgid = string(originals, i).split("\x04")[-1].split("\x00")[0]
        msgstr = string(translations, i).split("\x00")[0]
        if msgid and msgstr:
            catalogue[msgid] = msgstr
    return catalogue


def _clean(text: str) -> str:
    return _SPACES.sub(" ", text).strip()


def django_catalogues() -> Path:
    """The installed Django package folder (found, not imported)."""
    spec = importlib.util.find_spec("django")
    if spec is None or not spec.submodule_search_locations:
        raise DataError(
            "the django_translations corpus reads Django's catalogues: pip install django"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def django_translations(languages: Sequence[str]) -> list[TranslationPair]:
    """English interface strings of Django (core and contrib apps) with their translations into
    `languages`, deduplicated per language, in a fixed order."""
    root = django_catalogues()
    pairs = []
    for language in languages:
        files = sorted(root.glob(f"**/locale/{language}/LC_MESSAGES/*.mo"))
        if not files:
            available = sorted({p.name for p in (root / "conf" / "locale").iterdir() if p.is_dir()})
            raise DataError(
                f"Django has no translations into {language!r} (config.data.languages); "
                f"its locales: {', '.join(x for x in available if not x.startswith('_'))}"
            )
        seen = set()
        for path in files:
            for msgid, msgstr in read_mo(path).items():
                source, target = _clean(msgid), _clean(msgstr)
                if source and target and (source, target) not in seen:
                    seen.add((source, target))
                    pairs.append(TranslationPair(source, target, language))
    return pairs


def parallel_tsv(path: str | os.PathLike) -> Iterator[TranslationPair]:
    """The pairs of a TSV file with columns source, target, language (see module docstring),
    one at a time; pairs with an empty side are skipped."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"parallel corpus not found: {path}")
    csv.field_size_limit(sys.maxsize)
    lines = (line for _, line in utf8_lines(path))
    reader = csv.DictReader(lines, delimiter="\t", quoting=csv.QUOTE_NONE)
    missing = {"source", "target", "language"} - set(reader.fieldnames or ())
    if missing:
        raise DataError(
            f"{path} needs the columns source, target, language; missing {sorted(missing)}"
        )
    for row in reader:
        pair = TranslationPair(
            _clean(row["source"] or ""), _clean(row["target"] or ""), row["language"]
        )
        if pair.source and pair.target:
            yield pair


PARALLEL_CORPORA = ("django_translations", "parallel_tsv")


def parse_languages(text: str) -> list[str]:
    """Language codes from `config.data.languages` ("fr,de" -> ["fr", "de"])."""
    return [x.strip() for x in text.split(",") if x.strip()]


def load_translation_pairs(
    corpus: str, path: str = "", languages: Sequence[str] = ()
) -> list[TranslationPair]:
    """The pairs of parallel corpus `corpus` in `languages` (all must occur); fails on an
    unknown corpus, an unknown language or an empty result."""
    if corpus not in PARALLEL_CORPORA:
        raise DataError(
            f"the tlm objective needs a parallel corpus (config.data.corpus): one of "
            f"{list(PARALLEL_CORPORA)}, not {corpus!r}"
        )
    if not languages:
        raise DataError("config.data.languages is empty: name the translation languages")
    if corpus == "django_translations":
        pairs = django_translations(languages)
    else:
        if not path:
            raise DataError("corpus 'parallel_tsv' needs config.data.path")
        pairs = [p for p in parallel_tsv(path) if p.language in languages]
        found = {p.language for p in pairs}
        if set(languages) - found:
            raise DataError(
                f"{path} has no pairs in {sorted(set(languages) - found)} (config.data.languages)"
            )
    if not pairs:
        raise DataError(f"parallel corpus {path or corpus!r} holds no sentence pair")
    return pairs


def encode_pairs(
    tokenizer: Tokenizer, pairs: Sequence[TranslationPair], languages: Sequence[str]
) -> list[Document | None]:
    """Each pair as a record of two sentences, source then translation (word and sentence
    starts), with its translation's language id (1 for `languages[0]`); None for a pair with a
    side that tokenizes to nothing. A pair outside `languages` is a `DataError`."""
    language_id = {language: i + 1 for i, language in enumerate(languages)}
    unknown = {p.language for p in pairs} - set(language_id)
    if unknown:
        raise DataError(f"pairs in languages {sorted(unknown)} outside config.data.languages")
    ids = tokenizer.encode_ids([text for p in pairs for text in (p.source, p.target)])
    documents: list[Document | None] = []
    for pair, source, target in zip(pairs, ids[::2], ids[1::2], strict=True):
        if not len(source) or not len(target):
            documents.append(None)
            continue
        sentence_starts = np.zeros(len(source) + len(target), bool)
        sentence_starts[[0, len(source)]] = True
        word_starts = np.concatenate([tokenizer.word_starts(source), tokenizer.word_starts(target)])
        pair_ids = np.concatenate([source, target]).astype(np.int32)
        language = language_id[pair.language]
        documents.append(Document(pair_ids, word_starts, sentence_starts, language=language))
    return documents


def pair_rows(
    pairs: Sequence[TranslationPair],
    tokenizer: Tokenizer,
    seq_len: int,
    languages: Sequence[str],
) -> PairRows:
    """One pair per row (see module docstring and `PairRows`), streamed from the pairs in
    memory as a prepared corpus's are from its shards; pairs with an empty side are dropped."""
    documents = [d for d in encode_pairs(tokenizer, pairs, languages) if d is not None]
    return PairRows(DocumentsInMemory(documents), seq_len, tokenizer.vocab)
