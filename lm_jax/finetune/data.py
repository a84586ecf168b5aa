"""Fine-tuning data: labelled texts read from TSV, CSV or JSONL files, and their encoding into
fixed-length rows `[CLS] A [SEP]` or `[CLS] A [SEP] B [SEP]` (Devlin et al. 2019, sec. 3).

A column is named by its header (`sentence`) or by its 0-based position (`"7"`), so headerless
files (GLUE's STS-B) and files whose splits name a column differently (SST-2's `sentence` /
`content`) read the same way. TSV files are read without quoting, as GLUE's own readers do.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from lm_jax.data.tokenizer import Tokenizer
from lm_jax.errors import DataError

log = logging.getLogger(__name__)
TFDS = "tfds"  # a prepared TensorFlow Datasets dataset (lm_jax.finetune.tfds_tasks)
FORMATS = ("auto", "tsv", "csv", "jsonl", TFDS)
CLASSIFICATION, REGRESSION = "classification", "regression"
QUESTION_ANSWERING = "question_answering"  # SQuAD-format JSON, read by lm_jax.finetune.qa_data


@dataclasses.dataclass(frozen=True)
class Examples:
    """One split's examples: texts, optional second texts, raw label strings (or numbers)."""

    texts: list[str]
    pairs: list[str] | None
    labels: list
    source: str  # the file they came from, for messages

    def __len__(self) -> int:
        return len(self.texts)


def file_format(path: Path, fmt: str = "auto") -> str:
    """The reader for `path`: `fmt`, or from the file extension when "auto"."""
    if fmt != "auto":
        return fmt
    suffix = path.suffix.lower().lstrip(".")
    if suffix in ("tsv", "csv", "jsonl"):
        return suffix
    if suffix == "json":
        return "jsonl"
    raise DataError(f"cannot tell the format of {path} from its name: set config.data.format")


