"""The fine-tuning heads' steps: how rows become model inputs, the loss (cross-entropy for
classification, squared error for regression, as Hugging Face's `...ForSequenceClassification`;
the mean of the start and end cross-entropies for extractive QA, as `...ForQuestionAnswering`),
the outputs kept for evaluation, and layer-wise learning-rate decay."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from lm_jax.attention import AttentionMask
from lm_jax.finetune.data import REGRESSION
from lm_jax.layout import positions_from_segments
from lm_jax.train.losses import weighted_cross_entropy
from lm_jax.train.step import StepTask


def model_inputs(rows: dict) -> tuple:
    """(ids, positions, bidirectional mask, token types) of encoded rows."""
    segments = rows["segment_ids"]
    return (
        rows["input_ids"],
        positions_from_segments(segments),
        AttentionMask.bidirectional(segments),
        rows["token_type_ids"],
    )


def sequence_sums(task: str):
    """The step's sums for a sequence-level head: `nll_sum` (cross-entropy or squared error),
    `weight_sum`, and for classification `correct_sum`."""

    def sums(model, rows, key, deterministic, rngs):
        logits = model(*model_inputs(rows), deterministic=deterministic, rngs=rngs)
        weights = rows["weights"]
        if task == REGRESSION:
            error = (logits[..., 0] - rows["labels"]) ** 2
            return {"nll_sum": (error * weights).sum(), "weight_sum": weights.sum()}
        return weighted_cross_entropy(logits, rows["labels"], weights)

    return sums


def mean_loss(sums: dict) -> jax.Array:
    """The mean over the batch's examples (Hugging Face's `CrossEntropyLoss` / `MSELoss`)."""
    return sums["nll_sum"] / jnp.maximum(sums["weight_sum"], 1.0)


def sequence_task(task: str) -> StepTask:
    return StepTask(prepare=lambda key, rows: rows, sums=sequence_sums(task), loss=mean_loss)


def predict_logits(model: nnx.Module, rows: dict) -> jax.Array:
    return model(*model_inputs(rows))


def span_inputs(rows: dict) -> tuple:
    """(ids, positions, mask, token types) of QA windows: one segment per row, the padding
    positions computed too (they attend to the real tokens, at the rows' `positions`), as
    Hugging Face's `...ForQuestionAnswering` computes them; its loss's softmax covers them."""
    mask = AttentionMask.key_padding(rows["segment_ids"])
    return rows["input_ids"], rows["positions"], mask, rows["token_type_ids"]


def span_sums(model, rows, key, deterministic, rngs) -> dict:
    """`nll_sum`: per window, (start cross-entropy + end cross-entropy) / 2 over all L tokens
    (padding included, as Hugging Face's loss), and `weight_sum`."""
    start, end = model(*span_inputs(rows), deterministic=deterministic, rngs=rngs)
    weights = rows["weights"]
    starts = weighted_cross_entropy(start, rows["start_positions"], weights)
    ends = weighted_cross_entropy(end, rows["end_positions"], weights)
    return {"nll_sum": (starts["nll_sum"] + ends["nll_sum"]) / 2, "weight_sum": weights.sum()}


def span_task() -> StepTask:
    return StepTask(prepare=lambda key, rows: rows, sums=span_sums, loss=mean_loss)


def predict_spans(model: nnx.Module, rows: dict) -> jax.Array:
    """[B, 2, L]: start and end logits."""
    return jnp.stack(model(*span_inputs(rows)), axis=1)


def layer_decay_factors(params: nnx.State, num_layers: int, decay: float) -> nnx.State:
    """Learning-rate factors as ELECTRA's `_get_layer_lrs` (Clark et al. 2020): depth 0 for
    the embeddings (and the encoder's other shared parameters), l + 1 for layer l, L + 2 for
    the task head; factor decay^(L + 2 - depth)."""

    def factor(path, leaf) -> jax.Array:
        names = [str(getattr(p, "key", getattr(p, "idx", getattr(p, "name", p)))) for p in path]
        if names[0] != "encoder":
            depth = num_layers + 2
        elif "layers" in names:
            depth = int(names[names.index("layers") + 1]) + 1
        else:
            depth = 0
        return jnp.asarray(decay ** (num_layers + 2 - depth), leaf.dtype)

    return jax.tree_util.tree_map_with_path(factor, params)
