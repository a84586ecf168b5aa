"""Weights in and out of Hugging Face checkpoints, without downloads.

`load_hf_checkpoint(folder)` builds our model from a local Hugging Face folder (`config.json` and
`model.safetensors`, or `pytorch_model.bin` when torch is installed), so a TPU VM user can start
from released weights; `from_hf_state_dict` does the same from an in-memory state dict, and
`to_hf_state_dict` exports ours back under Hugging Face's names. Families: BERT (`BertForMaskedLM`)
and RoBERTa (`RobertaForMaskedLM`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import numpy as np
from flax import nnx

from lm_jax.errors import CheckpointError
from lm_jax.models.config import TransformerConfig
from lm_jax.models.encoder import EncoderForMaskedLM

FAMILIES = {
    # model_type: (encoder prefix, head names, position offset)
    "bert": (
        "bert",
        {
            "dense": "cls.predictions.transform.dense",
            "norm": "cls.predictions.transform.LayerNorm",
            "bias": "cls.predictions.bias",
        },
        0,
    ),
    "roberta": (
        "roberta",
        {"dense": "lm_head.dense", "norm": "lm_head.layer_norm", "bias": "lm_head.bias"},
        2,
    ),
}
_ACTIVATIONS = {
    "gelu": "gelu",
    "gelu_new": "gelu_tanh",
    "gelu_pytorch_tanh": "gelu_tanh",
    "relu": "relu",
}


def config_from_hf(hf: Mapping) -> TransformerConfig:
    """Our `TransformerConfig` from a Hugging Face config dict (BERT or RoBERTa)."""
    kind = hf.get("model_type")
    if kind not in FAMILIES:
        raise CheckpointError(f"unsupported model_type {kind!r}; supported: {sorted(FAMILIES)}")
    if hf.get("hidden_act", "gelu") not in _ACTIVATIONS:
        raise CheckpointError(f"unsupported hidden_act {hf.get('hidden_act')!r}")
    return TransformerConfig(
        vocab_size=hf["vocab_size"],
        hidden_size=hf["hidden_size"],
        num_layers=hf["num_hidden_layers"],
        num_heads=hf["num_attention_heads"],
        intermediate_size=hf["intermediate_size"],
        max_position=hf["max_position_embeddings"],
        position_offset=FAMILIES[kind][2],
        type_vocab_size=hf.get("type_vocab_size", 2),
        dropout_rate=hf.get("hidden_dropout_prob", 0.1),
        layer_norm_eps=hf.get("layer_norm_eps", 1e-12),
        initializer_range=hf.get("initializer_range", 0.02),
        activation=_ACTIVATIONS[hf.get("hidden_act", "gelu")],
    )


def _name_map(cfg: TransformerConfig, kind: str) -> list[tuple[str, str, bool]]:
    """(our flat path, Hugging Face name, transpose) for every parameter."""
    prefix, head, _ = FAMILIES[kind]
    emb = f"{prefix}.embeddings"
    pairs = [
        ("encoder/embeddings/word/embedding", f"{emb}.word_embeddings.weight", False),
        ("encoder/embeddings/position/embedding", f"{emb}.position_embeddings.weight", False),
        ("encoder/embeddings/token_type/embedding", f"{emb}.token_type_embeddings.weight", False),
        ("encoder/embeddings/layer_norm/scale", f"{emb}.LayerNorm.weight", False),
        ("encoder/embeddings/layer_norm/bias", f"{emb}.LayerNorm.bias", False),
    ]
    for i in range(cfg.num_layers):
        ours, hf = f"encoder/layers/{i}", f"{prefix}.encoder.layer.{i}"
        linear = [
            ("attention/query", "attention.self.query"),
            ("attention/key", "attention.self.key"),
            ("attention/value", "attention.self.value"),
            ("attention/output", "attention.output.dense"),
            ("feed_forward/intermediate", "intermediate.dense"),
            ("feed_forward/output", "output.dense"),
        ]
        for a, b in linear:
            pairs += [
                (f"{ours}/{a}/kernel", f"{hf}.{b}.weight", True),
                (f"{ours}/{a}/bias", f"{hf}.{b}.bias", False),
            ]
        for a, b in [
            ("attention_norm", "attention.output.LayerNorm"),
            ("output_norm", "output.LayerNorm"),
        ]:
            pairs += [
                (f"{ours}/{a}/scale", f"{hf}.{b}.weight", False),
                (f"{ours}/{a}/bias", f"{hf}.{b}.bias", False),
            ]
    pairs += [
        ("mlm_head/transform/kernel", f"{head['dense']}.weight", True),
        ("mlm_head/transform/bias", f"{head['dense']}.bias", False),
        ("mlm_head/layer_norm/scale", f"{head['norm']}.weight", False),
        ("mlm_head/layer_norm/bias", f"{head['norm']}.bias", False),
        ("mlm_head/bias", head["bias"], False),
    ]
    return pairs


def _flat_state(model: nnx.Module) -> dict[str, np.ndarray]:
    return {
        "/".join(map(str, path)): leaf
        for path, leaf in nnx.to_flat_state(nnx.state(model, nnx.Param))
    }


def from_hf_state_dict(
    state_dict: Mapping[str, np.ndarray], hf_config: Mapping
) -> EncoderForMaskedLM:
    """Our masked-LM model with the weights of a Hugging Face BERT/RoBERTa masked-LM state dict
    (arrays as NumPy, or anything `np.asarray` takes; torch tensors: `.numpy()` them first)."""
    cfg = config_from_hf(hf_config)
    model = EncoderForMaskedLM(cfg, rngs=nnx.Rngs(0))
    flat = _flat_state(model)
    for ours, hf, transpose in _name_map(cfg, hf_config["model_type"]):
        if hf not in state_dict:
            raise CheckpointError(f"checkpoint has no parameter {hf!r} (needed for {ours})")
        value = np.asarray(state_dict[hf], np.float32)
        value = value.T if transpose else value
        variable = flat[ours]
        if value.shape != variable.shape:
            raise CheckpointError(
                f"{hf} has shape {value.shape}; the model expects "
                f"{variable.shape} (vocab or size mismatch with config.json)"
            )
        variable[...] = value
    return model


def to_hf_state_dict(model: EncoderForMaskedLM, model_type: str) -> dict[str, np.ndarray]:
    """Our model's weights under Hugging Face names (the tied decoder included)."""
    flat = _flat_state(model)
    cfg = model.encoder.cfg
    out = {
        hf: (np.asarray(flat[ours][...]).T if transpose else np.asarray(flat[ours][...]))
        for ours, hf, transpose in _name_map(cfg, model_type)
    }
    prefix, head, _ = FAMILIES[model_type]
    decoder = "cls.predictions.decoder" if model_type == "bert" else "lm_head.decoder"
    out[f"{decoder}.weight"] = out[f"{prefix}.embeddings.word_embeddings.weight"]
    out[f"{decoder}.bias"] = out[head["bias"]]
    return out


def load_hf_checkpoint(folder: str | Path) -> EncoderForMaskedLM:
    """Our model from a local Hugging Face folder (config.json + model.safetensors, or
    pytorch_model.bin when torch is installed). Nothing is downloaded."""
    folder = Path(folder)
    config_path = folder / "config.json"
    if not config_path.is_file():
        raise CheckpointError(f"{folder} has no config.json")
    hf_config = json.loads(config_path.read_text())
    if (folder / "model.safetensors").is_file():
        from safetensors.numpy import load_file

        try:
            state = load_file(str(folder / "model.safetensors"))
        except Exception as e:  # safetensors raises its own error types for corrupt files
            raise CheckpointError(f"{folder / 'model.safetensors'} is corrupt: {e}") from e
    elif (folder / "pytorch_model.bin").is_file():
        import torch

        state = {
            k: v.float().numpy()
            for k, v in torch.load(folder / "pytorch_model.bin", map_location="cpu").items()
        }
    else:
        raise CheckpointError(f"{folder} has no model.safetensors or pytorch_model.bin")
    return from_hf_state_dict(state, hf_config)
