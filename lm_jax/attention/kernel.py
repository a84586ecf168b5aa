"""The one attention entry point shared by every model and objective.

Implementations (`implementation=`):
- "xla": the reference. Dense boolean mask from the compact description, fp32 logits and
  softmax. Works on every backend; memory O(q_len * kv_len) per head.
- "chunked": memory-efficient pure XLA (Rabe & Staats 2021, the FlashAttention recurrence):
  queries in blocks, keys in blocks under `lax.scan` with an online softmax; each block's mask
  is built from the compact description inside the loop (never the whole dense mask), key
  blocks with nothing visible are skipped, and the block body is rematerialised in the backward
  pass. Any backend; for long sequences.
- "cudnn": `jax.nn.dot_product_attention(implementation="cudnn")` on NVIDIA GPUs (fp16/bf16,
  head_dim a multiple of 8 up to 128); the compact mask is densified for it (cuDNN takes no
  segment ids or ranks).
- "tokamax": `tokamax.dot_product_attention` (optional dependency), which picks its own best
  kernel per backend: Pallas Mosaic on TPU and GPU, Triton on GPU, XLA on CPU. The compact mask
  is densified for it.
- None (default): chosen per backend and shape by `choose_implementation`, among the
  implementations whose tests ran on that backend (`VERIFIED`): today the pure-XLA ones.
Every implementation returns zeros for a query row that sees no key (the kernels differ on such
rows, so the fused ones are masked afterwards). An implementation that cannot run the given
call falls back to "xla" with a logged reason.
"""

from __future__ import annotations

import functools
import importlib.util
import logging

import jax
import jax.numpy as jnp

from lm_jax.attention.mask import AttentionMask

log = logging.getLogger(__name__)
IMPLEMENTATIONS = ("xla", "chunked", "cudnn", "tokamax")
# Above this many (query, key) pairs per head, the automatic choice avoids the dense path.
CHUNKED_THRESHOLD = 1024 * 1024  # measured: chunked wins from about 1k tokens on CPU


def unsupported_reason(implementation: str, query: jnp.ndarray) -> str | None:
    """Why `implementation` cannot run this call here, or None if it can."""
    if implementation == "tokamax" and importlib.util.find_spec("tokamax") is None:
        return "tokamax is not installed (pip install tokamax)"
    if implementation == "cudnn":
        if jax.default_backend() != "gpu":
            return f"cudnn needs a GPU (backend is {jax.default_backend()})"
        if query.dtype not in (jnp.bfloat16, jnp.float16):
            return f"cudnn needs fp16/bf16 inputs, got {query.dtype}"
        head_dim = query.shape[-1]
        if head_dim % 8 or head_dim > 128:
            return f"cudnn needs head_dim a multiple of 8 and <= 128, got {head_dim}"
    return None


# Implementations the automatic choice may pick, per backend: those whose comparison with the
# reference (tests/test_attention.py) has run there. "cudnn" has never run on a GPU here and
# the tokamax kernels only on CPU (its XLA path), so both are used only when asked for.
VERIFIED = {"cpu": ("xla", "chunked"), "gpu": ("xla", "chunked"), "tpu": ("xla", "chunked")}


def choose_implementation(query: jnp.ndarray, key: jnp.ndarray) -> str:
    """ "chunked" above `CHUNKED_THRESHOLD` (query, key) pairs, else "xla" (see `VERIFIED`)."""
    verified = VERIFIED.get(jax.default_backend(), ("xla",))
    if "chunked" in verified and query.shape[1] * key.shape[1] > CHUNKED_THRESHOLD:
        return "chunked"
    return "xla"


@functools.lru_cache(maxsize=None)
def _log_fallback(implementation: str, reason: str) -> None:
    log.warning("attention: %s unavailable (%s); using xla", implementation, reason)


