"""The one attention entry point shared by every model and objective."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lm_jax.attention.mask import AttentionMask

IMPLEMENTATIONS = ("xla",)


def dot_product_attention(
    query: jnp.ndarray,
    key: jnp.ndarray,
    value: jnp.ndarray,
    mask: AttentionMask,
    *,
    implementation: str = "xla",
) -> jnp.ndarray:
    """Scaled dot-product attention (Vaswani et al. 2017) under a compact `AttentionMask`.

    Args:
      query: [batch, q_len, heads, head_dim].
      key, value: [batch, kv_len, heads, head_dim]; kv_len may differ from q_len.
      mask: the compact mask description; rows with no visible key return zeros.
      implementation: "xla", the reference: dense boolean mask, fp32 logits and softmax.

    Returns:
      [batch, q_len, heads, head_dim] in the query's dtype.
    """
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attention implementation {implementation!r}; choose from {IMPLEMENTATIONS}"
        )
    allowed = mask.dense()[:, None, :, :]  # [batch, 1, q, kv], broadcast over heads
    scale = query.shape[-1] ** -0.5
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32) * scale
    logits = jnp.where(allowed, logits, jnp.finfo(jnp.float32).min)
    weights = jax.nn.softmax(logits, axis=-1)
    weights = jnp.where(allowed.any(axis=-1, keepdims=True), weights, 0.0)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)
    return out.astype(query.dtype)
