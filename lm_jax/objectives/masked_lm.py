"""Masked LM family: BERT / RoBERTa token masking, whole-word, n-gram and entity masking, and
ELECTRA's generator masking with its replaced-token sampler.

References: Devlin et al. 2019 (google-research/bert), Liu et al. 2019 (fairseq), Cui et al.
2019 (Chinese-BERT-wwm), Lan et al. 2020 (ALBERT n-gram masking), Sun et al. 2019 (ERNIE
entity/phrase masking), Clark et al. 2020 (google-research/electra). See shared/OBJECTIVES.md.
"""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp

from lm_jax.batch import Batch, ReplacedTokenBatch
from lm_jax.layout import Rows
from lm_jax.objectives.masking import (
    check_rates,
    default_max_predictions,
    masked_row,
)
from lm_jax.objectives.options import Options
from lm_jax.objectives.registry import Model, map_rows, register
from lm_jax.vocab import VocabInfo

ALBERT_NGRAM_PROBS = (6 / 11, 3 / 11, 2 / 11)  # p(n) proportional to 1/n, n <= 3


def _mask(
    key,
    tokens,
    unit_starts,
    *,
    vocab,
    segment_ids,
    ngram_probs,
    rate,
    max_predictions,
    budget,
    mask_prob,
    random_prob,
    random_excludes_specials,
) -> Batch:
    """The shared body of `mlm`, `wwm`, `ngram` and `entity` (they differ in their units)."""
    tokens, segment_ids, max_predictions = _prepare(
        tokens, vocab, segment_ids, rate, max_predictions, mask_prob, random_prob
    )
    return map_rows(
        masked_row,
        key,
        tokens,
        {"segment_ids": segment_ids, "unit_starts": unit_starts},
        vocab=vocab,
        rate=rate,
        max_predictions=max_predictions,
        budget=budget,
        ngram_probs=ngram_probs,
        mask_prob=mask_prob,
        random_prob=random_prob,
        random_excludes_specials=random_excludes_specials,
    )


def _prepare(tokens, vocab, segment_ids, rate, max_predictions, mask_prob, random_prob):
    check_rates(rate, mask_prob, random_prob)
    tokens = jnp.asarray(tokens)
    length = tokens.shape[-1] if tokens.ndim else 0
    if max_predictions is None:
        max_predictions = default_max_predictions(length, rate)
    if max_predictions < 1:
        raise ValueError(f"max_predictions must be >= 1, got {max_predictions}")
    if segment_ids is None:
        segment_ids = (tokens != vocab.pad_id).astype(jnp.int32)
    return tokens, segment_ids, min(max_predictions, max(length, 1))


def _word_starts_from(word_starts, word_ids, tokens):
    if (word_starts is None) == (word_ids is None):
        raise ValueError("give exactly one of word_starts (bool [..., L]) or word_ids (int)")
    if word_starts is not None:
        return jnp.asarray(word_starts, bool)
    word_ids = jnp.asarray(word_ids)
    if word_ids.shape != jnp.shape(tokens):
        raise ValueError(f"word_ids has shape {word_ids.shape}; it must match tokens")
    first = jnp.ones_like(word_ids[..., :1], bool)
    return jnp.concatenate([first, word_ids[..., 1:] != word_ids[..., :-1]], axis=-1)


@dataclasses.dataclass(frozen=True)
class MaskedLMOptions(Options):
    """Options of BERT-style masking (mlm, wwm, entity).

    Attributes:
      rate: fraction of tokens to predict (0.15).
      max_predictions: static size of the sparse layout; None: ceil(rate * L).
      mask_prob, random_prob: the 80/10/10 split (the rest stays unchanged).
      budget: "round" (BERT, exact per row) or "probabilistic" (RoBERTa, exact in expectation).
      random_excludes_specials: random replacements never produce special tokens (default; the
        reference samples the whole vocabulary).
    """

    rate: float = 0.15
    max_predictions: int | None = None
    mask_prob: float = 0.8
    random_prob: float = 0.1
    budget: str = "round"
    random_excludes_specials: bool = True


@dataclasses.dataclass(frozen=True)
class NgramOptions(MaskedLMOptions):
    """`MaskedLMOptions` and the n-gram length distribution p(n), n = 1, 2, ... (normalised)."""

    ngram_probs: tuple[float, ...] = ALBERT_NGRAM_PROBS


