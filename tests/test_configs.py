"""configs/: every paper configuration at every size loads and validates, carries the paper's
numbers, and a tiny size trains through the command line."""

import importlib.util
from pathlib import Path

import pytest
from conftest import ROOT

from lm_jax.config_tools import override
from lm_jax.errors import ConfigError
from lm_jax.pretrain.recipes import MODEL_SIZES
from lm_jax.pretrain.run import pretrain
from lm_jax.pretrain.validation import validate

PAPER_CONFIGS = sorted(p for p in (ROOT / "configs").glob("*.py") if p.stem != "pretrain")


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config


def cpu_sized(config, **overrides):
    """A tiny config shrunk further for a 60-step test on CPython's docs."""
    return override(
        config,
        {
            "data.corpus": "python_docs",
            "data.seq_len": 64,
            "model.max_position": 64,
            "tokenizer.vocab_size": 1000,
            "train.steps": 60,
            "train.warmup_steps": 5,
            "train.batch_size": 8,
            "train.eval_every": 60,
            "train.checkpoint_every": 60,
            **overrides,
        },
    )


@pytest.mark.parametrize("path", PAPER_CONFIGS, ids=lambda p: p.stem)
def test_every_size_validates(path):
    get_config = load(path)
    for size in MODEL_SIZES:
        validate(get_config(size))
    with pytest.raises(ConfigError, match="unknown size 'huge'"):
        get_config("huge")


def test_paper_numbers():
    roberta = load(ROOT / "configs" / "roberta.py")("large")
    assert (roberta.train.learning_rate, roberta.train.batch_size, roberta.train.b2) == (
        4e-4,
        8192,
        0.98,
    )
    assert (roberta.model.hidden_size, roberta.model.num_layers, roberta.data.seq_len) == (
        1024,
        24,
        512,
    )
    albert = load(ROOT / "configs" / "albert.py")("base")
    assert (albert.train.optimizer, albert.train.learning_rate, albert.objective) == (
        "lamb",
        0.00176,
        "ngram",
    )
    t5 = load(ROOT / "configs" / "t5.py")("base")
    assert (t5.train.optimizer, t5.train.decay, t5.train.steps, t5.data.seq_len) == (
        "adafactor",
        "rsqrt",
        2**19,
        568,
    )
    assert load(ROOT / "configs" / "bart.py")("base").model.num_layers == 6
    assert load(ROOT / "configs" / "xlnet.py")("tiny").objective == "plm"


def test_tiny_t5_trains_with_adafactor(tmp_path):
    """The tiny T5 config (Adafactor, inverse-square-root schedule) trains: loss falls."""
    run = pretrain(cpu_sized(load(ROOT / "configs" / "t5.py")("tiny")), tmp_path, progress=False)
    assert run.last_eval_loss < run.first_eval_loss - 0.3


def test_mixture_errors_name_the_component():
    get_config = load(ROOT / "configs" / "pretrain.py")
    validate(get_config("mlm=0.5,clm=0.25,prefix_lm=0.25"))
    for spec, message in [
        ("mlm=1,t5=1", "train different models"),
        ("mlm=1,tlm=1", r"config.mixture.tlm.objective: tlm needs a parallel corpus"),
        ("mlm=0", "config.mixture.mlm.weight must be a finite number > 0"),
        ("mlm=x", "write name=weight"),
    ]:
        with pytest.raises(ConfigError, match=message):
            validate(get_config(spec))
    config = get_config("mlm=1,entity=1")
    config.data.corpus = "peoples_daily"  # both accept it, but entity reads entity rows
    with pytest.raises(ConfigError, match="read different data layouts"):
        validate(config)
    config = get_config("mlm=1,clm=1")
    config.mixture.mlm.options.rate = 0.2
    config.mixture.clm.options.colour = 1
    with pytest.raises(ConfigError, match="config.mixture.clm.options.colour is not an option"):
        validate(config)


@pytest.mark.slow
def test_tiny_ul2_mixture_trains(tmp_path):
    """configs/ul2.py:tiny: six T5 denoisers on one model; the pooled held-out loss falls."""
    config = cpu_sized(load(ROOT / "configs" / "ul2.py")("tiny"), **{"tokenizer.extra_ids": 20})
    run = pretrain(config, tmp_path, progress=False)
    assert run.last_eval_loss < run.first_eval_loss - 0.3
