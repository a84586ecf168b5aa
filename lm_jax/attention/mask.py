"""The compact attention-mask description that every objective produces and the kernel consumes.

A query q may attend to a key k iff all of these hold:

    q_segment_ids[q] == kv_segment_ids[k] != 0                   (packing; 0 = padding)
    kv_ranks[k] <= q_ranks[q]                                    (when ranks are given)
    q_intervals[q, j, 0] <= k < q_intervals[q, j, 1] for some j   (when intervals are given)

Ranks express orders: all equal is bidirectional attention (masked LM), rank = position is
causal LM, rank = max(position, prefix_len - 1) is prefix LM, -position is right-to-left, a
permutation rank is XLNet's content stream. A strict "<" (XLNet's query stream) uses doubled
ranks: keys carry 2r, content queries 2r and query-stream queries 2r - 1. Per-row key intervals
(at most a few per row) express layouts that no single order can, such as MPNet's rows, which
see a prefix of the keys plus one more key range. Storage is O(length) per row; `dense()`
expands it to the boolean [..., q_len, kv_len] mask used by the reference kernel and by tests.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import struct


@struct.dataclass
class AttentionMask:
    """Who may attend to whom, in O(length) per row (see module docstring).

    Attributes:
      q_segment_ids: int [..., q_len]; 0 marks padding queries (they see nothing).
      kv_segment_ids: int [..., kv_len]; 0 marks padding keys.
      q_ranks: int [..., q_len] or None (None: no order constraint).
      kv_ranks: int [..., kv_len] or None; given together with q_ranks.
      q_intervals: int [..., q_len, num_intervals, 2] or None: [start, end) key ranges.
    """

    q_segment_ids: jnp.ndarray
    kv_segment_ids: jnp.ndarray
    q_ranks: jnp.ndarray | None = None
    kv_ranks: jnp.ndarray | None = None
    q_intervals: jnp.ndarray | None = None

    @classmethod
    def bidirectional(cls, segment_ids: jnp.ndarray) -> "AttentionMask":
        """Self-attention within each packed segment, no order (BERT, RoBERTa)."""
        return cls(q_segment_ids=segment_ids, kv_segment_ids=segment_ids)

    @classmethod
    def key_padding(cls, segment_ids: jnp.ndarray) -> "AttentionMask":
        """Every query, padding included, attends to the row's real keys: Hugging Face's
        `attention_mask` on one unpacked segment per row (padding positions still get
        outputs, which its span loss sums over)."""
        return cls(q_segment_ids=jnp.ones_like(segment_ids), kv_segment_ids=segment_ids)

    @classmethod
    def ordered(cls, segment_ids: jnp.ndarray, ranks: jnp.ndarray) -> "AttentionMask":
        """Self-attention within segments where k is visible to q iff rank[k] <= rank[q]."""
        return cls(
            q_segment_ids=segment_ids, kv_segment_ids=segment_ids, q_ranks=ranks, kv_ranks=ranks
        )

    def dense(self) -> jnp.ndarray:
        """Boolean mask [..., q_len, kv_len]: True where attention is allowed."""
        return self.block(0, self.q_segment_ids.shape[-1], 0, self.kv_segment_ids.shape[-1])

    def block(self, q_start, q_size: int, kv_start, kv_size: int) -> jnp.ndarray:
        """The dense mask of queries [q_start, q_start + q_size) against keys
        [kv_start, kv_start + kv_size): [..., q_size, kv_size]. Starts may be traced values,
        so a kernel can build each block from the compact description inside a loop."""
        q = lambda x: jax.lax.dynamic_slice_in_dim(x, q_start, q_size, axis=self.q_axis(x))
        kv = lambda x: jax.lax.dynamic_slice_in_dim(x, kv_start, kv_size, axis=x.ndim - 1)
        q_seg = q(self.q_segment_ids)[..., :, None]
        allowed = (q_seg == kv(self.kv_segment_ids)[..., None, :]) & (q_seg != 0)
        if self.q_ranks is not None:
            allowed &= kv(self.kv_ranks)[..., None, :] <= q(self.q_ranks)[..., :, None]
        if self.q_intervals is not None:
            k = kv_start + jnp.arange(kv_size)
            intervals = q(self.q_intervals)
            start, end = intervals[..., :, :, None, 0], intervals[..., :, :, None, 1]
            allowed &= ((start <= k) & (k < end)).any(axis=-2)
        return allowed

    def q_axis(self, x: jnp.ndarray) -> int:
        """The query axis of a per-query field (intervals carry two trailing axes)."""
        return x.ndim - 3 if x is self.q_intervals else x.ndim - 1

    def query_rows(self, start: int) -> "AttentionMask":
        """The mask of query rows `start:` only, against the same keys."""
        rows = lambda x: (
            None if x is None else jax.lax.slice_in_dim(x, start, None, axis=self.q_axis(x))
        )
        return self.replace(
            q_segment_ids=rows(self.q_segment_ids),
            q_ranks=rows(self.q_ranks),
            q_intervals=rows(self.q_intervals),
        )

    @property
    def q_len(self) -> int:
        return self.q_segment_ids.shape[-1]

    @property
    def kv_len(self) -> int:
        return self.kv_segment_ids.shape[-1]

    @classmethod
    def concat_queries(cls, first: "AttentionMask", second: "AttentionMask") -> "AttentionMask":
        """One mask for the query rows of `first` followed by those of `second` (same keys):
        two-stream attention as one kernel call."""

        def cat(a, b, axis=-1):
            return None if a is None else jnp.concatenate([a, b], axis=axis)

        def intervals(m: "AttentionMask"):
            if m.q_intervals is not None:
                return m.q_intervals
            whole = jnp.stack(
                [jnp.zeros_like(m.q_segment_ids), jnp.full_like(m.q_segment_ids, m.kv_len)], -1
            )
            return whole[..., None, :]

        if (first.q_ranks is None) != (second.q_ranks is None):
            raise ValueError("both streams must use ranks, or neither")
        use_intervals = first.q_intervals is not None or second.q_intervals is not None
        if use_intervals:
            a, b = intervals(first), intervals(second)
            width = max(a.shape[-2], b.shape[-2])
            pad = lambda x: jnp.concatenate(
                [x, jnp.zeros(x.shape[:-2] + (width - x.shape[-2], 2), x.dtype)], axis=-2
            )
            joined = jnp.concatenate([pad(a), pad(b)], axis=-3)
        return cls(
            q_segment_ids=cat(first.q_segment_ids, second.q_segment_ids),
            kv_segment_ids=first.kv_segment_ids,
            q_ranks=cat(first.q_ranks, second.q_ranks),
            kv_ranks=first.kv_ranks,
            q_intervals=joined if use_intervals else None,
        )
