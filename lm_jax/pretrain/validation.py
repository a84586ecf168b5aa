"""Validation of a pretraining configuration: every field's type and range, each objective's
options (its `ObjectiveSpec`), and what the objectives need of the data, tokenizer and model.
Errors name the field (`ConfigError`)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import ml_collections

from lm_jax import objectives
from lm_jax.attention.kernel import IMPLEMENTATIONS
from lm_jax.config_tools import Rule, check_fields
from lm_jax.data.entities import ANNOTATED_CORPORA
from lm_jax.data.shards import PREPARED
from lm_jax.data.sources import CORPORA
from lm_jax.data.tokenizer import MIN_TRAINED_VOCAB, MODEL_TYPES
from lm_jax.data.translation import PARALLEL_CORPORA, parse_languages
from lm_jax.errors import ConfigError
from lm_jax.layout import Rows
from lm_jax.models.config import ACTIVATIONS, DTYPES
from lm_jax.objectives import t5_lengths
from lm_jax.pretrain.schema import MIXTURE, pretraining_config
from lm_jax.pretrain.tasks import model_settings
from lm_jax.train.settings import RULES as TRAINER_RULES


def _positive(x) -> bool:
    return x > 0


def _fraction(x) -> bool:
    return 0.0 < x < 1.0


# The tokenizer and model sections, shared with fine-tuning (lm_jax.finetune.schema).
MODEL_RULES: dict[str, Rule] = {
    "tokenizer.model_type": (lambda x: x in MODEL_TYPES, f"must be one of {MODEL_TYPES}"),
    "tokenizer.vocab_size": (
        lambda x: x >= MIN_TRAINED_VOCAB,
        f"must be >= {MIN_TRAINED_VOCAB} (specials + 256 byte pieces)",
    ),
    "tokenizer.extra_ids": (lambda x: x >= 0, "must be >= 0"),
    "model.hidden_size": (_positive, "must be > 0"),
    "model.num_layers": (_positive, "must be > 0"),
    "model.num_heads": (_positive, "must be > 0"),
    "model.intermediate_size": (_positive, "must be > 0"),
    "model.max_position": (_positive, "must be > 0"),
    "model.type_vocab_size": (_positive, "must be > 0"),
    "model.dropout_rate": (lambda x: 0.0 <= x < 1.0, "must be in [0, 1)"),
    "model.activation": (lambda x: x in ACTIVATIONS, f"must be one of {ACTIVATIONS}"),
    "model.dtype": (lambda x: x in DTYPES, f"must be one of {list(DTYPES)}"),
    "model.attention": (
        lambda x: x == "auto" or x in IMPLEMENTATIONS,
        f"must be auto or one of {list(IMPLEMENTATIONS)}",
    ),
}

_RULES: dict[str, Rule] = {
    "seed": (lambda x: x >= 0, "must be >= 0"),
    "data.corpus": (
        lambda x: x in CORPORA or x in PARALLEL_CORPORA or x == PREPARED,
        f"must be one of {sorted(CORPORA) + list(PARALLEL_CORPORA) + [PREPARED]}",
    ),
    "data.eval_fraction": (_fraction, "must be in (0, 1)"),
    "data.seq_len": (lambda x: x >= 8, "must be >= 8"),
    "data.workers": (lambda x: x >= 0, "must be >= 0 (0: threads)"),
    **MODEL_RULES,
    **TRAINER_RULES,
}


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first unknown field, mistyped value or invalid value."""
    # Objective options and mixtures are checked against the objectives' specs below.
    check_fields(
        config,
        pretraining_config(),
        _RULES,
        free=("objective_options.", "mixture.", "model_options."),
    )
    if config.objective == MIXTURE:
        _validate_mixture(config)
    else:
        if config.mixture:
            raise ConfigError('config.mixture is only read when config.objective is "mixture"')
        _validate_objective(config, "config.objective", config.objective, config.objective_options)
    objective = (
        config.mixture[next(iter(config.mixture))].objective
        if config.objective == MIXTURE
        else config.objective
    )
    try:
        model_settings(objective, config.model_options.to_dict())
    except ConfigError as e:
        raise ConfigError(f"config.model_options.{e}") from None
    m = config.model
    if m.hidden_size % m.num_heads:
        raise ConfigError(
            f"config.model.hidden_size ({m.hidden_size}) must be divisible by "
            f"config.model.num_heads ({m.num_heads})"
        )
    if config.data.seq_len > m.max_position:
        raise ConfigError(
            f"config.data.seq_len ({config.data.seq_len}) exceeds "
            f"config.model.max_position ({m.max_position})"
        )
    if config.train.warmup_steps > config.train.steps:
        raise ConfigError(
            f"config.train.warmup_steps ({config.train.warmup_steps}) exceeds "
            f"config.train.steps ({config.train.steps})"
        )
    needs_path = ("text", "jsonl", "tsv", "annotated_jsonl", "parallel_tsv", PREPARED)
    if config.data.corpus in needs_path and not config.data.path:
        raise ConfigError(f"config.data.path is required for corpus {config.data.corpus!r}")
    if [config.mesh.data, config.mesh.fsdp, config.mesh.tensor].count(-1) > 1:
        raise ConfigError("config.mesh: at most one of data, fsdp, tensor may be -1")
    own_tokenizer = config.tokenizer.path or config.data.corpus == PREPARED
    if config.distributed.initialize and not own_tokenizer:
        raise ConfigError(
            "config.tokenizer.path is required when config.distributed.initialize is set: every "
            "process must tokenize with the same, already trained tokenizer"
        )
    if config.data.corpus == "tfds" and not config.data.tfds_name:
        raise ConfigError("config.data.tfds_name is required for corpus 'tfds'")


