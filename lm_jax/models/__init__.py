"""Model families built on the shared attention kernel (Flax NNX, used functionally)."""

from lm_jax.models.config import TransformerConfig
from lm_jax.models.encoder import Encoder, EncoderForMaskedLM

__all__ = ["Encoder", "EncoderForMaskedLM", "TransformerConfig"]
