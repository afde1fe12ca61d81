"""``make bench``: the meta step, memory, scaling, neighbour search, data loading and inference, measured
against their baselines in one run; results in ``benchmarks/results.json``, report in ``docs/benchmarks.md``.

    python -m benchmarks.run [--quick] [--data data/fashion-mnist] [--networks small_cnn,preact_resnet32]
                             [--json benchmarks/results.json] [--output docs/benchmarks.md]

``--quick`` runs every section at toy sizes: it checks that the script works, not the figures.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import onnxruntime
import torch

from benchmarks import data_loading, experiments, meta_step, neighbour_search, report, scaling
from benchmarks.inference import compare_runtimes
from benchmarks.measure import pick_device
from benchmarks.workload import SHAPES, Workload, prepare
from components.atomic import write_json
from components.export import to_onnx
from components.formats import DataError


@dataclass(frozen=True)
class Settings:
    batch: int = 128
    sets: int = 10
    repeats: tuple[tuple[str, int], ...] = (("small_cnn", 5), ("preact_resnet32", 1))  # interleaved repetitions
    profile_batch: tuple[tuple[str, int], ...] = (("small_cnn", 128), ("preact_resnet32", 16))
    sweep_sets: tuple[int, ...] = (1, 5, 10, 20)
    sweep_batch: tuple[int, ...] = (32, 64, 128, 256)
    sweep_repeats: int = 2
    train_size: int | None = None  # None: params.yaml's noise.train_size
    shard_images: int = 256
    shard_image_size: int = 224
    shard_size: int = 64
    consumer: str = "resnet50"  # the Clothing1M network
    consumer_batch: int = 8
    inference_repeats: int = 200

    def repeats_for(self, network: str) -> int:
        return dict(self.repeats).get(network, 1)


QUICK = Settings(batch=16, sets=2, repeats=(), profile_batch=(("small_cnn", 16), ("preact_resnet32", 8)),
                 sweep_sets=(1, 2), sweep_batch=(8, 16), sweep_repeats=1, train_size=200, shard_images=4,
                 shard_image_size=32, shard_size=3, consumer="small_cnn", consumer_batch=4, inference_repeats=3)


def run_all(settings: Settings, workload: Workload, networks: list[str], work: Path, device: torch.device) -> dict:
    s, out, clock = settings, {}, {}

    def section(name, fn):
        start = time.perf_counter()
        print(f"bench: {name} ...", flush=True)
        out[name] = fn()
        clock[name] = round(time.perf_counter() - start, 1)

    common = {"device": device}
    section("meta_step", lambda: [meta_step.run(workload, n, batch_size=s.batch, sets=s.sets,
                                                repeats=s.repeats_for(n), **common) for n in networks])
    section("profiles", lambda: [meta_step.top_ops(workload, n, v, batch_size=dict(s.profile_batch)[n], sets=s.sets,
                                                   **common) for n in networks for v in ("ce", "exact")])
    section("scaling", lambda: {
        "network": "small_cnn",
        "sets": scaling.over_sets(workload, "small_cnn", batch_size=s.batch, sets=s.sweep_sets,
                                  repeats=s.sweep_repeats, **common),
        "batch": scaling.over_batch(workload, "small_cnn", sizes=s.sweep_batch, sets=s.sets,
                                    repeats=s.sweep_repeats, **common)})
    section("neighbours", lambda: neighbour_search.run(workload, batch_size=s.batch, sets=s.sets,
                                                       repeats=s.repeats_for("small_cnn"), **common))
    section("data_loading", lambda: {
        "in_memory": data_loading.in_memory(workload, batch_size=s.batch),
        "sharded": data_loading.sharded(work, images=s.shard_images, image_size=s.shard_image_size,
                                        shard_size=s.shard_size, batch_size=32, consumer=s.consumer,
                                        consumer_batch=s.consumer_batch, **common)})
    section("inference", lambda: inference(workload, repeats=s.inference_repeats))
    section("experiments", lambda: experiments.run(workload, batch_size=s.batch, sets=s.sets,
                                                   repeats=s.sweep_repeats + 1,
                                                   coupled_batch=dict(s.profile_batch)["preact_resnet32"], **common))
    out["section_s"] = clock
    return out


def inference(workload: Workload, *, repeats: int) -> dict:
    """ONNX Runtime against eager PyTorch for the small CNN exported as the export step exports it."""
    net = workload.feature_net.cpu().eval()
    shape = (SHAPES["small_cnn"][0], SHAPES["small_cnn"][1], SHAPES["small_cnn"][1])
    onnx_bytes = to_onnx(net, workload.train.images[:2], {})
    return compare_runtimes(net, onnx_bytes, shape, batches=(1, 64), repeats=repeats, threads=1)


@contextmanager
def threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to ``count`` (None: left alone), restored afterwards."""
    previous = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def machine(device: torch.device) -> dict:
    if device.type == "cuda":
        name = torch.cuda.get_device_name(device)
    else:
        lines = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").is_file() else []
        name = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
                    platform.processor() or platform.machine())
    return {"device": device.type, "name": name, "threads": torch.get_num_threads(), "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__, "python": platform.python_version()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="toy sizes: checks that the script runs")
    parser.add_argument("--data", type=Path, default=Path("data/fashion-mnist"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--networks", default="small_cnn,preact_resnet32")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    networks = args.networks.split(",")
    unknown = sorted(set(networks) - set(SHAPES))
    if unknown:
        parser.error(f"Unknown network(s) {', '.join(unknown)}. Valid: {', '.join(SHAPES)}")
    if not args.data.exists():
        raise DataError(f"{args.data}: expected the dataset, found no such folder (run make data)")
    settings, device = (QUICK if args.quick else Settings()), pick_device()
    started, load = time.perf_counter(), os.getloadavg()[0]
    # A quick run only checks the script; one thread keeps it fast on a busy machine.
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, threads(1 if args.quick else None):
        workload = prepare(args.data, Path(tmp), params_file=args.params, train_size=settings.train_size)
        results = {"quick": args.quick, "settings": dataclasses.asdict(settings), "machine": machine(device),
                   "workload": {"source": workload.source, "train_samples": len(workload.train)},
                   **run_all(settings, workload, networks, Path(tmp), device)}
        results["machine"]["load_average"] = [round(load, 2), round(os.getloadavg()[0], 2)]
    results["duration_s"] = round(time.perf_counter() - started, 1)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    results["targets"] = report.targets(results)
    write_json(args.json, results)
    report.write(json.loads(args.json.read_text()), args.output)  # the report renders the file, as written
    print(f"bench: {args.json} and {args.output} written in {results['duration_s']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
