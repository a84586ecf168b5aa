"""Weights in and out of Hugging Face checkpoints, without downloads.

`load_hf_checkpoint(folder)` builds our model from a local Hugging Face folder (`config.json` and
`model.safetensors`, or `pytorch_model.bin` when torch is installed), so a TPU VM user can start
from released weights; `from_hf_state_dict` does the same from an in-memory state dict, and
`to_hf_state_dict` exports ours back under Hugging Face's names. `ARCHITECTURES` lists what
converts, by Hugging Face class name.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np
from flax import nnx

from lm_jax.errors import CheckpointError
from lm_jax.models.config import TransformerConfig
from lm_jax.models.electra import ElectraDiscriminator
from lm_jax.models.encoder import (
    EncoderForMaskedLM,
    EncoderForPreTraining,
    EncoderForQuestionAnswering,
    EncoderForSequenceClassification,
)
from lm_jax.models.seq2seq import (
    BartForQuestionAnswering,
    BartForSequenceClassification,
    EncoderDecoder,
    Seq2SeqConfig,
)
from lm_jax.models.xlnet import (
    XLNet,
    XLNetForQuestionAnswering,
    XLNetForSequenceClassification,
)

# (our flat path, Hugging Face name, layout): layout True transposes (torch Linear weights are
# [out, in]), a tuple is the Hugging Face shape to reshape to (XLNet's [1, 1, d] mask_emb).
NameMap = list[tuple[str, str, bool | tuple[int, ...]]]

_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}
# model_type: (encoder prefix, position offset)
_ENCODERS = {
    "bert": ("bert", 0),
    "roberta": ("roberta", 2),
    "electra": ("electra", 0),
    "mpnet": ("mpnet", 2),
}


def config_from_hf(hf: Mapping) -> TransformerConfig:
    """Our `TransformerConfig` from a Hugging Face config dict (BERT, RoBERTa, ELECTRA, MPNet,
    XLNet, BART, T5). Only T5 may have an untied output head (v1.1, Flan-T5, mT5)."""
    kind = hf.get("model_type")
    if kind != "t5":
        _require_tied(hf)
    if kind in _OTHER_CONFIGS:
        return _OTHER_CONFIGS[kind](hf)
    if kind not in _ENCODERS:
        raise CheckpointError(
            f"unsupported model_type {kind!r}; supported: {sorted([*_ENCODERS, *_OTHER_CONFIGS])}"
        )
    embedding_size = hf.get("embedding_size")
    return TransformerConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position=hf["max_position_embeddings"],
        position_offset=_ENCODERS[kind][1],
        type_vocab_size=0 if kind == "mpnet" else hf.get("type_vocab_size", 2),
        embedding_size=None if embedding_size == hf["hidden_size"] else embedding_size,
        relative_attention_buckets=hf.get("relative_attention_num_buckets", 32)
        if kind == "mpnet"
        else 0,
        dropout_rate=hf.get("hidden_dropout_prob", 0.1),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        initializer_range=hf.get("initializer_range", 0.02),
        activation=_activation(hf.get("hidden_act", "gelu")),
        pad_token_id=hf.get("pad_token_id"),
    )


def _activation(name: str) -> str:
    if name not in _ACTIVATIONS:
        raise CheckpointError(f"unsupported activation {name!r}; supported: {sorted(_ACTIVATIONS)}")
    return _ACTIVATIONS[name]


def _xlnet_config(hf: Mapping) -> TransformerConfig:
    unsupported = {
        "attn_type": (hf.get("attn_type", "bi"), "bi"),
        "bi_data": (hf.get("bi_data", False), False),
        "untie_r": (hf.get("untie_r", True), True),
    }
    for field, (value, supported) in unsupported.items():
        if value != supported:
            raise CheckpointError(f"XLNet with {field}={value!r} is not supported ({supported!r})")
    if (hf.get("clamp_len") or -1) > 0:
        raise CheckpointError(f"XLNet with clamp_len={hf['clamp_len']} is not supported (-1)")
    return TransformerConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["d_model"],
        num_layers=hf["n_layer"],
        num_heads=hf["n_head"],
        intermediate_size=hf["d_inner"],
        type_vocab_size=2,
        dropout_rate=hf.get("dropout", 0.1),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        initializer_range=hf.get("initializer_range", 0.02),
        activation=_activation(hf.get("ff_activation", "gelu")),
        pad_token_id=hf.get("pad_token_id"),
    )


def _bart_config(hf: Mapping) -> Seq2SeqConfig:
    if hf.get("scale_embedding"):
        raise CheckpointError("BART with scale_embedding=True is not supported")
    if hf["encoder_attention_heads"] != hf["decoder_attention_heads"] or (
        hf["encoder_ffn_dim"] != hf["decoder_ffn_dim"]
    ):
        raise CheckpointError("BART with different encoder and decoder widths is not supported")
    return Seq2SeqConfig(
        family="bart",
        vocab_size=hf["vocab_size"],
        hidden_size=hf["d_model"],
        num_layers=hf["encoder_layers"],
        num_decoder_layers=hf["decoder_layers"],
        num_heads=hf["encoder_attention_heads"],
        intermediate_size=hf["encoder_ffn_dim"],
        max_position=hf["max_position_embeddings"],
        dropout_rate=hf.get("dropout", 0.1),
        layer_norm_eps=1e-5,
        initializer_range=hf.get("init_std", 0.02),
        activation=_activation(hf.get("activation_function", "gelu")),
        pad_token_id=hf.get("pad_token_id"),
    )


def _t5_config(hf: Mapping) -> Seq2SeqConfig:
    if hf["d_kv"] * hf["num_heads"] != hf["d_model"]:
        raise CheckpointError("T5 with d_kv * num_heads != d_model is not supported")
    projection = hf.get("feed_forward_proj", "relu")
    gated = projection.startswith("gated-")
    activation = projection.removeprefix("gated-")
    return Seq2SeqConfig(
        family="t5",
        vocab_size=hf["vocab_size"],
        hidden_size=hf["d_model"],
        num_layers=hf["num_layers"],
        num_decoder_layers=hf.get("num_decoder_layers") or hf["num_layers"],
        num_heads=hf["num_heads"],
        intermediate_size=hf["d_ff"],
        relative_attention_buckets=hf.get("relative_attention_num_buckets", 32),
        relative_attention_max_distance=hf.get("relative_attention_max_distance", 128),
        dropout_rate=hf.get("dropout_rate", 0.1),
        layer_norm_eps=hf.get("layer_norm_epsilon", 1e-6),
        activation="gelu_tanh" if gated and activation == "gelu" else _activation(activation),
        gated_feed_forward=gated,
        tie_word_embeddings=_tied(hf),
        # transformers 4 scales the decoder output by d_model^-0.5 when the head is tied;
        # transformers 5 records that choice as `scale_decoder_outputs`.
        scale_decoder_outputs=hf.get("scale_decoder_outputs", _tied(hf)),
    )


def _t5_head(state_dict: Mapping[str, np.ndarray], hf: Mapping) -> dict:
    """T5's head settings from the checkpoint itself, as transformers loads it: the output head
    is untied when config.json says so (T5 v1.1, Flan-T5, mT5 as saved by transformers 4) or
    when the file holds an `lm_head.weight` that differs from `shared.weight` (transformers 5
    writes tie_word_embeddings=true for those, and keeps the file's head)."""
    head, shared = state_dict.get("lm_head.weight"), state_dict.get("shared.weight")
    own_head = head is not None and shared is not None and not np.array_equal(head, shared)
    return {
        "tie_word_embeddings": _tied(hf) and not own_head,
        "scale_decoder_outputs": hf.get("scale_decoder_outputs", _tied(hf)),
    }


def _tied(hf: Mapping) -> bool:
    """Whether the checkpoint's output projection is its word embedding matrix (Hugging Face's
    `tie_word_embeddings`, default True)."""
    return hf.get("tie_word_embeddings", True) is not False


def _require_tied(hf: Mapping) -> None:
    """Families whose output projection is always the embedding here: refuse a checkpoint
    whose own untied head would otherwise be silently replaced by the embedding."""
    if not _tied(hf):
        raise CheckpointError(
            f"{hf.get('model_type')} with tie_word_embeddings=False (a separate output head) is "
            "not supported: lm_jax ties this family's output projection to the word embeddings"
        )


_OTHER_CONFIGS = {"xlnet": _xlnet_config, "bart": _bart_config, "t5": _t5_config}


def _linear(ours: str, hf: str) -> NameMap:
    return [(f"{ours}/kernel", f"{hf}.weight", True), (f"{ours}/bias", f"{hf}.bias", False)]


def _norm(ours: str, hf: str) -> NameMap:
    return [(f"{ours}/scale", f"{hf}.weight", False), (f"{ours}/bias", f"{hf}.bias", False)]


def _encoder_names(cfg: TransformerConfig, kind: str) -> NameMap:
    prefix = _ENCODERS[kind][0]
    emb = f"{prefix}.embeddings"
    pairs = [
        ("encoder/embeddings/word/embedding", f"{emb}.word_embeddings.weight", False),
        ("encoder/embeddings/position/embedding", f"{emb}.position_embeddings.weight", False),
        *_norm("encoder/embeddings/layer_norm", f"{emb}.LayerNorm"),
    ]
    if cfg.type_vocab_size:
        pairs.append(
            (
                "encoder/embeddings/token_type/embedding",
                f"{emb}.token_type_embeddings.weight",
                False,
            )
        )
    if cfg.embedding_width != cfg.hidden_size:
        pairs += _linear("encoder/embeddings_project", f"{prefix}.embeddings_project")
    if cfg.relative_attention_buckets:
        pairs.append(
            (
                "encoder/relative_bias/embedding/embedding",
                f"{prefix}.encoder.relative_attention_bias.weight",
                False,
            )
        )
    if kind == "mpnet":
        attention = {"query": "attn.q", "key": "attn.k", "value": "attn.v", "output": "attn.o"}
        attention_norm = "attention.LayerNorm"
    else:
        attention = {
            "query": "self.query",
            "key": "self.key",
            "value": "self.value",
            "output": "output.dense",
        }
        attention_norm = "attention.output.LayerNorm"
    for i in range(cfg.num_layers):
        ours, hf = f"encoder/layers/{i}", f"{prefix}.encoder.layer.{i}"
        for a, b in attention.items():
            pairs += _linear(f"{ours}/attention/{a}", f"{hf}.attention.{b}")
        pairs += _linear(f"{ours}/feed_forward/intermediate", f"{hf}.intermediate.dense")
        pairs += _linear(f"{ours}/feed_forward/output", f"{hf}.output.dense")
        pairs += _norm(f"{ours}/attention_norm", f"{hf}.{attention_norm}")
        pairs += _norm(f"{ours}/output_norm", f"{hf}.output.LayerNorm")
    return pairs


def _mlm_head(ours: str, dense: str, norm: str, bias: str) -> NameMap:
    return [
        *_linear(f"{ours}/transform", dense),
        *_norm(f"{ours}/layer_norm", norm),
        (f"{ours}/bias", bias, False),
    ]


def _xlnet_names(cfg: TransformerConfig, prefix: str = "") -> NameMap:
    """XLNetLMHeadModel's names; with `prefix` (our path to the XLNet, e.g. "encoder/"),
    those of its `transformer` alone (the fine-tuning models)."""
    pairs = [
        (f"{prefix}word/embedding", "transformer.word_embedding.weight", False),
        (f"{prefix}mask_emb", "transformer.mask_emb", (1, 1, cfg.hidden_size)),
    ]
    if not prefix:
        pairs.append(("bias", "lm_loss.bias", False))
    for i in range(cfg.num_layers):
        ours, hf = f"{prefix}layers/{i}", f"transformer.layer.{i}"
        for name in ("q", "k", "v", "o", "r", "r_w_bias", "r_r_bias", "r_s_bias", "seg_embed"):
            pairs.append((f"{ours}/rel_attn/{name}", f"{hf}.rel_attn.{name}", False))
        pairs += _norm(f"{ours}/rel_attn/layer_norm", f"{hf}.rel_attn.layer_norm")
        pairs += _linear(f"{ours}/ff/intermediate", f"{hf}.ff.layer_1")
        pairs += _linear(f"{ours}/ff/output", f"{hf}.ff.layer_2")
        pairs += _norm(f"{ours}/ff_norm", f"{hf}.ff.layer_norm")
    return pairs


def _attention(ours: str, hf: str, names: tuple[str, str, str, str], bias: bool) -> NameMap:
    pairs = []
    for a, b in zip(("query", "key", "value", "output"), names, strict=True):
        pairs += (
            _linear(f"{ours}/{a}", f"{hf}.{b}") if bias else _kernel(f"{ours}/{a}", f"{hf}.{b}")
        )
    return pairs


def _kernel(ours: str, hf: str) -> NameMap:
    return [(f"{ours}/kernel", f"{hf}.weight", True)]


def _bart_names(cfg: Seq2SeqConfig, prefix: str = "") -> NameMap:
    """BartForConditionalGeneration's names; with `prefix` (our path to the EncoderDecoder,
    e.g. "encoder/"), those of its `model` alone (the fine-tuning models)."""
    pairs = [(f"{prefix}word/embedding", "model.shared.weight", False)]
    if not prefix:
        pairs.append(("bias", "final_logits_bias", (1, cfg.vocab_size)))
    projections = ("q_proj", "k_proj", "v_proj", "out_proj")
    for side, layers in (("encoder", cfg.num_layers), ("decoder", cfg.decoder_layers)):
        hf_side, mine = f"model.{side}", f"{prefix}{side}"
        pairs.append((f"{mine}_positions/embedding", f"{hf_side}.embed_positions.weight", False))
        pairs += _norm(f"{mine}_embedding_norm", f"{hf_side}.layernorm_embedding")
        for i in range(layers):
            ours, hf = f"{mine}_layers/{i}", f"{hf_side}.layers.{i}"
            pairs += _attention(f"{ours}/self_attention", f"{hf}.self_attn", projections, True)
            pairs += _norm(f"{ours}/self_norm", f"{hf}.self_attn_layer_norm")
            if side == "decoder":
                pairs += _attention(
                    f"{ours}/cross_attention", f"{hf}.encoder_attn", projections, True
                )
                pairs += _norm(f"{ours}/cross_norm", f"{hf}.encoder_attn_layer_norm")
            pairs += _linear(f"{ours}/feed_forward/intermediate", f"{hf}.fc1")
            pairs += _linear(f"{ours}/feed_forward/output", f"{hf}.fc2")
            pairs += _norm(f"{ours}/feed_forward_norm", f"{hf}.final_layer_norm")
    return pairs


def _t5_names(cfg: Seq2SeqConfig) -> NameMap:
    pairs = [("word/embedding", "shared.weight", False)]
    scale = lambda ours, hf: [(f"{ours}/scale", f"{hf}.weight", False)]
    for side, layers in (("encoder", cfg.num_layers), ("decoder", cfg.decoder_layers)):
        bias = f"{side}.block.0.layer.0.SelfAttention.relative_attention_bias.weight"
        pairs.append((f"{side}_relative_bias/embedding/embedding", bias, False))
        pairs += scale(f"{side}_final_norm", f"{side}.final_layer_norm")
        for i in range(layers):
            ours, hf = f"{side}_layers/{i}", f"{side}.block.{i}.layer"
            pairs += _attention(
                f"{ours}/self_attention", f"{hf}.0.SelfAttention", ("q", "k", "v", "o"), False
            )
            pairs += scale(f"{ours}/self_norm", f"{hf}.0.layer_norm")
            ff = 1
            if side == "decoder":
                pairs += _attention(
                    f"{ours}/cross_attention",
                    f"{hf}.1.EncDecAttention",
                    ("q", "k", "v", "o"),
                    False,
                )
                pairs += scale(f"{ours}/cross_norm", f"{hf}.1.layer_norm")
                ff = 2
            dense = f"{hf}.{ff}.DenseReluDense"
            if cfg.gated_feed_forward:
                pairs += _kernel(f"{ours}/feed_forward/gate", f"{dense}.wi_0")
                pairs += _kernel(f"{ours}/feed_forward/intermediate", f"{dense}.wi_1")
            else:
                pairs += _kernel(f"{ours}/feed_forward/intermediate", f"{dense}.wi")
            pairs += _kernel(f"{ours}/feed_forward/output", f"{dense}.wo")
            pairs += scale(f"{ours}/feed_forward_norm", f"{hf}.{ff}.layer_norm")
    if not cfg.tie_word_embeddings:  # T5 v1.1 / Flan-T5 / mT5: the file's own output head
        pairs += _kernel("lm_head", "lm_head")
    return pairs


_BERT_MLM = _mlm_head(
    "mlm_head",
    "cls.predictions.transform.dense",
    "cls.predictions.transform.LayerNorm",
    "cls.predictions.bias",
)
_LM_HEAD = _mlm_head("mlm_head", "lm_head.dense", "lm_head.layer_norm", "lm_head.bias")
_BART_EMBEDDINGS = {  # BART's encoder and decoder read the shared embedding matrix
    "model.encoder.embed_tokens.weight": "model.shared.weight",
    "model.decoder.embed_tokens.weight": "model.shared.weight",
}


@dataclasses.dataclass(frozen=True)
class Architecture:
    """How one Hugging Face class maps onto ours.

    Attributes:
      model_type: the Hugging Face `model_type` it belongs to.
      build: our model from our config and the Hugging Face config dict.
      names: the name map of every parameter, from our config.
      tied: Hugging Face names written on export as copies of another Hugging Face name (tied
        decoders).
    """

    model_type: str
    build: Callable[[TransformerConfig, Mapping], nnx.Module]
    names: Callable[[TransformerConfig], NameMap]
    tied: Mapping[str, str] = dataclasses.field(default_factory=dict)


def _num_labels(hf: Mapping) -> int:
    return hf.get("num_labels") or len(hf.get("id2label") or {}) or 2


def _first_token_classifier(family: str) -> Architecture:
    """RoBERTa's / ELECTRA's `...ForSequenceClassification`: `classifier.dense` and
    `classifier.out_proj` on the first token (`FirstTokenClassificationHead`)."""
    return Architecture(
        family,
        lambda cfg, hf: EncoderForSequenceClassification(
            cfg, _num_labels(hf), family, rngs=nnx.Rngs(0)
        ),
        lambda cfg: [
            *_encoder_names(cfg, family),
            *_linear("head/dense", "classifier.dense"),
            *_linear("head/out_proj", "classifier.out_proj"),
        ],
    )


def _span_reader(family: str) -> Architecture:
    """`...ForQuestionAnswering`: start / end logits from `qa_outputs`."""
    return Architecture(
        family,
        lambda cfg, hf: EncoderForQuestionAnswering(cfg, rngs=nnx.Rngs(0)),
        lambda cfg: _encoder_names(cfg, family) + _linear("head/output", "qa_outputs"),
    )


ARCHITECTURES: dict[str, Architecture] = {
    "BertForMaskedLM": Architecture(
        "bert",
        lambda cfg, hf: EncoderForMaskedLM(cfg, rngs=nnx.Rngs(0)),
        lambda cfg: _encoder_names(cfg, "bert") + _BERT_MLM,
        {
            "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias",
        },
    ),
    "BertForPreTraining": Architecture(
        "bert",
        lambda cfg, hf: EncoderForPreTraining(cfg, rngs=nnx.Rngs(0)),
        lambda cfg: [
            *_encoder_names(cfg, "bert"),
            *_BERT_MLM,
            *_linear("sentence_head/pooler", "bert.pooler.dense"),
            *_linear("sentence_head/classifier", "cls.seq_relationship"),
        ],
        {
            "cls.predictions.decoder.weight": "bert.embeddings.word_embeddings.weight",
            "cls.predictions.decoder.bias": "cls.predictions.bias",
        },
    ),
    "BertForSequenceClassification": Architecture(
        "bert",
        lambda cfg, hf: EncoderForSequenceClassification(cfg, _num_labels(hf), rngs=nnx.Rngs(0)),
        lambda cfg: [
            *_encoder_names(cfg, "bert"),
            *_linear("head/pooler", "bert.pooler.dense"),
            *_linear("head/classifier", "classifier"),
        ],
    ),
    "BertForQuestionAnswering": Architecture(
        "bert",
        lambda cfg, hf: EncoderForQuestionAnswering(cfg, rngs=nnx.Rngs(0)),
        lambda cfg: _encoder_names(cfg, "bert") + _linear("head/output", "qa_outputs"),
    ),
    "RobertaForSequenceClassification": _first_token_classifier("roberta"),
    "ElectraForSequenceClassification": _first_token_classifier("electra"),
    "RobertaForQuestionAnswering": _span_reader("roberta"),
    "ElectraForQuestionAnswering": _span_reader("electra"),
    "RobertaForMaskedLM": Architecture(
        "roberta",
        lambda cfg, hf: EncoderForMaskedLM(cfg, rngs=nnx.Rngs(0)),
        lambda cfg: _encoder_names(cfg, "roberta") + _LM_HEAD,
        {
            "lm_head.decoder.weight": "roberta.embeddings.word_embeddings.weight",
            "lm_head.decoder.bias": "lm_head.bias",
        },
    ),
    "ElectraForMaskedLM": Architecture(
        "electra",
        lambda cfg, hf: EncoderForMaskedLM(cfg, head_activation="gelu", rngs=nnx.Rngs(0)),
        lambda cfg: (
            _encoder_names(cfg, "electra")
            + _mlm_head(
                "mlm_head",
                "generator_predictions.dense",
                "generator_predictions.LayerNorm",
                "generator_lm_head.bias",
            )
        ),
        {"generator_lm_head.weight": "electra.embeddings.word_embeddings.weight"},
    ),
    "ElectraForPreTraining": Architecture(
        "electra",
        lambda cfg, hf: ElectraDiscriminator(cfg, rngs=nnx.Rngs(0)),
        lambda cfg: [
            *_encoder_names(cfg, "electra"),
            *_linear("rtd_head/dense", "discriminator_predictions.dense"),
            *_linear("rtd_head/prediction", "discriminator_predictions.dense_prediction"),
        ],
    ),
    "MPNetForMaskedLM": Architecture(
        "mpnet",
        lambda cfg, hf: EncoderForMaskedLM(cfg, head_activation="gelu", rngs=nnx.Rngs(0)),
        lambda cfg: _encoder_names(cfg, "mpnet") + _LM_HEAD,
        {
            "lm_head.decoder.weight": "mpnet.embeddings.word_embeddings.weight",
            "lm_head.decoder.bias": "lm_head.bias",
        },
    ),
    "XLNetLMHeadModel": Architecture(
        "xlnet",
        lambda cfg, hf: XLNet(cfg, rngs=nnx.Rngs(0)),
        _xlnet_names,
        {"lm_loss.weight": "transformer.word_embedding.weight"},
    ),
    "XLNetForSequenceClassification": Architecture(
        "xlnet",
        lambda cfg, hf: XLNetForSequenceClassification(cfg, _num_labels(hf), rngs=nnx.Rngs(0)),
        lambda cfg: [
            *_xlnet_names(cfg, prefix="encoder/"),
            *_linear("summary", "sequence_summary.summary"),
            *_linear("logits_proj", "logits_proj"),
        ],
    ),
    "XLNetForQuestionAnsweringSimple": Architecture(
        "xlnet",
        lambda cfg, hf: XLNetForQuestionAnswering(cfg, rngs=nnx.Rngs(0)),
        lambda cfg: _xlnet_names(cfg, prefix="encoder/") + _linear("head/output", "qa_outputs"),
    ),
    "BartForConditionalGeneration": Architecture(
        "bart",
        lambda cfg, hf: EncoderDecoder(cfg, rngs=nnx.Rngs(0)),
        _bart_names,
        {"lm_head.weight": "model.shared.weight", **_BART_EMBEDDINGS},
    ),
    "BartForSequenceClassification": Architecture(
        "bart",
        lambda cfg, hf: BartForSequenceClassification(
            cfg, _num_labels(hf), hf.get("decoder_start_token_id", 2), rngs=nnx.Rngs(0)
        ),
        lambda cfg: [
            *_bart_names(cfg, prefix="encoder/"),
            *_linear("head/dense", "classification_head.dense"),
            *_linear("head/out_proj", "classification_head.out_proj"),
        ],
        _BART_EMBEDDINGS,
    ),
    "BartForQuestionAnswering": Architecture(
        "bart",
        lambda cfg, hf: BartForQuestionAnswering(
            cfg, hf.get("decoder_start_token_id", 2), rngs=nnx.Rngs(0)
        ),
        lambda cfg: _bart_names(cfg, prefix="encoder/") + _linear("head/output", "qa_outputs"),
        _BART_EMBEDDINGS,
    ),
    "T5ForConditionalGeneration": Architecture(
        "t5",
        lambda cfg, hf: EncoderDecoder(cfg, rngs=nnx.Rngs(0)),
        _t5_names,
        {
            "lm_head.weight": "shared.weight",
            "encoder.embed_tokens.weight": "shared.weight",
            "decoder.embed_tokens.weight": "shared.weight",
        },
    ),
}
# transformers' causal BERT (is_decoder=True) has BertForMaskedLM's weights under its names
ARCHITECTURES["BertLMHeadModel"] = ARCHITECTURES["BertForMaskedLM"]

_DEFAULT_ARCHITECTURE = {
    "bert": "BertForMaskedLM",
    "roberta": "RobertaForMaskedLM",
    "electra": "ElectraForPreTraining",
    "mpnet": "MPNetForMaskedLM",
    "xlnet": "XLNetLMHeadModel",
    "bart": "BartForConditionalGeneration",
    "t5": "T5ForConditionalGeneration",
}


def _architecture(hf_config: Mapping, architecture: str | None) -> tuple[str, Architecture]:
    if architecture is None:
        listed = hf_config.get("architectures") or []
        kind = hf_config.get("model_type")
        architecture = listed[0] if listed else _DEFAULT_ARCHITECTURE.get(kind)
        if architecture is None:
            raise CheckpointError(
                f"unsupported model_type {kind!r}; supported: {sorted(_DEFAULT_ARCHITECTURE)}"
            )
    if architecture not in ARCHITECTURES:
        raise CheckpointError(
            f"unsupported architecture {architecture!r}; supported: {sorted(ARCHITECTURES)}"
        )
    spec = ARCHITECTURES[architecture]
    if hf_config.get("model_type") != spec.model_type:
        raise CheckpointError(
            f"{architecture} needs model_type {spec.model_type!r}, "
            f"config.json says {hf_config.get('model_type')!r}"
        )
    return architecture, spec


def _flat_params(model: nnx.Module) -> dict[str, nnx.Variable]:
    return {
        "/".join(map(str, path)): leaf
        for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


def _names(model: nnx.Module, spec: Architecture, cfg: TransformerConfig) -> NameMap:
    names = spec.names(cfg)
    ours = {n for n, _, _ in names}
    missing = sorted(set(_flat_params(model)) - ours)
    assert not missing, f"parameters without a Hugging Face name: {missing}"
    return names


def from_hf_state_dict(
    state_dict: Mapping[str, np.ndarray],
    hf_config: Mapping,
    architecture: str | None = None,
) -> nnx.Module:
    """Our model with the weights of a Hugging Face state dict (arrays as NumPy, or anything
    `np.asarray` takes; torch tensors: `.numpy()` them first). `architecture` is the Hugging
    Face class name (default: the config's `architectures[0]`, else the family's masked-LM or,
    for ELECTRA, discriminator model)."""
    _, spec = _architecture(hf_config, architecture)
    if hf_config.get("model_type") == "t5":
        hf_config = {**hf_config, **_t5_head(state_dict, hf_config)}
    cfg = config_from_hf(hf_config)
    model = spec.build(cfg, hf_config)
    flat = _flat_params(model)
    for ours, hf, layout in _names(model, spec, cfg):
        if hf not in state_dict:
            raise CheckpointError(f"checkpoint has no parameter {hf!r} (needed for {ours})")
        variable = flat[ours]
        value = np.asarray(state_dict[hf], np.float32)
        if layout is True:
            value = value.T
        elif isinstance(layout, tuple) and value.shape == layout:
            value = value.reshape(variable.shape)
        if value.shape != variable.shape:
            raise CheckpointError(
                f"{hf} has shape {value.shape}; the model expects "
                f"{variable.shape} (vocab or size mismatch with config.json)"
            )
        variable[...] = value
    return model


def to_hf_state_dict(model: nnx.Module, architecture: str) -> dict[str, np.ndarray]:
    """Our model's weights under the Hugging Face names of `architecture` (tied decoders
    included)."""
    if architecture not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(ARCHITECTURES)}")
    spec = ARCHITECTURES[architecture]
    flat = _flat_params(model)
    cfg = model.cfg if isinstance(model, XLNet | EncoderDecoder) else model.encoder.cfg
    out = {}
    for ours, hf, layout in _names(model, spec, cfg):
        value = np.asarray(flat[ours][...])
        if layout is True:
            value = value.T
        elif isinstance(layout, tuple):
            value = value.reshape(layout)
        out[hf] = value
    for name, source in spec.tied.items():
        out.setdefault(name, out[source])  # an untied head (T5 v1.1) keeps its own weights
    return out


def load_hf_checkpoint(folder: str | Path, architecture: str | None = None) -> nnx.Module:
    """Our model from a local Hugging Face folder (config.json + model.safetensors, or
    pytorch_model.bin when torch is installed). Nothing is downloaded."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder} has no config.json")
    hf_config = json.loads(config_path.read_text())
    if (folder / "model.safetensors").is_file():
        from safetensors.numpy import load_file

        try:
            state = load_file(str(folder / "model.safetensors"))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"{folder / 'model.safetensors'} is corrupt: {e}") from e
    elif (folder / "pytorch_model.bin").is_file():
        import torch

        state = {
            k: v.float().numpy()
            for k, v in torch.load(folder / "pytorch_model.bin", map_location="cpu").items()
        }
    else:
        raise CheckpointError(f"{folder} has no model.safetensors or pytorch_model.bin")
    return from_hf_state_dict(state, hf_config, architecture)


_HF_ACTIVATIONS = {"gelu": "gelu", "gelu_tanh": "gelu_new", "relu": "relu"}


def _encoder_config(cfg: TransformerConfig, model_type: str) -> dict:
    """config.json's fields of a BERT, ELECTRA or RoBERTa encoder (absolute positions, no
    relative bias; narrower embeddings for ELECTRA only; RoBERTa's positions from
    pad_token_id + 1, as its `create_position_ids_from_input_ids`)."""
    offset = _ENCODERS[model_type][1]
    narrow = cfg.embedding_width != cfg.hidden_size
    roberta_positions = model_type != "roberta" or (cfg.pad_token_id or 0) + 1 == offset
    if (
        cfg.position_offset != offset
        or cfg.relative_attention_buckets
        or (narrow and model_type != "electra")
        or not roberta_positions
    ):
        raise CheckpointError(
            f"this encoder does not export as {model_type} (positions from {offset}, no "
            "relative bias, embeddings at hidden width unless ELECTRA, RoBERTa's padding id 1)"
        )
    return {
        **({"embedding_size": cfg.embedding_width} if model_type == "electra" else {}),
        "vocab_size": cfg.vocab_size,
        "hidden_size": cfg.hidden_size,
        "num_hidden_layers": cfg.num_layers,
        "num_attention_heads": cfg.num_heads,
        "intermediate_size": cfg.intermediate_size,
        "max_position_embeddings": cfg.max_position,
        "type_vocab_size": cfg.type_vocab_size,
        "hidden_act": _HF_ACTIVATIONS[cfg.activation],
        "hidden_dropout_prob": cfg.dropout_rate,
        "attention_probs_dropout_prob": 0.0,  # lm_jax has no attention-probability dropout
        "layer_norm_eps": cfg.layer_norm_eps,
        "initializer_range": cfg.initializer_range,
    }


def _xlnet_export_config(cfg: TransformerConfig) -> dict:
    """config.json's fields of an XLNet (bidirectional, untied relative biases, no clamp, the
    sequence summary of the last token through dense + tanh)."""
    return {
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.hidden_size,
        "n_layer": cfg.num_layers,
        "n_head": cfg.num_heads,
        "d_head": cfg.hidden_size // cfg.num_heads,
        "d_inner": cfg.intermediate_size,
        "ff_activation": _HF_ACTIVATIONS[cfg.activation],
        "attn_type": "bi",
        "untie_r": True,
        "bi_data": False,
        "clamp_len": -1,
        "dropout": cfg.dropout_rate,
        "layer_norm_eps": cfg.layer_norm_eps,
        "initializer_range": cfg.initializer_range,
        "summary_type": "last",
        "summary_use_proj": True,
        "summary_activation": "tanh",
        "summary_last_dropout": cfg.dropout_rate,
    }


def _bart_export_config(cfg: Seq2SeqConfig) -> dict:
    """config.json's fields of a BART (post-LN, learned positions offset by 2, no embedding
    scale, the classification head without dropout as Hugging Face's default)."""
    heads, width = cfg.num_heads, cfg.intermediate_size
    return {
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.hidden_size,
        "encoder_layers": cfg.num_layers,
        "decoder_layers": cfg.decoder_layers,
        "encoder_attention_heads": heads,
        "decoder_attention_heads": heads,
        "encoder_ffn_dim": width,
        "decoder_ffn_dim": width,
        "max_position_embeddings": cfg.max_position,
        "activation_function": _HF_ACTIVATIONS[cfg.activation],
        "dropout": cfg.dropout_rate,
        "attention_dropout": 0.0,  # lm_jax has no attention-probability dropout
        "activation_dropout": 0.0,
        "init_std": cfg.initializer_range,
        "scale_embedding": False,
        "tie_word_embeddings": True,
    }


