"""Shared fixtures: tiny vocabularies, a tokenizer trained on the default corpus, tiny configs."""

from __future__ import annotations

import json
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


# Out of the default run to keep it near 15 minutes: the tests of 25 s or more in a
# `--durations=0` profile of the default run (2026-12-01, 2-core CPU), the costlier cases of two
# parametrized tests (16-23 s each) whose other cases stay, and the BART run fine-tuning test;
# reference, property and learning checks whose capability keeps a faster test in the default
# run. `bash scripts/test.sh -m extended` runs
# them; CI runs them after the default run (.ci/run). A name that no longer matches a test is
# an error, so the list cannot silently go stale.
EXTENDED = {
    "test_attention.py::test_chunked_matches_reference_on_every_objective[chunks0]",
    "test_attention.py::test_tokamax_matches_reference_on_every_objective",
    "test_attention.py::test_two_stream_in_one_call_equals_two_calls",
    "test_autoregressive.py::test_unilm_modes_and_mixture",
    "test_configs.py::test_tiny_t5_trains_with_adafactor",
    "test_denoising.py::test_bart_odd_rows_give_valid_batches",
    "test_denoising.py::test_bart_permutation_and_rotation_preserve_tokens",
    "test_denoising.py::test_bart_replace_length_variants",
    "test_denoising.py::test_contract_jit_vmap_determinism_and_segments[bart]",
    "test_denoising.py::test_contract_jit_vmap_determinism_and_segments[mass]",
    "test_denoising.py::test_contract_jit_vmap_determinism_and_segments[t5]",
    "test_denoising.py::test_mass_fragment_and_decoder",
    "test_denoising.py::test_t5_length_function[1024]",
    "test_denoising.py::test_t5_length_function[128]",
    "test_denoising.py::test_t5_length_function[512]",
    "test_denoising.py::test_t5_length_function[64]",
    "test_denoising.py::test_t5_noise_statistics_match_the_reference",
    "test_denoising.py::test_t5_sentinel_order_and_exact_reconstruction[0]",
    "test_entities.py::test_entity_masking_masks_whole_spans",
    "test_finetune_parity.py::test_one_step_equals_hugging_face_with_adamw[electra-classification]",
    "test_finetune_qa.py::test_a_tiny_model_learns_spans_and_no_answers",
    "test_finetune_run.py::test_a_bart_pretraining_run_fine_tunes_from_the_decoders_last_state",
    "test_finetune_run.py::test_a_fresh_start_drops_the_best_model_of_a_run_that_crashed_early",
    "test_finetune_run.py::test_a_roberta_folder_fine_tunes_with_its_bpe_rows_and_head",
    "test_finetune_run.py::test_command_line_bad_input_exits_2_and_keeps_outputs",
    "test_finetune_shared_encoder.py::test_a_pretraining_run_fine_tunes_under_its_objectives_mask[clm]",
    "test_finetune_shared_encoder.py::test_a_pretraining_run_fine_tunes_under_its_objectives_mask[prefix_lm]",
    "test_finetune_shared_encoder.py::test_a_pretraining_run_fine_tunes_under_its_objectives_mask[unilm]",
    "test_finetune_shared_encoder.py::test_a_shared_encoder_from_scratch_learns_to_write_the_label[prefix]",
    "test_finetune_shared_encoder.py::test_a_shared_encoder_from_scratch_learns_to_write_the_label[unilm]",
    "test_finetune_shared_encoder.py::test_an_encoder_needs_a_mask_to_generate",
    "test_finetune_tasks.py::test_factors_follow_electra_and_scale_each_update",
    "test_finetune_text_to_text.py::test_a_seq2seq_pretraining_run_fine_tunes_text_to_text[bart]",
    "test_finetune_text_to_text.py::test_a_seq2seq_pretraining_run_fine_tunes_text_to_text[mass]",
    "test_finetune_text_to_text.py::test_a_seq2seq_pretraining_run_fine_tunes_text_to_text[t5]",
    "test_finetune_text_to_text.py::test_a_hugging_face_bart_folder_fine_tunes_text_to_text",
    "test_finetune_text_to_text.py::test_a_hugging_face_t5_folder_fine_tunes_text_to_text",
    "test_finetune_text_to_text.py::test_rank_classification_scores_each_label_word",
    "test_generation.py::test_causal_incremental_decoding_and_left_padding[causal]",
    "test_generation.py::test_seq2seq_generate_equals_hugging_face[t5-overrides5]",
    "test_masked_lm.py::test_electra_replace_labels_and_gumbel_sampling",
    "test_masked_lm.py::test_entity_spans_masked_whole",
    "test_masked_lm.py::test_property_valid_batch_on_odd_inputs",
    "test_masked_lm.py::test_sparse_layout_matches_dense",
    "test_masked_lm.py::test_wwm_with_single_token_words_hits_the_budget_and_accepts_word_ids",
    "test_model.py::test_bfloat16_compute_keeps_fp32_parameters_and_logits",
    "test_model.py::test_padding_does_not_change_real_outputs",
    "test_objectives.py::test_property_valid_batch_on_odd_inputs[electra]",
    "test_objectives.py::test_property_valid_batch_on_odd_inputs[entity]",
    "test_objectives.py::test_property_valid_batch_on_odd_inputs[mpnet]",
    "test_objectives.py::test_property_valid_batch_on_odd_inputs[ngram]",
    "test_objectives.py::test_property_valid_batch_on_odd_inputs[span]",
    "test_objectives.py::test_property_valid_batch_on_odd_inputs[unilm]",
    "test_objectives.py::test_property_valid_batch_on_odd_inputs[wwm]",
    "test_parity.py::test_seq2seq_matches_hugging_face[BartForConditionalGeneration-False-True]",
    "test_parity.py::test_xlnet_content_stream_matches_hugging_face",
    "test_parity.py::test_xlnet_memory_matches_hugging_face",
    "test_parity.py::test_xlnet_two_stream_permutation_lm_matches_hugging_face",
    "test_permutation.py::test_mpnet_position_compensation_and_masks[False]",
    "test_permutation.py::test_plm_masks_match_xlnet_reference[plain]",
    "test_permutation.py::test_plm_span_selection_takes_contiguous_spans",
    "test_reliability.py::test_torn_last_metrics_line_is_dropped_and_an_extended_run_says_what_its_schedule_does",
    "test_sentence.py::test_nsp_single_sentence_gets_a_random_b_and_long_pairs_are_trimmed",
    "test_sentence.py::test_odd_documents_give_valid_batches",
    "test_sentence.py::test_pairs_are_built_from_the_right_text[nsp]",
    "test_sentence.py::test_pairs_are_built_from_the_right_text[sop]",
    "test_sentence.py::test_pairs_are_built_from_the_right_text[structbert]",
    "test_sentence.py::test_structbert_word_structure",
    "test_sentence.py::test_tlm_pairs",
    "test_sharding.py::test_cli_splits_a_cpu_host_into_a_data_mesh",
    "test_sharding.py::test_two_process_distributed_run",
    "test_prepare.py::test_two_processes_stream_their_own_rows_and_train_the_losses_of_one",
    "test_prepare.py::test_grain_worker_processes_train_the_same_and_resume_exactly",
    "test_prepare.py::test_a_sentence_pair_objective_pretrains_from_a_prepared_corpus",
    "test_prepare.py::test_ernie_pretrains_from_a_prepared_annotated_corpus",
    "test_prepare.py::test_tlm_pretrains_from_a_prepared_parallel_corpus",
    "test_span.py::test_span_whole_words_decision_per_span_and_sbo_targets",
    "test_train.py::test_every_trainable_objective_learns[electra]",
    "test_train.py::test_every_trainable_objective_learns[nsp]",
    "test_train.py::test_every_trainable_objective_learns[plm]",
    "test_train.py::test_every_trainable_objective_learns[span]",
    "test_train.py::test_gradient_accumulation_updates_every_second_step",
    "test_notebooks.py::test_every_notebook_runs_and_draws[quickstart]",
    "test_notebooks.py::test_every_notebook_runs_and_draws[objectives]",
    "test_notebooks.py::test_every_notebook_runs_and_draws[finetune]",
    "test_notebooks.py::test_every_notebook_runs_and_draws[generate]",
}


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config, items):
    """Mark the EXTENDED tests (only a full collection can tell a stale name)."""
    found = set()
    for item in items:
        name = item.nodeid.removeprefix("tests/")
        if name in EXTENDED:
            item.add_marker(pytest.mark.extended)
            found.add(name)
    whole_suite = [Path(a).resolve() for a in config.args] == [ROOT / "tests"]
    if whole_suite and not config.getoption("keyword") and found != EXTENDED:
        raise pytest.UsageError(f"conftest.EXTENDED names no test: {sorted(EXTENDED - found)}")


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


