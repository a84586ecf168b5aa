"""Each model family's settings (`config.model_options`, `config.model.*`) are honoured by the
model pretraining builds, or refused; none is silently ignored."""

from __future__ import annotations

import re

import jax.numpy as jnp
import pytest
from conftest import tiny_config

from lm_jax.config_tools import flatten, override
from lm_jax.errors import CheckpointError, ConfigError
from lm_jax.models.layers import GatedFeedForward
from lm_jax.objectives.registry import Model
from lm_jax.pretrain.run import build_model
from lm_jax.pretrain.schema import pretraining_config
from lm_jax.pretrain.tasks import TASKS, ElectraSettings
from lm_jax.pretrain.validation import validate
from lm_jax.train.checkpoint import check_run_config


def _config(objective: str, **overrides):
    c = tiny_config(**{"tokenizer.extra_ids": 100})
    defaults = pretraining_config(objective)
    c.objective, c.objective_options = objective, defaults.objective_options
    c.model_options, c.model.activation = defaults.model_options, defaults.model.activation
    validate(override(c, overrides))
    return c


def test_t5_settings_build_v1_1_with_its_decoder_depth():
    c = _config(
        "t5",
        **{
            "model_options.gated_feed_forward": True,
            "model_options.num_decoder_layers": 3,
            "model_options.relative_attention_buckets": 16,
            "model.activation": "gelu_tanh",
        },
    )
    model = build_model(c, 1000)
    assert len(model.decoder_layers) == 3 and len(model.encoder_layers) == 1
    assert isinstance(model.decoder_layers[0].feed_forward, GatedFeedForward)
    assert model.encoder_relative_bias.embedding.embedding.shape[0] == 16
    assert model.cfg.activation == "gelu_tanh"
    plain = build_model(_config("t5"), 1000)  # the default: T5 v1.0, ReLU, as deep as encoder
    assert plain.cfg.activation == "relu" and len(plain.decoder_layers) == 1
    assert not isinstance(plain.decoder_layers[0].feed_forward, GatedFeedForward)


def test_electra_generator_size_and_discriminator_weight():
    model = build_model(_config("electra", **{"model_options.generator_size": 0.5}), 1000)
    assert model.generator.encoder.cfg.hidden_size == 32  # half of the discriminator's 64
    sums = {
        "nll_sum": jnp.float32(4.0),
        "weight_sum": jnp.float32(2.0),
        "rtd_nll_sum": jnp.float32(1.0),
        "rtd_weight_sum": jnp.float32(10.0),
    }
    loss = TASKS[Model.REPLACED_TOKEN].loss
    assert float(loss(sums, ElectraSettings(discriminator_weight=10.0))) == pytest.approx(
        3.0, rel=1e-4
    )
    assert float(loss(sums, ElectraSettings())) == pytest.approx(7.0, rel=1e-4)


def test_mpnet_buckets_and_the_attention_implementation_are_honoured():
    model = build_model(
        _config(
            "mpnet", **{"model_options.relative_attention_buckets": 8, "model.attention": "chunked"}
        ),
        1000,
    )
    assert model.encoder.relative_bias.embedding.embedding.shape[0] == 8
    assert model.encoder.cfg.attention_implementation == "chunked"


@pytest.mark.parametrize(
    "objective, field, value, message",
    [
        ("mlm", "gated_feed_forward", True, "gated_feed_forward is not a setting of the masked_lm"),
        ("t5", "num_decoder_layers", -1, "num_decoder_layers must be an integer >= 0"),
        ("electra", "generator_size", 1.5, "generator_size must be in (0, 1]"),
        ("electra", "discriminator_weight", float("nan"), "discriminator_weight must be finite"),
    ],
)
def test_settings_a_family_lacks_or_out_of_range_are_refused(objective, field, value, message):
    c = tiny_config(**{"tokenizer.extra_ids": 100})
    c.objective = objective
    c.objective_options = pretraining_config(objective).objective_options
    c.model_options = pretraining_config(objective).model_options
    c.model_options[field] = value
    with pytest.raises(ConfigError, match=re.escape(f"config.model_options.{message}")):
        validate(c)


def test_every_family_has_valid_default_settings():
    for model in Model:
        task = TASKS[model]
        assert task.settings(**task.settings.defaults()) == task.settings()


def test_a_run_recorded_before_a_field_existed_resumes_with_its_default(tmp_path):
    """Runs started before config.model_options / config.model.attention existed resume when
    the new fields keep their defaults, and are refused when they change."""
    config = pretraining_config("t5").to_dict()
    old = {k: v for k, v in config.items() if k != "model_options"}
    old["model"] = {k: v for k, v in config["model"].items() if k != "attention"}
    check_run_config(tmp_path, old, resuming=False)
    defaults = flatten(config)
    check_run_config(tmp_path, config, resuming=True, defaults=defaults)
    config["model_options"]["num_decoder_layers"] = 2
    with pytest.raises(CheckpointError, match="model_options.num_decoder_layers"):
        check_run_config(tmp_path, config, resuming=True, defaults=defaults)
