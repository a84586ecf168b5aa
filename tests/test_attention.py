"""The shared attention kernel: every implementation against the reference on the masks of every
objective, the compact mask description, two-stream attention as one call."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lm_jax.objectives as obj
from lm_jax.attention import AttentionMask, dot_product_attention, two_stream_attention
from lm_jax.attention.kernel import VERIFIED, choose_implementation, unsupported_reason


def naive_attention(q, k, v, allowed, bias=None):
    """Float64 NumPy attention; rows with no visible key give zeros."""
    q, k, v = (np.asarray(x, np.float64) for x in (q, k, v))
    logits = np.einsum("bqhd,bkhd->bhqk", q, k) / np.sqrt(q.shape[-1])
    if bias is not None:
        logits = logits + np.asarray(bias, np.float64)
    logits = np.where(allowed[:, None], logits, -np.inf)
    m = np.max(logits, -1, keepdims=True)
    e = np.where(allowed[:, None], np.exp(logits - np.where(np.isfinite(m), m, 0)), 0)
    p = e / np.maximum(e.sum(-1, keepdims=True), 1e-300)
    return np.einsum("bhqk,bkhd->bqhd", p, v)


def random_qkv(shape_q, kv_len, seed=0, dtype=jnp.float32):
    rng = np.random.default_rng(seed)
    b, q_len, h, d = shape_q
    return tuple(jnp.asarray(rng.normal(size=(b, n, h, d)), dtype) for n in (q_len, kv_len, kv_len))


@pytest.fixture(scope="module")
def masks(vocab):
    return objective_masks(vocab)


# One objective per distinct mask structure (the others are plain bidirectional like mlm):
# packed bidirectional, causal, prefix, UniLM's mixture, XLNet's and MPNet's two streams
# (separately and as one call), and the encoder-decoder's decoder and cross-attention.
MASK_KINDS = ("mlm", "clm", "prefix_lm", "unilm", "plm", "mpnet", "t5")


def objective_masks(vocab):
    """(name, AttentionMask) for the masks of every kind of objective, on packed, padded rows."""
    rng = np.random.default_rng(0)
    tokens = np.asarray(vocab.regular_ids()[rng.integers(0, 900, (2, 70))])
    segs = np.repeat([[1] * 30 + [2] * 33 + [0] * 7], 2, axis=0)
    tokens[:, [0, 30]], tokens[:, [29, 62]], tokens[segs == 0] = 2, 3, 0
    tokens, segs = jnp.asarray(tokens), jnp.asarray(segs)
    out = []
    for name in MASK_KINDS:
        make = jax.jit(functools.partial(obj.get(name), vocab=vocab))  # jitted: fast on CPU
        batch = make(jax.random.key(1), tokens, segment_ids=segs)
        out.append((name, batch.attention))
        if isinstance(batch, obj.Seq2SeqBatch):
            out.append((f"{name}-decoder", batch.decoder_attention))
            out.append((f"{name}-cross", batch.cross_attention))
        if isinstance(batch, obj.TwoStreamBatch):
            out.append((f"{name}-query", batch.query_attention))
            out.append(
                (
                    f"{name}-one-call",
                    AttentionMask.concat_queries(batch.attention, batch.query_attention),
                )
            )
    return out


@pytest.mark.parametrize("q_len,kv_len", [(16, 16), (24, 16)])
def test_reference_kernel_matches_naive(q_len, kv_len):
    rng = np.random.default_rng(0)
    q, k, v = random_qkv((3, q_len, 2, 8), kv_len)
    mask = AttentionMask(
        q_segment_ids=jnp.asarray(rng.integers(0, 3, (3, q_len))),
        kv_segment_ids=jnp.asarray(rng.integers(0, 3, (3, kv_len))),
        q_ranks=jnp.asarray(rng.integers(0, 6, (3, q_len))),
        kv_ranks=jnp.asarray(rng.integers(0, 6, (3, kv_len))),
    )
    allowed = np.asarray(mask.dense())
    assert (~allowed.any(-1)).any(), "want some fully masked rows in the test"
    bias = jnp.asarray(rng.normal(size=(1, 2, q_len, kv_len)), jnp.float32)
    for b in (None, bias):
        out = jax.jit(lambda *a: dot_product_attention(*a, implementation="xla", bias=b))(
            q, k, v, mask
        )
        np.testing.assert_allclose(out, naive_attention(q, k, v, allowed, b), atol=2e-6)


@pytest.mark.parametrize("chunks", [(16, 16), (7, 5), (64, 64)])
def test_chunked_matches_reference_on_every_objective(masks, chunks):
    for name, mask in masks:
        q, k, v = random_qkv((2, mask.q_len, 2, 8), mask.kv_len, seed=len(name))
        rng = np.random.default_rng(1)
        bias = jnp.asarray(rng.normal(size=(1, 2, mask.q_len, mask.kv_len)), jnp.float32)
        ref = dot_product_attention(q, k, v, mask, bias=bias, implementation="xla")
        out = jax.jit(
            lambda q, k, v, m, b: dot_product_attention(
                q, k, v, m, bias=b, implementation="chunked", q_chunk=chunks[0], kv_chunk=chunks[1]
            )
        )(q, k, v, mask, bias)
        np.testing.assert_allclose(out, ref, atol=2e-5, err_msg=name)


def test_query_rows_keeps_the_rows_of_every_objective_mask(masks):
    for name, mask in masks:
        for start in (0, 5, mask.q_len - 1):
            np.testing.assert_array_equal(
                mask.query_rows(start).dense(), mask.dense()[..., start:, :], err_msg=name
            )


def test_chunked_gradients_match_reference(masks):
    name, mask = next((n, m) for n, m in masks if n == "mpnet-one-call")
    q, k, v = random_qkv((2, mask.q_len, 2, 8), mask.kv_len)

    def loss(impl):
        f = lambda q, k, v: (
            dot_product_attention(q, k, v, mask, implementation=impl, q_chunk=16, kv_chunk=8) ** 2
        ).sum()
        return jax.grad(f, argnums=(0, 1, 2))(q, k, v)

    for a, b in zip(loss("xla"), loss("chunked")):
        np.testing.assert_allclose(a, b, atol=2e-5)


def test_two_stream_in_one_call_equals_two_calls(vocab):
    rng = np.random.default_rng(2)
    tokens = jnp.asarray(vocab.regular_ids()[rng.integers(0, 900, (2, 40))])
    for name in ("plm", "mpnet"):
        batch = jax.jit(functools.partial(obj.get(name), vocab=vocab))(jax.random.key(0), tokens)
        content = batch.attention
        lc, p = content.q_len, batch.query_attention.q_len
        qc, k, v = random_qkv((2, lc, 2, 8), lc, seed=3)
        qs = jnp.asarray(rng.normal(size=(2, p, 2, 8)), jnp.float32)
        out_c, out_s = two_stream_attention(
            qc, qs, k, v, content, batch.query_attention, implementation="xla"
        )
        np.testing.assert_allclose(out_c, dot_product_attention(qc, k, v, content), atol=1e-6)
        np.testing.assert_allclose(
            out_s, dot_product_attention(qs, k, v, batch.query_attention), atol=1e-6
        )


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
    ones = jnp.ones((1, 4), jnp.int32)
    windows = AttentionMask(
        q_segment_ids=ones,
        kv_segment_ids=ones,
        q_intervals=jnp.asarray(
            [[[[0, 1], [3, 4]], [[1, 3], [0, 0]], [[0, 4], [0, 0]], [[2, 2], [2, 2]]]]
        ),
    )
    np.testing.assert_array_equal(
        windows.dense()[0], [[1, 0, 0, 1], [0, 1, 1, 0], [1, 1, 1, 1], [0, 0, 0, 0]]
    )


def test_implementation_choice_and_fallback(caplog):
    x = jnp.zeros((1, 4, 1, 8))
    mask = AttentionMask.bidirectional(jnp.ones((1, 4), jnp.int32))
    with pytest.raises(ValueError, match="unknown attention implementation"):
        dot_product_attention(x, x, x, mask, implementation="magic")
    # The automatic choice picks only implementations verified on every backend: never cuDNN.
    assert choose_implementation(x.astype(jnp.bfloat16), x) == "xla"
    long = jax.ShapeDtypeStruct((1, 2048, 1, 8), jnp.bfloat16)
    assert choose_implementation(long, long) == "chunked"
    assert set(VERIFIED["gpu"]) <= {"xla", "chunked"}
    if jax.default_backend() != "gpu":
        assert "needs a GPU" in unsupported_reason("cudnn", x)
        with caplog.at_level("WARNING"):
            out = dot_product_attention(x + 1, x, x, mask, implementation="cudnn")
        assert "cudnn unavailable" in caplog.text  # a logged reason, never silently wrong
        np.testing.assert_array_equal(out, dot_product_attention(x + 1, x, x, mask))


@pytest.mark.skipif(jax.default_backend() != "gpu", reason="cuDNN attention needs an NVIDIA GPU")
def test_cudnn_matches_reference_on_every_objective(masks):
    for name, mask in masks:
        q, k, v = random_qkv((2, mask.q_len, 2, 64), mask.kv_len, dtype=jnp.bfloat16)
        ref = dot_product_attention(q, k, v, mask, implementation="xla")
        out = dot_product_attention(q, k, v, mask, implementation="cudnn")
        # Rows that see no key are zeros in both (masked after the kernel).
        np.testing.assert_allclose(
            np.asarray(out, np.float32), np.asarray(ref, np.float32), atol=2e-2, err_msg=name
        )


def test_tokamax_matches_reference_on_every_objective(masks):
    """tokamax picks its kernel per backend (XLA on CPU, Pallas on GPU/TPU); same results,
    forward and backward, with the scale and bias options (T5 uses scale 1)."""
    pytest.importorskip("tokamax")
    chosen = ("mlm", "clm", "unilm", "plm-one-call", "mpnet-one-call")
    for name, mask in [(n, m) for n, m in masks if n in chosen]:
        q, k, v = random_qkv((2, mask.q_len, 2, 8), mask.kv_len, seed=len(name))
        rng = np.random.default_rng(2)
        bias = jnp.asarray(rng.normal(size=(1, 2, mask.q_len, mask.kv_len)), jnp.float32)
        weights = jnp.asarray(rng.normal(size=q.shape), jnp.float32)

        def loss(q, implementation):
            out = dot_product_attention(
                q, k, v, mask, bias=bias, scale=1.0, implementation=implementation
            )
            return (out * weights).sum(), out

        (_, ref), ref_grad = jax.value_and_grad(loss, has_aux=True)(q, "xla")
        (_, out), out_grad = jax.jit(
            jax.value_and_grad(lambda q: loss(q, "tokamax"), has_aux=True)
        )(q)
        np.testing.assert_allclose(out, ref, atol=2e-5, err_msg=name)
        np.testing.assert_allclose(out_grad, ref_grad, atol=1e-4, err_msg=name)
