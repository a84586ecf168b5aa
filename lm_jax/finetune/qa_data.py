"""Extractive QA data: SQuAD-format JSON (Rajpurkar et al. 2016; 2.0 with unanswerable
questions, 2018) read into examples, and each example cut into windows of
`[CLS] question [SEP] context window [SEP]` as BERT's `run_squad.py` does (Devlin et al. 2019,
sec. 4.3): the question cut to `max_query_length` tokens, windows of the context starting every
`doc_stride` tokens, and each context token's character offsets kept so that a predicted span
maps back to the exact context substring, whatever the tokenizer.

A training window whose answer is not wholly inside it, and every window of an unanswerable
question, is labelled with the span at the classification token ([CLS] at 0; XLNet's <cls>
last): SQuAD 2.0's no-answer target.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterable
from pathlib import Path

import numpy as np

from lm_jax.data.tokenizer import Encoded, Tokenizer
from lm_jax.errors import DataError
from lm_jax.finetune.data import (
    EncodedSplit,
    classification_position,
    row_layout,
    second_text_start,
    special_count,
)

log = logging.getLogger(__name__)
OUTSIDE = -1  # the character offset of a token that is not in the context


@dataclasses.dataclass(frozen=True)
class QAExample:
    """One question on one context: its id, the gold answer texts (all of them, for scoring;
    empty when unanswerable) and the training answer's character span (start -1: none)."""

    qid: str
    question: str
    context: str
    answers: tuple[str, ...]
    answer_start: int
    answer_end: int  # exclusive

    @property
    def answerable(self) -> bool:
        return self.answer_start >= 0


@dataclasses.dataclass(frozen=True)
class QASplit:
    """A split's examples, the file they came from and how many answers were skipped because
    their offsets do not match the context."""

    examples: list[QAExample]
    source: str
    skipped: int

    def __len__(self) -> int:
        return len(self.examples)


def _load_articles(path: Path) -> list:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path} is not SQuAD-format JSON: {e}") from None
    if not isinstance(data, dict) or not isinstance(data.get("data"), list):
        raise DataError(f'{path} is not SQuAD-format JSON (no top-level "data" list of articles)')
    return data["data"]


def _question(qa: dict, context: str, source: str) -> tuple[QAExample, bool]:
    """(the example, whether its training answer's offsets were wrong and dropped)."""
    try:
        qid, question, answers = str(qa["id"]), qa["question"], qa.get("answers", [])
    except (KeyError, TypeError):
        raise DataError(f"{source}: a question lacks 'id' or 'question' ({qa!r:.120})") from None
    texts = tuple(a["text"] for a in answers)
    start = end = -1
    mismatch = False
    if answers and not qa.get("is_impossible", False):
        first = answers[0]
        begin = int(first.get("answer_start", -1))
        if context[begin : begin + len(first["text"])] == first["text"] and begin >= 0:
            start, end = begin, begin + len(first["text"])
        else:
            mismatch = True
    return QAExample(qid, question, context, texts, start, end), mismatch


def squad_split(questions: Iterable[tuple[dict, str]], source: str, training: bool) -> QASplit:
    """The split of (SQuAD question dict, context) pairs. A training answer whose
    `answer_start` does not point at its text is counted, reported and its question skipped
    (evaluation keeps every question: gold texts only are scored)."""
    examples, skipped = [], 0
    for qa, context in questions:
        if not isinstance(context, str):
            raise DataError(f"{source}: a paragraph has no 'context' text")
        example, mismatch = _question(qa, context, source)
        if mismatch and training:
            skipped += 1
            continue
        examples.append(example)
    if not examples:
        raise DataError(f"{source} holds no questions")
    if skipped:
        log.warning(
            "%s: %d of %d answers do not match their context at answer_start; those questions "
            "were skipped",
            source,
            skipped,
            skipped + len(examples),
        )
    return QASplit(examples, source, skipped)


