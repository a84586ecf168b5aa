"""Reading local files: paths that must exist, UTF-8 lines with errors naming the line, and
plain-text corpora (documents separated by blank lines)."""

from __future__ import annotations

import os
import re
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


def utf8_lines(p: Path):
    """(line number, line) of a UTF-8 file; invalid UTF-8 is a `DataError` naming the line."""
    with p.open("rb") as f:
        for n, raw in enumerate(f, 1):
            try:
                yield n, raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{p}:{n} is not UTF-8 text ({e.reason} at byte {e.start})") from e


def text_files(path: str | os.PathLike) -> list[str]:
    """Documents from a text file or a folder of `*.txt` files, split on blank lines."""
    p = existing(path, "text")
    files = sorted(f for f in p.rglob("*.txt") if f.is_file()) if p.is_dir() else [p]
    if not files:
        raise DataError(f"the text corpus folder {p} holds no .txt files")
    docs = []
    for f in files:
        content = "".join(line for _, line in utf8_lines(f))
        docs.extend(d.strip() for d in BLANK_LINES.split(content) if d.strip())
    return docs
