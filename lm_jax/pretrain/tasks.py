"""What each objective trains: the model its spec names and how its batch becomes losses.

A task's `sums` returns sums (not means) so that metrics over several batches combine exactly:
`nll_sum` / `correct_sum` / `weight_sum` for the main prediction head (masked, next or decoder
tokens: the loss compared with the unigram baseline), and the same three with a prefix for
every other head (`sbo_`, `rtd_`). `loss` turns one batch's sums into the training loss.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Callable
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lm_jax import objectives
from lm_jax.batch import Batch, TwoStreamBatch, encoder_inputs, seq2seq_inputs
from lm_jax.config_tools import Rule
from lm_jax.errors import ConfigError
from lm_jax.models.config import TransformerConfig
from lm_jax.models.electra import Electra, generator_config
from lm_jax.models.encoder import (
    EncoderForMaskedLM,
    EncoderForPreTraining,
    EncoderForSpanBoundary,
)
from lm_jax.models.seq2seq import EncoderDecoder, Seq2SeqConfig
from lm_jax.models.xlnet import XLNet
from lm_jax.objectives import electra_replace
from lm_jax.objectives.registry import Model, ObjectiveSpec
from lm_jax.train.losses import weighted_cross_entropy
from lm_jax.train.step import StepTask
from lm_jax.vocab import VocabInfo


def _mean(sums: dict, prefix: str = "") -> jax.Array:
    return sums[f"{prefix}nll_sum"] / (sums[f"{prefix}weight_sum"] + 1e-5)


def _prefixed(prefix: str, sums: dict) -> dict:
    return {f"{prefix}{k}": v for k, v in sums.items()}


@dataclasses.dataclass(frozen=True)
class ModelSettings:
    """A model family's own settings (`config.model_options`), checked on creation against
    `RULES`; families without any use this class itself."""

    RULES: ClassVar[dict[str, Rule]] = {}

    def __post_init__(self) -> None:
        for name, (ok, must) in self.RULES.items():
            value = getattr(self, name)
            if isinstance(value, bool) or not ok(value):
                raise ConfigError(f"{name} {must}, got {value!r}")

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        return {f.name: f.default for f in dataclasses.fields(cls)}


_AT_LEAST_ONE = (lambda x: isinstance(x, int) and x >= 1, "must be an integer >= 1")
_DEPTH = (lambda x: isinstance(x, int) and x >= 0, "must be an integer >= 0 (0: the encoder's)")


@dataclasses.dataclass(frozen=True)
class MPNetSettings(ModelSettings):
    """MPNet's relative-position buckets (Song et al. 2020: 32, shared by all layers)."""

    RULES: ClassVar[dict[str, Rule]] = {"relative_attention_buckets": _AT_LEAST_ONE}
    relative_attention_buckets: int = 32


@dataclasses.dataclass(frozen=True)
class BARTSettings(ModelSettings):
    """BART's decoder depth (0: as deep as the encoder, `config.model.num_layers`)."""

    RULES: ClassVar[dict[str, Rule]] = {"num_decoder_layers": _DEPTH}
    num_decoder_layers: int = 0


@dataclasses.dataclass(frozen=True)
class T5Settings(ModelSettings):
    """T5's settings: relative-position buckets (32), decoder depth (0: the encoder's), and
    `gated_feed_forward` for T5 v1.1 (gated GeLU; set `config.model.activation` to
    "gelu_tanh" as v1.1 does; v1.0, the default, is ReLU)."""

    RULES: ClassVar[dict[str, Rule]] = {
        "relative_attention_buckets": _AT_LEAST_ONE,
        "num_decoder_layers": _DEPTH,
    }
    relative_attention_buckets: int = 32
    num_decoder_layers: int = 0
    gated_feed_forward: bool = False


@dataclasses.dataclass(frozen=True)
class ElectraSettings(ModelSettings):
    """ELECTRA (Clark et al. 2020, Table 6): the generator's width as a fraction of the
    discriminator's (1/4 for Small and Large, 1/3 for Base) and the discriminator's loss weight
    (lambda = 50)."""

    RULES: ClassVar[dict[str, Rule]] = {
        "generator_size": (lambda x: 0 < x <= 1, "must be in (0, 1]"),
        "discriminator_weight": (lambda x: 0 < x < math.inf, "must be finite and > 0"),
    }
    generator_size: float = 0.25
    discriminator_weight: float = 50.0


def _main_loss(sums: dict, settings: ModelSettings) -> jax.Array:
    return _mean(sums)


