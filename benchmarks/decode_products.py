"""What bounds a decoding step on this CPU (benchmarks/README.md, "Generation, 2026-12-07"):
the memory's read rate, and the rate at which XLA and torch multiply a few rows by a
BART-base weight matrix, in the [in, out] layout the models train with, the [out, in] layout
`StepWeights` decodes with, and one row (XLA's GEMV path); then twelve such products in a
64-step loop, each layout. Medians; weights in copies larger than the caches.

    python benchmarks/decode_products.py            # 8 rows (greedy at batch 8)
    python benchmarks/decode_products.py --rows 32  # 4 beams
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import torch

SHAPES = [(768, 3072), (3072, 768), (768, 50265)]  # BART-base feed-forward, output projection
COPIES_BYTES = 120_000_000  # each product cycles over copies this large: no cache reuse


def median_seconds(run, repeats: int = 9) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def transposed_dot(x, w_t):
    """x [M, K] . w_t [N, K]^T: the weight read in the [out, in] layout."""
    return jax.lax.dot_general(x, w_t, (((1,), (1,)), ((), ())))


def product_rates(rows: int, rng: np.random.Generator) -> None:
    for k, n in SHAPES:
        copies = max(1, COPIES_BYTES // (4 * k * n))
        weights = [rng.standard_normal((k, n), np.float32) for _ in range(copies)]
        x = rng.standard_normal((rows, k), np.float32)
        forms = {
            "XLA [in, out]": (jax.jit(lambda x, ws: [x @ w for w in ws]), weights, x),
            "XLA [out, in]": (
                jax.jit(lambda x, ws: [transposed_dot(x, w) for w in ws]),
                [np.ascontiguousarray(w.T) for w in weights],
                x,
            ),
            "XLA one row": (
                jax.jit(lambda x, ws: [transposed_dot(x, w) for w in ws]),
                [np.ascontiguousarray(w.T) for w in weights],
                x[:1],
            ),
        }
        cells = []
        for name, (f, ws, xs) in forms.items():
            ws, xs = [jnp.asarray(w) for w in ws], jnp.asarray(xs)
            jax.block_until_ready(f(xs, ws))
            seconds = median_seconds(lambda: jax.block_until_ready(f(xs, ws))) / copies
            cells.append(f"{name} {seconds * 1e3:.2f} ms ({4 * k * n / seconds / 1e9:.1f} GB/s)")
        tw, tx = [torch.from_numpy(w) for w in weights], torch.from_numpy(x)
        seconds = median_seconds(lambda: [tx @ w for w in tw]) / copies
        cells.append(f"torch {seconds * 1e3:.2f} ms ({4 * k * n / seconds / 1e9:.1f} GB/s)")
        print(f"[{rows}, {k}] x [{k}, {n}]: " + "; ".join(cells), flush=True)


def loop_of_products(rows: int, rng: np.random.Generator) -> None:
    """Six feed-forward blocks per step, 64 steps: the training layout against the kernels
    transposed before the loop and back inside it, as `StepWeights` does."""
    layers = 6
    up = [jnp.asarray(rng.standard_normal((768, 3072), np.float32) * 0.02) for _ in range(layers)]
    down = [jnp.asarray(rng.standard_normal((3072, 768), np.float32) * 0.02) for _ in range(layers)]
    x = jnp.asarray(rng.standard_normal((rows, 768), np.float32))

    def steps(ws, x, read):
        def body(_, x):
            for i in range(layers):
                x = jnp.tanh(x @ read(ws[i])) @ read(ws[layers + i])
            return x

        return jax.lax.fori_loop(0, 64, body, x)

    plain = jax.jit(lambda ws, x: steps(ws, x, lambda w: w))
    flipped = jax.jit(
        lambda ws, x: steps(jax.lax.optimization_barrier([w.T for w in ws]), x, lambda w: w.T)
    )
    ws = up + down
    same = bool((plain(ws, x) == flipped(ws, x)).all())
    a = median_seconds(lambda: plain(ws, x).block_until_ready(), 5) / 64
    b = median_seconds(lambda: flipped(ws, x).block_until_ready(), 5) / 64
    print(
        f"12 products of {rows} rows a step, 64 steps: [in, out] {a * 1e3:.1f} ms a step, "
        f"[out, in] {b * 1e3:.1f} ms ({a / b:.2f}x); bit-identical: {same}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8)
    args = parser.parse_args()
    print(f"{time.strftime('%Y-%m-%d %H:%M')}, torch threads {torch.get_num_threads()}")
    big = jnp.ones(100_000_000, jnp.float32)  # 400 MB
    total = jax.jit(jnp.sum)
    total(big).block_until_ready()
    seconds = median_seconds(lambda: total(big).block_until_ready())
    print(f"memory: a 400 MB sum reads {big.nbytes / seconds / 1e9:.1f} GB/s", flush=True)
    rng = np.random.default_rng(0)
    product_rates(args.rows, rng)
    loop_of_products(args.rows, rng)


if __name__ == "__main__":
    main()
