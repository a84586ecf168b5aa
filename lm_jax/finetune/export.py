"""The fine-tuned model as a Hugging Face folder (`transformers`' AutoModelFor... load it with
the same logits), with the tokenizer file it was trained with."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from flax import nnx

from lm_jax.data.tokenizer import Tokenizer
from lm_jax.errors import CheckpointError
from lm_jax.models.convert import ARCHITECTURES, hf_config, save_hf_checkpoint
from lm_jax.models.seq2seq import EncoderDecoder

log = logging.getLogger(__name__)


def export_model(
    model: nnx.Module,
    folder: Path,
    architecture: str | None,
    fields: dict,
    tokenizer: Tokenizer,
) -> Path | None:
    """Write `model` (a fine-tuning model, or an `EncoderDecoder` with its LM head) to
    `folder` as `architecture` (e.g. BertForSequenceClassification) with
    config.json's extra `fields` (labels); None (logged) when the model does not fit the
    architecture's config (`hf_config`) or the architecture is None (a head lm_jax does not
    export yet). Written
    beside `folder` and renamed, so an interrupted export leaves the old one."""
    if architecture is None:
        log.warning("no Hugging Face export: this model's head does not export yet")
        return None
    vocab = tokenizer.vocab
    fields = {**fields, "pad_token_id": vocab.pad_id}
    if ARCHITECTURES[architecture].model_type == "bart":  # the decoder starts behind </s>
        eos = dict(eos_token_id=vocab.eos_id, decoder_start_token_id=vocab.eos_id)
        fields.update(bos_token_id=vocab.bos_id, **eos, forced_eos_token_id=vocab.eos_id)
    cfg = model.cfg if isinstance(model, EncoderDecoder) else model.encoder.cfg
    try:
        hf = hf_config(cfg, architecture, **fields)
    except CheckpointError as e:
        log.warning("no Hugging Face export: %s", e)
        return None
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_hf_checkpoint(model, tmp, architecture, hf)
    tokenizer.save(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
