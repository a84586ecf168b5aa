"""Objectives I: the shared contract for every objective, then each objective against its
reference (exact where deterministic, statistical where random). See shared/OBJECTIVES.md."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import lm_jax.objectives as obj
from lm_jax.objectives.masking import greedy_ngram_cover
from lm_jax.objectives.span import expected_span_length, span_length_probs

# Objectives I (encoder batches, row by row); the seq2seq and sentence-level objectives have
# their own contract tests in test_denoising.py and test_sentence.py.
OBJECTIVES_II = {"bart", "t5", "mass", "nsp", "sop", "structbert", "tlm"}
ALL = [n for n in obj.names() if n not in OBJECTIVES_II]
WORD_LEVEL = {"wwm", "ngram", "span", "plm", "mpnet"}


def rows(vocab, batch, length, seed=0, docs=1, pad=0):
    """[CLS] doc [SEP] packed rows of regular tokens with `docs` documents and `pad` padding."""
    rng = np.random.default_rng(seed)
    regular = vocab.regular_ids()
    tokens = regular[rng.integers(0, len(regular), (batch, length))]
    segs = np.zeros((batch, length), np.int32)
    real = length - pad
    bounds = np.linspace(0, real, docs + 1).astype(int)
    for d in range(docs):
        a, b = bounds[d], bounds[d + 1]
        segs[:, a:b] = d + 1
        tokens[:, a], tokens[:, b - 1] = vocab.cls_id, vocab.sep_id
    tokens[:, real:] = vocab.pad_id
    starts = rng.random((batch, length)) < 0.7
    return jnp.asarray(tokens), jnp.asarray(segs), jnp.asarray(starts)


def call(name, key, tokens, vocab, segs, starts, **options):
    fn = obj.get(name)
    extra = {"word_starts": starts} if name in WORD_LEVEL else {}
    if name == "entity":
        extra = {"entity_ids": jnp.zeros_like(tokens).at[..., 3:6].set(1)}
    return fn(key, tokens, vocab=vocab, segment_ids=segs, **extra, **options)


def masks_of(batch):
    dense = obj.dense_attention_mask(batch)
    return dense if isinstance(dense, tuple) else (dense,)


# ----------------------------------------------------------------------------- the contract


def test_registry_lists_every_objective():
    assert obj.names() == sorted(
        [
            *OBJECTIVES_II,
            "mlm",
            "wwm",
            "ngram",
            "entity",
            "span",
            "electra",
            "plm",
            "mpnet",
            "clm",
            "prefix_lm",
            "unilm",
        ]
    )
    for name in obj.names():
        assert obj.get(name) is getattr(obj, name)


@pytest.mark.parametrize("name", ALL)
def test_contract_jit_vmap_determinism(name, vocab):
    tokens, segs, starts = rows(vocab, 4, 48, docs=2, pad=5)
    fn = jax.jit(functools.partial(call, name, vocab=vocab))
    a = fn(jax.random.key(0), tokens, segs=segs, starts=starts)
    b = fn(jax.random.key(0), tokens, segs=segs, starts=starts)
    jax.tree.map(np.testing.assert_array_equal, a, b)
    # The batch equals the per-row function vmapped with the split keys.
    per_row = jax.vmap(lambda k, t, s, w: call(name, k, t, vocab, s, w))(
        jax.random.split(jax.random.key(0), 4), tokens, segs, starts
    )
    jax.tree.map(np.testing.assert_array_equal, a, per_row)
    if name != "clm":  # the only deterministic objective
        c = fn(jax.random.key(1), tokens, segs=segs, starts=starts)
        assert any(not np.array_equal(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(c)))
    # Padding is never predicted.
    assert not np.asarray(a.loss_weights)[np.asarray(segs) == 0].any()


@pytest.mark.parametrize("name", ALL)
def test_nothing_attends_across_segments(name, vocab):
    tokens, segs, starts = rows(vocab, 3, 40, docs=3, pad=4)
    batch = call(name, jax.random.key(2), tokens, vocab, segs, starts)
    content_seg = np.asarray(batch.segment_ids)
    query_segs = [content_seg]
    if isinstance(batch, obj.TwoStreamBatch):
        query_segs.append(np.asarray(batch.query_segment_ids))
    for mask, q_seg in zip(masks_of(batch), query_segs):
        mask = np.asarray(mask)
        same = (q_seg[:, :, None] == content_seg[:, None, :]) & (q_seg[:, :, None] > 0)
        assert not (mask & ~same).any()


@pytest.mark.parametrize("name", ALL)
def test_specials_never_predicted(name, vocab):
    tokens, segs, starts = rows(vocab, 8, 40, docs=2)
    tokens = tokens.at[:, 7].set(vocab.mask_id).at[:, 8].set(vocab.sentinel_ids[1])
    batch = call(name, jax.random.key(3), tokens, vocab, segs, starts)
    special = np.isin(np.asarray(tokens), vocab.special_ids)
    weights = np.asarray(batch.loss_weights)
    if name in ("clm", "prefix_lm"):  # next-token targets: [SEP] may be a target, pad never
        assert not np.isin(np.asarray(batch.targets)[weights > 0], [vocab.pad_id]).any()
    else:
        assert not weights[special].any()


@st.composite
def odd_rows(draw):
    length = draw(st.sampled_from([1, 2, 7, 33]))  # few shapes: one compilation each
    kind = draw(st.sampled_from(["random", "padding", "specials", "many_docs"]))
    tokens = np.array(draw(st.lists(st.integers(5, 990), min_size=length, max_size=length)))
    segs = np.ones(length, np.int32)
    if kind == "padding":
        tokens[:], segs[:] = 0, 0
    elif kind == "specials":
        tokens[:] = draw(st.sampled_from([2, 3, 4, 999]))
    elif kind == "many_docs":
        segs = (
            np.cumsum(np.array(draw(st.lists(st.booleans(), min_size=length, max_size=length)))) + 1
        )
        pad_from = draw(st.integers(0, length))
        segs[pad_from:], tokens[pad_from:] = 0, 0
    return jnp.asarray(tokens[None]), jnp.asarray(segs[None].astype(np.int32))


@functools.lru_cache(maxsize=None)
def jitted(name, vocab):
    return jax.jit(lambda key, tokens, segs, starts: call(name, key, tokens, vocab, segs, starts))


@settings(max_examples=8, deadline=None)
@given(data=odd_rows())
@pytest.mark.parametrize("name", ALL)
def test_property_valid_batch_on_odd_inputs(name, vocab, data):
    tokens, segs = data
    starts = jnp.ones(tokens.shape, bool)
    batch = jitted(name, vocab)(jax.random.key(0), tokens, segs, starts)
    for leaf in jax.tree.leaves(batch):
        assert np.isfinite(np.asarray(leaf, np.float64)).all()
    weights = np.asarray(batch.loss_weights)
    assert weights.shape == tokens.shape
    if name not in ("clm", "prefix_lm"):
        candidates = (np.asarray(segs) > 0) & ~np.isin(np.asarray(tokens), vocab.special_ids)
        assert not (weights > 0)[~candidates].any()
        if batch.masked_weights is not None:
            assert batch.masked_weights.sum() == weights.sum()


# ------------------------------------------------------------ BERT-wwm, ALBERT n-gram, ERNIE


def albert_reference_greedy(order, sampled_n, unit_len, num_units, budget):
    """Line-by-line port of ALBERT create_masked_lm_predictions' loop, given its random draws."""
    covered, count = set(), 0
    for u in order:
        if u >= num_units:
            continue
        if count >= budget:
            break
        n = sampled_n[u]
        grams = [list(range(u, min(u + k, num_units))) for k in range(1, n + 1)]
        index_set = grams[n - 1]
        n -= 1
        while count + sum(unit_len[i] for i in index_set) > budget:
            if n == 0:
                break
            index_set = grams[n - 1]
            n -= 1
        if count + sum(unit_len[i] for i in index_set) > budget:
            continue
        if any(i in covered for i in index_set):
            continue
        covered.update(index_set)
        count += sum(unit_len[i] for i in index_set)
    return covered


