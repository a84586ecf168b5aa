"""Device mesh and the one logical-axis rules table (GSPMD sharding through `jax.jit`).

Parameters carry logical axis names in their `logical_axes` metadata ("vocab", "embed",
"heads", "mlp"); activations name theirs at a few points of each layer with `constrain`.
`LOGICAL_AXIS_RULES` maps logical names to the mesh axes

- `data`:   pure data parallelism (parameters replicated),
- `fsdp`:   data parallelism with parameters and optimiser state sharded over their "embed"
            dimension (ZeRO-3 / FSDP; XLA all-gathers them where a layer needs them),
- `tensor`: Megatron-style tensor parallelism over heads, MLP and vocabulary dimensions,

as in MaxText and t5x: the batch is split over data x fsdp, weights over fsdp and tensor. A
logical name maps to the first mesh axes of its rule not already used by another dimension of
the same array and dividing its size; otherwise that dimension is replicated. Without an
active mesh (`jax.set_mesh`), `constrain` does nothing, so models run unchanged on one device.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from lm_jax.errors import ConfigError

MESH_AXES = ("data", "fsdp", "tensor")

LOGICAL_AXIS_RULES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("batch", ("data", "fsdp")),  # activations and input rows
    ("length", ()),  # sequence positions: never split
    ("embed", ("fsdp",)),  # hidden features of weights (activations: batch already uses fsdp)
    ("heads", ("tensor",)),  # attention heads (q/k/v/output projections, relative biases)
    ("mlp", ("tensor",)),  # feed-forward inner features
    ("vocab", ("tensor",)),  # vocabulary rows of embeddings and output biases
)
_RULES = dict(LOGICAL_AXIS_RULES)


def make_mesh(data: int = -1, fsdp: int = 1, tensor: int = 1, devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh over `devices` (default: all, across processes); one size
    may be -1 to take the devices left over."""
    devices = list(jax.devices() if devices is None else devices)
    sizes = [data, fsdp, tensor]
    if sizes.count(-1) > 1 or any(s == 0 or s < -1 for s in sizes):
        raise ConfigError(f"mesh sizes (data, fsdp, tensor) = {tuple(sizes)}: use >= 1, one -1")
    known = math.prod(s for s in sizes if s != -1)
    if -1 in sizes:
        if len(devices) % known:
            raise ConfigError(
                f"mesh (data, fsdp, tensor) = {tuple(sizes)} does not divide {len(devices)} devices"
            )
        sizes[sizes.index(-1)] = len(devices) // known
    if math.prod(sizes) != len(devices):
        raise ConfigError(
            f"mesh (data, fsdp, tensor) = {tuple(sizes)} needs {math.prod(sizes)} devices, "
            f"{len(devices)} available"
        )
    return jax.make_mesh(tuple(sizes), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices)


def logical_to_spec(
    logical: Sequence[str | None] | None, shape: Sequence[int], mesh_shape: dict[str, int]
) -> PartitionSpec:
    """The PartitionSpec of an array of `shape` whose dimensions have `logical` names."""
    if not logical:
        return PartitionSpec()
    used: set[str] = set()
    spec: list[Any] = []
    for name, size in zip(logical, shape):
        axes = []
        for axis in _RULES.get(name, ()) if name else ():
            n = mesh_shape.get(axis, 1)
            if axis in used or n == 1:
                continue
            if size % (math.prod(mesh_shape[a] for a in axes) * n) == 0:
                axes.append(axis)
        used.update(axes)
        spec.append(None if not axes else axes[0] if len(axes) == 1 else tuple(axes))
    return PartitionSpec(*spec)


def constrain(x: jax.Array, logical: Sequence[str | None]) -> jax.Array:
    """Pin activation `x` to the sharding its logical axis names give under the active mesh."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    spec = logical_to_spec(logical, x.shape, dict(mesh.shape))
    return jax.lax.with_sharding_constraint(x, spec)


def state_shardings(tree: Any, mesh: Mesh) -> Any:
    """NamedShardings for a pytree of NNX Variables (parameters, optimiser moments: their
    `logical_axes` decide) and plain arrays (step counters: replicated), as a tree prefix.
    Optimiser states shaped unlike their parameter (Adafactor's factored row / column moments
    keep the parameter's metadata but not its rank) are replicated."""

    def leaf(x):
        if isinstance(x, nnx.Variable):
            axes = x.get_metadata().get("logical_axes")
            if axes is not None and len(axes) == len(x.shape):
                return NamedSharding(mesh, logical_to_spec(axes, x.shape, dict(mesh.shape)))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(leaf, tree, is_leaf=lambda x: isinstance(x, nnx.Variable))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Input rows [batch, ...]: the batch dimension split over data x fsdp."""
    return NamedSharding(mesh, PartitionSpec(("data", "fsdp")))


def batch_split(mesh: Mesh) -> int:
    """How many ways the batch dimension is split."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def global_batch(local_rows: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """Assemble this process's rows (its contiguous share of the global batch) into global
    arrays sharded over the mesh (`jax.make_array_from_process_local_data`; one process: a
    device_put)."""
    sharding = batch_sharding(mesh)
    return {
        k: jax.make_array_from_process_local_data(sharding, np.asarray(v))
        for k, v in local_rows.items()
    }
