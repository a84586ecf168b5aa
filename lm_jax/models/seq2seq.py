"""Encoder-decoder Transformers for denoising objectives: BART (Lewis et al. 2020; also MASS,
Song et al. 2019, which uses the same post-LN architecture) and T5 (Raffel et al. 2020).

The two families differ in a handful of choices, fixed by `Seq2SeqConfig.family`:

| | "bart" | "t5" |
|---|---|---|
| positions | learned, table offset 2 | relative buckets, first-layer bias shared |
| norm | post-LN LayerNorm, embedding LayerNorm | pre-LN RMSNorm, final norms |
| biases | yes | none |
| logits scale | 1/sqrt(head_dim) | 1 (folded into the init) |
| output | tied decoder + final_logits_bias | tied decoder on d_model^-0.5-scaled states |
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
from flax import nnx, struct

from lm_jax.attention import AttentionMask
from lm_jax.models.config import TransformerConfig
from lm_jax.models.heads import (
    FirstTokenClassificationHead,
    QuestionAnsweringHead,
    last_real_token,
)
from lm_jax.models.layers import (
    HIDDEN_AXES,
    FeedForward,
    GatedFeedForward,
    KVCache,
    MultiHeadAttention,
    RelativePositionBias,
    dense,
    embed,
    empty_caches,
    freeze_padding_row,
    layer_norm,
    layer_runner,
    rms_norm,
    vocabulary_logits,
)
from lm_jax.sharding import constrain

FAMILIES = ("bart", "t5")
BART_POSITION_OFFSET = 2  # BART's learned position table starts at padding_idx + 1


@dataclasses.dataclass(frozen=True)
class Seq2SeqConfig(TransformerConfig):
    """An encoder-decoder's shape: `TransformerConfig` (num_layers = encoder layers) plus

    Attributes:
      family: "bart" or "t5" (see the module docstring for what it fixes).
      num_decoder_layers: decoder depth (None: same as the encoder).
      gated_feed_forward: T5 v1.1's gated feed-forward (with activation "gelu_tanh").
      tie_word_embeddings: the output projection is the word embedding matrix (BART, T5
        v1.0); False gives a separate `lm_head` (T5 v1.1).
      scale_decoder_outputs: T5 scales the decoder's output by hidden_size^-0.5 before the
        output projection (v1.0, tied; v1.1 checkpoints do not).
    """

    family: str = "bart"
    num_decoder_layers: int | None = None
    gated_feed_forward: bool = False
    tie_word_embeddings: bool = True
    scale_decoder_outputs: bool = True

    def __post_init__(self):
        super().__post_init__()
        if self.family not in FAMILIES:
            raise ValueError(f"family must be one of {FAMILIES}, got {self.family!r}")
        if self.family == "t5" and not self.relative_attention_buckets:
            raise ValueError("T5 needs relative_attention_buckets > 0 (32 in the paper)")
        if self.family == "bart" and not self.tie_word_embeddings:
            raise ValueError("BART ties its output projection to the word embeddings")
        if self.num_decoder_layers is not None and self.num_decoder_layers < 1:
            raise ValueError(f"num_decoder_layers must be >= 1, got {self.num_decoder_layers}")

    @property
    def decoder_layers(self) -> int:
        return self.num_layers if self.num_decoder_layers is None else self.num_decoder_layers


@struct.dataclass
class DecoderCache:
    """What incremental decoding keeps per decoder layer: its self-attention cache and its
    cross-attention's projected encoder states."""

    self_attention: list[KVCache]
    cross_attention: list[KVCache]