def read_squad(path: str | Path, training: bool) -> QASplit:
    """The questions of a SQuAD-format JSON file (`squad_split`)."""
    path = Path(path)
    questions = (
        (qa, paragraph.get("context"))
        for article in _load_articles(path)
        for paragraph in article.get("paragraphs", [])
        for qa in paragraph.get("qas", [])
    )
    return squad_split(questions, str(path), training)


@dataclasses.dataclass(frozen=True)
class QAWindows:
    """Windows of a split: the model's rows (`input_ids`, `token_type_ids`, `segment_ids`,
    `positions`, `start_positions`, `end_positions`, `weights`) and, per window, its example's
    index, each token's character offsets in the context ([F, L, 2], -1 outside it), whether
    the window is the token's maximum-context one (BERT's `_check_is_max_context`) and the
    index of its no-answer span (the classification token: [CLS] first, XLNet's <cls> last)."""

    rows: EncodedSplit
    example_index: np.ndarray  # int32 [F]
    offsets: np.ndarray  # int32 [F, L, 2]
    max_context: np.ndarray  # bool [F, L]
    null_index: np.ndarray  # int32 [F]

    def __len__(self) -> int:
        return len(self.example_index)


def window_starts(num_tokens: int, window: int, stride: int) -> list[int]:
    """Start tokens of the context windows: every `stride` tokens until one reaches the end
    (`run_squad.py`'s doc spans)."""
    starts, start = [], 0
    while True:
        starts.append(start)
        if start + window >= num_tokens:
            return starts
        start += min(window, stride)


def max_context(starts: list[int], window: int, num_tokens: int) -> np.ndarray:
    """[windows, tokens]: window w is the best for token t, scored as BERT's
    `_check_is_max_context`: min(left, right context) + 0.01 * window length, first best."""
    best = np.zeros((len(starts), num_tokens), bool)
    scores = np.full((len(starts), num_tokens), -np.inf)
    for w, start in enumerate(starts):
        length = min(window, num_tokens - start)
        t = np.arange(start, start + length)
        scores[w, t] = np.minimum(t - start, start + length - 1 - t) + 0.01 * length
    if num_tokens:
        best[scores.argmax(0), np.arange(num_tokens)] = True
    return best


def answer_tokens(offsets: np.ndarray, start_char: int, end_char: int) -> tuple[int, int]:
    """The first and last context token overlapping the answer's characters [start, end)."""
    overlapping = np.flatnonzero((offsets[:, 1] > start_char) & (offsets[:, 0] < end_char))
    if not len(overlapping):
        return -1, -1
    return int(overlapping[0]), int(overlapping[-1])


@dataclasses.dataclass(frozen=True)
class WindowSettings:
    """BERT's SQuAD settings: 384 tokens, windows every 128 context tokens, questions of at
    most 64 tokens; rows are the question and a context window in `layout` (`row_layout`:
    BERT's `[CLS] question [SEP] context [SEP]`, RoBERTa's / MPNet's
    `<s> question </s></s> context </s>` or XLNet's `question <sep> context <sep> <cls>`)."""

    max_seq_length: int = 384
    doc_stride: int = 128
    max_query_length: int = 64
    layout: str = "bert"

    @property
    def specials(self) -> int:
        return special_count(self.layout, pair=True)


def _example_windows(
    example: QAExample, question: np.ndarray, context: Encoded, settings: WindowSettings, vocab
):
    """(ids, token types, offsets, max-context flags, (start, end)) per window of one example:
    the row `row_layout(question, window)`, its context tokens after the question and the
    specials that precede them; (start, end) is the no-answer span unless the window holds the
    whole answer."""
    question = list(question[: settings.max_query_length])
    room = settings.max_seq_length - len(question) - settings.specials
    base = second_text_start(settings.layout, len(question))
    n = len(context.ids)
    starts = window_starts(n, room, settings.doc_stride)
    best = max_context(starts, room, n)
    first, last = -1, -1
    if example.answerable:
        first, last = answer_tokens(context.offsets, example.answer_start, example.answer_end)
    for w, start in enumerate(starts):
        stop = min(start + room, n)
        ids, types = row_layout(question, list(context.ids[start:stop]), vocab, settings.layout)
        offsets = np.full((len(ids), 2), OUTSIDE, np.int32)
        offsets[base : base + stop - start] = context.offsets[start:stop]
        flags = np.zeros(len(ids), bool)
        flags[base : base + stop - start] = best[w, start:stop]
        inside = first >= start and 0 <= last < stop
        null = classification_position(settings.layout, len(ids))
        span = (first - start + base, last - start + base) if inside else (null, null)
        yield ids, types, offsets, flags, span


