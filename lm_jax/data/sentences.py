"""Document rows with sentence boundaries: the input of the sentence-pair objectives (BERT's
NSP, ALBERT's SOP, StructBERT), which build `[CLS] A [SEP] B [SEP]` pairs inside each row.

BERT's pretraining data is one sentence per line with documents separated by blank lines
(Devlin et al. 2019, google-research/bert `create_pretraining_data.py`); here documents are
split into sentences by a rule (end punctuation followed by space, or a line break), each
sentence is tokenized on its own, and a document becomes rows of up to `seq_len` text tokens
cut at sentence boundaries (a sentence longer than a row is cut where the row ends). Rows carry
no [CLS]/[SEP]: segment id 1 on text, 0 on padding, and `sentence_starts` on each sentence's
first token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from lm_jax.data.packing import PackedRows
from lm_jax.data.tokenizer import Tokenizer
from lm_jax.errors import DataError

# A sentence ends after . ! ? (or one closing quote or bracket after them) before whitespace,
# after a CJK full stop, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?=\s)|(?<=[.!?][\"')\]])(?=\s)|(?<=[。！？])")


def split_sentences(text: str) -> list[str]:
    """The non-blank sentences of `text` (see module docstring)."""
    return [s.strip() for line in text.splitlines() for s in _SENTENCE_END.split(line) if s.strip()]


def document_rows(docs: Sequence[str], tokenizer: Tokenizer, seq_len: int) -> PackedRows:
    """Rows of at most `seq_len` text tokens, one document (piece) per row, cut at sentence
    boundaries where a sentence fits (see module docstring)."""
    if seq_len < 5:
        raise DataError(
            f"sentence-pair rows need seq_len >= 5 ([CLS] A [SEP] B [SEP]), got {seq_len}"
        )
    sentences = [split_sentences(d) for d in docs]
    ids = iter(tokenizer.encode_ids([s for doc in sentences for s in doc]))
    rows: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # tokens, word starts, starts
    for doc in sentences:
        pieces: list[np.ndarray] = []
        used = 0
        for _ in doc:
            sentence = next(ids)
            if not len(sentence):
                continue
            if used and used + len(sentence) > seq_len:
                rows.append(_row(pieces, tokenizer))
                pieces, used = [], 0
            while len(sentence) > seq_len:  # longer than a row: cut where the row ends
                rows.append(_row([sentence[:seq_len]], tokenizer))
                sentence = sentence[seq_len:]
            pieces.append(sentence)
            used += len(sentence)
        if pieces:
            rows.append(_row(pieces, tokenizer))
    if not rows:
        raise DataError("no tokens to pack: every document tokenized to nothing")
    tokens = np.full((len(rows), seq_len), tokenizer.vocab.pad_id, np.int32)
    word_starts = np.zeros((len(rows), seq_len), bool)
    sentence_starts = np.zeros((len(rows), seq_len), bool)
    for i, (t, w, s) in enumerate(rows):
        tokens[i, : len(t)], word_starts[i, : len(t)], sentence_starts[i, : len(t)] = t, w, s
    segment_ids = (np.arange(seq_len) < np.array([len(r[0]) for r in rows])[:, None]).astype(
        np.int32
    )
    return PackedRows.from_segments(
        tokens, segment_ids, word_starts, sentence_starts=sentence_starts
    )


def _row(pieces: list[np.ndarray], tokenizer: Tokenizer):
    tokens = np.concatenate(pieces)
    starts = np.zeros(len(tokens), bool)
    starts[np.cumsum([0] + [len(p) for p in pieces[:-1]])] = True
    return tokens, tokenizer.word_starts(tokens), starts
