"""Building blocks shared by every model family (Flax NNX, used functionally via split/merge).

Parameters carry logical axis names ("vocab", "embed", "heads", "mlp") in their `logical_axes`
metadata; one rules table maps them to mesh axes.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lm_jax.attention import AttentionMask, dot_product_attention
from lm_jax.models.config import TransformerConfig

_ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def _dense(
    cfg: TransformerConfig, n_in: int, n_out: int, axes: tuple[str, str], rngs: nnx.Rngs
) -> nnx.Linear:
    init = nnx.initializers.truncated_normal(stddev=cfg.initializer_range)
    return nnx.Linear(
        n_in,
        n_out,
        dtype=cfg.compute_dtype,
        param_dtype=jnp.float32,
        kernel_init=nnx.with_metadata(init, logical_axes=axes),
        bias_init=nnx.with_metadata(nnx.initializers.zeros_init(), logical_axes=axes[1:]),
        rngs=rngs,
    )


def _layer_norm(cfg: TransformerConfig, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(
        cfg.hidden_size,
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.compute_dtype,
        param_dtype=jnp.float32,
        scale_init=nnx.with_metadata(nnx.initializers.ones_init(), logical_axes=("embed",)),
        bias_init=nnx.with_metadata(nnx.initializers.zeros_init(), logical_axes=("embed",)),
        rngs=rngs,
    )


def _embed(cfg: TransformerConfig, rows: int, axes: tuple[str, str], rngs: nnx.Rngs) -> nnx.Embed:
    init = nnx.initializers.truncated_normal(stddev=cfg.initializer_range)
    return nnx.Embed(
        rows,
        cfg.hidden_size,
        dtype=cfg.compute_dtype,
        param_dtype=jnp.float32,
        embedding_init=nnx.with_metadata(init, logical_axes=axes),
        rngs=rngs,
    )


class Embeddings(nnx.Module):
    """Word + absolute position + token-type embeddings, then LayerNorm and dropout (BERT)."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.word = _embed(cfg, cfg.vocab_size, ("vocab", "embed"), rngs)
        self.position = _embed(cfg, cfg.max_position, (None, "embed"), rngs)
        self.token_type = _embed(cfg, cfg.type_vocab_size, (None, "embed"), rngs)
        self.layer_norm = _layer_norm(cfg, rngs)
        self.dropout = nnx.Dropout(cfg.dropout_rate)
        self.position_offset = cfg.position_offset

    def __call__(
        self, input_ids, positions, token_type_ids, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jnp.ndarray:
        positions = positions + self.position_offset
        x = self.word(input_ids) + self.position(positions) + self.token_type(token_type_ids)
        return self.dropout(self.layer_norm(x), deterministic=deterministic, rngs=rngs)

    def attend(self, x: jnp.ndarray) -> jnp.ndarray:
        """Logits over the vocabulary with the word embeddings as the (tied) output matrix."""
        return self.word.attend(x)


class SelfAttention(nnx.Module):
    """Multi-head attention through the shared kernel, under a compact `AttentionMask`."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        h = cfg.hidden_size
        self.cfg = cfg
        self.query = _dense(cfg, h, h, ("embed", "heads"), rngs)
        self.key = _dense(cfg, h, h, ("embed", "heads"), rngs)
        self.value = _dense(cfg, h, h, ("embed", "heads"), rngs)
        self.output = _dense(cfg, h, h, ("heads", "embed"), rngs)

    def __call__(self, x: jnp.ndarray, mask: AttentionMask) -> jnp.ndarray:
        split = lambda t: t.reshape(*t.shape[:-1], self.cfg.num_heads, self.cfg.head_dim)
        out = dot_product_attention(
            split(self.query(x)),
            split(self.key(x)),
            split(self.value(x)),
            mask,
            implementation=self.cfg.attention_implementation,
        )
        return self.output(out.reshape(*out.shape[:-2], -1))


class FeedForward(nnx.Module):
    """Position-wise feed-forward block: dense, activation, dense."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.intermediate = _dense(
            cfg, cfg.hidden_size, cfg.intermediate_size, ("embed", "mlp"), rngs
        )
        self.output = _dense(cfg, cfg.intermediate_size, cfg.hidden_size, ("mlp", "embed"), rngs)
        self.activation = _ACTIVATIONS[cfg.activation]

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        return self.output(self.activation(self.intermediate(x)))


class EncoderLayer(nnx.Module):
    """Post-LayerNorm Transformer layer as in BERT: x = LN(x + Drop(Attn(x))), then the FFN."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.attention = SelfAttention(cfg, rngs=rngs)
        self.attention_norm = _layer_norm(cfg, rngs)
        self.feed_forward = FeedForward(cfg, rngs=rngs)
        self.output_norm = _layer_norm(cfg, rngs)
        self.dropout = nnx.Dropout(cfg.dropout_rate)

    def __call__(
        self, x: jnp.ndarray, mask: AttentionMask, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jnp.ndarray:
        drop = lambda y: self.dropout(y, deterministic=deterministic, rngs=rngs)
        x = self.attention_norm(x + drop(self.attention(x, mask)))
        return self.output_norm(x + drop(self.feed_forward(x)))
