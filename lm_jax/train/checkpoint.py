"""Checkpoints (orbax) and the run's configuration record.

A run directory holds `run_config.json` (the configuration it started with) and
`checkpoints/<step>/`. Resuming compares the new configuration with the record: fields that
change what is trained (model, tokenizer, data, objective, seed, batch size) must match, so a
checkpoint is never continued, or overwritten, under a different setup.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grain
import jax
import orbax.checkpoint as ocp

from lm_jax.errors import CheckpointError

RUN_CONFIG_FILE = "run_config.json"
# Config fields that may change between a run and its resumption.
RESUMABLE_CHANGES = (
    "output_dir",
    "train.steps",
    "train.log_every",
    "train.eval_every",
    "train.eval_batches",
    "train.checkpoint_every",
    "train.keep_checkpoints",
    "mesh.data",  # a checkpoint restores onto any mesh
    "mesh.fsdp",
    "mesh.tensor",
    "mesh.cpu_devices",
    "distributed.initialize",
    "distributed.coordinator_address",
    "distributed.num_processes",
    "distributed.process_id",
)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        out.update(_flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v})
    return out


def checkpoint_steps(directory: Path) -> list[int]:
    """Steps of the finished checkpoints under `directory` (orbax's in-progress ones excluded)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(int(p.name) for p in directory.iterdir() if p.is_dir() and p.name.isdigit())


def check_run_config(
    workdir: Path, config_dict: dict[str, Any], resuming: bool, write: bool = True
) -> None:
    """Record the configuration of a fresh run (when `write`: process 0 of a multi-host run);
    for a resumed run, refuse incompatible changes."""
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
        recorded = _flatten(json.loads(path.read_text()))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(
            f"{path} is corrupt ({e}); the run directory was left untouched"
        ) from e
    current = _flatten(config_dict)
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
    per-process state files) and the run's configuration (`config/`, JSON).

    Saves are asynchronous (orbax writes in the background while training continues); `close`
    waits for the last one. Restores read straight into the shardings of the state passed in.
    """

    def __init__(self, directory: Path, keep: int, config: dict[str, Any] | None = None):
        self.directory = Path(directory)
        self._config = config or {}
        self._manager = ocp.CheckpointManager(
            self.directory.absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=keep, create=True, enable_async_checkpointing=True
            ),
        )

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: Any, data_iterator: Any) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(
                state=ocp.args.StandardSave(state),
                data=grain.checkpoint.CheckpointSave(data_iterator),
                config=ocp.args.JsonSave(self._config),
            ),
        )

    def saved_config(self, step: int) -> dict[str, Any]:
        """The configuration saved with checkpoint `step`."""
        return self._manager.restore(
            step, args=ocp.args.Composite(config=ocp.args.JsonRestore())
        ).config

    def restore(self, step: int, like: Any, data_iterator: Any) -> Any:
        """The state saved at `step`, with the structure, shapes, dtypes and shardings of
        `like`; `data_iterator` is moved to the saved position."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        try:
            restored = self._manager.restore(
                step,
                args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract),
                    data=grain.checkpoint.CheckpointRestore(data_iterator),
                ),
            ).state
        except Exception as e:  # orbax raises many types for missing / truncated / foreign files
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} is corrupt or does not match this "
                f"model ({type(e).__name__}: {str(e)[:300]}); it was left untouched"
            ) from e
        mismatched = [
            jax.tree_util.keystr(path)
            for (path, a), b in zip(
                jax.tree_util.tree_flatten_with_path(abstract)[0], jax.tree.leaves(restored)
            )
            if a.shape != b.shape or a.dtype != b.dtype
        ]
        if mismatched:
            raise CheckpointError(
                f"checkpoint {self.directory / str(step)} does not match this "
                f"model at {mismatched[:5]}; it was left untouched"
            )
        return restored

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
