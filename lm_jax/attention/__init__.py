"""The shared attention kernel and the compact mask description it consumes."""

from lm_jax.attention.kernel import IMPLEMENTATIONS, dot_product_attention
from lm_jax.attention.mask import AttentionMask

__all__ = ["AttentionMask", "dot_product_attention", "IMPLEMENTATIONS"]
