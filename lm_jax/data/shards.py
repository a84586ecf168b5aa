"""Tokenized corpora on disk: ArrayRecord shards of documents, a manifest, and packed rows
read from them by random access.

A prepared corpus (`lm_jax.data.prepare`) is a folder:
- `manifest.json`: the format version, the tokenizer's SHA-256 and settings, the preparation
  settings, and per split (`train`, `eval`) its shards with their documents, tokens, bytes
  and SHA-256. It is written last: a folder without it is an unfinished preparation.
- `tokenizer.model`: the tokenizer every shard was encoded with.
- `<split>-<k>.array_record`: one record per document (`encode_document`), in source order.
- `<split>-<k>.lengths.npy`: each document's token count (the packer's index).
- `<split>.counts.npy`: how often each token id occurs in the split (the [UNK] check and the
  unigram baseline of a run, without reading the shards).

Rows are packed per shard exactly as `pack_documents` packs a list of documents (`[CLS]
tokens [SEP]` per document, cut into rows, the shard's last row padded), so a corpus of one
shard gives the rows of the in-memory path. Row r is built from the few documents it overlaps
(found from the cumulative lengths), so a process reads only the documents of its own rows
(Levanter's and MaxText's tokenized caches are the same idea).
"""

from __future__ import annotations

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
from lm_jax.errors import DataError
from lm_jax.vocab import VocabInfo

FORMAT = "lm_jax.prepared/1"
PREPARED = "prepared"  # config.data.corpus of a prepared corpus (config.data.path: its folder)
MANIFEST = "manifest.json"
TOKENIZER = "tokenizer.model"
SPLITS = ("train", "eval")
OPEN_SHARDS = 64  # shards a reader keeps open (and indexed) at once
_HEADER = np.dtype("<u4")


def encode_document(ids: np.ndarray, word_starts: np.ndarray) -> bytes:
    """One document record: its token count (uint32), the ids (int32) and the word-start
    flags (bits), little-endian, so the same document always gives the same bytes."""
    ids = np.asarray(ids, dtype="<i4")
    header = np.array([len(ids)], _HEADER).tobytes()
    return header + ids.tobytes() + np.packbits(np.asarray(word_starts, bool)).tobytes()


