"""One fine-tuning step against Hugging Face PyTorch: the same weights, batch and AdamW give the
same loss and the same updated parameters (sequence classification, regression, extractive QA);
the exported folders load in `transformers` with the same logits."""

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from lm_jax.finetune.data import FAMILY_LAYOUTS  # noqa: E402
from lm_jax.finetune.qa_data import padded_positions  # noqa: E402
from lm_jax.finetune.tasks import (  # noqa: E402
    predict_logits,
    predict_spans,
    sequence_task,
    span_task,
)
from lm_jax.models.convert import (  # noqa: E402
    from_hf_state_dict,
    hf_config,
    save_hf_checkpoint,
    to_hf_state_dict,
)
from lm_jax.sharding import make_mesh  # noqa: E402
from lm_jax.train.optimizer import make_optimizer  # noqa: E402
from lm_jax.train.settings import train_settings  # noqa: E402
from lm_jax.train.step import make_train_step, place_train_state  # noqa: E402

LR, WEIGHT_DECAY = 1e-3, 0.01


QA = 0  # num_labels of the QA head's tests: start and end logits instead of labels


def hf_classifier(num_labels: int, family: str = "bert"):
    """`<Family>ForSequenceClassification`, or `...ForQuestionAnswering` when num_labels is
    QA; ELECTRA's embeddings narrower than its hidden states, as in ELECTRA-small; RoBERTa's
    position table offset by its padding id 1; XLNet's simple span head (`AutoModelFor...`'s)."""
    torch.manual_seed(0)
    shape = dict(
        vocab_size=120,
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        max_position_embeddings=32,
        hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0,
        num_labels=num_labels or 2,
    )
    kind = "QuestionAnswering" if num_labels == QA else "SequenceClassification"
    if family == "bart":
        config = transformers.BartConfig(
            vocab_size=120,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=64,
            decoder_ffn_dim=64,
            max_position_embeddings=32,
            dropout=0.0,
            attention_dropout=0.0,
            activation_dropout=0.0,
            init_std=0.1,  # at 0.02 the encoder's gradients are below Adam's eps (1e-8)
            num_labels=num_labels or 2,
        )
        return getattr(transformers, f"BartFor{kind}")(config)
    if family == "xlnet":
        config = transformers.XLNetConfig(
            vocab_size=120, d_model=32, n_layer=2, n_head=4, d_inner=37, dropout=0.0
        )
        config.num_labels, config.summary_last_dropout = num_labels or 2, 0.0
        simple = "Simple" if num_labels == QA else ""
        return getattr(transformers, f"XLNetFor{kind}{simple}")(config)
    if family == "electra":
        config = transformers.ElectraConfig(embedding_size=16, **shape)
    elif family == "roberta":
        shape.update(max_position_embeddings=34, type_vocab_size=1)
        config = transformers.RobertaConfig(pad_token_id=1, **shape)
    else:
        config = transformers.BertConfig(**shape)
    return getattr(transformers, f"{family.capitalize()}For{kind}")(config)


