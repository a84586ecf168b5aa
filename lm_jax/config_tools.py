"""Helpers for ml_collections configurations: config files, dotted overrides, flattening, and
checking a configuration against its schema (unknown, missing and mistyped fields, rules).
Pretraining (`lm_jax.pretrain.schema`) and fine-tuning schemas use them alike."""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import ml_collections

from lm_jax.errors import ConfigError

Rule = tuple[Callable[[Any], bool], str]


def flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """`{"a": {"b": 1}}` -> `{"a.b": 1}`."""
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(flatten(v, name + "."))
        else:
            out[name] = v
    return out


def load_config_file(path: str | os.PathLike, *args) -> ml_collections.ConfigDict:
    """`get_config(*args)` of a config file (`configs/bert.py`, `configs/finetune/sst2.py`:
    what `--config=path:arg` reads)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(*args)


def override(
    config: ml_collections.ConfigDict, values: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """Set dotted fields (`{"train.steps": 10}`) in place; an unknown field is a ConfigError."""
    for key, value in values.items():
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            if name not in node:
                raise ConfigError(f"unknown config field config.{key}")
            node = node[name]
        if leaf not in node:
            raise ConfigError(f"unknown config field config.{key}")
        node[leaf] = value
    return config


def check_fields(
    config: ml_collections.ConfigDict,
    schema: ml_collections.ConfigDict,
    rules: Mapping[str, Rule],
    free: Iterable[str] = (),
) -> None:
    """Raise `ConfigError` naming the first field of `config` that `schema` lacks, that is
    missing, has another type (an int is a float), or breaks its rule (`rules[name] = (ok,
    "must be ...")`). Fields under the prefixes `free` are left to the caller."""
    free = tuple(free)
    expected_fields = flatten(schema.to_dict())
    given = flatten(config.to_dict())
    for name, value in given.items():
        if name.startswith(free):
            continue
        if name not in expected_fields:
            raise ConfigError(f"unknown config field config.{name}")
        expected = type(expected_fields[name])
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
        if not ok or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"config.{name} must be {expected.__name__}, got {value!r}")
        if name in rules and not rules[name][0](value):
            raise ConfigError(f"config.{name} {rules[name][1]}, got {value!r}")
    for name in expected_fields:
        if name not in given and not name.startswith(free):
            raise ConfigError(f"config.{name} is missing")
