"""components.common.allocator: a training process keeps freed memory instead of faulting in fresh pages."""

import subprocess
import sys
import textwrap

from components.common import allocator

# Allocate, fill and free a 64 MiB tensor 20 times (by default glibc maps blocks over 32 MiB afresh each
# time); print the minor page faults of the last 10 rounds.
PROBE = textwrap.dedent("""
    import resource, sys, torch
    from components.common.allocator import retain_freed_memory
    if sys.argv[1] == "retain":
        assert retain_freed_memory()
    def rounds(count):
        for _ in range(count):
            torch.empty(16 * 2**20).fill_(1.0)
    rounds(10)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    rounds(10)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
""")


def _faults(kind: str) -> int:
    done = subprocess.run([sys.executable, "-c", PROBE, kind], capture_output=True, text=True, check=True)
    return int(done.stdout)


def test_freed_memory_is_reused_instead_of_faulted_in_again():
    pages = 10 * 64 * 2**20 // 4096  # what 10 rounds touch
    assert _faults("default") > pages // 2  # glibc's defaults: fresh pages every round
    assert _faults("retain") < pages // 100


def test_without_glibc_nothing_is_changed(monkeypatch):
    monkeypatch.setattr(allocator.ctypes.util, "find_library", lambda name: None)
    assert allocator.retain_freed_memory.__wrapped__() is False


def test_a_c_library_without_mallopt_is_left_alone(monkeypatch):
    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: object())
    assert allocator.retain_freed_memory.__wrapped__() is False


def test_a_c_library_with_mallopt_that_is_not_glibc_is_left_alone(monkeypatch):
    """musl has a mallopt (which does nothing): only glibc's thresholds are set."""
    calls = []

    class Musl:
        def mallopt(self, *args):
            calls.append(args)
            return 1

    monkeypatch.setattr(allocator.ctypes, "CDLL", lambda name: Musl())
    assert allocator.retain_freed_memory.__wrapped__() is False and calls == []
