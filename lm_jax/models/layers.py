"""Building blocks shared by every model family (Flax NNX, used functionally via split/merge).

Parameters carry logical axis names ("vocab", "embed", "heads", "mlp") in their `logical_axes`
metadata; one rules table maps them to mesh axes.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from flax import nnx, struct

from lm_jax.attention import AttentionMask, dot_product_attention
from lm_jax.models.config import TransformerConfig
from lm_jax.sharding import constrain

HIDDEN_AXES = ("batch", "length", "embed")  # logical axes of the residual stream

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),
    "gelu_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
}


def dense(
    cfg: TransformerConfig,
    n_in: int,
    n_out: int,
    axes: tuple[str | None, str | None],
    rngs: nnx.Rngs,
    *,
    use_bias: bool = True,
    stddev: float | None = None,
) -> nnx.Linear:
    """A Linear layer with the config's dtype policy, truncated-normal init and logical axes."""
    init = nnx.initializers.truncated_normal(
        stddev=cfg.initializer_range if stddev is None else stddev
    )
    return nnx.Linear(
        n_in,
        n_out,
        use_bias=use_bias,
        dtype=cfg.compute_dtype,
        param_dtype=jnp.float32,
        kernel_init=nnx.with_metadata(init, logical_axes=axes),
        bias_init=nnx.with_metadata(nnx.initializers.zeros_init(), logical_axes=axes[1:]),
        rngs=rngs,
    )


def layer_runner(cfg: TransformerConfig, call):
    """`call(layer, *inputs)`, recomputed in the backward pass when `cfg.remat` (`nnx.remat`,
    i.e. `jax.checkpoint`: each layer's activations are not stored). Every family runs its
    layers through this, so `remat` means the same everywhere."""
    return nnx.remat(call) if cfg.remat else call


def rms_norm(cfg: TransformerConfig, rngs: nnx.Rngs) -> nnx.RMSNorm:
    """RMSNorm (scale only, no mean subtraction), T5's "layer norm"."""
    return nnx.RMSNorm(
        cfg.hidden_size,
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.compute_dtype,
        param_dtype=jnp.float32,
        scale_init=nnx.with_metadata(nnx.initializers.ones_init(), logical_axes=("embed",)),
        rngs=rngs,
    )


def layer_norm(cfg: TransformerConfig, rngs: nnx.Rngs, size: int | None = None) -> nnx.LayerNorm:
    """LayerNorm over `size` features (default hidden_size) with the config's epsilon."""
    return nnx.LayerNorm(
        cfg.hidden_size if size is None else size,
        epsilon=cfg.layer_norm_eps,
        dtype=cfg.compute_dtype,
        param_dtype=jnp.float32,
        scale_init=nnx.with_metadata(nnx.initializers.ones_init(), logical_axes=("embed",)),
        bias_init=nnx.with_metadata(nnx.initializers.zeros_init(), logical_axes=("embed",)),
        rngs=rngs,
    )


def embed(
    cfg: TransformerConfig,
    rows: int,
    axes: tuple[str | None, str | None],
    rngs: nnx.Rngs,
    features: int | None = None,
) -> nnx.Embed:
    """An embedding table of `rows` x `features` (default hidden_size)."""
    init = nnx.initializers.truncated_normal(stddev=cfg.initializer_range)
    return nnx.Embed(
        rows,
        cfg.hidden_size if features is None else features,
        dtype=cfg.compute_dtype,
        param_dtype=jnp.float32,
        embedding_init=nnx.with_metadata(init, logical_axes=axes),
        rngs=rngs,
    )


def freeze_padding_row(embedded, input_ids, pad_id: int | None) -> jnp.ndarray:
    """Embeddings whose padding tokens pass no gradient to their row (torch's
    `nn.Embedding(padding_idx)`, as Hugging Face's models build it); unchanged for None."""
    if pad_id is None:
        return embedded
    frozen = (input_ids == pad_id)[..., None]
    return jnp.where(frozen, jax.lax.stop_gradient(embedded), embedded)


