"""The pretraining configuration: every field, its meaning, and validation that names bad fields.

Config files in `configs/` start from `pretraining_config()` and change what they need; the
command line overrides any field (`--config.train.steps=2000`). `validate` rejects unknown
fields (a typo is an error, not a silently ignored setting) and out-of-range values.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import ml_collections

from lm_jax.data.entities import ANNOTATED_CORPORA
from lm_jax.data.parallel import PARALLEL_CORPORA, parse_languages
from lm_jax.data.sources import CORPORA
from lm_jax.data.tokenizer import MIN_TRAINED_VOCAB, MODEL_TYPES
from lm_jax.errors import ConfigError
from lm_jax.models.config import ACTIVATIONS


def objective_options(name: str) -> ml_collections.ConfigDict:
    """The objective's options with their defaults (its `ObjectiveSpec.options`; None defaults
    become typed placeholders, so the command line can set them)."""
    from lm_jax import objectives

    options_class = objectives.spec(name).options
    defaults = dataclasses.asdict(options_class())
    kinds = options_class.value_types()
    options = ml_collections.ConfigDict()
    for option, default in defaults.items():
        if default is None:
            options[option] = ml_collections.config_dict.placeholder(kinds[option])
        else:
            options[option] = default
    return options


MIXTURE = "mixture"  # config.objective of a run that mixes the objectives of config.mixture
# Objectives whose default corpus is not the Wikipedia sample: they need annotations or pairs.
DEFAULT_CORPORA = {"entity": "peoples_daily", "tlm": "django_translations"}


class Component(NamedTuple):
    """One objective of a run: its name in the metrics, the registered objective, its keyword
    options, and its sampling weight."""

    name: str
    objective: str
    options: dict[str, Any]
    weight: float


def components(config: ml_collections.ConfigDict) -> list[Component]:
    """The run's objectives: config.objective alone, or every entry of config.mixture."""
    if config.objective != MIXTURE:
        return [
            Component(config.objective, config.objective, config.objective_options.to_dict(), 1.0)
        ]
    return [
        Component(name, c.objective, c.options.to_dict(), float(c.weight))
        for name, c in config.mixture.items()
    ]


def mixture_config(weights: Mapping[str, float]) -> ml_collections.ConfigDict:
    """`pretraining_config` mixing registered objectives by weight (UL2-style, Tay et al. 2022):
    each step trains one of them, drawn with probability proportional to its weight from
    (seed, step); each keeps its default options under config.mixture.<name>.options."""
    c = pretraining_config(MIXTURE)
    for name, weight in weights.items():
        c.mixture[name] = {"objective": name, "weight": float(weight)}
        c.mixture[name].options = objective_options(name)
    return c


