"""Optimiser and learning-rate schedule (optax)."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import optax

OPTIMIZERS = ("adamw", "lamb", "adafactor")
DECAYS = ("linear", "cosine", "rsqrt")


def learning_rate_schedule(
    peak: float, warmup_steps: int, total_steps: int, decay: str = "linear"
) -> optax.Schedule:
    """Linear warmup from 0 to `peak`, then linear (BERT) or cosine (GPT) decay to 0 at
    `total_steps`, or inverse-square-root decay peak * sqrt(warmup / step) (Vaswani et al. 2017;
    T5's 1 / sqrt(max(step, 10^4)) without its constant first 10^4 steps)."""
    decay_steps = max(1, total_steps - warmup_steps)
    if decay == "linear":
        after = optax.linear_schedule(peak, 0.0, decay_steps)
    elif decay == "cosine":
        after = optax.cosine_decay_schedule(peak, decay_steps)
    elif decay == "rsqrt":
        start = max(1, warmup_steps)
        after = lambda step: peak * jnp.sqrt(start / (jnp.maximum(step, 0) + start))
    else:
        raise ValueError(f"decay must be one of {list(DECAYS)}, got {decay!r}")
    warmup = optax.linear_schedule(0.0, peak, max(1, warmup_steps))
    return optax.join_schedules([warmup, after], [warmup_steps])


def decay_mask(params):
    """Weight decay on matrices only: biases and LayerNorm parameters are exempt (as in BERT)."""
    return jax.tree.map(lambda p: p.ndim >= 2, params)


def scale_updates(factors) -> optax.GradientTransformation:
    """Multiply each parameter's update by its factor (a pytree like the parameters): per-layer
    learning rates, e.g. layer-wise decay (`lm_jax.finetune`)."""
    return optax.GradientTransformation(
        lambda params: optax.EmptyState(),
        lambda updates, state, params=None: (jax.tree.map(jnp.multiply, updates, factors), state),
    )


class AverageState(NamedTuple):
    """The running average of the weights after `count` updates (zero-initialised)."""

    count: jax.Array
    average: optax.Params


def weight_average(decay: float) -> optax.GradientTransformation:
    """Temporal averaging (Polyak & Juditsky 1992; the "TA" of Adhikari et al. 2019's
    LSTM_reg): after each update, average <- decay x average + (1 - decay) x the new weights.
    Updates pass through unchanged; `averaged_params` reads the debiased average. (The
    authors' hedwig code starts the average at the initial weights and still divides by
    1 - decay^t; starting from zero makes that division the exact debiasing.)"""

    def init(params):
        zeros = jax.tree.map(jnp.zeros_like, params)
        return AverageState(jnp.zeros((), jnp.int32), zeros)

    def update(updates, state, params=None):
        new = optax.apply_updates(params, updates)
        average = jax.tree.map(lambda a, p: decay * a + (1 - decay) * p, state.average, new)
        return updates, AverageState(state.count + 1, average)

    return optax.GradientTransformation(init, update)


def averaged_params(opt_state, decay: float) -> optax.Params | None:
    """The debiased weight average in `opt_state` (average / (1 - decay^count)), or None
    when the optimiser does not average or has not updated yet."""
    found = [
        s
        for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, AverageState))
        if isinstance(s, AverageState)
    ]
    if not found or int(found[0].count) == 0:
        return None
    scale = 1.0 / (1.0 - decay ** int(found[0].count))
    return jax.tree.map(lambda a: a * scale, found[0].average)


def make_optimizer(
    train_cfg, update_factors=None
) -> tuple[optax.GradientTransformation, optax.Schedule]:
    """The optimiser and its learning-rate schedule (for logging): AdamW (Loshchilov & Hutter
    2019), LAMB (You et al. 2020) or Adafactor (Shazeer & Stern 2018, T5's; factored second
    moments, no momentum, b1/b2/eps unused), with warmup + decay, global-norm clipping, no
    weight decay on biases and LayerNorm parameters, and gradient accumulation over
    `grad_accumulation` micro-batches (`optax.MultiSteps`: gradients averaged, one update per
    k steps; the schedule counts updates, steps // k of them). The decay runs over
    `decay_steps` (0: `steps`), after which the rate stays at its end value. `update_factors`
    (a pytree like the parameters) scales each parameter's learning rate; `ema_decay` > 0
    keeps a temporal average of the weights (`weight_average`)."""
    k = train_cfg.grad_accumulation
    horizon = train_cfg.decay_steps or train_cfg.steps  # where linear / cosine reach 0
    schedule = learning_rate_schedule(
        train_cfg.learning_rate,
        train_cfg.warmup_steps // k,
        max(1, horizon // k),
        train_cfg.decay,
    )
    if train_cfg.optimizer == "adafactor":
        tx = optax.adafactor(
            schedule, weight_decay_rate=train_cfg.weight_decay or None, weight_decay_mask=decay_mask
        )
    else:
        make = {"adamw": optax.adamw, "lamb": optax.lamb}[train_cfg.optimizer]
        tx = make(
            schedule,
            b1=train_cfg.b1,
            b2=train_cfg.b2,
            eps=train_cfg.eps,
            weight_decay=train_cfg.weight_decay,
            mask=decay_mask,
        )
    if update_factors is not None:
        tx = optax.chain(tx, scale_updates(update_factors))
    if train_cfg.clip_norm > 0:
        tx = optax.chain(optax.clip_by_global_norm(train_cfg.clip_norm), tx)
    if train_cfg.get("ema_decay", 0.0) > 0:
        tx = optax.chain(tx, weight_average(train_cfg.ema_decay))
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k)
        return tx, lambda step: schedule(step // k)
    return tx, schedule
