"""Process-wide platform tuning, applied by the entry points (`pretrain`, the command lines)
through `prepare(config)` before their first JAX computation; nobody has to remember it.

Host memory reuse for XLA's CPU backend (keep freed memory instead of unmapping it): XLA's CPU
backend allocates each execution's temporaries as one block (0.9 GB for the BERT-small
MLM train step of benchmarks/train_step.py). glibc's malloc serves a block that large with a
fresh `mmap` and unmaps it when freed, so every step writes to ~230,000 never-touched pages and
the kernel zero-fills each one on a page fault. On this project's 2-core VM that was 250,000
faults per step, and the step took 1,377 ms instead of 795 ms (benchmarks/train_step.py with and
without --default-malloc). With one malloc arena, no `mmap` for large blocks and no trimming,
the freed block is handed back to the next step, already mapped: no faults in most steps (now
and then a block lands in new memory and faults once more). The cost: the process keeps its
peak host memory until it exits, which a training process does anyway. Accelerator memory is
not affected.
"""

from __future__ import annotations

import ctypes
import logging
import math
import os
import sys

import jax
import ml_collections

log = logging.getLogger(__name__)
_prepared = False

# glibc's mallopt parameters (malloc.h).
_M_TRIM_THRESHOLD, _M_MMAP_MAX, _M_ARENA_MAX = -1, -4, -8


def reuse_freed_host_memory() -> bool:
    """Make glibc's malloc reuse freed memory (one arena, no mmap, no trim). Call it before the
    first JAX computation: threads that have already allocated keep their own arena. Returns
    whether the settings took effect; on other C libraries and systems it changes nothing and
    returns False."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt
    except (OSError, AttributeError):  # not glibc (e.g. musl)
        return False
    settings = ((_M_ARENA_MAX, 1), (_M_MMAP_MAX, 0), (_M_TRIM_THRESHOLD, -1))  # -1: never
    return all(mallopt(parameter, value) == 1 for parameter, value in settings)


def cpu_device_count(config: ml_collections.ConfigDict, cores: int) -> int:
    """How many JAX devices a CPU-only host with `cores` usable cores is split into for the
    pretraining `config`: `config.mesh.cpu_devices` when set (> 0); otherwise (0) the mesh's
    size when none of mesh.data, fsdp, tensor is -1, and when data or fsdp is -1, the most ways
    for it that fit the cores (next to the fixed axes) and divide `config.train.batch_size`.
    A multi-host run (`config.distributed.initialize`), a -1 tensor axis or invalid sizes (left
    to `lm_jax.pretrain.validation`) keep one device per process."""
    m = config.mesh
    if m.cpu_devices > 0:
        return m.cpu_devices
    sizes = {"data": m.data, "fsdp": m.fsdp, "tensor": m.tensor}
    if config.distributed.initialize or any(v == 0 or v < -1 for v in sizes.values()):
        return 1
    fixed = math.prod(v for v in sizes.values() if v != -1)
    free = [axis for axis, v in sizes.items() if v == -1]
    if not free:
        return fixed
    if len(free) > 1 or free[0] == "tensor":
        return 1
    other_batch_ways = sizes["fsdp" if free[0] == "data" else "data"]
    ways = max(1, cores // fixed)
    while ways > 1 and config.train.batch_size % (ways * other_batch_ways):
        ways -= 1
    return ways * fixed


# XLA:CPU aborts the process when a device of a CPU mesh waits over 40 s for the others at a
# collective (all-reduce of the gradients). On a shared or oversubscribed host one device's
# thread can be starved that long (seen on this project's 2-core VM: a fine-tuning run beside
# the test suite died at step 415), so the split host waits up to this long instead.
CPU_COLLECTIVE_TIMEOUT_FLAG = "--xla_cpu_collective_call_terminate_timeout_seconds"
CPU_COLLECTIVE_TIMEOUT_S = 1800


def allow_slow_cpu_collectives() -> None:
    """Raise XLA:CPU's collective termination timeout (unless XLA_FLAGS sets it) before the
    first JAX computation, when XLA reads XLA_FLAGS."""
    flags = os.environ.get("XLA_FLAGS", "")
    if CPU_COLLECTIVE_TIMEOUT_FLAG not in flags:
        setting = f"{CPU_COLLECTIVE_TIMEOUT_FLAG}={CPU_COLLECTIVE_TIMEOUT_S}"
        os.environ["XLA_FLAGS"] = f"{flags} {setting}".strip()


def use_cpu_cores(config: ml_collections.ConfigDict) -> int | None:
    """Split the host CPU into `cpu_device_count` JAX devices (`jax_num_cpu_devices`), so that a
    CPU-only run is a data mesh of programs running side by side on half-size (or smaller)
    batches rather than one program that XLA:CPU spreads over threads op by op; for this
    library's many small ops that is faster: the BERT-small MLM step of
    benchmarks/train_step.py took 10-20% less time on two devices than on one on this
    project's 2-core VM (4 devices there were slower than 2; larger hosts were not measured).
    Accelerators' devices are not affected. Call before the first JAX computation (the
    command line does). Returns the count set, or None when XLA_FLAGS already sets
    --xla_force_host_platform_device_count (left as it is)."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    count = cpu_device_count(config, len(os.sched_getaffinity(0)))
    jax.config.update("jax_num_cpu_devices", count)
    if count > 1:
        allow_slow_cpu_collectives()
    return count


def prepare(config: ml_collections.ConfigDict | None = None) -> None:
    """Tune the process once, at the first call: reuse freed host memory, and on a CPU-only
    host split the CPU into `cpu_device_count(config)` devices (no `config`: keep one). Later
    calls do nothing; after JAX has run a computation the device count can no longer change,
    and the run uses the devices there are."""
    global _prepared
    if _prepared:
        return
    _prepared = True
    reuse_freed_host_memory()
    if config is None:
        return
    try:
        use_cpu_cores(config)
    except RuntimeError:  # JAX already ran a computation: its CPU devices are fixed
        log.info("JAX is already initialised: keeping its %d device(s)", jax.device_count())
