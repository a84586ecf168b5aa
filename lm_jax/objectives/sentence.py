"""Sentence-level objectives: BERT's next-sentence prediction, ALBERT's sentence order,
StructBERT's word and sentence structure, and XLM's translation LM. Each builds
`[CLS] A [SEP] B [SEP]` rows (or concatenated translation pairs) and masks them like BERT.

Input rows for `nsp`, `sop` and `structbert` hold the text of one document each (segment id 1,
then padding 0; no [CLS]/[SEP]) with `sentence_starts` flagging each sentence's first token
(a row without any is one sentence). The "random" second segment of NSP and StructBERT comes
from another row of the batch (another document), so these objectives work on whole batches.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp
import numpy as np

from lm_jax.batch import Batch, SentencePairBatch
from lm_jax.layout import Rows, positions_from_segments
from lm_jax.objectives.masked_lm import mlm
from lm_jax.objectives.masking import select_positions, sparse_layout
from lm_jax.objectives.options import Options
from lm_jax.objectives.registry import Model, register
from lm_jax.vocab import VocabInfo

# Sentence-pair modes: which second segments occur, and their labels.
#   nsp: 0 = actual next, 1 = random (BERT's IsNext / NotNext)
#   sop: 0 = in order, 1 = swapped (ALBERT)
#   structbert: 0 = next, 1 = previous (swapped), 2 = random (StructBERT's 3-way SSO)
_NEXT, _SWAPPED, _RANDOM = 0, 1, 2
_MODES = {
    "nsp": (_NEXT, _RANDOM),
    "sop": (_NEXT, _SWAPPED),
    "structbert": (_NEXT, _SWAPPED, _RANDOM),
}


def truncated_lengths(len_a, len_b, max_tokens):
    """Lengths after BERT's `truncate_seq_pair` (trim the longer side one token at a time,
    the second on ties, until the pair fits): closed form of the loop."""
    fits = len_a + len_b <= max_tokens
    half_hi, half_lo = (max_tokens + 1) // 2, max_tokens // 2
    a = jnp.where(
        fits,
        len_a,
        jnp.where(
            (len_a <= len_b) & (2 * len_a <= max_tokens),
            len_a,
            jnp.where((len_b < len_a) & (2 * len_b <= max_tokens), max_tokens - len_b, half_hi),
        ),
    )
    b = jnp.where(fits, len_b, jnp.minimum(len_b, max_tokens - a))
    return a, jnp.where(fits | (2 * jnp.minimum(len_a, len_b) <= max_tokens), b, half_lo)


def _chunk_end(starts, n, target):
    """End of the first sentence whose end reaches `target` tokens (BERT accumulates sentences
    until the chunk is long enough), else n; and the number of sentences in the chunk."""
    length = starts.shape[-1]
    idx = jnp.arange(length)
    ends = jnp.concatenate([starts[1:], jnp.ones(1, bool)]) | (idx == n - 1)
    ends = ends & (idx < n)
    end_pos = idx + 1
    reached = ends & (end_pos >= target)
    end = jnp.where(reached.any(), end_pos[jnp.argmax(reached)], n)
    return end, (starts & (idx < end)).sum()


def _sentence_start(starts, k):
    """Position of the k-th sentence start (k >= 0)."""
    (positions,) = jnp.nonzero(starts, size=starts.shape[-1], fill_value=starts.shape[-1])
    return positions[jnp.clip(k, 0, starts.shape[-1] - 1)]


def _pair_row(
    key, tokens, n, starts, other, other_n, other_starts, *, vocab, modes, short_prob, single_random
):
    length = tokens.shape[-1]
    idx = jnp.arange(length)
    max_tokens = length - 3
    keys = jax.random.split(key, 7)
    starts = (starts | (idx == 0)) & (idx < n)
    other_starts = (other_starts | (idx == 0)) & (idx < other_n)
    # Target length: max_tokens, or 10% of the time uniform in [2, max_tokens] (BERT).
    short = jax.random.uniform(keys[0]) < short_prob
    target = jnp.where(short, jax.random.randint(keys[1], (), 2, max_tokens + 1), max_tokens)
    chunk_end, sentences = _chunk_end(starts, n, target)
    # A = the chunk's first a_end sentences (a_end uniform in [1, sentences - 1]); one sentence
    # is split at a random token instead, so that both halves exist.
    a_end = jax.random.randint(keys[2], (), 1, jnp.maximum(sentences, 2))
    split = jnp.where(
        sentences >= 2,
        _sentence_start(starts, a_end),
        jax.random.randint(keys[3], (), 1, jnp.maximum(chunk_end, 2)),
    )
    split = jnp.minimum(split, chunk_end)
    kind = jnp.asarray(modes, jnp.int32)[jax.random.randint(keys[4], (), 0, len(modes))]
    if single_random:  # BERT: a one-sentence chunk always gets a random B
        kind = jnp.where(sentences < 2, _RANDOM, kind)
        split = jnp.where(sentences < 2, chunk_end, split)
    # The random second segment: sentences of another document from a random sentence on,
    # enough for the rest of the target length.
    other_sentences = other_starts.sum()
    r_start = _sentence_start(other_starts, jax.random.randint(keys[5], (), 0, other_sentences))
    r_start = jnp.minimum(r_start, jnp.maximum(other_n - 1, 0))
    shifted_starts = jnp.where(idx >= r_start, other_starts, False)
    r_end, _ = _chunk_end(
        shifted_starts | (idx == r_start), other_n, r_start + jnp.maximum(target - split, 1)
    )
    random = kind == _RANDOM
    first_src = jnp.where(kind == _SWAPPED, 1, 0)  # 0: this row's A, 1: this row's B
    spans = jnp.stack(
        [
            jnp.stack([jnp.int32(0), split]),  # A
            jnp.stack([split, chunk_end]),  # actual B
        ]
    )
    first = spans[first_src]
    second = jnp.where(random, jnp.stack([r_start, r_end]), spans[1 - first_src])
    len_a, len_b = first[1] - first[0], second[1] - second[0]
    new_a, new_b = truncated_lengths(len_a, len_b, max_tokens)
    # Each trimmed token comes off the front or the back with probability 1/2.
    k_front_a, k_front_b = jax.random.split(keys[6])
    front_a = jax.random.binomial(k_front_a, len_a - new_a, 0.5).astype(jnp.int32)
    front_b = jax.random.binomial(k_front_b, len_b - new_b, 0.5).astype(jnp.int32)
    a0, b0 = first[0] + front_a, second[0] + front_b
    second_tokens = jnp.where(random, other, tokens)
    in_a = (idx >= 1) & (idx < 1 + new_a)
    in_b = (idx >= 2 + new_a) & (idx < 2 + new_a + new_b)
    total = 3 + new_a + new_b
    pair = jnp.where(in_a, tokens[jnp.clip(a0 + idx - 1, 0, length - 1)], vocab.pad_id)
    pair = jnp.where(in_b, second_tokens[jnp.clip(b0 + idx - 2 - new_a, 0, length - 1)], pair)
    pair = jnp.where(idx == 0, vocab.cls_id, pair)
    pair = jnp.where((idx == 1 + new_a) | (idx == total - 1), vocab.sep_id, pair)
    valid = (new_a >= 1) & (new_b >= 1)
    real = (idx < total) & valid
    types = ((idx >= 2 + new_a) & real).astype(jnp.int32)
    label = jnp.searchsorted(jnp.asarray(modes, jnp.int32), kind).astype(jnp.int32)
    return jnp.where(real, pair, vocab.pad_id), real.astype(jnp.int32), types, label, valid


def _sentence_pairs(key, tokens, segment_ids, sentence_starts, *, vocab, mode, short_prob):
    tokens = jnp.asarray(tokens)
    if tokens.ndim < 2:
        raise ValueError(
            f"{mode} needs a batch of documents [..., rows, L]; got shape {tokens.shape}"
        )
    length = tokens.shape[-1]
    if length < 5:
        raise ValueError(f"{mode} needs rows of at least 5 tokens ([CLS] A [SEP] B [SEP])")
    rows = tokens.size // length
    if rows < 2 and _RANDOM in _MODES[mode]:
        raise ValueError(f"{mode} draws random segments from other documents: give >= 2 rows")
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    if sentence_starts is None:
        sentence_starts = jnp.zeros(tokens.shape, bool)
    flat = lambda x: jnp.asarray(x).reshape(rows, length)
    tokens_f, starts_f = flat(tokens), flat(sentence_starts).astype(bool)
    n = (flat(segment_ids) != 0).sum(-1)
    k_partner, k_rows, k_mask = jax.random.split(key, 3)
    # Each row's "other document": a uniformly random different row.
    partner = (jnp.arange(rows) + jax.random.randint(k_partner, (rows,), 1, max(rows, 2))) % rows
    pair, real, types, labels, valid = jax.vmap(
        lambda k, t, m, s, o, om, os: _pair_row(
            k,
            t,
            m,
            s,
            o,
            om,
            os,
            vocab=vocab,
            modes=_MODES[mode],
            short_prob=short_prob,
            single_random=mode == "nsp",
        )
    )(
        jax.random.split(k_rows, rows),
        tokens_f,
        n,
        starts_f,
        tokens_f[partner],
        n[partner],
        starts_f[partner],
    )
    lead = tokens.shape[:-1]
    unflat = lambda x: x.reshape(*lead, *x.shape[1:])
    return k_mask, unflat(pair), unflat(real), unflat(types), unflat(labels), unflat(valid)


def _pair_batch(masked, types, labels, valid, **changes) -> SentencePairBatch:
    fields = {f.name: getattr(masked, f.name) for f in dataclasses.fields(masked)}
    return SentencePairBatch(
        **{**fields, **changes, "token_type_ids": types},
        sentence_labels=labels,
        sentence_weights=valid.astype(jnp.float32),
    )


@dataclasses.dataclass(frozen=True)
class SentencePairOptions(Options):
    """Options of the sentence-pair objectives (nsp, sop): `short_seq_prob`, the chance of a
    target length uniform in [2, L - 3] instead of L - 3, and BERT's masking of the pair
    (`rate`, `mask_prob`, `random_prob`)."""

    short_seq_prob: float = 0.1
    rate: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1


def _masked_pairs(key, tokens, segment_ids, sentence_starts, vocab, mode, options):
    """The mode's sentence pairs with BERT's masked LM on them: (masked batch, pair tokens,
    real flags, token types, labels, valid flags)."""
    k_mask, pair, real, types, labels, valid = _sentence_pairs(
        key,
        tokens,
        segment_ids,
        sentence_starts,
        vocab=vocab,
        mode=mode,
        short_prob=options.short_seq_prob,
    )
    masked = mlm(
        k_mask,
        pair,
        vocab=vocab,
        segment_ids=real,
        rate=options.rate,
        mask_prob=options.mask_prob,
        random_prob=options.random_prob,
    )
    return masked, pair, real, types, labels, valid


def _two_segment_task(mode: str):
    """`nsp` or `sop`: the mode's pairs, masked, with their 2-way labels."""

    def objective(key, tokens, *, vocab, segment_ids, options, sentence_starts=None):
        masked, _, _, types, labels, valid = _masked_pairs(
            key, tokens, segment_ids, sentence_starts, vocab, mode, options
        )
        return _pair_batch(masked, types, labels, valid)

    objective.__name__ = objective.__qualname__ = mode
    return objective


