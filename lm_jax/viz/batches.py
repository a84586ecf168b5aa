"""A batch's tokens by role: what each objective did to its row and what it predicts there.

`show_batch` reads only what an objective returned (and the tokenizer): predicted positions
and their targets from the sparse slots (`masked_positions`) or the dense `loss_weights`,
[MASK] / sentinel ids from the vocabulary, the query stream of two-stream batches, ELECTRA's
replaced-token labels, the decoder side of seq2seq batches (aligned with the encoder input to
show what BART deleted or inserted), and document boundaries from the segment ids.
"""

from __future__ import annotations

import dataclasses
import difflib
import html

import numpy as np

from lm_jax.batch import (
    ReplacedTokenBatch,
    SentencePairBatch,
    Seq2SeqBatch,
    SpanBatch,
    TwoStreamBatch,
)
from lm_jax.data.tokenizer import Tokenizer

# role -> (colour, what it means); the order of the legend
ROLES = {
    "unchanged": ("#eeeeee", "as it was, not predicted"),
    "special": ("#bdbdbd", "[CLS] / [SEP] / <s> / </s>"),
    "mask": ("#4c72b0", "[MASK], predicted"),
    "masked": ("#9ecae1", "[MASK] in the input, predicted elsewhere (decoder, query stream)"),
    "random": ("#dd8452", "replaced by a random token, predicted"),
    "kept": ("#55a868", "kept as it was, predicted"),
    "span": ("#8172b3", "[MASK] inside a masked span, predicted"),
    "next": ("#c44e52", "predicts the next token"),
    "query": ("#da8bc3", "predicted by the query stream (two-stream attention)"),
    "replaced": ("#ccb974", "replaced by the generator (ELECTRA's label 1)"),
    "sentinel": ("#64b5cd", "a T5 sentinel, standing for a dropped span"),
    "target": ("#8da0cb", "a decoder target"),
    "deleted": ("#e78ac3", "a decoder target missing from the encoder input"),
    "inserted": ("#a6d854", "in the encoder input but not in the decoder's targets"),
    "padding": ("#ffffff", "padding"),
}


@dataclasses.dataclass(frozen=True)
class Token:
    text: str  # the piece
    role: str  # a key of ROLES
    target: str  # the piece predicted here ("" where nothing is)
    document: int  # the segment id (0 = padding)


@dataclasses.dataclass(frozen=True)
class BatchView:
    """One row of a batch, drawn: `lines` are (label, tokens) (the input, and the decoder's
    targets for seq2seq batches). Shown as HTML in notebooks; `figure()` for files."""

    title: str
    lines: tuple[tuple[str, tuple[Token, ...]], ...]

    def roles(self, line: int = 0) -> list[str]:
        return [t.role for t in self.lines[line][1]]

    def _repr_html_(self) -> str:
        return batch_html(self)

    def figure(self, tokens_per_line: int = 16):
        """A matplotlib figure: each line's tokens as coloured boxes (`tokens_per_line` to a
        row of the picture), the predicted piece under each, a bar at document boundaries."""
        return batch_figure(self, tokens_per_line)


def show_batch(batch, tokenizer: Tokenizer, row: int = 0, title: str = "") -> BatchView:
    """Row `row` of an objective's batch, every token with its role (`ROLES`) and target;
    `title` names it (default: the batch's kind)."""
    view = _view(batch, tokenizer, row)
    return dataclasses.replace(view, title=title or view.title)


