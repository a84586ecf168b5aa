"""Host memory reuse for XLA's CPU backend: keep freed memory instead of unmapping it.

XLA's CPU backend allocates each execution's temporaries as one block (0.9 GB for the BERT-small
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
import sys

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