def dot_product_attention(
    query: jnp.ndarray,
    key: jnp.ndarray,
    value: jnp.ndarray,
    mask: AttentionMask,
    *,
    bias: jnp.ndarray | None = None,
    scale: float | None = None,
    implementation: str | None = None,
    q_chunk: int = 512,
    kv_chunk: int = 512,
) -> jnp.ndarray:
    """Scaled dot-product attention (Vaswani et al. 2017) under a compact `AttentionMask`.

    Args:
      query: [batch, q_len, heads, head_dim].
      key, value: [batch, kv_len, heads, head_dim]; kv_len may differ from q_len.
      mask: the compact mask description; rows with no visible key return zeros.
      bias: optional additive logits bias broadcastable to [batch, heads, q_len, kv_len]
        (relative-position terms of XLNet, MPNet, T5).
      scale: logits multiplier; None is 1/sqrt(head_dim) (T5 uses 1: its scale is folded into
        the initialisation).
      implementation: one of `IMPLEMENTATIONS`, or None for `choose_implementation`.
      q_chunk, kv_chunk: block sizes of the "chunked" implementation.

    Returns:
      [batch, q_len, heads, head_dim] in the query's dtype.
    """
    if implementation is None:
        implementation = choose_implementation(query, key)
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(
            f"unknown attention implementation {implementation!r}; choose from {IMPLEMENTATIONS}"
        )
    reason = unsupported_reason(implementation, query)
    if reason is not None:
        _log_fallback(implementation, reason)
        implementation = "xla"
    if scale is None:
        scale = query.shape[-1] ** -0.5
    if implementation == "chunked":
        return _chunked(query, key, value, mask, bias, scale, q_chunk, kv_chunk)
    if implementation == "cudnn":
        allowed = mask.dense()[:, None]  # [batch, 1, q, kv]
        out = jax.nn.dot_product_attention(
            query, key, value, bias=bias, mask=allowed, scale=scale, implementation="cudnn"
        )
        return _zero_unseen_rows(out, allowed, query.dtype)
    if implementation == "tokamax":
        return _tokamax(query, key, value, mask, bias, scale)
    return _reference(query, key, value, mask, bias, scale)


def _tokamax(query, key, value, mask, bias, scale):
    import tokamax
    from absl import flags

    # tokamax reads its options from absl flags and would parse sys.argv itself (failing on the
    # host program's own arguments, e.g. pytest's); its defaults are what we want.
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()

    allowed = mask.dense()[:, None]  # [batch, 1, q, kv]
    out = tokamax.dot_product_attention(query, key, value, bias=bias, mask=allowed, scale=scale)
    return _zero_unseen_rows(out, allowed, query.dtype)


def _zero_unseen_rows(out, allowed, dtype):
    """The contract of every implementation: a query that sees no key returns zeros (fused
    kernels differ on such rows). `allowed` is the dense mask [batch, 1, q, kv]."""
    visible = allowed.any(-1)[:, 0, :, None, None]
    return jnp.where(visible, out, 0).astype(dtype)


def two_stream_attention(
    content_query: jnp.ndarray,
    stream_query: jnp.ndarray,
    key: jnp.ndarray,
    value: jnp.ndarray,
    content_mask: AttentionMask,
    stream_mask: AttentionMask,
    *,
    content_bias: jnp.ndarray | None = None,
    stream_bias: jnp.ndarray | None = None,
    implementation: str | None = None,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """XLNet / MPNet two-stream attention as one call: query rows are the content rows then the
    query-stream rows, keys and values come from the content stream only (one launch, one K/V
    read; no self-attention over a doubled sequence). Returns (content out, stream out)."""
    n = content_query.shape[1]
    bias = None
    if content_bias is not None or stream_bias is not None:
        shape = lambda q: (q.shape[0], q.shape[2], q.shape[1], key.shape[1])
        cb = jnp.zeros(shape(content_query)) if content_bias is None else content_bias
        sb = jnp.zeros(shape(stream_query)) if stream_bias is None else stream_bias
        cb, sb = (
            jnp.broadcast_to(cb, shape(content_query)),
            jnp.broadcast_to(sb, shape(stream_query)),
        )
        bias = jnp.concatenate([cb, sb], axis=2)
    out = dot_product_attention(
        jnp.concatenate([content_query, stream_query], axis=1),
        key,
        value,
        AttentionMask.concat_queries(content_mask, stream_mask),
        bias=bias,
        implementation=implementation,
    )
    return out[:, :n], out[:, n:]


def _reference(query, key, value, mask, bias, scale):
    allowed = mask.dense()[:, None, :, :]  # [batch, 1, q, kv], broadcast over heads
    logits = jnp.einsum("bqhd,bkhd->bhqk", query, key, preferred_element_type=jnp.float32) * scale
    if bias is not None:
        logits = logits + bias.astype(jnp.float32)
    logits = jnp.where(allowed, logits, -jnp.inf)
    peak = jnp.max(logits, axis=-1, keepdims=True)
    weights = jnp.exp(logits - jnp.where(jnp.isfinite(peak), peak, 0.0))
    total = weights.sum(-1, keepdims=True)
    weights = weights / jnp.where(total > 0, total, 1.0)
    out = jnp.einsum("bhqk,bkhd->bqhd", weights.astype(value.dtype), value)
    return out.astype(query.dtype)


def _pad_axis(x, size, axis, value=0):
    pad = size - x.shape[axis]
    if pad == 0:
        return x
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, pad)
    return jnp.pad(x, widths, constant_values=value)