_SENTENCE_PAIR = dict(
    model=Model.NEXT_SENTENCE,
    options=SentencePairOptions,
    rows=Rows.DOCUMENTS,
    inputs=("sentence_starts",),
)
nsp = register("nsp", **_SENTENCE_PAIR)(_two_segment_task("nsp"))
nsp.__doc__ = """BERT's next-sentence prediction with masked LM (Devlin et al. 2019;
create_pretraining_data.py): sentences accumulate into a chunk of the target length
(L - 3, or uniform in [2, L - 3] with `short_seq_prob`), A is its first 1..k-1 sentences,
B the rest (label 0, IsNext) or, half the time, text of another document from a random
sentence on (label 1, NotNext; always for a one-sentence chunk); the pair is trimmed as
`truncate_seq_pair` does and masked 15% with 80/10/10 ([CLS]/[SEP] never).
Options: `SentencePairOptions`."""
sop = register("sop", **_SENTENCE_PAIR)(_two_segment_task("sop"))
sop.__doc__ = """ALBERT's sentence-order prediction with masked LM (Lan et al. 2020): A and B are
two consecutive segments of the same document, built as for `nsp`, swapped half of the time
(label 1 = swapped). A one-sentence chunk is split at a random token.
Options: `SentencePairOptions`."""


