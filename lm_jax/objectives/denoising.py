"""Encoder-decoder denoising objectives: T5 span corruption, BART text denoising, MASS.

Each returns a `Seq2SeqBatch` of static shape. A row is one example (T5 and BART concatenate
documents before corrupting them, so packed documents of a row are corrupted as one text);
padding (segment 0) at the end of a row shortens the example.
"""

from __future__ import annotations

import dataclasses
import math

import jax
import jax.numpy as jnp

from lm_jax.batch import Seq2SeqBatch
from lm_jax.objectives.masking import corrupt, random_order, random_tokens, select_positions
from lm_jax.objectives.options import Options
from lm_jax.objectives.registry import Model, map_rows, register
from lm_jax.vocab import VocabInfo

# ---------------------------------------------------------------------------------------------
# T5 span corruption (Raffel et al. 2020; t5.data.preprocessors.random_spans_noise_mask)


def _t5_counts(length, noise_density: float, mean_span: float):
    """(noise tokens, noise spans) for a text of `length` tokens: round(L * density) clipped to
    [1, L - 1], and max(1, round(noise / mean_span)). Works on Python ints and traced arrays
    (`round` is half-to-even in both, as in the reference's Python)."""
    if isinstance(length, int):
        noise = min(max(round(max(length, 2) * noise_density), 1), max(length, 2) - 1)
        return noise, max(round(noise / mean_span), 1)
    clamped = jnp.maximum(length, 2)
    noise = jnp.clip(jnp.round(clamped * noise_density), 1, clamped - 1).astype(jnp.int32)
    return noise, jnp.maximum(jnp.round(noise / mean_span), 1).astype(jnp.int32)