def _chunked(query, key, value, mask, bias, scale, q_chunk, kv_chunk):
    batch, q_len, heads, head_dim = query.shape
    kv_len = key.shape[1]
    qc, kc = min(q_chunk, q_len), min(kv_chunk, kv_len)
    nq, nk = -(-q_len // qc), -(-kv_len // kc)
    qp, kp = nq * qc, nk * kc
    # Padded queries and keys get segment 0: they see nothing and nobody sees them.
    padded = AttentionMask(
        q_segment_ids=_pad_axis(mask.q_segment_ids, qp, -1),
        kv_segment_ids=_pad_axis(mask.kv_segment_ids, kp, -1),
        q_ranks=None if mask.q_ranks is None else _pad_axis(mask.q_ranks, qp, -1),
        kv_ranks=None if mask.kv_ranks is None else _pad_axis(mask.kv_ranks, kp, -1),
        q_intervals=None if mask.q_intervals is None else _pad_axis(mask.q_intervals, qp, -3),
    )
    q = _pad_axis(query, qp, 1)
    k, v = _pad_axis(key, kp, 1), _pad_axis(value, kp, 1)
    if bias is not None:
        bias = jnp.broadcast_to(bias, (batch, heads, q_len, kv_len))
        bias = _pad_axis(_pad_axis(bias, qp, 2), kp, 3)

    def query_block(qi):
        q_blk = jax.lax.dynamic_slice_in_dim(q, qi * qc, qc, axis=1).astype(jnp.float32) * scale

        @functools.partial(jax.checkpoint, prevent_cse=False)
        def key_block(carry, ki):
            peak, total, acc = carry  # [b, h, qc], [b, h, qc], [b, h, qc, d]
            allowed = padded.block(qi * qc, qc, ki * kc, kc)[:, None]  # [b, 1, qc, kc]

            def attend(carry):
                peak, total, acc = carry
                k_blk = jax.lax.dynamic_slice_in_dim(k, ki * kc, kc, axis=1)
                v_blk = jax.lax.dynamic_slice_in_dim(v, ki * kc, kc, axis=1)
                s = jnp.einsum("bqhd,bkhd->bhqk", q_blk, k_blk.astype(jnp.float32))
                if bias is not None:
                    s = s + jax.lax.dynamic_slice(
                        bias, (0, 0, qi * qc, ki * kc), (batch, heads, qc, kc)
                    ).astype(jnp.float32)
                s = jnp.where(allowed, s, -jnp.inf)
                new_peak = jnp.maximum(peak, s.max(-1))
                safe = jnp.where(jnp.isfinite(new_peak), new_peak, 0.0)
                p = jnp.exp(s - safe[..., None])
                correction = jnp.exp(jnp.where(jnp.isfinite(peak), peak - safe, -jnp.inf))
                total = total * correction + p.sum(-1)
                acc = acc * correction[..., None] + jnp.einsum(
                    "bhqk,bkhd->bhqd", p, v_blk.astype(jnp.float32)
                )
                return new_peak, total, acc

            # Blocks the mask hides entirely are skipped: the compact mask pays off here.
            return jax.lax.cond(allowed.any(), attend, lambda c: c, carry), None

        init = (
            jnp.full((batch, heads, qc), -jnp.inf, jnp.float32),
            jnp.zeros((batch, heads, qc), jnp.float32),
            jnp.zeros((batch, heads, qc, head_dim), jnp.float32),
        )
        (_, total, acc), _ = jax.lax.scan(key_block, init, jnp.arange(nk))
        out = acc / jnp.where(total > 0, total, 1.0)[..., None]
        return jnp.transpose(out, (0, 2, 1, 3))  # [b, qc, h, d]

    blocks = jax.lax.map(query_block, jnp.arange(nq))  # [nq, b, qc, h, d]
    out = jnp.transpose(blocks, (1, 0, 2, 3, 4)).reshape(batch, qp, heads, head_dim)
    return out[:, :q_len].astype(query.dtype)
