"""Objectives defined by the attention order: causal LM, prefix LM and UniLM's four masks
(Radford et al. 2018; Raffel et al. 2020 prefix LM; Dong et al. 2019 UniLM)."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lm_jax.attention.mask import AttentionMask
from lm_jax.batch import Batch
from lm_jax.layout import positions_from_segments
from lm_jax.objectives.masking import check_rates, default_max_predictions, masked_row
from lm_jax.objectives.options import Options
from lm_jax.objectives.registry import Model, map_rows, register
from lm_jax.vocab import VocabInfo

UNILM_MODES = ("bidirectional", "left_to_right", "right_to_left", "seq2seq")
UNILM_MIXTURE = (1 / 3, 1 / 6, 1 / 6, 1 / 3)  # in UNILM_MODES order: the paper's 1/3, 1/6, 1/6, 1/3
# Token-type (segment embedding) ids that tell the model which LM it is (UniLM §2.2): seq2seq
# uses 0 for the source and 1 for the target.
UNILM_TOKEN_TYPES = {"bidirectional": 0, "left_to_right": 2, "right_to_left": 3, "seq2seq": 0}


def _next_token_targets(tokens, segment_ids, pad_id):
    """(targets, valid): tokens[i + 1] where position i + 1 continues i's segment."""
    nxt = jnp.concatenate([tokens[1:], jnp.full((1,), pad_id, tokens.dtype)])
    nxt_seg = jnp.concatenate([segment_ids[1:], jnp.zeros((1,), segment_ids.dtype)])
    valid = (segment_ids != 0) & (nxt_seg == segment_ids)
    return jnp.where(valid, nxt, pad_id), valid


def _segment_lengths(segment_ids):
    length = segment_ids.shape[-1]
    counts = jnp.zeros(length + 1, jnp.int32).at[segment_ids].add(1)
    return jnp.where(segment_ids != 0, counts[segment_ids], 0)


def _random_prefix(key, segment_ids, positions):
    """A prefix length per token's segment, uniform in [1, n - 1] (1 for one-token segments)."""
    n = _segment_lengths(segment_ids)
    u = jax.random.uniform(key, segment_ids.shape)
    first = jnp.arange(segment_ids.shape[-1]) - positions  # index of each segment's first token
    return 1 + jnp.floor(u[first] * jnp.maximum(n - 1, 1)).astype(jnp.int32)


def _clm_row(key, tokens, segment_ids, *, vocab):
    del key  # deterministic
    positions = positions_from_segments(segment_ids)
    targets, valid = _next_token_targets(tokens, segment_ids, vocab.pad_id)
    return Batch(
        inputs=tokens,
        targets=targets,
        loss_weights=valid.astype(jnp.float32),
        positions=positions,
        segment_ids=segment_ids,
        attention=AttentionMask.ordered(segment_ids, positions),
    )


@register("clm", model=Model.MASKED_LM)
def clm(
    key: jax.Array, tokens: jnp.ndarray, *, vocab: VocabInfo, segment_ids: jnp.ndarray | None
) -> Batch:
    """Causal LM: every token predicts the next one of its packed document (rank = position).

    Deterministic (the key is accepted for the common signature). Targets and weights are dense:
    `targets[i] = tokens[i + 1]`, weight 0 at each document's last token and on padding.
    """
    tokens = jnp.asarray(tokens)
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    return map_rows(_clm_row, key, tokens, {"segment_ids": segment_ids}, vocab=vocab)


def _prefix_row(key, tokens, segment_ids, prefix_lengths, *, vocab):
    positions = positions_from_segments(segment_ids)
    if prefix_lengths is None:
        prefix = _random_prefix(key, segment_ids, positions)
    else:
        prefix = jnp.minimum(prefix_lengths, jnp.maximum(_segment_lengths(segment_ids) - 1, 1))
    targets, valid = _next_token_targets(tokens, segment_ids, vocab.pad_id)
    in_target = valid & (positions >= prefix - 1)  # the last prefix token predicts the first target
    return Batch(
        inputs=tokens,
        targets=targets,
        loss_weights=in_target.astype(jnp.float32),
        positions=positions,
        segment_ids=segment_ids,
        attention=AttentionMask.ordered(segment_ids, jnp.maximum(positions, prefix - 1)),
        token_type_ids=(positions >= prefix).astype(jnp.int32),
    )


@register("prefix_lm", model=Model.MASKED_LM, inputs=("prefix_lengths",))
def prefix_lm(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    prefix_lengths: jnp.ndarray | None = None,
) -> Batch:
    """Prefix LM: the prefix of each document is fully visible, the rest causal
    (rank = max(position, prefix_len - 1)); the loss is next-token prediction on the rest.

    `prefix_lengths` [...] gives one prefix length per row (applied to each of its documents,
    capped at the document length - 1); by default every document is split at a uniformly
    random point. `token_type_ids` mark prefix (0) and target (1) tokens.
    """
    tokens = jnp.asarray(tokens)
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    arrays = {"segment_ids": segment_ids}
    if prefix_lengths is not None:
        prefix_lengths = jnp.asarray(prefix_lengths, jnp.int32)
        if prefix_lengths.shape != tokens.shape[:-1]:
            raise ValueError(
                f"prefix_lengths has shape {prefix_lengths.shape}; want one per row "
                f"{tokens.shape[:-1]}"
            )
        arrays["prefix_lengths"] = jnp.broadcast_to(prefix_lengths[..., None], tokens.shape)
    else:
        arrays["prefix_lengths"] = None
    return map_rows(_prefix_row, key, tokens, arrays, vocab=vocab)


