"""Train-step throughput in one run: our jitted MLM train step against Hugging Face's PyTorch
`BertForMaskedLM` step with the same config, against this machine's measured fp32 matmul rate
(model FLOP/s as a fraction of it: the CPU analogue of MFU), and the step time of other
objectives relative to `mlm` at the same size.

    python benchmarks/train_step.py            # BERT-small: 4 layers, hidden 256, seq 128,
                                               # batch 32, vocab 30522
    python benchmarks/train_step.py --objectives mlm plm mpnet span electra --repeats 5

Our steps run on a data mesh over one JAX CPU device per core (`--cpu-devices`, default: the
cores this process may use; `jax_num_cpu_devices`), the batch split between them, as the command
line runs on a CPU-only host; the MLM step on a single device is timed too. Both steps do
forward, backward, global-norm clipping and an AdamW update with dropout 0.1; ours also draws
the masks inside the step (the objective is part of our jitted step), Hugging Face's gets
pre-masked inputs (its collator time is not counted). The steps take turns, so a drift in this
VM's speed touches all alike. Each step's FLOPs as XLA counts them in the compiled program show
how much of a time ratio is the objective's extra work. Requires the `bench` extra.
"""

from __future__ import annotations

import argparse
import os

import jax
import numpy as np
import torch
import transformers
from flax import nnx
from models import (  # benchmarks/models.py, beside this script
    add_shape_arguments,
    compiled_runner,
    encoder_forward_flops,
    median_times,
    torch_step,
)

from lm_jax.models import TransformerConfig
from lm_jax.pretrain.tasks import step_task, task_of
from lm_jax.runtime import reuse_freed_host_memory
from lm_jax.sharding import global_batch, make_mesh
from lm_jax.train.metrics import matmul_rate
from lm_jax.train.optimizer import make_optimizer
from lm_jax.train.settings import train_settings
from lm_jax.train.step import init_train_state, make_train_step
from lm_jax.vocab import VocabInfo


def mlm_step_flops(a, predicted: float) -> float:
    """Model FLOPs of one MLM train step (forward + backward = 3x forward; Kaplan et al. 2020):
    dense layers, attention scores and values, and the LM head on the predicted tokens."""
    head = 2 * (a.hidden * a.hidden + a.hidden * a.vocab) * predicted
    return 3 * (encoder_forward_flops(a) + head)


def our_step(objective: str, a, devices: list[jax.Device]):
    """A jitted train step of `objective` with its model on a data mesh over `devices` (a
    function running one step), and the FLOPs XLA counts in the compiled step (all devices)."""
    vocab = VocabInfo(
        size=a.vocab,
        pad_id=0,
        unk_id=100,
        cls_id=101,
        sep_id=102,
        mask_id=103,
        sentinel_ids=tuple(range(a.vocab - 1, a.vocab - 101, -1)),
    )
    cfg = TransformerConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        num_layers=a.layers,
        num_heads=a.heads,
        intermediate_size=4 * a.hidden,
        max_position=max(512, a.seq),
        dropout_rate=0.1,
    )
    task = task_of(objective)
    mesh = make_mesh(data=len(devices), devices=devices)
    train = train_settings()  # every field make_optimizer reads, then the benchmark's
    train.update(learning_rate=1e-4, warmup_steps=10, b2=0.999, eps=1e-6, clip_norm=1.0)
    optimizer, _ = make_optimizer(train)
    graphdef, state, state_sharding = init_train_state(
        lambda: task.build(cfg, task.settings(), nnx.Rngs(0)), optimizer, mesh
    )
    step = make_train_step(
        graphdef, optimizer, step_task(objective, {}, vocab), 0, mesh, state_sharding
    )
    rng = np.random.default_rng(0)
    tokens = rng.integers(1000, a.vocab - 200, (a.batch, a.seq)).astype(np.int32)
    tokens[:, 0], tokens[:, -1] = vocab.cls_id, vocab.sep_id
    rows = global_batch(
        {
            "tokens": tokens,
            "segment_ids": np.ones((a.batch, a.seq), np.int32),
            "word_starts": rng.random((a.batch, a.seq)) < 0.75,
        },
        mesh,
    )
    run, compiled = compiled_runner(step, state, rows, mesh)
    return run, compiled.cost_analysis()["flops"] * mesh.size  # cost_analysis: per device


