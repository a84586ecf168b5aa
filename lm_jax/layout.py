"""The row layouts the data pipeline builds and objectives read (ground floor: both import it)."""

from __future__ import annotations

import enum


class Rows(enum.Enum):
    """How a corpus is laid out in rows (`lm_jax.data.pipeline.build_pretraining_data`)."""

    PACKED = "packed"  # documents packed into rows, with word starts (data/packing.py)
    DOCUMENTS = "documents"  # one document per row, with sentence starts (data/sentences.py)
    ENTITIES = "entities"  # packed rows of an annotated corpus, with entity ids (entities.py)
    PAIRS = "pairs"  # translation pairs, one per row, with language ids (data/translation.py)
