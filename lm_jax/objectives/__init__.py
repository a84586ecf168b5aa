"""Pretraining objectives as pure, jittable mask-generation functions.

Every objective is called as `fn(key, tokens, *, vocab, segment_ids=None, **inputs_and_options)`
and returns a batch whose `attention` field is the compact mask that the shared attention kernel
consumes. `spec(name)` is its declaration: options dataclass, data inputs, row layout, model.

    >>> import jax, lm_jax.objectives as objectives
    >>> objectives.names()
    ['bart', 'clm', 'electra', 'entity', 'mass', 'mlm', 'mpnet', 'ngram', 'nsp', 'plm',
     'prefix_lm', 'sop', 'span', 'structbert', 't5', 'tlm', 'unilm', 'wwm']
    >>> batch = objectives.get("mlm")(jax.random.key(0), tokens, vocab=tokenizer.vocab)
    >>> objectives.dense_attention_mask(batch)  # bool [batch, L, L]
"""

import jax.numpy as jnp

from lm_jax.batch import (
    Batch,
    ReplacedTokenBatch,
    SentencePairBatch,
    Seq2SeqBatch,
    SpanBatch,
    TwoStreamBatch,
)
from lm_jax.objectives.autoregressive import UNILM_MODES, clm, prefix_lm, unilm
from lm_jax.objectives.denoising import bart, mass, t5, t5_lengths, t5_raw_length
from lm_jax.objectives.masked_lm import electra, electra_replace, entity, mlm, ngram, wwm
from lm_jax.objectives.permutation import mpnet, plm
from lm_jax.objectives.registry import Model, ObjectiveSpec, get, names, spec
from lm_jax.objectives.sentence import nsp, sop, structbert, tlm
from lm_jax.objectives.span import span, span_length_probs


def dense_attention_mask(batch) -> jnp.ndarray | tuple[jnp.ndarray, jnp.ndarray]:
    """Expand a batch's compact attention description to boolean masks.

    Returns [..., q_len, k_len]; for two-stream batches (XLNet, MPNet) a pair
    (content stream [..., Lc, Lc], query stream [..., P, Lc]).
    """
    if isinstance(batch, TwoStreamBatch):
        return batch.attention.dense(), batch.query_attention.dense()
    return batch.attention.dense()


__all__ = [
    "Batch",
    "Model",
    "ObjectiveSpec",
    "ReplacedTokenBatch",
    "SentencePairBatch",
    "Seq2SeqBatch",
    "SpanBatch",
    "TwoStreamBatch",
    "UNILM_MODES",
    "bart",
    "clm",
    "dense_attention_mask",
    "electra",
    "electra_replace",
    "entity",
    "get",
    "mass",
    "mlm",
    "mpnet",
    "names",
    "ngram",
    "nsp",
    "plm",
    "prefix_lm",
    "sop",
    "spec",
    "span",
    "span_length_probs",
    "structbert",
    "t5",
    "t5_lengths",
    "t5_raw_length",
    "tlm",
    "unilm",
    "wwm",
]
