"""The two kinds of model text-to-text fine-tuning trains, behind one interface (rows, model,
loss, generation, label likelihoods, export):

- `EncoderDecoderArchitecture`: T5, BART, MASS (Raffel et al. 2020; Lewis et al. 2020; Song
  et al. 2019). The source `[<s>] source </s>` goes into the encoder, the target behind the
  decoder's start token (T5: pad, BART: </s>); teacher-forced cross-entropy.
- `SharedEncoderArchitecture`: one Transformer with its LM head, made a generator by its
  attention mask: causal LM, prefix LM (Raffel et al. 2020, sec. 3.2.1) or UniLM's seq2seq
  mask (Dong et al. 2019, sec. 3.2). One row holds the prompt `[CLS] source [SEP]` and the
  target `answer [SEP]`; the prompt sees itself (prefix, unilm) or its past (causal), each
  target token its past. Causal and prefix LM learn the next token. UniLM is fine-tuned as it
  is pretrained: a share of the target (`target_mask_prob`, 0.7 in the paper) is masked
  80/10/10, the [SEP] that ends it included, and recovered; it generates by cloze.

Rows hold `input_ids` / `segment_ids` for the source (right-padded for the encoder-decoder;
left-padded for the shared encoder, so that every row's answer starts in the same slot) and
the target's ids ending in end-of-sequence, right-padded."""

from __future__ import annotations

import abc
import dataclasses
import logging
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from lm_jax.attention import AttentionMask
from lm_jax.data.tokenizer import Tokenizer
from lm_jax.errors import ConfigError
from lm_jax.finetune.export import export_model
from lm_jax.generation import GenerationConfig
from lm_jax.generation.generate import decode
from lm_jax.layout import positions_from_segments
from lm_jax.models.config import TransformerConfig
from lm_jax.models.encoder import EncoderForMaskedLM
from lm_jax.models.seq2seq import EncoderDecoder, Seq2SeqConfig
from lm_jax.objectives.masking import corrupt, select_positions, sparse_layout
from lm_jax.train.losses import weighted_cross_entropy

log = logging.getLogger(__name__)
SEQ2SEQ_EXPORTS = {"t5": "T5ForConditionalGeneration", "bart": "BartForConditionalGeneration"}
T5_SCRATCH = dict(  # T5 v1.0's choices for a model trained from scratch (Raffel et al. 2020)
    family="t5", relative_attention_buckets=32, activation="relu", layer_norm_eps=1e-6
)
MASKED_LM_EXPORTS = {"bert": "BertForMaskedLM", "roberta": "RobertaForMaskedLM"}
UNILM_CORRUPTION = dict(mask_prob=0.8, random_prob=0.1)  # the authors' Preprocess4Seq2seq


class TextToText(nnx.Module):
    """A generating model under `encoder`, where every fine-tuning model keeps its pretrained
    part (`run.build_model` loads the weights there): an `EncoderDecoder` or an
    `EncoderForMaskedLM`."""

    def __init__(self, model: nnx.Module):
        self.encoder = model


class Architecture(abc.ABC):
    """How a text-to-text model reads its rows, learns, generates and exports."""

    def __init__(self, tokenizer: Tokenizer, source_length: int, generation: GenerationConfig):
        self.tokenizer, self.vocab = tokenizer, tokenizer.vocab
        self.source_length, self.generation = source_length, generation
        self.target_length = generation.max_new_tokens

    @abc.abstractmethod
    def rows(self, sources: list[list[int]], targets: np.ndarray) -> tuple[dict, int]:
        """(arrays of the encoded rows, how many sources were truncated) from the sources'
        token ids and the targets [n, target_length] (their ids, end-of-sequence, padding)."""

    @abc.abstractmethod
    def model(self, cfg: TransformerConfig, rngs: nnx.Rngs) -> TextToText:
        """The model, new (its weights are loaded afterwards when pretrained)."""

    def prepare(self, key: jax.Array, rows: dict) -> dict:
        """The step's rows (traced in the jitted step: UniLM masks its targets here)."""
        return rows

    @abc.abstractmethod
    def sums(self, model, rows, key, deterministic, rngs) -> dict:
        """The target tokens' cross-entropy sums (`weighted_cross_entropy`)."""

    @abc.abstractmethod
    def generate(self, model: TextToText, rows: dict) -> jax.Array:
        """The generated tokens [rows, target_length], padded after each end-of-sequence."""

    @abc.abstractmethod
    def token_log_likelihoods(self, model: TextToText, rows: dict, target: jax.Array):
        """log p of each token of `target` [target_length] after each row's source
        [rows, target_length] (0 on padding): rank classification's scores."""

    @abc.abstractmethod
    def export(self, model: TextToText, folder: Path, fields: dict) -> Path | None:
        """The model as a Hugging Face folder that generates (None where none can)."""