def make_windows(split: QASplit, tokenizer: Tokenizer, settings: WindowSettings) -> QAWindows:
    """Every example's windows, padded to `settings.max_seq_length` (contexts are tokenized
    once per paragraph)."""
    if settings.max_seq_length - settings.max_query_length - settings.specials < 1:
        raise DataError(
            f"max_seq_length {settings.max_seq_length} leaves no context token after a "
            f"{settings.max_query_length}-token question"
        )
    vocab, length = tokenizer.vocab, settings.max_seq_length
    questions = tokenizer.encode_ids([e.question for e in split.examples])
    truncated = sum(len(q) > settings.max_query_length for q in questions)
    if truncated:
        log.warning(
            "%s: %d of %d questions were longer than %d tokens and truncated "
            "(config.qa.max_query_length)",
            split.source,
            truncated,
            len(questions),
            settings.max_query_length,
        )
    contexts: dict[str, Encoded] = {}
    rows: dict[str, list] = {k: [] for k in ("ids", "types", "offsets", "flags", "span", "ex")}
    for i, (example, question) in enumerate(zip(split.examples, questions)):
        if example.context not in contexts:
            contexts[example.context] = tokenizer.encode(example.context)
        context = contexts[example.context]
        for window in _example_windows(example, question, context, settings, vocab):
            for key, value in zip(rows, (*window, i)):
                rows[key].append(value)
    return _padded(rows, length, vocab.pad_id, truncated, settings.layout)


def padded_positions(real: np.ndarray, layout: str) -> np.ndarray:
    """int32 position ids of windows whose every position is computed (padding too, as Hugging
    Face's `...ForQuestionAnswering`): 0, 1, ... along the row, and RoBERTa's padding at the
    position table's padding row (`create_position_ids_from_input_ids`: index -1 here, the
    table being read at position + 2)."""
    positions = np.broadcast_to(np.arange(real.shape[-1], dtype=np.int32), real.shape)
    return np.where(real | (layout != "roberta"), positions, -1).astype(np.int32)


def _padded(
    rows: dict[str, list], length: int, pad_id: int, truncated: int, layout: str
) -> QAWindows:
    count = len(rows["ids"])
    ids = np.full((count, length), pad_id, np.int32)
    types = np.zeros((count, length), np.int32)
    offsets = np.full((count, length, 2), OUTSIDE, np.int32)
    flags = np.zeros((count, length), bool)
    lengths = np.array([len(r) for r in rows["ids"]], np.int32)
    for f, n in enumerate(lengths):
        ids[f, :n], types[f, :n] = rows["ids"][f], rows["types"][f]
        offsets[f, :n], flags[f, :n] = rows["offsets"][f], rows["flags"][f]
    span = np.array(rows["span"], np.int32).reshape(count, 2)
    real = np.arange(length) < lengths[:, None]
    arrays = dict(
        input_ids=ids,
        token_type_ids=types,
        segment_ids=real.astype(np.int32),
        positions=padded_positions(real, layout),
        start_positions=span[:, 0],
        end_positions=span[:, 1],
        weights=np.ones(count, np.float32),
    )
    example_index = np.array(rows["ex"], np.int32)
    null_index = np.broadcast_to(classification_position(layout, lengths), lengths.shape)
    return QAWindows(EncodedSplit(arrays, truncated), example_index, offsets, flags, null_index)