@pytest.mark.parametrize("seed", range(12))
def test_ngram_greedy_matches_albert_reference_exactly(seed):
    rng = np.random.default_rng(seed)
    num_units, max_n = int(rng.integers(1, 30)), 3
    unit_len = rng.integers(1, 4, num_units)
    size = 32
    order = rng.permutation(size)
    sampled_n = np.minimum(
        rng.integers(1, max_n + 1, size), np.maximum(num_units - np.arange(size), 1)
    )
    cum = np.concatenate([[0], np.cumsum(np.pad(unit_len, (0, size)))])
    ngram_len = np.array(
        [[cum[min(u + k + 1, size)] - cum[u] for k in range(max_n)] for u in range(size)]
    )
    budget = int(rng.integers(1, 20))
    ours = greedy_ngram_cover(
        jnp.asarray(order),
        jnp.asarray(sampled_n),
        jnp.asarray(ngram_len),
        jnp.arange(size) < num_units,
        jnp.asarray(budget),
    )
    expected = albert_reference_greedy(order, sampled_n, unit_len, num_units, budget)
    assert set(np.flatnonzero(np.asarray(ours)).tolist()) == expected


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


@pytest.mark.parametrize("name", ["wwm", "ngram"])
def test_whole_words_are_all_or_nothing(name, vocab):
    tokens, segs, starts = rows(vocab, 64, 64, docs=2)
    batch = call(name, jax.random.key(4), tokens, vocab, segs, starts)
    sel = np.asarray(batch.loss_weights) > 0
    candidates = (np.asarray(segs) > 0) & ~np.isin(np.asarray(tokens), vocab.special_ids)
    for r in range(64):
        for word in word_spans(np.asarray(starts[r]), candidates[r]):
            assert sel[r, word].all() or not sel[r, word].any()
        assert sel[r].sum() <= max(1, round(0.15 * 64))