def _unilm_row(
    key,
    tokens,
    segment_ids,
    *,
    vocab,
    mode_logits,
    rate,
    max_predictions,
    ngram_probs,
    mask_prob,
    random_prob,
):
    """One UniLM row: a mode, its attention ranks and LM identifiers, and the shared cloze
    masking of every masked-LM objective (`masked_row`, with every token a unit)."""
    k_mode, k_prefix, k_mask = jax.random.split(key, 3)
    mode = jax.random.categorical(k_mode, mode_logits)
    positions = positions_from_segments(segment_ids)
    source = _random_prefix(k_prefix, segment_ids, positions)
    ranks = jnp.stack(
        [
            jnp.zeros_like(positions),  # bidirectional
            positions,  # left-to-right
            -positions,  # right-to-left
            jnp.maximum(positions, source - 1),  # seq2seq: source visible, target causal
        ]
    )[mode]
    types = jnp.asarray([UNILM_TOKEN_TYPES[m] for m in UNILM_MODES])[mode]
    token_types = jnp.where(mode == 3, (positions >= source).astype(jnp.int32), types)
    masked = masked_row(
        k_mask,
        tokens,
        segment_ids,
        jnp.ones(tokens.shape, bool),
        vocab=vocab,
        rate=rate,
        max_predictions=max_predictions,
        budget="round",
        ngram_probs=ngram_probs,
        mask_prob=mask_prob,
        random_prob=random_prob,
        random_excludes_specials=True,
    )
    return masked.replace(
        attention=AttentionMask.ordered(segment_ids, ranks),
        token_type_ids=jnp.where(segment_ids != 0, token_types, 0),
    )


@dataclasses.dataclass(frozen=True)
class UniLMOptions(Options):
    """UniLM's options: `mode` (one of `UNILM_MODES` for every row; None: drawn per row from
    `mixture`, weights over `UNILM_MODES`), and the cloze masking: `rate`, `max_predictions`
    (None: ceil(rate * L)), `ngram_probs` (p of 1-, 2-, 3-grams), `mask_prob`, `random_prob`."""

    mode: str | None = None
    mixture: tuple[float, float, float, float] = UNILM_MIXTURE
    rate: float = 0.15
    max_predictions: int | None = None
    ngram_probs: tuple[float, ...] = (0.8, 0.1, 0.1)
    mask_prob: float = 0.8
    random_prob: float = 0.1


@register("unilm", model=Model.MASKED_LM, options=UniLMOptions)
def unilm(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: UniLMOptions,
) -> Batch:
    """UniLM: one shared Transformer, four LMs chosen by the attention mask, cloze targets.

    Each row draws a mode from `mixture` over `UNILM_MODES` (the paper: 1/3 bidirectional, 1/6
    left-to-right, 1/6 right-to-left, 1/3 seq2seq), or uses `mode` for every row. Ranks:
    bidirectional all equal; left-to-right the position; right-to-left minus the position;
    seq2seq max(position, source_len - 1), each document split at a random point into source
    and target. In every mode 15% of the tokens are masked (80% single tokens, 20% bigrams or
    trigrams; 80/10/10) and predicted from the sparse layout. `token_type_ids` tell the model
    the mode (`UNILM_TOKEN_TYPES`; seq2seq: 0 source / 1 target), as UniLM's segment embeddings do.
    """
    mode, mixture, rate, max_predictions = (
        options.mode,
        options.mixture,
        options.rate,
        options.max_predictions,
    )
    mask_prob, random_prob, ngram_probs = (
        options.mask_prob,
        options.random_prob,
        options.ngram_probs,
    )
    check_rates(rate, mask_prob, random_prob)
    if mode is not None:
        if mode not in UNILM_MODES:
            raise ValueError(f"mode must be one of {UNILM_MODES} or None, got {mode!r}")
        mixture = tuple(float(m == mode) for m in UNILM_MODES)
    if len(mixture) != 4 or min(mixture) < 0 or sum(mixture) <= 0:
        raise ValueError(f"mixture must be 4 non-negative weights over {UNILM_MODES}")
    tokens = jnp.asarray(tokens)
    length = tokens.shape[-1] if tokens.ndim else 0
    if max_predictions is None:
        max_predictions = default_max_predictions(length, rate)
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    probs = jnp.asarray(mixture, jnp.float32) / sum(mixture)
    return map_rows(
        _unilm_row,
        key,
        tokens,
        {"segment_ids": segment_ids},
        vocab=vocab,
        mode_logits=jnp.log(probs),
        rate=rate,
        max_predictions=min(max_predictions, max(length, 1)),
        ngram_probs=tuple(p / sum(ngram_probs) for p in ngram_probs),
        mask_prob=mask_prob,
        random_prob=random_prob,
    )
