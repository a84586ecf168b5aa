"""The training batch every objective returns (a pytree, so it flows through jit and vmap)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from lm_jax.attention.mask import AttentionMask


@struct.dataclass
class Batch:
    """One objective's output for rows of length L (leading batch axes allowed).

    Dense fields are [..., L]; the sparse prediction layout is [..., max_predictions] and sorted
    by position, with weight 0 on unused slots (BERT's `masked_lm_positions/ids/weights`).

    Attributes:
      inputs: int token ids fed to the model.
      targets: int ids to predict at each position (the original tokens).
      loss_weights: float, 1 where a prediction is scored, 0 elsewhere.
      positions: int position ids, restarting at 0 per packed segment.
      segment_ids: int packed-document ids, 1..n per row, 0 = padding (seqio convention).
      attention: who may attend to whom (`lm_jax.attention.AttentionMask`).
      masked_positions, masked_targets, masked_weights: the sparse prediction layout, or None
        for objectives that predict every token.
    """

    inputs: jnp.ndarray
    targets: jnp.ndarray
    loss_weights: jnp.ndarray
    positions: jnp.ndarray
    segment_ids: jnp.ndarray
    attention: AttentionMask
    masked_positions: jnp.ndarray | None = None
    masked_targets: jnp.ndarray | None = None
    masked_weights: jnp.ndarray | None = None