class Embeddings(nnx.Module):
    """Word + absolute position + token-type embeddings, then LayerNorm and dropout (BERT), all
    `cfg.embedding_width` wide (the encoder projects them to hidden_size when it differs)."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        width = cfg.embedding_width
        self.word = embed(cfg, cfg.vocab_size, ("vocab", "embed"), rngs, width)
        self.position = embed(cfg, cfg.max_position, (None, "embed"), rngs, width)
        self.token_type = (
            embed(cfg, cfg.type_vocab_size, (None, "embed"), rngs, width)
            if cfg.type_vocab_size
            else None
        )
        self.layer_norm = layer_norm(cfg, rngs, width)
        self.dropout = nnx.Dropout(cfg.dropout_rate)
        self.position_offset = cfg.position_offset
        self.pad_token_id = cfg.pad_token_id

    def __call__(
        self, input_ids, positions, token_type_ids, *, deterministic: bool, rngs: nnx.Rngs | None
    ) -> jnp.ndarray:
        word = freeze_padding_row(self.word(input_ids), input_ids, self.pad_token_id)
        x = word + self.position(positions + self.position_offset)
        if self.token_type is not None:
            x = x + self.token_type(token_type_ids)
        return self.dropout(self.layer_norm(x), deterministic=deterministic, rngs=rngs)

    def attend(self, x: jnp.ndarray, bias: jnp.ndarray | None = None) -> jnp.ndarray:
        """fp32 logits over the vocabulary with the word embeddings as the (tied) output
        matrix (`vocabulary_logits`)."""
        return vocabulary_logits(x, self.word, bias)


def vocabulary_logits(
    x: jnp.ndarray, word: nnx.Embed, bias: jnp.ndarray | None = None
) -> jnp.ndarray:
    """fp32 logits [..., vocab] of hidden states x [..., width] with the word embedding table
    as the tied output matrix (Press & Wolf 2017; BERT, XLNet, BART, T5), plus a bias per
    vocabulary entry when given. x and the table are cast to `word`'s compute dtype (without
    one, to their common dtype, as `nnx.Embed.attend` does); the product accumulates in fp32."""
    table = word.embedding[...]
    dtype = word.dtype or jnp.result_type(x, table)
    return _tied_logits(x.astype(dtype), table.astype(dtype), bias)


@jax.custom_vjp
def _tied_logits(x: jnp.ndarray, table: jnp.ndarray, bias: jnp.ndarray | None) -> jnp.ndarray:
    """`x @ table.T (+ bias)` with the values and (up to float rounding) the gradients of
    autodiff's, but two of the gradients formed as XLA's CPU backend runs them fastest: the
    table's as the transpose of x^T g (for autodiff's g^T x it first copies the [tokens, vocab]
    logits gradient, 78 MB in the BERT-small MLM step of benchmarks/train_step.py, into
    vocab-major order), the bias's as a product with a vector of ones (a column reduction over
    the tokens runs 25x slower there: about 100 ms against 4 ms). On accelerators both forms
    cost the same."""
    logits = jnp.dot(x, table.T, preferred_element_type=jnp.float32)
    return logits if bias is None else logits + bias


def _tied_logits_fwd(x, table, bias):
    return _tied_logits(x, table, bias), (x, table, bias)


def _tied_logits_bwd(residuals, grad):
    x, table, bias = residuals
    rows, grad_rows = x.reshape(-1, x.shape[-1]), grad.reshape(-1, grad.shape[-1])
    cast = grad_rows.astype(x.dtype)
    dx = (cast @ table).reshape(x.shape)
    dtable = (rows.T @ cast).T
    dbias = jnp.ones(rows.shape[0], grad.dtype) @ grad_rows if bias is not None else None
    return dx, dtable, dbias


_tied_logits.defvjp(_tied_logits_fwd, _tied_logits_bwd)


@struct.dataclass
class KVCache:
    """One attention layer's keys and values [batch, slots, heads, head_dim]: a decoder's
    preallocated self-attention cache (filled slot by slot) or its cross-attention's projected
    encoder states. Which slots a query may read is the `AttentionMask`'s business: the cache
    is just more keys."""

    key: jnp.ndarray
    value: jnp.ndarray

    def write(self, key: jnp.ndarray, value: jnp.ndarray, index) -> "KVCache":
        """The cache with rows [index, index + new) replaced by `key`, `value` [batch, new, ...]."""
        put = lambda cache, new: jax.lax.dynamic_update_slice_in_dim(
            cache, new.astype(cache.dtype), index, axis=1
        )
        return KVCache(put(self.key, key), put(self.value, value))


def empty_caches(cfg: TransformerConfig, layers: int, batch: int, slots: int) -> list[KVCache]:
    """`layers` zero-filled self-attention caches of `slots` keys in the compute dtype."""
    shape = (batch, slots, cfg.num_heads, cfg.head_dim)
    zeros = lambda: jnp.zeros(shape, cfg.compute_dtype)
    return [KVCache(zeros(), zeros()) for _ in range(layers)]


class MultiHeadAttention(nnx.Module):
    """Multi-head attention through the shared kernel, under a compact `AttentionMask`.

    Self-attention takes keys and values from the first `mask.kv_len` rows of x: all of them,
    or the content rows when query-stream rows follow (two-stream attention as one kernel
    call). Cross-attention (encoder-decoder) takes them from `context`. Incremental decoding
    (`extend`) writes the new rows' keys and values into a `KVCache` and attends over it.
    """

    def __init__(
        self,
        cfg: TransformerConfig,
        *,
        use_bias: bool = True,
        scale: float | None = None,
        rngs: nnx.Rngs,
    ):
        h = cfg.hidden_size
        self.cfg = cfg
        self.scale = scale
        self.query = dense(cfg, h, h, ("embed", "heads"), rngs, use_bias=use_bias)
        self.key = dense(cfg, h, h, ("embed", "heads"), rngs, use_bias=use_bias)
        self.value = dense(cfg, h, h, ("embed", "heads"), rngs, use_bias=use_bias)
        self.output = dense(cfg, h, h, ("heads", "embed"), rngs, use_bias=use_bias)

    def _split(self, t: jnp.ndarray) -> jnp.ndarray:
        return constrain(
            t.reshape(*t.shape[:-1], self.cfg.num_heads, self.cfg.head_dim),
            ("batch", "length", "heads", None),
        )

    def project_kv(self, source: jnp.ndarray) -> KVCache:
        """Keys and values [batch, L, heads, head_dim] of the rows `source` [batch, L, hidden]."""
        return KVCache(self._split(self.key(source)), self._split(self.value(source)))

    def attend(
        self,
        x: jnp.ndarray,
        kv: KVCache,
        mask: AttentionMask,
        bias: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        """The queries of rows x [batch, Q, hidden] against given keys and values."""
        out = dot_product_attention(
            self._split(self.query(x)),
            kv.key,
            kv.value,
            mask,
            bias=bias,
            scale=self.scale,
            implementation=self.cfg.attention_implementation,
        )
        return self.output(out.reshape(*out.shape[:-2], -1))

    def __call__(
        self,
        x: jnp.ndarray,
        mask: AttentionMask,
        bias: jnp.ndarray | None = None,
        context: jnp.ndarray | None = None,
    ) -> jnp.ndarray:
        source = x[..., : mask.kv_len, :] if context is None else context
        return self.attend(x, self.project_kv(source), mask, bias)

    def extend(
        self,
        x: jnp.ndarray,
        cache: KVCache,
        index,
        mask: AttentionMask,
        bias: jnp.ndarray | None = None,
    ) -> tuple[jnp.ndarray, KVCache]:
        """Self-attention of new rows x [batch, n, hidden] that occupy cache slots
        [index, index + n): their keys and values are written there first, then the rows
        attend over the whole cache under `mask` (queries [batch, n], keys: every slot)."""
        new = self.project_kv(x)
        cache = cache.write(new.key, new.value, index)
        return self.attend(x, cache, mask, bias), cache


class FeedForward(nnx.Module):
    """Position-wise feed-forward block: dense, activation, dense."""

    def __init__(self, cfg: TransformerConfig, *, use_bias: bool = True, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.intermediate = dense(cfg, h, i, ("embed", "mlp"), rngs, use_bias=use_bias)
        self.output = dense(cfg, i, h, ("mlp", "embed"), rngs, use_bias=use_bias)
        self.activation = ACTIVATIONS[cfg.activation]

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        inner = constrain(self.activation(self.intermediate(x)), ("batch", "length", "mlp"))
        return self.output(inner)


class GatedFeedForward(nnx.Module):
    """Gated feed-forward block (Shazeer 2020, T5 v1.1's gated GeLU): act(x W0) * (x W1), then
    the output projection; no biases."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        h, i = cfg.hidden_size, cfg.intermediate_size
        self.gate = dense(cfg, h, i, ("embed", "mlp"), rngs, use_bias=False)
        self.intermediate = dense(cfg, h, i, ("embed", "mlp"), rngs, use_bias=False)
        self.output = dense(cfg, i, h, ("mlp", "embed"), rngs, use_bias=False)
        self.activation = ACTIVATIONS[cfg.activation]

    def __call__(self, x: jnp.ndarray) -> jnp.ndarray:
        inner = self.activation(self.gate(x)) * self.intermediate(x)
        return self.output(constrain(inner, ("batch", "length", "mlp")))


class EncoderLayer(nnx.Module):
    """Post-LayerNorm Transformer layer as in BERT: x = LN(x + Drop(Attn(x))), then the FFN."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.attention = MultiHeadAttention(cfg, rngs=rngs)
        self.attention_norm = layer_norm(cfg, rngs)
        self.feed_forward = FeedForward(cfg, rngs=rngs)
        self.output_norm = layer_norm(cfg, rngs)
        self.dropout = nnx.Dropout(cfg.dropout_rate)

    def __call__(
        self,
        x: jnp.ndarray,
        mask: AttentionMask,
        bias: jnp.ndarray | None = None,
        *,
        context: jnp.ndarray | None = None,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jnp.ndarray:
        """`context`: the rows keys and values come from, when they are not the first
        `mask.kv_len` rows of x (see `MultiHeadAttention`)."""
        drop = lambda y: self.dropout(y, deterministic=deterministic, rngs=rngs)
        out = self._residuals(x, self.attention(x, mask, bias, context), drop)
        return constrain(out, HIDDEN_AXES)

    def extend(
        self, x: jnp.ndarray, cache: KVCache, index, mask: AttentionMask, bias=None
    ) -> tuple[jnp.ndarray, KVCache]:
        """Incremental decoding (no dropout): new rows x at cache slots [index, index + n)."""
        attended, cache = self.attention.extend(x, cache, index, mask, bias)
        return self._residuals(x, attended, lambda y: y), cache

    def _residuals(self, x: jnp.ndarray, attended: jnp.ndarray, drop) -> jnp.ndarray:
        """The attention output's residual and norm, then the feed-forward's."""
        x = self.attention_norm(x + drop(attended))
        return self.output_norm(x + drop(self.feed_forward(x)))


def relative_position_bucket(
    relative_position: jnp.ndarray, *, bidirectional: bool, num_buckets: int, max_distance: int
) -> jnp.ndarray:
    """T5's log-spaced buckets for key_position - query_position (Raffel et al. 2020, also
    MPNet): half the buckets exact for short distances, the rest logarithmic up to
    `max_distance`; bidirectional buckets split by sign."""
    bucket = jnp.zeros_like(relative_position)
    if bidirectional:
        num_buckets //= 2
        bucket = bucket + (relative_position > 0) * num_buckets
        distance = jnp.abs(relative_position)
    else:
        distance = -jnp.minimum(relative_position, 0)
    max_exact = num_buckets // 2
    scaled = (
        jnp.log(jnp.maximum(distance, 1).astype(jnp.float32) / max_exact)
        / math.log(max_distance / max_exact)
        * (num_buckets - max_exact)
    )
    large = jnp.minimum(max_exact + scaled.astype(distance.dtype), num_buckets - 1)
    return bucket + jnp.where(distance < max_exact, distance, large)


class RelativePositionBias(nnx.Module):
    """A learned bias per head and relative-position bucket, added to the attention logits."""

    def __init__(
        self,
        cfg: TransformerConfig,
        *,
        num_buckets: int,
        max_distance: int,
        bidirectional: bool,
        rngs: nnx.Rngs,
    ):
        self.embedding = embed(cfg, num_buckets, (None, "heads"), rngs, cfg.num_heads)
        self.num_buckets, self.max_distance = num_buckets, max_distance
        self.bidirectional = bidirectional

    def __call__(self, q_positions: jnp.ndarray, kv_positions: jnp.ndarray) -> jnp.ndarray:
        """Bias [batch, heads, q_len, kv_len] from position ids [batch, q_len], [batch, kv_len]."""
        relative = kv_positions[..., None, :] - q_positions[..., :, None]
        bucket = relative_position_bucket(
            relative,
            bidirectional=self.bidirectional,
            num_buckets=self.num_buckets,
            max_distance=self.max_distance,
        )
        return jnp.moveaxis(self.embedding(bucket), -1, -3).astype(jnp.float32)
