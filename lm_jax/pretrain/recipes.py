"""Paper recipes: model sizes and the optimiser settings several papers share, as dotted field
overrides of `pretraining_config`, and `sized_config`, what `configs/*.py` return."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections

from lm_jax.config_tools import override
from lm_jax.data.shards import PREPARED
from lm_jax.errors import ConfigError
from lm_jax.layout import Rows
from lm_jax.objectives import spec
from lm_jax.pretrain.schema import components, pretraining_config

# Where the base / large configs find English Wikipedia prepared by `lm_jax.data.prepare`.
PREPARED_WIKIPEDIA = "corpora/wikipedia_en"
# Model shapes by size: tiny for CPU runs and tests, base and large as BERT's (Devlin et al. 2019).
MODEL_SIZES = {
    "tiny": dict(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=512),
    "base": dict(hidden_size=768, num_layers=12, num_heads=12, intermediate_size=3072),
    "large": dict(hidden_size=1024, num_layers=24, num_heads=16, intermediate_size=4096),
}


# Recipes several papers share (dotted field -> value), used by configs/*.py.
# BERT (Devlin et al. 2019, appendix A.2): Adam(0.9, 0.999), L2 weight decay 0.01, lr 1e-4
# warmed up over 10k steps then linearly decayed, batch 256, 1M steps.
BERT_RECIPE = {
    "train.b2": 0.999,
    "train.eps": 1e-6,
    "train.weight_decay": 0.01,
    "train.decay": "linear",
}
BERT_SIZES = {
    size: {
        "train.learning_rate": 1e-4,
        "train.batch_size": 256,
        "train.steps": 1_000_000,
        "train.warmup_steps": 10_000,
    }
    for size in ("base", "large")
}
# T5 (Raffel et al. 2020, sec. 3.1.2): Adafactor, inverse-square-root learning rate peaking at
# 0.01 after 10^4 steps, batch 128, 2^19 steps; rows of 568 raw tokens give 512-token inputs.
T5_RECIPE = {"train.optimizer": "adafactor", "train.decay": "rsqrt", "train.weight_decay": 0.0}
T5_SIZES = {
    # Adafactor scales its steps by the parameters' RMS: the 0.02-std initialisation of a tiny
    # model needs a larger rate than T5's 0.01.
    "tiny": {"train.learning_rate": 3e-2},
    **{
        size: {
            "train.learning_rate": 1e-2,
            "train.batch_size": 128,
            "train.steps": 2**19,
            "train.warmup_steps": 10_000,
            "data.seq_len": 568,
            "model.max_position": 568,
        }
        for size in ("base", "large")
    },
}


def sized_config(
    objective: str,
    size: str,
    recipe: Mapping[str, Any],
    sizes: Mapping[str, Mapping[str, Any]],
) -> ml_collections.ConfigDict:
    """A paper's configuration at `size` (what `configs/*.py` return).

    - tiny: `pretraining_config(objective)`'s CPU-sized model, steps, batch and learning rate on
      the offline default corpus, with the paper's optimiser family (`recipe`);
    - base / large: BERT-base / -large shapes, 512-token rows, English Wikipedia, the paper's
      `recipe` and its per-size settings `sizes[size]`. Objectives that read packed rows stream
      the prepared corpus `PREPARED_WIKIPEDIA` (`python -m lm_jax.data.prepare --source
      tfds:wikipedia/20230601.en ... --vocab-size 32000`: tokenized once, 32k pieces), and so
      do the sentence-pair objectives' document rows (prepared with `--sentence-rows 512`);
      the others (entities, translation) read their annotated / parallel corpora. Nothing
      downloads.

    `recipe` and `sizes` map dotted field names to values.
    """
    if size not in MODEL_SIZES:
        raise ConfigError(f"unknown size {size!r}: choose tiny, base or large")
    c = pretraining_config(objective)
    if size != "tiny":
        override(
            c,
            {
                **{f"model.{k}": v for k, v in MODEL_SIZES[size].items()},
                "model.max_position": 512,
                "data.seq_len": 512,
                "data.corpus": "tfds",
                "data.tfds_name": "wikipedia/20230601.en",
                "data.eval_fraction": 0.001,
                "tokenizer.vocab_size": 32000,
                "train.log_every": 100,
                "train.eval_every": 10_000,
                "train.eval_batches": 20,
                "train.checkpoint_every": 10_000,
            },
        )
    override(c, recipe)
    override(c, sizes.get(size, {}))
    streamed = (Rows.PACKED, Rows.DOCUMENTS)
    if size != "tiny" and all(spec(x.objective).rows in streamed for x in components(c)):
        override(c, {"data.corpus": PREPARED, "data.path": PREPARED_WIKIPEDIA})
    return c
