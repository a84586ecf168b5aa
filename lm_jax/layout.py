"""The row layouts the data pipeline builds and objectives read (ground floor: both import it)."""

from __future__ import annotations

import enum

import jax
import jax.numpy as jnp
import numpy as np


class Rows(enum.Enum):
    """How a corpus is laid out in rows (`lm_jax.data.pipeline.build_pretraining_data`)."""

    PACKED = "packed"  # documents packed into rows, with word starts (data/packing.py)
    DOCUMENTS = "documents"  # one document per row, with sentence starts (data/sentences.py)
    ENTITIES = "entities"  # packed rows of an annotated corpus, with entity ids (entities.py)
    PAIRS = "pairs"  # translation pairs, one per row, with language ids (data/translation.py)


def positions_from_segments(segment_ids):
    """Positions restarting at 0 wherever the segment id changes along the last axis; 0 on
    padding (segment 0). NumPy in, NumPy out (the data pipeline, on the host); a JAX array or
    tracer in, JAX out (objectives, inside jit)."""
    xp = jnp if isinstance(segment_ids, jax.Array) else np
    seg = xp.asarray(segment_ids)
    idx = xp.broadcast_to(xp.arange(seg.shape[-1]), seg.shape)
    first = xp.ones(seg.shape[:-1] + (1,), dtype=bool)
    change = xp.concatenate([first, seg[..., 1:] != seg[..., :-1]], axis=-1)
    start = xp.maximum.accumulate(xp.where(change, idx, 0), axis=-1)
    return xp.where(seg != 0, idx - start, 0).astype(xp.int32)