def _view(batch, tokenizer: Tokenizer, row: int) -> BatchView:
    vocab = tokenizer.vocab
    piece = tokenizer.id_to_piece
    if isinstance(batch, Seq2SeqBatch):
        return _seq2seq_view(batch, tokenizer, row)
    inputs = np.asarray(batch.inputs)[row]
    segments = np.asarray(batch.segment_ids)[row]
    if isinstance(batch, ReplacedTokenBatch):
        labels = np.asarray(batch.labels)[row]
        roles = [
            "replaced" if label else _plain(i, s, vocab)
            for i, s, label in zip(inputs, segments, labels)
        ]
        tokens = _tokens(inputs, roles, segments, piece)
        return BatchView("replaced-token detection (ELECTRA)", (("input", tokens),))
    targets = _predicted(batch, row)
    causal = _causal_positions(batch, row) if batch.masked_positions is None else set()
    tokens = []
    for t, (i, s) in enumerate(zip(inputs, segments)):
        if t not in targets:
            role = _plain(i, s, vocab)
        elif isinstance(batch, TwoStreamBatch):
            role = "query"
        elif t in causal and i != vocab.mask_id:
            role = "next"
        elif i == vocab.mask_id:
            role = "span" if isinstance(batch, SpanBatch) else "mask"
        else:
            role = "kept" if i == targets[t] else "random"
        target = piece(int(targets[t])) if t in targets else ""
        tokens.append(Token(piece(int(i)), role, target, int(s)))
    title = {TwoStreamBatch: "two-stream", SpanBatch: "span masking"}.get(type(batch), "")
    title = title or ("next-token prediction" if causal & set(targets) else "masked tokens")
    if isinstance(batch, SentencePairBatch):
        title += f" (sentence label {int(np.asarray(batch.sentence_labels)[row])})"
    return BatchView(title, (("input", tuple(tokens)),))


def _plain(token: int, segment: int, vocab) -> str:
    if segment == 0:
        return "padding"
    if token in vocab.sentinel_ids:
        return "sentinel"
    if token in (vocab.cls_id, vocab.sep_id, vocab.bos_id, vocab.eos_id):
        return "special"
    return "masked" if token == vocab.mask_id else "unchanged"


def _predicted(batch, row: int) -> dict[int, int]:
    """position -> target id of every scored prediction of the row."""
    if batch.masked_positions is not None:
        slots = zip(
            np.asarray(batch.masked_positions)[row],
            np.asarray(batch.masked_targets)[row],
            np.asarray(batch.masked_weights)[row],
        )
        return {int(p): int(t) for p, t, w in slots if w > 0}
    weights, targets = np.asarray(batch.loss_weights)[row], np.asarray(batch.targets)[row]
    return {int(t): int(targets[t]) for t in np.flatnonzero(weights > 0)}


def _causal_positions(batch, row: int) -> set[int]:
    """Positions that cannot see the next position of their document (the last one of a
    document: as the one before it): their dense target is the next token."""
    mask = np.asarray(batch.attention.dense())[row]
    segments = np.asarray(batch.segment_ids)[row]
    causal: set[int] = set()
    for t in range(len(segments)):
        if t + 1 < len(segments) and segments[t + 1] == segments[t]:
            if not mask[t, t + 1]:
                causal.add(t)
        elif t and segments[t - 1] == segments[t] and t - 1 in causal:
            causal.add(t)
    return causal


def _seq2seq_view(batch: Seq2SeqBatch, tokenizer: Tokenizer, row: int) -> BatchView:
    vocab, piece = tokenizer.vocab, tokenizer.id_to_piece
    inputs, segments = np.asarray(batch.inputs)[row], np.asarray(batch.segment_ids)[row]
    targets = np.asarray(batch.decoder_targets)[row]
    weights = np.asarray(batch.decoder_loss_weights)[row]
    dec_segments = np.asarray(batch.decoder_segment_ids)[row]
    enc_roles = [_plain(i, s, vocab) for i, s in zip(inputs, segments)]
    dec_roles = [
        "sentinel" if t in vocab.sentinel_ids else ("target" if w > 0 else "padding")
        for t, w in zip(targets, weights)
    ]
    real_in = [t for t in range(len(inputs)) if segments[t]]
    real_out = [t for t in range(len(targets)) if weights[t] > 0]
    matcher = difflib.SequenceMatcher(
        None, [int(inputs[t]) for t in real_in], [int(targets[t]) for t in real_out], False
    )
    blocks = matcher.get_matching_blocks()
    if sum(b.size for b in blocks) >= 0.5 * max(1, len(real_out)):  # a reconstruction (BART)
        kept_in = {real_in[b.a + k] for b in blocks for k in range(b.size)}
        kept_out = {real_out[b.b + k] for b in blocks for k in range(b.size)}
        for t in real_in:
            if t not in kept_in and enc_roles[t] == "unchanged":
                enc_roles[t] = "inserted"
        for t in real_out:
            if t not in kept_out and dec_roles[t] == "target":
                dec_roles[t] = "deleted"
    encoder = _tokens(inputs, enc_roles, segments, piece)
    decoder = _tokens(targets, dec_roles, dec_segments, piece)
    lines = (("encoder input", encoder), ("decoder targets", decoder))
    return BatchView("encoder-decoder denoising", lines)


