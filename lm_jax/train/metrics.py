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

from lm_jax.errors import OutputError

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


class TensorBoardScalars:
    """Scalars in a TensorBoard event file, written synchronously in the caller's thread.

    tensorboardX's `SummaryWriter` writes from a background thread: when that thread dies (a
    full disk), the next write blocks forever and the run can no longer even save on SIGTERM.
    Here a failing write logs one warning and turns TensorBoard off for the rest of the run;
    `metrics.jsonl` holds the same numbers.
    """

    def __init__(self, directory: Path):
        from tensorboardX.event_file_writer import EventsWriter

        self._events = None
        try:
            Path(directory).mkdir(parents=True, exist_ok=True)
            self._events = EventsWriter(str(Path(directory) / "events"))
        except OSError as e:
            self._give_up(e)

    def _give_up(self, error: OSError) -> None:
        log.warning("TensorBoard events stop here (%s); metrics.jsonl keeps every record", error)
        self._events = None

    def write(self, step: int, scalars: dict[str, float]) -> None:
        if self._events is None:
            return
        from tensorboardX.proto.event_pb2 import Event
        from tensorboardX.summary import scalar

        try:
            for tag, value in scalars.items():
                self._events.write_event(
                    Event(wall_time=time.time(), step=step, summary=scalar(tag, value))
                )
            self._events.flush()
        except OSError as e:
            self._give_up(e)

    def close(self) -> None:
        if self._events is not None:
            try:
                self._events.close()
            except OSError as e:
                self._give_up(e)


class MetricsWriter:
    """Appends one JSON object per line: {"step", "split", "time", ...metrics}, and the same
    scalars to TensorBoard event files under `tensorboard_dir` (`TensorBoardScalars`).

    A resumed run passes `drop_after=<restored step>`: records an interrupted run wrote after its
    last checkpoint are dropped, since the resumed run writes them again (TensorBoard shows the
    latest value written for a step). A failing write of `metrics.jsonl` (a full disk) raises
    `OutputError` in the training thread; it never blocks.
    """

    def __init__(
        self, path: Path, drop_after: int | None = None, tensorboard_dir: Path | None = None
    ):
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            if drop_after is not None and self.path.is_file():
                kept = [r for r in read_metrics(self.path) if r["step"] <= drop_after]
                tmp = self.path.with_suffix(".tmp")
                tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
                tmp.replace(self.path)
            self._file = self.path.open("a", encoding="utf-8")
        except OSError as e:
            raise OutputError(f"cannot write the metrics log {self.path}: {e}") from e
        self._tensorboard = None if tensorboard_dir is None else TensorBoardScalars(tensorboard_dir)

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        record = {"step": int(step), "split": split, "time": round(time.time(), 3)}
        record.update(
            {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}
        )
        try:
            self._file.write(json.dumps(record) + "\n")
            self._file.flush()
        except OSError as e:
            raise OutputError(
                f"cannot write the metrics log {self.path} at step {step}: {e}; the checkpoints "
                "already saved are intact: free space and rerun the same command to resume"
            ) from e
        if self._tensorboard is not None:
            scalars = {
                f"{split}/{k}": v
                for k, v in record.items()
                if k not in ("step", "split", "time") and isinstance(v, float)
            }
            self._tensorboard.write(int(step), scalars)

    def close(self) -> None:
        try:
            self._file.close()
        except OSError as e:  # the last flush failed too: the records written before stay
            log.warning("closing %s failed: %s", self.path, e)
        if self._tensorboard is not None:
            self._tensorboard.close()


def read_metrics(path: Path) -> list[dict[str, Any]]:
    """The records of a metrics log. A line that is not a JSON object (the torn last line a
    power loss or a full disk leaves) is dropped with a warning: a log never stops a resume."""
    records = []
    with Path(path).open(encoding="utf-8", errors="replace") as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError:
                record = None
            if not isinstance(record, dict) or not isinstance(record.get("step"), int):
                log.warning("%s:%d is not a complete metrics record; dropped", path, number)
                continue
            records.append(record)
    return records


def new_figure(width: float = 7, height: float = 4):
    """(figure, axes) drawn off-screen (matplotlib's Agg backend: no display needed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=120)


def save_figure(fig, path: Path) -> Path | None:
    """Save `fig` as `path` and close it; None (with a warning) when it cannot be written."""
    import matplotlib.pyplot as plt

    try:
        fig.savefig(path)
    except OSError as e:
        log.warning("the picture %s could not be written: %s", path, e)
        return None
    finally:
        plt.close(fig)
    return Path(path)


def plot_loss_curve(metrics_path: Path, output_path: Path, title: str = "") -> Path | None:
    """Train and held-out loss against step, from a metrics file, saved as PNG; None (with a
    warning) when the picture cannot be written."""
    records = read_metrics(metrics_path)
    fig, ax = new_figure()
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
    return save_figure(fig, output_path)
