"""Objective registry and the helper that lifts one-row objectives to batches."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from lm_jax.errors import ConfigError

Objective = Callable[..., Any]
_REGISTRY: dict[str, Objective] = {}


def register(name: str) -> Callable[[Objective], Objective]:
    """Register an objective function under `name`."""

    def wrap(fn: Objective) -> Objective:
        if name in _REGISTRY:
            raise ValueError(f"objective {name!r} is registered twice")
        _REGISTRY[name] = fn
        return fn

    return wrap


def names() -> list[str]:
    """Names of every registered objective, sorted."""
    return sorted(_REGISTRY)


def get(name: str) -> Objective:
    """The objective registered as `name`; an unknown name raises `ConfigError` listing them."""
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"unknown objective {name!r}; choose from {names()}") from None


def positions_from_segments(segment_ids: jnp.ndarray) -> jnp.ndarray:
    """Positions restarting at 0 wherever the segment id changes along the last axis; 0 on
    padding (segment 0)."""
    idx = jnp.broadcast_to(jnp.arange(segment_ids.shape[-1]), segment_ids.shape)
    change = jnp.concatenate(
        [
            jnp.ones_like(segment_ids[..., :1], dtype=bool),
            segment_ids[..., 1:] != segment_ids[..., :-1],
        ],
        axis=-1,
    )
    start = jax.lax.cummax(jnp.where(change, idx, 0), axis=segment_ids.ndim - 1)
    return jnp.where(segment_ids != 0, idx - start, 0).astype(jnp.int32)


def map_rows(
    row_fn: Callable[..., Any],
    key: jax.Array,
    tokens: jnp.ndarray,
    arrays: dict[str, jnp.ndarray | None],
    **static: Any,
) -> Any:
    """Apply `row_fn(key, tokens[L], **arrays_row, **static)` to every row of `tokens`.

    `tokens` is [..., L]; each entry of `arrays` must have the same shape (None entries pass
    through unchanged). Rows get independent keys split from `key`; a single row uses `key`.
    """
    tokens = jnp.asarray(tokens)
    if tokens.ndim == 0 or tokens.shape[-1] == 0:
        raise ValueError(f"tokens must be [..., length] with length >= 1, got shape {tokens.shape}")
    if not jnp.issubdtype(tokens.dtype, jnp.integer):
        raise ValueError(f"tokens must be integer ids, got dtype {tokens.dtype}")
    given = {}
    for name, value in arrays.items():
        if value is None:
            static[name] = None
            continue
        value = jnp.asarray(value)
        if value.shape != tokens.shape:
            raise ValueError(f"{name} has shape {value.shape}; it must match tokens {tokens.shape}")
        given[name] = value
    lead, length = tokens.shape[:-1], tokens.shape[-1]
    if not lead:
        return row_fn(key, tokens, **given, **static)
    n = math.prod(lead)
    keys = jax.random.split(key, n)
    flat = {k: v.reshape(n, length) for k, v in given.items()}
    out = jax.vmap(lambda k, t, a: row_fn(k, t, **a, **static))(
        keys, tokens.reshape(n, length), flat
    )
    return jax.tree.map(lambda x: x.reshape(lead + x.shape[1:]), out)
