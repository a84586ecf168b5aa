"""The README's shell commands as a user types them: `bash scripts/pretrain.sh` with arguments.

CI runs this file from a clean clone (through `bash scripts/test.sh`), so a script that mangles
its arguments (as `source bootstrap.sh` once did, handing them to pip) cannot land again."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT

README_COMMAND = "bash scripts/pretrain.sh --config=configs/pretrain.py:wwm"


def test_readme_main_job_command_with_arguments_runs(tmp_path):
    readme = (ROOT / "README.md").read_text()
    assert re.search(rf"^{re.escape(README_COMMAND)}\b", readme, re.MULTILINE), README_COMMAND
    venv = Path(sys.prefix)
    if not (venv / ".lm_jax-installed").is_file():
        pytest.skip(f"{venv} was not set up by scripts/bootstrap.sh (run bash scripts/test.sh)")
    steps = [f"--config.train.{k}=4" for k in ("steps", "log_every", "eval_every")]
    command = [
        *README_COMMAND.split(),
        *steps,
        "--config.train.warmup_steps=1",
        "--config.train.checkpoint_every=4",
        "--config.train.batch_size=4",
        "--config.tokenizer.vocab_size=600",
        f"--config.output_dir={tmp_path / 'wwm'}",
    ]
    proc = subprocess.run(
        command,
        cwd=ROOT,
        env={**os.environ, "LM_JAX_VENV": str(venv)},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Pretrained 'wwm' to step 4" in proc.stdout, proc.stdout[-2000:]
    assert (tmp_path / "wwm" / "checkpoints" / "4").is_dir()
