"""lm_jax.runtime: a freed large block comes back without page faults; a split CPU host
waits out a starved device at its collectives."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from conftest import run_python

# Write to a 256 MB block from malloc 5 times (allocated and freed each time, as XLA:CPU does
# with a step's temporaries) and print the minor page faults of the last 4 rounds. (Not numpy:
# it asks the kernel for huge pages on large arrays, which XLA does not.)
FAULTS = textwrap.dedent(
    """
    import ctypes, resource, sys
    from lm_jax.runtime import reuse_freed_host_memory

    applied = reuse_freed_host_memory() if sys.argv[1] == "reuse" else False
    libc = ctypes.CDLL("libc.so.6")
    libc.malloc.restype, libc.free.argtypes = ctypes.c_void_p, [ctypes.c_void_p]
    for round in range(5):
        if round == 1:
            start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        block = libc.malloc(2**28)
        ctypes.memset(block, 1, 2**28)
        libc.free(block)
    print(applied, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start)
    """
)


def faults(mode: str) -> tuple[str, int]:
    out = subprocess.run(
        [sys.executable, "-c", FAULTS, mode], capture_output=True, text=True, check=True
    )
    applied, count = out.stdout.split()
    return applied, int(count)


def huge_pages_always() -> bool:
    """Whether the kernel backs every anonymous mapping with huge pages (fewer, larger faults)."""
    path = Path("/sys/kernel/mm/transparent_hugepage/enabled")
    return path.exists() and "[always]" in path.read_text()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's malloc only")
def test_freed_blocks_are_reused_without_page_faults():
    pages = 4 * 2**28 // 4096  # 4 rounds of 256 MB in 4 KiB pages
    applied, default_faults = faults("default")
    assert applied == "False"
    if not huge_pages_always():  # with 4 KiB pages every round faults on every page
        assert default_faults > 0.9 * pages
    applied, reuse_faults = faults("reuse")
    assert applied == "True" and reuse_faults < 0.01 * pages


def test_a_split_cpu_host_tolerates_a_starved_device():
    """Splitting the host raises XLA:CPU's 40 s collective timeout (a starved device thread
    would otherwise abort the run) and keeps a value the user set."""
    out = run_python(
        """
        import os
        os.environ.pop("XLA_FLAGS", None)
        from lm_jax import runtime
        from lm_jax.pretrain.schema import pretraining_config
        config = pretraining_config()
        config.mesh.cpu_devices = 2
        runtime.use_cpu_cores(config)
        import jax
        print(len(jax.devices()), os.environ["XLA_FLAGS"])
        os.environ["XLA_FLAGS"] = "--xla_cpu_collective_call_terminate_timeout_seconds=7"
        runtime.allow_slow_cpu_collectives()
        print(os.environ["XLA_FLAGS"])
        """
    )
    first, second = out.strip().splitlines()[-2:]
    assert first == "2 --xla_cpu_collective_call_terminate_timeout_seconds=1800"
    assert second == "--xla_cpu_collective_call_terminate_timeout_seconds=7"
