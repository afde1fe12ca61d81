"""``make gpu-check``: everything a lent GPU is needed for, in one command that writes what it measured to one folder.

    python -m benchmarks.gpu.check [--data data/fashion-mnist] [--out artifacts/gpu-check] [--quick] [--budget 420]

Sections, in this order (a section that fails records its error and the next one runs; one that would start after
``--budget`` seconds is skipped and says so):

* ``tests``: ``pytest -m gpu`` (the CUDA tests: the trainer on CUDA for CE and each mode, resume on CUDA, the
  meta-gradient on CUDA against the float64 CPU reference, the CUDA graph against the eager step); its log is
  ``pytest.log``.
* ``meta_step``: one training step of CE, ``head``, ``first_order``, ``exact``, the graphed exact step
  (``model.graphed``) and the reference loop, small CNN and PreAct ResNet-32, B = 128, M = 10, as ratios to the CE
  step (``benchmarks.speed.meta_step``; peak memory from ``torch.cuda.max_memory_allocated``).
* ``precision``: the exact gradient under bfloat16 autocast, and the graphed step's (TF32), against float32
  (TF32 off): relative error per parameter tensor, for the whole loss and for the meta loss alone.
* ``training``: a short Fashion-MNIST training in ``mode: auto`` (exact on CUDA), float32 against bfloat16 autocast
  on the same seeds, and the graphed step.
* ``memory``: the exact step's peak memory over M.

``--quick`` runs every section at toy sizes on whatever device there is (the suite runs it on the CPU): it checks
the script, not the figures. Results: ``<out>/results.json``; ``benchmarks/gpu/results.json`` holds the committed
run, which ``docs/benchmarks.md``'s GPU section renders (``python -m benchmarks.speed.report``).
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from benchmarks.run import machine
from benchmarks.speed import meta_step
from benchmarks.speed.measure import peak_memory
from benchmarks.speed.workload import Batch, Workload, make_batch, network_for, prepare
from components.common.atomic import write_json
from components.common.config import load_params
from components.common.splits import load_split
from model.graphed import GraphedExactStep, batched_exact_step, float32_precision
from model.mlnt import meta_loss, mlnt_loss, static_exact_step
from model.trainer import MlntConfig, train

NETWORKS = ("small_cnn", "preact_resnet32")
# head, first_order, exact, the graphed exact step (static: the eager loop; batched: vmap over the sets), reference
VARIANTS = (*meta_step.VARIANTS[:3], "graphed", "graphed_batched", "reference")
SECTIONS = ("tests", "training", "meta_step", "precision", "memory")


@dataclasses.dataclass(frozen=True)
class Settings:
    batch: int = 128
    sets: int = 10
    repeats: int = 20  # paired repetitions of each timed step
    train_size: int | None = None  # None: params.yaml's noise.train_size
    epochs: int = 6  # the short training
    ramp: tuple[float, float] = (1.0, 4.0)  # its ramp_start and ramp_end
    seeds: tuple[int, ...] = (0, 1)
    memory_sets: tuple[int, ...] = (1, 5, 10, 20)
    budget_s: float = 420.0


QUICK = Settings(batch=16, sets=2, repeats=1, train_size=400, epochs=2, ramp=(1.0, 1.0), seeds=(0,),
                 memory_sets=(1, 2))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu.check", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/fashion-mnist"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, default=Path("artifacts/gpu-check"))
    parser.add_argument("--quick", action="store_true", help="toy sizes on any device: checks that the script runs")
    parser.add_argument("--budget", type=float, help="seconds after which no further section starts")
    parser.add_argument("--sections", help=f"run only these (comma-separated, of {', '.join(SECTIONS)}); with "
                                           "--previous, the others are kept from that earlier run")
    parser.add_argument("--previous", type=Path, help="an earlier run's results.json to take the other sections from")
    args = parser.parse_args(argv)
    only = SECTIONS if args.sections is None else tuple(args.sections.split(","))
    if set(only) - set(SECTIONS):
        parser.error(f"--sections: expected names from {', '.join(SECTIONS)}, found {args.sections}")
    settings = QUICK if args.quick else Settings()
    if args.budget is not None:
        settings = dataclasses.replace(settings, budget_s=args.budget)
    if not torch.cuda.is_available() and not args.quick:
        print("error: benchmarks.gpu.check: expected a CUDA device (torch.cuda.is_available() is False); "
              "--quick checks the script on the CPU", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    results = {"quick": args.quick, "settings": dataclasses.asdict(settings), "machine": machine(device),
               "sections": {}, "section_s": {}}
    if args.previous is not None:  # the sections not run again, as that run measured them
        earlier = json.loads(args.previous.read_text())
        kept = [name for name in SECTIONS if name not in only and name in earlier["sections"]]
        results["sections"] = {name: earlier["sections"][name] for name in kept}
        results["section_s"] = {name: earlier["section_s"].get(name) for name in kept}
        results["kept_from_earlier_run"] = {"sections": kept, "machine": earlier["machine"]}
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        workload = prepare(args.data, Path(tmp), params_file=args.params, train_size=settings.train_size)
        results["prepare_s"] = round(time.perf_counter() - started, 1)
        params = load_params(args.params)["mlnt"]
        sections: dict[str, Callable[[], object]] = {
            "tests": lambda: run_tests(args.out, quick=args.quick),
            "training": lambda: training(workload, params, settings, device, results),
            "meta_step": lambda: [bench_network(workload, n, settings, device) for n in NETWORKS],
            "precision": lambda: [precision(workload, n, settings, device) for n in NETWORKS],
            "memory": lambda: [memory_over_sets(workload, n, settings, device) for n in NETWORKS]}
        for name in only:
            run_section(results, name, sections[name], started, settings.budget_s)
            write_json(args.out / "results.json", results)  # what is measured so far survives a kill
    results["duration_s"] = round(time.perf_counter() - started, 1)
    results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    write_json(args.out / "results.json", results)
    print(f"gpu-check: {args.out / 'results.json'} written in {results['duration_s']} s")
    return 0


def run_section(results: dict, name: str, fn: Callable[[], object], started: float, budget_s: float) -> None:
    """``fn``'s result under ``results["sections"][name]``; its error, or that it was skipped, instead."""
    if time.perf_counter() - started > budget_s:
        results["sections"][name] = {"skipped": f"the budget of {budget_s:.0f} s was spent"}
        return
    clock = time.perf_counter()
    print(f"gpu-check: {name} ...", flush=True)
    try:
        results["sections"][name] = fn()
    except Exception as exc:  # a failed section is recorded; the others still run
        traceback.print_exc()
        results["sections"][name] = {"error": f"{type(exc).__name__}: {exc}"}
    results["section_s"][name] = round(time.perf_counter() - clock, 1)