def rows(num_labels: int, family: str = "bert") -> dict[str, np.ndarray]:
    """Four rows of 16, 12, 9 and 5 real tokens (XLNet: all 16, whose padding side differs
    from Hugging Face's), two token types (none for RoBERTa and BART; BART's rows run from <s>
    to one </s>, which its classifier reads)."""
    rng = np.random.default_rng(0)
    ids = rng.integers(5, 120, (4, 16)).astype(np.int32)
    lengths = np.array([16, 16, 16, 16] if family == "xlnet" else [16, 12, 9, 5])
    real = np.arange(16)[None] < lengths[:, None]
    ids[~real] = 1 if family in ("roberta", "bart") else 0
    if family == "bart":
        ids[:, 0], ids[np.arange(4), lengths - 1] = 0, 2
    types = ((np.arange(16)[None] >= lengths[:, None] // 2) & real).astype(np.int32)
    labels = None
    if num_labels == 1:
        labels = rng.random(4).astype(np.float32) * 5
    elif num_labels > 1:
        labels = rng.integers(0, num_labels, 4).astype(np.int32)
    out = dict(
        input_ids=ids,
        token_type_ids=types * (family not in ("roberta", "bart")),
        segment_ids=real.astype(np.int32),
        labels=labels,
        weights=np.ones(4, np.float32),
    )
    if num_labels == QA:  # one no-answer span (0, 0) at [CLS]
        del out["labels"]
        out["positions"] = padded_positions(real, FAMILY_LAYOUTS[family])
        out["start_positions"] = np.array([3, 0, 4, 1], np.int32)
        out["end_positions"] = np.array([6, 0, 4, 3], np.int32)
    return out


def peer_inputs(peer, batch) -> dict:
    """The Hugging Face call's arguments (BART takes no token types)."""
    t = lambda k: torch.tensor(np.asarray(batch[k])).long()
    inputs = dict(input_ids=t("input_ids"), attention_mask=t("segment_ids"))
    if peer.config.model_type != "bart":
        inputs["token_type_ids"] = t("token_type_ids")
    return inputs


def torch_step(peer, batch) -> tuple[float, dict]:
    """Hugging Face's recipe: AdamW without decay on biases and LayerNorm weights."""
    norms = ("LayerNorm", "layer_norm", "layernorm")
    no_decay = lambda n: n.endswith("bias") or any(x in n for x in norms)
    groups = [
        {"params": [p for n, p in peer.named_parameters() if not no_decay(n)]},
        {"params": [p for n, p in peer.named_parameters() if no_decay(n)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(
        groups, lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=WEIGHT_DECAY
    )
    t = lambda k: torch.tensor(batch[k]).long()
    if "labels" in batch:
        integer = batch["labels"].dtype == np.int32
        targets = {"labels": t("labels") if integer else torch.tensor(batch["labels"])}
    else:
        targets = {k: t(k) for k in ("start_positions", "end_positions")}
    out = peer(**peer_inputs(peer, batch), **targets)
    out.loss.backward()
    optimizer.step()
    return float(out.loss.detach()), {k: v.detach().numpy() for k, v in peer.state_dict().items()}


def our_step(state_dict, hf_config, batch, task, architecture) -> tuple[float, dict]:
    model = from_hf_state_dict(state_dict, hf_config, architecture)
    t = train_settings()
    t.update(learning_rate=LR, warmup_steps=0, b2=0.999, eps=1e-8, clip_norm=0.0, steps=10)
    t.weight_decay = WEIGHT_DECAY
    optimizer, _ = make_optimizer(ml_collections.ConfigDict(t))
    mesh = make_mesh(devices=jax.devices()[:1])
    graphdef, state, sharding = place_train_state(model, optimizer, mesh)
    step_task = span_task() if task == "qa" else sequence_task(task)
    step = make_train_step(graphdef, optimizer, step_task, 0, mesh, sharding)
    with jax.set_mesh(mesh):
        state, sums = step(state, {k: jnp.asarray(v) for k, v in batch.items()})
    from flax import nnx

    updated = to_hf_state_dict(nnx.merge(graphdef, state.params), architecture)
    return float(sums["nll_sum"] / sums["weight_sum"]), updated


@pytest.mark.parametrize(
    "family, num_labels",
    [
        ("bert", 3),
        ("bert", 1),
        ("bert", QA),
        ("electra", 3),
        ("electra", QA),
        ("bart", 3),
        ("bart", QA),
    ],
    ids=[
        "classification",
        "regression",
        "qa",
        "electra-classification",
        "electra-qa",
        "bart-classification",
        "bart-qa",
    ],
)
def test_one_step_equals_hugging_face_with_adamw(family, num_labels):
    peer = hf_classifier(num_labels, family)
    state = {k: v.detach().numpy().copy() for k, v in peer.state_dict().items()}
    batch = rows(num_labels, family)
    task = {1: "regression", QA: "qa"}.get(num_labels, "classification")
    our_loss, ours = our_step(state, peer.config.to_dict(), batch, task, type(peer).__name__)
    their_loss, theirs = torch_step(peer.train(), batch)
    assert our_loss == pytest.approx(their_loss, rel=1e-5)
    compared = noisy = 0
    for name, value in theirs.items():
        if name.endswith("position_ids") or name not in ours:
            continue
        # Adam's first step moves a weight by lr * g / (|g| + eps): lr wherever the gradient is
        # well above eps (1e-8), and by an amount set by float32 rounding where the gradient is
        # zero in exact arithmetic (the span head's bias and the last LayerNorm's bias, softmax
        # being shift-invariant). Those must only stay within one step; the rest agree to 1e-5.
        step = np.abs(value - state[name])
        signal = step > 0.99 * LR
        np.testing.assert_allclose(
            ours[name][signal], value[signal], rtol=1e-5, atol=1e-6, err_msg=name
        )
        assert np.all(np.abs(ours[name] - state[name])[~signal] <= 1.01 * LR), name
        compared, noisy = compared + signal.sum(), noisy + (~signal).sum()
    assert compared > 0.5 * (compared + noisy)  # most weights moved by ~lr in both


@pytest.mark.parametrize(
    "family, num_labels",
    [
        ("bert", 2),
        ("bert", QA),
        ("electra", 3),
        ("electra", QA),
        ("roberta", 2),
        ("roberta", QA),
        ("xlnet", 3),
        ("xlnet", QA),
        ("bart", 3),
        ("bart", QA),
    ],
    ids=[
        "bert",
        "bert-qa",
        "electra",
        "electra-qa",
        "roberta",
        "roberta-qa",
        "xlnet",
        "xlnet-qa",
        "bart",
        "bart-qa",
    ],
)
def test_exported_folder_loads_in_transformers_with_the_same_logits(tmp_path, family, num_labels):
    peer = hf_classifier(num_labels, family)
    architecture = type(peer).__name__
    state = {k: v.detach().numpy() for k, v in peer.state_dict().items()}
    ours = from_hf_state_dict(state, peer.config.to_dict(), architecture)
    labels = {}
    if num_labels == 2:
        labels = dict(
            num_labels=2,
            id2label={"0": "negative", "1": "positive"},
            label2id={"negative": 0, "positive": 1},
        )
    elif num_labels != QA:
        labels = dict(num_labels=num_labels)
    config = hf_config(ours.encoder.cfg, architecture, **labels)
    save_hf_checkpoint(ours, tmp_path / "hf", architecture, config)
    auto = "QuestionAnswering" if num_labels == QA else "SequenceClassification"
    loaded = getattr(transformers, f"AutoModelFor{auto}").from_pretrained(tmp_path / "hf")
    assert type(loaded).__name__ == architecture
    batch = {k: jnp.asarray(v) for k, v in rows(num_labels, family).items() if v is not None}
    with torch.no_grad():
        out = loaded.eval()(**peer_inputs(loaded, batch))
    if num_labels == QA:
        ours_out = np.asarray(predict_spans(ours, batch))
        theirs = np.stack([out.start_logits.numpy(), out.end_logits.numpy()], 1)
    else:
        ours_out, theirs = np.asarray(predict_logits(ours, batch)), out.logits.numpy()
    np.testing.assert_allclose(ours_out, theirs, atol=1e-5, rtol=1e-5)
    if num_labels == 2:
        assert loaded.config.id2label == {0: "negative", 1: "positive"}


def xlnet_rows(vocab_size: int = 120):
    """`A <sep> B <sep> <cls>` rows, types 0 / 1 / 2: right-padded for lm_jax and the same
    tokens left-padded (type 4), as XLNet's tokenizer pads them, for Hugging Face."""
    rng = np.random.default_rng(0)
    sep, cls, pad, length = 4, 3, 5, 16
    ours = {k: np.zeros((4, length), np.int32) for k in ("input_ids", "token_type_ids")}
    theirs = {k: np.zeros((4, length), np.int64) for k in ("input_ids", "token_type_ids")}
    theirs["attention_mask"] = np.zeros((4, length), np.int64)
    for row, (a, b) in enumerate([(7, 6), (5, 4), (3, 3), (6, 0)]):
        ids = [*rng.integers(6, vocab_size, a), sep, *rng.integers(6, vocab_size, b), sep, cls]
        types = [0] * (a + 1) + [1] * (b + 1) + [2]
        n = len(ids)
        ours["input_ids"][row, :n], ours["token_type_ids"][row, :n] = ids, types
        theirs["input_ids"][row] = [pad] * (length - n) + ids
        theirs["token_type_ids"][row] = [4] * (length - n) + types
        theirs["attention_mask"][row, length - n :] = 1
    ours["segment_ids"] = np.arange(length)[None] < (theirs["attention_mask"].sum(1))[:, None]
    ours["segment_ids"] = ours["segment_ids"].astype(np.int32)
    ours["labels"] = rng.integers(0, 3, 4).astype(np.int32)
    ours["weights"] = np.ones(4, np.float32)
    return ours, theirs


def test_xlnet_classification_step_equals_hugging_face_with_adamw():
    torch.manual_seed(0)
    config = transformers.XLNetConfig(
        vocab_size=120, d_model=32, n_layer=2, n_head=4, d_inner=37, dropout=0.0, num_labels=3
    )
    config.summary_last_dropout = 0.0
    peer = transformers.XLNetForSequenceClassification(config)
    state = {k: v.detach().numpy().copy() for k, v in peer.state_dict().items()}
    ours_rows, their_rows = xlnet_rows()
    architecture = "XLNetForSequenceClassification"
    our_loss, ours = our_step(state, config.to_dict(), ours_rows, "classification", architecture)
    batch = {**their_rows, "labels": ours_rows["labels"]}
    no_decay = lambda n: n.endswith("bias") or "layer_norm" in n
    groups = [
        {"params": [p for n, p in peer.named_parameters() if not no_decay(n)]},
        {"params": [p for n, p in peer.named_parameters() if no_decay(n)], "weight_decay": 0.0},
    ]
    optimizer = torch.optim.AdamW(groups, lr=LR, eps=1e-8, weight_decay=WEIGHT_DECAY)
    out = peer.train()(**{k: torch.tensor(v).long() for k, v in batch.items()})
    out.loss.backward()
    optimizer.step()
    assert our_loss == pytest.approx(float(out.loss.detach()), rel=1e-5)
    compared = 0
    for name, value in peer.state_dict().items():
        if name not in ours:
            continue
        value = value.detach().numpy()
        signal = np.abs(value - state[name]) > 0.99 * LR  # see the test above
        np.testing.assert_allclose(ours[name][signal], value[signal], rtol=1e-5, atol=1e-6)
        assert np.all(np.abs(ours[name] - state[name])[~signal] <= 1.01 * LR), name
        compared += signal.sum()
    assert compared > 10_000
