"""The pretraining configuration: every field, its meaning and default, and a run's components.

Config files in `configs/` start from `pretraining_config()` (or a paper's recipe,
`lm_jax.pretrain.recipes`) and change what they need; the command line overrides any field
(`--config.train.steps=2000`); `lm_jax.pretrain.validation.validate` rejects unknown fields and
invalid values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, NamedTuple

import ml_collections

from lm_jax import objectives
from lm_jax.config_tools import flatten
from lm_jax.pretrain.tasks import task_of
from lm_jax.train.settings import distributed_settings, mesh_settings, train_settings


def objective_options(name: str) -> ml_collections.ConfigDict:
    """The objective's options with their defaults (its `ObjectiveSpec.options`; None defaults
    become typed placeholders, so the command line can set them)."""
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


def model_options(objective: str) -> ml_collections.ConfigDict:
    """The settings of the model family `objective` trains, with their defaults
    (`lm_jax.pretrain.tasks`: T5's buckets, decoder depth and gating, ELECTRA's generator size
    and discriminator weight, MPNet's buckets, BART's decoder depth; empty for the others)."""
    return ml_collections.ConfigDict(task_of(objective).settings.defaults())


def family_defaults(c: ml_collections.ConfigDict, objective: str) -> None:
    """Set the defaults of the model family `objective` trains (`config.model` fields that
    differ for it, e.g. T5's ReLU, and `config.model_options`)."""
    c.model.update(task_of(objective).model_defaults)
    c.model_options = model_options(objective)


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
    if weights:  # the components share one model (validated): the first one's defaults
        family_defaults(c, next(iter(weights)))
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
    # | django_translations | parallel_tsv (translation pairs for tlm: lm_jax.data.translation)
    # | prepared (a folder written by `python -m lm_jax.data.prepare`: tokenized shards,
    # streamed; its tokenizer and held-out split are the folder's)
    c.data.corpus = DEFAULT_CORPORA.get(objective, "wikipedia_sample")
    c.data.path = ""  # file / folder of a text, jsonl, tsv, annotated, parallel or prepared corpus
    c.data.field = "text"  # JSON key, TSV column or TFDS feature holding the text
    c.data.tfds_name = ""  # TFDS dataset name (prepared under data_dir; never downloaded)
    c.data.tfds_split = "train"
    c.data.data_dir = ""  # TFDS data_dir ("" = TFDS default)
    c.data.eval_fraction = 0.05  # share of documents held out for evaluation
    c.data.workers = 0  # grain worker processes preparing batches (0: threads in this process)
    c.data.verify_shards = True  # prepared corpus: check every shard's SHA-256 before step 1
    # (False: their sizes only, for corpora too large to read through at every start)
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
    # Attention implementation (lm_jax.attention): auto | xla | chunked | cudnn | tokamax; auto
    # picks only implementations verified on the backend.
    c.model.attention = "auto"
    # Settings of the objective's model family (lm_jax.pretrain.tasks; empty for most).
    c.model_options = ml_collections.ConfigDict()
    if objective != MIXTURE:
        family_defaults(c, objective)

    # Keyword options of the objective (empty for a mixture).
    c.objective_options = (
        ml_collections.ConfigDict() if objective == MIXTURE else objective_options(objective)
    )
    # Objectives mixed by a "mixture" run: name -> {objective, weight, options}.
    c.mixture = ml_collections.ConfigDict()

    c.train, c.mesh, c.distributed = train_settings(), mesh_settings(), distributed_settings()
    return c


def schema_default_config(config: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """The default configuration of `config`'s objective (a mixture: its first component's
    model family): what a run recorded before a field existed is taken to have used."""
    defaults = pretraining_config(config.objective)
    if config.objective == MIXTURE and config.mixture:
        family_defaults(defaults, components(config)[0].objective)
    return defaults


def schema_defaults(config: ml_collections.ConfigDict) -> dict[str, Any]:
    """`schema_default_config`, flattened (`{"train.steps": ...}`)."""
    return flatten(schema_default_config(config).to_dict())
