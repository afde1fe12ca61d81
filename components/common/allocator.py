"""Keep freed heap memory in the training process instead of handing it back to the kernel.

PyTorch's CPU tensors come from the C library's ``malloc``. glibc serves large blocks with ``mmap`` and
returns freed memory at the top of its heaps to the kernel once more than a threshold is free, so a training
step that allocates and frees the same large activations over and over gets fresh pages again and again, each
4 KiB page faulted in and zeroed by the kernel. The MLNT meta step allocates far more short-lived memory than a
plain step (M fast-weight passes, second-order graphs): on the benchmark batch an ``exact`` step of the small
CNN took tens of thousands of page faults (``make bench`` measures them), a CE step a few thousand or none.

``retain_freed_memory`` raises glibc's mmap and trim thresholds so that freed blocks stay in the process and
are reused (what preloading jemalloc or tcmalloc does, as PyTorch's CPU tuning guides advise, without a
preload). The page faults go to almost none; what that does to a meta step's time is measured by ``make bench``
(``benchmarks/speed/allocator.py``: the ``exact`` step's time / CE in separate processes with and without the setting,
with the spread of their repeated readings) and reported, with its verdict, in ``docs/benchmarks.md``. The cost:
the process's resident memory stays at its peak instead of shrinking between steps, which a training process
reaches again at its next step anyway. Other C libraries (musl, macOS) are left alone.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools

# mallopt(3) parameters
M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3
MMAP_THRESHOLD = 1 << 30  # blocks below this come from the heap (glibc caps it: 32 MiB before 2.35)
MMAP_THRESHOLD_FALLBACK = 32 << 20
TRIM_THRESHOLD = 2**31 - 1  # trim the heap only when 2 GiB at its top are free (mallopt takes an int)


@functools.cache
def retain_freed_memory() -> bool:
    """Set glibc's thresholds once per process; True if they were set, False where there is no glibc."""
    mallopt = _mallopt()
    if mallopt is None:
        return False
    if not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD) and not mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD_FALLBACK):
        return False
    return bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))


def _mallopt():
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
    except OSError:
        return None
    if not hasattr(libc, "mallopt") or not hasattr(libc, "gnu_get_libc_version"):  # glibc only
        return None
    libc.mallopt.argtypes, libc.mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return libc.mallopt
