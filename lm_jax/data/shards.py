"""Tokenized corpora on disk: ArrayRecord shards of documents, a manifest, and packed rows
read from them by random access.

A prepared corpus (`lm_jax.data.prepare`) is a folder:
- `manifest.json`: the format version, the tokenizer's SHA-256 and settings, the preparation
  settings, and per split (`train`, `eval`) its shards with their documents, tokens, bytes
  and SHA-256. It is written last: a folder without it is an unfinished preparation.
- `tokenizer.model`: the tokenizer every shard was encoded with.
- `<split>-<k>.array_record`: one record per document (`encode_document`), in source order;
  a corpus prepared from annotated sources (`entity_ids` in the manifest) keeps each token's
  entity id in it, one prepared from translation pairs (`languages` in the manifest) holds a
  pair per record: source and translation as two sentences, and the translation's language.
- `<split>-<k>.lengths.npy`: each document's token count (the packer's index).
- `<split>-<k>.rows.npy`, when prepared with `sentence_rows` = L: the shard's document rows
  of L tokens for the sentence-pair objectives (`lm_jax.data.sentences`), as (document,
  start, end); their records hold each sentence's start too.
- `<split>.counts.npy`: how often each token id occurs in the split (the [UNK] check and the
  unigram baseline of a run, without reading the shards).

Rows are packed per shard exactly as `pack_documents` packs a list of documents (`[CLS]
tokens [SEP]` per document, cut into rows, the shard's last row padded), so a corpus of one
shard gives the rows of the in-memory path. Row r is built from the few documents it overlaps
(found from the cumulative lengths), so a process reads only the documents of its own rows
(Levanter's and MaxText's tokenized caches are the same idea). Document rows (`SentenceRows`)
are read the same way, one document span per row, and translation pairs (`PairRows`) one pair
per row.
"""

from __future__ import annotations

import abc
import collections
import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

import grain
import numpy as np

from lm_jax.data.packing import cut_rows, document_stream
from lm_jax.data.sentences import row_spans
from lm_jax.errors import DataError
from lm_jax.layout import positions_from_segments
from lm_jax.vocab import VocabInfo

FORMAT = "lm_jax.prepared/2"  # /2: records say which optional fields they hold
PREPARED = "prepared"  # config.data.corpus of a prepared corpus (config.data.path: its folder)
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.model"
SPLITS = ("train", "eval")
OPEN_SHARDS = 64  # shards a reader keeps open (and indexed) at once
_HEADER = np.dtype("<u4")


@dataclasses.dataclass(frozen=True)
class Document:
    """One tokenized document: ids with their word starts and, where the corpus has them, its
    sentence starts (document rows), entity ids (ERNIE's spans, numbered from 1 within the
    document, 0 outside) and language (a translation pair: the id of its translation's
    language, 1 for the first of the corpus's languages)."""

    ids: np.ndarray  # int32
    word_starts: np.ndarray  # bool
    sentence_starts: np.ndarray | None = None  # bool
    entity_ids: np.ndarray | None = None  # int32
    language: int | None = None


_SENTENCES, _ENTITIES, _LANGUAGE = 1, 2, 4  # the optional fields a record holds (header bits)


def encode_document(document: Document) -> bytes:
    """One document record, little-endian so the same document always gives the same bytes:
    a header (token count n, the optional fields held: uint32 each), the ids (int32 [n]), the
    word-start bits, then the sentence-start bits, the entity ids (int32 [n]) and the language
    (uint32) if held."""
    fields = (
        (_SENTENCES if document.sentence_starts is not None else 0)
        | (_ENTITIES if document.entity_ids is not None else 0)
        | (_LANGUAGE if document.language is not None else 0)
    )
    parts = [
        np.array([len(document.ids), fields], _HEADER).tobytes(),
        np.asarray(document.ids, "<i4").tobytes(),
        np.packbits(np.asarray(document.word_starts, bool)).tobytes(),
    ]
    if document.sentence_starts is not None:
        parts.append(np.packbits(np.asarray(document.sentence_starts, bool)).tobytes())
    if document.entity_ids is not None:
        parts.append(np.asarray(document.entity_ids, "<i4").tobytes())
    if document.language is not None:
        parts.append(np.array([document.language], _HEADER).tobytes())
    return b"".join(parts)


