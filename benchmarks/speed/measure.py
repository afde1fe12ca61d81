"""How every benchmark measures: time as a ratio to a baseline step timed beside it, and peak memory.

Absolute times on a shared machine drift from one minute to the next, so a variant's time is only ever
compared with the baseline (a plain cross-entropy step) measured side by side: each repetition times the variant
once and the baseline once, in alternating order, and the figure kept is the median of those paired ratios, with
every repetition's ratio recorded beside it. Both sides of a ratio are single runs timed the same way, so the
ratio has no bias of its own: the control, the baseline timed against itself through the same pairing
(``time_ratios(..., control=True)``), reads 1 up to the run's noise, and its spread is the floor of what a ratio
can show.

Peak memory is the most tensor memory allocated at once while a step runs, above what was allocated when it
started. On a GPU that is ``torch.cuda.max_memory_allocated``. The CPU allocator keeps no such statistics
(and ``tracemalloc`` sees only Python's own allocations, not tensors), so on the CPU the step runs once under
``torch.profiler`` with ``profile_memory=True``, which records every tensor allocation and free with its size;
the running sum of those records, in time order, peaks at the figure wanted. It counts tensor bytes, as the
CUDA statistic does, and not the process's resident memory (which also holds the allocator's caches). The
profiler does not record the free of a block allocated before it started, so a step that frees the previous
step's gradients (``zero_grad(set_to_none=True)``) would count its new gradients as free: ``peak_memory`` frees a
network's gradients before it starts (``net``), so every step is measured from the same state, gradients included.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import torch
from torch.profiler import ProfilerActivity, profile

Step = Callable[[], object]
# one baseline run and one variant run per repetition, their order alternating (results.json: method)
PAIRING = "alternating"
CONTROL = "control"  # the key of the baseline timed against itself


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def elapsed(fn: Step, device: torch.device) -> float:
    """Seconds that ``fn`` takes, waiting for the GPU where there is one."""
    _sync(device)
    start = time.perf_counter()
    fn()
    _sync(device)
    return time.perf_counter() - start


def time_ratios(variants: dict[str, Step], baseline: Step, *, repeats: int, device: torch.device,
                warm_up: bool = True, control: bool = False) -> dict:
    """``{"baseline_s": median seconds, name: {"ratio": median ratio, "ratios": every repetition's ratio,
    "seconds": median seconds}}``, and under ``CONTROL`` the baseline against itself if ``control``.

    Each repetition times every variant once, paired with one baseline run right before it or right after it (the
    order alternating from one repetition to the next), so that a ratio compares two single measurements taken
    under the same load, neither favoured by being the fastest of several. Every step runs once first unless the
    caller has run them already (``warm_up=False``).
    """
    for fn in (baseline, *variants.values()) if warm_up else ():
        fn()
    timed = {**({CONTROL: baseline} if control else {}), **variants}
    ratios: dict[str, list[float]] = {name: [] for name in timed}
    seconds: dict[str, list[float]] = {name: [] for name in timed}
    base: list[float] = []
    for repetition in range(repeats):
        for name, fn in timed.items():
            if repetition % 2 == 0:
                reference = elapsed(baseline, device)
                took = elapsed(fn, device)
            else:
                took = elapsed(fn, device)
                reference = elapsed(baseline, device)
            base.append(reference)
            seconds[name].append(took)
            ratios[name].append(took / reference)
    return {"baseline_s": statistics.median(base),
            **{name: {"ratio": statistics.median(ratios[name]), "ratios": ratios[name],
                      "seconds": statistics.median(seconds[name])} for name in timed}}


def spread(ratios: list[float]) -> float:
    """How far apart repeated readings of one ratio lie: max / min - 1 (0 for a single reading)."""
    return max(ratios) / min(ratios) - 1


def peak_memory(fn: Step, device: torch.device, *, net: torch.nn.Module | None = None) -> int:
    """The peak bytes of tensor memory allocated while ``fn`` runs, above those allocated when it starts; ``net``'s
    gradients are freed first, outside the measurement (see the module's docstring)."""
    if net is not None:
        net.zero_grad(set_to_none=True)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        fn()
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - start
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        fn()
    records = sorted((e.start_ns(), e.nbytes()) for e in prof.profiler.kineto_results.events()
                     if e.name() == "[memory]")
    current = peak = 0
    for _, nbytes in records:
        current += nbytes
        peak = max(peak, current)
    return peak


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
