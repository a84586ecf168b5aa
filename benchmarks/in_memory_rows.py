"""The main job's batches read three ways, in one run: the streamed rows of its in-memory
corpus as a run reads them (built once, then kept), the same rows built at every read (as a
prepared corpus's are), and `pack_documents`-style arrays; CPU seconds of the batch iterator
for the job's steps (issue 20: the small-corpus path must cost the main job nothing).

    python benchmarks/in_memory_rows.py              # the main job's 1,000 steps of 32 rows
"""

from __future__ import annotations

import argparse
import copy
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lm_jax.data.packing import PackedRows  # noqa: E402
from lm_jax.data.pipeline import batch_iterator, build_pretraining_data, train_batches  # noqa: E402
from lm_jax.data.shards import PreparedRows  # noqa: E402
from lm_jax.pretrain.schema import pretraining_config  # noqa: E402


def cpu_seconds(rows, batch_size: int, seed: int, steps: int) -> float:
    """CPU time (every thread) of reading `steps` training batches of `rows`."""
    batches = batch_iterator(train_batches(rows, batch_size, seed))
    start = time.process_time()
    for _ in range(steps):
        next(batches)
    return time.process_time() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, help="default: the main job's config.train.steps")
    args = parser.parse_args()
    config = pretraining_config("mlm")
    steps = args.steps or config.train.steps
    with tempfile.TemporaryDirectory() as workdir:
        data = build_pretraining_data(config, Path(workdir))
    documents, seq_len, vocab = data.train.documents, config.data.seq_len, data.tokenizer.vocab
    rows = [data.train[i] for i in range(len(data.train))]
    arrays = PackedRows(**{k: np.stack([r[k] for r in rows]) for k in rows[0]})
    kept = PreparedRows(documents, seq_len, vocab)  # as a run reads them, from unbuilt
    per_read = copy.copy(documents)
    per_read.keep_rows = False
    rebuilt = PreparedRows(per_read, seq_len, vocab)
    batch, seed = config.train.batch_size, config.seed
    print(f"{len(kept)} rows of {config.data.seq_len} tokens, {steps} batches of {batch}")
    for name, source in (("kept", kept), ("built per read", rebuilt), ("arrays", arrays)):
        print(f"  {name:<15} {cpu_seconds(source, batch, seed, steps):6.2f} s CPU")


if __name__ == "__main__":
    main()
