"""Sharding: the logical-axis rules, meshes of 8 fake CPU devices (data, fsdp, tensor) giving the
losses of one device, and a 2-process `jax.distributed` run on localhost."""

import json
import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from conftest import ROOT, distributed_pretraining, run_python, tiny_cli_overrides, tiny_config
from jax.sharding import PartitionSpec as P

from lm_jax.pretrain.run import pretrain
from lm_jax.runtime import cpu_device_count
from lm_jax.sharding import logical_to_spec, make_mesh, state_shardings
from lm_jax.train.metrics import read_metrics

SHORT_RUN = {
    "train.steps": 10,
    "train.log_every": 5,
    "train.eval_every": 10,
    "train.checkpoint_every": 10,
}


def test_logical_axis_rules():
    mesh = {"data": 2, "fsdp": 2, "tensor": 2}
    # Weights: "embed" over fsdp, heads / mlp / vocab over tensor.
    assert logical_to_spec(("embed", "mlp"), (64, 128), mesh) == P("fsdp", "tensor")
    assert logical_to_spec(("vocab", "embed"), (1000, 64), mesh) == P("tensor", "fsdp")
    # A mesh axis is used once per array: the second "embed" stays whole.
    assert logical_to_spec(("embed", "embed"), (64, 64), mesh) == P("fsdp", None)
    # Activations: the batch takes data x fsdp, so "embed" is not split again.
    assert logical_to_spec(("batch", "length", "embed"), (8, 16, 64), mesh) == P(
        ("data", "fsdp"), None, None
    )
    # A dimension the mesh axis does not divide is replicated (3 heads over 2 ways).
    assert logical_to_spec((None, "heads"), (32, 3), mesh) == P(None, None)
    assert logical_to_spec(("batch",), (6,), {"data": 4, "fsdp": 1, "tensor": 1}) == P(None)
    assert logical_to_spec(None, (4,), mesh) == P()


def test_adafactor_factored_moments_are_replicated():
    """Adafactor's row / column moments carry their parameter's logical axes but not its rank:
    they are replicated rather than sharded by the wrong dimension's name."""
    import optax
    from flax import nnx

    kernel = nnx.Param(np.zeros((256, 512), np.float32), logical_axes=("embed", "mlp"))
    params = nnx.State({"kernel": kernel})
    state = optax.adafactor(1e-2).init(params)
    mesh = make_mesh(data=1, devices=jax.devices()[:1])
    shardings = [
        (tuple(v.shape), s.spec)
        for v, s in zip(
            jax.tree.leaves(state, is_leaf=lambda x: isinstance(x, nnx.Variable)),
            jax.tree.leaves(state_shardings(state, mesh)),
        )
        if isinstance(v, nnx.Variable)
    ]
    assert ((256,), P()) in shardings and ((512,), P()) in shardings


def test_cpu_device_count():
    """How many devices a CPU-only host is split into: the most data ways that fit the cores
    and divide the batch next to the fixed axes; the mesh's size when it has no -1."""

    def count(cores, batch=8, **fields):
        return cpu_device_count(tiny_config(**{"train.batch_size": batch, **fields}), cores)

    assert [count(cores) for cores in (1, 2, 3, 4, 16)] == [1, 2, 2, 4, 8]
    assert count(4, batch=6) == 3 and count(4, batch=5) == 1
    assert count(4, **{"mesh.fsdp": 2}) == 4  # data -1: 2 ways x fsdp 2
    assert count(8, batch=4, **{"mesh.fsdp": 2}) == 4  # the batch splits 4 ways at most
    assert count(4, **{"mesh.data": 2, "mesh.fsdp": -1}) == 4
    assert count(1, **{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}) == 8  # the mesh's size
    assert count(4, **{"mesh.cpu_devices": 3}) == 3  # set explicitly
    assert count(4, **{"mesh.tensor": -1}) == 1
    assert count(4, **{"distributed.initialize": True}) == 1
    assert count(4, **{"mesh.data": 0}) == 1  # invalid: left to validate's clear error


