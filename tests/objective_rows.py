"""Rows and calls shared by the objective tests (imported like conftest: tests/ is on the path)."""

import jax.numpy as jnp
import numpy as np

import lm_jax.objectives as obj

# Objectives I (encoder batches, row by row); the seq2seq and sentence-level objectives have
# their own contract tests in test_denoising.py and test_sentence.py.
OBJECTIVES_II = {"bart", "t5", "mass", "nsp", "sop", "structbert", "tlm"}
ALL = [n for n in obj.names() if n not in OBJECTIVES_II]
WORD_LEVEL = {"wwm", "ngram", "span", "plm", "mpnet"}


def rows(vocab, batch, length, seed=0, docs=1, pad=0):
    """[CLS] doc [SEP] packed rows of regular tokens with `docs` documents and `pad` padding."""
    rng = np.random.default_rng(seed)
    regular = vocab.regular_ids()
    tokens = regular[rng.integers(0, len(regular), (batch, length))]
    segs = np.zeros((batch, length), np.int32)
    real = length - pad
    bounds = np.linspace(0, real, docs + 1).astype(int)
    for d in range(docs):
        a, b = bounds[d], bounds[d + 1]
        segs[:, a:b] = d + 1
        tokens[:, a], tokens[:, b - 1] = vocab.cls_id, vocab.sep_id
    tokens[:, real:] = vocab.pad_id
    starts = rng.random((batch, length)) < 0.7
    return jnp.asarray(tokens), jnp.asarray(segs), jnp.asarray(starts)


def call(name, key, tokens, vocab, segs, starts, **options):
    fn = obj.get(name)
    extra = {"word_starts": starts} if name in WORD_LEVEL else {}
    if name == "entity":
        extra = {"entity_ids": jnp.zeros_like(tokens).at[..., 3:6].set(1)}
    return fn(key, tokens, vocab=vocab, segment_ids=segs, **extra, **options)


def masks_of(batch):
    dense = obj.dense_attention_mask(batch)
    return dense if isinstance(dense, tuple) else (dense,)


def random_rows(vocab, batch, length, seed=0, lengths=None):
    """[CLS] tokens [SEP] rows of regular tokens, padded to `length` after `lengths[i]` tokens."""
    rng = np.random.default_rng(seed)
    regular = vocab.regular_ids()
    tokens = regular[rng.integers(0, len(regular), (batch, length))]
    lengths = np.full(batch, length) if lengths is None else np.asarray(lengths)
    for i, n in enumerate(lengths):
        tokens[i, 0], tokens[i, n - 1] = vocab.cls_id, vocab.sep_id
        tokens[i, n:] = vocab.pad_id
    return jnp.asarray(tokens)


def bert_budget(n, rate=0.15, max_predictions=20):
    return min(max_predictions, max(1, int(round(n * rate))))