def pretraining_config(objective: str = "mlm") -> ml_collections.ConfigDict:
    """Defaults: a small BERT-style encoder pretrained on the offline Wikipedia sample
    (CPU-friendly), with `objective` and that objective's own option defaults ("mixture":
    no objective options; fill config.mixture, or use `mixture_config`)."""
    c = ml_collections.ConfigDict()
    c.objective = objective  # a name from lm_jax.objectives.names(), or "mixture"
    c.seed = 0  # one seed for data order, masks, dropout and initialisation
    c.output_dir = ""  # where checkpoints and metrics go; "" -> runs/<objective>

    c.data = ml_collections.ConfigDict()
    # wikipedia_sample | python_docs | text | jsonl | tsv | tfds | peoples_daily | annotated_jsonl
    # (these two carry entity annotations: lm_jax.data.entities; entity masking needs one)
    # | django_translations | parallel_tsv (translation pairs for tlm: lm_jax.data.parallel)
    c.data.corpus = DEFAULT_CORPORA.get(objective, "wikipedia_sample")
    c.data.path = (
        ""  # file or folder of a text / jsonl / tsv / annotated_jsonl / parallel_tsv corpus
    )
    c.data.field = "text"  # JSON key, TSV column or TFDS feature holding the text
    c.data.tfds_name = ""  # TFDS dataset name (prepared under data_dir; never downloaded)
    c.data.tfds_split = "train"
    c.data.data_dir = ""  # TFDS data_dir ("" = TFDS default)
    c.data.eval_fraction = 0.05  # share of documents held out for evaluation
    c.data.seq_len = 64 if objective == "tlm" else 128  # row length, [CLS] and [SEP] included
    c.data.languages = "fr,de,es,ru,zh_Hans"  # tlm: translation languages (comma-separated)

    c.tokenizer = ml_collections.ConfigDict()
    c.tokenizer.path = ""  # existing SentencePiece .model or WordPiece vocab.txt; "" = train one
    c.tokenizer.model_type = "unigram"  # unigram | bpe | char | word (when training)
    c.tokenizer.vocab_size = 8000  # SentencePiece pieces when training (sentinels come on top)
    c.tokenizer.extra_ids = 100  # T5 sentinel ids appended after the SentencePiece vocabulary
    c.tokenizer.lowercase = True  # WordPiece vocabularies only

    c.model = ml_collections.ConfigDict()
    c.model.hidden_size = 128
    c.model.num_layers = 2
    c.model.num_heads = 2
    c.model.intermediate_size = 512
    c.model.max_position = 512
    # Token types: 2 for sentence A/B, 4 for UniLM's LM identifiers, languages + 1 for tlm.
    c.model.type_vocab_size = 6 if objective == "tlm" else 4
    c.model.dropout_rate = 0.1
    c.model.activation = "gelu"
    c.model.dtype = "auto"  # compute dtype: bf16 on GPU/TPU, fp32 on CPU; parameters stay fp32
    c.model.remat = False  # recompute layer activations in the backward pass (saves memory)

    # Keyword options of the objective (empty for a mixture).
    c.objective_options = (
        ml_collections.ConfigDict() if objective == MIXTURE else objective_options(objective)
    )
    # Objectives mixed by a "mixture" run: name -> {objective, weight, options}.
    c.mixture = ml_collections.ConfigDict()

    c.train = ml_collections.ConfigDict()
    c.train.steps = 1000
    c.train.batch_size = 32
    c.train.learning_rate = 2e-3  # peak, reached after warmup
    c.train.warmup_steps = 100
    c.train.decay = "linear"  # linear | cosine (to 0 at `steps`) | rsqrt (peak*sqrt(warmup/step))
    # Steps over which linear / cosine decay reach 0 (0: train.steps). A resumed run with more
    # train.steps stretches the schedule by default; keep the original one by setting this to
    # the original train.steps (the rate then stays 0 after it).
    c.train.decay_steps = 0
    c.train.weight_decay = 0.01  # AdamW; biases and LayerNorm parameters are not decayed
    c.train.b1 = 0.9
    c.train.b2 = 0.98
    c.train.eps = 1e-6
    c.train.clip_norm = 1.0  # global-norm gradient clipping (0 disables)
    c.train.optimizer = "adamw"  # adamw | lamb (You et al. 2020) | adafactor (T5)
    c.train.grad_accumulation = 1  # micro-batches per update (steps count micro-batches)
    c.train.log_every = 50  # steps between training-metric records (and finiteness checks)
    c.train.eval_every = 250
    c.train.eval_batches = 8
    c.train.checkpoint_every = 250
    c.train.keep_checkpoints = 3

    # Device mesh (lm_jax.sharding): the batch is split over data x fsdp, parameters and
    # optimiser state over fsdp ("embed" dimensions) and tensor (heads, MLP, vocabulary).
    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # data-parallel ways; -1 = every device not used by fsdp x tensor
    c.mesh.fsdp = 1  # fully-sharded data-parallel ways
    c.mesh.tensor = 1  # tensor-parallel ways
    # JAX devices the command line splits a CPU-only host into (lm_jax.sharding.use_cpu_cores):
    # 0 = as many as the mesh needs, one per usable core that divides the batch when data is -1.
    c.mesh.cpu_devices = 0

    # Multi-host runs (TPU pods, multi-node GPU): jax.distributed.initialize before anything else.
    c.distributed = ml_collections.ConfigDict()
    c.distributed.initialize = False  # True on every host of a multi-host run
    c.distributed.coordinator_address = ""  # "host:port" of process 0; "" = auto-detect
    c.distributed.num_processes = 0  # 0 = auto-detect (TPU VM, SLURM, ...)
    c.distributed.process_id = -1  # -1 = auto-detect
    return c


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


