"""The shared attention kernel and the compact mask description."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from lm_jax.attention import AttentionMask, dot_product_attention


def naive_attention(q, k, v, allowed):
    """Float64 NumPy attention; rows with no visible key give zeros."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    logits = np.where(allowed[:, None], logits, -np.inf)
    m = np.max(logits, -1, keepdims=True)
    e = np.where(allowed[:, None], np.exp(logits - np.where(np.isfinite(m), m, 0)), 0)
    p = e / np.maximum(e.sum(-1, keepdims=True), 1e-300)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


@pytest.mark.parametrize("q_len,kv_len", [(16, 16), (24, 16)])
def test_reference_kernel_matches_naive(q_len, kv_len):
    rng = np.random.default_rng(0)
    b, h, d = 3, 2, 8
    q, k, v = (
        jnp.asarray(rng.normal(size=(b, n, h, d)), jnp.float32) for n in (q_len, kv_len, kv_len)
    )
    mask = AttentionMask(
        q_segment_ids=jnp.asarray(rng.integers(0, 3, (b, q_len))),
        kv_segment_ids=jnp.asarray(rng.integers(0, 3, (b, kv_len))),
        q_ranks=jnp.asarray(rng.integers(0, 6, (b, q_len))),
        kv_ranks=jnp.asarray(rng.integers(0, 6, (b, kv_len))),
    )
    allowed = np.asarray(mask.dense())
    assert (~allowed.any(-1)).any(), "want some fully masked rows in the test"
    out = jax.jit(dot_product_attention)(q, k, v, mask)
    np.testing.assert_allclose(out, naive_attention(q, k, v, allowed), atol=2e-6)


def test_dense_mask_definition():
    seg = jnp.array([[1, 1, 1, 2, 2, 0]])
    np.testing.assert_array_equal(
        AttentionMask.bidirectional(seg).dense()[0],
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 1, 1, 0],
            [0, 0, 0, 0, 0, 0],
        ],
    )
    causal = AttentionMask.ordered(seg, jnp.arange(6)[None]).dense()[0]
    np.testing.assert_array_equal(causal, np.tril(AttentionMask.bidirectional(seg).dense()[0]))


def test_unknown_implementation():
    x = jnp.zeros((1, 4, 1, 8))
    with pytest.raises(ValueError, match="unknown attention implementation"):
        dot_product_attention(
            x,
            x,
            x,
            AttentionMask.bidirectional(jnp.ones((1, 4), jnp.int32)),
            implementation="magic",
        )