@dataclasses.dataclass(frozen=True)
class Task:
    """An objective's model and losses.

    Attributes:
      build: (the shared `TransformerConfig`, the family's settings, rngs) -> the model.
      sums: (model, batch, key, deterministic, rngs) -> sums of every head.
      loss: (sums, settings) -> the scalar training loss.
      settings: the family's own settings (`config.model_options`).
      model_defaults: `config.model` fields whose default differs for this family.
    """

    build: Callable[[TransformerConfig, ModelSettings, nnx.Rngs], nnx.Module]
    sums: Callable[..., dict[str, jax.Array]]
    loss: Callable[[dict, ModelSettings], jax.Array] = _main_loss
    settings: type[ModelSettings] = ModelSettings
    model_defaults: dict[str, Any] = dataclasses.field(default_factory=dict)


def _lm_sums(model, batch, key, deterministic, rngs):
    """LM head on the sparse layout (masked LM), on MPNet's query stream, or on every position
    (causal / prefix LM)."""
    run = dict(deterministic=deterministic, rngs=rngs)
    if isinstance(batch, TwoStreamBatch):
        query = (batch.query_inputs, batch.query_positions, batch.query_attention)
        logits = model.query_stream(*encoder_inputs(batch), *query, **run)
    else:
        logits = model(*encoder_inputs(batch), batch.masked_positions, **run)
    if batch.masked_positions is not None:
        return weighted_cross_entropy(logits, batch.masked_targets, batch.masked_weights)
    return weighted_cross_entropy(logits, batch.targets, batch.loss_weights)


def _span_sums(model, batch, key, deterministic, rngs):
    boundaries = (batch.sbo_left, batch.sbo_right, batch.sbo_offsets)
    mlm, sbo = model(
        *encoder_inputs(batch),
        batch.masked_positions,
        boundaries,
        deterministic=deterministic,
        rngs=rngs,
    )
    return {
        **weighted_cross_entropy(mlm, batch.masked_targets, batch.masked_weights),
        **_prefixed("sbo_", weighted_cross_entropy(sbo, batch.masked_targets, batch.sbo_weights)),
    }


def _xlnet_sums(model, batch, key, deterministic, rngs):
    logits, _ = model(
        *encoder_inputs(batch),
        query_positions=batch.query_positions,
        query_attention=batch.query_attention,
        masked_positions=batch.masked_positions,
        deterministic=deterministic,
        rngs=rngs,
    )
    return weighted_cross_entropy(logits, batch.masked_targets, batch.masked_weights)


def _electra_sums(model, batch, key, deterministic, rngs):
    run = dict(deterministic=deterministic, rngs=rngs)
    generator_logits = model.generator(*encoder_inputs(batch), batch.masked_positions, **run)
    # Replacements sampled from the generator, no gradient through the sampling.
    replaced = electra_replace(key, batch, jax.lax.stop_gradient(generator_logits))
    logits = model.discriminator(*encoder_inputs(replaced), **run)
    bce = optax.sigmoid_binary_cross_entropy(logits, replaced.labels)
    correct = ((logits > 0) == (replaced.labels > 0)).astype(jnp.float32)
    return {
        **weighted_cross_entropy(generator_logits, batch.masked_targets, batch.masked_weights),
        "rtd_nll_sum": (bce * replaced.loss_weights).sum(),
        "rtd_correct_sum": (correct * replaced.loss_weights).sum(),
        "rtd_weight_sum": replaced.loss_weights.sum(),
    }


def _sentence_pair_sums(model, batch, key, deterministic, rngs):
    """BERT's pretraining heads: masked LM and the sentence-level label (NSP, SOP, SSO)."""
    mlm, sentence = model(
        *encoder_inputs(batch), batch.masked_positions, deterministic=deterministic, rngs=rngs
    )
    return {
        **weighted_cross_entropy(mlm, batch.masked_targets, batch.masked_weights),
        **_prefixed(
            "sentence_",
            weighted_cross_entropy(sentence, batch.sentence_labels, batch.sentence_weights),
        ),
    }


def _sentence_pair_task(labels: int) -> Task:
    return Task(
        lambda cfg, settings, rngs: EncoderForPreTraining(cfg, labels, rngs=rngs),
        _sentence_pair_sums,
        lambda sums, settings: _mean(sums) + _mean(sums, "sentence_"),
    )


def _seq2seq_sums(model, batch, key, deterministic, rngs):
    logits = model(*seq2seq_inputs(batch), deterministic=deterministic, rngs=rngs)
    return weighted_cross_entropy(logits, batch.decoder_targets, batch.decoder_loss_weights)