def _tokens(ids, roles, segments, piece) -> tuple[Token, ...]:
    return tuple(Token(piece(int(i)), r, "", int(s)) for i, r, s in zip(ids, roles, segments))


def _legend(view: BatchView) -> list[str]:
    used = {t.role for _, tokens in view.lines for t in tokens}
    return [role for role in ROLES if role in used and role != "padding"]


def batch_html(view: BatchView) -> str:
    """The view as HTML: coloured token boxes, the target under each, a legend."""
    parts = [f"<div style='font-family:monospace'><b>{html.escape(view.title)}</b>"]
    for label, tokens in view.lines:
        parts.append(f"<div style='margin:4px 0'><i>{html.escape(label)}</i><br>")
        previous = None
        for token in tokens:
            if token.role == "padding":
                continue
            if previous is not None and token.document != previous:
                parts.append("<span style='border-left:3px solid black;margin:0 3px'></span>")
            previous = token.document
            colour, meaning = ROLES[token.role]
            target = html.escape(token.target) or "&nbsp;"
            parts.append(
                f"<span title='{html.escape(meaning)}' style='display:inline-block;"
                f"text-align:center;margin:1px'><span style='background:{colour};"
                f"padding:1px 3px'>{html.escape(token.text)}</span><br>"
                f"<span style='font-size:80%;color:#555'>{target}</span></span>"
            )
        parts.append("</div>")
    legend = " ".join(
        f"<span style='background:{ROLES[r][0]};padding:1px 4px'>{r}</span> {ROLES[r][1]};"
        for r in _legend(view)
    )
    parts.append(f"<div style='font-size:80%'>{legend}</div></div>")
    return "".join(parts)


def batch_figure(view: BatchView, tokens_per_line: int = 16):
    """The view as a matplotlib figure (see `BatchView.figure`)."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch, Rectangle

    rows = []  # (label or None, tokens) per line of the picture
    for label, tokens in view.lines:
        shown = [t for t in tokens if t.role != "padding"]
        for start in range(0, max(1, len(shown)), tokens_per_line):
            rows.append((label if start == 0 else "", shown[start : start + tokens_per_line]))
    figure = Figure(figsize=(tokens_per_line * 0.9, 0.9 * len(rows) + 1.2))
    ax = figure.add_subplot()
    for y, (label, tokens) in enumerate(rows):
        top = -1.6 * y
        if label:
            ax.text(-0.2, top, label, ha="right", va="center", fontsize=8, style="italic")
        for x, token in enumerate(tokens):
            ax.add_patch(Rectangle((x, top - 0.4), 0.95, 0.8, color=ROLES[token.role][0]))
            ax.text(x + 0.475, top, token.text[:8], ha="center", va="center", fontsize=7)
            ax.text(x + 0.475, top - 0.7, token.target[:8], ha="center", va="center", fontsize=6)
            if x and token.document != tokens[x - 1].document:
                ax.plot([x - 0.025] * 2, [top - 0.5, top + 0.5], color="black", linewidth=2)
    ax.set_xlim(-2.5, tokens_per_line)
    ax.set_ylim(-1.6 * len(rows) + 0.6, 0.8)
    ax.axis("off")
    ax.set_title(view.title, fontsize=9)
    handles = [Patch(color=ROLES[r][0], label=r) for r in _legend(view)]
    ax.legend(handles=handles, loc="upper center", bbox_to_anchor=(0.5, 0.0), ncol=6, fontsize=7)
    return figure
