"""What retaining freed memory does to a meta step's time and page faults.

``components.common.allocator.retain_freed_memory`` is applied by the training steps and by ``make bench``. This
measures a meta step's time as a ratio to a CE step, and its page faults per step, with glibc's default settings and
with freed memory retained.

The setting is process-wide and cannot be undone, so each side runs in its own process
(``python -m benchmarks.speed.allocator``), on the same batch and the same initial weights, the two kinds alternating.
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import subprocess
import sys
from pathlib import Path

import torch

from benchmarks.speed.measure import Step, time_ratios
from benchmarks.speed.meta_step import steps
from benchmarks.speed.workload import Batch, Workload, fresh_network, make_batch
from components.common.allocator import retain_freed_memory

VARIANTS = ("first_order", "exact")
NETWORK = "small_cnn"


def run(workload: Workload, work: Path, *, batch_size: int, sets: int, repeats: int, pairs: int) -> dict:
    """``pairs`` processes of each kind, alternating; the medians of their figures, and under ``time_ratios``
    every repetition's ratio in every process of that kind (the spread the report's verdict is judged against)."""
    batch_file = Path(work) / "allocator-batch.pt"
    batch = make_batch(workload, NETWORK, size=batch_size, sets=sets)
    torch.save({"classes": workload.feature_net.head.out_features, **vars(batch)}, batch_file)
    runs: dict[str, list[dict]] = {"default": [], "retained": []}
    for _ in range(pairs):
        for kind, found in runs.items():
            found.append(_child(batch_file, retain=kind == "retained", repeats=repeats))
    return {"network": NETWORK, "batch": batch_size, "sets": sets, "processes": pairs,
            **{kind: _median(found) for kind, found in runs.items()}}


def probe(batch_file: Path, *, retain: bool, repeats: int) -> dict:
    """In this process: the variants' time ratios to a CE step and each step's page faults."""
    applied = retain_freed_memory() if retain else False
    saved = torch.load(batch_file, weights_only=True)
    batch = Batch(saved["images"], saved["labels"], saved["synthetic"], saved["teacher"])
    cpu = torch.device("cpu")
    fns = steps(fresh_network(NETWORK, saved["classes"], cpu), batch)
    timing = time_ratios({v: fns[v] for v in VARIANTS}, fns["ce"], repeats=repeats, device=cpu)
    return {"applied": applied, "time_ratio": {v: timing[v]["ratio"] for v in VARIANTS},
            "time_ratios": {v: timing[v]["ratios"] for v in VARIANTS},
            "page_faults": {v: _faults(fns[v]) for v in ("ce", *VARIANTS)}}


def _faults(step: Step) -> int:
    """Minor page faults of this process during one run of ``step``."""
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before


def _child(batch_file: Path, *, retain: bool, repeats: int) -> dict:
    command = [sys.executable, "-m", "benchmarks.speed.allocator", str(batch_file), "--repeats", str(repeats),
               "--threads", str(torch.get_num_threads()), *(["--retain"] if retain else [])]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"benchmarks.speed.allocator: expected a measurement, found exit {done.returncode}: {last}")
    return json.loads(done.stdout)


def _median(found: list[dict]) -> dict:
    return {"applied": all(f["applied"] for f in found),
            "time_ratios": {v: [x for f in found for x in f["time_ratios"][v]] for v in VARIANTS},
            **{key: {v: statistics.median(f[key][v] for f in found) for v in found[0][key]}
               for key in ("time_ratio", "page_faults")}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.speed.allocator", description=__doc__.splitlines()[0])
    parser.add_argument("batch", type=Path, help="a batch saved by run()")
    parser.add_argument("--retain", action="store_true", help="retain freed memory before measuring")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(json.dumps(probe(args.batch, retain=args.retain, repeats=args.repeats)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
