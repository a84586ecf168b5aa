"""The fine-tuned model as a Hugging Face folder (`transformers`' AutoModelFor... load it with
the same logits), with the tokenizer file it was trained with."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import ml_collections
from flax import nnx

from lm_jax.data.tokenizer import Tokenizer
from lm_jax.errors import CheckpointError
from lm_jax.finetune.data import REGRESSION
from lm_jax.models.convert import bert_config, save_hf_checkpoint

log = logging.getLogger(__name__)
SEQUENCE_CLASSIFICATION = "BertForSequenceClassification"


def export_model(
    model: nnx.Module,
    folder: Path,
    config: ml_collections.ConfigDict,
    labels: list[str],
    tokenizer: Tokenizer,
) -> Path | None:
    """Write `model` to `folder` as BertForSequenceClassification; None (logged) when the
    encoder is not BERT-shaped."""
    names = labels or ["score"]
    fields = dict(
        num_labels=len(names),
        id2label={str(i): n for i, n in enumerate(names)},
        label2id={n: i for i, n in enumerate(names)},
        problem_type="regression" if config.task == REGRESSION else "single_label_classification",
        pad_token_id=tokenizer.vocab.pad_id,
    )
    try:
        hf = bert_config(model.encoder.cfg, SEQUENCE_CLASSIFICATION, **fields)
    except CheckpointError as e:
        log.warning("no Hugging Face export: %s", e)
        return None
    tmp = folder.with_name(folder.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_hf_checkpoint(model, tmp, SEQUENCE_CLASSIFICATION, hf)
    tokenizer.save(tmp)
    shutil.rmtree(folder, ignore_errors=True)
    tmp.rename(folder)
    return folder
