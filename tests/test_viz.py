"""lm_jax.viz: every registered objective drawn, its pictures equal to its dense masks, and
every token's role read from what the objective did to its row."""

import collections

import jax
import numpy as np
import pytest

import lm_jax.objectives as objectives
from lm_jax.batch import Seq2SeqBatch, TwoStreamBatch
from lm_jax.data.entities import AnnotatedDocument
from lm_jax.data.sources import wikipedia_sample
from lm_jax.data.tokenizer import train_sentencepiece
from lm_jax.data.translation import TranslationPair
from lm_jax.layout import Rows
from lm_jax.viz import ROLES, attention_panels, objective_example, plot_attention, show_batch

TEXTS = [
    "The quick brown fox jumps over the lazy dog. It was not amused at all.",
    "A second document about cats. Cats sleep most of the day. They hunt at night.",
]


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    path = tmp_path_factory.mktemp("viz") / "tok.model"
    return train_sentencepiece(wikipedia_sample()[:60], path, vocab_size=1500, extra_ids=20)


def items_for(name: str):
    rows = objectives.spec(name).rows
    if rows is Rows.ENTITIES:
        return [AnnotatedDocument(TEXTS[0], ((4, 15), (16, 19))), AnnotatedDocument(TEXTS[1], ())]
    if rows is Rows.PAIRS:
        return [
            TranslationPair("the cat sleeps", "le chat dort", "fr"),
            TranslationPair("good morning", "guten Morgen", "de"),
        ]
    return TEXTS


def dense_masks(batch) -> list[np.ndarray]:
    """The row-0 masks `plot_attention` must draw, straight from the batch."""
    if isinstance(batch, Seq2SeqBatch):
        masks = [batch.attention, batch.decoder_attention, batch.cross_attention]
        return [np.asarray(m.dense())[0] for m in masks]
    dense = objectives.dense_attention_mask(batch)
    return [np.asarray(m)[0] for m in (dense if isinstance(dense, tuple) else (dense,))]


def predictions(batch) -> int:
    if batch.masked_positions is not None:
        return int((np.asarray(batch.masked_weights)[0] > 0).sum())
    return int((np.asarray(batch.loss_weights)[0] > 0).sum())


@pytest.mark.parametrize("name", objectives.names())
def test_every_objective_is_drawn_as_its_dense_masks(name, tokenizer):
    batch, rows = objective_example(name, items_for(name), tokenizer, seq_len=32, seed=1)
    figure = plot_attention(batch, 0, tokenizer)
    expected = dense_masks(batch)
    assert len(figure.axes) == len(expected) == len(attention_panels(batch))
    for ax, mask in zip(figure.axes, expected):
        np.testing.assert_array_equal(np.asarray(ax.images[0].get_array()), mask)
    view = show_batch(batch, tokenizer, title=name)
    assert view.title == name and set(view.roles()) <= set(ROLES)
    shown = [t for t in view.lines[0][1] if t.role != "padding"]
    assert len(view.figure().axes[0].patches) == sum(
        len([t for t in tokens if t.role != "padding"]) for _, tokens in view.lines
    )
    html = view._repr_html_()
    assert all(t.text.replace("<", "&lt;").replace(">", "&gt;") in html for t in shown)
    if isinstance(batch, Seq2SeqBatch):
        decoder = collections.Counter(view.roles(1))
        assert decoder["target"] + decoder["sentinel"] + decoder["deleted"] > 0
    else:  # every prediction has a predicting role and its target under it
        predicting = {"mask", "random", "kept", "span", "next", "query"}
        assert sum(r in predicting for r in view.roles()) == predictions(batch) > 0
        assert all(bool(t.target) == (t.role in predicting) for t in view.lines[0][1])


def test_masked_lm_roles_follow_the_original_row(tokenizer):
    """[MASK], random replacement and kept-but-predicted, read against the row before masking."""
    batch, rows = objective_example("mlm", TEXTS * 8, tokenizer, seq_len=32, seed=3)
    vocab, seen = tokenizer.vocab, collections.Counter()
    for row in range(len(rows["tokens"])):
        view = show_batch(batch, tokenizer, row)
        original, inputs = rows["tokens"][row], np.asarray(batch.inputs)[row]
        for t, token in enumerate(view.lines[0][1]):
            seen[token.role] += 1
            if token.role == "mask":
                assert inputs[t] == vocab.mask_id and token.target == tokenizer.id_to_piece(
                    int(original[t])
                )
            elif token.role == "kept":
                assert inputs[t] == original[t]
            elif token.role == "random":
                assert inputs[t] not in (original[t], vocab.mask_id)
            elif token.role == "unchanged":
                assert inputs[t] == original[t]
    assert seen["mask"] > 4 * seen["random"] > 0 and seen["kept"] > 0


def test_t5_sentinels_and_bart_deletions(tokenizer):
    t5, _ = objective_example("t5", TEXTS, tokenizer, seq_len=32, seed=0)
    view = show_batch(t5, tokenizer)
    assert 0 < view.roles(0).count("sentinel") == view.roles(1).count("sentinel")
    bart, rows = objective_example("bart", TEXTS, tokenizer, seq_len=32, seed=0)
    view = show_batch(bart, tokenizer)
    assert "masked" in view.roles(0) and "deleted" in view.roles(1)  # the infilled span
    assert view.roles(1).count("target") + view.roles(1).count("deleted") == int(
        np.asarray(bart.decoder_loss_weights)[0].sum()
    )


def test_two_stream_and_replaced_token_batches(tokenizer):
    plm, _ = objective_example("plm", TEXTS, tokenizer, seq_len=32, seed=0)
    assert isinstance(plm, TwoStreamBatch)
    assert show_batch(plm, tokenizer).roles().count("query") == predictions(plm)
    mlm, _ = objective_example("mlm", TEXTS, tokenizer, seq_len=32, seed=0)
    logits = jax.random.normal(jax.random.key(1), (*mlm.masked_targets.shape, 1500))
    replaced = objectives.electra_replace(jax.random.key(2), mlm, logits)
    roles = show_batch(replaced, tokenizer).roles()
    assert roles.count("replaced") == int(np.asarray(replaced.labels)[0].sum()) > 0