def decode_document(record: bytes, where: str) -> tuple[np.ndarray, np.ndarray]:
    """(ids, word_starts) of a record; a record of the wrong size is a `DataError` naming
    `where` (the shard and index)."""
    if len(record) < 4:
        raise DataError(f"corrupt record {where}: {len(record)} bytes, no header")
    n = int(np.frombuffer(record[:4], _HEADER)[0])
    if len(record) != 4 + 4 * n + -(-n // 8):
        raise DataError(f"corrupt record {where}: {len(record)} bytes for {n} tokens")
    ids = np.frombuffer(record, "<i4", count=n, offset=4).astype(np.int32)
    bits = np.frombuffer(record, np.uint8, offset=4 + 4 * n)
    return ids, np.unpackbits(bits, count=n).astype(bool)


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
    directory: Path, name: str, records: list[bytes], lengths: list[int], counts: np.ndarray
) -> dict:
    """Write `<name>.array_record`, `<name>.lengths.npy` and `<name>.counts.npy` (the count of
    each token id; each file under a temporary name, renamed when complete) and return the
    shard's manifest entry."""
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
    return {
        "file": path.name,
        "documents": len(records),
        "tokens": int(index.sum()),
        "bytes": path.stat().st_size,
        "sha256": file_sha256(path),
    }


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
            lengths = path.with_name(path.name.replace(".array_record", ".lengths.npy"))
            for needed in (path, lengths, self.directory / f"{split}.counts.npy"):
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

    def __getstate__(self):  # readers are per process (grain's worker processes pickle us)
        state = dict(self.__dict__)
        state["_readers"], state["_offsets"] = collections.OrderedDict(), collections.OrderedDict()
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
            name = self.shards[shard]["file"].replace(".array_record", ".lengths.npy")
            lengths = np.load(self.manifest.directory / name).astype(np.int64)
            return np.concatenate([[0], np.cumsum(lengths + 2)])

        return _cached(self._offsets, shard, load)

    def document(self, shard: int, index: int) -> tuple[np.ndarray, np.ndarray]:
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
    streamed rows); documents that tokenized to nothing are dropped, as `pack_documents` does."""

    def __init__(self, ids: Sequence[np.ndarray], word_starts: Sequence[np.ndarray]):
        kept = [i for i, d in enumerate(ids) if len(d)]
        if not kept:
            raise DataError("no tokens to pack: every document tokenized to nothing")
        self.ids = [np.asarray(ids[i], np.int32) for i in kept]
        self.word_starts = [np.asarray(word_starts[i], bool) for i in kept]
        lengths = np.array([len(d) for d in self.ids], np.int64)
        self.sizes = [(len(self.ids), int(lengths.sum()))]
        self._offsets = np.concatenate([[0], np.cumsum(lengths + 2)])

    def __str__(self) -> str:
        return f"{len(self.ids)} documents in memory"

    def fingerprint(self) -> str:
        digest = hashlib.sha256()
        for ids, starts in zip(self.ids, self.word_starts):
            digest.update(encode_document(ids, starts))
        return digest.hexdigest()

    def token_counts(self, vocab_size: int) -> np.ndarray:
        return np.bincount(np.concatenate(self.ids), minlength=vocab_size).astype(np.int64)

    def offsets(self, shard: int) -> np.ndarray:
        return self._offsets

    def document(self, shard: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        return self.ids[index], self.word_starts[index]


class PreparedRows(grain.MapDataset):
    """Packed rows by random access over `documents` (`ShardedDocuments` of a prepared
    corpus, or `DocumentsInMemory`): `rows[r]` is the feature dict of row r (tokens,
    segment_ids, positions, word_starts), the same as `pack_documents` gives for each shard's
    documents. Indices past the end wrap (epochs)."""

    def __init__(self, documents, seq_len: int, vocab: VocabInfo):
        super().__init__()
        self.documents, self.seq_len, self.vocab = documents, seq_len, vocab
        rows = [-(-(tokens + 2 * count) // seq_len) for count, tokens in documents.sizes]
        self.first_row = np.concatenate([[0], np.cumsum(rows)])

    def __len__(self) -> int:
        return int(self.first_row[-1])

    def __str__(self) -> str:
        return f"PreparedRows({self.documents}, {self.seq_len})"

    def fingerprint(self) -> str:
        """SHA-256 of what determines the rows: the documents and the row length."""
        return hashlib.sha256(f"{self.documents.fingerprint()}{self.seq_len}".encode()).hexdigest()

    def token_counts(self, vocab_size: int) -> np.ndarray:
        """How often each id occurs in the rows, padding excluded (as `PackedRows`)."""
        counts = self.documents.token_counts(vocab_size)
        documents = sum(count for count, _ in self.documents.sizes)
        counts[self.vocab.cls_id] += documents
        counts[self.vocab.sep_id] += documents
        return counts

    def __getitem__(self, index):
        if isinstance(index, slice):
            return self.slice(index)
        row = index % len(self)
        shard = int(np.searchsorted(self.first_row, row, side="right")) - 1
        return self._row(shard, row - int(self.first_row[shard]))

    def _row(self, shard: int, local: int) -> dict[str, np.ndarray]:
        """Row `local` of the shard: pack the documents it overlaps and cut its window."""
        starts = self.documents.offsets(shard)  # document i spans starts[i] .. starts[i+1]
        begin, end = local * self.seq_len, (local + 1) * self.seq_len
        first = int(np.searchsorted(starts, begin, side="right")) - 1
        last = min(int(np.searchsorted(starts, end, side="left")), len(starts) - 1)
        documents = [self.documents.document(shard, i) for i in range(first, last)]
        stream = document_stream([d[0] for d in documents], self.vocab, [d[1] for d in documents])
        window = stream.window(begin - int(starts[first]), self.seq_len)
        return cut_rows(window, self.seq_len, self.vocab.pad_id).row(0)
