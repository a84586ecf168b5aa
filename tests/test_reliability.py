"""Faults a real run meets, injected: a second run into the same directory, a torn metrics log,
a corrupt or inconsistent checkpoint, an edited corpus, a full disk, Ctrl-C. Each ends with a
clear error (or a warning) and a directory a rerun recovers from. The real full disk, the edited
corpus and Ctrl-C (each a full run or two) are in the slow suite."""

import errno
import json
import logging
import os
import shutil
import signal
import subprocess
import sys

import numpy as np
import pytest
from conftest import ROOT, interrupt_at, tiny_cli_overrides, tiny_config

from lm_jax.errors import CheckpointError, OutputError
from lm_jax.pretrain.run import pretrain
from lm_jax.train.checkpoint import CHECKSUM_FILE, RUN_CONFIG_FILE, checkpoint_steps, file_checksums
from lm_jax.train.metrics import read_metrics
from lm_jax.train.run_directory import RunDirectoryLock

STEPS = {"train.steps": 20, "train.eval_every": 10, "train.checkpoint_every": 10}


def digest(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in folder.rglob("*") if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished 20-step run with checkpoints at steps 10 and 20."""
    workdir = tmp_path_factory.mktemp("finished") / "run"
    return workdir, pretrain(tiny_config(**STEPS), workdir, progress=False)


@pytest.fixture
def run_copy(finished, tmp_path):
    shutil.copytree(finished[0], tmp_path / "run")
    return tmp_path / "run"


def test_a_second_run_into_a_locked_directory_is_refused_untouched(run_copy):
    before = digest(run_copy)
    with RunDirectoryLock(run_copy):
        with pytest.raises(
            OutputError, match=rf"in use by another lm_jax run \(process {os.getpid()}"
        ):
            pretrain(tiny_config(**{**STEPS, "train.steps": 30}), run_copy, progress=False)
    assert digest(run_copy) == before


def test_a_killed_holder_leaves_no_stale_lock(tmp_path):
    code = (
        "import sys, time; sys.path.insert(0, '.');"
        "from lm_jax.train.run_directory import RunDirectoryLock;"
        f"lock = RunDirectoryLock({str(tmp_path)!r}).__enter__(); print('locked', flush=True);"
        "time.sleep(60)"
    )
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE)
    assert holder.stdout.readline().strip() == b"locked"
    with pytest.raises(OutputError, match=f"process {holder.pid}"):
        RunDirectoryLock(tmp_path).__enter__()
    holder.send_signal(signal.SIGKILL)
    holder.wait()
    with RunDirectoryLock(tmp_path):  # the kernel released the dead process's lock
        pass


def test_output_dir_that_is_a_file_is_an_error(tmp_path):
    (tmp_path / "file").write_text("not a directory")
    with pytest.raises(OutputError, match="cannot write the run directory"):
        pretrain(tiny_config(), tmp_path / "file", progress=False)
    with pytest.raises(OutputError, match="cannot write the run directory"):
        pretrain(tiny_config(), tmp_path / "file" / "run", progress=False)


def test_torn_last_metrics_line_is_dropped_and_an_extended_run_says_what_its_schedule_does(
    run_copy, caplog
):
    with (run_copy / "metrics.jsonl").open("a") as f:
        f.write('{"step": 21, "split": "tr')  # what a power loss leaves
    with caplog.at_level(logging.WARNING):
        run = pretrain(tiny_config(**{**STEPS, "train.steps": 30}), run_copy, progress=False)
    assert run.final_step == 30 and run.trained_steps == 10
    assert "not a complete metrics record" in caplog.text
    evals = [r["step"] for r in read_metrics(run.metrics_path) if r["split"] == "eval"]
    assert evals == [0, 10, 20, 30]
    assert all(line.endswith("}") for line in run.metrics_path.read_text().splitlines())
    assert "config.train.steps changed 20 -> 30" in caplog.text
    assert "config.train.decay_steps=20 to keep the original schedule" in caplog.text


def flip_one_byte(step_dir):
    target = max((p for p in step_dir.rglob("*") if p.is_file()), key=lambda p: p.stat().st_size)
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0x01
    target.write_bytes(bytes(data))


def test_a_flipped_byte_is_reported_with_the_way_back(run_copy):
    flip_one_byte(run_copy / "checkpoints" / "20")
    before = digest(run_copy)
    more = tiny_config(**{**STEPS, "train.steps": 30})
    with pytest.raises(CheckpointError, match=r"checkpoints/20 is corrupt.*resume from step 10"):
        pretrain(more, run_copy, progress=False)
    assert digest(run_copy) == before
    # The way back the message gives: move the corrupt checkpoint aside and rerun.
    os.rename(run_copy / "checkpoints" / "20", run_copy / "checkpoints" / "20.corrupt")
    run = pretrain(more, run_copy, progress=False)
    assert run.final_step == 30 and checkpoint_steps(run_copy / "checkpoints") == [10, 20, 30]


def rewrite_checksums(step_dir):
    (step_dir / CHECKSUM_FILE).write_text(json.dumps(file_checksums(step_dir)))


def test_a_data_position_that_does_not_match_the_step_is_refused(run_copy):
    step_dir = run_copy / "checkpoints" / "20"
    state_file = step_dir / "data" / "process_0-of-1.json"  # grain's iterator state
    state = json.loads(state_file.read_text())
    assert state["next_index"] == 20
    state_file.write_text(json.dumps({**state, "next_index": 7}))
    rewrite_checksums(step_dir)  # consistent files, inconsistent content
    with pytest.raises(CheckpointError, match="data position is batch 7, not 20"):
        pretrain(tiny_config(**{**STEPS, "train.steps": 30}), run_copy, progress=False)


@pytest.mark.slow
def test_an_edited_corpus_is_refused_on_resume(tmp_path, wiki_docs):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("\n\n".join(wiki_docs[:30]))
    config = tiny_config(**{**STEPS, "data.corpus": "text", "data.path": str(corpus)})
    pretrain(config, tmp_path / "run", progress=False)
    corpus.write_text("\n\n".join(wiki_docs[:29] + ["An edited last document."]))
    config.train.steps = 30
    with pytest.raises(CheckpointError, match="the corpus changed since checkpoint"):
        pretrain(config, tmp_path / "run", progress=False)


def test_missing_run_config_is_restored_from_the_checkpoint(run_copy, caplog):
    recorded = (run_copy / RUN_CONFIG_FILE).read_text()
    (run_copy / RUN_CONFIG_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        run = pretrain(tiny_config(**STEPS), run_copy, progress=False)
    assert "restored from the latest checkpoint" in caplog.text
    assert json.loads((run_copy / RUN_CONFIG_FILE).read_text()) == json.loads(recorded)
    # train.steps at the latest checkpoint: nothing to do, and the summary says so.
    assert run.final_step == 20 and run.trained_steps == 0


def test_tensorboard_on_a_full_disk_neither_blocks_nor_stops_a_sigterm_save(
    tmp_path, monkeypatch, caplog
):
    """tensorboardX's background writer died on ENOSPC and the run hung at its next write,
    deaf to SIGTERM. Now the failing write warns, TensorBoard stops, SIGTERM still saves."""
    from tensorboardX.event_file_writer import EventsWriter

    def full_disk(self, event):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(EventsWriter, "write_event", full_disk)
    sent = []
    interrupt_at(
        monkeypatch, 7, lambda sums: sent.append(os.kill(os.getpid(), signal.SIGTERM)) or sums
    )
    with caplog.at_level(logging.WARNING):
        run = pretrain(tiny_config(), tmp_path / "run", progress=False)
    assert "TensorBoard events stop here" in caplog.text
    assert run.interrupted and run.signal == "SIGTERM" and run.final_step == 7
    assert checkpoint_steps(tmp_path / "run" / "checkpoints") == [7]


@pytest.mark.slow
def test_ctrl_c_saves_like_sigterm(tmp_path, monkeypatch):
    sent = []
    interrupt_at(
        monkeypatch, 7, lambda sums: sent.append(os.kill(os.getpid(), signal.SIGINT)) or sums
    )
    run = pretrain(tiny_config(), tmp_path / "run", progress=False)
    assert run.interrupted and run.signal == "SIGINT" and run.final_step == 7
    assert checkpoint_steps(tmp_path / "run" / "checkpoints") == [7]


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs (root can mount one on this project's machines; elsewhere: skip)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True
    )
    if proc.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_read_only_run_directory_is_refused_before_any_work(finished, small_disk):
    """Found at the start (the lock file), not after the checkpoint is restored."""
    shutil.copytree(finished[0], small_disk / "run")
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    before = digest(small_disk / "run")
    with pytest.raises(OutputError, match="cannot write the run directory .*Read-only file system"):
        pretrain(tiny_config(**{**STEPS, "train.steps": 30}), small_disk / "run", progress=False)
    assert digest(small_disk / "run") == before


@pytest.mark.slow
def test_a_full_disk_stops_with_an_error_and_the_run_resumes_elsewhere(small_disk, tmp_path):
    """A run that fills its disk exits 2 naming the failed write (no hang, no traceback); its
    directory, copied to a disk with room, resumes from the last intact checkpoint."""
    args = tiny_cli_overrides(**{"train.steps": 60, "train.keep_checkpoints": 10})

    def run_cli(output_dir):
        command = [
            sys.executable,
            "-m",
            "lm_jax.pretrain",
            *args,
            f"--config.output_dir={output_dir}",
        ]
        return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)

    full = run_cli(small_disk / "run")
    # (tensorstore's writer threads may print the failed write's traceback around the message)
    errors = [line for line in full.stderr.splitlines() if line.startswith("lm_jax: error:")]
    assert full.returncode == 2 and len(errors) == 1, full.stderr[-3000:]
    assert "No space left on device" in errors[0], errors[0]
    saved = checkpoint_steps(small_disk / "run" / "checkpoints")
    assert saved and saved[-1] < 60, saved
    shutil.copytree(small_disk / "run", tmp_path / "moved")
    resumed = run_cli(tmp_path / "moved")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resumed from {tmp_path / 'moved' / 'checkpoints'}" in resumed.stderr
    assert "Pretrained 'mlm' to step 60" in resumed.stdout
    assert np.isfinite(read_metrics(tmp_path / "moved" / "metrics.jsonl")[-1]["loss"])