def _t5_export_config(cfg: Seq2SeqConfig) -> dict:
    """config.json's fields of a T5 (v1.0: ReLU, tied and scaled; v1.1: gated GeLU, its own
    head), the inverse of `_t5_config`."""
    activation = "gelu" if cfg.activation == "gelu_tanh" else cfg.activation
    return {
        "vocab_size": cfg.vocab_size,
        "d_model": cfg.hidden_size,
        "d_kv": cfg.head_dim,
        "d_ff": cfg.intermediate_size,
        "num_layers": cfg.num_layers,
        "num_decoder_layers": cfg.decoder_layers,
        "num_heads": cfg.num_heads,
        "relative_attention_num_buckets": cfg.relative_attention_buckets,
        "relative_attention_max_distance": cfg.relative_attention_max_distance,
        "dropout_rate": cfg.dropout_rate,
        "layer_norm_epsilon": cfg.layer_norm_eps,
        "feed_forward_proj": ("gated-" if cfg.gated_feed_forward else "") + activation,
        "tie_word_embeddings": cfg.tie_word_embeddings,
        "scale_decoder_outputs": cfg.scale_decoder_outputs,
        "is_encoder_decoder": True,
    }


def hf_config(cfg: TransformerConfig, architecture: str, **fields) -> dict:
    """A Hugging Face `config.json` for our model config `cfg` as `architecture` (a BERT,
    ELECTRA, RoBERTa, XLNet, BART or T5 class of `ARCHITECTURES`); `fields` add e.g. `id2label`
    (and for BART its `bos_token_id`, `eos_token_id`, `decoder_start_token_id`)."""
    if architecture not in ARCHITECTURES:
        raise CheckpointError(f"unknown architecture {architecture!r}")
    model_type = ARCHITECTURES[architecture].model_type
    if model_type == "xlnet":
        body = _xlnet_export_config(cfg)
    elif model_type == "bart":
        body = _bart_export_config(cfg)
    elif model_type == "t5":
        body = _t5_export_config(cfg)
    elif model_type in ("bert", "electra", "roberta"):
        body = _encoder_config(cfg, model_type)
    else:
        raise CheckpointError(f"{architecture}: config export is implemented for encoders")
    return {
        **body,
        "architectures": [architecture],
        "model_type": model_type,
        "pad_token_id": cfg.pad_token_id or 0,
        **fields,
    }


def save_hf_checkpoint(model: nnx.Module, folder: str | Path, architecture: str, config: dict):
    """Write `model` as a Hugging Face folder: `config.json` (`config`, e.g. from
    `hf_config`) and `model.safetensors`, loadable by `transformers` without lm_jax."""
    from safetensors.numpy import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: np.ascontiguousarray(v) for k, v in to_hf_state_dict(model, architecture).items()}
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    (folder / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True))
    return folder
