"""XLNet (Yang et al. 2019): permutation LM with two-stream attention, Transformer-XL relative
attention with segment bias, and Transformer-XL memory (Dai et al. 2019).

Scores follow the paper's eq. (A.2)-style decomposition: for query i and key j,

    (q_i + u)·k_j  +  (q_i + v)·W_r R(p_i - p_j)  +  (q_i + s)·e_{[t_i != t_j]}

(content, position and segment terms; u, v, s per head and layer), scaled by 1/sqrt(head_dim).
The first term goes through the shared kernel (the query shifted by u); the other two are its
additive bias. Positions p come from the batch's position ids, so packed documents restart;
memory keys sit at positions -M..-1, before the row.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from lm_jax.attention import AttentionMask, dot_product_attention
from lm_jax.models.config import TransformerConfig
from lm_jax.models.heads import QuestionAnsweringHead, last_real_token
from lm_jax.models.layers import (
    HIDDEN_AXES,
    FeedForward,
    dense,
    layer_norm,
    layer_runner,
    vocabulary_logits,
)
from lm_jax.sharding import constrain

# Memory keys rank below everything, so every query of the row's first document sees them.
_MEMORY_RANK = -(2**30)


def _param(cfg: TransformerConfig, shape, axes, rngs: nnx.Rngs) -> nnx.Param:
    init = nnx.initializers.truncated_normal(stddev=cfg.initializer_range)
    return nnx.Param(init(rngs.params(), shape, jnp.float32), logical_axes=axes)


def sinusoid(distances: jnp.ndarray, width: int) -> jnp.ndarray:
    """Transformer-XL's relative encoding R(d) = [sin(d w), cos(d w)], w_k = 10000^(-2k/width)."""
    inv_freq = 1.0 / (10000 ** (jnp.arange(0, width, 2, dtype=jnp.float32) / width))
    angles = distances.astype(jnp.float32)[..., None] * inv_freq
    return jnp.concatenate([jnp.sin(angles), jnp.cos(angles)], axis=-1)


@struct.dataclass
class RelativeLayout:
    """What the relative terms need, computed once per forward pass and shared by the layers:
    `encoding` [R, D] = R(d) for every distance d the row can hold, `index` [B, Q, K] the row of
    `encoding` for each (query, key), `different_type` [B, Q, K] whether their token types
    differ."""

    encoding: jnp.ndarray
    index: jnp.ndarray
    different_type: jnp.ndarray

    @classmethod
    def build(cls, q_positions, kv_positions, q_types, kv_types, *, length: int, width: int):
        """Positions lie in [0, length) for the row and [-M, 0) for memory, so distances
        q - k lie in (-length, length + M)."""
        memory_len = kv_positions.shape[-1] - length
        distances = jnp.arange(-(length - 1), length + memory_len)
        return cls(
            encoding=sinusoid(distances, width),
            index=q_positions[..., :, None] - kv_positions[..., None, :] + (length - 1),
            different_type=q_types[..., :, None] != kv_types[..., None, :],
        )

    def query_rows(self, start: int) -> "RelativeLayout":
        """The layout of query rows `start:` only."""
        return self.replace(
            index=self.index[..., start:, :], different_type=self.different_type[..., start:, :]
        )


class RelativeAttention(nnx.Module):
    """Transformer-XL relative multi-head attention with XLNet's segment term; query rows may
    outnumber the key rows (two-stream: the query-stream rows follow the content rows)."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        d, n, h = cfg.hidden_size, cfg.num_heads, cfg.head_dim
        self.cfg = cfg
        for name in ("q", "k", "v", "o", "r"):
            setattr(self, name, _param(cfg, (d, n, h), ("embed", "heads", "kv"), rngs))
        for name in ("r_w_bias", "r_r_bias", "r_s_bias"):
            setattr(self, name, _param(cfg, (n, h), ("heads", "kv"), rngs))
        self.seg_embed = _param(cfg, (2, n, h), (None, "heads", "kv"), rngs)
        self.layer_norm = layer_norm(cfg, rngs)
        self.dropout = nnx.Dropout(cfg.dropout_rate)

    def __call__(
        self,
        x: jnp.ndarray,
        keys: jnp.ndarray,
        mask: AttentionMask,
        relative: "RelativeLayout",
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jnp.ndarray:
        """x [B, Q, D] query rows, keys [B, K, D] (memory + content rows) -> [B, Q, D]."""
        dtype = self.cfg.compute_dtype
        proj = lambda t, w: jnp.einsum("bld,dnh->blnh", t.astype(dtype), w[...].astype(dtype))
        q, k, v = proj(x, self.q), proj(keys, self.k), proj(keys, self.v)
        # Position term: one projected encoding per distance, gathered per (query, key).
        k_r = proj(relative.encoding[None], self.r)[0]  # [R, n, h]
        bd_all = jnp.einsum("bqnh,rnh->bnqr", q + self.r_r_bias[...].astype(dtype), k_r)
        bd = jnp.take_along_axis(bd_all, relative.index[:, None], axis=-1)
        # Segment term: same or different token type.
        ef_all = jnp.einsum(
            "bqnh,snh->bnqs",
            q + self.r_s_bias[...].astype(dtype),
            self.seg_embed[...].astype(dtype),
        )
        ef = jnp.where(relative.different_type[:, None], ef_all[..., 1:2], ef_all[..., 0:1])
        scale = self.cfg.head_dim**-0.5
        out = dot_product_attention(
            q + self.r_w_bias[...].astype(dtype),
            k,
            v,
            mask,
            bias=(bd + ef).astype(jnp.float32) * scale,
            implementation=self.cfg.attention_implementation,
        )
        out = jnp.einsum("bqnh,dnh->bqd", out, self.o[...].astype(dtype))
        out = self.dropout(out, deterministic=deterministic, rngs=rngs)
        return self.layer_norm(out + x)


class XLNetLayer(nnx.Module):
    """Relative attention, then the feed-forward block with a post-LN residual."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.rel_attn = RelativeAttention(cfg, rngs=rngs)
        self.ff = FeedForward(cfg, rngs=rngs)
        self.ff_norm = layer_norm(cfg, rngs)
        self.dropout = nnx.Dropout(cfg.dropout_rate)

    def __call__(self, x, keys, mask, relative, *, deterministic, rngs):
        x = self.rel_attn(x, keys, mask, relative, deterministic=deterministic, rngs=rngs)
        drop = lambda y: self.dropout(y, deterministic=deterministic, rngs=rngs)
        return constrain(self.ff_norm(x + drop(self.ff(x))), HIDDEN_AXES)


