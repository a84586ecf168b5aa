"""Throughput of every objective (jitted, on this machine's default JAX device) against the
Hugging Face transformers data collators in the same run.

    python benchmarks/objectives.py                      # batch 256 x length 512, all objectives
    python benchmarks/objectives.py --batch 64 --length 128 --objectives mlm plm

Peers (optional dependencies: `pip install -e .[bench]`): `DataCollatorForLanguageModeling`
(return_tensors="np") for mlm, and whole-word masking for wwm; and
`DataCollatorForPermutationLanguageModeling` (PyTorch tensors, its only fully supported
path) for plm; for t5, a faithful NumPy per-example port of the reference span corruption
(`tests/reference_ports.py`), one example at a time as the Hugging Face Flax T5 example does it,
padded into a batch. T5 rows are `t5_raw_length(length)` raw tokens (568 for 512-token inputs).
Peers
get the same token rows as lists of examples, as a data loader would hand them. Timings are
medians of `--repeats` calls after a warm-up (compilation excluded; reported separately).
Prints tokens/s and our speed-up over each peer.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import lm_jax.objectives as objectives
from lm_jax.runtime import reuse_freed_host_memory
from lm_jax.vocab import VocabInfo

VOCAB_SIZE = 30522  # BERT's


def make_rows(batch: int, length: int, vocab: VocabInfo, seed: int = 0):
    rng = np.random.default_rng(seed)
    tokens = vocab.regular_ids()[rng.integers(0, len(vocab.regular_ids()), (batch, length))]
    tokens[:, 0], tokens[:, -1] = vocab.cls_id, vocab.sep_id
    segments = np.ones((batch, length), np.int32)
    word_starts = rng.random((batch, length)) < 0.75
    return tokens.astype(np.int32), segments, word_starts


def time_calls(fn, make_args, repeats: int) -> tuple[float, float]:
    """(median seconds per call, first-call seconds)."""
    start = time.perf_counter()
    jax.block_until_ready(fn(*make_args(0)))
    first = time.perf_counter() - start
    times = []
    for i in range(1, repeats + 1):
        args = make_args(i)
        start = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - start)
    return statistics.median(times), first


WORD_LEVEL = ("wwm", "ngram", "span", "plm", "mpnet", "bart")
SENTENCE_LEVEL = ("nsp", "sop", "structbert")


def ours(name: str, vocab: VocabInfo, tokens, segments, word_starts, repeats: int):
    fn = objectives.get(name)
    kwargs = {"vocab": vocab}
    if name in WORD_LEVEL:
        kwargs["word_starts"] = jnp.asarray(word_starts)
    if name in SENTENCE_LEVEL:  # a sentence every 16 tokens on average
        starts = np.random.default_rng(1).random(tokens.shape) < 1 / 16
        kwargs["sentence_starts"] = jnp.asarray(starts)
    if name == "tlm":  # a sentence and its translation: halves of the row
        segments = np.where(np.arange(tokens.shape[1]) < tokens.shape[1] // 2, 1, 2) * segments
    if name == "entity":
        entity_ids = np.zeros_like(tokens)
        entity_ids[:, 10:14], entity_ids[:, 40:43] = 1, 2
        kwargs["entity_ids"] = jnp.asarray(entity_ids)
    jitted = jax.jit(lambda key, t, s: fn(key, t, segment_ids=s, **kwargs))
    t, s = jnp.asarray(tokens), jnp.asarray(segments)
    return time_calls(jitted, lambda i: (jax.random.key(i), t, s), repeats)


def hf_tokenizer(vocab_size: int):
    from transformers import BertTokenizerFast

    folder = Path(tempfile.mkdtemp())
    pieces = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    pieces += [f"w{i}" if i % 4 else f"##w{i}" for i in range(len(pieces), vocab_size)]
    (folder / "vocab.txt").write_text("\n".join(pieces) + "\n")
    return BertTokenizerFast(vocab_file=str(folder / "vocab.txt"))


def offsets_from_word_starts(word_starts: np.ndarray) -> np.ndarray:
    """Character offsets [B, L, 2] whose gaps reproduce the word starts (HF's wwm reads words
    from offset gaps)."""
    starts = np.cumsum(1 + word_starts.astype(np.int64), axis=1)
    return np.stack([starts, starts + 1], axis=-1)


def t5_peer(tokens, vocab: VocabInfo, repeats: int) -> tuple[float, float]:
    """The reference span corruption, one example at a time, padded into a batch."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from reference_ports import t5_span_corruption  # the port the tests check against

    inputs_len, targets_len = objectives.t5_lengths(tokens.shape[1])
    rng = np.random.default_rng(0)

    def collate(rows):
        inputs = np.zeros((len(rows), inputs_len), np.int32)
        targets = np.zeros((len(rows), targets_len), np.int32)
        for b, row in enumerate(rows):
            i, t = t5_span_corruption(row, rng, vocab.size, vocab.eos_id)
            inputs[b, : len(i)], targets[b, : len(t)] = i, t
        return inputs, targets

    rows = list(tokens)
    return time_calls(collate, lambda i: (rows,), repeats)