class Seq2SeqLayer(nnx.Module):
    """Self-attention, cross-attention (decoder only) and feed-forward sublayers, each with a
    residual; post-LN for BART, pre-LN for T5."""

    def __init__(self, cfg: Seq2SeqConfig, *, decoder: bool, rngs: nnx.Rngs):
        t5 = cfg.family == "t5"
        norm = (lambda: rms_norm(cfg, rngs)) if t5 else (lambda: layer_norm(cfg, rngs))
        attention = lambda: MultiHeadAttention(
            cfg, use_bias=not t5, scale=1.0 if t5 else None, rngs=rngs
        )
        self.pre_norm = t5
        self.self_attention, self.self_norm = attention(), norm()
        self.cross_attention = attention() if decoder else None
        self.cross_norm = norm() if decoder else None
        if cfg.gated_feed_forward:
            self.feed_forward = GatedFeedForward(cfg, rngs=rngs)
        else:
            self.feed_forward = FeedForward(cfg, use_bias=not t5, rngs=rngs)
        self.feed_forward_norm = norm()
        self.dropout = nnx.Dropout(cfg.dropout_rate)

    def _residual(self, x, norm, sublayer, deterministic, rngs):
        drop = lambda y: self.dropout(y, deterministic=deterministic, rngs=rngs)
        if self.pre_norm:
            return x + drop(sublayer(norm(x)))
        return norm(x + drop(sublayer(x)))

    def __call__(
        self,
        x,
        mask,
        bias=None,
        context=None,
        cross_mask=None,
        *,
        deterministic: bool,
        rngs: nnx.Rngs | None,
    ) -> jnp.ndarray:
        x = self._residual(
            x, self.self_norm, lambda y: self.self_attention(y, mask, bias), deterministic, rngs
        )
        if self.cross_attention is not None:
            x = self._residual(
                x,
                self.cross_norm,
                lambda y: self.cross_attention(y, cross_mask, context=context),
                deterministic,
                rngs,
            )
        x = self._residual(x, self.feed_forward_norm, self.feed_forward, deterministic, rngs)
        return constrain(x, HIDDEN_AXES)

    def extend(
        self, x, cache: KVCache, index, mask, bias, cross: KVCache, cross_mask
    ) -> tuple[jnp.ndarray, KVCache]:
        """Incremental decoding (no dropout): new decoder rows x at self-attention cache slots
        [index, index + n), cross-attending to the projected encoder states `cross`. x may hold
        a multiple of the encoder's rows (beam search: each example's beams, consecutive): an
        example's rows are then the queries of its one encoder row (`cross_mask` queries
        [encoder rows, beams * n]), so the encoder's keys are never repeated per beam."""
        written = []

        def self_attention(y):
            out, updated = self.self_attention.extend(y, cache, index, mask, bias)
            written.append(updated)
            return out

        def cross_attention(y):
            grouped = y.reshape(cross.key.shape[0], -1, y.shape[-1])
            return self.cross_attention.attend(grouped, cross, cross_mask).reshape(y.shape)

        x = self._residual(x, self.self_norm, self_attention, True, None)
        x = self._residual(x, self.cross_norm, cross_attention, True, None)
        return self._residual(x, self.feed_forward_norm, self.feed_forward, True, None), written[0]


