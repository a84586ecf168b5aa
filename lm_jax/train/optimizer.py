"""Optimiser and learning-rate schedule (optax)."""

from __future__ import annotations

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
    (a pytree like the parameters) scales each parameter's learning rate."""
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
    if k > 1:
        tx = optax.MultiSteps(tx, every_k_schedule=k)
        return tx, lambda step: schedule(step // k)
    return tx, schedule
