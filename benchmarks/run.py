"""``make bench``: the speed and memory benchmarks, measured against their baselines in one run.

The meta step, memory, scaling, neighbour search, data loading, inference and the predictor under concurrent load;
results in ``benchmarks/results.json``, report in ``docs/benchmarks.md``.

    python -m benchmarks.run [--quick] [--data data/fashion-mnist] [--networks small_cnn,preact_resnet32]
                             [--sections serving,inference] [--json benchmarks/results.json]
                             [--output docs/benchmarks.md]

``--quick`` runs every section at toy sizes: it checks that the script works, not the figures.

``--sections a,b`` runs only the named sections (of ``benchmarks.speed.report.SECTIONS``) and merges them into the
results already in ``--json``: the other sections are kept as they were, the targets are recomputed, the report
is rendered again and its header names the rerun. The earlier results must come from the same machine, with the same
torch threads, torch, onnxruntime and allocator setting (``freed_memory_retained``), and both runs must be full or
both ``--quick``.
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

from benchmarks.gpu import report as gpu_report
from benchmarks.speed import (
    allocator,
    data_loading,
    experiments,
    meta_step,
    neighbour_search,
    report,
    scaling,
    serving,
    targets,
)
from benchmarks.speed.inference import compare_runtimes
from benchmarks.speed.measure import PAIRING, pick_device
from benchmarks.speed.workload import SHAPES, Workload, describe, prepare
from components.common.allocator import retain_freed_memory
from components.common.atomic import write_json
from components.common.errors import DataError
from components.export import to_onnx


@dataclass(frozen=True)
class Settings:
    batch: int = 128
    sets: int = 10
    repeats: tuple[tuple[str, int], ...] = (("small_cnn", 5), ("preact_resnet32", 3))  # interleaved repetitions
    profile_batch: tuple[tuple[str, int], ...] = (("small_cnn", 128), ("preact_resnet32", 16))
    sweep_sets: tuple[int, ...] = (1, 5, 10, 20)
    sweep_batch: tuple[int, ...] = (32, 64, 128, 256)
    sweep_repeats: int = 3
    train_size: int | None = None  # None: params.yaml's noise.train_size
    # Clothing1M's loader on synthetic web photos (benchmarks.speed.data_loading.streamed)
    loader_images: int = 256  # training images written and ingested (and one validation, one test image)
    loader_sizes: tuple[tuple[int, int], ...] = data_loading.WEB_PHOTO_SIZES
    loader_quality: int = 90  # JPEG quality
    loader_resize: int = 256  # the recipe's resize and crop
    loader_crop: int = 224
    loader_shard_size: int = 64
    loader_batch: int = 32  # the recipe's batch
    loader_workers: tuple[int, ...] = (1, 2)  # DataLoader workers of the timed epochs
    loader_passes: int = 2  # an epoch runs over the images this many times, so worker start-up is a small share
    loader_repeats: int = 3
    consumer: str = "resnet50"  # the Clothing1M network
    consumer_batch: int = 8
    # Inputs of the report's arithmetic for a GPU node, not measurements: images/s a GPU might consume, the
    # images of a Clothing1M epoch, and worker counts of a node.
    gpu_images_per_s: tuple[int, ...] = (250, 500, 1000, 2000)
    epoch_images: int = 1_000_000
    node_workers: tuple[int, ...] = (4, 8, 16)
    inference_repeats: int = 200
    serving_batches: tuple[int, ...] = (1, 64)
    serving_clients: int = 4  # client threads
    serving_requests: int = 400  # measured requests per batch size
    allocator_pairs: int = 2  # processes with glibc's defaults and with freed memory retained, alternating

    def repeats_for(self, network: str) -> int:
        return dict(self.repeats).get(network, 1)


QUICK = Settings(batch=16, sets=2, repeats=(), profile_batch=(("small_cnn", 16), ("preact_resnet32", 8)),
                 sweep_sets=(1, 2), sweep_batch=(8, 16), sweep_repeats=1, train_size=200, loader_images=6,
                 loader_sizes=((48, 40), (40, 48)), loader_resize=36, loader_crop=32, loader_shard_size=3,
                 loader_batch=2, loader_passes=1, loader_repeats=1, consumer="small_cnn", consumer_batch=4,
                 inference_repeats=3, serving_clients=2, serving_requests=4, allocator_pairs=1)


def run_all(settings: Settings, workload: Workload, networks: list[str], work: Path, device: torch.device, *,
            only: list[str] | None = None) -> dict:
    """Every section, or those in ``only``; their results by name, and their times under ``section_s``."""
    s, out, clock = settings, {}, {}

    def section(name, fn):
        if only is not None and name not in only:
            return
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
        "in_memory": data_loading.in_memory(workload, batch_size=s.batch, **common),
        "clothing1m": data_loading.streamed(
            work, images=s.loader_images, sizes=s.loader_sizes, quality=s.loader_quality, resize=s.loader_resize,
            crop=s.loader_crop, shard_size=s.loader_shard_size, batch_size=s.loader_batch, workers=s.loader_workers,
            passes=s.loader_passes, repeats=s.loader_repeats, consumer=s.consumer, consumer_batch=s.consumer_batch,
            gpu_images_per_s=s.gpu_images_per_s, epoch_images=s.epoch_images, node_workers=s.node_workers,
            **common)})
    section("inference", lambda: inference(workload, repeats=s.inference_repeats))
    section("serving", lambda: serving.run(workload, work / "serving", batches=s.serving_batches,
                                           clients=s.serving_clients, requests=s.serving_requests))
    section("experiments", lambda: experiments.run(workload, batch_size=s.batch, sets=s.sets,
                                                   repeats=s.sweep_repeats + 1,
                                                   coupled_batch=dict(s.profile_batch)["preact_resnet32"], **common))
    if device.type == "cpu":  # glibc's malloc: a CPU matter
        section("allocator", lambda: allocator.run(workload, work, batch_size=s.batch, sets=s.sets,
                                                   repeats=s.sweep_repeats + 1, pairs=s.allocator_pairs))
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
    parser.add_argument("--sections", help="run only these sections (comma-separated) and merge them into --json")
    parser.add_argument("--json", type=Path, default=Path("benchmarks/results.json"))
    parser.add_argument("--output", type=Path, default=Path("docs/benchmarks.md"))
    args = parser.parse_args(argv)
    networks = args.networks.split(",")
    unknown = sorted(set(networks) - set(SHAPES))
    if unknown:
        parser.error(f"Unknown network(s) {', '.join(unknown)}. Valid: {', '.join(SHAPES)}")
    settings, device = (QUICK if args.quick else Settings()), pick_device()
    retained = retain_freed_memory()  # as the training steps do: the figures are those of a training process
    count = 1 if args.quick else None  # a quick run only checks the script; one thread keeps it fast on a busy machine
    with threads(count):
        here = {**machine(device), "freed_memory_retained": retained}
    only = previous = None
    if args.sections is not None:
        try:
            only = parse_sections(args.sections)
            previous = earlier_results(args.json, quick=args.quick, here=here)
        except ValueError as exc:
            parser.error(str(exc))
    if not args.data.exists():
        raise DataError(f"{args.data}: expected the dataset, found no such folder (run make data)")
    started, load = time.perf_counter(), os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp, threads(count):
        workload = prepare(args.data, Path(tmp), params_file=args.params, train_size=settings.train_size)
        fresh = run_all(settings, workload, networks, Path(tmp), device, only=only)
    timing = {"finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
              "duration_s": round(time.perf_counter() - started, 1),
              "load_average": [round(load, 2), round(os.getloadavg()[0], 2)]}
    if previous is None:
        results = whole(fresh, timing, quick=args.quick, settings=settings, here=here, workload=workload)
    else:
        results = merge(previous, fresh, {"sections": only, **timing}, settings=settings)
    results["targets"] = targets.evaluate(results)
    gpu = gpu_report.load()  # make gpu-check's committed results: the GPU section
    report.render(json.loads(json.dumps(results)), gpu)  # first: a report that cannot render writes neither file
    write_json(args.json, results)
    report.write(json.loads(args.json.read_text()), args.output, gpu)  # the report renders the file, as written
    print(f"bench: {args.json} and {args.output} written in {timing['duration_s']} s")
    return 0


def parse_sections(text: str) -> list[str]:
    """``a,b`` as a list of section names; a ``ValueError`` naming any that ``make bench`` does not have."""
    names = [name for name in text.split(",") if name]
    unknown = sorted(set(names) - set(report.SECTIONS))
    if not names or unknown:
        raise ValueError(f"--sections: expected names from {', '.join(report.SECTIONS)}, found "
                         f"{', '.join(unknown) if unknown else 'none'}")
    return [name for name in report.SECTIONS if name in names]


# What a rerun must share with the results it merges into, besides the machine: the header names them once.
SAME_SETTINGS = ("threads", "torch", "onnxruntime", "freed_memory_retained")


def earlier_results(path: Path, *, quick: bool, here: dict) -> dict:
    """The results to merge a rerun into; a ``ValueError`` if there are none, or they are another kind of run
    (full or quick), come from another machine, or were measured with other settings (``SAME_SETTINGS``): the
    report's header names the first run's settings for every section."""
    previous = _read_results(path)
    kind = {True: "a quick run", False: "a full run"}
    if previous["quick"] != quick:
        raise ValueError(f"--sections: {path} holds {kind[bool(previous['quick'])]}; this would be {kind[quick]} "
                         "(pass --quick to both or to neither)")
    theirs = previous["machine"]
    if (theirs.get("name"), theirs.get("device")) != (here["name"], here["device"]):
        raise ValueError(f"--sections: {path} was measured on {theirs.get('name')} ({theirs.get('device')}), this "
                         f"run would be on {here['name']} ({here['device']}); rerun every section instead")
    differ = [f"{key} {theirs.get(key, 'not recorded')} there, {here[key]} here" for key in SAME_SETTINGS
              if theirs.get(key) != here[key]]
    if differ:
        raise ValueError(f"--sections: {path} was measured with other settings ({'; '.join(differ)}); rerun every "
                         "section instead, or rerun with the earlier settings")
    return previous


def _read_results(path: Path) -> dict:
    expected = f"--sections: expected the results of an earlier run in {path}"
    try:
        previous = json.loads(path.read_text())
    except OSError as exc:
        raise ValueError(f"{expected}, found {exc.strerror.lower()} (run without --sections first)") from None
    except ValueError as exc:
        raise ValueError(f"{expected}, found invalid JSON ({exc})") from None
    missing = [key for key in ("quick", "machine", "section_s") if key not in previous] \
        if isinstance(previous, dict) else ["quick"]
    if missing:
        raise ValueError(f"{expected}, found no {missing[0]!r} in it")
    return previous


def whole(fresh: dict, timing: dict, *, quick: bool, settings: Settings, here: dict, workload: Workload) -> dict:
    """The results of a run of every section."""
    return {"quick": quick, "settings": dataclasses.asdict(settings),
            "machine": {**here, "load_average": timing["load_average"]},
            "workload": describe(workload), "method": {"pairing": PAIRING},
            **fresh, "duration_s": timing["duration_s"], "finished": timing["finished"]}


def merge(previous: dict, fresh: dict, rerun: dict, *, settings: Settings) -> dict:
    """``previous`` with the sections of ``fresh`` in place of its own and ``rerun`` added to its reruns."""
    results = {**previous, **{name: value for name, value in fresh.items() if name != "section_s"}}
    results["section_s"] = {**previous["section_s"], **fresh["section_s"]}
    results["settings"] = dataclasses.asdict(settings)
    results["reruns"] = [*previous.get("reruns", []), rerun]
    return results


if __name__ == "__main__":
    raise SystemExit(main())
