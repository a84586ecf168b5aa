"""Checkpoints (orbax) and the run's configuration record.

A run directory holds `run_config.json` (the configuration it started with) and
`checkpoints/<step>/`. Resuming compares the new configuration with the record: fields that
change what is trained (model, tokenizer, data, objective, seed, batch size) must match, so a
checkpoint is never continued, or overwritten, under a different setup.

Each checkpoint holds the train state, the data iterator's position, the configuration and a
run record (its step and the fingerprint of the rows it trained on); once written, a SHA-256 of
every file goes into `lm_jax_checksums.json` beside them and is verified before a restore, so a
flipped byte is reported as corruption instead of resuming with changed weights.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from lm_jax.config_tools import flatten
from lm_jax.errors import CheckpointError

log = logging.getLogger(__name__)
RUN_CONFIG_FILE = "run_config.json"
CHECKSUM_FILE = "lm_jax_checksums.json"
# Config fields that may change between a run and its resumption.
RESUMABLE_CHANGES = (
    "output_dir",
    "train.steps",
    "train.decay_steps",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "data.verify_shards",  # how thoroughly a prepared corpus is checked at start
    "model.attention",  # the same attention, computed another way
    "model.remat",  # the same gradients, recomputed instead of stored
    "mesh.data",  # a checkpoint restores onto any mesh
    "mesh.fsdp",
    "mesh.tensor",
    "mesh.cpu_devices",
    "distributed.initialize",
    "distributed.coordinator_address",
    "distributed.num_processes",
    "distributed.process_id",
)


def checkpoint_steps(directory: Path) -> list[int]:
    """Steps of the finished checkpoints under `directory` (orbax's in-progress ones excluded)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def _brief(error: Exception, limit: int = 480) -> str:
    """An error's type and message, its middle elided when long: tensorstore's messages start
    with long paths and end with the operating system's reason (No space left on device)."""
    text = " ".join(f"{type(error).__name__}: {error}".split())
    return text if len(text) <= limit else f"{text[: limit // 3]} ... {text[-2 * limit // 3 :]}"


def file_checksums(step_dir: Path) -> dict[str, str]:
    """SHA-256 of every file under a checkpoint's directory (the record itself excluded)."""
    sums = {}
    for path in sorted(Path(step_dir).rglob("*")):
        if path.is_file() and path.name != CHECKSUM_FILE:
            digest = hashlib.sha256()
            with path.open("rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    digest.update(block)
            sums[str(path.relative_to(step_dir))] = digest.hexdigest()
    return sums


def checksum_problem(step_dir: Path) -> str | None:
    """What differs from the checkpoint's checksum record (None: every file as written);
    raises FileNotFoundError when it has no record."""
    recorded = json.loads((Path(step_dir) / CHECKSUM_FILE).read_text())
    current = file_checksums(step_dir)
    changed = sorted(f for f in recorded if current.get(f) != recorded[f])
    if not changed:
        return None
    what = ", ".join(f + (" is missing" if f not in current else " changed") for f in changed[:3])
    return f"{len(changed)} file(s) differ from their checksums ({what})"


def restore_run_config(workdir: Path, saved_config: dict[str, Any]) -> None:
    """Write back a missing `run_config.json` from the configuration a checkpoint holds."""
    path = Path(workdir) / RUN_CONFIG_FILE
    log.warning("%s is missing; restored from the latest checkpoint's configuration", path)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(saved_config, indent=2, sort_keys=True))
    tmp.replace(path)


def check_run_config(
    workdir: Path,
    config_dict: dict[str, Any],
    resuming: bool,
    write: bool = True,
    defaults: dict[str, Any] | None = None,
) -> None:
    """Record the configuration of a fresh run (when `write`: process 0 of a multi-host run);
    for a resumed run, refuse incompatible changes. A field the record lacks (added to the
    schema after the run started) counts as its value in `defaults` (flattened names)."""
    path = Path(workdir) / RUN_CONFIG_FILE
    if not resuming:
        if not write:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(config_dict, indent=2, sort_keys=True))
        tmp.replace(path)
        return
    try:
        recorded = flatten(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path} is unreadable or corrupt ({e}); every checkpoint holds the run's "
            "configuration too: delete the file and rerun, and it is restored from the latest "
            "checkpoint; the run directory was left untouched"
        ) from e
    current = flatten(json.loads(json.dumps(config_dict)))  # as recorded: tuples are lists
    recorded = {**{k: v for k, v in (defaults or {}).items() if k in current}, **recorded}
    changed = sorted(
        k
        for k in set(recorded) | set(current)
        if k not in RESUMABLE_CHANGES and recorded.get(k) != current.get(k)
    )
    if changed:
        diffs = "; ".join(f"config.{k}: {recorded.get(k)!r} -> {current.get(k)!r}" for k in changed)
        raise CheckpointError(
            f"{workdir} holds a run with a different configuration ({diffs}). Resume it with its "
            "own configuration, or choose a new config.output_dir; nothing was overwritten."
        )