def override(
    config: ml_collections.ConfigDict, values: Mapping[str, Any]
) -> ml_collections.ConfigDict:
    """Set dotted fields (`{"train.steps": 10}`) in place; an unknown field is a ConfigError."""
    for key, value in values.items():
        node = config
        *parents, leaf = key.split(".")
        for name in parents:
            if name not in node:
                raise ConfigError(f"unknown config field config.{key}")
            node = node[name]
        if leaf not in node:
            raise ConfigError(f"unknown config field config.{key}")
        node[leaf] = value
    return config


def sized_config(
    objective: str,
    size: str,
    recipe: Mapping[str, Any],
    sizes: Mapping[str, Mapping[str, Any]],
) -> ml_collections.ConfigDict:
    """A paper's configuration at `size` (what `configs/*.py` return).

    - tiny: `pretraining_config(objective)`'s CPU-sized model, steps, batch and learning rate on
      the offline default corpus, with the paper's optimiser family (`recipe`);
    - base / large: BERT-base / -large shapes, 512-token rows, a 32k-piece tokenizer trained on
      English Wikipedia read from TFDS (prepared beforehand under config.data.data_dir; nothing
      downloads), the paper's `recipe` and its per-size settings `sizes[size]`.

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
    return override(c, sizes.get(size, {}))


def _positive(x) -> bool:
    return x > 0


def _fraction(x) -> bool:
    return 0.0 < x < 1.0


_RULES: dict[str, tuple[Callable[[Any], bool], str]] = {
    "seed": (lambda x: x >= 0, "must be >= 0"),
    "data.corpus": (
        lambda x: x in CORPORA or x in PARALLEL_CORPORA,
        f"must be one of {sorted(CORPORA) + list(PARALLEL_CORPORA)}",
    ),
    "data.eval_fraction": (_fraction, "must be in (0, 1)"),
    "data.seq_len": (lambda x: x >= 8, "must be >= 8"),
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
    "model.dtype": (
        lambda x: x in ("auto", "float32", "bfloat16"),
        "must be auto, float32 or bfloat16",
    ),
    "train.steps": (_positive, "must be > 0"),
    "train.batch_size": (_positive, "must be > 0"),
    "train.learning_rate": (_positive, "must be > 0"),
    "train.warmup_steps": (lambda x: x >= 0, "must be >= 0"),
    "train.decay": (
        lambda x: x in ("linear", "cosine", "rsqrt"),
        "must be linear, cosine or rsqrt",
    ),
    "train.decay_steps": (lambda x: x >= 0, "must be >= 0 (0: train.steps)"),
    "train.weight_decay": (lambda x: x >= 0, "must be >= 0"),
    "train.b1": (lambda x: 0 <= x < 1, "must be in [0, 1)"),
    "train.b2": (lambda x: 0 <= x < 1, "must be in [0, 1)"),
    "train.eps": (_positive, "must be > 0"),
    "train.clip_norm": (lambda x: x >= 0, "must be >= 0"),
    "train.optimizer": (
        lambda x: x in ("adamw", "lamb", "adafactor"),
        "must be adamw, lamb or adafactor",
    ),
    "train.grad_accumulation": (_positive, "must be > 0"),
    "train.log_every": (_positive, "must be > 0"),
    "train.eval_every": (_positive, "must be > 0"),
    "train.eval_batches": (_positive, "must be > 0"),
    "train.checkpoint_every": (_positive, "must be > 0"),
    "train.keep_checkpoints": (_positive, "must be > 0"),
    "mesh.data": (lambda x: x == -1 or x > 0, "must be -1 or > 0"),
    "mesh.fsdp": (lambda x: x == -1 or x > 0, "must be -1 or > 0"),
    "mesh.tensor": (lambda x: x == -1 or x > 0, "must be -1 or > 0"),
    "mesh.cpu_devices": (lambda x: x >= 0, "must be >= 0 (0: automatic)"),
    "distributed.num_processes": (lambda x: x >= 0, "must be >= 0 (0 = auto-detect)"),
    "distributed.process_id": (lambda x: x >= -1, "must be >= -1 (-1 = auto-detect)"),
}


def _flatten(d: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        name = f"{prefix}{k}"
        if isinstance(v, Mapping):
            out.update(_flatten(v, name + "."))
        else:
            out[name] = v
    return out


def validate(config: ml_collections.ConfigDict) -> None:
    """Raise `ConfigError` naming the first unknown field, mistyped value or invalid value."""

    schema = _flatten(pretraining_config().to_dict())
    given = _flatten(config.to_dict())
    for name, value in given.items():
        if name.startswith(("objective_options.", "mixture.")):
            continue  # checked against the objectives' signatures below
        if name not in schema:
            raise ConfigError(f"unknown config field config.{name}")
        expected = type(schema[name])
        ok = isinstance(value, expected) or (expected is float and isinstance(value, int))
        if not ok or (expected is int and isinstance(value, bool)):
            raise ConfigError(f"config.{name} must be {expected.__name__}, got {value!r}")
        if name in _RULES and not _RULES[name][0](value):
            raise ConfigError(f"config.{name} {_RULES[name][1]}, got {value!r}")
    for name in schema:
        if name not in given and not name.startswith(("objective_options.", "mixture.")):
            raise ConfigError(f"config.{name} is missing")
    if config.objective == MIXTURE:
        _validate_mixture(config)
    else:
        if config.mixture:
            raise ConfigError('config.mixture is only read when config.objective is "mixture"')
        _validate_objective(config, "config.objective", config.objective, config.objective_options)
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
    needs_path = ("text", "jsonl", "tsv", "annotated_jsonl", "parallel_tsv")
    if config.data.corpus in needs_path and not config.data.path:
        raise ConfigError(f"config.data.path is required for corpus {config.data.corpus!r}")
    if [config.mesh.data, config.mesh.fsdp, config.mesh.tensor].count(-1) > 1:
        raise ConfigError("config.mesh: at most one of data, fsdp, tensor may be -1")
    if config.distributed.initialize and not config.tokenizer.path:
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
    from lm_jax import objectives
    from lm_jax.layout import Rows

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
    if spec.rows is Rows.ENTITIES and config.data.corpus not in ANNOTATED_CORPORA:
        raise ConfigError(
            f"{where}: {name} needs an entity-annotated corpus: set config.data.corpus to one of "
            f"{sorted(ANNOTATED_CORPORA)}, not {config.data.corpus!r}"
        )
    pairs = spec.rows is Rows.PAIRS
    if pairs != (config.data.corpus in PARALLEL_CORPORA):
        raise ConfigError(
            f"{where}: {name} needs a parallel corpus: set config.data.corpus to one of "
            f"{list(PARALLEL_CORPORA)}, not {config.data.corpus!r}"
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
    from lm_jax.objectives import t5_lengths

    lengths = t5_lengths(raw_length, options["noise_density"], options["mean_noise_span_length"])
    return (sum(lengths) - raw_length - 2) // 2  # inputs + targets hold each sentinel twice


def _validate_mixture(config: ml_collections.ConfigDict) -> None:
    """Components with an objective, a positive weight and options, all on one model."""
    from lm_jax import objectives

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
