"""Prepared corpora at two sizes: peak memory and throughput of preparing and of streaming
(issue 20; a benchmark, not a test).

For each size it generates a JSON-lines corpus (Wikipedia-sample paragraphs drawn at random,
seeded), prepares it with one tokenizer (`lm_jax.data.prepare`, every core) and streams
training batches from it (`PreparedRows` -> grain -> the pretraining batch iterator). Each phase
runs in its own process, so each peak RSS (`ru_maxrss`) is that phase's alone. Then the
pretraining step runs on the small corpus while the stream is read beside it, and the
stream's tokens/s is set against the step's consumption.

    python benchmarks/data_pipeline.py                       # 20 MB and 400 MB
    python benchmarks/data_pipeline.py --sizes 5,50 --batches 500
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SEQ_LEN, BATCH = 128, 32
DOCS_PER_SHARD = 2000  # what bounds preparation's memory; both sizes span many shards
# BERT-base pretraining on one TPU v4 host (4 chips x 275 bf16 TFLOP/s) at 40% MFU, 6 x 110M
# FLOPs per token (attention ignored), over the host's 240 vCPUs: the rate each core must feed.
TPU_HOST_FLOPS, TPU_MFU, BERT_BASE_PARAMS, TPU_HOST_CORES = 4 * 275e12, 0.4, 110e6, 240


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:  # the process just ended
        pass
    return 0


def _descendants(pid: int) -> list[int]:
    try:
        children = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return children + [d for c in children for d in _descendants(c)]


class PeakMemory:
    """The peak resident memory of this process (its own high-water mark, VmHWM: unlike
    ru_maxrss it does not inherit the parent's across exec) and of this process with its
    worker processes together (VmRSS sampled every 0.1 s)."""

    def __enter__(self):
        self.total_kb, self._done = 0, threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self):
        me = os.getpid()
        while not self._done.wait(0.1):
            total = sum(_status_kb(p, "VmRSS") for p in [me, *_descendants(me)])
            self.total_kb = max(self.total_kb, total)

    def __exit__(self, *exc):
        self._done.set()
        self._thread.join()

    def report(self) -> dict:
        own = _status_kb(os.getpid(), "VmHWM")
        return {"peak_rss_mb": own / 1024, "peak_rss_with_workers_mb": self.total_kb / 1024}


def generate(path: Path, megabytes: float, seed: int = 0) -> dict:
    """A JSON-lines corpus of about `megabytes` MB: documents of 3-8 random paragraphs."""
    import numpy as np

    from lm_jax.data.sources import wikipedia_sample

    paragraphs = [p for d in wikipedia_sample() for p in d.split("\n") if len(p) > 200]
    rng, written, documents = np.random.default_rng(seed), 0, 0
    with path.open("w", encoding="utf-8") as f:
        while written < megabytes * 1e6:
            picks = rng.integers(0, len(paragraphs), rng.integers(3, 9))
            line = json.dumps({"text": "\n".join(paragraphs[i] for i in picks)}) + "\n"
            f.write(line)
            written, documents = written + len(line.encode()), documents + 1
    return {"bytes": written, "documents": documents}


def phase_prepare(corpus: Path, out: Path, tokenizer: Path) -> dict:
    from lm_jax.data import prepare as prep

    settings = prep.Settings(
        sources=(f"jsonl:{corpus}",), tokenizer=str(tokenizer), docs_per_shard=DOCS_PER_SHARD
    )
    with PeakMemory() as memory:
        start = time.perf_counter()
        manifest = prep.prepare(settings, out, workers=os.cpu_count() or 1, progress=False)
        seconds = time.perf_counter() - start
    tokens = sum(s["tokens"] for s in json.loads(manifest.read_text())["splits"].values())
    return {
        "seconds": seconds,
        "tokens": tokens,
        "tokens_per_s": tokens / seconds,
        **memory.report(),
    }


def phase_stream(prepared: Path, batches: int) -> dict:
    from lm_jax.data.pipeline import batch_iterator, train_batches
    from lm_jax.data.shards import Manifest, PreparedRows, ShardedDocuments
    from lm_jax.data.tokenizer import load_tokenizer

    vocab = load_tokenizer(prepared / "tokenizer.model").vocab
    with PeakMemory() as memory:
        rows = PreparedRows(ShardedDocuments(Manifest.load(prepared), "train"), SEQ_LEN, vocab)
        iterator = batch_iterator(train_batches(rows, BATCH, seed=0))
        next(iterator)
        start = time.perf_counter()
        for _ in range(batches):
            next(iterator)
        seconds = time.perf_counter() - start
    tokens_per_s = batches * BATCH * SEQ_LEN / seconds
    return {"rows": len(rows), "batches": batches, "tokens_per_s": tokens_per_s, **memory.report()}


def phase_train(prepared: Path, workdir: Path, steps: int) -> dict:
    from lm_jax.config_tools import override
    from lm_jax.pretrain.run import pretrain
    from lm_jax.pretrain.schema import pretraining_config

    fields = {
        "data.corpus": "prepared",
        "data.path": str(prepared),
        "data.seq_len": SEQ_LEN,
        "train.batch_size": BATCH,
        "train.steps": steps,
        "train.warmup_steps": 1,
        "train.log_every": 10,
        "train.eval_every": steps,
        "train.checkpoint_every": steps,
        "output_dir": str(workdir),
    }
    pretrain(override(pretraining_config("mlm"), fields), progress=False)
    records = [json.loads(x) for x in (workdir / "metrics.jsonl").read_text().splitlines()]
    train = [r for r in records if r["split"] == "train"][1:]  # the first pays compilation
    step_s = (train[-1]["time"] - train[0]["time"]) / (train[-1]["step"] - train[0]["step"])
    return {"step_seconds": step_s, "tokens_per_s": BATCH * SEQ_LEN / step_s}


PHASES = {
    "prepare": (phase_prepare, (Path, Path, Path)),
    "stream": (phase_stream, (Path, int)),
    "train": (phase_train, (Path, Path, int)),
}


def run_phase(*args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, __file__, "--phase", *args], stdout=subprocess.PIPE, text=True
    )


def result(process: subprocess.Popen) -> dict:
    out, _ = process.communicate()
    if process.returncode:
        raise SystemExit(f"a phase failed ({process.returncode})")
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="20,400", help="corpus sizes in MB")
    parser.add_argument("--batches", type=int, default=2000)
    parser.add_argument("--steps", type=int, default=60, help="train steps beside the stream")
    parser.add_argument("--out", type=Path, default=ROOT / "runs" / "data_pipeline")
    parser.add_argument("--phase", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.phase:  # one phase, in this process (see run_phase)
        name, *values = args.phase
        function, types = PHASES[name]
        print(json.dumps(function(*[t(v) for t, v in zip(types, values, strict=True)])))
        return
    measure(args)


def measure(args) -> None:
    from lm_jax.data.prepare import sample_lines
    from lm_jax.data.sources import jsonl_documents
    from lm_jax.data.tokenizer import train_sentencepiece

    args.out.mkdir(parents=True, exist_ok=True)
    sizes = [float(s) for s in args.sizes.split(",")]
    report = {"date": time.strftime("%Y-%m-%d"), "command": " ".join(sys.argv), "sizes": {}}
    tokenizer = args.out / "tokenizer.model"
    for size in sizes:
        corpus = args.out / f"corpus_{size:g}mb.jsonl"
        made = generate(corpus, size) if not corpus.exists() else {"bytes": corpus.stat().st_size}
        if not tokenizer.exists():  # one tokenizer for every size, from a bounded sample
            lines = sample_lines(jsonl_documents(corpus), 100_000, seed=0)
            train_sentencepiece(lines, tokenizer, vocab_size=8000)
        prepared = args.out / f"prepared_{size:g}mb"
        entry = {
            "corpus": made,
            "prepare": result(run_phase("prepare", str(corpus), str(prepared), str(tokenizer))),
        }
        entry["stream"] = result(run_phase("stream", str(prepared), str(args.batches)))
        report["sizes"][f"{size:g}"] = entry
        print(f"{size:g} MB: {json.dumps(entry)}", flush=True)
    small = args.out / f"prepared_{sizes[0]:g}mb"
    train = run_phase("train", str(small), str(args.out / "train_run"), str(args.steps))
    time.sleep(20)  # past the step's compilation
    beside = result(run_phase("stream", str(small), str(args.batches)))
    step = result(train)
    report["beside_the_step"] = {
        "stream": beside,
        "step": step,
        "ratio": beside["tokens_per_s"] / step["tokens_per_s"],
    }
    need = TPU_HOST_FLOPS * TPU_MFU / (6 * BERT_BASE_PARAMS)
    report["tpu_host_need"] = {"tokens_per_s": need, "per_core": need / TPU_HOST_CORES}
    path = args.out / "data_pipeline.json"
    path.write_text(json.dumps(report, indent=1))
    print(json.dumps(report, indent=1))
    print(f"results: {path}")


if __name__ == "__main__":
    main()
