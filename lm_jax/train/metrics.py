"""Metrics: a JSON-lines log and a plot of the loss curves."""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any


class MetricsWriter:
    """Appends one JSON object per line: {"step", "split", "time", ...metrics}.

    A resumed run passes `drop_after=<restored step>`: records an interrupted run wrote after its
    last checkpoint are dropped, since the resumed run writes them again.
    """

    def __init__(self, path: Path, drop_after: int | None = None):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if drop_after is not None and self.path.is_file():
            kept = [r for r in read_metrics(self.path) if r["step"] <= drop_after]
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text("".join(json.dumps(r) + "\n" for r in kept), encoding="utf-8")
            tmp.replace(self.path)
        self._file = self.path.open("a", encoding="utf-8")

    def write(self, step: int, split: str, metrics: dict[str, Any]) -> None:
        record = {"step": int(step), "split": split, "time": round(time.time(), 3)}
        record.update(
            {k: (float(v) if isinstance(v, (int, float)) else v) for k, v in metrics.items()}
        )
        self._file.write(json.dumps(record) + "\n")
        self._file.flush()

    def close(self) -> None:
        self._file.close()


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
