"""Model hyper-parameters."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

ACTIVATIONS = ("gelu", "gelu_tanh", "relu")
DTYPES = ("auto", "float32", "bfloat16")


@dataclasses.dataclass(frozen=True)
class TransformerConfig:
    """A Transformer encoder's shape (BERT naming, Devlin et al. 2019; defaults are BERT-base).

    Attributes:
      vocab_size: embedding rows (the tokenizer's `vocab.size`).
      hidden_size, num_layers, num_heads, intermediate_size: the usual widths and depth.
      max_position: learned absolute positions available (rows of the table).
      position_offset: added to position ids before the lookup (RoBERTa's table starts at
        padding_idx + 1 = 2).
      type_vocab_size: token-type (sentence A/B) embeddings (0: none, as in RoBERTa-style
        models that never use them, e.g. MPNet).
      embedding_size: width of the embeddings when it differs from hidden_size (ELECTRA's small
        generator shares the discriminator's embeddings and projects them up; ALBERT-style
        factorisation). None: hidden_size.
      relative_attention_buckets: > 0 adds a learned per-head bias over bucketed relative
        positions, computed once and shared by all layers (MPNet; T5-style buckets, Song et al.
        2020). 0: absolute positions only (BERT).
      relative_attention_max_distance: distances beyond this share the last bucket.
      dropout_rate: hidden dropout (attention-probability dropout is left out, as in
        MosaicBERT and ModernBERT: no fused attention kernel supports it).
      layer_norm_eps: LayerNorm epsilon (1e-12 in BERT).
      initializer_range: std of the truncated-normal initialiser.
      activation: feed-forward activation ("gelu" is BERT's exact erf GeLU).
      dtype: compute dtype: "float32", "bfloat16", or "auto" (bf16 on GPU/TPU, fp32 on CPU);
        parameters stay fp32 and logits are fp32 either way.
      attention_implementation: passed to `lm_jax.attention.dot_product_attention` (None: the
        automatic choice per backend and sequence length).
      pad_token_id: the id whose word-embedding lookup passes no gradient, as PyTorch's
        `nn.Embedding(padding_idx=...)` in Hugging Face models (it matters where padding
        positions reach the loss: Hugging Face's span loss). None: every id trains.
      remat: recompute each layer's activations in the backward pass instead of storing them
        (`nnx.remat`, i.e. `jax.checkpoint`): less memory, about one more forward pass of FLOPs.
    """

    vocab_size: int
    hidden_size: int = 768
    num_layers: int = 12
    num_heads: int = 12
    intermediate_size: int = 3072
    max_position: int = 512
    position_offset: int = 0
    type_vocab_size: int = 2
    embedding_size: int | None = None
    relative_attention_buckets: int = 0
    relative_attention_max_distance: int = 128
    dropout_rate: float = 0.1
    layer_norm_eps: float = 1e-12
    initializer_range: float = 0.02
    activation: str = "gelu"
    dtype: str = "auto"
    attention_implementation: str | None = None
    pad_token_id: int | None = None
    remat: bool = False

    def __post_init__(self):
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        for name in (
            "vocab_size",
            "hidden_size",
            "num_layers",
            "num_heads",
            "intermediate_size",
            "max_position",
        ):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        for name in ("type_vocab_size", "relative_attention_buckets"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must be >= 0, got {getattr(self, name)}")
        if self.embedding_size is not None and self.embedding_size < 1:
            raise ValueError(f"embedding_size must be >= 1 or None, got {self.embedding_size}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if not 0.0 <= self.dropout_rate < 1.0:
            raise ValueError(f"dropout_rate must be in [0, 1), got {self.dropout_rate}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def embedding_width(self) -> int:
        return self.hidden_size if self.embedding_size is None else self.embedding_size

    @property
    def compute_dtype(self) -> jnp.dtype:
        if self.dtype == "auto":
            return jnp.dtype(jnp.float32 if jax.default_backend() == "cpu" else jnp.bfloat16)
        return jnp.dtype(self.dtype)
