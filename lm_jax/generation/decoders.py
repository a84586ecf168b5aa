"""The models generation drives, behind one interface: `start` takes the prompt and returns
the decoding state (every cache preallocated: static shapes), `step` feeds one token per row
and returns the next token's logits; for beam search, `expand` gives each row its beams and
`reorder` makes the state follow the beams that run on. The search algorithms
(`lm_jax.generation.search`) see only this interface; the model sees the compact
`AttentionMask` of the cache slots it may read, so the cache is just more keys.

- `Seq2SeqDecoder`: BART, T5 (v1.0 and v1.1) and MASS (`EncoderDecoder`): the source encoded
  once, each layer's cross-attention keys projected once, the decoder fed from its start token.
- `CausalDecoder`: the shared encoder (`EncoderForMaskedLM`) under a causal mask (clm), a
  prefix-LM mask (prefix_lm) or UniLM's seq2seq mask (the same rule: the prompt sees itself
  bidirectionally, each new token its past; decoded by cloze), prompts left-padded so every
  row's next token lands in the same cache slot.

A decoding step multiplies a few rows by every weight matrix: its time is the time to stream
the weights. Both decoders step with `StepWeights`, the kernels stored [out, in] (each output's
weights contiguous), which XLA:CPU streams about 1.4x faster than the [in, out] layout the
models train with (benchmarks/README.md, "Generation"); the products are the same to the bit.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx, struct

from lm_jax.attention import AttentionMask
from lm_jax.layout import positions_from_segments
from lm_jax.models.encoder import EncoderForMaskedLM
from lm_jax.models.layers import KVCache
from lm_jax.models.seq2seq import DecoderCache, EncoderDecoder

CAUSAL_MASKS = ("causal", "prefix", "unilm")


class StepWeights:
    """The model a decoding loop steps with: its 2-D kernels transposed once, before the loop
    (behind an optimization barrier, so XLA cannot cancel the two transposes), and transposed
    back inside the loop body by `model()`, where XLA folds the transpose into the product's
    dimension numbers: the loop reads each kernel in the [out, in] layout."""

    def __init__(self, model: nnx.Module):
        self.graphdef, state = nnx.split(model)
        self.state = jax.lax.optimization_barrier(_transpose_kernels(state))

    def model(self) -> nnx.Module:
        """The model, its kernels read through the transposed copies (call inside the loop)."""
        return nnx.merge(self.graphdef, _transpose_kernels(self.state))


def _transpose_kernels(state):
    def flip(path, x):
        names = [getattr(k, "key", None) for k in path]
        return x.T if "kernel" in names and x.ndim == 2 else x

    return jax.tree_util.tree_map_with_path(flip, state)


@struct.dataclass
class Seq2SeqState:
    cache: DecoderCache
    cross_segments: jnp.ndarray  # [examples, L_enc]: the encoder's real tokens
    beams: int = struct.field(pytree_node=False, default=1)  # decoder rows per example


class Seq2SeqDecoder:
    """An encoder-decoder generating from its decoder start token."""

    def __init__(self, model: EncoderDecoder, max_new_tokens: int):
        self.model = model
        self.weights = StepWeights(model)
        self.slots = max_new_tokens  # the start token and the new tokens but the last

    def start(self, input_ids: jnp.ndarray, segment_ids: jnp.ndarray) -> Seq2SeqState:
        """Encode the source rows [rows, L_enc] (`segment_ids` 0 on padding)."""
        positions = positions_from_segments(segment_ids)
        encoded = self.model.encode(input_ids, positions, AttentionMask.bidirectional(segment_ids))
        return Seq2SeqState(self.model.start_decoding(encoded, self.slots), segment_ids)

    def step(self, state: Seq2SeqState, tokens: jnp.ndarray, t) -> tuple:
        """Logits [rows, vocab] after decoder input `tokens` [rows] at position t."""
        rows = tokens.shape[0]
        one = jnp.ones((rows, 1), jnp.int32)
        seen = jnp.broadcast_to(jnp.arange(self.slots) <= t, (rows, self.slots))
        positions = jnp.full((rows, 1), t, jnp.int32)
        beam_queries = jnp.ones((state.cross_segments.shape[0], state.beams), jnp.int32)
        logits, cache = self.weights.model().extend(
            tokens[:, None],
            positions,
            state.cache,
            t,
            AttentionMask(q_segment_ids=one, kv_segment_ids=seen.astype(jnp.int32)),
            jnp.broadcast_to(jnp.arange(self.slots), (rows, self.slots)),
            AttentionMask(q_segment_ids=beam_queries, kv_segment_ids=state.cross_segments),
        )
        return logits[:, 0], state.replace(cache=cache)

    def expand(self, state: Seq2SeqState, beams: int) -> Seq2SeqState:
        """Beam search: each row's self-attention cache once per beam. The encoder's keys stay
        once per example: an example's beams are the queries of one cross-attention row."""
        repeat = lambda x: jnp.repeat(x, beams, axis=0)
        own = [jax.tree.map(repeat, c) for c in state.cache.self_attention]
        return state.replace(cache=state.cache.replace(self_attention=own), beams=beams)

    def reorder(self, state: Seq2SeqState, origin: jnp.ndarray) -> Seq2SeqState:
        """Beam search: the self-attention caches of the beams that run on (`origin` [rows]:
        the row each continues). The encoder's keys stay: beams only move within their
        example, and every beam of an example reads the same source."""
        gather = lambda x: x[origin]
        own = [jax.tree.map(gather, c) for c in state.cache.self_attention]
        return state.replace(cache=state.cache.replace(self_attention=own))