# The 5 orders of a trigram other than the original one.
_SHUFFLES = np.asarray([[0, 2, 1], [1, 0, 2], [1, 2, 0], [2, 0, 1], [2, 1, 0]], np.int32)


def _word_structure_row(key, inputs, pair, selected, real, types, *, vocab, rate, max_trigrams):
    """StructBERT's word structural objective on one assembled row: `rate` of the aligned,
    non-overlapping trigrams of unmasked text tokens (within one segment) are shuffled into a
    non-identity order; their positions are predicted (original tokens)."""
    length = pair.shape[-1]
    idx = jnp.arange(length)
    text = (real > 0) & ~jnp.isin(pair, jnp.asarray(vocab.special_ids, jnp.int32)) & ~selected
    at = lambda x, k: x[jnp.clip(idx + k, 0, length - 1)] & (idx + k < length)
    same = lambda k: types[jnp.clip(idx + k, 0, length - 1)] == types
    slot = (idx % 3 == 1) & text & at(text, 1) & at(text, 2) & same(1) & same(2)
    k_pick, k_order = jax.random.split(key)
    count = jnp.round(rate * slot.sum()).astype(jnp.int32)
    chosen = select_positions(k_pick, slot, count, max_trigrams)
    order = jnp.asarray(_SHUFFLES)[jax.random.randint(k_order, (length,), 0, len(_SHUFFLES))]
    start = jax.lax.cummax(jnp.where(chosen, idx, -1))  # the trigram each position may be in
    offset = idx - start
    inside = (start >= 0) & (offset < 3)
    source = start + order[jnp.clip(start, 0), jnp.clip(offset, 0, 2)]
    shuffled = jnp.where(inside, pair[jnp.clip(source, 0, length - 1)], inputs)
    return shuffled, inside


