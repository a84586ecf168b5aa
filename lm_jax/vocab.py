"""The static description of a vocabulary that objectives, models and data all read (ground
floor: it imports nothing of lm_jax but its errors)."""

from __future__ import annotations

import dataclasses

import numpy as np

from lm_jax.errors import DataError


@dataclasses.dataclass(frozen=True)
class VocabInfo:
    """Static, hashable description of a vocabulary for objectives (usable as a jit static arg).

    Attributes:
      size: total number of ids (embedding rows), sentinels included.
      pad_id, unk_id, cls_id, sep_id, mask_id: special-token ids.
      sentinel_ids: T5 sentinels, `<extra_id_0>` first (the highest id), counting down.
    """

    size: int
    pad_id: int
    unk_id: int
    cls_id: int
    sep_id: int
    mask_id: int
    sentinel_ids: tuple[int, ...] = ()

    def __post_init__(self):
        ids = self.special_ids
        if len(set(ids)) != len(ids):
            raise DataError(f"special-token ids must be distinct, got {ids}")
        bad = [i for i in ids if not 0 <= i < self.size]
        if bad:
            raise DataError(f"special-token ids {bad} are outside the vocabulary [0, {self.size})")

    @property
    def bos_id(self) -> int:
        return self.cls_id

    @property
    def eos_id(self) -> int:
        return self.sep_id

    @property
    def special_ids(self) -> tuple[int, ...]:
        """Ids that objectives never select for prediction and never sample as replacements."""
        return (
            self.pad_id,
            self.unk_id,
            self.cls_id,
            self.sep_id,
            self.mask_id,
            *self.sentinel_ids,
        )

    def regular_ids(self) -> np.ndarray:
        """All non-special ids, ascending (the support of random replacement tokens)."""
        keep = np.ones(self.size, dtype=bool)
        keep[list(self.special_ids)] = False
        return np.flatnonzero(keep).astype(np.int32)