def _validate_objective(
    config: ml_collections.ConfigDict,
    where: str,
    name: str,
    options: ml_collections.ConfigDict,
) -> None:
    """A registered, trainable objective whose options it accepts (and what it needs of the
    tokenizer and model)."""
    if name not in objectives.names():
        raise ConfigError(f"{where}: unknown objective {name!r}; choose from {objectives.names()}")
    spec = objectives.spec(name)
    accepted = spec.options.names()
    options_field = (
        "config.objective_options"
        if where == "config.objective"
        else (where.rsplit(".", 1)[0] + ".options")
    )
    for option in options:
        if option not in accepted:
            raise ConfigError(
                f"{options_field}.{option} is not an option of objective {name!r} (choose the "
                f"objective with --config=configs/pretrain.py:{name} to get its options); "
                f"it accepts {sorted(accepted)}"
            )
    given = {k: v for k, v in options.to_dict().items() if v is not None}
    try:
        spec.options(**given)
    except ConfigError as e:
        raise ConfigError(f"{options_field}.{e}") from None
    if name == "t5" and not config.tokenizer.path:
        spans = t5_sentinels_needed(config.data.seq_len, options)
        raw = config.data.seq_len
        if config.tokenizer.extra_ids < spans:
            raise ConfigError(
                f"config.tokenizer.extra_ids must be >= {spans} for t5 on rows of {raw} tokens "
                f"(one sentinel per noise span), got {config.tokenizer.extra_ids}"
            )
    if spec.rows is Rows.DOCUMENTS and config.train.batch_size < 2:
        raise ConfigError(
            f"config.train.batch_size must be >= 2 for {name}: its random second segments come "
            "from other documents of the batch"
        )
    annotated = [*sorted(ANNOTATED_CORPORA), PREPARED]  # prepared: from annotated sources
    if spec.rows is Rows.ENTITIES and config.data.corpus not in annotated:
        raise ConfigError(
            f"{where}: {name} needs an entity-annotated corpus: set config.data.corpus to one of "
            f"{annotated}, not {config.data.corpus!r}"
        )
    pairs = spec.rows is Rows.PAIRS
    parallel = [*PARALLEL_CORPORA, PREPARED]  # prepared: from translation pairs
    if (pairs and config.data.corpus not in parallel) or (
        not pairs and config.data.corpus in PARALLEL_CORPORA
    ):
        raise ConfigError(
            f"{where}: {name} needs a parallel corpus: set config.data.corpus to one of "
            f"{parallel}, not {config.data.corpus!r}"
            if pairs
            else f"{where}: config.data.corpus {config.data.corpus!r} is a parallel corpus: "
            f"only tlm reads translation pairs, not {name}"
        )
    if pairs:
        languages = parse_languages(config.data.languages)
        if not languages:
            raise ConfigError("config.data.languages is empty: name the translation languages")
        if config.model.type_vocab_size < len(languages) + 1:
            raise ConfigError(
                f"config.model.type_vocab_size must be >= {len(languages) + 1} for tlm: one "
                f"language embedding for the source and one per language of "
                f"config.data.languages ({config.data.languages!r})"
            )
    if name == "unilm" and config.model.type_vocab_size < 4:
        raise ConfigError("config.model.type_vocab_size must be >= 4 for unilm (LM identifiers)")


def t5_sentinels_needed(raw_length: int, options: Mapping[str, Any]) -> int:
    """Sentinels T5 span corruption uses on rows of `raw_length` tokens (one per noise span)."""
    lengths = t5_lengths(raw_length, options["noise_density"], options["mean_noise_span_length"])
    return (sum(lengths) - raw_length - 2) // 2  # inputs + targets hold each sentinel twice


def _validate_mixture(config: ml_collections.ConfigDict) -> None:
    """Components with an objective, a positive weight and options, all on one model."""
    if not config.mixture:
        raise ConfigError('config.mixture is empty: a "mixture" run needs at least one objective')
    if config.objective_options:
        raise ConfigError(
            "config.objective_options must be empty for a mixture (set "
            "config.mixture.<name>.options instead)"
        )
    models, layouts = {}, {}
    for name, component in config.mixture.items():
        where = f"config.mixture.{name}"
        if not isinstance(component, ml_collections.ConfigDict) or set(component) != {
            "objective",
            "weight",
            "options",
        }:
            raise ConfigError(f"{where} must have exactly the fields objective, weight, options")
        weight = component.weight
        number = isinstance(weight, (int, float)) and not isinstance(weight, bool)
        if not number or not math.isfinite(weight) or weight <= 0:
            raise ConfigError(f"{where}.weight must be a finite number > 0, got {weight!r}")
        _validate_objective(config, f"{where}.objective", component.objective, component.options)
        spec = objectives.spec(component.objective)
        models[name], layouts[name] = spec.model, spec.rows.value
    if len(set(layouts.values())) > 1:
        raise ConfigError(
            f"config.mixture: the objectives read different data layouts ({layouts}); mix "
            "objectives that read the same rows"
        )
    if len(set(models.values())) > 1:
        raise ConfigError(
            f"config.mixture: the objectives {sorted(c.objective for c in config.mixture.values())}"
            " train different models; mix objectives of one model family (encoder: mlm, wwm, "
            "ngram, clm, prefix_lm, unilm; sentence pairs: nsp, sop; T5: t5; BART: bart, mass)"
        )
