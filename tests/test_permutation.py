"""lm_jax.objectives.permutation: XLNet's permutation LM and MPNet."""

import jax
import numpy as np
import pytest
from objective_rows import rows

import lm_jax.objectives as obj


def run_lengths(mask):
    edges = np.diff(np.concatenate([[0], mask.astype(int), [0]]))
    return (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()


def xlnet_reference_masks(rank_index, is_target, is_functional):
    """NumPy port of XLNet `_local_perm` given the permutation ranks (`index`), the targets
    (`is_masked`) and the functional tokens; returns (content allowed, query allowed)."""
    non_mask = ~is_target & ~is_functional
    rev_index = np.where(non_mask, -1, rank_index)
    target_tokens = is_target & ~is_functional
    self_rev_index = np.where(target_tokens, rev_index, rev_index + 1)
    perm_mask = (self_rev_index[:, None] <= rev_index[None, :]) & ~non_mask[None, :]
    query_allowed = ~perm_mask
    content_allowed = ~perm_mask | np.eye(len(rank_index), dtype=bool)
    return content_allowed, query_allowed


@pytest.mark.parametrize("selection", ["plain", "span"])
def test_plm_masks_match_xlnet_reference(selection, vocab):
    tokens, segs, starts = rows(vocab, 16, 60)
    batch = obj.plm(
        jax.random.key(11),
        tokens,
        vocab=vocab,
        segment_ids=segs,
        word_starts=starts,
        target_selection=selection,
    )
    content, query = (np.asarray(m) for m in obj.dense_attention_mask(batch))
    for r in range(16):
        tok = np.asarray(tokens[r])
        is_target = np.asarray(batch.loss_weights[r]) > 0
        assert is_target.sum() == round(60 / 6)  # partial prediction, K = 6
        functional = np.isin(tok, [vocab.cls_id, vocab.sep_id])
        rank = np.asarray(batch.attention.kv_ranks[r]) // 2
        # Reconstruct XLNet's permutation index: targets and functional tokens keep their rank.
        c_ref, q_ref = xlnet_reference_masks(rank, is_target, functional)
        np.testing.assert_array_equal(content[r], c_ref)
        targets = np.asarray(batch.masked_positions[r])[np.asarray(batch.masked_weights[r]) > 0]
        np.testing.assert_array_equal(query[r][: len(targets)], q_ref[targets])
        # Invariants: a query never sees its own content; targets form a strict order.
        assert not query[r][np.arange(len(targets)), targets].any()
        t_ranks = rank[targets]
        assert len(set(t_ranks.tolist())) == len(targets)
        # Non-targets see no target; the content stream keeps the real tokens.
        assert not content[r][np.ix_(~is_target & ~functional, is_target)].any()
    np.testing.assert_array_equal(batch.inputs, tokens)


def test_plm_plain_targets_are_the_last_in_the_order(vocab):
    tokens, segs, _ = rows(vocab, 8, 30)
    batch = obj.plm(jax.random.key(12), tokens, vocab=vocab, segment_ids=segs)
    for r in range(8):
        rank = np.asarray(batch.attention.kv_ranks[r]) // 2
        is_target = np.asarray(batch.loss_weights[r]) > 0
        functional = np.isin(np.asarray(tokens[r]), [vocab.cls_id, vocab.sep_id])
        # Non-target maskable tokens were put first (rank -1); targets keep distinct ranks.
        assert (rank[~is_target & ~functional] == -1).all() and (rank[is_target] >= 0).all()


def test_plm_span_selection_takes_contiguous_spans(vocab):
    tokens, segs, starts = rows(vocab, 64, 512)
    batch = obj.plm(
        jax.random.key(13),
        tokens,
        vocab=vocab,
        segment_ids=segs,
        word_starts=starts,
        target_selection="span",
    )
    sel = np.asarray(batch.loss_weights) > 0
    assert (sel.sum(-1) == round(512 / 6)).all()
    runs = [r for row in sel for r in run_lengths(row)]
    assert np.mean(runs) > 1.5  # n-gram spans, not isolated tokens


@pytest.mark.parametrize("whole_word", [False, True])
def test_mpnet_position_compensation_and_masks(whole_word, vocab):
    tokens, segs, starts = rows(vocab, 8, 50, docs=2, pad=4)
    batch = obj.mpnet(
        jax.random.key(14),
        tokens,
        vocab=vocab,
        segment_ids=segs,
        word_starts=starts,
        whole_word=whole_word,
    )
    content, query = (np.asarray(m) for m in obj.dense_attention_mask(batch))
    pos, cseg = np.asarray(batch.positions), np.asarray(batch.segment_ids)
    L = 50
    for r in range(8):
        p = int(batch.masked_weights[r].sum())
        assert p == round(0.15 * 46)
        a = L - p
        for i in range(p):
            seg = int(batch.query_segment_ids[r, i])
            n = int((np.asarray(segs[r]) == seg).sum())
            seen = sorted(pos[r][query[r, i]].tolist())
            assert seen == list(range(n))  # every query sees all n positions exactly once
            seen_c = sorted(pos[r][content[r, a + i]].tolist())
            assert seen_c == list(range(n))
            # The query row: predicted j < i and mask slots j >= i (same document).
            same = cseg[r] == seg
            assert (query[r, i, a : a + p] == (same[a : a + p] & (np.arange(p) < i))).all()
            assert (query[r, i, L : L + p] == (same[L : L + p] & (np.arange(p) >= i))).all()
        # Predictions are original tokens at their original positions.
        tgt = np.asarray(batch.masked_targets[r])[:p]
        np.testing.assert_array_equal(
            tgt, np.asarray(tokens[r])[np.asarray(batch.masked_positions[r])[:p]]
        )
        assert (np.asarray(batch.inputs[r, a:L]) == tgt).all()  # content keeps the real tokens
        assert (cseg[r, L + p :] == 0).all()  # unused mask slots are padding


def test_mpnet_mask_slots_80_10_10(vocab):
    tokens, segs, _ = rows(vocab, 1024, 128)
    batch = jax.jit(lambda k: obj.mpnet(k, tokens, vocab=vocab, segment_ids=segs))(
        jax.random.key(15)
    )
    w = np.asarray(batch.masked_weights) > 0
    slots, orig = np.asarray(batch.query_inputs)[w], np.asarray(batch.masked_targets)[w]
    assert abs((slots == vocab.mask_id).mean() - 0.8) < 0.01
    assert abs((slots == orig).mean() - 0.1) < 0.01
