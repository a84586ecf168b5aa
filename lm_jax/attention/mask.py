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
    def ordered(cls, segment_ids: jnp.ndarray, ranks: jnp.ndarray) -> "AttentionMask":
        """Self-attention within segments where k is visible to q iff rank[k] <= rank[q]."""
        return cls(
            q_segment_ids=segment_ids, kv_segment_ids=segment_ids, q_ranks=ranks, kv_ranks=ranks
        )

    def dense(self) -> jnp.ndarray:
        """Boolean mask [..., q_len, kv_len]: True where attention is allowed."""
        q_seg = self.q_segment_ids[..., :, None]
        kv_seg = self.kv_segment_ids[..., None, :]
        allowed = (q_seg == kv_seg) & (q_seg != 0)
        if self.q_ranks is not None:
            allowed &= self.kv_ranks[..., None, :] <= self.q_ranks[..., :, None]
        if self.q_intervals is not None:
            k = jnp.arange(self.kv_segment_ids.shape[-1])
            start = self.q_intervals[..., :, :, None, 0]  # [..., q, j, 1]
            end = self.q_intervals[..., :, :, None, 1]
            allowed &= ((start <= k) & (k < end)).any(axis=-2)
        return allowed
