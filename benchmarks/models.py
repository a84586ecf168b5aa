"""Forward + backward of our BERT masked-LM model against Hugging Face's PyTorch
`BertForMaskedLM` with the same config and weights, in the same run.

    python benchmarks/models.py                          # 4 layers, hidden 256, seq 128, batch 32
    python benchmarks/models.py --layers 12 --hidden 768 --heads 12 --batch 8

Both compute the MLM loss of the same 15% masked positions (ours gathers them before the
vocabulary projection; Hugging Face projects every position and ignores labels of -100).
Requires the `bench` extra (torch, transformers). Prints ms per step and the speed-up.
"""

from __future__ import annotations

import argparse
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import transformers
from flax import nnx

import lm_jax.objectives as objectives
from lm_jax.data.tokenizer import VocabInfo
from lm_jax.models.convert import from_hf_state_dict


def median_time(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--heads", type=int, default=4)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--vocab", type=int, default=30522)
    parser.add_argument("--repeats", type=int, default=10)
    args = parser.parse_args()

    config = transformers.BertConfig(
        vocab_size=args.vocab,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=4 * args.hidden,
        max_position_embeddings=max(512, args.seq),
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
    )
    torch.manual_seed(0)
    peer = transformers.BertForMaskedLM(config).train()
    ours = from_hf_state_dict(
        {k: v.numpy() for k, v in peer.state_dict().items()}, config.to_dict()
    )
    graphdef, params = nnx.split(ours)

    vocab = VocabInfo(size=args.vocab, pad_id=0, unk_id=100, cls_id=101, sep_id=102, mask_id=103)
    rng = np.random.default_rng(0)
    tokens = jnp.asarray(rng.integers(1000, args.vocab, (args.batch, args.seq)), jnp.int32)
    batch = objectives.mlm(jax.random.key(0), tokens, vocab=vocab)

    @jax.jit
    def ours_grad(params):
        def loss(params):
            logits = nnx.merge(graphdef, params)(batch)
            nll = optax.softmax_cross_entropy_with_integer_labels(logits, batch.masked_targets)
            return (nll * batch.masked_weights).sum() / batch.masked_weights.sum()

        return jax.grad(loss)(params)

    ids = torch.tensor(np.asarray(batch.inputs))
    labels = np.full((args.batch, args.seq), -100)
    sel = np.asarray(batch.loss_weights) > 0
    labels[sel] = np.asarray(tokens)[sel]
    labels = torch.tensor(labels)

    def peer_step():
        peer.zero_grad(set_to_none=True)
        peer(input_ids=ids, labels=labels).loss.backward()

    ours_s = median_time(lambda: jax.block_until_ready(ours_grad(params)), args.repeats)
    peer_s = median_time(peer_step, args.repeats)
    tokens_per_step = args.batch * args.seq
    print(
        f"BERT {args.layers} layers, hidden {args.hidden}, seq {args.seq}, batch {args.batch}, "
        f"vocab {args.vocab}; forward+backward, {jax.devices()[0].device_kind}, "
        f"torch {torch.__version__} with {torch.get_num_threads()} threads"
    )
    print(f"lm_jax (jit)        {1e3 * ours_s:8.1f} ms  {tokens_per_step / ours_s:10,.0f} tokens/s")
    print(
        f"transformers (torch) {1e3 * peer_s:7.1f} ms  {tokens_per_step / peer_s:10,.0f} tokens/s"
    )
    print(f"speed-up            {peer_s / ours_s:8.2f}x")


if __name__ == "__main__":
    main()
