"""A pretraining run as fine-tuning (and generation) read it: its configuration, tokenizer
and the model of its latest checkpoint, restored on one device."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import ml_collections
from flax import nnx

from lm_jax.data.pipeline import TOKENIZER_FILE
from lm_jax.data.tokenizer import Tokenizer, load_tokenizer
from lm_jax.errors import CheckpointError
from lm_jax.pretrain.run import build_model
from lm_jax.pretrain.schema import schema_default_config
from lm_jax.train.checkpoint import RUN_CONFIG_FILE, Checkpointer
from lm_jax.train.optimizer import make_optimizer
from lm_jax.train.step import TrainState


@dataclasses.dataclass(frozen=True)
class SavedRun:
    """A pretraining run's latest model (its pretraining heads included), tokenizer, config."""

    model: nnx.Module
    tokenizer: Tokenizer
    config: ml_collections.ConfigDict
    step: int
    tokenizer_path: Path


def is_pretraining_run(path: str | Path) -> bool:
    return (Path(path) / RUN_CONFIG_FILE).is_file()


def _saved_config(workdir: Path) -> ml_collections.ConfigDict:
    """The run's recorded configuration, with fields and groups added since it was written
    (an empty group such as `model_options` included) at their defaults."""
    config = ml_collections.ConfigDict(json.loads((workdir / RUN_CONFIG_FILE).read_text()))
    _fill_missing(config, schema_default_config(config).to_dict())
    return config


def _fill_missing(node: ml_collections.ConfigDict, defaults: Mapping[str, Any]) -> None:
    for key, value in defaults.items():
        if key not in node:
            node[key] = ml_collections.ConfigDict(value) if isinstance(value, Mapping) else value
        elif isinstance(value, Mapping) and isinstance(node[key], ml_collections.ConfigDict):
            _fill_missing(node[key], value)


def run_tokenizer_path(workdir: Path, config: ml_collections.ConfigDict) -> Path:
    """The tokenizer file a run trained with (its own, or the one its config named)."""
    return Path(config.tokenizer.path) if config.tokenizer.path else workdir / TOKENIZER_FILE


def load_pretraining_run(workdir: str | Path) -> SavedRun:
    """The model of a pretraining run's latest checkpoint (checksums verified), its tokenizer
    and configuration. A directory without a run record or a checkpoint is a CheckpointError."""
    workdir = Path(workdir)
    if not is_pretraining_run(workdir):
        raise CheckpointError(f"{workdir} is not an lm_jax pretraining run (no {RUN_CONFIG_FILE})")
    config = _saved_config(workdir)
    tokenizer_path = run_tokenizer_path(workdir, config)
    tokenizer = load_tokenizer(
        tokenizer_path, extra_ids=config.tokenizer.extra_ids, lowercase=config.tokenizer.lowercase
    )
    checkpointer = Checkpointer(workdir / "checkpoints", keep=config.train.keep_checkpoints)
    try:
        step = checkpointer.latest_step()
        if step is None:
            raise CheckpointError(f"pretraining run {workdir} has no checkpoint yet")
        optimizer, _ = make_optimizer(config.train)
        abstract = nnx.eval_shape(lambda: build_model(config, tokenizer.vocab.size))
        graphdef, params = nnx.split(abstract)
        device = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        like = jax.tree.map(
            lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=device),
            jax.eval_shape(lambda p: TrainState.create(p, optimizer), params),
        )
        state = checkpointer.restore(step, like, None)
    finally:
        checkpointer.close()
    return SavedRun(nnx.merge(graphdef, state.params), tokenizer, config, step, tokenizer_path)
