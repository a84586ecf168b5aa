"""Task data from TensorFlow Datasets prepared under a local `data_dir` (ArrayRecord, read with
`tfds.data_source` and `download=False`, no TensorFlow): GLUE's `glue/<task>` for sequence
tasks (features named as the columns, e.g. `sentence`, `label`) and `squad/v2.0` (or v1.1)
for extractive QA. A dataset that is not prepared there is a named error; nothing downloads."""

from __future__ import annotations

from collections.abc import Iterator

from lm_jax.errors import DataError
from lm_jax.finetune.data import Examples
from lm_jax.finetune.qa_data import QASplit, squad_split


def _text(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def tfds_records(name: str, split: str, data_dir: str):
    """The random-access records of a prepared split."""
    import tensorflow_datasets as tfds

    if not name:
        raise DataError("config.data.tfds_name is required with config.data.format=tfds")
    try:
        return tfds.data_source(name, split=split, data_dir=data_dir or None, download=False)
    except Exception as e:  # TFDS raises several types for "not prepared" / "unknown name"
        raise DataError(
            f"TFDS dataset {name!r} (split {split!r}) is not prepared under "
            f"{data_dir or 'the default TFDS data_dir'} (config.data.tfds_data_dir): {e}"
        ) from e


def read_tfds_examples(
    name: str,
    split: str,
    data_dir: str,
    text_column: str,
    label_column: str,
    pair_column: str = "",
) -> Examples:
    """A sequence task's split; class labels are the dataset's integer ids, as strings (GLUE's
    TSV files hold the same ids)."""
    records = tfds_records(name, split, data_dir)
    source = f"TFDS {name}:{split}"
    if not len(records):
        raise DataError(f"{source} holds no examples")
    wanted = {"text": text_column, "label": label_column, "text pair": pair_column}
    features = sorted(records[0])
    for what, column in wanted.items():
        if column and column not in features:
            raise DataError(f"{source} has no {what} feature {column!r}; its features: {features}")
    rows = [records[i] for i in range(len(records))]
    pairs = [_text(r[pair_column]) for r in rows] if pair_column else None
    labels = [_text(r[label_column]) for r in rows]
    return Examples([_text(r[text_column]) for r in rows], pairs, labels, source)


def _squad_questions(records) -> Iterator[tuple[dict, str]]:
    """(SQuAD question dict, context) of each TFDS record."""
    for i in range(len(records)):
        r = records[i]
        answers = r["answers"]
        texts, starts = list(answers["text"]), list(answers["answer_start"])
        qa = {
            "id": _text(r["id"]),
            "question": _text(r["question"]),
            "answers": [{"text": _text(t), "answer_start": int(s)} for t, s in zip(texts, starts)],
            "is_impossible": bool(r.get("is_impossible", False)),
        }
        yield qa, _text(r["context"])


def read_tfds_squad(name: str, split: str, data_dir: str, training: bool) -> QASplit:
    """A SQuAD split from TFDS (`squad_split`: mismatched answers counted and skipped)."""
    records = tfds_records(name, split, data_dir)
    return squad_split(_squad_questions(records), f"TFDS {name}:{split}", training)
