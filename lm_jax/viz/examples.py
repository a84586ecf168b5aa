"""One objective applied to a few texts, as in pretraining: the rows its layout builds from
them (`lm_jax.data.pipeline`) and the batch it returns (`lm_jax.pretrain.tasks`)."""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import numpy as np

import lm_jax.objectives as objectives
from lm_jax.data.pipeline import document_rows, entity_rows, tokenize_and_pack
from lm_jax.data.tokenizer import Tokenizer
from lm_jax.data.translation import pair_rows
from lm_jax.layout import Rows
from lm_jax.pretrain.tasks import apply_objective


def example_rows(name: str, items: Sequence, tokenizer: Tokenizer, seq_len: int) -> dict:
    """The rows objective `name` reads, laid out from `items`: texts (packed or document
    rows), `AnnotatedDocument`s (entity rows) or `TranslationPair`s (translation pairs)."""
    rows = objectives.spec(name).rows
    languages = sorted({p.language for p in items}) if rows is Rows.PAIRS else []
    layout = {
        Rows.PACKED: tokenize_and_pack,
        Rows.DOCUMENTS: document_rows,
        Rows.ENTITIES: entity_rows,
        Rows.PAIRS: functools.partial(pair_rows, languages=languages),
    }[rows]
    streamed = layout(list(items), tokenizer, seq_len)
    features = [streamed[i] for i in range(len(streamed))]
    return {k: np.stack([f[k] for f in features]) for k in features[0]}


def objective_example(
    name: str,
    items: Sequence,
    tokenizer: Tokenizer,
    seq_len: int = 32,
    seed: int = 0,
    **options,
):
    """(batch, rows): objective `name` with `options` (its defaults otherwise) applied to the
    rows of `items` (`example_rows`) with the key of `seed`."""
    rows = example_rows(name, items, tokenizer, seq_len)
    apply = functools.partial(apply_objective, objectives.spec(name), options, tokenizer.vocab)
    return jax.jit(apply)(jax.random.key(seed), rows), rows
