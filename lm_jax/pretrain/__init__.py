"""Pretraining: configuration schema and paper recipes, validation, the objectives' models and
losses, and the run itself, built on the generic trainer (`lm_jax.train`).

    from lm_jax.pretrain import pretrain, pretraining_config
    summary = pretrain(pretraining_config("mlm"))

The command line is `python -m lm_jax.pretrain` (`lm_jax.pretrain.cli`).
"""

from lm_jax.pretrain.run import RunSummary, pretrain
from lm_jax.pretrain.schema import mixture_config, pretraining_config
from lm_jax.pretrain.validation import validate

__all__ = ["RunSummary", "mixture_config", "pretrain", "pretraining_config", "validate"]