@dataclasses.dataclass(frozen=True)
class ElectraOptions(Options):
    """ELECTRA generator masking: `rate`, `max_predictions` (None: int((rate + 0.005) * L), as
    the reference) and `mask_prob`, the share of selected tokens shown as [MASK] (the rest stay
    unchanged)."""

    rate: float = 0.15
    max_predictions: int | None = None
    mask_prob: float = 0.85


@register("mlm", model=Model.MASKED_LM, options=MaskedLMOptions)
def mlm(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: MaskedLMOptions,
) -> Batch:
    """BERT masked LM with RoBERTa-style dynamic masking (a new mask for every key).

    Args:
      key: PRNG key; the same key gives the same batch.
      tokens: int ids [..., L]; leading axes are independent rows.
      vocab: vocabulary description (special ids are never selected; pad never predicted).
      segment_ids: packed-document ids [..., L] (0 = padding); default: 1 where not pad.
      options: `MaskedLMOptions`, given as keywords (`mlm(key, tokens, vocab=v, rate=0.2)`).
    """
    return _mask(
        key,
        tokens,
        None,
        vocab=vocab,
        segment_ids=segment_ids,
        ngram_probs=(),
        **dataclasses.asdict(options),
    )


@register("wwm", model=Model.MASKED_LM, options=MaskedLMOptions, inputs=("word_starts", "word_ids"))
def wwm(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: MaskedLMOptions,
    word_starts: jnp.ndarray | None = None,
    word_ids: jnp.ndarray | None = None,
) -> Batch:
    """Whole-word masking (BERT-wwm; Chinese-BERT-wwm with external word ids).

    One selection decision per word: words are visited in random order and taken whole while
    they fit the budget; a word that would overflow it is skipped, not truncated (reference).
    80/10/10 is still decided per token. Give `word_starts` (from the tokenizer: "▁" or
    non-"##" pieces) or `word_ids` (e.g. jieba words aligned to Chinese characters). Other
    arguments as in `mlm`.
    """
    return _mask(
        key,
        tokens,
        _word_starts_from(word_starts, word_ids, tokens),
        vocab=vocab,
        segment_ids=segment_ids,
        ngram_probs=(1.0,),
        **dataclasses.asdict(options),
    )


@register("ngram", model=Model.MASKED_LM, options=NgramOptions, inputs=("word_starts", "word_ids"))
def ngram(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: NgramOptions,
    word_starts: jnp.ndarray | None = None,
    word_ids: jnp.ndarray | None = None,
) -> Batch:
    """ALBERT n-gram masking: spans of n whole words, p(n) proportional to 1/n for n <= 3
    (0.545 / 0.273 / 0.182). `ngram_probs` sets another distribution (UniLM: (0.8, 0.1, 0.1)
    over tokens with every token a word). Other arguments as in `wwm`."""
    fields = dataclasses.asdict(options)
    probs = fields.pop("ngram_probs")
    return _mask(
        key,
        tokens,
        _word_starts_from(word_starts, word_ids, tokens),
        vocab=vocab,
        segment_ids=segment_ids,
        ngram_probs=tuple(float(p) / sum(probs) for p in probs),
        **fields,
    )


@register(
    "entity",
    model=Model.MASKED_LM,
    options=MaskedLMOptions,
    rows=Rows.ENTITIES,
    inputs=("entity_ids", "word_starts"),
)
def entity(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: MaskedLMOptions,
    entity_ids: jnp.ndarray,
    word_starts: jnp.ndarray | None = None,
) -> Batch:
    """ERNIE-style entity / phrase masking (Sun et al. 2019): given spans are masked whole.

    `entity_ids` [..., L] numbers the entity or phrase spans (0 = none; a change of id starts a
    new span). Spans and, outside them, words (`word_starts`, default: every token) are the
    units; units are taken whole in random order until the budget is reached, as in `wwm`.
    """
    tokens = jnp.asarray(tokens)
    entity_ids = jnp.asarray(entity_ids)
    if entity_ids.shape != tokens.shape:
        raise ValueError(f"entity_ids has shape {entity_ids.shape}; it must match tokens")
    words = jnp.ones(tokens.shape, bool) if word_starts is None else jnp.asarray(word_starts, bool)
    prev = jnp.concatenate([jnp.zeros_like(entity_ids[..., :1]), entity_ids[..., :-1]], axis=-1)
    starts = jnp.where(entity_ids > 0, entity_ids != prev, words | (prev > 0))
    return _mask(
        key,
        tokens,
        starts,
        vocab=vocab,
        segment_ids=segment_ids,
        ngram_probs=(1.0,),
        **dataclasses.asdict(options),
    )


