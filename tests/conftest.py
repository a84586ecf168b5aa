"""Shared fixtures: tiny vocabularies, a tokenizer trained on the default corpus, tiny configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from pathlib import Path

# One XLA compilation cache per test run (set before JAX is imported), inherited by the
# pytest-xdist workers and the subprocesses they start: the many tiny runs compile the same
# programs, and each compiles once. A fresh directory per run, so every run starts cold.
XLA_CACHE = Path(tempfile.gettempdir()) / f"lm_jax_test_xla_cache_{uuid.uuid4().hex}"
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", str(XLA_CACHE))
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")

import pytest  # noqa: E402

from lm_jax import runtime  # noqa: E402
from lm_jax.data.tokenizer import VocabInfo  # noqa: E402
from lm_jax.finetune.schema import shared_data_dir  # noqa: E402

runtime.prepare()  # each test process, before its first JAX computation: one CPU device

ROOT = Path(__file__).resolve().parents[1]


def pytest_unconfigure(config):
    """The run's compilation cache goes with it (in the main process, after the workers)."""
    if not hasattr(config, "workerinput"):
        shutil.rmtree(XLA_CACHE, ignore_errors=True)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """`../shared/data` (or $LM_JAX_DATA_DIR); tests that need it skip when it is absent."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data folder not found at {path} (set LM_JAX_DATA_DIR)")
    return path


@pytest.fixture(scope="session")
def vocab() -> VocabInfo:
    """A 1000-id vocabulary with BERT-like special ids and 4 sentinels at the top."""
    return VocabInfo(
        size=1000,
        pad_id=0,
        unk_id=1,
        cls_id=2,
        sep_id=3,
        mask_id=4,
        sentinel_ids=(999, 998, 997, 996),
    )


@pytest.fixture(scope="session")
def wiki_docs() -> list[str]:
    from lm_jax.data.sources import wikipedia_sample

    return wikipedia_sample()


@pytest.fixture(scope="session")
def wiki_tokenizer(wiki_docs, tmp_path_factory):
    """A 2000-piece unigram SentencePiece model trained on the default corpus."""
    from lm_jax.data.tokenizer import train_sentencepiece

    path = tmp_path_factory.mktemp("tok") / "wiki.model"
    return train_sentencepiece(wiki_docs[:40], path, vocab_size=2000, extra_ids=10)


def train_xlnet_spiece(path: Path, sentences: list[str], vocab_size: int = 500) -> Path:
    """An XLNet-style `spiece.model` at `path`: <pad> 0, <unk> 1, no bos / eos, and the
    <sep> / <cls> / <mask> pieces of Hugging Face's XLNet vocabulary."""
    import sentencepiece as spm

    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(path.with_suffix("")),
        vocab_size=vocab_size,
        pad_id=0,
        unk_id=1,
        bos_id=-1,
        eos_id=-1,
        user_defined_symbols=["<sep>", "<cls>", "<mask>"],
    )
    return path


def tiny_config(**overrides):
    """The default pretraining config shrunk for CPU tests; overrides as dotted keys."""
    from lm_jax.config_tools import override
    from lm_jax.pretrain.schema import pretraining_config

    c = pretraining_config()
    c.data.corpus = "python_docs"
    c.data.seq_len = 64
    c.tokenizer.vocab_size = 1000
    c.tokenizer.extra_ids = 0
    c.model.hidden_size = 64
    c.model.num_layers = 1
    c.model.num_heads = 2
    c.model.intermediate_size = 128
    c.model.max_position = 64
    c.train.steps = 20
    c.train.batch_size = 8
    c.train.warmup_steps = 2
    c.train.log_every = 5
    c.train.eval_every = 10
    c.train.checkpoint_every = 10
    c.train.eval_batches = 2
    return override(c, overrides)


def tiny_cli_overrides(**overrides) -> list[str]:
    """The command-line flags (--config.FIELD=VALUE) that give tiny_config(**overrides)."""
    from lm_jax.config_tools import flatten
    from lm_jax.pretrain.schema import pretraining_config

    default = flatten(pretraining_config().to_dict())
    tiny = flatten(tiny_config(**overrides).to_dict())
    return [f"--config.{k}={v}" for k, v in tiny.items() if default.get(k) != v]


def run_module(module: str, *args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    """`python -m module args...` from the repository root (stdout, stderr captured)."""
    return subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_python(code: str, devices: int = 1, timeout: int = 600) -> str:
    """Run `code` in a fresh interpreter with `devices` fake CPU devices; returns stdout."""
    env = dict(
        os.environ,
        XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
        JAX_PLATFORMS="cpu",
    )
    proc = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if proc.returncode:
        raise AssertionError(f"subprocess failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return proc.stdout


def interrupt_at(monkeypatch, step: int, action) -> None:
    """Make the loop's train step call `action()` once the state reaches `step`."""
    from lm_jax.pretrain import run as loop

    real = loop.make_train_step

    def patched(*args, **kwargs):
        train_step = real(*args, **kwargs)

        def run(state, rows):
            state, sums = train_step(state, rows)
            return state, (action(sums) if int(state.step) >= step else sums)

        return run

    monkeypatch.setattr(loop, "make_train_step", patched)