def _seq2seq(family: str) -> Callable[[TransformerConfig, ModelSettings, nnx.Rngs], nnx.Module]:
    def build(cfg: TransformerConfig, settings, rngs: nnx.Rngs) -> EncoderDecoder:
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        family_fields = dataclasses.asdict(settings)
        family_fields["num_decoder_layers"] = family_fields["num_decoder_layers"] or None
        return EncoderDecoder(
            Seq2SeqConfig(**{**fields, **family_fields}, family=family), rngs=rngs
        )

    return build


def _encoder(cfg: TransformerConfig, settings, rngs: nnx.Rngs) -> EncoderForMaskedLM:
    return EncoderForMaskedLM(cfg, rngs=rngs)


def _mpnet(cfg: TransformerConfig, settings: MPNetSettings, rngs: nnx.Rngs) -> EncoderForMaskedLM:
    cfg = dataclasses.replace(cfg, relative_attention_buckets=settings.relative_attention_buckets)
    return EncoderForMaskedLM(cfg, head_activation="gelu", rngs=rngs)


def _electra(cfg: TransformerConfig, settings: ElectraSettings, rngs: nnx.Rngs) -> Electra:
    return Electra(cfg, generator_config(cfg, settings.generator_size), rngs=rngs)


# The model and losses of each `lm_jax.objectives.registry.Model`.
TASKS: dict[Model, Task] = {
    Model.MASKED_LM: Task(_encoder, _lm_sums),
    Model.MPNET: Task(_mpnet, _lm_sums, settings=MPNetSettings),
    Model.SPAN_BOUNDARY: Task(
        lambda cfg, settings, rngs: EncoderForSpanBoundary(cfg, rngs=rngs),
        _span_sums,
        lambda sums, settings: _mean(sums) + _mean(sums, "sbo_"),
    ),
    Model.REPLACED_TOKEN: Task(
        _electra,
        _electra_sums,
        lambda sums, settings: _mean(sums) + settings.discriminator_weight * _mean(sums, "rtd_"),
        settings=ElectraSettings,
    ),
    Model.TWO_STREAM: Task(lambda cfg, settings, rngs: XLNet(cfg, rngs=rngs), _xlnet_sums),
    Model.T5: Task(
        _seq2seq("t5"), _seq2seq_sums, settings=T5Settings, model_defaults={"activation": "relu"}
    ),
    Model.BART: Task(_seq2seq("bart"), _seq2seq_sums, settings=BARTSettings),
    Model.NEXT_SENTENCE: _sentence_pair_task(2),
    Model.SENTENCE_STRUCTURE: _sentence_pair_task(3),
}


def task_of(objective: str) -> Task:
    """The model and losses that objective `objective` trains (its spec's `model`)."""
    return TASKS[objectives.spec(objective).model]


def check_setting_names(objective: str, names) -> None:
    """A `ConfigError` for the first of `names` that the model `objective` trains lacks,
    naming the settings it accepts."""
    accepted = list(task_of(objective).settings.defaults())
    unknown = sorted(set(names) - set(accepted))
    if unknown:
        model = objectives.spec(objective).model.value
        raise ConfigError(
            f"{unknown[0]} is not a setting of the {model} model that {objective!r} trains; it "
            f"accepts {accepted or 'none'}"
        )


def model_settings(objective: str, values: dict[str, Any]) -> ModelSettings:
    """The settings of the model `objective` trains from `config.model_options` values
    (unknown names refused by `check_setting_names`)."""
    check_setting_names(objective, values)
    return task_of(objective).settings(**values)


def apply_objective(
    spec: ObjectiveSpec, options: dict, vocab: VocabInfo, key: jax.Array, rows: dict
) -> Batch:
    """The objective's batch from `rows`: `tokens`, `segment_ids` and the features of
    `spec.inputs` that the rows hold (word starts, sentence starts, entity or language ids)."""
    inputs = {k: rows[k] for k in spec.inputs if k in rows}
    objective = objectives.get(spec.name)
    return objective(
        key, rows["tokens"], vocab=vocab, segment_ids=rows["segment_ids"], **options, **inputs
    )


def step_task(
    objective: str, options: dict, vocab: VocabInfo, settings: ModelSettings | None = None
) -> StepTask:
    """The train / eval step's task for one objective with its options and its model's
    settings (None: the family's defaults)."""
    spec = objectives.spec(objective)
    task = TASKS[spec.model]
    settings = task.settings() if settings is None else settings
    prepare = functools.partial(apply_objective, spec, dict(options), vocab)
    return StepTask(
        prepare=prepare, sums=task.sums, loss=functools.partial(task.loss, settings=settings)
    )