class Checkpointer:
    """Keeps the last `keep` checkpoints under `directory`, each holding the train state (a
    pytree, sharded arrays included), the data iterator's position (`data/`: grain's
    per-process state files), the run's configuration (`config/`) and a run record (`run/`:
    step and data fingerprint), all verified by `lm_jax_checksums.json`.

    Saves are asynchronous (orbax writes in the background while training continues); the
    checksums of a save are written once it has finished (at the next save or `close`). A save
    that fails (a full disk) raises `CheckpointError` naming the checkpoint and the last intact
    one. Restores verify the checksums, then read straight into the shardings of the state
    passed in.
    """

    def __init__(
        self,
        directory: Path,
        keep: int,
        config: dict[str, Any] | None = None,
        write_checksums: bool = True,
    ):
        self.directory = Path(directory)
        self._config = config or {}
        self._write_checksums = write_checksums
        self._pending: int | None = None  # a save in flight, its checksums not yet written
        self._closed = False
        try:
            self._manager = ocp.CheckpointManager(
                self.directory.absolute(),
                options=ocp.CheckpointManagerOptions(
                    max_to_keep=keep, create=True, enable_async_checkpointing=True
                ),
            )
        except OSError as e:
            raise CheckpointError(f"cannot create checkpoints in {self.directory}: {e}") from e

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def _intact_before(self, step: int) -> str:
        earlier = [s for s in checkpoint_steps(self.directory) if s < step]
        if not earlier:
            return "no earlier checkpoint exists"
        return f"the previous checkpoint, step {earlier[-1]}, is intact"

    def _finish_pending(self) -> None:
        """Wait for the save in flight; record its checksums."""
        if self._pending is None:
            return
        step, self._pending = self._pending, None
        try:
            self._manager.wait_until_finished()
        except Exception as e:  # orbax re-raises the background writer's error (ENOSPC, EIO)
            raise CheckpointError(
                f"could not save checkpoint {self.directory / str(step)} ({_brief(e)}); "
                f"{self._intact_before(step)}: free space or fix the "
                "directory, then rerun the same command to resume"
            ) from e
        if self._write_checksums:
            step_dir = self.directory / str(step)
            try:
                tmp = step_dir / (CHECKSUM_FILE + ".tmp")
                tmp.write_text(json.dumps(file_checksums(step_dir), indent=1, sort_keys=True))
                tmp.replace(step_dir / CHECKSUM_FILE)
            except OSError as e:
                log.warning("checkpoint %s: its checksums could not be written (%s)", step_dir, e)

    def save(self, step: int, state: Any, data_iterator: Any, record: dict[str, Any]) -> None:
        """Start saving `state`, the data position and `record` (the run record) as `step`."""
        self._finish_pending()
        try:
            self._manager.save(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardSave(state),
                    data=grain.checkpoint.CheckpointSave(data_iterator),
                    config=ocp.args.JsonSave(self._config),
                    run=ocp.args.JsonSave(record),
                ),
            )
        except Exception as e:  # a synchronous part of the save failed (ENOSPC, EIO, ...)
            raise CheckpointError(
                f"could not save checkpoint {self.directory / str(step)} ({_brief(e)}); "
                f"{self._intact_before(step)}: free space or fix the "
                "directory, then rerun the same command to resume"
            ) from e
        self._pending = step

    def _restore_item(self, step: int, name: str) -> Any:
        return self._manager.restore(
            step, args=ocp.args.Composite(**{name: ocp.args.JsonRestore()})
        )[name]

    def saved_config(self, step: int) -> dict[str, Any]:
        """The configuration saved with checkpoint `step`."""
        return self._restore_item(step, "config")

    def run_record(self, step: int) -> dict[str, Any] | None:
        """The run record saved with checkpoint `step` (None for checkpoints without one)."""
        try:
            return self._restore_item(step, "run")
        except KeyError:
            return None

    def _corrupt(self, step: int, problem: str) -> CheckpointError:
        step_dir = self.directory / str(step)
        earlier = [s for s in checkpoint_steps(self.directory) if s < step]
        hint = (
            f"to resume from step {earlier[-1]}, move the corrupt one aside (mv {step_dir} "
            f"{step_dir}.corrupt; lm_jax ignores that name) and rerun"
            if earlier
            else "no earlier checkpoint exists: start a new config.output_dir"
        )
        return CheckpointError(
            f"checkpoint {step_dir} is corrupt or does not match this model ({problem}); it was "
            f"left untouched; {hint}"
        )

    def verify(self, step: int) -> None:
        """Raise `CheckpointError` when checkpoint `step`'s files differ from their checksums."""
        try:
            problem = checksum_problem(self.directory / str(step))
        except FileNotFoundError:
            log.warning(
                "checkpoint %s has no checksum record (written by an earlier lm_jax, or the run "
                "stopped before recording it); restoring it unverified",
                self.directory / str(step),
            )
            return
        except (OSError, ValueError) as e:
            problem = f"its checksum record is unreadable: {e}"
        if problem:
            raise self._corrupt(step, problem)

    def restore(self, step: int, like: Any, data_iterator: Any | None) -> Any:
        """The state saved at `step`, with the structure, shapes, dtypes and shardings of
        `like`; `data_iterator` is moved to the saved position (None: the state alone, e.g.
        weights for fine-tuning)."""
        self.verify(step)
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        items = {"state": ocp.args.StandardRestore(abstract)}
        if data_iterator is not None:
            items["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            restored = self._manager.restore(step, args=ocp.args.Composite(**items)).state
        except Exception as e:  # orbax raises many types for missing / truncated / foreign files
            raise self._corrupt(step, _brief(e)) from e
        mismatched = [
            jax.tree_util.keystr(path)
            for (path, a), b in zip(
                jax.tree_util.tree_flatten_with_path(abstract)[0], jax.tree.leaves(restored)
            )
            if a.shape != b.shape or a.dtype != b.dtype
        ]
        if mismatched:
            raise self._corrupt(step, f"arrays of other shapes at {mismatched[:5]}")
        return restored

    def close(self) -> None:
        """Wait for the last save (raising `CheckpointError` if it failed) and release; a
        second call does nothing."""
        if self._closed:
            return
        self._closed = True
        failed = None
        try:
            self._finish_pending()
        except CheckpointError as e:
            failed = e
        try:
            self._manager.close()
        except Exception:  # the same failed save, re-raised by orbax's close
            if failed is None:
                raise
        if failed is not None:
            raise failed