def decode_document(record: bytes, where: str) -> Document:
    """The document of a record; a record of the wrong size is a `DataError` naming `where`
    (the shard and index)."""
    if len(record) < 8:
        raise DataError(f"corrupt record {where}: {len(record)} bytes, no header")
    n, fields = (int(x) for x in np.frombuffer(record[:8], _HEADER))
    bits = -(-n // 8)
    sentences, entities = bool(fields & _SENTENCES), bool(fields & _ENTITIES)
    language = bool(fields & _LANGUAGE)
    size = 8 + 4 * n + bits * (1 + sentences) + 4 * n * entities + 4 * language
    if fields & ~(_SENTENCES | _ENTITIES | _LANGUAGE) or len(record) != size:
        raise DataError(f"corrupt record {where}: {len(record)} bytes for {n} tokens")
    ids = np.frombuffer(record, "<i4", count=n, offset=8).astype(np.int32)
    at = 8 + 4 * n

    def flags() -> np.ndarray:
        nonlocal at
        at += bits
        return np.unpackbits(np.frombuffer(record, np.uint8, bits, at - bits), count=n).astype(bool)

    word_starts = flags()
    sentence_starts = flags() if sentences else None
    entity_ids = np.frombuffer(record, "<i4", n, at).astype(np.int32) if entities else None
    language_id = int(np.frombuffer(record, _HEADER, 1, size - 4)[0]) if language else None
    return Document(ids, word_starts, sentence_starts, entity_ids, language_id)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(functools.partial(f.read, 1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_atomically(path: Path, data: bytes) -> None:
    """`path` holds `data` entirely or not at all (a temporary file per process, renamed)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_shard(
    directory: Path,
    name: str,
    records: list[bytes],
    lengths: list[int],
    counts: np.ndarray,
    rows: np.ndarray | None = None,
) -> dict:
    """Write `<name>.array_record`, `<name>.lengths.npy`, `<name>.counts.npy` (the count of
    each token id) and, when given, `<name>.rows.npy` (the document rows), each file under a
    temporary name renamed when complete, and return the shard's manifest entry."""
    from array_record.python.array_record_module import ArrayRecordWriter

    path = directory / f"{name}.array_record"
    tmp = path.with_name(path.name + ".tmp")
    writer = ArrayRecordWriter(str(tmp), "group_size:1")
    for record in records:
        writer.write(record)
    writer.close()
    os.replace(tmp, path)
    index = np.asarray(lengths, dtype="<i4")
    write_atomically(directory / f"{name}.lengths.npy", npy_bytes(index))
    write_atomically(directory / f"{name}.counts.npy", npy_bytes(counts.astype("<i8")))
    entry = {
        "file": path.name,
        "documents": len(records),
        "tokens": int(index.sum()),
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }
    if rows is not None:
        write_atomically(directory / f"{name}.rows.npy", npy_bytes(rows.astype("<i4")))
        entry["rows"] = len(rows)
    return entry


def npy_bytes(array: np.ndarray) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()


@dataclasses.dataclass(frozen=True)
class Manifest:
    """A prepared corpus's manifest (see the module docstring)."""

    directory: Path
    content: dict

    @classmethod
    def load(cls, directory: str | os.PathLike) -> Manifest:
        directory = Path(directory)
        path = directory / MANIFEST
        if not path.is_file():
            raise DataError(
                f"{directory} is not a prepared corpus: no {MANIFEST} (prepare it with "
                "`python -m lm_jax.data.prepare`; an interrupted preparation resumes)"
            )
        try:
            content = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{path} is not valid JSON ({e.msg})") from e
        if content.get("format") != FORMAT:
            raise DataError(f"{path}: format {content.get('format')!r}, expected {FORMAT!r}")
        return cls(directory, content)

    def shards(self, split: str) -> list[dict]:
        return self.content["splits"][split]["shards"]

    @property
    def entity_ids(self) -> bool:
        """Whether its records hold entity ids (prepared from annotated sources)."""
        return self.content.get("entity_ids", False)

    @property
    def languages(self) -> list[str]:
        """The translation languages of its pairs, in the order of their ids ([]: not pairs)."""
        return self.content.get("languages", [])

    @property
    def sentence_rows(self) -> int:
        """The length of the document rows prepared with it (0: none)."""
        return self.content["settings"].get("sentence_rows", 0)

    def check_tokenizer(self, tokenizer_path: str | os.PathLike) -> None:
        """A `DataError` when `tokenizer_path` is not the tokenizer the shards were encoded with."""
        actual = file_sha256(Path(tokenizer_path))
        if actual != self.content["tokenizer"]["sha256"]:
            raise DataError(
                f"{self.directory} was prepared with another tokenizer (sha256 "
                f"{self.content['tokenizer']['sha256'][:12]}..., {tokenizer_path} has "
                f"{actual[:12]}...): use its {TOKENIZER} or prepare the corpus again"
            )

    def check_files(self, split: str, full: bool = False) -> None:
        """Every shard of `split` is present with its recorded size (and, when `full`, its
        SHA-256): a truncated or replaced shard is a `DataError` naming the file."""
        for shard in self.shards(split):
            path = self.directory / shard["file"]
            needs = [path, _beside(path, ".lengths.npy"), self.directory / f"{split}.counts.npy"]
            if self.sentence_rows:
                needs.append(_beside(path, ".rows.npy"))
            for needed in needs:
                if not needed.is_file():
                    raise DataError(f"prepared corpus shard missing: {needed}")
            size = path.stat().st_size
            if size != shard["bytes"]:
                raise DataError(
                    f"prepared corpus shard {path} is {size} bytes, the manifest says "
                    f"{shard['bytes']}: truncated or replaced; prepare the corpus again"
                )
            if full and file_sha256(path) != shard["sha256"]:
                raise DataError(
                    f"prepared corpus shard {path} does not match the SHA-256 of its manifest: "
                    "corrupt; prepare the corpus again"
                )


def _beside(shard: Path, suffix: str) -> Path:
    """A file written with the shard (`.lengths.npy`, `.rows.npy`)."""
    return shard.with_name(shard.name.replace(".array_record", suffix))


def _cached(cache: collections.OrderedDict, key: int, make):
    """`cache[key]`, made when missing; the least recently used beyond OPEN_SHARDS goes."""
    if key in cache:
        cache.move_to_end(key)
        return cache[key]
    cache[key] = value = make()
    if len(cache) > OPEN_SHARDS:
        cache.popitem(last=False)
    return value


class ShardedDocuments:
    """One split of a prepared corpus as documents by (shard, index), read from its ArrayRecord
    shards (at most OPEN_SHARDS open and indexed at a time, per process)."""

    def __init__(self, manifest: Manifest, split: str):
        manifest.check_files(split)
        self.manifest, self.split, self.shards = manifest, split, manifest.shards(split)
        if not self.shards:
            raise DataError(f"{manifest.directory}: the {split} split holds no documents")
        self.sizes = [(s["documents"], s["tokens"]) for s in self.shards]
        self._readers: collections.OrderedDict[int, object] = collections.OrderedDict()
        self._offsets: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self._rows: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()

    def __getstate__(self):  # readers are per process (grain's worker processes pickle us)
        state = dict(self.__dict__)
        for cache in ("_readers", "_offsets", "_rows"):
            state[cache] = collections.OrderedDict()
        return state

    def __str__(self) -> str:
        return f"{self.manifest.directory} ({self.split})"

    def fingerprint(self) -> str:
        shas = [s["sha256"] for s in self.shards]
        return hashlib.sha256(json.dumps([self.split, shas]).encode()).hexdigest()

    def token_counts(self, vocab_size: int) -> np.ndarray:
        counts = np.zeros(vocab_size, np.int64)
        stored = np.load(self.manifest.directory / f"{self.split}.counts.npy")
        counts[: len(stored)] += stored[:vocab_size]
        return counts

    def offsets(self, shard: int) -> np.ndarray:
        """Where each document of the shard starts in its packed stream (then the end)."""

        def load():
            path = _beside(self.manifest.directory / self.shards[shard]["file"], ".lengths.npy")
            lengths = np.load(path).astype(np.int64)
            return np.concatenate([[0], np.cumsum(lengths + 2)])

        return _cached(self._offsets, shard, load)

    def sentence_row_counts(self, seq_len: int) -> list[int]:
        """Document rows per shard; a `DataError` unless prepared for rows of `seq_len`."""
        prepared = self.manifest.sentence_rows
        if prepared != seq_len:
            done = f"for rows of {prepared} tokens" if prepared else "without sentence rows"
            raise DataError(
                f"{self.manifest.directory} was prepared {done}; the sentence-pair objectives "
                f"at config.data.seq_len={seq_len} need it prepared with --sentence-rows "
                f"{seq_len}"
            )
        return [s["rows"] for s in self.shards]

    def sentence_row_spans(self, shard: int, seq_len: int) -> np.ndarray:
        """The shard's document rows of `seq_len` tokens: int [rows, 3] (document, start, end)."""
        path = _beside(self.manifest.directory / self.shards[shard]["file"], ".rows.npy")
        return _cached(self._rows, shard, lambda: np.load(path))

    def document(self, shard: int, index: int) -> Document:
        from array_record.python.array_record_module import ArrayRecordReader

        path = self.manifest.directory / self.shards[shard]["file"]
        reader = _cached(
            self._readers, shard, lambda: ArrayRecordReader(str(path), "readahead_buffer_size:0")
        )
        where = f"{index} of {path}"
        try:
            record = reader.read([index])[0]
        except Exception as e:  # the reader raises RuntimeError / OSError on a bad chunk
            raise DataError(f"cannot read record {where}: {e}") from e
        return decode_document(record, where)


class DocumentsInMemory:
    """Tokenized documents held in memory, as one shard (a small corpus's path to the same
    streamed rows); documents that tokenized to nothing are dropped, as `pack_documents` does.
    Documents with sentence starts also give document rows (`SentenceRows`)."""

    keep_rows = True  # the rows of documents in memory fit in memory too: built once each

    def __init__(self, documents: Sequence[Document]):
        self.documents = [d for d in documents if len(d.ids)]
        if not self.documents:
            raise DataError("no tokens to pack: every document tokenized to nothing")
        lengths = np.array([len(d.ids) for d in self.documents], np.int64)
        self.sizes = [(len(self.documents), int(lengths.sum()))]
        self._offsets = np.concatenate([[0], np.cumsum(lengths + 2)])
        self._rows: dict[int, np.ndarray] = {}

    def __str__(self) -> str:
        return f"{len(self.documents)} documents in memory"

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for document in self.documents:
            digest.update(encode_document(document))
        return digest.hexdigest()

    def token_counts(self, vocab_size: int) -> np.ndarray:
        ids = np.concatenate([d.ids for d in self.documents])
        return np.bincount(ids, minlength=vocab_size).astype(np.int64)

    def offsets(self, shard: int) -> np.ndarray:
        return self._offsets

    def sentence_row_counts(self, seq_len: int) -> list[int]:
        return [len(self.sentence_row_spans(0, seq_len))]

    def sentence_row_spans(self, shard: int, seq_len: int) -> np.ndarray:
        if seq_len not in self._rows:
            spans = [row_spans(d.sentence_starts, seq_len) for d in self.documents]
            self._rows[seq_len] = row_index(spans)
        return self._rows[seq_len]

    def document(self, shard: int, index: int) -> Document:
        return self.documents[index]


def row_index(spans: Sequence[np.ndarray]) -> np.ndarray:
    """The document rows of a shard from each document's `row_spans`, as int64 [rows, 3]:
    (document, start, end) (what `<split>-<k>.rows.npy` holds)."""
    parts = [np.column_stack([np.full(len(s), d), s]) for d, s in enumerate(spans)]
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros((0, 3), np.int64)


class ShardedRows(grain.MapDataset, abc.ABC):
    """Rows by random access over `documents`, shard by shard: `rows[r]` is the feature dict
    `_row(shard, local)` of the shard holding row r (`first_row`: each shard's first row).
    Indices past the end wrap (epochs). Rows of documents in memory (`keep_rows`) are built
    once and kept; a prepared corpus's are built at each read, so memory stays bounded."""

    def __init__(self, documents, seq_len: int, vocab: VocabInfo, rows_per_shard: list[int]):
        super().__init__()
        self.documents, self.seq_len, self.vocab = documents, seq_len, vocab
        self.first_row = np.concatenate([[0], np.cumsum(rows_per_shard)]).astype(np.int64)
        self._kept: dict[int, dict[str, np.ndarray]] | None = (
            {} if getattr(documents, "keep_rows", False) else None
        )
        if not len(self):
            raise DataError("no tokens to pack: every document tokenized to nothing")

    def __len__(self) -> int:
        return int(self.first_row[-1])

    layout = ""  # what a row holds, for its name and fingerprint

    def __str__(self) -> str:
        return f"{type(self).__name__}({self.documents}, {self.seq_len}, {self.layout})"

    def fingerprint(self) -> str:
        """SHA-256 of what determines the rows: the layout, the documents and the length."""
        key = f"{self.layout}{self.documents.fingerprint()}{self.seq_len}"
        return hashlib.sha256(key.encode()).hexdigest()

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        row = index % len(self)
        if self._kept is not None and row in self._kept:
            return self._kept[row]
        shard = int(np.searchsorted(self.first_row, row, side="right")) - 1
        features = self._row(shard, row - int(self.first_row[shard]))
        if self._kept is not None:
            for array in features.values():
                array.flags.writeable = False  # shared by every read of the row
            self._kept[row] = features
        return features

    @abc.abstractmethod
    def _row(self, shard: int, local: int) -> dict[str, np.ndarray]:
        """Row `local` of the shard."""


class PreparedRows(ShardedRows):
    """Packed rows over `documents` (`ShardedDocuments` of a prepared corpus, or
    `DocumentsInMemory`): features tokens, segment_ids, positions, word_starts and, with
    `entities`, the documents' entity_ids, as `pack_documents` gives them for each shard's
    documents."""

    def __init__(self, documents, seq_len: int, vocab: VocabInfo, entities: bool = False):
        rows = [-(-(tokens + 2 * count) // seq_len) for count, tokens in documents.sizes]
        super().__init__(documents, seq_len, vocab, rows)
        self.entities = entities
        self.layout = "packed documents with entities" if entities else "packed documents"

    def token_counts(self, vocab_size: int) -> np.ndarray:
        """How often each id occurs in the rows, padding excluded (as `PackedRows`)."""
        counts = self.documents.token_counts(vocab_size)
        documents = sum(count for count, _ in self.documents.sizes)
        counts[self.vocab.cls_id] += documents
        counts[self.vocab.sep_id] += documents
        return counts

    def _row(self, shard: int, local: int) -> dict[str, np.ndarray]:
        """Row `local` of the shard: pack the documents it overlaps and cut its window."""
        starts = self.documents.offsets(shard)  # document i spans starts[i] .. starts[i+1]
        begin, end = local * self.seq_len, (local + 1) * self.seq_len
        first = int(np.searchsorted(starts, begin, side="right")) - 1
        last = min(int(np.searchsorted(starts, end, side="left")), len(starts) - 1)
        documents = [self.documents.document(shard, i) for i in range(first, last)]
        entities = [d.entity_ids for d in documents] if self.entities else None
        stream = document_stream(
            [d.ids for d in documents], self.vocab, [d.word_starts for d in documents], entities
        )
        window = stream.window(begin - int(starts[first]), self.seq_len)
        return cut_rows(window, self.seq_len, self.vocab.pad_id).row(0)


class SentenceRows(ShardedRows):
    """Document rows over `documents` with sentence starts (a prepared corpus with
    `sentence_rows`, or `DocumentsInMemory`): features tokens, segment_ids, positions,
    word_starts, sentence_starts (see `lm_jax.data.sentences`)."""

    layout = "document rows"

    def __init__(self, documents, seq_len: int, vocab: VocabInfo):
        super().__init__(documents, seq_len, vocab, documents.sentence_row_counts(seq_len))

    def token_counts(self, vocab_size: int) -> np.ndarray:
        """How often each id occurs in the rows, padding excluded (no special tokens)."""
        return self.documents.token_counts(vocab_size)

    def _row(self, shard: int, local: int) -> dict[str, np.ndarray]:
        """Row `local` of the shard: one span of one document."""
        document, start, end = self.documents.sentence_row_spans(shard, self.seq_len)[local]
        doc = self.documents.document(shard, int(document))
        n, text = int(end - start), slice(int(start), int(end))
        features = {
            "tokens": np.full(self.seq_len, self.vocab.pad_id, np.int32),
            "segment_ids": (np.arange(self.seq_len) < n).astype(np.int32),
            "word_starts": np.zeros(self.seq_len, bool),
            "sentence_starts": np.zeros(self.seq_len, bool),
        }
        features["tokens"][:n], features["word_starts"][:n] = doc.ids[text], doc.word_starts[text]
        features["sentence_starts"][:n] = doc.sentence_starts[text]
        features["sentence_starts"][0] = True  # a row begins a sentence or a cut one's rest
        features["positions"] = positions_from_segments(features["segment_ids"][None])[0]
        return features


class PairRows(ShardedRows):
    """Translation pairs over `documents` (records of `lm_jax.data.translation.encode_pairs`),
    one per row as XLM's TLM reads them (Conneau & Lample 2019): `[CLS] source [SEP]` as
    segment 1 then `[CLS] translation [SEP]` as segment 2, each side cut to half a row,
    positions restarting at the translation; features tokens, segment_ids, positions,
    word_starts and language_ids (0 on the source, the pair's language on the translation)."""

    layout = "translation pairs"

    def __init__(self, documents, seq_len: int, vocab: VocabInfo):
        if seq_len // 2 - 2 < 1:
            raise DataError(f"translation-pair rows need seq_len >= 6, got {seq_len}")
        super().__init__(documents, seq_len, vocab, [count for count, _ in documents.sizes])

    def token_counts(self, vocab_size: int) -> np.ndarray:
        """How often each id occurs in the pairs, with [CLS] and [SEP] twice per pair (the
        tokens a side loses to the cut at half a row are counted too)."""
        counts = self.documents.token_counts(vocab_size)
        pairs = sum(count for count, _ in self.documents.sizes)
        counts[self.vocab.cls_id] += 2 * pairs
        counts[self.vocab.sep_id] += 2 * pairs
        return counts

    def _row(self, shard: int, local: int) -> dict[str, np.ndarray]:
        """Row `local` of the shard: its pair, each side wrapped and cut to half a row."""
        pair = self.documents.document(shard, local)
        target = int(np.flatnonzero(pair.sentence_starts)[1])
        half, at = self.seq_len // 2 - 2, 0
        features = {
            "tokens": np.full(self.seq_len, self.vocab.pad_id, np.int32),
            "segment_ids": np.zeros(self.seq_len, np.int32),
            "word_starts": np.zeros(self.seq_len, bool),
            "language_ids": np.zeros(self.seq_len, np.int32),
        }
        for side, text in enumerate((slice(0, target), slice(target, len(pair.ids)))):
            ids, starts = pair.ids[text][:half], pair.word_starts[text][:half]
            span = slice(at, at + len(ids) + 2)
            features["tokens"][span] = [self.vocab.cls_id, *ids, self.vocab.sep_id]
            features["word_starts"][span] = [True, *starts, True]
            features["segment_ids"][span] = side + 1
            features["language_ids"][span] = pair.language if side else 0
            at = span.stop
        features["positions"] = positions_from_segments(features["segment_ids"][None])[0]
        return features
