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
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lm_jax.data.files import utf8_lines
from lm_jax.data.packing import PackedRows
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


def parallel_tsv(path: str | os.PathLike) -> list[TranslationPair]:
    """Pairs from a TSV file with columns source, target, language (see module docstring)."""
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
    pairs = [
        TranslationPair(_clean(row["source"] or ""), _clean(row["target"] or ""), row["language"])
        for row in reader
    ]
    return [p for p in pairs if p.source and p.target]


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


def pair_rows(
    pairs: Sequence[TranslationPair],
    tokenizer: Tokenizer,
    seq_len: int,
    languages: Sequence[str],
) -> PackedRows:
    """One pair per row (see module docstring); each side is cut to fit half of a row."""
    vocab = tokenizer.vocab
    half = seq_len // 2 - 2  # tokens of one side between its [CLS] and [SEP]
    if half < 1:
        raise DataError(f"sentence-pair rows need seq_len >= 6, got {seq_len}")
    language_id = {language: i + 1 for i, language in enumerate(languages)}
    unknown = {p.language for p in pairs} - set(language_id)
    if unknown:
        raise DataError(f"pairs in languages {sorted(unknown)} outside config.data.languages")
    ids = tokenizer.encode_ids([text for p in pairs for text in (p.source, p.target)])
    tokens = np.full((len(pairs), seq_len), vocab.pad_id, np.int32)
    segment_ids = np.zeros((len(pairs), seq_len), np.int32)
    language_ids = np.zeros((len(pairs), seq_len), np.int32)
    word_starts = np.zeros((len(pairs), seq_len), bool)
    for i, pair in enumerate(pairs):
        at = 0
        for side, text_ids in enumerate(ids[2 * i : 2 * i + 2]):
            text_ids = text_ids[:half]
            wrapped = np.concatenate([[vocab.cls_id], text_ids, [vocab.sep_id]]).astype(np.int32)
            span = slice(at, at + len(wrapped))
            tokens[i, span] = wrapped
            segment_ids[i, span] = side + 1
            language_ids[i, span] = language_id[pair.language] if side else 0
            word_starts[i, span] = np.concatenate([[True], tokenizer.word_starts(text_ids), [True]])
            at += len(wrapped)
    return PackedRows.from_segments(tokens, segment_ids, word_starts, language_ids=language_ids)
