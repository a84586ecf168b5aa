"""Where a fine-tuning run's weights and tokenizer come from (`config.init`): random
initialisation ("scratch"), an lm_jax pretraining run, or a local Hugging Face model folder.
The pretrained encoder is reused; task heads are always new. Nothing is downloaded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import ml_collections
from flax import nnx

from lm_jax.data.hf_tokenizers import load_hugging_face_tokenizer
from lm_jax.data.tokenizer import Tokenizer
from lm_jax.errors import CheckpointError, ConfigError, DataError
from lm_jax.finetune.schema import SCRATCH, finetuning_config
from lm_jax.models.config import TransformerConfig
from lm_jax.models.convert import load_hf_checkpoint
from lm_jax.models.electra import Electra
from lm_jax.models.encoder import Encoder, EncoderForMaskedLM
from lm_jax.models.layers import ACTIVATIONS
from lm_jax.models.seq2seq import EncoderDecoder
from lm_jax.models.xlnet import XLNet
from lm_jax.pretrain.saved import is_pretraining_run, load_pretraining_run
from lm_jax.vocab import VocabInfo

# config.model fields that fix the encoder's shape: taken from a pretrained source.
SHAPE_FIELDS = (
    "hidden_size",
    "num_layers",
    "num_heads",
    "intermediate_size",
    "max_position",
    "type_vocab_size",
    "activation",
)


# pretraining objective -> the mask its shared encoder generates under (text to text)
OBJECTIVE_MASKS = {"clm": "causal", "prefix_lm": "prefix", "unilm": "unilm"}

# Hugging Face model_type -> the family whose heads it takes, where not its model's
HF_FAMILIES = {"roberta": "roberta", "mpnet": "roberta", "electra": "electra", "bart": "bart"}


@dataclasses.dataclass(frozen=True)
class Initial:
    """The starting point: a pretrained encoder's config and weights and its tokenizer (all
    None from scratch: the run then uses config.tokenizer's file or trains one), the family
    whose fine-tuning heads and row layout it takes (bert, roberta, electra: `[CLS] A [SEP]`
    and `CLASSIFICATION_HEADS`; xlnet: `A <sep> <cls>` and XLNet's sequence summary; bart:
    `<s> A </s>` and the decoder's last state), a description for the logs, and for text to
    text with a shared encoder the mask it generates under (`lm_mask`: causal, prefix, unilm;
    "" for an encoder-decoder)."""

    encoder_cfg: TransformerConfig | None
    encoder: nnx.State | None
    tokenizer: Tokenizer | None
    description: str
    family: str = "bert"
    lm_mask: str = ""


def _encoder_of(model: nnx.Module, source: Path, lm_mask: str | None) -> tuple[nnx.Module, str]:
    """(the encoder a pretrained model holds, its family): ELECTRA's discriminator encoder,
    XLNet's transformer, BART's or T5's encoder-decoder, or a BERT-style `Encoder`; for text
    to text (`lm_mask` not None) the whole generating model (`_generator_of`)."""
    if lm_mask is not None:
        return _generator_of(model, source, lm_mask)
    if isinstance(model, Electra):
        return model.discriminator.encoder, "electra"
    if isinstance(model, XLNet):
        return model, "xlnet"
    if isinstance(model, EncoderDecoder):
        if model.cfg.family != "bart":
            raise CheckpointError(
                f"{source} holds a T5 model: T5 fine-tunes text to text "
                "(config.text_to_text.enabled=True)"
            )
        return model, "bart"
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, Encoder):
        return encoder, "bert"
    raise CheckpointError(
        f"{source} holds a {type(model).__name__}; fine-tuning is implemented for encoders "
        "(BERT, RoBERTa, SpanBERT, MPNet, UniLM-style, the ELECTRA discriminator), XLNet, "
        "BART, and text to text for T5, BART, MASS and LM-headed encoders"
    )


def _generator_of(model: nnx.Module, source: Path, lm_mask: str) -> tuple[nnx.Module, str]:
    """(the model text to text fine-tunes, its family): an encoder-decoder (T5, BART, MASS;
    `lm_mask` ""), or an encoder with its LM head generating under `lm_mask`."""
    if isinstance(model, EncoderDecoder):
        if lm_mask:
            raise ConfigError(
                f"config.text_to_text.mask={lm_mask!r} is for encoders; {source} holds an "
                "encoder-decoder: leave it empty"
            )
        return model, model.cfg.family
    if isinstance(model, EncoderForMaskedLM):
        if not lm_mask:
            raise ConfigError(
                f"{source} holds an encoder with an LM head: set config.text_to_text.mask "
                "(causal, prefix or unilm) to say how it generates"
            )
        if model.mlm_head.activation is not ACTIVATIONS[model.encoder.cfg.activation]:
            raise CheckpointError(
                f"{source}'s LM head has its own activation (MPNet, ELECTRA's generator): "
                "it does not fine-tune text to text"
            )
        return model, "bert"
    raise CheckpointError(
        f"{source} holds a {type(model).__name__}; text-to-text fine-tuning needs an "
        "encoder-decoder (T5, BART, MASS) or an encoder with its LM head"
    )


def _weights(encoder: nnx.Module, text_to_text: bool) -> nnx.State:
    """The encoder's parameters; without an LM decoder's bias (XLNet's `lm_loss.bias`, BART's
    `final_logits_bias`) unless it generates (text to text)."""
    state = nnx.state(encoder)
    if not text_to_text and isinstance(encoder, XLNet | EncoderDecoder) and "bias" in state:
        del state["bias"]
    return state


def _check_tokenizer(config: ml_collections.ConfigDict, run_tokenizer: Path) -> None:
    """A tokenizer named in the config must be the run's own."""
    named = config.tokenizer.path
    if named and Path(named).read_bytes() != run_tokenizer.read_bytes():
        raise DataError(
            f"config.tokenizer.path ({named}) is not the tokenizer the pretraining run "
            f"{config.init} was trained with ({run_tokenizer}): leave config.tokenizer.path "
            "empty to use the run's"
        )


def initial_weights(config: ml_collections.ConfigDict) -> Initial:
    """The encoder and tokenizer `config.init` names."""
    if config.init == SCRATCH:  # the tokenizer: config.tokenizer's (get_tokenizer)
        return Initial(None, None, None, "random initialisation", lm_mask=_lm_mask(config) or "")
    source = Path(config.init)  # an existing directory (validated)
    if is_pretraining_run(source):
        run = load_pretraining_run(source)
        _check_tokenizer(config, run.tokenizer_path)
        model, tokenizer, lm_mask = run.model, run.tokenizer, _lm_mask(config, run.config.objective)
        where, kind = f"pretraining run {source} ({run.config.objective}, step {run.step})", None
    elif (source / "config.json").is_file():
        model, tokenizer = load_hf_checkpoint(source), load_hugging_face_tokenizer(source)
        kind, lm_mask = (
            json.loads((source / "config.json").read_text()).get("model_type"),
            _lm_mask(config),
        )
        where = f"Hugging Face model {source} ({kind})"
    else:
        raise ConfigError(
            f"config.init: {source} is neither an lm_jax pretraining run (run_config.json) nor "
            "a Hugging Face model folder (config.json)"
        )
    encoder, family = _encoder_of(model, source, lm_mask)
    cfg = encoder.encoder.cfg if isinstance(encoder, EncoderForMaskedLM) else encoder.cfg
    weights = _weights(encoder, lm_mask is not None)
    family = HF_FAMILIES.get(kind, family)
    return Initial(cfg, weights, tokenizer, where, family, lm_mask or "")


def _lm_mask(config: ml_collections.ConfigDict, objective: str | None = None) -> str | None:
    """None unless text to text; then the shared encoder's mask: config.text_to_text.mask, or
    the pretraining objective's (`OBJECTIVE_MASKS`), or "" (an encoder-decoder)."""
    t = config.text_to_text
    if not t.enabled:
        return None
    return t.mask or OBJECTIVE_MASKS.get(objective, "")


def model_config(
    config: ml_collections.ConfigDict, initial: Initial, vocab: VocabInfo
) -> TransformerConfig:
    """The encoder's config: the pretrained shape (config.model's shape fields must then be
    left at their defaults or agree) or config.model's from scratch; dropout, dtype, remat and
    attention from config.model either way; the tokenizer's padding id as the embedding row
    that does not train (Hugging Face's `padding_idx`)."""
    m = config.model
    attention = None if m.attention == "auto" else m.attention
    runtime = dict(
        dropout_rate=m.dropout_rate,
        dtype=m.dtype,
        remat=m.remat,
        attention_implementation=attention,
        pad_token_id=vocab.pad_id,
    )
    if initial.encoder_cfg is None:
        shape = {f: m[f] for f in SHAPE_FIELDS}
        return TransformerConfig(vocab_size=vocab.size, **shape, **runtime)
    defaults = finetuning_config().model
    for field in SHAPE_FIELDS:
        ours = getattr(initial.encoder_cfg, field)
        if m[field] != defaults[field] and m[field] != ours:
            raise ConfigError(
                f"config.model.{field}={m[field]!r} differs from the pretrained model's {ours!r} "
                f"({initial.description}); the shape comes from config.init"
            )
    return dataclasses.replace(initial.encoder_cfg, **runtime)