@pytest.fixture(scope="module")
def one_device_run(tmp_path_factory):
    """The reference: 10 steps on this process's single CPU device."""
    run = pretrain(tiny_config(**SHORT_RUN), tmp_path_factory.mktemp("one"), progress=False)
    return run, [r["loss"] for r in read_metrics(run.metrics_path)]


@pytest.mark.slow  # the default run keeps the CLI data mesh and the two-process run
def test_meshes_of_8_devices_match_one_device(one_device_run, tmp_path):
    run, losses = one_device_run
    out = run_python(
        f"""
        import json, sys
        sys.path.insert(0, "tests")
        from conftest import tiny_config
        from lm_jax.train import metrics
        from lm_jax.pretrain.run import pretrain
        from lm_jax.train.metrics import read_metrics
        metrics.matmul_rate = lambda: 1e11  # the 8 CPU devices share this process's cores
        result = {{"peak": metrics.peak_flops()[0]}}
        for data, fsdp, tensor in [(1, 8, 1), (2, 2, 2)]:
            config = tiny_config(**{SHORT_RUN!r}, **{{
                "tokenizer.path": "{run.tokenizer_path}",
                "mesh.data": data, "mesh.fsdp": fsdp, "mesh.tensor": tensor}})
            run = pretrain(config, "{tmp_path}/" + f"{{data}}-{{fsdp}}-{{tensor}}", progress=False)
            kernel = run.state.params["encoder"]["layers"][0]["feed_forward"]["intermediate"]
            result[f"{{data}}-{{fsdp}}-{{tensor}}"] = {{
                "losses": [r["loss"] for r in read_metrics(run.metrics_path)],
                "spec": str(kernel["kernel"].sharding.spec),
            }}
        print(json.dumps(result))
        """,
        devices=8,
    )
    result = json.loads(out.strip().splitlines()[-1])
    assert result.pop("peak") == 1e11
    assert result["1-8-1"]["spec"] == "P('fsdp', None)"
    assert result["2-2-2"]["spec"] == "P('fsdp', 'tensor')"
    for mesh, r in result.items():
        assert r["losses"] == pytest.approx(losses, rel=1e-5), mesh


def test_two_process_distributed_run(one_device_run, tmp_path):
    """Two processes with 2 CPU devices each, joined by jax.distributed on localhost, train the
    same 10 steps as one device (each process reads its half of every global batch)."""
    run, losses = one_device_run
    fields = {"tokenizer.path": str(run.tokenizer_path), "output_dir": str(tmp_path / "run")}
    outputs = distributed_pretraining({**SHORT_RUN, **fields})
    assert "Pretrained 'mlm' to step 10" in outputs[0]
    distributed = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert distributed == pytest.approx(losses, rel=1e-5)
    assert (tmp_path / "run" / "checkpoints" / "10").is_dir()


def test_cli_splits_a_cpu_host_into_a_data_mesh(one_device_run, tmp_path):
    """The command line on a CPU-only host (no XLA_FLAGS device count) runs on a data mesh of
    config.mesh.cpu_devices devices and trains the same 10 steps as one device."""
    run, losses = one_device_run
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    overrides = {
        **SHORT_RUN,
        "tokenizer.path": str(run.tokenizer_path),
        "output_dir": str(tmp_path / "run"),
        "mesh.cpu_devices": 2,
    }
    proc = subprocess.run(
        [sys.executable, "-m", "lm_jax.pretrain", *tiny_cli_overrides(**overrides)],
        env={**env, "JAX_PLATFORMS": "cpu"},
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "mesh {'data': 2, 'fsdp': 1, 'tensor': 1} over 2 device(s)" in proc.stderr
    split = [r["loss"] for r in read_metrics(tmp_path / "run" / "metrics.jsonl")]
    assert split == pytest.approx(losses, rel=1e-5)