def test_wwm_with_single_token_words_hits_the_budget_and_accepts_word_ids(vocab):
    tokens, segs, _ = rows(vocab, 16, 50)
    batch = obj.wwm(
        jax.random.key(0), tokens, vocab=vocab, word_ids=jnp.arange(50)[None].repeat(16, 0)
    )
    assert (np.asarray(batch.loss_weights).sum(-1) == round(0.15 * 50)).all()
    # Chinese: word ids from a segmenter; characters of one word share an id.
    word_ids = jnp.asarray(np.repeat(np.arange(25), 2))[None].repeat(16, 0)
    batch = obj.wwm(jax.random.key(1), tokens, vocab=vocab, word_ids=word_ids)
    sel = np.asarray(batch.loss_weights) > 0
    pairs = sel[:, 2:48].reshape(16, 23, 2)  # words 1..23 lie fully between [CLS] and [SEP]
    assert (pairs[..., 0] == pairs[..., 1]).all()
    with pytest.raises(ValueError, match="exactly one"):
        obj.wwm(jax.random.key(0), tokens, vocab=vocab)


def test_ngram_lengths_follow_one_over_n(vocab):
    """With one-token words and a small rate, selected runs are the sampled n-grams."""
    tokens, segs, _ = rows(vocab, 512, 512)
    batch = jax.jit(
        lambda k: obj.ngram(
            k,
            tokens,
            vocab=vocab,
            segment_ids=segs,
            word_starts=jnp.ones_like(tokens, bool),
            rate=0.03,
        )
    )(jax.random.key(5))
    sel = np.asarray(batch.loss_weights) > 0
    runs = []
    for r in sel:
        edges = np.diff(np.concatenate([[0], r.astype(int), [0]]))
        runs += (np.flatnonzero(edges == -1) - np.flatnonzero(edges == 1)).tolist()
    hist = np.bincount(runs, minlength=5)[1:4] / len(runs)
    # Budget shortening and rare touching n-grams move a little mass; the shape is 1/n.
    np.testing.assert_allclose(hist, [6 / 11, 3 / 11, 2 / 11], atol=0.05)


def test_entity_spans_masked_whole(vocab):
    tokens, segs, _ = rows(vocab, 256, 40)
    entity_ids = np.zeros((256, 40), np.int32)
    entity_ids[:, 5:9], entity_ids[:, 9:11], entity_ids[:, 20:24] = 1, 2, 3
    batch = obj.entity(
        jax.random.key(6), tokens, vocab=vocab, segment_ids=segs, entity_ids=jnp.asarray(entity_ids)
    )
    sel = np.asarray(batch.loss_weights) > 0
    for a, b in [(5, 9), (9, 11), (20, 24)]:
        assert ((sel[:, a:b].all(1)) | (~sel[:, a:b].any(1))).all()
    assert sel[:, 5:9].all(1).mean() > 0.05  # entities do get masked


# ------------------------------------------------------------------------------------ SpanBERT


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