def stacked_rows(rows):
    """A streamed row set (`PreparedRows`, `SentenceRows`) as arrays [rows, seq_len] by name."""
    import types

    import numpy as np

    first = rows[0]
    return types.SimpleNamespace(
        **{k: np.stack([rows[i][k] for i in range(len(rows))]) for k in first}
    )


def tiny_config(objective: str = "mlm", **overrides):
    """The default (or `objective`'s) pretraining config shrunk for CPU tests; overrides as
    dotted keys."""
    from lm_jax.config_tools import override
    from lm_jax.pretrain.schema import pretraining_config

    c = pretraining_config(objective)
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


def distributed_pretraining(fields: dict, processes: int = 2, timeout: int = 300) -> list[str]:
    """`python -m lm_jax.pretrain` on tiny_config(**fields) as `processes` processes with 2 CPU
    devices each, joined by jax.distributed on localhost; returns their stdouts (a failed
    process fails the test with its stderr)."""
    import socket

    with socket.socket() as s:
        s.bind(("localhost", 0))
        port = s.getsockname()[1]
    distributed = {
        "distributed.initialize": True,
        "distributed.coordinator_address": f"localhost:{port}",
        "distributed.num_processes": processes,
    }
    overrides = tiny_cli_overrides(**fields, **distributed)
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "lm_jax.pretrain",
                *overrides,
                f"--config.distributed.process_id={i}",
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(processes)
    ]
    outputs = [p.communicate(timeout=timeout) for p in procs]
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    return [out for out, _ in outputs]


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


def t5_tokenizer_folder(folder: Path, sentences: list[str], vocab_size: int, fast: bool) -> Path:
    """A Hugging Face T5 tokenizer saved to `folder` (`spiece.model` and
    tokenizer_config.json's `extra_ids`, plus tokenizer.json when `fast`), over a
    SentencePiece model with T5's layout: <pad> 0, </s> 1, <unk> 2, no [CLS] or [MASK]."""
    import sentencepiece as spm
    import transformers

    folder.mkdir(parents=True, exist_ok=True)
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(sentences),
        model_prefix=str(folder / "t5"),
        vocab_size=vocab_size,
        pad_id=0,
        eos_id=1,
        unk_id=2,
        bos_id=-1,
    )
    (folder / "t5.model").rename(folder / "spiece.model")
    (folder / "t5.vocab").unlink()
    settings = dict(tokenizer_class="T5Tokenizer", extra_ids=10, eos_token="</s>")
    settings.update(pad_token="<pad>", unk_token="<unk>")
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    if fast:  # transformers converts spiece.model and writes its tokenizer.json
        transformers.AutoTokenizer.from_pretrained(folder).save_pretrained(folder)
    return folder
