"""Attention masks as pictures: the dense masks an objective's compact description expands to
(`lm_jax.objectives.dense_attention_mask`), one panel per stream or attention."""

from __future__ import annotations

import numpy as np

from lm_jax.batch import Seq2SeqBatch, TwoStreamBatch
from lm_jax.data.tokenizer import Tokenizer

LABELLED = 64  # rows longer than this are drawn without token labels


def attention_panels(batch, row: int = 0) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray]]:
    """(title, mask [queries, keys], query ids, key ids) of each attention of the row:
    content and query streams for two-stream batches; encoder, decoder and cross attention
    for seq2seq batches; else the one mask."""
    inputs = np.asarray(batch.inputs)[row]
    if isinstance(batch, TwoStreamBatch):
        queries = np.asarray(batch.query_inputs)[row]
        return [
            ("content stream", np.asarray(batch.attention.dense())[row], inputs, inputs),
            ("query stream", np.asarray(batch.query_attention.dense())[row], queries, inputs),
        ]
    if isinstance(batch, Seq2SeqBatch):
        decoder = np.asarray(batch.decoder_inputs)[row]
        causal = np.asarray(batch.decoder_attention.dense())[row]
        return [
            ("encoder", np.asarray(batch.attention.dense())[row], inputs, inputs),
            ("decoder (causal)", causal, decoder, decoder),
            ("cross attention", np.asarray(batch.cross_attention.dense())[row], decoder, inputs),
        ]
    return [("attention", np.asarray(batch.attention.dense())[row], inputs, inputs)]


def plot_attention(batch, row: int = 0, tokenizer: Tokenizer | None = None):
    """A matplotlib figure of the row's attention masks (`attention_panels`): a filled cell
    where the query (row) may attend to the key (column); with `tokenizer`, token labels on
    both axes for rows of up to LABELLED tokens."""
    from matplotlib.figure import Figure

    panels = attention_panels(batch, row)
    figure = Figure(figsize=(5 * len(panels), 5), layout="constrained")
    for k, (title, mask, query_ids, key_ids) in enumerate(panels):
        ax = figure.add_subplot(1, len(panels), k + 1)
        ax.imshow(mask, cmap="Blues", vmin=0, vmax=1, interpolation="nearest")
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("key")
        ax.set_ylabel("query")
        if tokenizer is not None and max(mask.shape) <= LABELLED:
            ax.set_xticks(range(len(key_ids)), [tokenizer.id_to_piece(int(i)) for i in key_ids])
            ax.set_yticks(range(len(query_ids)), [tokenizer.id_to_piece(int(i)) for i in query_ids])
            ax.tick_params(axis="x", labelrotation=90, labelsize=6)
            ax.tick_params(axis="y", labelsize=6)
    return figure
