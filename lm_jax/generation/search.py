"""Greedy search, sampling and beam search over a decoder (`lm_jax.generation.decoders`):
one `lax.while_loop` each, static shapes, stopping when every row (every beam) is done.

Beam search is Hugging Face's vectorised `GenerationMixin._beam_search` (transformers >= 4.50),
step for step: log-softmax, the logits processors, the top 2 * num_beams continuations over all
beams, the best unfinished ones continue, finished ones enter the kept hypotheses with their
length-penalised score, and the same early-stopping rules."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from lm_jax.generation.config import GenerationConfig
from lm_jax.generation.processors import process, warp

BIG = 1.0e9  # Hugging Face's "very large" penalty for excluded beams


def _prompt_buffer(prompt: jnp.ndarray, config: GenerationConfig) -> jnp.ndarray:
    rows, length = prompt.shape
    tail = jnp.full((rows, config.max_new_tokens), config.pad_id, prompt.dtype)
    return jnp.concatenate([prompt, tail], axis=1)


def greedy_or_sample(decoder, state, prompt, config: GenerationConfig, key):
    """(sequences [rows, P + max_new_tokens], scores [rows]): the prompt (for an
    encoder-decoder, its start token) then the new tokens, `pad_id` after a row's end; the
    scores sum the log-probabilities (after the processors) of each row's new tokens."""
    rows, prompt_length = prompt.shape
    init = (
        jnp.int32(0),
        _prompt_buffer(prompt, config),
        jnp.zeros(rows, bool),
        jnp.zeros(rows, jnp.float32),
        state,
        key,
    )

    def cond(carry):
        t, _, done, *_ = carry
        return (t < config.max_new_tokens) & ~done.all()

    def body(carry):
        t, sequences, done, scores, state, key = carry
        length = prompt_length + t
        logits, state = decoder.step(state, sequences[:, length - 1], t)
        logits = process(logits, sequences, length, prompt_length, config)
        if config.do_sample:
            key, draw = jax.random.split(key)
            token = jax.random.categorical(draw, warp(logits, config), axis=-1)
        else:
            token = jnp.argmax(logits, axis=-1)
        log_probs = jax.nn.log_softmax(logits, axis=-1)
        chosen = jnp.take_along_axis(log_probs, token[:, None], axis=-1)[:, 0]
        scores = scores + jnp.where(done, 0.0, chosen)
        token = jnp.where(done, config.pad_id, token).astype(sequences.dtype)
        sequences = jax.lax.dynamic_update_slice_in_dim(sequences, token[:, None], length, 1)
        return t + 1, sequences, done | (token == config.eos_id), scores, state, key

    _, sequences, _, scores, _, _ = jax.lax.while_loop(cond, body, init)
    return sequences, scores


def _gather(x: jnp.ndarray, indices: jnp.ndarray) -> jnp.ndarray:
    """x [batch, beams, ...] at beam `indices` [batch, k] -> [batch, k, ...]."""
    return jnp.take_along_axis(x, indices.reshape(indices.shape + (1,) * (x.ndim - 2)), axis=1)


def beam_search(decoder, state, prompt, config: GenerationConfig):
    """(sequences [batch, P + max_new_tokens], scores [batch]): the best finished beam of each
    row and its length-penalised score (Hugging Face's `sequences_scores`). `prompt` and the
    decoder state hold each row once; the decoder expands its state for the beams."""
    batch, prompt_length = prompt.shape
    beams, keep = config.num_beams, 2 * config.num_beams
    max_length = prompt_length + config.max_new_tokens
    state = decoder.expand(state, beams)
    running = jnp.repeat(_prompt_buffer(prompt, config)[:, None], beams, axis=1)
    running_scores = jnp.zeros((batch, beams)).at[:, 1:].set(-BIG)
    top_beams = jnp.arange(keep) < beams

    def cond(carry):
        t, *_, improvable, finished, hits = carry
        open_beam = ~(finished.all() & (config.early_stopping is True))
        return (t < config.max_new_tokens) & improvable.any() & open_beam & ~hits.all()

    def body(carry):
        t, running, running_scores, kept, kept_scores, state, improvable, finished, _ = carry
        length = prompt_length + t
        flat = running.reshape(batch * beams, -1)
        logits, state = decoder.step(state, flat[:, length - 1], t)
        log_probs = process(jax.nn.log_softmax(logits, -1), flat, length, prompt_length, config)
        vocab = log_probs.shape[-1]
        totals = (log_probs.reshape(batch, beams, vocab) + running_scores[..., None]).reshape(
            batch, -1
        )
        top_scores, top_indices = jax.lax.top_k(totals, keep)
        source_beam, token = top_indices // vocab, top_indices % vocab
        candidates = _gather(running, source_beam)
        candidates = jax.lax.dynamic_update_slice_in_dim(
            candidates, token[..., None].astype(running.dtype), length, axis=2
        )
        hits = (token == config.eos_id) | (length + 1 >= max_length)
        # The best num_beams unfinished continuations run on.
        alive_scores = top_scores - hits * BIG
        next_beams = jax.lax.top_k(alive_scores, beams)[1]
        running = _gather(candidates, next_beams)
        running_scores = _gather(alive_scores, next_beams)
        # Finished candidates among the top num_beams join the kept hypotheses.
        just_finished = hits & top_beams[None, :]
        penalised = top_scores / ((length + 1 - prompt_length) ** config.length_penalty)
        full = finished.all(-1, keepdims=True) & (config.early_stopping is True)
        penalised = penalised - full * BIG - (~improvable) * BIG - (~just_finished) * BIG
        merged = jnp.concatenate([kept, candidates], axis=1)
        merged_scores = jnp.concatenate([kept_scores, penalised], axis=1)
        merged_finished = jnp.concatenate([finished, just_finished], axis=1)
        best = jax.lax.top_k(merged_scores, beams)[1]
        kept, kept_scores = _gather(merged, best), _gather(merged_scores, best)
        finished = _gather(merged_finished, best)
        # The cache follows the beams that run on.
        origin = (_gather(source_beam, next_beams) + jnp.arange(batch)[:, None] * beams).reshape(-1)
        state = decoder.reorder(state, origin)
        # Can a running beam still beat the worst kept one?
        if config.early_stopping == "never" and config.length_penalty > 0:
            best_length = max_length - prompt_length
        else:
            best_length = length + 1 - prompt_length
        best_running = running_scores[:, :1] / (best_length**config.length_penalty)
        worst_kept = jnp.where(finished, kept_scores.min(1, keepdims=True), -BIG)
        improvable = improvable & (best_running > worst_kept).any(-1, keepdims=True)
        return t + 1, running, running_scores, kept, kept_scores, state, improvable, finished, hits

    init = (
        jnp.int32(0),
        running,
        running_scores,
        running,
        jnp.full((batch, beams), -BIG),
        state,
        jnp.ones((batch, 1), bool),
        jnp.zeros((batch, beams), bool),
        jnp.zeros((batch, keep), bool),
    )
    out = jax.lax.while_loop(cond, body, init)
    kept, kept_scores = out[3], out[4]
    return kept[:, 0], kept_scores[:, 0]