def run_tests(out: Path, *, quick: bool) -> dict:
    """``pytest -m gpu`` in a subprocess; its log in ``out/pytest.log``, its exit status and summary line here."""
    command = [sys.executable, "-m", "pytest", "-q", "-m", "gpu", "-p", "no:cacheprovider", "tests/model"]
    if quick:  # the suite calls this: collect the GPU tests without running them
        command.append("--collect-only")
    done = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                          check=False)
    log = done.stdout + done.stderr
    (out / "pytest.log").write_text(log)
    lines = [line for line in log.splitlines() if line.strip()]
    return {"command": " ".join(command[1:]), "returncode": done.returncode, "summary": lines[-1] if lines else ""}


def bench_network(workload: Workload, network: str, s: Settings, device: torch.device) -> dict:
    """``meta_step.measure`` with the graphed step beside the others."""
    batch = make_batch(workload, network, size=s.batch, sets=s.sets, device=device)
    net = network_for(network, workload, device)
    graphed = {False: GraphedExactStep(net, inner_lr=meta_step.INNER_LR),
               True: GraphedExactStep(net, inner_lr=meta_step.INNER_LR, batched=True)}
    x, y, synth, teacher = batch.images, batch.labels, batch.synthetic, batch.teacher

    def step(batched):
        return meta_step.training_step(net, lambda: graphed[batched](x, y, synth, teacher, meta_step.META_WEIGHT)[0])

    extra = {"graphed": step(False), "graphed_batched": step(True)}
    memory_of = {name: arithmetic(net, batch, batched=batched)
                 for name, batched in (("graphed", False), ("graphed_batched", True))}
    measured = meta_step.measure(net, batch, VARIANTS, repeats=s.repeats, device=device, extra=extra,
                                 memory_of=memory_of)
    return {"network": network, **measured, "graph_captures": [graphed[False].captures, graphed[True].captures]}


def precision(workload: Workload, network: str, s: Settings, device: torch.device) -> dict:
    """Relative error per parameter tensor, ``|g - g_float32| / |g_float32|``, of the exact gradient under
    bfloat16 autocast and of the graphed step (TF32), for the whole loss; and under bfloat16 for the meta loss
    alone. Each gradient starts from the same weights and running statistics."""
    batch = make_batch(workload, network, size=s.batch, sets=s.sets, device=device)
    net = network_for(network, workload, device)
    x, y, synth, teacher = batch.images, batch.labels, batch.synthetic, batch.teacher

    def loss(model):
        return mlnt_loss(model, x, y, synth, teacher, inner_lr=meta_step.INNER_LR, meta_weight=meta_step.META_WEIGHT,
                         mode="exact")

    def meta(model):
        return meta_loss(model, x, synth, teacher, inner_lr=meta_step.INNER_LR, mode="exact")

    def graphed(batched):
        def run(model):
            step = GraphedExactStep(model, inner_lr=meta_step.INNER_LR, batched=batched)
            return step(x, y, synth, teacher, meta_step.META_WEIGHT)[0]
        return run

    with float32_precision("ieee"):
        whole, alone = gradient(net, loss, bf16=False), gradient(net, meta, bf16=False)
    return {"network": network, "reference": "float32 without TF32",
            "bfloat16": errors(gradient(net, loss, bf16=True), whole),
            "bfloat16_meta_loss": errors(gradient(net, meta, bf16=True), alone),
            "torch_defaults": errors(gradient(net, loss, bf16=False), whole),  # TF32 convolutions (cuDNN's default)
            "graphed": errors(gradient(net, graphed(False), bf16=False), whole),
            "graphed_batched": errors(gradient(net, graphed(True), bf16=False), whole),
            "tf32": tf32_errors(net, loss, whole)}


