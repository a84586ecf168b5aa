"""Parity with real peers: Hugging Face PyTorch models with the same random weights give the
same outputs as ours (converted), and ours export back to them. No downloads."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from lm_jax.attention import AttentionMask  # noqa: E402
from lm_jax.batch import Seq2SeqBatch, encoder_inputs, seq2seq_inputs  # noqa: E402
from lm_jax.errors import CheckpointError  # noqa: E402
from lm_jax.models.convert import (  # noqa: E402
    ARCHITECTURES,
    from_hf_state_dict,
    load_hf_checkpoint,
    to_hf_state_dict,
)

SMALL = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    hidden_act="gelu",
)
PAD = {"bert": 0, "roberta": 1, "electra": 0, "mpnet": 1}


def hf_model(architecture):
    torch.manual_seed(0)
    kind = ARCHITECTURES[architecture].model_type
    if kind == "bert":
        labels = 3 if architecture == "BertForSequenceClassification" else 2
        config = transformers.BertConfig(**SMALL, type_vocab_size=2, num_labels=labels)
    elif kind == "roberta":
        config = transformers.RobertaConfig(
            **SMALL, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5
        )
    elif kind == "electra":
        config = transformers.ElectraConfig(**SMALL, embedding_size=16, type_vocab_size=2)
    else:
        config = transformers.MPNetConfig(**SMALL, layer_norm_eps=1e-5)
    model = getattr(transformers, architecture)(config)
    # Random, non-trivial LayerNorm and bias values, so that every mapping is exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def inputs(kind):
    rng = np.random.default_rng(0)
    pad = PAD[kind]
    ids = rng.integers(5, 99, (2, 16))
    ids[1, 11:] = pad
    real = ids != pad
    two_types = kind in ("bert", "electra")
    types = (np.arange(16) >= 6).astype(int)[None] * real if two_types else np.zeros_like(ids)
    return ids, real, types


def our_outputs(model, architecture, ids, real, types):
    """Every model takes arrays and the compact mask; no pretraining batch is needed."""
    segments = jnp.asarray(real.astype(np.int32))
    positions = jnp.asarray(np.where(real, np.cumsum(real, 1) - 1, 0))
    attention = AttentionMask.bidirectional(segments)
    out = model(jnp.asarray(ids), positions, attention, jnp.asarray(types))
    return [np.asarray(o) for o in (out if isinstance(out, tuple) else (out,))]


def hf_outputs(model, architecture, ids, real, types):
    kwargs = dict(input_ids=torch.tensor(ids), attention_mask=torch.tensor(real.astype(int)))
    kind = ARCHITECTURES[architecture].model_type
    if kind in ("bert", "roberta", "electra"):  # sentence B types are non-zero for bert/electra
        kwargs["token_type_ids"] = torch.tensor(types)
    with torch.no_grad():
        out = model(**kwargs)
    names = ("logits",)
    if architecture.endswith("QuestionAnswering"):
        names = ("start_logits", "end_logits")
    elif architecture == "BertForPreTraining":
        names = ("prediction_logits", "seq_relationship_logits")
    return [getattr(out, n).numpy() for n in names]


def assert_same(ours, theirs, real, atol=1e-5):
    for a, b in zip(ours, theirs, strict=True):
        if a.ndim >= 2 and a.shape[:2] == real.shape:  # per-token outputs: real tokens only
            a, b = a[real], b[real]
        np.testing.assert_allclose(a, b, atol=atol, rtol=1e-5)


def state_of(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


ENCODERS = sorted(a for a, spec in ARCHITECTURES.items() if spec.model_type in PAD)


@pytest.mark.parametrize("architecture", ENCODERS)
def test_outputs_match_hugging_face(architecture):
    peer = hf_model(architecture)
    ours = from_hf_state_dict(state_of(peer), peer.config.to_dict(), architecture)
    kind = ARCHITECTURES[architecture].model_type
    args = inputs(kind)
    assert_same(
        our_outputs(ours, architecture, *args), hf_outputs(peer, architecture, *args), args[1]
    )


@pytest.mark.parametrize(
    "architecture",
    ["BertForMaskedLM", "RobertaForMaskedLM", "ElectraForMaskedLM", "MPNetForMaskedLM"],
)
def test_export_round_trip_and_local_checkpoint(architecture, tmp_path):
    peer = hf_model(architecture)
    ours = from_hf_state_dict(state_of(peer), peer.config.to_dict(), architecture)
    exported = to_hf_state_dict(ours, architecture)
    fresh = type(peer)(peer.config).eval()
    missing, unexpected = fresh.load_state_dict(
        {k: torch.tensor(v) for k, v in exported.items()}, strict=False
    )
    assert not unexpected and all("position_ids" in m for m in missing), (missing, unexpected)
    args = inputs(ARCHITECTURES[architecture].model_type)
    for a, b in zip(hf_outputs(fresh, architecture, *args), hf_outputs(peer, architecture, *args)):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # A published-style local folder: config.json + model.safetensors (architecture recorded).
    peer.save_pretrained(tmp_path / architecture)
    loaded = load_hf_checkpoint(tmp_path / architecture)
    assert_same(
        our_outputs(loaded, architecture, *args), hf_outputs(peer, architecture, *args), args[1]
    )


def test_checkpoint_errors(tmp_path):
    peer = hf_model("BertForMaskedLM")
    state = state_of(peer)
    config = peer.config.to_dict()
    with pytest.raises(CheckpointError, match="has shape"):
        from_hf_state_dict(state, {**config, "vocab_size": 100})
    del state["bert.embeddings.LayerNorm.weight"]
    with pytest.raises(CheckpointError, match="no parameter 'bert.embeddings.LayerNorm.weight'"):
        from_hf_state_dict(state, config)
    with pytest.raises(CheckpointError, match="unsupported model_type 'gpt2'"):
        from_hf_state_dict(state, {**config, "model_type": "gpt2", "architectures": None})
    with pytest.raises(CheckpointError, match="unsupported architecture 'GPT2LMHeadModel'"):
        from_hf_state_dict(state, config, "GPT2LMHeadModel")
    with pytest.raises(CheckpointError, match="needs model_type 'roberta'"):
        from_hf_state_dict(state, config, "RobertaForMaskedLM")
    with pytest.raises(CheckpointError, match="no config.json"):
        load_hf_checkpoint(tmp_path)
    peer.save_pretrained(tmp_path / "bad")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_hf_checkpoint(tmp_path / "bad")


# XLNet: content stream, two-stream permutation LM (same permutation mask and target mapping as
# Hugging Face's `perm_mask` / `target_mapping`) and Transformer-XL memory.


def hf_xlnet():
    torch.manual_seed(0)
    config = transformers.XLNetConfig(
        vocab_size=1000, d_model=32, n_layer=2, n_head=4, d_inner=37, mem_len=None
    )
    model = transformers.XLNetLMHeadModel(config)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def xlnet_rows(vocab, seed=0, length=24):
    rng = np.random.default_rng(seed)
    ids = rng.integers(5, 990, (2, length))
    middle = length // 2
    ids[:, 0], ids[:, middle], ids[:, -1] = vocab.cls_id, vocab.sep_id, vocab.sep_id
    types = (np.arange(length) > middle).astype(np.int64)[None].repeat(2, 0)
    return ids, types


def test_xlnet_content_stream_matches_hugging_face(vocab):
    from lm_jax.objectives import clm

    peer = hf_xlnet()
    ours = from_hf_state_dict(state_of(peer), peer.config.to_dict())
    ids, types = xlnet_rows(vocab)
    real = np.ones_like(ids, bool)
    real[1, 20:] = False
    ids[~real] = 0
    batch = clm(jax.random.key(0), jnp.asarray(ids), vocab=vocab)
    batch = batch.replace(  # bidirectional, as Hugging Face without perm_mask
        attention=AttentionMask.bidirectional(batch.segment_ids),
        token_type_ids=jnp.asarray(types),
    )
    logits, _ = ours(*encoder_inputs(batch))
    with torch.no_grad():
        theirs = peer(
            input_ids=torch.tensor(ids),
            token_type_ids=torch.tensor(types),
            attention_mask=torch.tensor(real.astype(np.float32)),
        ).logits.numpy()
    np.testing.assert_allclose(np.asarray(logits)[real], theirs[real], atol=1e-5, rtol=1e-5)


def test_xlnet_two_stream_permutation_lm_matches_hugging_face(vocab):
    from lm_jax.objectives import plm

    peer = hf_xlnet()
    ours = from_hf_state_dict(state_of(peer), peer.config.to_dict())
    ids, types = xlnet_rows(vocab)
    batch = plm(jax.random.key(3), jnp.asarray(ids), vocab=vocab)
    batch = batch.replace(token_type_ids=jnp.asarray(types))
    logits, _ = ours(
        *encoder_inputs(batch),
        query_positions=batch.query_positions,
        query_attention=batch.query_attention,
        masked_positions=batch.masked_positions,
    )
    # Hugging Face's form of the same factorisation: perm_mask[i, j] = 1 where i may not see j
    # (its content stream adds i itself back), target_mapping one-hot per prediction slot.
    content = np.asarray(batch.attention.dense())
    targets = np.asarray(batch.masked_positions)
    used = np.asarray(batch.masked_weights) > 0
    perm_mask = 1.0 - content
    target_mapping = np.zeros((2, targets.shape[1], ids.shape[1]), np.float32)
    for b in range(2):
        for slot in np.flatnonzero(used[b]):
            perm_mask[b, targets[b, slot], targets[b, slot]] = 1.0
            target_mapping[b, slot, targets[b, slot]] = 1.0
    # Our query stream is the same mask: target row minus itself.
    query = np.asarray(batch.query_attention.dense())
    np.testing.assert_array_equal(
        query[used], 1.0 - np.take_along_axis(perm_mask, targets[..., None], 1)[used]
    )
    with torch.no_grad():
        theirs = peer(
            input_ids=torch.tensor(ids),
            token_type_ids=torch.tensor(types),
            perm_mask=torch.tensor(perm_mask, dtype=torch.float32),
            target_mapping=torch.tensor(target_mapping),
        ).logits.numpy()
    assert used.sum() >= 6
    np.testing.assert_allclose(np.asarray(logits)[used], theirs[used], atol=1e-5, rtol=1e-5)


def test_xlnet_memory_matches_hugging_face(vocab):
    from lm_jax.objectives import clm

    peer = hf_xlnet()
    ours = from_hf_state_dict(state_of(peer), peer.config.to_dict())
    first, _ = xlnet_rows(vocab, seed=1, length=12)
    second, _ = xlnet_rows(vocab, seed=2, length=10)

    def bidirectional(ids):
        batch = clm(jax.random.key(0), jnp.asarray(ids), vocab=vocab)
        return batch.replace(attention=AttentionMask.bidirectional(batch.segment_ids))

    _, memory = ours(*encoder_inputs(bidirectional(first)), memory_len=8)
    assert [m.shape for m in memory] == [(2, 8, 32)] * 2
    logits, _ = ours(*encoder_inputs(bidirectional(second)), memory=memory, memory_len=8)
    with torch.no_grad():
        peer.transformer.mem_len = 8
        mems = peer(input_ids=torch.tensor(first), use_mems=True).mems
        np.testing.assert_allclose(
            np.asarray(memory[1]), mems[1].numpy().transpose(1, 0, 2), atol=1e-5
        )
        theirs = peer(input_ids=torch.tensor(second), mems=mems, use_mems=True).logits.numpy()
    np.testing.assert_allclose(np.asarray(logits), theirs, atol=1e-5, rtol=1e-5)


# Encoder-decoders: BART (post-LN, learned positions) and T5 (pre-RMSNorm, relative buckets,
# v1.0 ReLU and v1.1 gated GeLU), teacher-forced decoder logits.


def hf_seq2seq(architecture, gated=False, tied=True):
    torch.manual_seed(0)
    if architecture == "BartForConditionalGeneration":
        config = transformers.BartConfig(
            vocab_size=99,
            d_model=32,
            encoder_layers=2,
            decoder_layers=2,
            encoder_attention_heads=4,
            decoder_attention_heads=4,
            encoder_ffn_dim=37,
            decoder_ffn_dim=37,
            max_position_embeddings=40,
        )
    else:
        config = transformers.T5Config(
            vocab_size=99,
            d_model=32,
            d_kv=8,
            d_ff=37,
            num_layers=2,
            num_decoder_layers=3,
            num_heads=4,
            relative_attention_num_buckets=8,
            relative_attention_max_distance=20,
            feed_forward_proj="gated-gelu" if gated else "relu",
        )
    if not tied:  # T5 v1.1 / Flan-T5 / mT5: their own lm_head, unscaled decoder output
        config.tie_word_embeddings, config.scale_decoder_outputs = False, False
    model = getattr(transformers, architecture)(config)
    if not tied:  # only the head is separate; the encoder and decoder share the embedding
        model.encoder.embed_tokens = model.decoder.embed_tokens = model.shared
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.add_(0.1 * torch.randn_like(model.final_logits_bias))
    return model.eval()


def seq2seq_outputs(ours, peer):

    rng = np.random.default_rng(0)
    enc = rng.integers(5, 99, (2, 14))
    enc[1, 9:] = 0
    dec = rng.integers(5, 99, (2, 11))
    real = enc != 0
    enc_segments = jnp.asarray(real.astype(np.int32))
    dec_segments = jnp.ones(dec.shape, jnp.int32)
    batch = Seq2SeqBatch.from_packed(
        inputs=jnp.asarray(enc),
        segment_ids=enc_segments,
        positions=jnp.asarray(np.where(real, np.cumsum(real, 1) - 1, 0)),
        decoder_inputs=jnp.asarray(dec),
        decoder_targets=jnp.asarray(dec),
        decoder_segment_ids=dec_segments,
        decoder_positions=jnp.broadcast_to(jnp.arange(dec.shape[1]), dec.shape),
    )
    with torch.no_grad():
        theirs = peer(
            input_ids=torch.tensor(enc),
            attention_mask=torch.tensor(real.astype(int)),
            decoder_input_ids=torch.tensor(dec),
        ).logits.numpy()
    return np.asarray(ours(*seq2seq_inputs(batch))), theirs


@pytest.mark.parametrize(
    "architecture,gated,tied",
    [
        ("BartForConditionalGeneration", False, True),
        ("T5ForConditionalGeneration", False, True),
        ("T5ForConditionalGeneration", True, True),
        ("T5ForConditionalGeneration", True, False),  # v1.1: gated GeLU, untied head
    ],
)
def test_seq2seq_matches_hugging_face(architecture, gated, tied, tmp_path):
    peer = hf_seq2seq(architecture, gated, tied)
    if not tied:  # the file's head really differs from its embedding
        state = state_of(peer)
        assert not np.allclose(state["lm_head.weight"], state["shared.weight"])
    ours = from_hf_state_dict(state_of(peer), peer.config.to_dict(), architecture)
    a, b = seq2seq_outputs(ours, peer)
    np.testing.assert_allclose(a, b, atol=1e-4, rtol=1e-4)
    # Export back into a fresh PyTorch model, and load a save_pretrained folder.
    fresh = type(peer)(peer.config).eval()
    exported = {k: torch.tensor(v) for k, v in to_hf_state_dict(ours, architecture).items()}
    missing, unexpected = fresh.load_state_dict(exported, strict=False)
    assert not unexpected and not missing, (missing, unexpected)
    np.testing.assert_allclose(seq2seq_outputs(ours, fresh)[1], b, atol=1e-6)
    peer.save_pretrained(tmp_path / "model")
    np.testing.assert_allclose(
        seq2seq_outputs(load_hf_checkpoint(tmp_path / "model"), peer)[0], b, atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize(
    "architecture",
    ["BertForMaskedLM", "RobertaForMaskedLM", "ElectraForMaskedLM", "MPNetForMaskedLM"],
)
def test_untied_output_heads_are_refused_not_silently_tied(architecture):
    """Families whose output projection lm_jax always ties: a checkpoint with its own head
    (tie_word_embeddings=False) is refused instead of loaded with the embedding as its head."""
    peer = hf_model(architecture)
    config = {**peer.config.to_dict(), "tie_word_embeddings": False}
    with pytest.raises(CheckpointError, match="tie_word_embeddings=False"):
        from_hf_state_dict(state_of(peer), config, architecture)
    bart = hf_seq2seq("BartForConditionalGeneration")
    config = {**bart.config.to_dict(), "tie_word_embeddings": False}
    with pytest.raises(CheckpointError, match="tie_word_embeddings=False"):
        from_hf_state_dict(state_of(bart), config, "BartForConditionalGeneration")
