"""The best dev evaluation's weights, kept under `<run>/best` as one orbax checkpoint (its
step, parameters and metrics), replaced only by a better evaluation. Orbax writes each save
to a temporary directory and renames it, so a killed run leaves the previous best intact."""

from __future__ import annotations

import logging
import math
import shutil
from pathlib import Path

import jax
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

log = logging.getLogger(__name__)


class BestModel:
    """`offer(step, metrics, params)` keeps `params` when `metrics[metric]` beats the best so
    far (the run's earlier best survives a resume; a run that starts from step 0, e.g. after a
    crash before its first checkpoint, starts without one); `params(like)` restores them."""

    def __init__(self, directory: Path, metric: str, fresh: bool):
        self.directory, self.metric = Path(directory), metric
        if fresh and jax.process_index() == 0:
            shutil.rmtree(self.directory, ignore_errors=True)
        if fresh and jax.process_count() > 1:
            multihost_utils.sync_global_devices("lm_jax best model cleared")
        self._manager = ocp.CheckpointManager(
            self.directory.absolute(),
            options=ocp.CheckpointManagerOptions(
                max_to_keep=1, create=True, enable_async_checkpointing=False
            ),
        )
        self.step = self._manager.latest_step()
        self.metrics = None
        if self.step is not None:
            self.metrics = self._manager.restore(
                self.step, args=ocp.args.Composite(metrics=ocp.args.JsonRestore())
            ).metrics

    def offer(self, step: int, metrics: dict[str, float], params) -> bool:
        value = metrics[self.metric]
        if not math.isfinite(value):
            return False
        if self.metrics is not None and value <= self.metrics[self.metric]:
            return False
        self._manager.save(
            step,
            args=ocp.args.Composite(
                params=ocp.args.StandardSave(params), metrics=ocp.args.JsonSave(metrics)
            ),
            force=True,
        )
        self._manager.wait_until_finished()
        self.step, self.metrics = step, dict(metrics)
        log.info("best dev %s so far: %.4f at step %d", self.metric, value, step)
        return True

    def params(self, like):
        """The kept parameters, in the structure and shardings of `like`."""
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, like)
        restored = self._manager.restore(
            self.step, args=ocp.args.Composite(params=ocp.args.StandardRestore(abstract))
        )
        return restored.params