@register("electra", model=Model.REPLACED_TOKEN, options=ElectraOptions)
def electra(
    key: jax.Array,
    tokens: jnp.ndarray,
    *,
    vocab: VocabInfo,
    segment_ids: jnp.ndarray | None,
    options: ElectraOptions,
) -> Batch:
    """ELECTRA's generator input (Clark et al. 2020): mask rate 0.15 (0.25 for large), selected
    tokens 85% [MASK] and 15% unchanged, no random replacement; specials and pad never selected.

    The budget is the reference's float32 `round(num_tokens * rate)` (its TF code computes in
    float32). The reference draws positions with replacement (tf.random.categorical), so it
    can mask fewer than the budget; here positions are distinct and the budget is exact. Feed
    the generator's logits at `masked_positions` to `electra_replace` for the discriminator
    batch. Options: `ElectraOptions`.
    """
    tokens = jnp.asarray(tokens)
    length = tokens.shape[-1] if tokens.ndim else 0
    max_predictions = options.max_predictions
    if max_predictions is None:
        max_predictions = max(1, int((options.rate + 0.005) * length))
    return _mask(
        key,
        tokens,
        None,
        vocab=vocab,
        segment_ids=segment_ids,
        ngram_probs=(),
        rate=options.rate,
        max_predictions=max_predictions,
        budget="round_float32",
        mask_prob=options.mask_prob,
        random_prob=0.0,
        random_excludes_specials=True,
    )


def sample_from_logits(key: jax.Array, logits: jnp.ndarray, block: int = 128) -> jnp.ndarray:
    """One token per row of `logits` [..., V], drawn from softmax(logits) (-inf: never), in two
    exact Gumbel-max stages: a block of `block` consecutive ids by its log-sum-exp, then an id
    within the chosen block. Block b is drawn with probability sum_{i in b} p_i and id i within
    it with p_i / sum_{j in b} p_j, so id i with p_i, as with one Gumbel draw per id, for
    V / block + block noise values per row instead of V (30522 -> 367 for BERT's vocabulary:
    the noise dominated ELECTRA's step time)."""
    vocab = logits.shape[-1]
    blocks = -(-vocab // block)
    pad = [(0, 0)] * (logits.ndim - 1) + [(0, blocks * block - vocab)]
    grouped = jnp.pad(logits, pad, constant_values=-jnp.inf).reshape(
        *logits.shape[:-1], blocks, block
    )
    block_key, id_key = jax.random.split(key)
    block_scores = jax.nn.logsumexp(grouped, axis=-1)
    chosen = jnp.argmax(block_scores + jax.random.gumbel(block_key, block_scores.shape), axis=-1)
    within = jnp.take_along_axis(grouped, chosen[..., None, None], axis=-2)[..., 0, :]
    offset = jnp.argmax(within + jax.random.gumbel(id_key, within.shape), axis=-1)
    return (chosen * block + offset).astype(jnp.int32)


def electra_replace(
    key: jax.Array,
    batch: Batch,
    generator_logits: jnp.ndarray,
    *,
    temperature: float = 1.0,
    disallow_original: bool = False,
) -> ReplacedTokenBatch:
    """ELECTRA's discriminator batch from the generator's logits [..., P, V] at the masked
    positions: sample a replacement from the softmax at `temperature` (`sample_from_logits`),
    write it into the original tokens, and label a token "replaced" only where the sampled
    token differs from the original (a correct sample counts as original).

    `disallow_original=True` forbids sampling the original token (the reference's
    `disallow_correct` option, off by default).
    """
    logits = generator_logits.astype(jnp.float32) / temperature
    if disallow_original:
        original = jax.nn.one_hot(batch.masked_targets, logits.shape[-1], dtype=bool)
        logits = jnp.where(original, -jnp.inf, logits)
    sampled = sample_from_logits(key, logits)
    weights = batch.masked_weights > 0
    positions = jnp.where(weights, batch.masked_positions, batch.targets.shape[-1])

    def write(row_tokens, row_positions, row_sampled):
        return row_tokens.at[row_positions].set(row_sampled, mode="drop")

    original = batch.targets
    flat = lambda x: x.reshape(-1, x.shape[-1])
    inputs = jax.vmap(write)(flat(original), flat(positions), flat(sampled)).reshape(original.shape)
    return ReplacedTokenBatch(
        inputs=inputs,
        labels=(inputs != original).astype(jnp.int32),
        loss_weights=(batch.segment_ids != 0).astype(jnp.float32),
        positions=batch.positions,
        segment_ids=batch.segment_ids,
        attention=batch.attention,
        token_type_ids=batch.token_type_ids,
    )
