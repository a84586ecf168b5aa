"""lm_jax.objectives.span: SpanBERT span masking and span-boundary targets."""

import jax
import numpy as np
from objective_rows import (
    rows,
)

import lm_jax.objectives as obj
from lm_jax.objectives.span import expected_span_length, span_length_probs


def word_spans(starts_row, candidates_row):
    words, current = [], []
    for i, (s, c) in enumerate(zip(starts_row, candidates_row)):
        if not c or s or not current:
            if current:
                words.append(current)
            current = [i] if c else []
        else:
            current.append(i)
    if current:
        words.append(current)
    return words


def spanbert_reference(rng, n, budget, probs):
    """NumPy port of SpanBERT's mask() + merge_intervals with one-token words; returns the mask."""
    mask = np.zeros(n, bool)
    while mask.sum() < budget:
        span_len = rng.choice(np.arange(1, len(probs) + 1), p=probs)
        anchor = rng.integers(n)
        if mask[anchor]:
            continue
        for i in range(anchor, min(anchor + span_len, n)):
            if mask.sum() >= budget:
                break
            mask[i] = True
    return mask


def run_lengths(mask):
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()


def test_span_length_distribution_and_mean():
    probs = span_length_probs(0.2, 10)
    geometric = 0.2 * 0.8 ** np.arange(10)
    np.testing.assert_allclose(probs, geometric / geometric.sum())
    assert abs(expected_span_length(0.2) - 3.8) < 0.01
    assert abs(expected_span_length(0.3) - 3.04) < 0.01


def test_span_exact_budget_and_matches_reference_statistics(vocab):
    tokens, segs, _ = rows(vocab, 2000, 130)
    batch = jax.jit(lambda k: obj.span(k, tokens, vocab=vocab, segment_ids=segs))(jax.random.key(7))
    sel = np.asarray(batch.loss_weights) > 0
    assert (sel.sum(-1) == np.ceil(0.15 * 128)).all()  # 128 maskable tokens -> exactly 20
    ours = [r for row in sel[:, 1:-1] for r in run_lengths(row)]
    rng = np.random.default_rng(0)
    ref = [
        r
        for _ in range(2000)
        for r in run_lengths(spanbert_reference(rng, 128, 20, span_length_probs()))
    ]
    assert abs(np.mean(ours) - np.mean(ref)) < 0.15, (np.mean(ours), np.mean(ref))
    h_ours = np.bincount(ours, minlength=21)[1:21] / len(ours)
    h_ref = np.bincount(ref, minlength=21)[1:21] / len(ref)
    assert np.abs(h_ours - h_ref).max() < 0.02


def test_span_whole_words_decision_per_span_and_sbo_targets(vocab):
    tokens, segs, starts = rows(vocab, 256, 64, docs=2)
    batch = obj.span(jax.random.key(8), tokens, vocab=vocab, segment_ids=segs, word_starts=starts)
    sel = np.asarray(batch.loss_weights) > 0
    tok, inp = np.asarray(tokens), np.asarray(batch.inputs)
    seg = np.asarray(segs)
    candidates = (seg > 0) & ~np.isin(tok, vocab.special_ids)
    outcomes = {"mask": 0, "same": 0, "random": 0}
    for r in range(256):
        edges = np.diff(np.concatenate([[0], sel[r].astype(int), [0]]))
        for s, e in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1):
            kinds = {
                "mask"
                if inp[r, i] == vocab.mask_id
                else "same"
                if inp[r, i] == tok[r, i]
                else "random"
                for i in range(s, e + 1)
            }
            assert len(kinds) == 1  # one 80/10/10 decision per span
            outcomes[kinds.pop()] += 1
        # Masked words are whole except where a span was cut to hit the budget (at most one).
        partial = sum(
            0 < sel[r, w].sum() < len(w) for w in word_spans(np.asarray(starts[r]), candidates[r])
        )
        assert partial <= 1
        # SBO targets from the merged spans.
        for j in np.flatnonzero(np.asarray(batch.masked_weights[r]) > 0):
            p = int(batch.masked_positions[r, j])
            s = p
            while s - 1 >= 0 and sel[r, s - 1]:
                s -= 1
            e = p
            while e + 1 < 64 and sel[r, e + 1]:
                e += 1
            ok = (
                s >= 1
                and e + 1 < 64
                and candidates[r, s - 1]
                and candidates[r, e + 1]
                and seg[r, s - 1] == seg[r, p] == seg[r, e + 1]
                and p - s < 15
            )
            assert bool(batch.sbo_weights[r, j]) == ok
            if ok:
                assert (
                    int(batch.sbo_left[r, j]),
                    int(batch.sbo_right[r, j]),
                    int(batch.sbo_offsets[r, j]),
                ) == (s - 1, e + 1, p - s)
    total = sum(outcomes.values())
    assert abs(outcomes["mask"] / total - 0.8) < 0.04
