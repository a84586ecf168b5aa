"""Reading local files: paths that must exist, UTF-8 lines with errors naming the line, and
plain-text corpora (documents separated by blank lines)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

from lm_jax.errors import DataError

BLANK_LINES = re.compile(r"\n\s*\n+")


def existing(path: str | os.PathLike, what: str, file: bool = False) -> Path:
    """`path` as a Path; a `DataError` names what is wrong (unset, missing, not a file)."""
    if not path:
        raise DataError(f"the {what} corpus needs a path (config.data.path)")
    p = Path(path).expanduser()
    if not p.exists():
        raise DataError(f"corpus path does not exist: {p}")
    if file and not p.is_file():
        raise DataError(f"the {what} corpus must be a file; {p} is a directory")
    return p


def utf8_lines(p: Path, opener=open):
    """(line number, line) of a UTF-8 file (opened with `opener`, e.g. `gzip.open`); invalid
    UTF-8 is a `DataError` naming the line."""
    with opener(p, "rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{p}:{n} is not UTF-8 text ({e.reason} at byte {e.start})") from e


def text_documents(path: Path) -> Iterator[str]:
    """The documents of a UTF-8 text file, separated by blank lines, one at a time."""
    lines: list[str] = []
    for _, line in utf8_lines(path):
        if line.strip():
            lines.append(line)
        elif lines:
            yield "".join(lines).strip()
            lines = []
    if lines:
        yield "".join(lines).strip()


def text_files(path: str | os.PathLike) -> list[str]:
    """Documents from a text file or a folder of `*.txt` files, split on blank lines."""
    p = existing(path, "text")
    files = sorted(f for f in p.rglob("*.txt") if f.is_file()) if p.is_dir() else [p]
    if not files:
        raise DataError(f"the text corpus folder {p} holds no .txt files")
    return [doc for f in files for doc in text_documents(f)]
