"""Train state and the jitted train / eval steps (pure functions of pytrees).

The steps know nothing of objectives or tasks: a `StepTask` says how rows become a batch
(`prepare`, run inside the jitted step) and how the model's outputs on it become sums and a
loss. Pretraining (`lm_jax.train.tasks`) and fine-tuning build their own.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lm_jax.sharding import batch_sharding, state_shardings

# Streams folded into the run's seed so that data masks, dropout, initialisation and the choice
# of a mixture's objective never share random numbers.
INIT_STREAM, TRAIN_STREAM, EVAL_STREAM, MIXTURE_STREAM = 0, 1, 2, 3


@struct.dataclass
class TrainState:
    """Everything a step changes: the step counter, parameters and optimiser state."""

    step: jax.Array
    params: nnx.State
    opt_state: optax.OptState

    @classmethod
    def create(cls, params: nnx.State, optimizer: optax.GradientTransformation) -> "TrainState":
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=optimizer.init(params))


def stream_key(seed: int, stream: int) -> jax.Array:
    return jax.random.fold_in(jax.random.key(seed), stream)


@dataclasses.dataclass(frozen=True)
class StepTask:
    """What a step trains.

    Attributes:
      prepare: (key, rows) -> batch, traced inside the step (masks, corruption); `rows` is the
        dict of arrays of one global batch, with `segment_ids` (0 = padding).
      sums: (model, batch, key, deterministic, rngs) -> dict of sums (not means, so that
        batches combine exactly; `lm_jax.train.losses.summarize`).
      loss: sums -> the scalar training loss.
    """

    prepare: Callable[[jax.Array, dict], Any]
    sums: Callable[..., dict[str, jax.Array]]
    loss: Callable[[dict], jax.Array]


def _task_sums(
    task: StepTask,
    graphdef: nnx.GraphDef,
    params: nnx.State,
    batch,
    key: jax.Array,
    *,
    deterministic: bool,
    dropout_key: jax.Array | None,
) -> dict[str, jax.Array]:
    model = nnx.merge(graphdef, params)
    rngs = None if deterministic else nnx.Rngs(dropout=dropout_key)
    return task.sums(model, batch, key, deterministic, rngs)


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    task: StepTask,
    seed: int,
    mesh: Mesh | None = None,
    state_sharding=None,
):
    """`step(state, rows) -> (state, sums)`, jitted with the state donated.

    `task.prepare` runs inside the step with key fold_in(seed, step), so a batch's masks
    depend only on (seed, step); `task.sums` and `task.loss` give the losses. With a `mesh`,
    the state keeps `state_sharding` (`lm_jax.sharding.state_shardings`), rows are split over
    data x fsdp, and the caller traces it under `jax.set_mesh(mesh)` so activations follow the
    rules table.
    """
    base = stream_key(seed, TRAIN_STREAM)

    def step(state: TrainState, rows: dict[str, jax.Array]):
        k_objective, k_dropout = jax.random.split(jax.random.fold_in(base, state.step))
        batch = task.prepare(k_objective, rows)
        k_sample = jax.random.fold_in(k_objective, 1)  # e.g. ELECTRA's generator samples

        def loss_fn(params):
            sums = _task_sums(
                task, graphdef, params, batch, k_sample, deterministic=False, dropout_key=k_dropout
            )
            return task.loss(sums), sums

        grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        sums = {
            **sums,
            "grad_norm": optax.tree.norm(grads),
            "steps": jnp.ones((), jnp.float32),
            "tokens": (rows["segment_ids"] > 0).sum().astype(jnp.float32),
        }
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums

    if mesh is None:
        return jax.jit(step, donate_argnums=0)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        step,
        in_shardings=(state_sharding, batch_sharding(mesh)),
        out_shardings=(state_sharding, replicated),
        donate_argnums=0,
    )


def make_eval_step(
    graphdef: nnx.GraphDef,
    task: StepTask,
    seed: int,
    mesh: Mesh | None = None,
    params_sharding=None,
):
    """`eval_step(params, rows, index) -> sums` with fixed masks per held-out batch index, so
    evaluations at different steps score the same predictions (`mesh` as in make_train_step)."""
    base = stream_key(seed, EVAL_STREAM)

    def eval_step(params: nnx.State, rows: dict[str, jax.Array], index: jax.Array):
        key = jax.random.fold_in(base, index)
        batch = task.prepare(key, rows)
        return _task_sums(
            task,
            graphdef,
            params,
            batch,
            jax.random.fold_in(key, 1),
            deterministic=True,
            dropout_key=None,
        )

    if mesh is None:
        return jax.jit(eval_step)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        eval_step,
        in_shardings=(params_sharding, batch_sharding(mesh), replicated),
        out_shardings=replicated,
    )


def make_predict_step(
    graphdef: nnx.GraphDef,
    predict: Callable[[nnx.Module, dict], Any],
    mesh: Mesh | None = None,
    params_sharding=None,
):
    """`predict_step(params, rows) -> predict(model, rows)`, jitted, without dropout: the
    model's outputs (logits, spans) for evaluation on the host (fine-tuning metrics)."""

    def predict_step(params: nnx.State, rows: dict[str, jax.Array]):
        return predict(nnx.merge(graphdef, params), rows)

    if mesh is None:
        return jax.jit(predict_step)
    replicated = NamedSharding(mesh, PartitionSpec())
    return jax.jit(
        predict_step,
        in_shardings=(params_sharding, batch_sharding(mesh)),
        out_shardings=replicated,
    )


def place_train_state(
    model: nnx.Module, optimizer: optax.GradientTransformation, mesh: Mesh
) -> tuple[nnx.GraphDef, TrainState, object]:
    """The train state of an already built model (pretrained weights loaded on the host), moved
    into its shardings on `mesh`, its optimiser state created there. Returns (graphdef,
    state, state_sharding) as `init_train_state`."""
    graphdef, params = nnx.split(model)
    abstract_state = jax.eval_shape(lambda p: TrainState.create(p, optimizer), params)
    sharding = state_shardings(abstract_state, mesh)
    params = jax.device_put(params, sharding.params)
    with jax.set_mesh(mesh):
        state = jax.jit(
            lambda p: TrainState.create(p, optimizer), out_shardings=sharding, donate_argnums=0
        )(params)
    return graphdef, state, sharding


def init_train_state(
    build: Callable[[], nnx.Module], optimizer: optax.GradientTransformation, mesh: Mesh
) -> tuple[nnx.GraphDef, TrainState, object]:
    """Build the model and its optimiser state directly in their shardings on `mesh` (one
    jitted initialisation, so no device ever holds more than its share).

    Returns (graphdef, state, state_sharding).
    """
    graphdef, abstract_params = nnx.split(nnx.eval_shape(build))
    abstract_state = jax.eval_shape(lambda p: TrainState.create(p, optimizer), abstract_params)
    sharding = state_shardings(abstract_state, mesh)

    def init() -> TrainState:
        return TrainState.create(nnx.split(build())[1], optimizer)

    with jax.set_mesh(mesh):
        state = jax.jit(init, out_shardings=sharding)()
    return graphdef, state, sharding
