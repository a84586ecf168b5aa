"""The compact attention-mask description that every objective produces and the kernel consumes.

A query q may attend to a key k iff

    q_segment_ids[q] == kv_segment_ids[k] != 0   and   kv_ranks[k] <= q_ranks[q]

Segment ids give packing (0 = padding; nothing crosses documents). Ranks give an order:
all ranks equal is bidirectional attention (masked LM), rank = position is causal LM, rank =
max(position, prefix_len - 1) is prefix LM, a permutation rank is XLNet's content stream. A
strict "<" (XLNet's query stream) is expressed with doubled ranks: keys carry 2r, content
queries 2r and query-stream queries 2r - 1. Storage is O(length) per row; `dense()` expands it to
the boolean [..., q_len, kv_len] mask used by the reference kernel and by tests.
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
      q_ranks: int [..., q_len] or None (None: all ranks equal, no order constraint).
      kv_ranks: int [..., kv_len] or None; given together with q_ranks.
    """

    q_segment_ids: jnp.ndarray
    kv_segment_ids: jnp.ndarray
    q_ranks: jnp.ndarray | None = None
    kv_ranks: jnp.ndarray | None = None

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
        return allowed