def gradient(net: nn.Module, loss: Callable[[nn.Module], torch.Tensor], *, bf16: bool) -> list[torch.Tensor]:
    model = copy.deepcopy(net)
    device = next(model.parameters()).device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16 and device.type == "cuda"):
        value = loss(model)
    value.backward()
    return [p.grad.detach().float() for p in model.parameters()]


def errors(got: list[torch.Tensor], want: list[torch.Tensor]) -> dict:
    rel = sorted(float((g - w).norm() / w.norm().clamp_min(1e-30)) for g, w in zip(got, want, strict=True))
    return {"median": rel[len(rel) // 2], "max": rel[-1], "tensors": len(rel)}


def training(workload: Workload, params: dict, s: Settings, device: torch.device, results: dict) -> list[dict]:
    """Short MLNT runs on the workload's noisy Fashion-MNIST split, ``mode: auto``: the meta step in float32 (the
    trainer's default: ``amp_meta: false``) and under bfloat16 autocast (``amp_meta: true``) on each seed, and the
    graphed step on the first; the best validation accuracy of each. Each run is recorded in ``results`` as it ends
    (a failed one with its error)."""
    train_data, val_data, _ = load_split(workload.ingest, workload.noise)
    fields = {f.name for f in dataclasses.fields(MlntConfig)}
    base = MlntConfig(**{**{k: v for k, v in params.items() if k in fields}, "epochs": s.epochs,
                         "ramp_start": s.ramp[0], "ramp_end": s.ramp[1], "lr_milestones": [], "mode": "auto",
                         "progress": False, "checkpoint_every": 0, "eval_every": 0, "device": device.type,
                         "batch_size": min(params["batch_size"], len(train_data))})
    runs = [(seed, name, changes) for seed in s.seeds
            for name, changes in (("float32", {"amp_meta": False}), ("bfloat16", {"amp_meta": True}))]
    runs.append((s.seeds[0], "graphed", {"graph": True}))
    out = results["sections"]["training"] = []
    for seed, name, changes in runs:
        config = dataclasses.replace(base, seed=seed, amp=True, **changes)
        net = network_for("small_cnn", workload, device, seed=seed)
        started = time.perf_counter()
        try:
            result = train(config, net, train_data, val_data=val_data,
                           feature_net=copy.deepcopy(workload.feature_net).to(device))
        except Exception as exc:  # recorded; the next run still runs
            traceback.print_exc()
            out.append({"name": name, "seed": seed, "error": f"{type(exc).__name__}: {exc}"})
            continue
        out.append({"name": name, "seed": seed, "mode": result.mode, "val_accuracy": result.best_score,
                    "released": result.best_model,
                    "final_val_accuracy_student": result.history[-1]["val_accuracy_student"],
                    "seconds": round(time.perf_counter() - started, 1), "steps": result.steps})
    return out


def memory_over_sets(workload: Workload, network: str, s: Settings, device: torch.device) -> dict:
    """Peak memory of the CE step and of the exact step at each M (and of the batched arithmetic the graph
    holds), in MB."""
    out = {"network": network, "sets": list(s.memory_sets), "exact_mb": [], "graphed_mb": [], "graphed_batched_mb": []}
    for sets in s.memory_sets:
        batch = make_batch(workload, network, size=s.batch, sets=sets, device=device)
        net = network_for(network, workload, device)
        fns = meta_step.steps(net, batch)
        if "ce_mb" not in out:
            out["ce_mb"] = peak_memory(fns["ce"], device, net=net) / 2**20
        out["exact_mb"].append(peak_memory(fns["exact"], device, net=net) / 2**20)
        for batched, key in ((False, "graphed_mb"), (True, "graphed_batched_mb")):
            out[key].append(peak_memory(arithmetic(net, batch, batched=batched), device, net=net) / 2**20)
    return out


def arithmetic(net: nn.Module, batch: Batch, *, batched: bool) -> Callable[[], None]:
    """The graphed step's arithmetic run eagerly, as the graph runs it: what its memory pool holds (a replay
    allocates nothing)."""
    step = batched_exact_step if batched else static_exact_step

    def run():
        with torch.autocast(batch.images.device.type, enabled=False):
            step(net, batch.images, batch.labels, batch.synthetic, batch.teacher, meta_step.META_WEIGHT,
                 inner_lr=meta_step.INNER_LR)
    return run


def tf32_errors(net: nn.Module, loss: Callable[[nn.Module], torch.Tensor], want: list[torch.Tensor]) -> dict:
    """``errors`` of the gradient with TF32 for every float32 matrix product and convolution."""
    with float32_precision("tf32"):
        return errors(gradient(net, loss, bf16=False), want)