@dataclasses.dataclass(frozen=True)
class StructBERTOptions(SentencePairOptions):
    """`SentencePairOptions` and `trigram_rate`, the share of trigrams shuffled."""

    trigram_rate: float = 0.05


@register(
    "structbert",
    model=Model.SENTENCE_STRUCTURE,
    options=StructBERTOptions,
    rows=Rows.DOCUMENTS,
    inputs=("sentence_starts",),
)
def structbert(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: StructBERTOptions,
    sentence_starts: jnp.ndarray | None = None,
) -> SentencePairBatch:
    """StructBERT (Wang et al. 2020): masked LM, the word structural objective (5% of the
    trigrams of unmasked tokens shuffled, the original tokens predicted at those positions,
    in the same sparse layout as the masked tokens) and the sentence structural objective:
    B is the next segment (label 0), the previous one (A and B swapped, label 1) or from
    another document (label 2), a third each."""
    trigram_rate = options.trigram_rate
    k_pairs, k_words = jax.random.split(key)
    masked, pair, real, types, labels, valid = _masked_pairs(
        k_pairs,
        tokens,
        segment_ids,
        sentence_starts,
        vocab,
        "structbert",
        options,
    )
    length = pair.shape[-1]
    max_trigrams = max(1, math.ceil(trigram_rate * length / 3) + 1)
    lead = pair.shape[:-1]
    flat = lambda x: x.reshape(-1, length)
    shuffled, wso = jax.vmap(
        lambda k, i, p, s, r, t: _word_structure_row(
            k, i, p, s, r, t, vocab=vocab, rate=trigram_rate, max_trigrams=max_trigrams
        )
    )(
        jax.random.split(k_words, math.prod(lead)),
        flat(masked.inputs),
        flat(pair),
        flat(masked.loss_weights > 0),
        flat(real),
        flat(types),
    )
    shuffled, wso = shuffled.reshape(pair.shape), wso.reshape(pair.shape)
    predicted = (masked.loss_weights > 0) | wso
    slots = masked.masked_positions.shape[-1] + 3 * max_trigrams
    positions, targets, weights = jax.vmap(
        lambda sel, tok: sparse_layout(sel, tok, slots, vocab.pad_id)
    )(flat(predicted), flat(pair))
    return _pair_batch(
        masked,
        types,
        labels,
        valid,
        inputs=shuffled,
        loss_weights=predicted.astype(jnp.float32),
        masked_positions=positions.reshape(*lead, slots),
        masked_targets=targets.reshape(*lead, slots),
        masked_weights=weights.reshape(*lead, slots),
    )


@dataclasses.dataclass(frozen=True)
class TLMOptions(Options):
    """BERT's masking of both halves of the pair: `rate`, `mask_prob`, `random_prob`."""

    rate: float = 0.15
    mask_prob: float = 0.8
    random_prob: float = 0.1


@register(
    "tlm", model=Model.MASKED_LM, options=TLMOptions, rows=Rows.PAIRS, inputs=("language_ids",)
)
def tlm(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: TLMOptions,
    language_ids: jnp.ndarray | None = None,
) -> Batch:
    """XLM's translation LM (Conneau & Lample 2019): a parallel pair per row, the first
    sentence with segment id 1 and its translation with 2 (padding 0). Both attend to each
    other; positions restart at 0 for the second sentence; `token_type_ids` carry per-token
    language ids (`language_ids`, default: 0 for the first sentence, 1 for the second), fed
    to the model's language embeddings; 15% of the tokens of both halves masked 80/10/10."""
    tokens = jnp.asarray(tokens)
    if segment_ids is None:
        raise ValueError("tlm needs segment_ids: 1 for the sentence, 2 for its translation")
    segment_ids = jnp.asarray(segment_ids)
    pair = (segment_ids > 0).astype(jnp.int32)
    masked = mlm(
        key,
        tokens,
        vocab=vocab,
        segment_ids=pair,
        **dataclasses.asdict(options),
    )
    if language_ids is None:
        language_ids = jnp.maximum(segment_ids - 1, 0)
    return masked.replace(
        positions=positions_from_segments(segment_ids),
        token_type_ids=jnp.where(pair > 0, jnp.asarray(language_ids, jnp.int32), 0),
    )
