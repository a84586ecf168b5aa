"""Bidirectional Transformer encoder (BERT, RoBERTa) and its masked-LM pretraining model."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lm_jax.attention import AttentionMask
from lm_jax.models.config import TransformerConfig
from lm_jax.models.heads import MaskedLMHead, gather_positions
from lm_jax.models.layers import Embeddings, EncoderLayer
from lm_jax.objectives.batch import Batch


class Encoder(nnx.Module):
    """Embeddings followed by `num_layers` post-LN Transformer layers (Devlin et al. 2019)."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.cfg = cfg
        self.embeddings = Embeddings(cfg, rngs=rngs)
        self.layers = nnx.List([EncoderLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        mask: AttentionMask,
        token_type_ids: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """Hidden states [batch, L, hidden] for ids, positions and a compact attention mask."""
        if token_type_ids is None:
            token_type_ids = jnp.zeros_like(input_ids)
        x = self.embeddings(
            input_ids, positions, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        for layer in self.layers:
            x = self._apply_layer(layer, x, mask, deterministic, rngs)
        return x

    def _apply_layer(self, layer, x, mask, deterministic, rngs):
        def run(layer, x, mask, rngs):
            return layer(x, mask, deterministic=deterministic, rngs=rngs)

        if self.cfg.remat:
            run = nnx.remat(run)
        return run(layer, x, mask, rngs)


class EncoderForMaskedLM(nnx.Module):
    """Encoder + tied LM head. With a sparse layout (masked LM) the head scores only
    `batch.masked_positions`; without one (causal / prefix LM) it scores every position."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.encoder = Encoder(cfg, rngs=rngs)
        self.mlm_head = MaskedLMHead(cfg, rngs=rngs)

    def __call__(
        self,
        batch: Batch,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """fp32 logits [batch, max_predictions or L, vocab]."""
        hidden = self.encoder(
            batch.inputs,
            batch.positions,
            batch.attention,
            batch.token_type_ids,
            deterministic=deterministic,
            rngs=rngs,
        )
        if batch.masked_positions is not None:
            hidden = gather_positions(hidden, batch.masked_positions)
        return self.mlm_head(hidden, self.encoder.embeddings)