def _records(path: Path, fmt: str, header: bool) -> tuple[list[str] | None, list[list]]:
    """(header names or None, rows as lists) of a TSV / CSV file, or JSONL objects as rows."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}") from None
    except UnicodeDecodeError as e:
        raise DataError(f"{path} is not UTF-8 text: {e}") from None
    if fmt == "jsonl":
        rows = []
        for n, line in enumerate(text.splitlines(), 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise DataError(f"{path}, line {n}: not a JSON object ({e})") from None
        names = sorted({k for r in rows if isinstance(r, dict) for k in r})
        return names, rows
    quoting = dict(delimiter="\t", quoting=csv.QUOTE_NONE) if fmt == "tsv" else {}
    rows = [r for r in csv.reader(text.splitlines(), **quoting) if r]
    if header and rows:
        return rows[0], rows[1:]
    return None, rows


def _column(name: str, header: list[str] | None, path: Path, what: str):
    """The index (or JSON key) that column `name` selects."""
    if header is not None and name in header:
        return header.index(name) if isinstance(header, list) else name
    if name.isdigit():
        return int(name)
    available = header if header is not None else "none (no header row: give 0-based positions)"
    raise DataError(f"{path} has no {what} column {name!r}; its columns: {available}")


def read_examples(
    path: str | Path,
    text_column: str,
    label_column: str,
    pair_column: str = "",
    fmt: str = "auto",
    header: bool = True,
) -> Examples:
    """Examples of one file; missing columns, short rows and empty files are named errors."""
    path = Path(path)
    fmt = file_format(path, fmt)
    names, rows = _records(path, fmt, header)
    if not rows:
        raise DataError(f"{path} holds no examples")
    wanted = {"text": text_column, "label": label_column, "text pair": pair_column}
    columns = {w: _column(c, names, path, w) for w, c in wanted.items() if c}
    if fmt == "jsonl":
        columns = {w: wanted[w] for w in columns}  # JSON objects are read by key
    values = {w: [] for w in columns}
    for n, row in enumerate(rows, 2 if header and fmt != "jsonl" else 1):
        for what, key in columns.items():
            try:
                values[what].append(row[key])
            except (IndexError, KeyError, TypeError):
                raise DataError(
                    f"{path}, row {n}: no {what} column {wanted[what]!r} ({row!r:.120})"
                ) from None
    return Examples(
        [str(t) for t in values["text"]],
        [str(t) for t in values["text pair"]] if pair_column else None,
        values["label"],
        str(path),
    )


def split_off(examples: Examples, fraction: float, seed: int) -> tuple[Examples, Examples]:
    """(train, dev): a seeded `fraction` of the examples held out, for corpora without an
    official dev split (the Chinese review sets)."""
    if not 0 < fraction < 1:
        raise DataError(f"config.data.dev_fraction must be in (0, 1), got {fraction}")
    order = np.random.default_rng(seed).permutation(len(examples))
    n_dev = max(1, round(fraction * len(examples)))

    def take(indices) -> Examples:
        pick = lambda xs: None if xs is None else [xs[i] for i in indices]
        return Examples(
            pick(examples.texts), pick(examples.pairs), pick(examples.labels), examples.source
        )

    return take(np.sort(order[n_dev:])), take(np.sort(order[:n_dev]))


def label_set(train: Examples, declared: Sequence[str]) -> list[str]:
    """The classification labels: `declared` (config.data.labels) or the sorted distinct
    training labels; a label of mixed types is refused."""
    if declared:
        return [str(x) for x in declared]
    kinds = {type(x).__name__ for x in train.labels}
    if len(kinds) > 1:
        raise DataError(f"{train.source}: labels of mixed types {sorted(kinds)}")
    found = sorted({str(x) for x in train.labels})
    if len(found) < 2:
        raise DataError(f"{train.source}: one label only ({found}); nothing to classify")
    return found


def label_ids(examples: Examples, task: str, labels: Sequence[str]) -> np.ndarray:
    """int32 class indices (classification) or float32 scores (regression)."""
    if task == REGRESSION:
        try:
            scores = np.array([float(x) for x in examples.labels], np.float32)
        except (TypeError, ValueError) as e:
            raise DataError(
                f"{examples.source}: a regression label is not a number ({e})"
            ) from None
        if not np.isfinite(scores).all():
            raise DataError(f"{examples.source}: a regression label is not finite")
        return scores
    index = {label: i for i, label in enumerate(labels)}
    unknown = sorted({str(x) for x in examples.labels} - set(index))
    if unknown:
        raise DataError(
            f"{examples.source}: labels {unknown[:5]} are outside the label set {list(labels)} "
            "(config.data.labels)"
        )
    return np.array([index[str(x)] for x in examples.labels], np.int32)


@dataclasses.dataclass(frozen=True)
class EncodedSplit:
    """Rows of one split: `input_ids`, `token_type_ids`, `segment_ids` (1 on real tokens) [N, L],
    `labels` and `weights` (1; 0 marks padding rows of an evaluation batch) [N]; `truncated`
    counts examples cut to fit."""

    arrays: dict[str, np.ndarray]
    truncated: int

    def __len__(self) -> int:
        return len(self.arrays["weights"])

    def row(self, i: int) -> dict[str, np.ndarray]:
        return {k: v[i] for k, v in self.arrays.items()}


def truncate_pair(a: list, b: list, budget: int) -> tuple[list, list]:
    """Drop tokens from the end of the longer text until both fit `budget`: BERT's
    `_truncate_seq_pair` (google-research/bert), the second text losing a token on a tie; the
    same as Hugging Face's "longest_first" except on a tie with an odd budget."""
    a, b = list(a), list(b)
    while len(a) + len(b) > budget:
        (a if len(a) > len(b) else b).pop()
    return a, b


# the pretrained family -> its rows' layout (`row_layout`)
FAMILY_LAYOUTS = {
    "bert": "bert",
    "electra": "bert",
    "roberta": "roberta",
    "xlnet": "xlnet",
    "bart": "bart",  # RoBERTa's ids; its padding positions differ (`qa_data.padded_positions`)
}


