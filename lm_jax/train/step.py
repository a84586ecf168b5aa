"""Train state and the jitted train / eval steps (pure functions of pytrees)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx, struct

from lm_jax.objectives.batch import Batch
from lm_jax.train.losses import weighted_cross_entropy

# Streams folded into the run's seed so that data masks, dropout and initialisation never share
# random numbers.
INIT_STREAM, TRAIN_STREAM, EVAL_STREAM = 0, 1, 2


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


def _lm_sums(
    graphdef: nnx.GraphDef,
    params: nnx.State,
    batch: Batch,
    *,
    deterministic: bool,
    dropout_key: jax.Array | None,
) -> dict[str, jax.Array]:
    """Loss sums of the LM head: on the sparse layout when the objective has one (masked LM),
    else on every position's dense targets (causal and prefix LM)."""
    model = nnx.merge(graphdef, params)
    rngs = None if deterministic else nnx.Rngs(dropout=dropout_key)
    logits = model(batch, deterministic=deterministic, rngs=rngs)
    if batch.masked_positions is not None:
        return weighted_cross_entropy(logits, batch.masked_targets, batch.masked_weights)
    return weighted_cross_entropy(logits, batch.targets, batch.loss_weights)


def apply_objective(objective: Callable[..., Batch], key: jax.Array, rows: dict) -> Batch:
    """Call the objective on packed rows, passing the row features it accepts
    (`segment_ids` always; `word_starts` to word-level objectives)."""
    fn = objective.func if isinstance(objective, functools.partial) else objective
    accepted = inspect.signature(fn).parameters
    extra = {k: rows[k] for k in ("word_starts",) if k in accepted and k in rows}
    return objective(key, rows["tokens"], segment_ids=rows["segment_ids"], **extra)


def make_train_step(
    graphdef: nnx.GraphDef,
    optimizer: optax.GradientTransformation,
    objective: Callable[..., Batch],
    seed: int,
):
    """`step(state, rows) -> (state, sums)`, jitted with the state donated.

    `rows` holds packed `tokens`, `segment_ids` and `word_starts` [batch, L]. The objective runs
    inside the step with key fold_in(seed, step), so a batch's masks depend only on (seed, step).
    """
    base = stream_key(seed, TRAIN_STREAM)

    def step(state: TrainState, rows: dict[str, jax.Array]):
        k_objective, k_dropout = jax.random.split(jax.random.fold_in(base, state.step))
        batch = apply_objective(objective, k_objective, rows)

        def loss_fn(params):
            sums = _lm_sums(graphdef, params, batch, deterministic=False, dropout_key=k_dropout)
            return sums["nll_sum"] / (sums["weight_sum"] + 1e-5), sums

        grads, sums = jax.grad(loss_fn, has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        sums = {**sums, "grad_norm": optax.tree.norm(grads), "steps": jnp.ones((), jnp.float32)}
        return state.replace(step=state.step + 1, params=params, opt_state=opt_state), sums

    return jax.jit(step, donate_argnums=0)


def make_eval_step(graphdef: nnx.GraphDef, objective: Callable[..., Batch], seed: int):
    """`eval_step(params, rows, index) -> sums` with fixed masks per held-out batch index, so
    evaluations at different steps score the same predictions."""
    base = stream_key(seed, EVAL_STREAM)

    def eval_step(params: nnx.State, rows: dict[str, jax.Array], index: jax.Array):
        batch = apply_objective(objective, jax.random.fold_in(base, index), rows)
        return _lm_sums(graphdef, params, batch, deterministic=True, dropout_key=None)

    return jax.jit(eval_step)