@struct.dataclass
class CausalState:
    caches: list[KVCache]
    kv_segments: jnp.ndarray  # [rows, slots]: 1 where a slot holds a real token
    kv_ranks: jnp.ndarray  # [rows, slots]: the order rule's rank of each slot
    kv_positions: jnp.ndarray  # [rows, slots]
    next_position: jnp.ndarray  # [rows]: the position id of the token fed next
    prompt_slots: int = struct.field(pytree_node=False)


class CausalDecoder:
    """The shared encoder as a left-to-right LM: `mask` "causal" (every token sees its past),
    "prefix" (the prompt sees all of itself; token types 0 for it and 1 after it, as the
    prefix_lm objective trains) or "unilm" (UniLM's seq2seq mask, the same rule, decoded as
    UniLM is trained, by cloze: each step feeds the last token and a [MASK] (`mask_id`) after
    it, whose output predicts the next token; the [MASK]'s slot is overwritten next step by
    the token it predicted; Dong et al. 2019, sec. 3.2)."""

    def __init__(
        self,
        model: EncoderForMaskedLM,
        max_new_tokens: int,
        mask: str = "causal",
        mask_id: int | None = None,
    ):
        if mask not in CAUSAL_MASKS:
            raise ValueError(f"mask must be one of {CAUSAL_MASKS}, got {mask!r}")
        if mask == "unilm" and mask_id is None:
            raise ValueError("UniLM's cloze decoding needs the [MASK] id")
        self.model, self.max_new_tokens, self.mask = model, max_new_tokens, mask
        self.weights = StepWeights(model)
        self.mask_id = mask_id

    def start(self, input_ids: jnp.ndarray, segment_ids: jnp.ndarray) -> CausalState:
        """Prompts [rows, P], left-padded (`segment_ids` 0 on padding), written into cache
        slots [0, P). `step(state, input_ids[:, -1], 0)` then feeds the last prompt token
        again, into the same slot (its keys and values come out the same: under either mask
        it sees the whole prompt), for the first new token's logits."""
        rows, prompt = input_ids.shape
        slots = prompt - 1 + self.max_new_tokens + (self.mask == "unilm")
        real = (segment_ids != 0).astype(jnp.int32)
        positions = positions_from_segments(real)
        if self.mask != "causal":  # the prompt sees all of itself
            ranks = jnp.maximum(positions, real.sum(-1, keepdims=True) - 1)
        else:
            ranks = positions
        pad = lambda x: jnp.pad(x, ((0, 0), (0, slots - prompt)))
        state = CausalState(
            caches=self.model.encoder.init_cache(rows, slots),
            kv_segments=pad(real),
            kv_ranks=pad(ranks),
            kv_positions=pad(positions),
            next_position=positions[:, -1],
            prompt_slots=prompt - 1,
        )
        if prompt == 1:
            return state
        mask = AttentionMask(
            q_segment_ids=real,
            kv_segment_ids=state.kv_segments,
            q_ranks=ranks,
            kv_ranks=state.kv_ranks,
        )
        _, caches = self.model.extend(
            input_ids,
            positions,
            jnp.zeros_like(input_ids),
            state.caches,
            0,
            mask,
            state.kv_positions,
        )
        return state.replace(caches=caches)

    def step(self, state: CausalState, tokens: jnp.ndarray, t) -> tuple:
        """Logits [rows, vocab] after `tokens` [rows]: the prompt's last token at t = 0, then
        the t-th new one, in slot prompt_slots + t (each new token sees its past; UniLM's
        [MASK] behind it in the next slot)."""
        slot = state.prompt_slots + t
        rows = tokens.shape[0]
        position = state.next_position[:, None]
        fed, positions = tokens[:, None], position
        types = jnp.full((rows, 1), jnp.where(t == 0, 0, 1) if self.mask != "causal" else 0)
        if self.mask == "unilm":
            fed = jnp.concatenate([fed, jnp.full_like(fed, self.mask_id)], axis=1)
            positions = jnp.concatenate([position, position + 1], axis=1)
            types = jnp.concatenate([types, jnp.ones_like(types)], axis=1)
        ranks = positions  # the prompt's last token has the prompt's top rank in every mask
        put = lambda x, v: jax.lax.dynamic_update_slice_in_dim(x, v, slot, axis=1)
        state = state.replace(
            kv_segments=put(state.kv_segments, jnp.ones_like(fed)),
            kv_ranks=put(state.kv_ranks, ranks),
            kv_positions=put(state.kv_positions, positions),
        )
        mask = AttentionMask(
            q_segment_ids=jnp.ones_like(fed),
            kv_segment_ids=state.kv_segments,
            q_ranks=ranks,
            kv_ranks=state.kv_ranks,
        )
        logits, caches = self.weights.model().extend(
            fed, positions, types.astype(jnp.int32), state.caches, slot, mask, state.kv_positions
        )
        next_position = state.next_position + 1
        return logits[:, -1], state.replace(caches=caches, next_position=next_position)

    def expand(self, state: CausalState, beams: int) -> CausalState:
        """Beam search: every row's state once per beam."""
        return jax.tree.map(lambda x: jnp.repeat(x, beams, axis=0), state)

    def reorder(self, state: CausalState, origin: jnp.ndarray) -> CausalState:
        """Beam search: the whole state of the beams that run on (`origin` [rows])."""
        return jax.tree.map(lambda x: x[origin], state)