class EncoderDecoder(nnx.Module):
    """BART / T5 / MASS: shared token embeddings, encoder, decoder and the tied LM head.

    `model(...)` returns fp32 decoder logits [batch, L_dec, vocab] from the encoder and decoder
    arrays and masks (the fields of a `Seq2SeqBatch`); `encode` and `decode` expose the halves
    (for generation and scoring), `decoder_states` the decoder's last hidden states.
    `lm_head=False` leaves out BART's `final_logits_bias`: the fine-tuning models read
    hidden states only (Hugging Face's `BartModel`).
    """

    def __init__(self, cfg: Seq2SeqConfig, *, lm_head: bool = True, rngs: nnx.Rngs):
        self.cfg = cfg
        self.word = embed(cfg, cfg.vocab_size, ("vocab", "embed"), rngs)
        t5 = cfg.family == "t5"
        if t5:
            relative = lambda bidirectional: RelativePositionBias(
                cfg,
                num_buckets=cfg.relative_attention_buckets,
                max_distance=cfg.relative_attention_max_distance,
                bidirectional=bidirectional,
                rngs=rngs,
            )
            self.encoder_relative_bias = relative(True)
            self.decoder_relative_bias = relative(False)
            self.encoder_final_norm = rms_norm(cfg, rngs)
            self.decoder_final_norm = rms_norm(cfg, rngs)
            if not cfg.tie_word_embeddings:
                self.lm_head = dense(
                    cfg, cfg.hidden_size, cfg.vocab_size, ("embed", "vocab"), rngs, use_bias=False
                )
        else:
            rows = cfg.max_position + BART_POSITION_OFFSET
            self.encoder_positions = embed(cfg, rows, (None, "embed"), rngs)
            self.decoder_positions = embed(cfg, rows, (None, "embed"), rngs)
            self.encoder_embedding_norm = layer_norm(cfg, rngs)
            self.decoder_embedding_norm = layer_norm(cfg, rngs)
            if lm_head:
                zeros = jnp.zeros((cfg.vocab_size,), jnp.float32)
                self.bias = nnx.Param(zeros, logical_axes=("vocab",))
        self.encoder_layers = nnx.List(
            [Seq2SeqLayer(cfg, decoder=False, rngs=rngs) for _ in range(cfg.num_layers)]
        )
        self.decoder_layers = nnx.List(
            [Seq2SeqLayer(cfg, decoder=True, rngs=rngs) for _ in range(cfg.decoder_layers)]
        )
        self.dropout = nnx.Dropout(cfg.dropout_rate)
        if t5:
            _t5_initialisation(self, rngs)

    def _embed(self, ids, positions, side: str, deterministic, rngs) -> jnp.ndarray:
        x = freeze_padding_row(self.word(ids), ids, self.cfg.pad_token_id)
        if self.cfg.family == "bart":
            table = getattr(self, f"{side}_positions")
            norm = getattr(self, f"{side}_embedding_norm")
            x = norm(x + table(positions + BART_POSITION_OFFSET))
        return self.dropout(x, deterministic=deterministic, rngs=rngs)

    def encode(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """Encoder states [batch, L_enc, hidden] (bidirectional `attention`)."""
        x = self._embed(input_ids, positions, "encoder", deterministic, rngs)
        bias = None
        if self.cfg.family == "t5":
            bias = self.encoder_relative_bias(positions, positions)
        run = layer_runner(
            self.cfg,
            lambda layer, x, mask, bias, rngs: layer(
                x, mask, bias, deterministic=deterministic, rngs=rngs
            ),
        )
        for layer in self.encoder_layers:
            x = run(layer, x, attention, bias, rngs)
        if self.cfg.family == "t5":
            x = self.dropout(self.encoder_final_norm(x), deterministic=deterministic, rngs=rngs)
        return x

    def decode(
        self,
        decoder_inputs: jnp.ndarray,
        decoder_positions: jnp.ndarray,
        decoder_attention: AttentionMask,
        encoded: jnp.ndarray,
        cross_attention: AttentionMask,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """fp32 logits [batch, L_dec, vocab] given the encoder states; `decoder_attention` is
        causal per example, `cross_attention` its queries against the encoder keys."""
        x = self.decoder_states(
            decoder_inputs,
            decoder_positions,
            decoder_attention,
            encoded,
            cross_attention,
            deterministic=deterministic,
            rngs=rngs,
        )
        return self.output_logits(x)

    def output_logits(self, x: jnp.ndarray) -> jnp.ndarray:
        """fp32 vocabulary logits of decoder states x [..., hidden]."""
        if self.cfg.family == "t5":
            if self.cfg.scale_decoder_outputs:
                x = x * self.cfg.hidden_size**-0.5
            if not self.cfg.tie_word_embeddings:
                return self.lm_head(x).astype(jnp.float32)
            return vocabulary_logits(x, self.word)
        return vocabulary_logits(x, self.word, self.bias[...])

    def start_decoding(self, encoded: jnp.ndarray, slots: int) -> DecoderCache:
        """An empty self-attention cache of `slots` keys per decoder layer, and each layer's
        cross-attention keys and values of the encoder states [batch, L_enc, hidden], projected
        once for the whole generation."""
        layers = self.decoder_layers
        return DecoderCache(
            self_attention=empty_caches(self.cfg, len(layers), encoded.shape[0], slots),
            cross_attention=[layer.cross_attention.project_kv(encoded) for layer in layers],
        )

    def extend(
        self,
        decoder_inputs: jnp.ndarray,
        decoder_positions: jnp.ndarray,
        cache: DecoderCache,
        index,
        mask: AttentionMask,
        kv_positions: jnp.ndarray,
        cross_mask: AttentionMask,
    ) -> tuple[jnp.ndarray, DecoderCache]:
        """Incremental decoding: fp32 logits [batch, n, vocab] of new decoder tokens at cache
        slots [index, index + n), which see the slots `mask` allows (`kv_positions`: the slots'
        position ids, for T5's relative bias) and the encoder keys `cross_mask` allows."""
        x = self._embed(decoder_inputs, decoder_positions, "decoder", True, None)
        bias = None
        if self.cfg.family == "t5":
            bias = self.decoder_relative_bias(decoder_positions, kv_positions)
        updated = []
        for layer, own, cross in zip(
            self.decoder_layers, cache.self_attention, cache.cross_attention, strict=True
        ):
            x, own = layer.extend(x, own, index, mask, bias, cross, cross_mask)
            updated.append(own)
        if self.cfg.family == "t5":
            x = self.decoder_final_norm(x)
        return self.output_logits(x), cache.replace(self_attention=updated)

    def decoder_states(
        self,
        decoder_inputs: jnp.ndarray,
        decoder_positions: jnp.ndarray,
        decoder_attention: AttentionMask,
        encoded: jnp.ndarray,
        cross_attention: AttentionMask,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """The decoder's last hidden states [batch, L_dec, hidden] (T5: after its final norm
        and dropout), before the output projection."""
        positions = decoder_positions
        x = self._embed(decoder_inputs, positions, "decoder", deterministic, rngs)
        bias = None
        if self.cfg.family == "t5":
            bias = self.decoder_relative_bias(positions, positions)
        run = layer_runner(
            self.cfg,
            lambda layer, x, mask, bias, encoded, cross, rngs: layer(
                x, mask, bias, encoded, cross, deterministic=deterministic, rngs=rngs
            ),
        )
        for layer in self.decoder_layers:
            x = run(layer, x, decoder_attention, bias, encoded, cross_attention, rngs)
        if self.cfg.family == "t5":
            x = self.dropout(self.decoder_final_norm(x), deterministic=deterministic, rngs=rngs)
        return x

    def reconstruction_states(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        decoder_start_id: int,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """Decoder states [batch, L, hidden] for rows fed to both halves, the decoder's copy
        shifted right behind `decoder_start_id` (Hugging Face's `shift_tokens_right`, as
        `BartModel` does without decoder ids): causal over the whole row, its positions
        0, 1, ... and its cross-attention on the encoder's real tokens (BART fine-tuning,
        Lewis et al. 2020 sec. 3)."""
        encoded = self.encode(
            input_ids, positions, attention, deterministic=deterministic, rngs=rngs
        )
        start = jnp.full_like(input_ids[..., :1], decoder_start_id)
        decoder_inputs = jnp.concatenate([start, input_ids[..., :-1]], axis=-1)
        everywhere = jnp.ones_like(input_ids)
        order = jnp.broadcast_to(jnp.arange(input_ids.shape[-1]), input_ids.shape)
        cross = AttentionMask(q_segment_ids=everywhere, kv_segment_ids=attention.kv_segment_ids)
        return self.decoder_states(
            decoder_inputs,
            order,
            AttentionMask.ordered(everywhere, order),
            encoded,
            cross,
            deterministic=deterministic,
            rngs=rngs,
        )

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        decoder_inputs: jnp.ndarray,
        decoder_positions: jnp.ndarray,
        decoder_attention: AttentionMask,
        cross_attention: AttentionMask,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """Teacher-forced fp32 decoder logits [batch, L_dec, vocab]."""
        encoded = self.encode(
            input_ids, positions, attention, deterministic=deterministic, rngs=rngs
        )
        return self.decode(
            decoder_inputs,
            decoder_positions,
            decoder_attention,
            encoded,
            cross_attention,
            deterministic=deterministic,
            rngs=rngs,
        )


def _t5_initialisation(model: nnx.Module, rngs: nnx.Rngs) -> None:
    """Mesh TensorFlow's initialisation, as T5 and Hugging Face's `T5PreTrainedModel` use it
    (factor 1): embeddings and an untied head N(0, 1); every kernel N(0, 1 / fan_in), the query
    kernels N(0, 1 / (fan_in * head_dim)) (T5's attention has no 1/sqrt(d) scale: it is folded
    in here); relative-position biases N(0, 1 / d_model). Truncated at two standard deviations,
    as every lm_jax initialiser."""
    cfg = model.cfg
    for path, param in nnx.iter_graph(model):
        if not isinstance(param, nnx.Param) or param[...].ndim != 2:
            continue
        names = [str(p) for p in path]
        shape = param[...].shape
        if names[-1] == "embedding" and "relative" in "/".join(names):
            std = cfg.hidden_size**-0.5
        elif names[-1] == "embedding" or names[0] == "lm_head":
            std = 1.0
        else:
            std = shape[0] ** -0.5 * (cfg.head_dim**-0.5 if "query" in names else 1.0)
        init = nnx.initializers.truncated_normal(stddev=std)
        param[...] = init(rngs.params(), shape, param[...].dtype)


class _BartFineTuning(nnx.Module):
    """What BART's fine-tuning models share: the encoder-decoder without its LM bias, read
    through `reconstruction_states` with the decoder starting behind `decoder_start_id`."""

    def __init__(self, cfg: Seq2SeqConfig, decoder_start_id: int, *, rngs: nnx.Rngs):
        self.encoder = EncoderDecoder(cfg, lm_head=False, rngs=rngs)
        self.decoder_start_id = decoder_start_id

    def states(self, input_ids, positions, attention, deterministic, rngs) -> jnp.ndarray:
        return self.encoder.reconstruction_states(
            input_ids,
            positions,
            attention,
            self.decoder_start_id,
            deterministic=deterministic,
            rngs=rngs,
        )


class BartForSequenceClassification(_BartFineTuning):
    """BART classification (Lewis et al. 2020, sec. 3.1) as Hugging Face's
    `BartForSequenceClassification`: the row `<s> A </s></s> B </s>` into the encoder and,
    shifted right, the decoder; the decoder's final state at the last </s> through dropout,
    dense + tanh, dropout and a linear classifier (`BartClassificationHead`); regression with
    `num_labels=1`."""

    def __init__(
        self, cfg: Seq2SeqConfig, num_labels: int, decoder_start_id: int, *, rngs: nnx.Rngs
    ):
        super().__init__(cfg, decoder_start_id, rngs=rngs)
        self.head = FirstTokenClassificationHead(cfg, num_labels, "tanh", rngs=rngs)

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> jnp.ndarray:
        """fp32 logits [batch, num_labels] (`token_type_ids` unused: BART has none)."""
        states = self.states(input_ids, positions, attention, deterministic, rngs)
        last = last_real_token(states, attention)  # the row's final </s>
        return self.head(last[..., None, :], deterministic=deterministic, rngs=rngs)


class BartForQuestionAnswering(_BartFineTuning):
    """BART extractive QA as Hugging Face's `BartForQuestionAnswering`: start / end logits from
    one linear layer on the decoder's states of `<s> question </s></s> context </s>` (fed to
    both halves, as for classification); no answer is the span at <s>."""

    def __init__(self, cfg: Seq2SeqConfig, decoder_start_id: int, *, rngs: nnx.Rngs):
        super().__init__(cfg, decoder_start_id, rngs=rngs)
        self.head = QuestionAnsweringHead(cfg, rngs=rngs)

    def __call__(
        self,
        input_ids: jnp.ndarray,
        positions: jnp.ndarray,
        attention: AttentionMask,
        token_type_ids: jnp.ndarray | None = None,
        *,
        deterministic: bool = True,
        rngs: nnx.Rngs | None = None,
    ) -> tuple[jnp.ndarray, jnp.ndarray]:
        """fp32 (start logits, end logits), each [batch, L]."""
        return self.head(self.states(input_ids, positions, attention, deterministic, rngs))
