"""Pretraining objectives as pure, jittable mask-generation functions.

Every objective is called as `fn(key, tokens, *, vocab, **options)` and returns a `Batch`
whose `attention` field is the compact mask the shared attention kernel consumes.

    >>> import jax, lm_jax.objectives as obj
    >>> obj.names()
    ['mlm']
    >>> batch = obj.get("mlm")(jax.random.key(0), tokens, vocab=tokenizer.vocab)
    >>> obj.dense_attention_mask(batch)  # bool [batch, L, L]
"""

import jax.numpy as jnp

from lm_jax.objectives.batch import Batch
from lm_jax.objectives.masked_lm import mlm
from lm_jax.objectives.registry import get, names


def dense_attention_mask(batch: Batch) -> jnp.ndarray:
    """Expand a batch's compact attention description to a boolean [..., q_len, k_len] mask."""
    return batch.attention.dense()


__all__ = ["Batch", "dense_attention_mask", "get", "mlm", "names"]
