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
from lm_jax.models.encoder import Encoder
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


# Hugging Face model_type -> the family whose heads it takes, where not its model's
HF_FAMILIES = {"roberta": "roberta", "mpnet": "roberta", "electra": "electra", "bart": "bart"}


@dataclasses.dataclass(frozen=True)
class Initial:
    """The starting point: a pretrained encoder's config and weights and its tokenizer (all
    None from scratch: the run then uses config.tokenizer's file or trains one), the family
    whose fine-tuning heads and row layout it takes (bert, roberta, electra: `[CLS] A [SEP]`
    and `CLASSIFICATION_HEADS`; xlnet: `A <sep> <cls>` and XLNet's sequence summary; bart:
    `<s> A </s>` and the decoder's last state), and a description for the logs."""

    encoder_cfg: TransformerConfig | None
    encoder: nnx.State | None
    tokenizer: Tokenizer | None
    description: str
    family: str = "bert"


def _encoder_of(model: nnx.Module, source: Path, text_to_text: bool) -> tuple[nnx.Module, str]:
    """(the encoder a pretrained model holds, its family): ELECTRA's discriminator encoder,
    XLNet's transformer, BART's or T5's encoder-decoder, or a BERT-style `Encoder`."""
    if text_to_text:
        if not isinstance(model, EncoderDecoder):
            raise CheckpointError(
                f"{source} holds a {type(model).__name__}; text-to-text fine-tuning needs an "
                "encoder-decoder (T5, BART, MASS)"
            )
        return model, model.cfg.family
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
        "BART, and text to text for T5, BART and MASS"
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
        return Initial(None, None, None, "random initialisation")
    source = Path(config.init)  # an existing directory (validated)
    generates = config.text_to_text.enabled
    if is_pretraining_run(source):
        run = load_pretraining_run(source)
        _check_tokenizer(config, run.tokenizer_path)
        encoder, family = _encoder_of(run.model, source, generates)
        where = f"pretraining run {source} ({run.config.objective}, step {run.step})"
        return Initial(encoder.cfg, _weights(encoder, generates), run.tokenizer, where, family)
    if (source / "config.json").is_file():
        encoder, family = _encoder_of(load_hf_checkpoint(source), source, generates)
        tokenizer = load_hugging_face_tokenizer(source)
        kind = json.loads((source / "config.json").read_text()).get("model_type")
        family = HF_FAMILIES.get(kind, family)
        where = f"Hugging Face model {source} ({kind})"
        return Initial(encoder.cfg, _weights(encoder, generates), tokenizer, where, family)
    raise ConfigError(
        f"config.init: {source} is neither an lm_jax pretraining run (run_config.json) nor a "
        "Hugging Face model folder (config.json)"
    )


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