def row_layout(a: list, b: list | None, vocab, layout: str = "bert") -> tuple[list, list]:
    """(ids, token types) of one example: BERT's `[CLS] A [SEP] B [SEP]` (types 0, then 1),
    RoBERTa's / MPNet's / BART's `<s> A </s></s> B </s>` (types all 0) or XLNet's
    `A <sep> B <sep> <cls>` (types 0, 1, and 2 for <cls>), with `b` None for one text."""
    cls, sep = vocab.cls_id, vocab.sep_id
    if layout == "xlnet":
        first, second = [*a, sep], ([] if b is None else [*b, sep])
        return first + second + [cls], [0] * len(first) + [1] * len(second) + [2]
    if layout in ("roberta", "bart"):
        ids = [cls, *a, sep] + ([] if b is None else [sep, *b, sep])
        return ids, [0] * len(ids)
    first, second = [cls, *a, sep], ([] if b is None else [*b, sep])
    return first + second, [0] * len(first) + [1] * len(second)


def special_count(layout: str, pair: bool) -> int:
    """Special tokens a row of `layout` adds (3 for a BERT pair, 4 for RoBERTa's)."""
    return 2 + pair + (pair and layout in ("roberta", "bart"))


# specials before the first text, and between it and the second, in a pair row of each layout
_SPECIALS_BEFORE_SECOND = {"bert": 2, "roberta": 3, "bart": 3, "xlnet": 1}


def second_text_start(layout: str, first_length: int) -> int:
    """Where the second text starts in a pair row of `layout` (`row_layout`)."""
    return first_length + _SPECIALS_BEFORE_SECOND[layout]


def classification_position(layout: str, row_length: int) -> int:
    """The index of the row's classification token: [CLS] / <s> first, XLNet's <cls> last (the
    no-answer span of extractive QA)."""
    return row_length - 1 if layout == "xlnet" else 0


def encode(
    examples: Examples,
    labels: np.ndarray,
    tokenizer: Tokenizer,
    max_length: int,
    layout: str = "bert",
) -> EncodedSplit:
    """Rows of `max_length` ids in `layout` (`row_layout`), padded."""
    vocab, n = tokenizer.vocab, len(examples)
    firsts = tokenizer.encode_ids(examples.texts)
    seconds = tokenizer.encode_ids(examples.pairs) if examples.pairs is not None else None
    ids = np.full((n, max_length), vocab.pad_id, np.int32)
    types = np.zeros((n, max_length), np.int32)
    truncated = 0
    budget = max_length - special_count(layout, seconds is not None)
    for i in range(n):
        b = None if seconds is None else seconds[i]
        a, b_kept = truncate_pair(firsts[i], [] if b is None else b, budget)
        truncated += len(a) + len(b_kept) < len(firsts[i]) + (0 if b is None else len(b))
        row, row_types = row_layout(a, None if b is None else b_kept, vocab, layout)
        ids[i, : len(row)], types[i, : len(row)] = row, row_types
    arrays = dict(
        input_ids=ids,
        token_type_ids=types,
        segment_ids=(ids != vocab.pad_id).astype(np.int32),
        labels=labels,
        weights=np.ones(n, np.float32),
    )
    if truncated:
        log.warning(
            "%s: %d of %d examples (%.1f%%) were longer than %d tokens and truncated "
            "(config.data.max_seq_length)",
            examples.source,
            truncated,
            n,
            100 * truncated / n,
            max_length,
        )
    return EncodedSplit(arrays, truncated)


def padded_batches(split: EncodedSplit, batch_size: int) -> list[dict[str, np.ndarray]]:
    """Every row of `split` once, in order, in batches of `batch_size`; the last is padded
    with copies of row 0 whose `weights` are 0."""
    count = math.ceil(len(split) / batch_size)
    out = []
    for b in range(count):
        index = np.arange(b * batch_size, (b + 1) * batch_size)
        real = index < len(split)
        rows = {k: v[np.where(real, index, 0)] for k, v in split.arrays.items()}
        rows["weights"] = rows["weights"] * real
        out.append(rows)
    return out