class EncoderDecoderArchitecture(Architecture):
    """T5, BART and MASS: the source into the encoder, the target behind `start_id`."""

    def __init__(self, tokenizer, source_length, generation, family: str):
        super().__init__(tokenizer, source_length, generation)
        self.family, self.start_id = family, generation.decoder_start_id

    def rows(self, sources, targets):
        vocab, n = self.vocab, len(sources)
        ids = np.full((n, self.source_length), vocab.pad_id, np.int32)
        specials = [vocab.bos_id] if self.family == "bart" else []
        truncated = 0
        for i, source in enumerate(sources):
            body = list(source[: self.source_length - len(specials) - 1])
            truncated += len(body) < len(source)
            row = [*specials, *body, vocab.eos_id]
            ids[i, : len(row)] = row
        start = np.full((n, 1), self.start_id, np.int32)
        arrays = dict(
            input_ids=ids,
            segment_ids=(ids != vocab.pad_id).astype(np.int32),
            decoder_inputs=np.concatenate([start, targets[:, :-1]], axis=1),
            decoder_targets=targets,
            decoder_weights=(targets != vocab.pad_id).astype(np.float32),
        )
        return arrays, truncated

    def model(self, cfg, rngs):
        if not isinstance(cfg, Seq2SeqConfig):  # from scratch: a T5 of config.model's shape
            fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(TransformerConfig)}
            cfg = Seq2SeqConfig(**{**fields, **T5_SCRATCH, "type_vocab_size": 0})
        return TextToText(EncoderDecoder(cfg, rngs=rngs))

    def sums(self, model, rows, key, deterministic, rngs):
        decoder_inputs = rows["decoder_inputs"]
        logits = model.encoder(
            *_encoder_inputs(rows),
            decoder_inputs,
            *_decoder_inputs(decoder_inputs, rows["segment_ids"]),
            deterministic=deterministic,
            rngs=rngs,
        )
        weights = rows["decoder_weights"] * rows["weights"][:, None]
        return weighted_cross_entropy(logits, rows["decoder_targets"], weights)

    def generate(self, model, rows):
        ids, segments = rows["input_ids"], rows["segment_ids"]
        sequences, _ = decode(model.encoder, ids, segments, self.generation, jax.random.key(0))
        return sequences[:, 1:]

    def token_log_likelihoods(self, model, rows, target):
        seq2seq: EncoderDecoder = model.encoder
        ids, positions, attention = _encoder_inputs(rows)
        target = jnp.broadcast_to(target, (ids.shape[0], target.shape[-1]))
        inputs = jnp.concatenate([jnp.full_like(target[:, :1], self.start_id), target[:, :-1]], 1)
        encoded = seq2seq.encode(ids, positions, attention)
        positions_d, mask, cross = _decoder_inputs(inputs, rows["segment_ids"])
        logits = seq2seq.decode(inputs, positions_d, mask, encoded, cross)
        return _log_likelihoods(logits, target, self.vocab.pad_id)

    def export(self, model, folder, fields):
        fields = {**fields, "decoder_start_token_id": self.start_id}
        architecture = SEQ2SEQ_EXPORTS[self.family]
        return export_model(model.encoder, folder, architecture, fields, self.tokenizer)


