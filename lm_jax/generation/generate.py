"""`generate`: token ids in, token ids and scores out, for any lm_jax language model, jitted
once per (model structure, settings, shape); `generate_text` does the same from strings."""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from lm_jax.errors import ConfigError
from lm_jax.generation.config import GenerationConfig
from lm_jax.generation.decoders import CAUSAL_MASKS, CausalDecoder, Seq2SeqDecoder
from lm_jax.generation.search import beam_search, greedy_or_sample
from lm_jax.models.encoder import EncoderForMaskedLM
from lm_jax.models.seq2seq import EncoderDecoder
from lm_jax.sharding import batch_sharding, batch_split


@dataclasses.dataclass(frozen=True)
class Generated:
    """Token ids [rows, P + max_new_tokens] (the prompt, for an encoder-decoder its start
    token, then the new tokens, `pad_id` after each row's end), the new tokens alone
    [rows, max_new_tokens], and each row's score (beam search: the length-penalised
    log-probability; otherwise the summed log-probability of its new tokens)."""

    sequences: np.ndarray
    new_tokens: np.ndarray
    scores: np.ndarray


def generate(
    model: nnx.Module,
    input_ids,
    segment_ids,
    config: GenerationConfig,
    *,
    key: jax.Array | None = None,
    mask: str = "causal",
    mesh: Mesh | None = None,
) -> Generated:
    """Generate from `model`: an `EncoderDecoder` (BART, T5, MASS; `input_ids` is the source,
    right-padded) or an `EncoderForMaskedLM` trained as a left-to-right LM (`mask` "causal"
    for clm, "prefix" for prefix_lm, "unilm" for UniLM's seq2seq mask with its cloze decoding;
    `input_ids` is the prompt, left-padded). `segment_ids` [rows, L] is 0 on padding.
    Sampling needs `key`. With a `mesh`, the rows are split over
    its data axes (`batch_sharding`; their count must divide evenly) and the weights
    replicated: each device decodes its own rows."""
    input_ids = jnp.asarray(input_ids, jnp.int32)
    segment_ids = jnp.asarray(segment_ids, jnp.int32)
    if input_ids.ndim != 2 or segment_ids.shape != input_ids.shape:
        raise ConfigError(
            f"input_ids and segment_ids must be [rows, length] alike, got {input_ids.shape} "
            f"and {segment_ids.shape}"
        )
    if config.do_sample and key is None:
        raise ConfigError("sampling (do_sample=True) needs a key")
    kind = _decoding_kind(model, input_ids.shape[1], segment_ids, config, mask)
    graphdef, params = nnx.split(model)
    key = jax.random.key(0) if key is None else key
    if mesh is not None:
        input_ids, segment_ids, params = _placed(mesh, input_ids, segment_ids, params)
    sequences, scores = _generate(graphdef, params, input_ids, segment_ids, key, config, kind)
    sequences = np.asarray(sequences)
    prompt = sequences.shape[1] - config.max_new_tokens
    return Generated(sequences, sequences[:, prompt:], np.asarray(scores))


def _decoding_kind(model, length: int, segment_ids, config: GenerationConfig, mask: str) -> str:
    """ "seq2seq" or the causal mask `model` decodes under; a ConfigError for what it cannot."""
    if isinstance(model, EncoderDecoder):
        if config.decoder_start_id is None:
            raise ConfigError("an encoder-decoder needs decoder_start_id (BART: eos, T5: pad)")
        _check_length(length, model.cfg.max_position, "source", model)
        return "seq2seq"
    if not isinstance(model, EncoderForMaskedLM):
        raise ConfigError(
            f"cannot generate with {type(model).__name__}: an EncoderDecoder or an "
            "EncoderForMaskedLM trained with clm / prefix_lm / unilm is needed"
        )
    if mask not in CAUSAL_MASKS:
        raise ConfigError(f"mask must be one of {CAUSAL_MASKS}, got {mask!r}")
    if mask == "unilm" and config.mask_id is None:
        raise ConfigError("UniLM's cloze decoding (mask='unilm') needs config.mask_id")
    if not bool((segment_ids[:, -1] != 0).all()):
        raise ConfigError("prompts must be left-padded: every row's last token is real")
    total = length + config.max_new_tokens - (mask != "unilm")
    _check_length(total, model.encoder.cfg.max_position, "prompt + max_new_tokens", model)
    return mask


def _placed(mesh: Mesh, input_ids, segment_ids, params):
    """The rows split over the mesh's data axes, the weights replicated."""
    if input_ids.shape[0] % batch_split(mesh):
        raise ConfigError(
            f"{input_ids.shape[0]} rows do not split evenly over the mesh's "
            f"{batch_split(mesh)} data shards"
        )
    input_ids, segment_ids = jax.device_put((input_ids, segment_ids), batch_sharding(mesh))
    return input_ids, segment_ids, jax.device_put(params, NamedSharding(mesh, PartitionSpec()))


def _check_length(length: int, maximum: int, what: str, model) -> None:
    if length > maximum:
        raise ConfigError(
            f"{what} is {length} tokens; {type(model).__name__} has {maximum} positions"
        )


@functools.partial(jax.jit, static_argnames=("graphdef", "config", "kind"))
def _generate(graphdef, params, input_ids, segment_ids, key, config, kind):
    return decode(nnx.merge(graphdef, params), input_ids, segment_ids, config, key, kind)


def decode(model, input_ids, segment_ids, config: GenerationConfig, key, kind: str = "seq2seq"):
    """(sequences, scores) of `generate`, traceable: for use inside a jitted function (the
    fine-tuning predict step, sharded over its mesh). `kind`: "seq2seq", or the mask of a
    `CausalDecoder` ("causal", "prefix", "unilm")."""
    if kind == "seq2seq":
        decoder = Seq2SeqDecoder(model, config.max_new_tokens)
        prompt = jnp.full((input_ids.shape[0], 1), config.decoder_start_id, jnp.int32)
    else:
        decoder = CausalDecoder(model, config.max_new_tokens, kind, config.mask_id)
        prompt = input_ids
    state = decoder.start(input_ids, segment_ids)
    if config.num_beams > 1:
        return beam_search(decoder, state, prompt, config)
    return greedy_or_sample(decoder, state, prompt, config, key)


def generate_text(
    model: nnx.Module,
    tokenizer,
    texts: Sequence[str],
    config: GenerationConfig,
    *,
    rows,
    key: jax.Array | None = None,
    mask: str = "causal",
) -> list[str]:
    """`generate` from strings: `rows(ids) -> ids` builds each model input from the text's
    token ids (the family's special tokens); the new tokens up to the end-of-sequence id are
    decoded back to text."""
    encoded = [list(rows(tokenizer.encode(t).ids)) for t in texts]
    width = max(len(e) for e in encoded)
    seq2seq = isinstance(model, EncoderDecoder)
    ids = np.full((len(encoded), width), config.pad_id, np.int32)
    segments = np.zeros_like(ids)
    for i, e in enumerate(encoded):
        span = slice(0, len(e)) if seq2seq else slice(width - len(e), width)
        ids[i, span], segments[i, span] = e, 1
    out = generate(model, ids, segments, config, key=key, mask=mask)
    return [text_of(tokenizer, new, config.eos_id) for new in out.new_tokens]


def text_of(tokenizer, new_tokens: np.ndarray, eos_id: int) -> str:
    """The text of generated tokens up to the first end-of-sequence id."""
    ends = np.flatnonzero(new_tokens == eos_id)
    return tokenizer.decode(new_tokens[: ends[0] if ends.size else len(new_tokens)].tolist())