# ------------------------------------------------------------------------------------- ELECTRA


def test_electra_masking_85_15_no_random(vocab):
    tokens, segs, _ = rows(vocab, 1024, 128)
    batch = jax.jit(lambda k: obj.electra(k, tokens, vocab=vocab, segment_ids=segs))(
        jax.random.key(9)
    )
    assert batch.masked_positions.shape[-1] == int((0.15 + 0.005) * 128)
    sel = np.asarray(batch.loss_weights) > 0
    inputs, orig = np.asarray(batch.inputs)[sel], np.asarray(tokens)[sel]
    assert abs((inputs == vocab.mask_id).mean() - 0.85) < 0.01
    assert ((inputs == vocab.mask_id) | (inputs == orig)).all()  # never a random token


def test_electra_replace_labels_and_gumbel_sampling(vocab):
    tokens, segs, _ = rows(vocab, 2048, 32)
    batch = obj.electra(jax.random.key(10), tokens, vocab=vocab, segment_ids=segs)
    P = batch.masked_positions.shape[-1]
    # A generator that always predicts the original: nothing is labelled replaced.
    perfect = jax.nn.one_hot(batch.masked_targets, vocab.size) * 1e4
    out = obj.electra_replace(jax.random.key(0), batch, perfect)
    np.testing.assert_array_equal(out.inputs, tokens)
    assert int(out.labels.sum()) == 0
    # Logits over three tokens: samples follow the softmax; labels mark real replacements only.
    logits = jnp.full((2048, P, vocab.size), -1e9).at[..., 10].set(0.0).at[..., 11].set(1.0)
    logits = logits.at[..., 12].set(2.0)
    out = obj.electra_replace(jax.random.key(1), batch, logits)
    w = np.asarray(batch.masked_weights) > 0
    sampled = np.take_along_axis(np.asarray(out.inputs), np.asarray(batch.masked_positions), 1)[w]
    freq = np.bincount(sampled, minlength=13)[10:13] / w.sum()
    np.testing.assert_allclose(freq, jax.nn.softmax(jnp.array([0.0, 1.0, 2.0])), atol=0.01)
    np.testing.assert_array_equal(out.labels, np.asarray(out.inputs) != np.asarray(tokens))
    np.testing.assert_array_equal(out.loss_weights, np.asarray(segs) > 0)


def test_two_stage_sampling_follows_the_softmax_across_blocks():
    """Ids in different blocks, a block with no possible id, -inf ids: the frequency of every id
    in 200,000 draws lies within 5 standard errors of its softmax probability."""
    from lm_jax.objectives.masked_lm import sample_from_logits

    logits = 1.5 * jax.random.normal(jax.random.key(0), (300,))
    logits = logits.at[128:256].set(-jnp.inf).at[::7].set(-jnp.inf)  # block 1 impossible
    rows = jnp.broadcast_to(logits, (200_000, 300))
    draws = np.asarray(jax.jit(sample_from_logits)(jax.random.key(1), rows))
    freq = np.bincount(draws, minlength=300) / len(draws)
    assert freq[128:256].sum() == 0 and freq[::7].sum() == 0
    p = np.asarray(jax.nn.softmax(logits))
    assert (np.abs(freq - p) <= 5 * np.sqrt(p * (1 - p) / len(draws))).all()


# --------------------------------------------------------------------------------------- XLNet


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


# --------------------------------------------------------------------------------------- MPNet


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


# --------------------------------------------------------------------- causal, prefix, UniLM


def test_clm_exact(vocab):
    tokens = jnp.asarray([[2, 10, 11, 3, 2, 20, 3, 0]])
    segs = jnp.asarray([[1, 1, 1, 1, 2, 2, 2, 0]])
    b = obj.clm(jax.random.key(0), tokens, vocab=vocab, segment_ids=segs)
    np.testing.assert_array_equal(b.targets[0], [10, 11, 3, 0, 20, 3, 0, 0])
    np.testing.assert_array_equal(b.loss_weights[0], [1, 1, 1, 0, 1, 1, 0, 0])
    seg = np.asarray(segs[0])
    expected = np.tril(np.ones((8, 8), bool)) & (seg[:, None] == seg[None]) & (seg[:, None] > 0)
    np.testing.assert_array_equal(obj.dense_attention_mask(b)[0], expected)


