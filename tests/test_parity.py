"""Parity with real peers: Hugging Face PyTorch models with the same random weights give the
same outputs as ours (converted), and ours export back to them. No downloads."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

import jax.numpy as jnp  # noqa: E402

from lm_jax.attention import AttentionMask  # noqa: E402
from lm_jax.errors import CheckpointError  # noqa: E402
from lm_jax.models.convert import (  # noqa: E402
    from_hf_state_dict,
    load_hf_checkpoint,
    to_hf_state_dict,
)
from lm_jax.objectives.batch import Batch  # noqa: E402

SMALL = dict(
    vocab_size=99,
    hidden_size=32,
    num_hidden_layers=2,
    num_attention_heads=4,
    intermediate_size=37,
    max_position_embeddings=40,
    hidden_act="gelu",
)


def hf_model(kind):
    torch.manual_seed(0)
    if kind == "bert":
        config = transformers.BertConfig(**SMALL, type_vocab_size=2)
        model = transformers.BertForMaskedLM(config)
    else:
        config = transformers.RobertaConfig(
            **SMALL, type_vocab_size=1, pad_token_id=1, layer_norm_eps=1e-5
        )
        model = transformers.RobertaForMaskedLM(config)
    # Random, non-trivial LayerNorm and bias values, so that every mapping is exercised.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "layer_norm" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    return model.eval()


def inputs(kind):
    rng = np.random.default_rng(0)
    pad = 0 if kind == "bert" else 1
    ids = rng.integers(5, 99, (2, 16))
    ids[1, 11:] = pad
    real = ids != pad
    types = (
        np.zeros_like(ids) if kind == "roberta" else (np.arange(16) >= 6).astype(int)[None] * real
    )
    return ids, real, types


def our_logits(model, ids, real, types):
    segments = jnp.asarray(real.astype(np.int32))
    positions = jnp.asarray(np.where(real, np.cumsum(real, 1) - 1, 0))
    batch = Batch(
        inputs=jnp.asarray(ids),
        targets=jnp.asarray(ids),
        loss_weights=segments,
        positions=positions,
        segment_ids=segments,
        attention=AttentionMask.bidirectional(segments),
        token_type_ids=jnp.asarray(types),
    )
    return np.asarray(model(batch))


def hf_logits(model, ids, real, types):
    with torch.no_grad():
        out = model(
            input_ids=torch.tensor(ids),
            attention_mask=torch.tensor(real.astype(int)),
            token_type_ids=torch.tensor(types),
        )
    return out.logits.numpy()


def state_of(model):
    return {k: v.numpy() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_logits_match_hugging_face(kind):
    peer = hf_model(kind)
    ours = from_hf_state_dict(state_of(peer), peer.config.to_dict())
    ids, real, types = inputs(kind)
    a, b = our_logits(ours, ids, real, types), hf_logits(peer, ids, real, types)
    np.testing.assert_allclose(a[real], b[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_export_round_trip_and_local_checkpoint(kind, tmp_path):
    peer = hf_model(kind)
    ours = from_hf_state_dict(state_of(peer), peer.config.to_dict())
    exported = to_hf_state_dict(ours, kind)
    fresh = type(peer)(peer.config).eval()
    missing, unexpected = fresh.load_state_dict(
        {k: torch.tensor(v) for k, v in exported.items()}, strict=False
    )
    assert not unexpected and all("position_ids" in m for m in missing), (missing, unexpected)
    ids, real, types = inputs(kind)
    np.testing.assert_allclose(
        hf_logits(fresh, ids, real, types), hf_logits(peer, ids, real, types), atol=1e-6
    )
    # A published-style local folder: config.json + model.safetensors.
    peer.save_pretrained(tmp_path / kind)
    loaded = load_hf_checkpoint(tmp_path / kind)
    np.testing.assert_allclose(
        our_logits(loaded, ids, real, types)[real],
        hf_logits(peer, ids, real, types)[real],
        atol=1e-5,
        rtol=1e-5,
    )


def test_checkpoint_errors(tmp_path):
    peer = hf_model("bert")
    state = state_of(peer)
    config = peer.config.to_dict()
    with pytest.raises(CheckpointError, match="has shape"):
        from_hf_state_dict(state, {**config, "vocab_size": 100})
    del state["bert.embeddings.LayerNorm.weight"]
    with pytest.raises(CheckpointError, match="no parameter 'bert.embeddings.LayerNorm.weight'"):
        from_hf_state_dict(state, config)
    with pytest.raises(CheckpointError, match="unsupported model_type 'gpt2'"):
        from_hf_state_dict(state, {**config, "model_type": "gpt2"})
    with pytest.raises(CheckpointError, match="no config.json"):
        load_hf_checkpoint(tmp_path)
    peer.save_pretrained(tmp_path / "bad")
    (tmp_path / "bad" / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_hf_checkpoint(tmp_path / "bad")