def _with_memory(mask: AttentionMask, memory_len: int) -> AttentionMask:
    """Prepend `memory_len` keys that every query of the row's first document sees."""
    if memory_len == 0:
        return mask
    if mask.q_intervals is not None:
        raise ValueError("Transformer-XL memory is not supported with interval masks (MPNet)")
    batch = mask.kv_segment_ids.shape[:-1]
    first = jnp.broadcast_to(mask.kv_segment_ids[..., :1], (*batch, memory_len))
    kv_ranks = mask.kv_ranks
    if kv_ranks is not None:
        lowest = jnp.full((*batch, memory_len), _MEMORY_RANK, kv_ranks.dtype)
        kv_ranks = jnp.concatenate([lowest, kv_ranks], axis=-1)
    return AttentionMask(
        q_segment_ids=mask.q_segment_ids,
        kv_segment_ids=jnp.concatenate([first, mask.kv_segment_ids], axis=-1),
        q_ranks=mask.q_ranks,
        kv_ranks=kv_ranks,
    )


class XLNet(nnx.Module):
    """XLNet's LM model: word embeddings (no absolute positions), a learned query-stream
    embedding, `num_layers` relative-attention layers and the decoder tied to the embeddings.

    With a `TwoStreamBatch` (the `plm` objective) it runs both streams, the query-stream rows
    attending to the content rows in the same kernel call, and returns logits for the query
    stream [B, P, vocab]; with a plain `Batch` it runs the content stream and returns
    [B, L, vocab]. `memory` (one [B, M, D] array per layer, from a previous call's
    `new_memory`) extends the keys with Transformer-XL memory of the preceding text.
    `lm_head=False` leaves out the decoder's bias: the fine-tuning models read
    `hidden_states` only (Hugging Face's `XLNetModel`).
    """

    def __init__(self, cfg: TransformerConfig, *, lm_head: bool = True, rngs: nnx.Rngs):
        self.cfg = cfg
        init = nnx.initializers.truncated_normal(stddev=cfg.initializer_range)
        self.word = nnx.Embed(
            cfg.vocab_size,
            cfg.hidden_size,
            dtype=cfg.compute_dtype,
            param_dtype=jnp.float32,
            embedding_init=nnx.with_metadata(init, logical_axes=("vocab", "embed")),
            rngs=rngs,
        )
        self.mask_emb = _param(cfg, (cfg.hidden_size,), ("embed",), rngs)
        self.layers = nnx.List([XLNetLayer(cfg, rngs=rngs) for _ in range(cfg.num_layers)])
        if lm_head:
            zeros = jnp.zeros((cfg.vocab_size,), jnp.float32)
            self.bias = nnx.Param(zeros, logical_axes=("vocab",))
        self.dropout = nnx.Dropout(cfg.dropout_rate)

    def __call__(self, *args, **kwargs) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
        """(fp32 logits, new memory): `hidden_states` through the decoder tied to the word
        embeddings. Logits are the content stream's [batch, L, vocab], or with a query
        stream the query stream's [batch, P, vocab]."""
        out, new_memory = self.hidden_states(*args, **kwargs)
        return vocabulary_logits(out, self.word, self.bias[...]), new_memory

    def hidden_states(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None = None,
        *,
        query_positions: jnp.ndarray | None = None,
        query_attention: AttentionMask | None = None,
        masked_positions: jnp.ndarray | None = None,
        memory: list[jnp.ndarray] | None = None,
        memory_len: int = 0,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jnp.ndarray, list[jnp.ndarray]]:
        """(last layer's output after dropout, new memory). Without a query stream the output is
        the content stream's [batch, L, D]; with one (`query_positions`, `query_attention`
        whose keys are the content rows, and `masked_positions`, each slot's index in the
        content row) it is the query stream's [batch, P, D]. The new memory holds each layer's
        input content rows, after the old memory, keeping the last `memory_len` (0: none)."""
        drop = lambda y: self.dropout(y, deterministic=deterministic, rngs=rngs)
        h = drop(self.word(input_ids))
        types = jnp.zeros_like(input_ids) if token_type_ids is None else token_type_ids
        mem_len = 0 if memory is None else memory[0].shape[-2]
        mem_positions = jnp.broadcast_to(jnp.arange(-mem_len, 0), (*positions.shape[:-1], mem_len))
        kv_positions = jnp.concatenate([mem_positions, positions], axis=-1)
        kv_types = jnp.concatenate([jnp.zeros_like(mem_positions), types], axis=-1)
        q_positions, q_types, mask = positions, types, attention
        two_stream = query_positions is not None
        if two_stream:
            slots = query_positions.shape[-1]
            g = drop(jnp.broadcast_to(self.mask_emb[...], (*h.shape[:-2], slots, h.shape[-1])))
            g = g.astype(h.dtype)
            query_types = jnp.take_along_axis(types, masked_positions, axis=-1)
            q_positions = jnp.concatenate([q_positions, query_positions], axis=-1)
            q_types = jnp.concatenate([q_types, query_types], axis=-1)
            mask = AttentionMask.concat_queries(mask, query_attention)
        mask = _with_memory(mask, mem_len)
        length = h.shape[-2]
        relative = RelativeLayout.build(
            q_positions, kv_positions, q_types, kv_types, length=length, width=h.shape[-1]
        )
        x = jnp.concatenate([h, g], axis=-2) if two_stream else h
        new_memory = []
        run = layer_runner(
            self.cfg,
            lambda layer, x, keys, mask, relative, rngs: layer(
                x, keys, mask, relative, deterministic=deterministic, rngs=rngs
            ),
        )
        for i, layer in enumerate(self.layers):
            content = x[..., :length, :]
            keys = content if memory is None else jnp.concatenate([memory[i], content], -2)
            kept = (
                keys[..., max(0, keys.shape[-2] - memory_len) :, :]
                if memory_len
                else keys[..., :0, :]
            )
            new_memory.append(jax.lax.stop_gradient(kept))
            if two_stream and i == len(self.layers) - 1:
                # Nothing reads the last layer's content stream: run its query stream alone.
                x = x[..., length:, :]
                mask = mask.query_rows(length)
                relative = relative.query_rows(length)
            x = run(layer, x, keys, mask, relative, rngs)
        return drop(x), new_memory


