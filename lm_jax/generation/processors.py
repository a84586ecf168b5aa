"""Logits processors: the rules applied to each step's scores before a token is chosen, in
Hugging Face's order (`GenerationMixin._get_logits_processor`): no-repeat n-grams, minimum new
tokens, forced BOS, forced EOS, then (sampling only) temperature, top-k and top-p. Pure
functions of static shapes: `sequences` [rows, T] holds the tokens so far in its first
`length` columns."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lm_jax.generation.config import GenerationConfig

NEG_INF = -jnp.inf


def process(
    scores: jnp.ndarray,
    sequences: jnp.ndarray,
    length,
    prompt_length: int,
    config: GenerationConfig,
) -> jnp.ndarray:
    """`scores` [rows, vocab] after the constraints of `config` for the next token, the
    sequences so far being `sequences[:, :length]` (`prompt_length` of them given)."""
    max_length = prompt_length + config.max_new_tokens
    if config.no_repeat_ngram_size:
        scores = ban_repeated_ngrams(scores, sequences, length, config.no_repeat_ngram_size)
    if config.min_new_tokens:
        early = length - prompt_length < config.min_new_tokens
        scores = scores.at[:, config.eos_id].set(
            jnp.where(early, NEG_INF, scores[:, config.eos_id])
        )
    if config.forced_bos_id is not None:
        scores = force(scores, config.forced_bos_id, length == 1)
    if config.forced_eos_id is not None:
        scores = force(scores, config.forced_eos_id, length == max_length - 1)
    return scores


def force(scores: jnp.ndarray, token: int, when) -> jnp.ndarray:
    """Only `token` allowed (score 0, the rest -inf) when `when` holds."""
    only = jnp.full_like(scores, NEG_INF).at[:, token].set(0.0)
    return jnp.where(when, only, scores)


def ban_repeated_ngrams(scores: jnp.ndarray, sequences: jnp.ndarray, length, n: int):
    """Forbid every token that would complete an n-gram already in `sequences[:, :length]`
    (Paulus et al. 2018; Hugging Face's `NoRepeatNGramLogitsProcessor`)."""
    rows, total = sequences.shape
    if total < n:
        return scores
    starts = jnp.arange(total - n + 1)  # n-gram i is sequences[:, i : i + n]
    grams = jnp.stack([sequences[:, starts + j] for j in range(n)], axis=-1)  # [rows, W, n]
    tail = jax.lax.dynamic_slice_in_dim(sequences, length - (n - 1), n - 1, axis=1)
    if n == 1:
        matches = jnp.ones(grams.shape[:2], bool)
    else:
        matches = (grams[..., :-1] == tail[:, None, :]).all(-1)
    matches &= (starts + n <= length)[None, :] & (length >= n - 1)
    banned = jnp.where(matches, NEG_INF, 0.0).astype(scores.dtype)
    return scores.at[jnp.arange(rows)[:, None], grams[..., -1]].add(banned)


def warp(scores: jnp.ndarray, config: GenerationConfig) -> jnp.ndarray:
    """Sampling's temperature, top-k and top-p (Holtzman et al. 2020) warpers."""
    if config.temperature != 1.0:
        scores = scores / config.temperature
    if config.top_k:
        k = min(config.top_k, scores.shape[-1])
        kth = jax.lax.top_k(scores, k)[0][:, -1:]
        scores = jnp.where(scores < kth, NEG_INF, scores)
    if config.top_p < 1.0:
        order = jnp.argsort(scores, axis=-1)  # ascending, as Hugging Face's TopPLogitsWarper
        ascending = jnp.take_along_axis(scores, order, axis=-1)
        cumulative = jnp.cumsum(jax.nn.softmax(ascending, axis=-1), axis=-1)
        remove = cumulative <= 1 - config.top_p
        remove = remove.at[:, -1].set(False)  # keep at least one token
        removed = jnp.zeros_like(remove).at[jnp.arange(scores.shape[0])[:, None], order].set(remove)
        scores = jnp.where(removed, NEG_INF, scores)
    return scores
