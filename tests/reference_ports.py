"""Faithful per-example NumPy ports of reference preprocessing code, used as the peers of
`benchmarks/objectives.py` and as the statistical references of the tests.

- `t5_span_corruption`: t5.data.preprocessors `random_spans_noise_mask` +
  `noise_span_to_unique_sentinel` / `nonnoise_span_to_unique_sentinel` + EOS, one example at a
  time (as the Hugging Face Flax T5 pretraining example does it).
"""

from __future__ import annotations

import numpy as np


def t5_noise_mask(
    length: int, rng: np.random.Generator, noise_density: float = 0.15, mean_span: float = 3.0
) -> np.ndarray:
    """`random_spans_noise_mask`: bool [length]."""
    original = length
    length = max(length, 2)
    num_noise = min(max(int(round(length * noise_density)), 1), length - 1)
    num_spans = max(int(round(num_noise / mean_span)), 1)
    num_keep = length - num_noise

    def random_segmentation(num_items: int, num_segments: int) -> np.ndarray:
        first = np.zeros(num_items - 1, np.int64)
        first[: num_segments - 1] = 1
        rng.shuffle(first)
        segment = np.cumsum(np.pad(first, [[1, 0]]))
        return np.bincount(segment, minlength=num_segments)

    noise_lengths = random_segmentation(num_noise, num_spans)
    keep_lengths = random_segmentation(num_keep, num_spans)
    interleaved = np.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)
    starts = np.cumsum(interleaved)[:-1]
    indicator = np.zeros(length, np.int64)
    np.add.at(indicator, starts, 1)
    return (np.cumsum(indicator) % 2 == 1)[:original]


def _to_sentinels(tokens: np.ndarray, spans: np.ndarray, vocab_size: int) -> np.ndarray:
    previous = np.pad(spans[:-1], [[1, 0]])
    first = spans & ~previous
    out = np.where(first, vocab_size - np.cumsum(first), tokens)
    return out[~(spans & previous)]


def t5_span_corruption(
    tokens: np.ndarray,
    rng: np.random.Generator,
    vocab_size: int,
    eos_id: int,
    noise_density: float = 0.15,
    mean_span: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """(inputs, targets) of one example; sentinel k is vocab_size - 1 - k."""
    noise = t5_noise_mask(len(tokens), rng, noise_density, mean_span)
    inputs = np.append(_to_sentinels(tokens, noise, vocab_size), eos_id)
    targets = np.append(_to_sentinels(tokens, ~noise, vocab_size), eos_id)
    return inputs, targets
