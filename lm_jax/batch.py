"""The batches objectives return (pytrees, so they flow through jit and vmap)."""

from __future__ import annotations

import jax.numpy as jnp
from flax import struct

from lm_jax.attention.mask import AttentionMask


@struct.dataclass(kw_only=True)
class Batch:
    """One objective's output for rows of length L (leading batch axes allowed).

    Dense fields are [..., L]; the sparse prediction layout is [..., max_predictions] and sorted
    by position, with weight 0 on unused slots (BERT's `masked_lm_positions/ids/weights`).

    Attributes:
      inputs: int token ids fed to the model.
      targets: int ids to predict at each position (the original tokens for masked objectives,
        the next token for causal ones).
      loss_weights: float, 1 where a prediction is scored, 0 elsewhere.
      positions: int position ids, restarting at 0 per packed segment.
      segment_ids: int packed-document ids, 1..n per row, 0 = padding (seqio convention).
      attention: who may attend to whom (`lm_jax.attention.AttentionMask`).
      token_type_ids: int sentence-A/B (or UniLM stream) ids, or None (all 0).
      masked_positions, masked_targets, masked_weights: the sparse prediction layout, or None
        for objectives that score every token through the dense fields.
    """

    inputs: jnp.ndarray
    targets: jnp.ndarray
    loss_weights: jnp.ndarray
    positions: jnp.ndarray
    segment_ids: jnp.ndarray
    attention: AttentionMask
    token_type_ids: jnp.ndarray | None = None
    masked_positions: jnp.ndarray | None = None
    masked_targets: jnp.ndarray | None = None
    masked_weights: jnp.ndarray | None = None


@struct.dataclass(kw_only=True)
class SpanBatch(Batch):
    """SpanBERT: masked LM plus span-boundary targets, in the sparse layout [..., P].

    For the masked token at `masked_positions[j]`, inside the span s..e: `sbo_left[j] = s - 1`,
    `sbo_right[j] = e + 1`, `sbo_offsets[j] = position - s`; `sbo_weights[j]` is 0 for spans
    whose boundary is outside the document or a special token, and for offsets past the limit.
    """

    sbo_left: jnp.ndarray
    sbo_right: jnp.ndarray
    sbo_offsets: jnp.ndarray
    sbo_weights: jnp.ndarray


@struct.dataclass(kw_only=True)
class TwoStreamBatch(Batch):
    """XLNet / MPNet two-stream attention.

    The content stream is `inputs`, `positions`, `segment_ids` with `attention`; the query
    stream has one row per prediction slot ([..., P]): `query_inputs` (the token embedded for
    the query stream, [MASK] for XLNet, whose model uses a learned embedding instead),
    `query_positions`, `query_segment_ids` and `query_attention`, whose keys are the content
    stream. `masked_targets` / `masked_weights` score the query rows; `masked_positions` gives
    each prediction's index in the content stream. `dense_attention_mask` returns
    (content mask, query mask).
    """

    query_inputs: jnp.ndarray
    query_positions: jnp.ndarray
    query_segment_ids: jnp.ndarray
    query_attention: AttentionMask


@struct.dataclass(kw_only=True)
class ReplacedTokenBatch:
    """ELECTRA's discriminator batch: replaced-token labels over every real token [..., L]."""

    inputs: jnp.ndarray
    labels: jnp.ndarray  # 1 where the input differs from the original token
    loss_weights: jnp.ndarray  # 1 on every non-padding token
    positions: jnp.ndarray
    segment_ids: jnp.ndarray
    attention: AttentionMask
    token_type_ids: jnp.ndarray | None = None  # sentence A/B ids, as the generator saw them


@struct.dataclass(kw_only=True)
class Seq2SeqBatch:
    """Encoder-decoder denoising (BART, T5, MASS): a corrupted encoder input and a decoder
    trained with teacher forcing. Encoder fields are [..., L_enc], decoder fields [..., L_dec];
    packed rows keep one segment id per example on both sides (seqio's convention), so
    `cross_attention` lets decoder tokens see only their own example's encoder tokens.

    Attributes:
      inputs, positions, segment_ids, attention: the encoder side (bidirectional attention).
      decoder_inputs: the targets shifted right (decoder start token first, per example).
      decoder_targets, decoder_loss_weights: what the decoder predicts and where it is scored.
      decoder_positions, decoder_segment_ids: restart per packed example; MASS gives the
        fragment's original positions.
      decoder_attention: causal within each example.
      cross_attention: decoder queries against encoder keys, same example only.
    """

    inputs: jnp.ndarray
    positions: jnp.ndarray
    segment_ids: jnp.ndarray
    attention: AttentionMask
    decoder_inputs: jnp.ndarray
    decoder_targets: jnp.ndarray
    decoder_loss_weights: jnp.ndarray
    decoder_positions: jnp.ndarray
    decoder_segment_ids: jnp.ndarray
    decoder_attention: AttentionMask
    cross_attention: AttentionMask

    @classmethod
    def from_packed(
        cls,
        inputs: jnp.ndarray,
        segment_ids: jnp.ndarray,
        positions: jnp.ndarray,
        decoder_inputs: jnp.ndarray,
        decoder_targets: jnp.ndarray,
        decoder_segment_ids: jnp.ndarray,
        decoder_positions: jnp.ndarray,
    ) -> "Seq2SeqBatch":
        """The batch with its masks built from segment ids and positions: bidirectional encoder,
        causal decoder (rank = decoder position), cross-attention within each example."""
        return cls(
            inputs=inputs,
            positions=positions,
            segment_ids=segment_ids,
            attention=AttentionMask.bidirectional(segment_ids),
            decoder_inputs=decoder_inputs,
            decoder_targets=decoder_targets,
            decoder_loss_weights=(decoder_segment_ids != 0).astype(jnp.float32),
            decoder_positions=decoder_positions,
            decoder_segment_ids=decoder_segment_ids,
            decoder_attention=AttentionMask.ordered(
                decoder_segment_ids,
                jnp.arange(decoder_segment_ids.shape[-1]) + jnp.zeros_like(decoder_segment_ids),
            ),
            cross_attention=AttentionMask(
                q_segment_ids=decoder_segment_ids, kv_segment_ids=segment_ids
            ),
        )


def encoder_inputs(batch: "Batch | ReplacedTokenBatch") -> tuple:
    """(input ids, positions, attention mask, token types): the first four arguments of every
    encoder-side model (`lm_jax.models`), from an objective's batch."""
    return batch.inputs, batch.positions, batch.attention, batch.token_type_ids


def seq2seq_inputs(batch: Seq2SeqBatch) -> tuple:
    """The arguments of `EncoderDecoder(...)` in its order: encoder ids, positions and mask,
    decoder ids, positions and mask, cross-attention mask."""
    return (
        batch.inputs,
        batch.positions,
        batch.attention,
        batch.decoder_inputs,
        batch.decoder_positions,
        batch.decoder_attention,
        batch.cross_attention,
    )


@struct.dataclass(kw_only=True)
class SentencePairBatch(Batch):
    """Masked LM on `[CLS] A [SEP] B [SEP]` rows plus a sentence-level label per row (NSP, SOP,
    StructBERT). `token_type_ids` are 0 for [CLS] A [SEP] and 1 for B [SEP];
    `sentence_labels` [...] are the objective's classes; `sentence_weights` [...] are 0 for rows
    that could not form a pair (fewer than two text tokens)."""

    sentence_labels: jnp.ndarray
    sentence_weights: jnp.ndarray