class SharedEncoderArchitecture(Architecture):
    """An `EncoderForMaskedLM` generating under `mask` ("causal", "prefix", "unilm")."""

    def __init__(
        self, tokenizer, source_length, generation, mask: str, target_mask_prob: float, family: str
    ):
        super().__init__(tokenizer, source_length, generation)
        self.mask, self.target_mask_prob, self.family = mask, target_mask_prob, family

    def rows(self, sources, targets):
        vocab, n, width = self.vocab, len(sources), self.source_length
        ids = np.full((n, width), vocab.pad_id, np.int32)
        segments = np.zeros((n, width), np.int32)
        truncated = 0
        for i, source in enumerate(sources):
            body = list(source[: width - 2])
            truncated += len(body) < len(source)
            ids[i, width - len(body) - 2 :] = [vocab.cls_id, *body, vocab.sep_id]
            segments[i, width - len(body) - 2 :] = 1
        return dict(input_ids=ids, segment_ids=segments, target_ids=targets), truncated

    def model(self, cfg, rngs):
        if isinstance(cfg, Seq2SeqConfig):
            raise ConfigError("config.text_to_text.mask is for encoders; this model has a decoder")
        room = cfg.max_position - cfg.position_offset
        if self.source_length + self.target_length > room:
            raise ConfigError(
                f"config.data.max_seq_length + config.text_to_text.max_target_length = "
                f"{self.source_length + self.target_length} exceeds the model's {room} positions "
                "(the prompt and the answer share one row)"
            )
        return TextToText(EncoderForMaskedLM(cfg, rngs=rngs))

    def prepare(self, key, rows):
        """UniLM: each row's masked targets (`_mask_target`); the others train as they are."""
        if self.mask != "unilm":
            return rows
        keys = jax.random.split(key, rows["target_ids"].shape[0])
        corrupted, slots, targets, weights = jax.vmap(self._mask_target)(keys, rows["target_ids"])
        masked = dict(slots=slots, slot_targets=targets, slot_weights=weights)
        return {**rows, "corrupted_targets": corrupted, **masked}

    def _mask_target(self, key, target):
        """(the corrupted target, the masked slots, their tokens, their weights) of one row
        (the sparse layout, sorted, `max_target_length` slots): as UniLM's
        `Preprocess4Seq2seq`, max(1, round(target_mask_prob x the answer's length)) of its
        tokens and end-of-sequence, chosen uniformly, then 80/10/10."""
        k_select, k_corrupt = jax.random.split(key)
        real = target != self.vocab.pad_id
        count = jnp.maximum(1, jnp.round((real.sum() - 1) * self.target_mask_prob))
        chosen = select_positions(k_select, real, count.astype(jnp.int32), self.target_length)
        slots, targets, weights = sparse_layout(
            chosen, target, self.target_length, self.vocab.pad_id
        )
        corrupted = corrupt(k_corrupt, target, slots, weights, self.vocab, **UNILM_CORRUPTION)
        return corrupted, slots, targets, weights

    def sums(self, model, rows, key, deterministic, rngs):
        target, run = rows["target_ids"], dict(deterministic=deterministic, rngs=rngs)
        if self.mask == "unilm":
            logits = self._logits(model, rows, rows["corrupted_targets"], rows["slots"], **run)
            targets, weights = rows["slot_targets"], rows["slot_weights"]
        else:
            logits = self._next_token_logits(model, rows, target, **run)
            targets, weights = target, (target != self.vocab.pad_id).astype(jnp.float32)
        return weighted_cross_entropy(logits, targets, weights * rows["weights"][:, None])

    def _next_token_logits(self, model, rows, target, **run) -> jax.Array:
        """Logits [rows, T, vocab] of each target token from the tokens before it: the last
        prompt token predicts the first."""
        inputs = target[:, :-1]
        slots = jnp.broadcast_to(jnp.arange(target.shape[1]) - 1, target.shape)
        return self._logits(model, rows, inputs, slots, **run)

    def _logits(self, model, rows, answer, slots, deterministic=True, rngs=None) -> jax.Array:
        """The LM head's logits at `slots` [rows, k] of the answer's part (-1: the prompt's
        last token) of the row `prompt answer`, under this architecture's mask."""
        prompt, prompt_segments = rows["input_ids"], rows["segment_ids"]
        width = prompt.shape[1]
        ids = jnp.concatenate([prompt, answer], axis=1)
        answer_real = (answer != self.vocab.pad_id).astype(jnp.int32)
        segments = jnp.concatenate([prompt_segments, answer_real], axis=1)
        positions = positions_from_segments(segments)
        ranks, types = positions, jnp.zeros_like(ids)
        if self.mask != "causal":  # the prompt sees all of itself; types prompt 0, answer 1
            ranks = jnp.maximum(positions, prompt_segments.sum(-1, keepdims=True) - 1)
            types = jnp.concatenate([jnp.zeros_like(prompt), answer_real], axis=1)
        return model.encoder(
            ids,
            positions,
            AttentionMask.ordered(segments, ranks),
            types,
            width + slots,
            deterministic=deterministic,
            rngs=rngs,
        )

    def generate(self, model, rows):
        ids, segments = rows["input_ids"], rows["segment_ids"]
        sequences, _ = decode(
            model.encoder, ids, segments, self.generation, jax.random.key(0), self.mask
        )
        return sequences[:, ids.shape[1] :]

    def token_log_likelihoods(self, model, rows, target):
        rows_n, length = rows["input_ids"].shape[0], target.shape[-1]
        target = jnp.broadcast_to(target, (rows_n, length))
        if self.mask != "unilm":
            logits = self._next_token_logits(model, rows, target)
            return _log_likelihoods(logits, target, self.vocab.pad_id)
        columns = []  # cloze: token j read from a [MASK] in its place, one pass per token
        pad = self.vocab.pad_id
        for j in range(length):
            masked = target.at[:, j].set(jnp.where(target[:, j] == pad, pad, self.vocab.mask_id))
            logits = self._logits(model, rows, masked, jnp.full((rows_n, 1), j))
            columns.append(_log_likelihoods(logits, target[:, j : j + 1], pad))
        return jnp.concatenate(columns, axis=1)

    def export(self, model, folder, fields):
        """A BERT: causal as `BertLMHeadModel` (`is_decoder`), which transformers generates
        from; prefix and UniLM as `BertForMaskedLM` (transformers has neither mask). A
        RoBERTa as `RobertaForMaskedLM`."""
        if self.family == "bert" and self.mask == "causal":
            fields = {**fields, "is_decoder": True, "bos_token_id": self.vocab.cls_id}
            architecture = "BertLMHeadModel"
        else:
            log.info("exported as a masked LM: transformers has no %s mask", self.mask)
            architecture = MASKED_LM_EXPORTS.get(self.family)
        return export_model(model.encoder, folder, architecture, fields, self.tokenizer)


def _log_likelihoods(logits: jax.Array, target: jax.Array, pad_id: int) -> jax.Array:
    log_p = jax.nn.log_softmax(logits, axis=-1)
    token = jnp.take_along_axis(log_p, target[..., None], axis=-1)[..., 0]
    return jnp.where(target != pad_id, token, 0.0)


def _encoder_inputs(rows: dict) -> tuple:
    segments = rows["segment_ids"]
    positions = positions_from_segments(segments)
    return rows["input_ids"], positions, AttentionMask.bidirectional(segments)


def _decoder_inputs(decoder_inputs: jax.Array, encoder_segments: jax.Array) -> tuple:
    """(positions, causal mask, cross mask) of decoder rows fed from their start token."""
    order = jnp.broadcast_to(jnp.arange(decoder_inputs.shape[-1]), decoder_inputs.shape)
    ones = jnp.ones_like(decoder_inputs)
    cross = AttentionMask(q_segment_ids=ones, kv_segment_ids=encoder_segments)
    return order, AttentionMask.ordered(ones, order), cross
