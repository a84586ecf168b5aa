"""ELECTRA (Clark et al. 2020): a small masked-LM generator and a discriminator that detects
the tokens the generator replaced, sharing one embedding module."""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx

from lm_jax.attention import AttentionMask
from lm_jax.models.config import TransformerConfig
from lm_jax.models.encoder import Encoder, EncoderForMaskedLM
from lm_jax.models.heads import ReplacedTokenHead


def generator_config(
    discriminator: TransformerConfig, size_fraction: float = 0.25
) -> TransformerConfig:
    """The generator's shape from the discriminator's: hidden, heads and intermediate sizes
    scaled by `size_fraction` (the paper's Table 6: 1/4 for Small and Large, 1/3 for Base), same
    depth and embedding width."""
    scale = lambda n: max(1, int(n * size_fraction))
    heads = scale(discriminator.num_heads)
    return dataclasses.replace(
        discriminator,
        hidden_size=heads * discriminator.head_dim,
        num_heads=heads,
        intermediate_size=scale(discriminator.intermediate_size),
        embedding_size=discriminator.embedding_width,
    )


class ElectraDiscriminator(nnx.Module):
    """The discriminator: an encoder and the replaced-token-detection head."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.encoder = Encoder(cfg, rngs=rngs)
        self.rtd_head = ReplacedTokenHead(cfg, rngs=rngs)

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """fp32 logits [batch, L]; positive means "replaced". Token types (sentence A/B) are
        embedded as in Hugging Face's `ElectraModel`."""
        hidden = self.encoder(
            input_ids, positions, attention, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        return self.rtd_head(hidden)


class Electra(nnx.Module):
    """The generator (`EncoderForMaskedLM` with a GeLU head) and the discriminator, with
    shared token, position and type embeddings (the paper's sec. 3.2 "weight sharing"): the
    generator's `encoder.embeddings` *is* the discriminator's, one set of parameters updated by
    both losses. Embedding widths must match; hidden sizes may differ (each encoder projects the
    embeddings to its own width when needed). The replacements between the two are sampled by
    the objective (`lm_jax.objectives.electra_replace`), not by the model."""

    def __init__(
        self,
        discriminator: TransformerConfig,
        generator: TransformerConfig | None = None,
        *,
        rngs: nnx.Rngs,
    ):
        generator = generator_config(discriminator) if generator is None else generator
        if generator.embedding_width != discriminator.embedding_width:
            raise ValueError(
                f"shared embeddings need equal widths: generator {generator.embedding_width}, "
                f"discriminator {discriminator.embedding_width}"
            )
        if generator.vocab_size != discriminator.vocab_size:
            raise ValueError("generator and discriminator vocab sizes differ")
        self.discriminator = ElectraDiscriminator(discriminator, rngs=rngs)
        self.generator = EncoderForMaskedLM(generator, head_activation="gelu", rngs=rngs)
        self.generator.encoder.embeddings = self.discriminator.encoder.embeddings