def test_prefix_lm_exact(vocab):
    tokens = jnp.asarray([[2, 10, 11, 12, 13, 3]])
    b = obj.prefix_lm(jax.random.key(0), tokens, vocab=vocab, prefix_lengths=jnp.array([3]))
    mask = np.asarray(obj.dense_attention_mask(b)[0]).astype(int)
    np.testing.assert_array_equal(
        mask,
        [
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 0],
            [1, 1, 1, 1, 1, 1],
        ],
    )
    np.testing.assert_array_equal(b.loss_weights[0], [0, 0, 1, 1, 1, 0])
    np.testing.assert_array_equal(b.token_type_ids[0], [0, 0, 0, 1, 1, 1])
    # Random split: prefix length uniform in [1, n - 1].
    many = jnp.tile(tokens, (4000, 1))
    b = obj.prefix_lm(jax.random.key(1), many, vocab=vocab)
    prefix = 6 - np.asarray(b.token_type_ids).sum(-1)
    np.testing.assert_allclose(np.bincount(prefix, minlength=6)[1:6] / 4000, [0.2] * 5, atol=0.03)


def test_unilm_modes_and_mixture(vocab):
    tokens, segs, _ = rows(vocab, 3000, 16)
    b = jax.jit(lambda k: obj.unilm(k, tokens, vocab=vocab, segment_ids=segs))(jax.random.key(16))
    mask = np.asarray(obj.dense_attention_mask(b))
    tril, triu = np.tril(np.ones((16, 16), bool)), np.triu(np.ones((16, 16), bool))
    kinds = []
    for r in range(3000):
        m = mask[r]
        if m.all():
            kinds.append("bidirectional")
        elif (m == tril).all() and (b.token_type_ids[r] == 2).all():
            kinds.append("left_to_right")
        elif (m == triu).all():
            kinds.append("right_to_left")
        else:
            src = int((np.asarray(b.token_type_ids[r]) == 0).sum())
            expected = tril.copy()
            expected[:, :src] = True
            expected[:src, src:] = False
            assert (m == expected).all()
            kinds.append("seq2seq")
    freq = [kinds.count(k) / 3000 for k in obj.UNILM_MODES]
    np.testing.assert_allclose(freq, [1 / 3, 1 / 6, 1 / 6, 1 / 3], atol=0.03)
    assert (np.asarray(b.loss_weights).sum(-1) == round(0.15 * 16)).all()
    single = obj.unilm(jax.random.key(0), tokens[:4], vocab=vocab, mode="right_to_left")
    assert (np.asarray(obj.dense_attention_mask(single)) == triu).all()


def test_inputs_are_checked_at_the_boundary(vocab):
    """Out-of-range, negative or float inputs and a vocabulary without regular ids are named at
    the call, not 17 frames deep in JAX (values only outside jit, where they are concrete)."""
    from lm_jax.data.tokenizer import VocabInfo
    from lm_jax.errors import DataError

    key, tokens = jax.random.key(0), np.full((2, 16), 7, np.int32)
    cases = [
        (dict(tokens=np.full((2, 16), 1000)), r"token ids must lie in \[0, 1000\).*1000 to 1000"),
        (dict(tokens=np.full((2, 16), -3)), "token ids must lie in .* from -3"),
        (dict(tokens=tokens.astype(np.float32)), "tokens must be integer ids, got dtype float32"),
        (dict(segment_ids=np.ones((2, 16), np.float32)), "segment_ids must be integer ids"),
        (dict(segment_ids=-np.ones((2, 16), np.int32)), "segment_ids must be >= 0"),
    ]
    for name in ("mlm", "clm", "t5"):
        for arguments, message in cases:
            arguments = {"tokens": tokens, **arguments}
            with pytest.raises(DataError, match=f"{name}: {message}"):
                obj.get(name)(key, arguments.pop("tokens"), vocab=vocab, **arguments)
    specials_only = VocabInfo(size=5, pad_id=0, unk_id=1, cls_id=2, sep_id=3, mask_id=4)
    with pytest.raises(DataError, match="no regular, non-special id"):
        obj.mlm(key, np.full((2, 16), 2), vocab=specials_only)
    with pytest.raises(DataError, match="word_starts must be bool or integer flags"):
        obj.wwm(key, tokens, vocab=vocab, word_starts=np.ones((2, 16), np.float32))
