"""lm_jax.objectives.autoregressive: causal LM, prefix LM and UniLM."""

import jax
import jax.numpy as jnp
import numpy as np
from objective_rows import (
    rows,
)

import lm_jax.objectives as obj


def test_clm_exact(vocab):
    tokens = jnp.asarray([[2, 10, 11, 3, 2, 20, 3, 0]])
    segs = jnp.asarray([[1, 1, 1, 1, 2, 2, 2, 0]])
    b = obj.clm(jax.random.key(0), tokens, vocab=vocab, segment_ids=segs)
    np.testing.assert_array_equal(b.targets[0], [10, 11, 3, 0, 20, 3, 0, 0])
    np.testing.assert_array_equal(b.loss_weights[0], [1, 1, 1, 0, 1, 1, 0, 0])
    seg = np.asarray(segs[0])
    expected = np.tril(np.ones((8, 8), bool)) & (seg[:, None] == seg[None]) & (seg[:, None] > 0)
    np.testing.assert_array_equal(obj.dense_attention_mask(b)[0], expected)


def test_prefix_lm_exact(vocab):
    tokens = jnp.asarray([[2, 10, 11, 12, 13, 3]])
    b = obj.prefix_lm(jax.random.key(0), tokens, vocab=vocab, prefix_lengths=jnp.array([3]))
    mask = np.asarray(obj.dense_attention_mask(b)[0]).astype(int)
    np.testing.assert_array_equal(
        mask,
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1],
        ],
    )
    np.testing.assert_array_equal(b.loss_weights[0], [0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(b.token_type_ids[0], [0, 0, 0, 1, 1, 1])
    # Random split: prefix length uniform in [1, n - 1].
    many = jnp.tile(tokens, (4000, 1))
    b = obj.prefix_lm(jax.random.key(1), many, vocab=vocab)
    prefix = 6 - np.asarray(b.token_type_ids).sum(-1)
    np.testing.assert_allclose(np.bincount(prefix, minlength=6)[1:6] / 4000, [0.2] * 5, atol=0.03)


def test_unilm_modes_and_mixture(vocab):
    tokens, segs, _ = rows(vocab, 3000, 16)
    b = jax.jit(lambda k: obj.unilm(k, tokens, vocab=vocab, segment_ids=segs))(jax.random.key(16))
    mask = np.asarray(obj.dense_attention_mask(b))
    tril, triu = np.tril(np.ones((16, 16), bool)), np.triu(np.ones((16, 16), bool))
    kinds = []
    for r in range(3000):
        m = mask[r]
        if m.all():
            kinds.append("bidirectional")
        elif (m == tril).all() and (b.token_type_ids[r] == 2).all():
            kinds.append("left_to_right")
        elif (m == triu).all():
            kinds.append("right_to_left")
        else:
            src = int((np.asarray(b.token_type_ids[r]) == 0).sum())
            expected = tril.copy()
            expected[:, :src] = True
            expected[:src, src:] = False
            assert (m == expected).all()
            kinds.append("seq2seq")
    freq = [kinds.count(k) / 3000 for k in obj.UNILM_MODES]
    np.testing.assert_allclose(freq, [1 / 3, 1 / 6, 1 / 6, 1 / 3], atol=0.03)
    assert (np.asarray(b.loss_weights).sum(-1) == round(0.15 * 16)).all()
    single = obj.unilm(jax.random.key(0), tokens[:4], vocab=vocab, mode="right_to_left")
    assert (np.asarray(obj.dense_attention_mask(single)) == triu).all()
