"""Output heads on top of an encoder's hidden states [batch, L, hidden]."""

from __future__ import annotations

import jax.numpy as jnp
from flax import nnx

from lm_jax.attention import AttentionMask
from lm_jax.models.config import TransformerConfig
from lm_jax.models.layers import (
    ACTIVATIONS,
    Embeddings,
    dense,
    embed,
    layer_norm,
)


def last_real_token(hidden: jnp.ndarray, attention: AttentionMask) -> jnp.ndarray:
    """[B, D]: each right-padded row's state at its last real token (XLNet's <cls>, BART's
    final </s>)."""
    last = jnp.sum(attention.kv_segment_ids != 0, axis=-1) - 1
    return jnp.take_along_axis(hidden, last[..., None, None], axis=-2)[..., 0, :]


def gather_positions(hidden: jnp.ndarray, positions: jnp.ndarray) -> jnp.ndarray:
    """hidden [B, L, H] at positions [B, P] -> [B, P, H]."""
    return jnp.take_along_axis(hidden, positions[..., None], axis=-2)


class MaskedLMHead(nnx.Module):
    """BERT's MLM head: dense + activation + LayerNorm, then the decoder tied to the word
    embeddings plus a per-token bias. Applied to the gathered masked positions only, so the
    vocabulary projection costs 15% of a full-sequence decoder.

    The transform maps hidden_size to the embedding width (ELECTRA's generator, whose embeddings
    are narrower); `activation` overrides the config's (ELECTRA's generator head is always GeLU).
    """

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs, activation: str | None = None):
        width = cfg.embedding_width
        self.transform = dense(cfg, cfg.hidden_size, width, ("embed", "embed"), rngs)
        self.layer_norm = layer_norm(cfg, rngs, width)
        self.bias = nnx.Param(jnp.zeros((cfg.vocab_size,), jnp.float32), logical_axes=("vocab",))
        self.activation = ACTIVATIONS[activation or cfg.activation]

    def __call__(self, hidden: jnp.ndarray, embeddings: Embeddings) -> jnp.ndarray:
        h = self.layer_norm(self.activation(self.transform(hidden)))
        return embeddings.attend(h, self.bias[...])


class SpanBoundaryHead(nnx.Module):
    """SpanBERT's span-boundary objective (Joshi et al. 2020, eq. 1-2): each masked token of a
    span s..e is predicted from the boundary states x_{s-1}, x_{e+1} and a learned embedding of
    its offset in the span, through a 2-layer GeLU MLP with LayerNorm, then the decoder tied to
    the word embeddings (sizes as in the authors' `BertPairTargetPredictionHead`)."""

    def __init__(
        self,
        cfg: TransformerConfig,
        *,
        max_offsets: int = 15,
        offset_size: int = 200,
        rngs: nnx.Rngs,
    ):
        h = cfg.hidden_size
        self.offsets = embed(cfg, max_offsets, (None, None), rngs, offset_size)
        self.layer1 = dense(cfg, 2 * h + offset_size, h, (None, "embed"), rngs)
        self.norm1 = layer_norm(cfg, rngs)
        self.layer2 = dense(cfg, h, cfg.embedding_width, ("embed", "embed"), rngs)
        self.norm2 = layer_norm(cfg, rngs, cfg.embedding_width)
        self.bias = nnx.Param(jnp.zeros((cfg.vocab_size,), jnp.float32), logical_axes=("vocab",))
        self.activation = ACTIVATIONS["gelu"]
        self.max_offsets = max_offsets

    def __call__(
        self,
        hidden: jnp.ndarray,
        left: jnp.ndarray,
        right: jnp.ndarray,
        offsets: jnp.ndarray,
        embeddings: Embeddings,
    ) -> jnp.ndarray:
        """Logits [B, P, vocab] for boundary indices `left`, `right` and span offsets [B, P]
        (offsets are clipped into the table; their loss weight is 0 past `max_offsets`)."""
        offsets = jnp.clip(offsets, 0, self.max_offsets - 1)
        x = jnp.concatenate(
            [
                gather_positions(hidden, left),
                gather_positions(hidden, right),
                self.offsets(offsets).astype(hidden.dtype),
            ],
            axis=-1,
        )
        x = self.norm1(self.activation(self.layer1(x)))
        x = self.norm2(self.activation(self.layer2(x)))
        return embeddings.attend(x, self.bias[...])