class XLNetForSequenceClassification(nnx.Module):
    """XLNet fine-tuning (Yang et al. 2019, sec. 3.3): rows `A <sep> B <sep> <cls>`, the last
    token's state through Hugging Face's `SequenceSummary` ("last": dense + tanh, dropout) and
    a linear classifier (`logits_proj`); regression with `num_labels=1`."""

    def __init__(self, cfg: TransformerConfig, num_labels: int, *, rngs: nnx.Rngs):
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        self.encoder = XLNet(cfg, lm_head=False, rngs=rngs)
        self.summary = dense(cfg, cfg.hidden_size, cfg.hidden_size, ("embed", "embed"), rngs)
        self.dropout = nnx.Dropout(cfg.dropout_rate)
        self.logits_proj = dense(cfg, cfg.hidden_size, num_labels, ("embed", None), rngs)

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
        """fp32 logits [batch, num_labels]."""
        hidden, _ = self.encoder.hidden_states(
            input_ids, positions, attention, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        # <cls> ends the row; rows are right-padded, which XLNet's relative attention cannot
        # tell from Hugging Face's left padding
        summary = jnp.tanh(self.summary(last_real_token(hidden, attention)))
        summary = self.dropout(summary, deterministic=deterministic, rngs=rngs)
        return self.logits_proj(summary).astype(jnp.float32)


class XLNetForQuestionAnswering(nnx.Module):
    """XLNet extractive QA as Hugging Face's `XLNetForQuestionAnsweringSimple` (the class its
    `AutoModelForQuestionAnswering` builds for XLNet): start / end logits from one linear layer
    on every token of `question <sep> context <sep> <cls>`; no answer is the span at <cls>."""

    def __init__(self, cfg: TransformerConfig, *, rngs: nnx.Rngs):
        self.encoder = XLNet(cfg, lm_head=False, rngs=rngs)
        self.head = QuestionAnsweringHead(cfg, rngs=rngs)

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """fp32 (start logits, end logits), each [batch, L]."""
        hidden, _ = self.encoder.hidden_states(
            input_ids, positions, attention, token_type_ids, deterministic=deterministic, rngs=rngs
        )
        return self.head(hidden)
