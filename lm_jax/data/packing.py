"""Document-aware packing of tokenized documents into fixed-length rows.

Documents are wrapped as `[CLS] tokens [SEP]`, concatenated and cut into rows of `seq_len`
(RoBERTa's FULL-SENTENCES blocks, Liu et al. 2019). Unlike RoBERTa, rows carry seqio's packed
layout so nothing attends across documents: `segment_ids` number the documents of a row 1..n
(0 = padding) and `positions` restart at 0 for each of them. A document longer than a row
continues in the next row as a new segment. Only the final row is padded.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence

import numpy as np

from lm_jax.data.tokenizer import VocabInfo
from lm_jax.errors import DataError
from lm_jax.layout import positions_from_segments


@dataclasses.dataclass(frozen=True)
class PackedRows:
    """Packed rows; every array is [num_rows, seq_len]."""

    tokens: np.ndarray  # int32
    segment_ids: np.ndarray  # int32, 1..n per row, 0 = padding
    positions: np.ndarray  # int32, restarting at 0 per segment
    word_starts: np.ndarray  # bool, word-start flags (specials start their own word)
    sentence_starts: np.ndarray | None = None  # bool; document rows only (lm_jax.data.sentences)
    entity_ids: np.ndarray | None = None  # int32 span numbers, 0 outside (lm_jax.data.entities)
    language_ids: np.ndarray | None = (
        None  # int32; translation pairs only (lm_jax.data.translation)
    )

    @classmethod
    def from_segments(
        cls, tokens: np.ndarray, segment_ids: np.ndarray, word_starts: np.ndarray, **fields
    ) -> PackedRows:
        """Rows whose positions restart at 0 with each segment (`positions_from_segments`)."""
        positions = positions_from_segments(np.asarray(segment_ids))
        return cls(tokens, segment_ids, positions, word_starts, **fields)

    def __len__(self) -> int:
        return self.tokens.shape[0]

    def fingerprint(self) -> str:
        """SHA-256 of every field (names, shapes, dtypes, values): equal rows, equal prints."""
        digest = hashlib.sha256()
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if value is not None:
                value = np.ascontiguousarray(value)
                digest.update(f"{field.name}{value.shape}{value.dtype}".encode())
                digest.update(value.tobytes())
        return digest.hexdigest()

    def token_counts(self, vocab_size: int) -> np.ndarray:
        """How often each id occurs in the rows, padding excluded."""
        real = self.tokens[self.segment_ids != 0]
        return np.bincount(real, minlength=vocab_size).astype(np.int64)

    def row(self, i: int) -> dict[str, np.ndarray]:
        fields = (f.name for f in dataclasses.fields(self))
        return {name: getattr(self, name)[i] for name in fields if getattr(self, name) is not None}


def pack_documents(
    documents: Sequence[np.ndarray],
    seq_len: int,
    vocab: VocabInfo,
    word_starts: Sequence[np.ndarray] | None = None,
    entity_ids: Sequence[np.ndarray] | None = None,
) -> PackedRows:
    """Pack token-id documents into rows of `seq_len` (see module docstring).

    Args:
      documents: one int array of token ids per document (no special tokens).
      seq_len: row length, at least 3 ([CLS], one token, [SEP]).
      vocab: the vocabulary (for the [CLS], [SEP] and pad ids).
      word_starts: optional word-start flags aligned with `documents`; default: every token
        starts a word.
      entity_ids: optional entity / phrase span numbers aligned with `documents` (0 outside
        spans); [CLS], [SEP] and padding get 0. Rows then carry `entity_ids`.
    """
    if seq_len < 3:
        raise DataError(f"seq_len must be at least 3 to hold [CLS] x [SEP], got {seq_len}")
    kept = [i for i, d in enumerate(documents) if len(d)]
    if not kept:
        raise DataError("no tokens to pack: every document tokenized to nothing")

    def aligned(values: Sequence[np.ndarray], name: str, dtype) -> list[np.ndarray]:
        if len(values) != len(documents) or any(
            len(v) != len(d) for v, d in zip(values, documents, strict=False)
        ):
            raise DataError(f"{name} must align with documents token for token")
        return [np.asarray(values[i], dtype=dtype) for i in kept]

    if word_starts is not None:
        word_starts = aligned(word_starts, "word_starts", bool)
    if entity_ids is not None:
        entity_ids = aligned(entity_ids, "entity_ids", np.int32)
    documents = [np.asarray(documents[i], dtype=np.int32) for i in kept]
    stream = document_stream(documents, vocab, word_starts, entity_ids)
    return cut_rows(stream, seq_len, vocab.pad_id)


@dataclasses.dataclass(frozen=True)
class DocumentStream:
    """Documents laid end to end as `[CLS] tokens [SEP]`: per position its token, word-start
    flag, document number and (optionally) entity id."""

    tokens: np.ndarray  # int32
    word_starts: np.ndarray  # bool
    document: np.ndarray  # int64, the document's number in the stream
    entity_ids: np.ndarray | None = None  # int32

    def window(self, start: int, length: int) -> DocumentStream:
        cut = slice(start, start + length)
        entities = None if self.entity_ids is None else self.entity_ids[cut]
        return DocumentStream(self.tokens[cut], self.word_starts[cut], self.document[cut], entities)


def document_stream(
    documents: Sequence[np.ndarray],
    vocab: VocabInfo,
    word_starts: Sequence[np.ndarray] | None = None,
    entity_ids: Sequence[np.ndarray] | None = None,
) -> DocumentStream:
    """The stream of non-empty `documents` (every token starts a word when `word_starts` is
    None; [CLS], [SEP] start their own and carry entity id 0)."""
    if word_starts is None:
        word_starts = [np.ones(len(d), dtype=bool) for d in documents]
    cls, sep = np.array([vocab.cls_id], np.int32), np.array([vocab.sep_id], np.int32)
    tokens = np.concatenate([x for d in documents for x in (cls, d, sep)])
    one = np.ones(1, bool)
    starts = np.concatenate([x for w in word_starts for x in (one, w, one)])
    sizes = [len(d) + 2 for d in documents]
    document = np.repeat(np.arange(len(documents), dtype=np.int64), sizes)
    entities = None
    if entity_ids is not None:
        zero = np.zeros(1, np.int32)
        entities = np.concatenate([x for e in entity_ids for x in (zero, e, zero)])
    return DocumentStream(tokens, starts, document, entities)


def cut_rows(stream: DocumentStream, seq_len: int, pad_id: int) -> PackedRows:
    """Cut `stream` into rows of `seq_len` (the last padded): segments number the documents
    of each row from 1, positions restart with each segment."""
    num_rows = -(-len(stream.tokens) // seq_len)
    pad = num_rows * seq_len - len(stream.tokens)

    def rows(values: np.ndarray, fill) -> np.ndarray:
        padding = np.full(pad, fill, values.dtype)
        return np.concatenate([values, padding]).reshape(num_rows, seq_len)

    tokens, starts = rows(stream.tokens, pad_id), rows(stream.word_starts, False)
    doc = rows(stream.document, -1)
    new_segment = np.ones(doc.shape, dtype=bool)
    new_segment[:, 1:] = doc[:, 1:] != doc[:, :-1]
    segment_ids = np.cumsum(new_segment, axis=1).astype(np.int32)
    segment_ids[doc < 0] = 0
    entities = None if stream.entity_ids is None else rows(stream.entity_ids, 0)
    return PackedRows.from_segments(tokens, segment_ids, starts, entity_ids=entities)
