"""Document rows with sentence boundaries: the input of the sentence-pair objectives (BERT's
NSP, ALBERT's SOP, StructBERT), which build `[CLS] A [SEP] B [SEP]` pairs inside each row.

BERT's pretraining data is one sentence per line with documents separated by blank lines
(Devlin et al. 2019, google-research/bert `create_pretraining_data.py`); here documents are
split into sentences by a rule (end punctuation followed by space, or a line break), each
sentence is tokenized on its own, and a document becomes rows of up to `seq_len` text tokens
cut at sentence boundaries (a sentence longer than a row is cut where the row ends:
`row_spans`). Rows carry no [CLS]/[SEP]: segment id 1 on text, 0 on padding, and
`sentence_starts` on each sentence's first token and on each row's first token.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from lm_jax.data.tokenizer import Tokenizer, encode_with_word_starts
from lm_jax.errors import DataError

# A sentence ends after . ! ? (or one closing quote or bracket after them) before whitespace,
# after a CJK full stop, or at a line break.
_SENTENCE_END = re.compile(r"(?<=[.!?])(?=\s)|(?<=[.!?][\"')\]])(?=\s)|(?<=[。！？])")


def split_sentences(text: str) -> list[str]:
    """The non-blank sentences of `text` (see module docstring)."""
    return [s.strip() for line in text.splitlines() for s in _SENTENCE_END.split(line) if s.strip()]


def encode_sentences(
    tokenizer: Tokenizer, docs: Sequence[str]
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """(ids, word starts, sentence starts) of each document, its sentences tokenized one by
    one (`encode_with_word_starts`) and laid end to end; sentences of no tokens are dropped."""
    sentences = [split_sentences(d) for d in docs]
    ids, word_starts = encode_with_word_starts(tokenizer, [s for doc in sentences for s in doc])
    out, at = [], 0
    for doc in sentences:
        pieces = [i for i in range(at, at + len(doc)) if len(ids[i])]
        at += len(doc)
        lengths = [len(ids[i]) for i in pieces]
        starts = np.zeros(sum(lengths), bool)
        starts[np.cumsum([0, *lengths])[:-1]] = True
        out.append(
            (
                np.concatenate([ids[i] for i in pieces] or [np.zeros(0, np.int32)]),
                np.concatenate([word_starts[i] for i in pieces] or [np.zeros(0, bool)]),
                starts,
            )
        )
    return out


def row_spans(sentence_starts: np.ndarray, seq_len: int) -> np.ndarray:
    """[start, end) token spans of a document's rows: whole sentences while they fit in
    `seq_len`, a sentence longer than a row cut into rows of `seq_len` and its remainder
    starting the next row. int64 [rows, 2]; none for a document of no tokens."""
    if seq_len < 5:
        raise DataError(
            f"sentence-pair rows need seq_len >= 5 ([CLS] A [SEP] B [SEP]), got {seq_len}"
        )
    bounds = [*np.flatnonzero(sentence_starts).tolist(), len(sentence_starts)]
    spans, row_start = [], None
    for begin, end in zip(bounds[:-1], bounds[1:]):
        if row_start is not None and end - row_start > seq_len:
            spans.append((row_start, begin))
            row_start = None
        while end - begin > seq_len:
            spans.append((begin, begin + seq_len))
            begin += seq_len
        if row_start is None:
            row_start = begin
    if row_start is not None:
        spans.append((row_start, bounds[-1]))
    return np.array(spans, np.int64).reshape(-1, 2)
