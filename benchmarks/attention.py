"""Attention implementations against the reference ("xla") in the same run: forward+backward
time and compiled temporary memory, on the masks of a few objectives.

    python benchmarks/attention.py                       # lengths 512 2048 4096 on this device
    python benchmarks/attention.py --lengths 1024 --batch 2 --heads 8

On a GPU the cuDNN path is timed too, with its achieved TFLOP/s against the device's peak.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.attention import AttentionMask, dot_product_attention
from lm_jax.runtime import reuse_freed_host_memory

PEAK_BF16_TFLOPS = {"H100": 989.0, "H200": 989.0, "A100": 312.0}  # dense, per device


def masks(batch: int, length: int) -> dict[str, AttentionMask]:
    ones = jnp.ones((batch, length), jnp.int32)
    positions = jnp.broadcast_to(jnp.arange(length), (batch, length))
    docs = jnp.broadcast_to(1 + jnp.arange(length) // 256, (batch, length))  # 256-token documents
    doc_pos = positions % 256
    return {
        "bidirectional": AttentionMask.bidirectional(ones),
        "causal": AttentionMask.ordered(ones, positions),
        "packed-causal": AttentionMask.ordered(docs, doc_pos),
    }


def timed(fn, *args, repeats: int) -> float:
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lengths", type=int, nargs="*", default=[512, 2048, 4096])
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    reuse_freed_host_memory()  # before the first JAX computation
    gpu = jax.default_backend() == "gpu"
    dtype = jnp.bfloat16 if gpu else jnp.float32
    impls = ["xla", "chunked"] + (["cudnn"] if gpu else [])
    device = jax.devices()[0].device_kind
    print(
        f"device {device}, {dtype.__name__}, batch {args.batch}, heads {args.heads}, "
        f"head_dim {args.head_dim}; forward+backward"
    )
    print(
        f"{'length':>6} {'mask':<14} {'impl':<8} {'ms':>9} {'vs xla':>7} {'temp MiB':>9} "
        f"{'TFLOP/s':>8}"
    )
    rng = np.random.default_rng(0)
    for length in args.lengths:
        shape = (args.batch, length, args.heads, args.head_dim)
        q, k, v = (jnp.asarray(rng.normal(size=shape), dtype) for _ in range(3))
        flops = 4 * 3 * args.batch * args.heads * length * length * args.head_dim  # fwd + bwd
        for mask_name, mask in masks(args.batch, length).items():
            base = None
            for impl in impls:
                loss = lambda q, k, v, m, impl=impl: (
                    dot_product_attention(q, k, v, m, implementation=impl).astype(jnp.float32).sum()
                )
                step = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))
                memory = step.lower(q, k, v, mask).compile().memory_analysis()
                temp = getattr(memory, "temp_size_in_bytes", 0) / 2**20
                seconds = timed(step, q, k, v, mask, repeats=args.repeats)
                base = base or seconds
                tflops = flops / seconds / 1e12
                peak = next((p for name, p in PEAK_BF16_TFLOPS.items() if name in device), None)
                rate = f"{tflops:8.1f}" + (
                    f" ({100 * tflops / peak:.0f}% of peak)" if gpu and peak else ""
                )
                print(
                    f"{length:>6} {mask_name:<14} {impl:<8} {1e3 * seconds:>9.1f} "
                    f"{base / seconds:>6.2f}x {temp:>9.1f} {rate}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