def t5_lengths(
    raw_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> tuple[int, int]:
    """(encoder input length, target length) after span corruption of `raw_length` tokens:
    non-noise tokens + one sentinel per span + EOS, and noise tokens + one sentinel per span +
    EOS. `t5_lengths(568) == (512, 114)`."""
    noise, spans = _t5_counts(raw_length, noise_density, mean_noise_span_length)
    return raw_length - noise + spans + 1, noise + spans + 1


def t5_raw_length(
    inputs_length: int, noise_density: float = 0.15, mean_noise_span_length: float = 3.0
) -> int:
    """The longest raw text whose corrupted input fits `inputs_length` (the reference's
    `random_spans_helper`): 512 -> 568, whose targets are then 114 long (`t5_lengths`)."""
    if inputs_length < 2:
        raise ValueError(f"inputs_length must be >= 2, got {inputs_length}")
    raw = inputs_length - 1
    while t5_lengths(raw + 1, noise_density, mean_noise_span_length)[0] <= inputs_length:
        raw += 1
    return raw


def _random_segmentation(key, num_items, num_segments, bound: int, max_segments: int):
    """Lengths [bound] of a uniformly random split of `num_items` items into `num_segments`
    non-empty segments (the reference shuffles num_segments - 1 "segment starts" among the
    num_items - 1 gaps); entries past num_segments are 0."""
    idx = jnp.arange(bound)
    starts = select_positions(
        key, (idx >= 1) & (idx < num_items), num_segments - 1, max(max_segments - 1, 1)
    )
    segment = jnp.cumsum(starts)
    return jnp.zeros(bound, jnp.int32).at[segment].add((idx < num_items).astype(jnp.int32))


def t5_noise_mask(
    key: jax.Array, length, bound: int, noise_density: float, mean_span: float
) -> jnp.ndarray:
    """T5's `random_spans_noise_mask` for a text of `length` (traced) <= `bound` tokens: bool
    [bound], noise spans alternating with non-noise spans, non-noise first."""
    noise, spans = _t5_counts(length, noise_density, mean_span)
    max_spans = _t5_counts(bound, noise_density, mean_span)[1] + 1
    k_noise, k_keep = jax.random.split(key)
    noise_lengths = _random_segmentation(k_noise, noise, spans, bound, max_spans)
    keep_lengths = _random_segmentation(
        k_keep, jnp.maximum(length, 2) - noise, spans, bound, max_spans
    )
    interleaved = jnp.stack([keep_lengths, noise_lengths], axis=1).reshape(-1)
    span_starts = jnp.cumsum(interleaved)[:-1]
    indicator = jnp.zeros(bound, jnp.int32).at[span_starts].add(1, mode="drop")
    return (jnp.cumsum(indicator) % 2 == 1) & (jnp.arange(bound) < length)


def _compact(values: jnp.ndarray, keep: jnp.ndarray, size: int, fill: int) -> jnp.ndarray:
    """values[keep] moved to the front of a [size] array padded with `fill`."""
    where = jnp.where(keep, jnp.cumsum(keep) - 1, size)
    return jnp.full(size, fill, values.dtype).at[where].set(values, mode="drop")


def _spans_to_sentinels(tokens, spans, real, size: int, vocab: VocabInfo):
    """The reference's `noise_span_to_unique_sentinel`: each run of `spans` becomes one
    sentinel (the k-th run <extra_id_k>), other real tokens stay; then EOS. Returns (ids [size],
    length including EOS)."""
    previous = jnp.concatenate([jnp.zeros(1, bool), spans[:-1]])
    first = spans & ~previous
    run = jnp.cumsum(first) - 1
    sentinels = jnp.asarray(vocab.sentinel_ids, jnp.int32)
    out = jnp.where(first, sentinels[jnp.clip(run, 0, len(sentinels) - 1)], tokens)
    keep = real & ~(spans & previous)
    count = keep.sum()
    out = _compact(out, keep, size, vocab.pad_id).at[count].set(vocab.eos_id, mode="drop")
    return out, count + 1


def _t5_row(key, tokens, segment_ids, *, vocab, noise_density, mean_span, inputs_len, targets_len):
    bound = tokens.shape[-1]
    length = (segment_ids != 0).sum()
    noise = t5_noise_mask(key, length, bound, noise_density, mean_span)
    real = jnp.arange(bound) < length
    inputs, n_inputs = _spans_to_sentinels(tokens, noise, real, inputs_len, vocab)
    targets, n_targets = _spans_to_sentinels(tokens, real & ~noise, real, targets_len, vocab)
    empty = length == 0  # an all-padding row stays all padding
    n_inputs, n_targets = jnp.where(empty, 0, n_inputs), jnp.where(empty, 0, n_targets)
    return _seq2seq_fields(inputs, n_inputs, targets, n_targets, vocab.pad_id)


def _seq2seq_fields(inputs, n_inputs, targets, n_targets, pad_id: int):
    """Seq2SeqBatch fields of one example: segment 1 on the real part, positions from 0, and
    the decoder fed the targets shifted right after a start token (pad, as in T5)."""
    enc_real = jnp.arange(inputs.shape[-1]) < n_inputs
    dec_real = jnp.arange(targets.shape[-1]) < n_targets
    inputs = jnp.where(enc_real, inputs, pad_id)
    targets = jnp.where(dec_real, targets, pad_id)
    decoder_inputs = jnp.concatenate([jnp.full(1, pad_id, targets.dtype), targets[:-1]])
    return dict(
        inputs=inputs,
        segment_ids=enc_real.astype(jnp.int32),
        positions=jnp.where(enc_real, jnp.arange(inputs.shape[-1]), 0),
        decoder_inputs=jnp.where(dec_real, decoder_inputs, pad_id),
        decoder_targets=targets,
        decoder_segment_ids=dec_real.astype(jnp.int32),
        decoder_positions=jnp.where(dec_real, jnp.arange(targets.shape[-1]), 0),
    )


@dataclasses.dataclass(frozen=True)
class T5Options(Options):
    """Options of `t5` (see its docstring)."""

    noise_density: float = 0.15
    mean_noise_span_length: float = 3.0


@register("t5", model=Model.T5, options=T5Options)
def t5(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: T5Options,
) -> Seq2SeqBatch:
    """T5 span corruption (Raffel et al. 2020, sec. 3.1.4): round(0.15 n) noise tokens in
    round(noise / 3) spans, the split into spans uniformly random as in the reference's
    `random_spans_noise_mask` (non-noise first, spans alternating); the encoder sees each noise
    span replaced by one sentinel, the decoder predicts sentinel + span for every span, then EOS.
    Sentinels count down from the vocabulary's top (`vocab.sentinel_ids`).

    Rows of raw length N (segment ids > 0: real text, documents concatenated as in T5) give
    encoder inputs and targets of the static lengths `t5_lengths(N)`; for 512-token inputs feed
    rows of `t5_raw_length(512)` = 568 tokens (targets: 114).
    """
    noise_density, mean_noise_span_length = (
        options.noise_density,
        options.mean_noise_span_length,
    )
    if not 0.0 < noise_density < 1.0:
        raise ValueError(f"noise_density must be in (0, 1), got {noise_density}")
    if mean_noise_span_length < 1:
        raise ValueError(f"mean_noise_span_length must be >= 1, got {mean_noise_span_length}")
    tokens = jnp.asarray(tokens)
    length = tokens.shape[-1] if tokens.ndim else 0
    spans = _t5_counts(max(length, 1), noise_density, mean_noise_span_length)[1]
    if len(vocab.sentinel_ids) < spans:
        raise ValueError(
            f"rows of {length} tokens need up to {spans} sentinels; the vocabulary has "
            f"{len(vocab.sentinel_ids)} (train the tokenizer with more extra ids)"
        )
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    inputs_len, targets_len = t5_lengths(max(length, 1), noise_density, mean_noise_span_length)
    fields = map_rows(
        _t5_row,
        key,
        tokens,
        {"segment_ids": segment_ids},
        vocab=vocab,
        noise_density=noise_density,
        mean_span=mean_noise_span_length,
        inputs_len=inputs_len,
        targets_len=targets_len,
    )
    return Seq2SeqBatch.from_packed(**fields)


# ---------------------------------------------------------------------------------------------
# BART text denoising (Lewis et al. 2020; fairseq denoising_dataset.py)


def _permute_sentences(key, tokens, word_starts, n, full_stop_id: int, ratio: float):
    """fairseq's `permute_sentences`: sentences end after a run of full stops (the token before
    the final eos counts as one); ceil(ratio * S) of the S sentences, chosen at random, are
    shuffled among their own slots; bos (position 0) and eos (n - 1) stay."""
    length = tokens.shape[-1]
    idx = jnp.arange(length)
    full_stops = ((tokens == full_stop_id) & (idx < n)) | (idx == n - 2)
    next_stop = jnp.concatenate([full_stops[1:], jnp.zeros(1, bool)])
    # A sentence ends (exclusive) at i + 2 where full_stops[i + 1] and not full_stops[i].
    end_flags = jnp.zeros(length + 2, bool).at[idx + 2].set(next_stop & ~full_stops)[:length]
    body = (idx >= 1) & (idx < n - 1)
    end_flags = end_flags & (idx <= n - 1)
    sentence = jnp.cumsum(end_flags)  # sentence id of each body token
    count = end_flags.sum()
    sizes = jnp.zeros(length, jnp.int32).at[jnp.where(body, sentence, length)].add(1, mode="drop")
    begins = jnp.cumsum(sizes) - sizes + 1  # first position of each sentence (after bos)
    k_choose, k_shuffle = jax.random.split(key)
    exists = idx < count
    chosen_rank = jnp.argsort(random_order(k_choose, exists))  # random rank of each sentence
    chosen = exists & (chosen_rank < jnp.ceil(count * ratio))
    slots = jnp.nonzero(chosen, size=length, fill_value=length)[0]  # chosen sentences, ascending
    shuffled = random_order(k_shuffle, chosen)  # chosen sentences in random order
    ordering = idx.at[slots].set(shuffled, mode="drop")  # sentence placed in each slot
    placed_sizes = sizes[ordering]
    new_begin_of_slot = jnp.cumsum(placed_sizes) - placed_sizes + 1
    slot_of = jnp.zeros(length, jnp.int32).at[ordering].set(idx)
    target = jnp.where(body, new_begin_of_slot[slot_of[sentence]] + idx - begins[sentence], idx)
    return (
        jnp.zeros_like(tokens).at[target].set(tokens),
        jnp.zeros_like(word_starts).at[target].set(word_starts),
    )


def _insert(key, source, m, count, size: int, max_count: int, vocab, random_ratio, excludes):
    """fairseq's `add_insertion_noise` for `count` tokens into source[:m]: positions uniform in
    [1, m + count - 1) (never first or last), ceil(random_ratio * count) of them random tokens,
    the rest [MASK]. Returns (tokens [size], new length, which may exceed size)."""
    idx = jnp.arange(size)
    total = m + count
    k_where, k_random, k_tokens = jax.random.split(key, 3)
    inserted = select_positions(k_where, (idx >= 1) & (idx < total - 1), count, max_count)
    num_random = jnp.ceil(count * random_ratio).astype(jnp.int32)
    is_random = select_positions(k_random, inserted, num_random, max_count)
    fill = jnp.where(is_random, random_tokens(k_tokens, (size,), vocab, excludes), vocab.mask_id)
    from_source = source[jnp.clip(jnp.cumsum(~inserted) - 1, 0, source.shape[-1] - 1)]
    out = jnp.where(inserted, fill, from_source)
    return jnp.where(idx < total, out, vocab.pad_id), total


def poisson_span_lengths(key: jax.Array, budget, lam: float, size: int):
    """fairseq's span-length draw: Poisson(lam) lengths until their sum reaches `budget`, the
    last one trimmed so the sum is exactly `budget`. Returns (the non-zero lengths in draw
    order [size], how many, how many zero-length draws (insertions))."""
    idx = jnp.arange(size)
    lengths = jax.random.poisson(key, lam, (size,)).astype(jnp.int32)
    total = jnp.cumsum(lengths)
    reached = total >= budget
    last = jnp.where(reached.any(), jnp.argmax(reached), size - 1)  # first draw at the budget
    lengths = lengths.at[last].set(budget - jnp.where(last > 0, total[last - 1], 0))
    drawn = (idx <= last) & (budget > 0)
    spans = drawn & (lengths > 0)
    ordered = lengths[jnp.nonzero(spans, size=size, fill_value=0)[0]]
    return ordered, spans.sum(), (drawn & (lengths == 0)).sum()


def _whole_word_mask(
    key, tokens, word_starts, n, vocab, p, lam, poisson, replace_length, random_ratio, excludes
):
    """fairseq's `add_whole_word_mask`: ceil(p * words) words masked in spans (Poisson(lam)
    words each, or one word each without `poisson`), starting at distinct random word starts,
    a `random_ratio` share of the spans random tokens. Returns (tokens with masks, keep flags,
    number of insertions)."""
    length = tokens.shape[-1]
    idx = jnp.arange(length)
    starts = word_starts & (idx >= 1) & (idx < n - 1)
    num_words = starts.sum()
    budget = jnp.ceil(num_words * p).astype(jnp.int32)
    k_len, k_start, k_random, k_tokens = jax.random.split(key, 4)
    if poisson:
        span_lengths, num_spans, inserts = poisson_span_lengths(k_len, budget, lam, length)
    else:
        span_lengths, num_spans, inserts = jnp.ones(length, jnp.int32), budget, jnp.int32(0)
    order = random_order(k_start, starts)  # word starts in random order
    span_valid = idx < num_spans
    span_start = jnp.where(span_valid, order, length)
    word_rank = jnp.cumsum(starts) - 1
    start_positions = jnp.nonzero(starts, size=length + 1, fill_value=n - 1)[0]
    span_end = jnp.minimum(
        start_positions[
            jnp.clip(word_rank[jnp.clip(span_start, 0, length - 1)] + span_lengths, 0, length)
        ],
        n - 1,
    )
    random_span = jax.random.uniform(k_random, (length,)) < random_ratio
    head = jnp.zeros(length, bool).at[span_start].set(True, mode="drop")
    delta = jnp.zeros(length + 1, jnp.int32)
    delta = delta.at[jnp.where(span_valid, span_start + 1, length)].add(1)
    delta = delta.at[jnp.where(span_valid, span_end, length)].add(-1)
    rest = jnp.cumsum(delta)[:length] > 0
    # Each covered token follows the latest span that starts at or before it.
    owner_start = jax.lax.cummax(jnp.where(head, idx, -1))
    span_of_start = jnp.zeros(length, jnp.int32).at[span_start].set(idx, mode="drop")
    random_here = random_span[span_of_start[jnp.clip(owner_start, 0)]]
    replacement = jnp.where(
        random_here, random_tokens(k_tokens, (length,), vocab, excludes), vocab.mask_id
    )
    real = idx < n
    if replace_length == 0:
        keep, masked = real & ~(head | rest), jnp.zeros(length, bool)
    elif replace_length == 1:
        keep, masked = real & ~rest, head
    else:
        keep, masked = real, head | rest
    return jnp.where(masked, replacement, tokens), keep, inserts


def _rotate(key, tokens, m, ratio: float):
    """fairseq's `add_rolling_noise`, applied with probability `ratio`: the body (between the
    first and the last token) rotated to start at a uniform offset in [1, max(1, m - 1)] (the
    two ends of that range both leave it unchanged, as in the reference)."""
    k_apply, k_offset = jax.random.split(key)
    offset = jax.random.randint(k_offset, (), 1, jnp.maximum(1, m - 1) + 1)
    body = jnp.maximum(m - 2, 1)
    idx = jnp.arange(tokens.shape[-1])
    source = 1 + (idx - 1 + offset - 1) % body
    rotated = jnp.where((idx >= 1) & (idx < m - 1), tokens[source], tokens)
    return jnp.where(jax.random.uniform(k_apply) < ratio, rotated, tokens)


def _bart_row(
    key,
    tokens,
    segment_ids,
    word_starts,
    *,
    vocab,
    mask_ratio,
    span_lengths,
    poisson_lambda,
    random_ratio,
    replace_length,
    permute_sentence_ratio,
    rotate_ratio,
    insert_ratio,
    full_stop_id,
    inputs_len,
    random_excludes_specials,
):
    length = tokens.shape[-1]
    n = (segment_ids != 0).sum()
    k_perm, k_mask, k_ins1, k_ins2, k_rot = jax.random.split(key, 5)
    source, starts = tokens, word_starts
    if permute_sentence_ratio > 0:
        source, starts = _permute_sentences(
            k_perm, source, starts, n, full_stop_id, permute_sentence_ratio
        )
    size = max(inputs_len, length)
    masked, keep, inserts = source, jnp.arange(length) < n, jnp.zeros((), jnp.int32)
    if mask_ratio > 0:
        masked, keep, inserts = _whole_word_mask(
            k_mask,
            source,
            starts,
            n,
            vocab,
            mask_ratio,
            poisson_lambda,
            span_lengths == "poisson",
            replace_length,
            random_ratio,
            random_excludes_specials,
        )
    m = keep.sum()
    out = _compact(masked, keep, size, vocab.pad_id)
    max_inserts = math.ceil(length * mask_ratio) + 1
    out, m = _insert(
        k_ins1, out, m, inserts, size, max_inserts, vocab, random_ratio, random_excludes_specials
    )
    if insert_ratio > 0:
        count = jnp.ceil(m * insert_ratio).astype(jnp.int32)
        out, m = _insert(
            k_ins2,
            out,
            m,
            count,
            size,
            math.ceil(size * insert_ratio) + 1,
            vocab,
            random_ratio,
            random_excludes_specials,
        )
    # Longer than the static input length (rare: insertions exceed deletions): keep eos last.
    overflow = m > inputs_len
    out = out[:inputs_len]
    out = jnp.where(overflow, out.at[inputs_len - 1].set(vocab.eos_id), out)
    m = jnp.minimum(m, inputs_len)
    if rotate_ratio > 0:
        out = _rotate(k_rot, out, m, rotate_ratio)
    empty = n == 0
    fields = _seq2seq_fields(out, jnp.where(empty, 0, m), tokens, n, vocab.pad_id)
    # fairseq's prev_output_tokens: the targets with eos moved to the front.
    fields["decoder_inputs"] = jnp.where(
        fields["decoder_segment_ids"] > 0,
        jnp.concatenate([jnp.full(1, vocab.eos_id, tokens.dtype), tokens[:-1]]),
        vocab.pad_id,
    )
    return fields


@dataclasses.dataclass(frozen=True)
class BARTOptions(Options):
    """Options of `bart` (see its docstring)."""

    mask_ratio: float = 0.3
    span_lengths: str = "poisson"
    poisson_lambda: float = 3.5
    random_ratio: float = 0.1
    replace_length: int = 1
    permute_sentence_ratio: float = 1.0
    rotate_ratio: float = 0.0
    insert_ratio: float = 0.0
    full_stop_id: int | None = None
    inputs_length: int | None = None
    random_excludes_specials: bool = True


@register("bart", model=Model.BART, options=BARTOptions, inputs=("word_starts",))
def bart(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: BARTOptions,
    word_starts: jnp.ndarray | None = None,
) -> Seq2SeqBatch:
    """BART text denoising (Lewis et al. 2020), fairseq's `DenoisingDataset` in its order:
    sentence permutation, whole-word span masking (text infilling), insertion, rotation.

    Defaults are the BART-large recipe: 30% of words masked in spans of Poisson(3.5) words (the
    authors' command line; the paper says 3), each span replaced by one [MASK]
    (`replace_length=1`; -1 masks every token, 0 deletes the span), 10% of spans a random token,
    zero-length spans insert a [MASK]; every sentence permuted; no rotation. The paper's single
    noises: token masking is `span_lengths="word"` (one word per span), token deletion adds
    `replace_length=0`, text infilling is the default spans, and `permute_sentence_ratio`,
    `rotate_ratio` (document rotation) and `insert_ratio` switch the others on or off.

    Rows are one example each: `[bos] ... [eos]` followed by padding (segment 0); bos and eos
    are never touched. Sentences end at `full_stop_id` (default `vocab.eos_id`, fairseq's
    separator between sentences). The encoder input is padded to `inputs_length` (default L);
    in the rare case that insertions make it longer it is truncated, eos kept last. The decoder
    reconstructs the original row, fed the row shifted right after eos (fairseq's
    `prev_output_tokens`).
    """
    # Options are validated by BARTOptions (span_lengths, replace_length, ratios, lambda).
    tokens = jnp.asarray(tokens)
    length = tokens.shape[-1] if tokens.ndim else 0
    inputs_length = length if options.inputs_length is None else options.inputs_length
    if inputs_length < 2:
        raise ValueError(f"inputs_length must be >= 2, got {inputs_length}")
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    if word_starts is None:
        word_starts = jnp.ones(tokens.shape, bool)
    row_options = dataclasses.asdict(options)
    del row_options["inputs_length"]
    if options.full_stop_id is None:
        row_options["full_stop_id"] = vocab.eos_id
    fields = map_rows(
        _bart_row,
        key,
        tokens,
        {"segment_ids": segment_ids, "word_starts": jnp.asarray(word_starts, bool)},
        vocab=vocab,
        inputs_len=inputs_length,
        **row_options,
    )
    return Seq2SeqBatch.from_packed(**fields)


# ---------------------------------------------------------------------------------------------
# MASS (Song et al. 2019; microsoft/MASS)


def _mass_row(key, tokens, segment_ids, *, vocab, ratio, mask_prob, random_prob, excludes, size):
    length = tokens.shape[-1]
    n = (segment_ids != 0).sum()
    idx = jnp.arange(length)
    content = jnp.maximum(n - 2, 0)  # between bos and eos
    k = jnp.clip(jnp.round(content * ratio), 1, jnp.minimum(content, size)).astype(jnp.int32)
    k_where, k_uniform, k_corrupt = jax.random.split(key, 3)
    # The reference's `mask_start(end)`: 20% the first content token, 20% the last possible
    # start, 60% uniform in [1, end).
    end = jnp.maximum(n - 1 - k, 1)
    u = jax.random.uniform(k_where)
    uniform_start = jax.random.randint(k_uniform, (), 1, jnp.maximum(end, 2))
    start = jnp.where(u >= 0.8, 1, jnp.where(u >= 0.6, end, jnp.minimum(uniform_start, end)))
    # The fragment as `size` slots; 80/10/10 on them as BERT's (`corrupt`).
    slot = jnp.arange(size)
    real = (slot < k) & (content > 0)
    source = jnp.clip(start + slot, 0, length - 1)
    inputs = corrupt(k_corrupt, tokens, source, real, vocab, mask_prob, random_prob, excludes)
    # Decoder: predict the fragment, fed the previous original tokens, at original positions.
    return dict(
        inputs=jnp.where(idx < n, inputs, vocab.pad_id),
        segment_ids=(idx < n).astype(jnp.int32),
        positions=jnp.where(idx < n, idx, 0),
        decoder_inputs=jnp.where(real, tokens[jnp.maximum(source - 1, 0)], vocab.pad_id),
        decoder_targets=jnp.where(real, tokens[source], vocab.pad_id),
        decoder_segment_ids=real.astype(jnp.int32),
        decoder_positions=jnp.where(real, source, 0),
    )


@dataclasses.dataclass(frozen=True)
class MASSOptions(Options):
    """Options of `mass` (see its docstring)."""

    fragment_ratio: float = 0.5
    mask_prob: float = 0.8
    random_prob: float = 0.1
    random_excludes_specials: bool = True


@register("mass", model=Model.BART, options=MASSOptions)
def mass(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: MASSOptions,
) -> Seq2SeqBatch:
    """MASS masked sequence-to-sequence pretraining (Song et al. 2019): one contiguous fragment
    of round(0.5 m) of the m tokens between bos and eos, its start the first token 20% of the
    time, the last possible start 20%, uniform otherwise (the reference's `mask_start`); in the
    encoder each fragment token is [MASK] 80% / random 10% / unchanged 10%. The decoder predicts
    the fragment, fed the previous original token at each step, with the fragment's original
    positions (`decoder_positions`). Decoder length: ceil(fragment_ratio * L).

    Rows are one sentence or text block each: `[bos] ... [eos]`, then padding (segment 0).
    """
    fragment_ratio, mask_prob, random_prob, random_excludes_specials = (
        options.fragment_ratio,
        options.mask_prob,
        options.random_prob,
        options.random_excludes_specials,
    )
    if not 0.0 < fragment_ratio <= 1.0:
        raise ValueError(f"fragment_ratio must be in (0, 1], got {fragment_ratio}")
    if mask_prob < 0 or random_prob < 0 or mask_prob + random_prob > 1.0:
        raise ValueError("mask_prob and random_prob must be non-negative with a sum of at most 1")
    tokens = jnp.asarray(tokens)
    length = tokens.shape[-1] if tokens.ndim else 0
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    fields = map_rows(
        _mass_row,
        key,
        tokens,
        {"segment_ids": segment_ids},
        vocab=vocab,
        ratio=fragment_ratio,
        mask_prob=mask_prob,
        random_prob=random_prob,
        excludes=random_excludes_specials,
        size=max(1, math.ceil(fragment_ratio * length)),
    )
    return Seq2SeqBatch.from_packed(**fields)
