"""One run per run directory: an exclusive lock, taken before anything is written there.

Two runs writing one directory corrupt each other (orbax tracebacks, a metrics log rewritten
under the other's open handle). `RunDirectoryLock` holds `fcntl.flock` on `<run dir>/.lock`
for the whole run. The kernel releases a flock when its process exits, however it exits
(SIGKILL, a crash), so a dead run never leaves a stale lock behind; the file keeps the holder's
process id for the message a second run prints.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from lm_jax.errors import OutputError

LOCK_FILE = ".lock"


class RunDirectoryLock:
    """`with RunDirectoryLock(workdir):` creates `workdir` if needed and holds it exclusively;
    raises `OutputError` if another process holds it, or the directory cannot be written;
    `option` is the setting the error tells the user to change."""

    def __init__(self, workdir: Path, option: str = "config.output_dir"):
        self.workdir, self.option = Path(workdir), option
        self._file = None

    def __enter__(self) -> RunDirectoryLock:
        path = self.workdir / LOCK_FILE
        try:
            self.workdir.mkdir(parents=True, exist_ok=True)
            self._file = path.open("a+")
        except OSError as e:
            raise OutputError(
                f"cannot write the run directory {self.workdir} ({e.strerror or e}): choose "
                f"another {self.option}"
            ) from e
        try:
            fcntl.flock(self._file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._file.seek(0)
            holder = self._file.read().strip() or "unknown"
            self._file.close()
            raise OutputError(
                f"{self.workdir} is in use by another lm_jax run (process {holder}); wait for it "
                f"to finish, or choose another {self.option}. Nothing was written."
            ) from None
        try:
            self._file.seek(0)
            self._file.truncate()
            self._file.write(f"{os.getpid()}\n")
            self._file.flush()
        except OSError as e:
            self.__exit__()
            raise OutputError(f"cannot write the run directory {self.workdir}: {e}") from e
        return self

    def __exit__(self, *exc) -> None:
        if self._file is not None and not self._file.closed:
            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
