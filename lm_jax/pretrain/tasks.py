"""What each objective trains: the model its spec names and how its batch becomes losses.

A task's `sums` returns sums (not means) so that metrics over several batches combine exactly:
`nll_sum` / `correct_sum` / `weight_sum` for the main prediction head (masked, next or decoder
tokens: the loss compared with the unigram baseline), and the same three with a prefix for
every other head (`sbo_`, `rtd_`). `loss` turns one batch's sums into the training loss.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from lm_jax import objectives
from lm_jax.batch import Batch
from lm_jax.models.config import TransformerConfig
from lm_jax.models.electra import Electra
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

# ELECTRA's discriminator loss weight (Clark et al. 2020, lambda = 50).
ELECTRA_DISCRIMINATOR_WEIGHT = 50.0


def _mean(sums: dict, prefix: str = "") -> jax.Array:
    return sums[f"{prefix}nll_sum"] / (sums[f"{prefix}weight_sum"] + 1e-5)


def _prefixed(prefix: str, sums: dict) -> dict:
    return {f"{prefix}{k}": v for k, v in sums.items()}


@dataclasses.dataclass(frozen=True)
class Task:
    """An objective's model and losses.

    Attributes:
      build: the model from the shared `TransformerConfig` (families adapt it).
      sums: (model, batch, key, deterministic, rngs) -> sums of every head.
      loss: sums -> the scalar training loss.
    """

    build: Callable[[TransformerConfig, nnx.Rngs], nnx.Module]
    sums: Callable[..., dict[str, jax.Array]]
    loss: Callable[[dict], jax.Array] = _mean


def _lm_sums(model, batch, key, deterministic, rngs):
    """LM head on the sparse layout (masked LM, MPNet's query stream) or on every position
    (causal / prefix LM)."""
    logits = model(batch, deterministic=deterministic, rngs=rngs)
    if batch.masked_positions is not None:
        return weighted_cross_entropy(logits, batch.masked_targets, batch.masked_weights)
    return weighted_cross_entropy(logits, batch.targets, batch.loss_weights)


def _span_sums(model, batch, key, deterministic, rngs):
    mlm, sbo = model(batch, deterministic=deterministic, rngs=rngs)
    return {
        **weighted_cross_entropy(mlm, batch.masked_targets, batch.masked_weights),
        **_prefixed("sbo_", weighted_cross_entropy(sbo, batch.masked_targets, batch.sbo_weights)),
    }


def _xlnet_sums(model, batch, key, deterministic, rngs):
    logits, _ = model(batch, deterministic=deterministic, rngs=rngs)
    return weighted_cross_entropy(logits, batch.masked_targets, batch.masked_weights)


def _electra_sums(model, batch, key, deterministic, rngs):
    generator_logits = model.generator(batch, deterministic=deterministic, rngs=rngs)
    # Replacements sampled from the generator, no gradient through the sampling.
    replaced = electra_replace(key, batch, jax.lax.stop_gradient(generator_logits))
    logits = model.discriminator(replaced, deterministic=deterministic, rngs=rngs)
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
    mlm, sentence = model(batch, deterministic=deterministic, rngs=rngs)
    return {
        **weighted_cross_entropy(mlm, batch.masked_targets, batch.masked_weights),
        **_prefixed(
            "sentence_",
            weighted_cross_entropy(sentence, batch.sentence_labels, batch.sentence_weights),
        ),
    }


def _sentence_pair_task(labels: int) -> Task:
    return Task(
        lambda cfg, rngs: EncoderForPreTraining(cfg, labels, rngs=rngs),
        _sentence_pair_sums,
        lambda s: _mean(s) + _mean(s, "sentence_"),
    )


def _seq2seq_sums(model, batch, key, deterministic, rngs):
    logits = model(batch, deterministic=deterministic, rngs=rngs)
    return weighted_cross_entropy(logits, batch.decoder_targets, batch.decoder_loss_weights)


def _seq2seq(family: str) -> Callable[[TransformerConfig, nnx.Rngs], nnx.Module]:
    def build(cfg: TransformerConfig, rngs: nnx.Rngs) -> EncoderDecoder:
        fields = {f.name: getattr(cfg, f.name) for f in dataclasses.fields(cfg)}
        if family == "t5":
            fields.update(relative_attention_buckets=32, activation="relu")
        return EncoderDecoder(Seq2SeqConfig(**fields, family=family), rngs=rngs)

    return build


def _encoder(cfg: TransformerConfig, rngs: nnx.Rngs) -> EncoderForMaskedLM:
    return EncoderForMaskedLM(cfg, rngs=rngs)


def _mpnet(cfg: TransformerConfig, rngs: nnx.Rngs) -> EncoderForMaskedLM:
    cfg = dataclasses.replace(cfg, relative_attention_buckets=32)
    return EncoderForMaskedLM(cfg, head_activation="gelu", rngs=rngs)


# The model and losses of each `lm_jax.objectives.registry.Model`.
TASKS: dict[Model, Task] = {
    Model.MASKED_LM: Task(_encoder, _lm_sums),
    Model.MPNET: Task(_mpnet, _lm_sums),
    Model.SPAN_BOUNDARY: Task(
        lambda cfg, rngs: EncoderForSpanBoundary(cfg, rngs=rngs),
        _span_sums,
        lambda s: _mean(s) + _mean(s, "sbo_"),
    ),
    Model.REPLACED_TOKEN: Task(
        lambda cfg, rngs: Electra(cfg, rngs=rngs),
        _electra_sums,
        lambda s: _mean(s) + ELECTRA_DISCRIMINATOR_WEIGHT * _mean(s, "rtd_"),
    ),
    Model.TWO_STREAM: Task(lambda cfg, rngs: XLNet(cfg, rngs=rngs), _xlnet_sums),
    Model.T5: Task(_seq2seq("t5"), _seq2seq_sums),
    Model.BART: Task(_seq2seq("bart"), _seq2seq_sums),
    Model.NEXT_SENTENCE: _sentence_pair_task(2),
    Model.SENTENCE_STRUCTURE: _sentence_pair_task(3),
}


def task_of(objective: str) -> Task:
    """The model and losses that objective `objective` trains (its spec's `model`)."""
    return TASKS[objectives.spec(objective).model]


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


def step_task(objective: str, options: dict, vocab: VocabInfo) -> StepTask:
    """The train / eval step's task for one objective with its options."""
    spec = objectives.spec(objective)
    task = TASKS[spec.model]
    prepare = functools.partial(apply_objective, spec, dict(options), vocab)
    return StepTask(prepare=prepare, sums=task.sums, loss=task.loss)
