"""Where a fine-tuning run's weights and tokenizer come from (`config.init`): random
initialisation ("scratch"), an lm_jax pretraining run, or a local Hugging Face model folder.
The pretrained encoder is reused; task heads are always new. Nothing is downloaded."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import ml_collections
from flax import nnx

from lm_jax.data.tokenizer import Tokenizer, WordPieceTokenizer
from lm_jax.errors import CheckpointError, ConfigError, DataError
from lm_jax.finetune.schema import SCRATCH, finetuning_config
from lm_jax.models.config import TransformerConfig
from lm_jax.models.convert import load_hf_checkpoint
from lm_jax.models.electra import Electra
from lm_jax.models.encoder import Encoder
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


# Hugging Face model_type -> the family whose fine-tuning heads it takes
HF_FAMILIES = {"bert": "bert", "roberta": "roberta", "mpnet": "roberta", "electra": "electra"}


@dataclasses.dataclass(frozen=True)
class Initial:
    """The starting point: a pretrained encoder's config and weights and its tokenizer (all
    None from scratch: the run then uses config.tokenizer's file or trains one), the family
    whose fine-tuning heads it takes (`CLASSIFICATION_HEADS`: bert, roberta, electra), and a
    description for the logs."""

    encoder_cfg: TransformerConfig | None
    encoder: nnx.State | None
    tokenizer: Tokenizer | None
    description: str
    family: str = "bert"


def _encoder_of(model: nnx.Module, source: Path) -> Encoder:
    """The encoder a pretrained model holds (ELECTRA: the discriminator's)."""
    if isinstance(model, Electra):
        return model.discriminator.encoder
    encoder = getattr(model, "encoder", None)
    if isinstance(encoder, Encoder):
        return encoder
    raise CheckpointError(
        f"{source} holds a {type(model).__name__}; fine-tuning is implemented for encoders "
        "(BERT, RoBERTa, SpanBERT, MPNet, UniLM-style, the ELECTRA discriminator) so far"
    )


def _hugging_face_tokenizer(folder: Path) -> Tokenizer:
    """The tokenizer files a Hugging Face folder ships (WordPiece vocab.txt)."""
    settings_file = folder / "tokenizer_config.json"
    settings = json.loads(settings_file.read_text()) if settings_file.is_file() else {}
    if (folder / "vocab.txt").is_file():
        return WordPieceTokenizer(folder / "vocab.txt", settings.get("do_lower_case", True))
    present = sorted(p.name for p in folder.iterdir())
    raise CheckpointError(
        f"{folder}: no tokenizer that lm_jax reads yet (WordPiece vocab.txt); the folder holds "
        f"{present}"
    )


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
    if is_pretraining_run(source):
        run = load_pretraining_run(source)
        _check_tokenizer(config, run.tokenizer_path)
        encoder = _encoder_of(run.model, source)
        where = f"pretraining run {source} ({run.config.objective}, step {run.step})"
        family = "electra" if isinstance(run.model, Electra) else "bert"
        return Initial(encoder.cfg, nnx.state(encoder), run.tokenizer, where, family)
    if (source / "config.json").is_file():
        model = load_hf_checkpoint(source)
        encoder = _encoder_of(model, source)
        tokenizer = _hugging_face_tokenizer(source)
        kind = json.loads((source / "config.json").read_text()).get("model_type")
        family = HF_FAMILIES.get(kind, "bert")
        where = f"Hugging Face model {source} ({kind})"
        return Initial(encoder.cfg, nnx.state(encoder), tokenizer, where, family)
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