def peer_step(a):
    config = transformers.BertConfig(
        vocab_size=a.vocab,
        hidden_size=a.hidden,
        num_hidden_layers=a.layers,
        num_attention_heads=a.heads,
        intermediate_size=4 * a.hidden,
        max_position_embeddings=max(512, a.seq),
    )
    torch.manual_seed(0)
    model = transformers.BertForMaskedLM(config).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.01)
    rng = np.random.default_rng(0)
    ids = torch.tensor(rng.integers(1000, a.vocab, (a.batch, a.seq)))
    labels = torch.full((a.batch, a.seq), -100)
    chosen = torch.tensor(rng.random((a.batch, a.seq)) < 0.15)
    labels[chosen] = ids[chosen]

    return torch_step(model, optimizer, lambda: model(input_ids=ids, labels=labels).loss)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_shape_arguments(parser)
    parser.add_argument(
        "--objectives", nargs="*", default=["mlm", "plm", "mpnet", "span", "electra"]
    )
    parser.add_argument(
        "--default-malloc",
        action="store_true",
        help="keep glibc's default malloc settings (to measure what reuse_freed_host_memory, "
        "applied otherwise, gains)",
    )
    parser.add_argument(
        "--cpu-devices",
        type=int,
        default=len(os.sched_getaffinity(0)),
        help="JAX CPU devices in the data mesh of our steps (default: the usable cores)",
    )
    a = parser.parse_args()
    if a.cpu_devices < 1 or a.batch % a.cpu_devices:
        parser.error(f"--cpu-devices {a.cpu_devices} must be >= 1 and divide --batch {a.batch}")
    jax.config.update("jax_num_cpu_devices", a.cpu_devices)  # before the first computation
    reused = not a.default_malloc and reuse_freed_host_memory()
    devices = jax.devices()
    print(
        f"{a.layers} layers, hidden {a.hidden}, seq {a.seq}, batch {a.batch}, vocab {a.vocab}; "
        f"lm_jax on a data mesh over {len(devices)} {devices[0].device_kind} device(s), "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); freed host memory "
        f"{'reused' if reused else 'returned to the OS (glibc defaults)'}"
    )
    before = matmul_rate()
    steps, counted = {}, {}
    for name in a.objectives:
        steps[name], counted[name] = our_step(name, a, devices)
    if len(devices) > 1 and "mlm" in a.objectives:
        steps["mlm, 1 device"], _ = our_step("mlm", a, devices[:1])
    times = median_times({**steps, "transformers": peer_step(a)}, a.repeats)
    peer = times.pop("transformers")
    single_mlm = times.pop("mlm, 1 device", None)
    after = matmul_rate()
    peak = max(before, after)  # this VM's rate drifts; the higher is the stricter yardstick
    print(
        f"measured fp32 matmul rate: {before / 1e9:.1f} GFLOP/s before the steps, "
        f"{after / 1e9:.1f} after; using {peak / 1e9:.1f}"
    )
    tokens = a.batch * a.seq
    mlm = times.get("mlm")
    if mlm is not None:
        predicted = a.batch * round(0.15 * a.seq)
        flops = mlm_step_flops(a, predicted)
        print(
            f"mlm step: lm_jax {1e3 * mlm:.0f} ms ({tokens / mlm:,.0f} tokens/s), "
            f"transformers {1e3 * peer:.0f} ms ({tokens / peer:,.0f} tokens/s): "
            f"{peer / mlm:.2f}x"
        )
        print(
            f"model FLOPs {flops / 1e9:.1f} G per step -> {flops / mlm / 1e9:.1f} GFLOP/s = "
            f"{100 * flops / mlm / peak:.0f}% of the measured matmul rate"
        )
        if single_mlm is not None:
            print(
                f"mlm step on 1 device: {1e3 * single_mlm:.0f} ms ({peer / single_mlm:.2f}x "
                f"transformers, {100 * flops / single_mlm / peak:.0f}% of the matmul rate)"
            )
    print(f"{'step':8} {'ms':>8} {'x mlm':>7} {'XLA-counted GFLOP':>18} {'x mlm':>7}")
    for name, seconds in times.items():
        flops = counted[name] / 1e9
        if mlm:
            base = counted["mlm"] / 1e9
            print(
                f"{name:8} {1e3 * seconds:8.0f} {seconds / mlm:7.2f} {flops:18.1f} "
                f"{flops / base:7.2f}"
            )
        else:
            print(f"{name:8} {1e3 * seconds:8.0f} {'':7} {flops:18.1f}")


if __name__ == "__main__":
    main()
