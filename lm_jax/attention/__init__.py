"""The shared attention kernel and the compact mask description it consumes."""

from lm_jax.attention.kernel import (
    IMPLEMENTATIONS,
    choose_implementation,
    dot_product_attention,
    two_stream_attention,
)
from lm_jax.attention.mask import AttentionMask

__all__ = [
    "AttentionMask",
    "IMPLEMENTATIONS",
    "choose_implementation",
    "dot_product_attention",
    "two_stream_attention",
]