class ReplacedTokenHead(nnx.Module):
    """ELECTRA's discriminator head (Clark et al. 2020): dense + activation + dense to one
    logit per token, "replaced" when positive."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.dense = dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", "embed"), rngs)
        self.prediction = dense(cfg, cfg.hidden_size, 1, ("embed", None), rngs)
        self.activation = ACTIVATIONS[cfg.activation]

    def __call__(self, hidden: jnp.ndarray) -> jnp.ndarray:
        """fp32 logits [B, L]."""
        return self.prediction(self.activation(self.dense(hidden)))[..., 0].astype(jnp.float32)


class SequenceClassificationHead(nnx.Module):
    """BERT's pooler (dense + tanh on the first token, [CLS]) then dropout and a linear
    classifier: next-sentence prediction and sentence order (2 classes), StructBERT's sentence
    structure (3), sequence classification (`num_labels`) and regression (`num_labels=1`)."""

    def __init__(self, cfg: TransformerConfig, num_labels: int, *, rngs: nnx.Rngs):
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.pooler = dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", "embed"), rngs)
        self.dropout = nnx.Dropout(cfg.dropout_rate)
        self.classifier = dense(cfg, cfg.hidden_size, num_labels, ("embed", None), rngs)

    def __call__(
        self, hidden: jnp.ndarray, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> jnp.ndarray:
        """fp32 logits [B, num_labels] from hidden [B, L, H] (first token pooled)."""
        pooled = jnp.tanh(self.pooler(hidden[..., 0, :]))
        pooled = self.dropout(pooled, deterministic=deterministic, rngs=rngs)
        return self.classifier(pooled).astype(jnp.float32)


class FirstTokenClassificationHead(nnx.Module):
    """The first token's state through dropout, dense + activation, dropout and a linear
    classifier: RoBERTa's and MPNet's `ClassificationHead` (tanh; Liu et al. 2019) and
    ELECTRA's (GeLU; Clark et al. 2020), which have no pretrained pooler."""

    def __init__(self, cfg: TransformerConfig, num_labels: int, activation: str, *, rngs: nnx.Rngs):
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.dense = dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", "embed"), rngs)
        self.dropout = nnx.Dropout(cfg.dropout_rate)
        self.out_proj = dense(cfg, cfg.hidden_size, num_labels, ("embed", None), rngs)
        self.activation = jnp.tanh if activation == "tanh" else ACTIVATIONS[activation]

    def __call__(
        self, hidden: jnp.ndarray, *, deterministic: bool = True, rngs: nnx.Rngs | None = None
    ) -> jnp.ndarray:
        """fp32 logits [B, num_labels] from hidden [B, L, H] (first token)."""
        x = self.dropout(hidden[..., 0, :], deterministic=deterministic, rngs=rngs)
        x = self.activation(self.dense(x))
        x = self.dropout(x, deterministic=deterministic, rngs=rngs)
        return self.out_proj(x).astype(jnp.float32)


class QuestionAnsweringHead(nnx.Module):
    """Extractive QA (BERT on SQuAD, Devlin et al. 2019): start and end logits per token. For
    SQuAD 2.0 the no-answer prediction is the span (0, 0) at [CLS], so no extra parameters."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.output = dense(cfg, cfg.hidden_size, 2, ("embed", None), rngs)

    def __call__(self, hidden: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
        """fp32 (start logits, end logits), each [B, L]."""
        logits = self.output(hidden).astype(jnp.float32)
        return logits[..., 0], logits[..., 1]
