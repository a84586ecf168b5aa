"""Output heads on top of an encoder."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lm_jax.models.config import TransformerConfig
from lm_jax.models.layers import _ACTIVATIONS, Embeddings, _dense, _layer_norm


def gather_positions(hidden: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    """hidden [B, L, H] at positions [B, P] -> [B, P, H]."""
    return jnp.take_along_axis(hidden, positions[..., None], axis=-2)


class MaskedLMHead(nnx.Module):
    """BERT's MLM head: dense + activation + LayerNorm, then the decoder tied to the word
    embeddings plus a per-token bias. Applied to the gathered masked positions only, so the
    vocabulary projection costs 15% of a full-sequence decoder."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.transform = _dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", "embed"), rngs)
        self.layer_norm = _layer_norm(cfg, rngs)
        self.bias = nnx.Param(jnp.zeros((cfg.vocab_size,), jnp.float32), logical_axes=("vocab",))
        self.activation = _ACTIVATIONS[cfg.activation]

    def __call__(self, hidden: jnp.ndarray, embeddings: Embeddings) -> jnp.ndarray:
        h = self.layer_norm(self.activation(self.transform(hidden)))
        return embeddings.attend(h).astype(jnp.float32) + self.bias[...]
