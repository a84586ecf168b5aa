"""Metrics: a JSON-lines log, TensorBoard event files, model FLOPs utilisation, loss plot."""

from __future__ import annotations

import json
import logging
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp

log = logging.getLogger(__name__)

# Dense bf16 peak FLOP/s per chip from the vendors' data sheets, matched against
# `jax.Device.device_kind` (first match wins, so more specific names come first).
PEAK_FLOPS = (
    ("TPU v6", 918e12),  # Trillium
    ("TPU v5p", 459e12),
    ("TPU v5", 197e12),  # v5e ("TPU v5 lite")
    ("TPU v4", 275e12),
    ("TPU v3", 123e12),
    ("TPU v2", 45e12),
    ("H200", 989e12),  # SXM, dense (no sparsity)
    ("H100", 989e12),
    ("A100", 312e12),
    ("L4", 121e12),
    ("A10", 125e12),
)


def matmul_rate(n: int = 2048, repeats: int = 5) -> float:
    """Measured fp32 matmul FLOP/s of the default device (best of `repeats` n x n products)."""
    a = jnp.ones((n, n), jnp.float32)
    f = jax.jit(lambda x: x @ x)
    jax.block_until_ready(f(a))
    best = math.inf
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def peak_flops() -> tuple[float, str]:
    """Peak FLOP/s of all devices together and where the figure comes from: the vendors' bf16
    peak for known TPUs and GPUs; on CPUs (and unknown accelerators) the measured fp32 matmul
    rate of this machine, the practical ceiling a train step can reach. A process's CPU devices
    (`jax_num_cpu_devices`) share its cores, which one device's matmul already keeps busy, so
    on CPUs the rate counts once per process."""
    device = jax.devices()[0]
    for name, flops in PEAK_FLOPS:
        if name.lower() in device.device_kind.lower():
            return flops * jax.device_count(), f"{device.device_kind} bf16 peak"
    shares = jax.process_count() if device.platform == "cpu" else jax.device_count()
    return matmul_rate() * shares, f"measured fp32 matmul rate of {device.device_kind}"


class MetricsWriter:
    """Appends one JSON object per line: {"step", "split", "time", ...metrics}, and the same
    scalars to TensorBoard event files under `tensorboard_dir` (tensorboardX) when given.

    A resumed run passes `drop_after=<restored step>`: records an interrupted run wrote after its
    last checkpoint are dropped, since the resumed run writes them again (TensorBoard shows the
    latest value written for a step).
    """

    def __init__(
        self, path: Path, drop_after: int | None = None, tensorboard_dir: Path | None = None
    ):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if drop_after is not None and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r["step"] <= drop_after]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            tmp.replace(self.path)
        self._file = self.path.open("a", encoding="utf-8")
        self._tensorboard = None
        if tensorboard_dir is not None:
            from tensorboardX import SummaryWriter

            self._tensorboard = SummaryWriter(str(tensorboard_dir), flush_secs=30)

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        record = {"step": int(step), "split": split, "time": round(time.time(), 3)}
        record.update(
            {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}
        )
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()
        if self._tensorboard is not None:
            for key, value in record.items():
                if key not in ("step", "split", "time") and isinstance(value, float):
                    self._tensorboard.add_scalar(f"{split}/{key}", value, int(step))

    def close(self) -> None:
        self._file.close()
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def plot_loss_curve(metrics_path: Path, output_path: Path, title: str = "") -> Path:
    """Train and held-out loss against step, from a metrics file, saved as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    fig, ax = plt.subplots(figsize=(7, 4), dpi=120)
    for split, style in (("train", "-"), ("eval", "o-")):
        points = sorted(
            (r["step"], r["loss"])
            for r in records
            if r["split"] == split and math.isfinite(r.get("loss", math.nan))
        )
        if points:
            ax.plot(*zip(*points), style, label=f"{split} loss", markersize=4)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy (nats / prediction)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(output_path)
    plt.close(fig)
    return Path(output_path)
