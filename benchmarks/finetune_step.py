"""Fine-tuning step throughput in one run: our jitted train step against Hugging Face's
PyTorch `BertForSequenceClassification` / `BertForQuestionAnswering` step, the same config,
weights and AdamW (global-norm clipping 1.0, dropout 0.1), on the same batch; examples/s and
the ratio.

    python benchmarks/finetune_step.py                 # BERT-small: 4 layers, hidden 256,
                                                       # seq 128, batch 32, vocab 30522
    python benchmarks/finetune_step.py --task qa --seq 384 --batch 8    # SQuAD's shape
    python benchmarks/finetune_step.py --seq 64 --batch 16 --repeats 10

Our step runs on a data mesh over one JAX CPU device per usable core (`--cpu-devices`), as
the command line does on a CPU-only host; torch uses its default intra-op threads (one per
core). The steps take turns, so a drift in this VM's speed touches both alike. Requires the
`bench` extra.
"""

from __future__ import annotations

import argparse
import os

import jax
import ml_collections
import numpy as np
import torch
import transformers
from models import (  # benchmarks/models.py, beside this script
    add_shape_arguments,
    compiled_runner,
    encoder_forward_flops,
    median_times,
    torch_matmul_rate,
    torch_step,
)

from lm_jax.finetune.qa_data import padded_positions
from lm_jax.finetune.tasks import sequence_task, span_task
from lm_jax.models.convert import from_hf_state_dict
from lm_jax.runtime import reuse_freed_host_memory
from lm_jax.sharding import global_batch, make_mesh
from lm_jax.train.metrics import matmul_rate
from lm_jax.train.optimizer import make_optimizer
from lm_jax.train.settings import train_settings
from lm_jax.train.step import make_train_step, place_train_state

LABELS = 2
ARCHITECTURES = {
    "classification": "BertForSequenceClassification",
    "qa": "BertForQuestionAnswering",
}


def peer_model(a):
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        intermediate_size=4 * a.hidden,
        max_position_embeddings=max(512, a.seq),
        num_labels=LABELS,
        attention_probs_dropout_prob=0.0,  # lm_jax has none; the peer skips that work too
    )
    return getattr(transformers, ARCHITECTURES[a.task])(config).train()


def batch(a) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    lengths = rng.integers(a.seq // 2, a.seq + 1, a.batch)
    real = np.arange(a.seq)[None] < lengths[:, None]
    ids = np.where(real, rng.integers(1000, a.vocab, (a.batch, a.seq)), 0).astype(np.int32)
    out = dict(
        input_ids=ids,
        token_type_ids=np.zeros_like(ids),
        segment_ids=real.astype(np.int32),
        labels=rng.integers(0, LABELS, a.batch).astype(np.int32),
        weights=np.ones(a.batch, np.float32),
    )
    if a.task == "qa":
        del out["labels"]
        out["positions"] = padded_positions(real, "bert")
        out["start_positions"] = rng.integers(0, lengths // 2).astype(np.int32)
        out["end_positions"] = (out["start_positions"] + rng.integers(0, 5, a.batch)).astype(
            np.int32
        )
    return out


def our_step(peer, rows, devices, task: str):
    state_dict = {k: v.detach().numpy() for k, v in peer.state_dict().items()}
    model = from_hf_state_dict(state_dict, peer.config.to_dict(), ARCHITECTURES[task])
    t = train_settings()
    t.update(learning_rate=2e-5, warmup_steps=0, steps=1000, b2=0.999, eps=1e-8)
    optimizer, _ = make_optimizer(ml_collections.ConfigDict(t))
    mesh = make_mesh(data=len(devices), devices=devices)
    graphdef, state, sharding = place_train_state(model, optimizer, mesh)
    step_task = span_task() if task == "qa" else sequence_task("classification")
    step = make_train_step(graphdef, optimizer, step_task, 0, mesh, sharding)
    return compiled_runner(step, state, global_batch(rows, mesh), mesh)[0]


def peer_step(peer, rows):
    optimizer = torch.optim.AdamW(peer.parameters(), lr=2e-5, weight_decay=0.01)
    t = {k: torch.tensor(v).long() for k, v in rows.items() if k != "weights"}
    targets = ("labels",) if "labels" in t else ("start_positions", "end_positions")

    loss = lambda: (
        peer(
            input_ids=t["input_ids"],
            token_type_ids=t["token_type_ids"],
            attention_mask=t["segment_ids"],
            **{k: t[k] for k in targets},
        ).loss
    )
    return torch_step(peer, optimizer, loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shape_arguments(parser)
    parser.add_argument("--task", choices=sorted(ARCHITECTURES), default="classification")
    parser.add_argument("--cpu-devices", type=int, default=len(os.sched_getaffinity(0)))
    a = parser.parse_args()
    if a.cpu_devices < 1 or a.batch % a.cpu_devices:
        parser.error(f"--cpu-devices {a.cpu_devices} must be >= 1 and divide --batch {a.batch}")
    jax.config.update("jax_num_cpu_devices", a.cpu_devices)  # before the first computation
    reuse_freed_host_memory()
    devices = jax.devices()
    print(
        f"{ARCHITECTURES[a.task]}: {a.layers} layers, hidden {a.hidden}, seq {a.seq}, batch "
        f"{a.batch}, vocab {a.vocab}; lm_jax on {len(devices)} CPU device(s), torch "
        f"{torch.__version__} ({torch.get_num_threads()} threads)"
    )
    peer, rows = peer_model(a), batch(a)
    ours = our_step(peer, rows, devices, a.task)
    rates = [matmul_rate(), torch_matmul_rate()]
    times = median_times({"lm_jax": ours, "transformers": peer_step(peer, rows)}, a.repeats)
    rates += [matmul_rate(), torch_matmul_rate()]
    for name, seconds in times.items():
        print(f"  {name:<13} {1e3 * seconds:8.1f} ms/step  {a.batch / seconds:8.1f} examples/s")
    print(f"  speed-up: {times['transformers'] / times['lm_jax']:.2f}x")
    print_floor(3 * encoder_forward_flops(a), max(rates), times)


def print_floor(flops: float, rate: float, times: dict[str, float]) -> None:
    """How close each step is to the fastest this CPU allows: the step's model FLOPs at the
    better of XLA's and torch's measured fp32 matmul rates (the heads and AdamW, a small
    share, left out), and the rate the aim of 2x transformers would need."""
    floor = flops / rate
    print(
        f"  model FLOPs {flops / 1e9:.1f} G per step (encoder forward + backward); at the best "
        f"measured fp32 matmul rate, {rate / 1e9:.1f} GFLOP/s, no step takes under "
        f"{1e3 * floor:.0f} ms"
    )
    for name, seconds in times.items():
        print(f"  {name:<13} at {100 * floor / seconds:.0f}% of that rate")
    needed = 2 * flops / times["transformers"]
    print(
        f"  2x transformers would need {needed / 1e9:.1f} GFLOP/s, "
        f"{100 * needed / rate:.0f}% of the measured matmul rate"
    )


if __name__ == "__main__":
    main()