def peers(tokens, word_starts, repeats: int) -> dict[str, tuple[float, float]]:
    from transformers import (
        DataCollatorForLanguageModeling,
        DataCollatorForPermutationLanguageModeling,
    )

    tokenizer = hf_tokenizer(VOCAB_SIZE)
    examples = [{"input_ids": row.tolist()} for row in tokens]
    offsets = offsets_from_word_starts(word_starts)
    word_examples = [
        {"input_ids": row.tolist(), "offset_mapping": off.tolist()}
        for row, off in zip(tokens, offsets)
    ]
    collators = {
        "mlm": (DataCollatorForLanguageModeling(tokenizer, return_tensors="np", seed=0), examples),
        "wwm": (
            DataCollatorForLanguageModeling(
                tokenizer, whole_word_mask=True, return_tensors="np", seed=0
            ),
            word_examples,
        ),
        "plm": (
            DataCollatorForPermutationLanguageModeling(tokenizer, return_tensors="pt"),
            examples,
        ),
    }
    return {
        name: time_calls(c, lambda i, ex=ex: (ex,), repeats) for name, (c, ex) in collators.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, default=512)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--objectives", nargs="*", default=objectives.names())
    parser.add_argument("--no-peers", action="store_true", help="skip the Hugging Face peers")
    args = parser.parse_args()
    reuse_freed_host_memory()  # before the first JAX computation

    vocab = VocabInfo(
        size=VOCAB_SIZE,
        pad_id=0,
        unk_id=1,
        cls_id=2,
        sep_id=3,
        mask_id=4,
        sentinel_ids=tuple(range(VOCAB_SIZE - 1, VOCAB_SIZE - 101, -1)),  # T5's 100 extra ids
    )
    tokens, segments, word_starts = make_rows(args.batch, args.length, vocab)
    t5_rows = make_rows(args.batch, objectives.t5_raw_length(args.length), vocab)
    print(
        f"batch {args.batch} x length {args.length}, vocab {VOCAB_SIZE}, "
        f"device {jax.devices()[0].device_kind}, jax {jax.__version__}"
    )
    peer_times = {}
    if not args.no_peers:
        try:
            peer_times = peers(tokens, word_starts, args.repeats)
        except ImportError as e:
            print(f"(peers skipped: {e}; install with pip install -e .[bench])")
    print(
        f"{'objective':<10} {'ours tok/s':>12} {'compile s':>10} {'peer tok/s':>12} {'speed-up':>9}"
    )
    if "t5" in args.objectives and not args.no_peers:
        peer_times["t5"] = t5_peer(t5_rows[0], vocab, args.repeats)
    for name in args.objectives:
        rows = t5_rows if name == "t5" else (tokens, segments, word_starts)
        seconds, first = ours(name, vocab, *rows, args.repeats)
        n_tokens = rows[0].size
        line = f"{name:<10} {n_tokens / seconds:>12,.0f} {first:>10.1f}"
        if name in peer_times:
            peer = peer_times[name][0]
            line += f" {n_tokens / peer:>12,.0f} {peer / seconds:>8.1f}x"
        print(line, flush=True)


if __name__ == "__main__":
    main()
