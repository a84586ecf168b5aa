"""LSTM_reg's training step time (forward and backward through `jax.grad`, dropout on) at a
width, batch 32, 64 tokens: what sets the width the downstream table runs it at. No peer:
hedwig's PyTorch RegLSTM is not installed here.

    python benchmarks/lstm_step.py --hidden 512 --embedding 300   # hedwig's width
    python benchmarks/lstm_step.py --hidden 128 --embedding 128   # the downstream table's
"""

from __future__ import annotations

import argparse
import datetime
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from flax import nnx  # noqa: E402

from lm_jax.attention import AttentionMask  # noqa: E402
from lm_jax.models.lstm import LSTMConfig, LSTMRegClassifier  # noqa: E402


def step_seconds(hidden: int, embedding: int, repeats: int = 5) -> float:
    model = LSTMRegClassifier(
        LSTMConfig(vocab_size=8100, hidden_size=hidden, embedding_size=embedding),
        2,
        rngs=nnx.Rngs(0),
    )
    graphdef, params = nnx.split(model)
    ids = jnp.asarray(np.random.default_rng(0).integers(1, 8100, (32, 64)), jnp.int32)
    segments = jnp.ones_like(ids)

    def loss(params, key):
        logits = nnx.merge(graphdef, params)(
            ids,
            segments,
            AttentionMask.bidirectional(segments),
            deterministic=False,
            rngs=nnx.Rngs(dropout=key),
        )
        return logits.sum()

    grad = jax.jit(jax.grad(loss))
    jax.block_until_ready(grad(params, jax.random.key(0)))  # compile
    start = time.perf_counter()
    for i in range(repeats):
        jax.block_until_ready(grad(params, jax.random.key(i + 1)))
    return (time.perf_counter() - start) / repeats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--embedding", type=int, default=300)
    args = parser.parse_args()
    seconds = step_seconds(args.hidden, args.embedding)
    print(
        f"{datetime.date.today()} {platform.processor() or platform.machine()}: LSTM_reg "
        f"hidden {args.hidden}, embedding {args.embedding}: {seconds:.3f} s per step"
    )


if __name__ == "__main__":
    main()
