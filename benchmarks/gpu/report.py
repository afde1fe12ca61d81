"""The GPU section of ``docs/benchmarks.md``, from ``make gpu-check``'s ``benchmarks/gpu/results.json``.

The words are in ``templates/gpu.md``; the figures are the results' fields, or arithmetic on them named here. The
targets are issue 22's, as ratios to a CE step measured in the same run.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from benchmarks.template import Template

RESULTS = Path(__file__).with_name("results.json")
TEMPLATE = Template(Path(__file__).with_name("templates") / "gpu.md")
STEPS = ("head", "first_order", "exact", "graphed", "graphed_batched", "reference")
NAMES = {"graphed_batched": "graphed, batched"}
BF16_POINTS = 0.3  # bfloat16's validation accuracy within this many points of float32's


def load(path: Path = RESULTS) -> dict | None:
    """The committed gpu-check results, or None where there are none."""
    return json.loads(path.read_text()) if path.is_file() else None


def section(gpu: dict) -> str:
    """The section, filled from ``gpu`` (a results.json of ``benchmarks.gpu.check``)."""
    s = gpu["sections"]
    steps = {m["network"]: m for m in s["meta_step"]}
    small, resnet = steps["small_cnn"], steps["preact_resnet32"]
    precision = {p["network"]: p for p in s["precision"]}
    runs = _training(s["training"])
    fields = {**gpu, "tests": s["tests"], "ramp_start": gpu["settings"]["ramp"][0],
              "ramp_end": gpu["settings"]["ramp"][1],
              "step_rows": TEMPLATE.rows("step_row", [_step_row(m, v) for m in s["meta_step"] for v in STEPS]),
              "target_rows": TEMPLATE.rows("target_row", targets(gpu)),
              "memory_rows": TEMPLATE.rows("memory_row", [
                  {"network": m["network"], "sets": sets, "ce": m["ce_mb"], "exact": exact, "graphed": graphed,
                   "batched": batched}
                  for m in s["memory"] for sets, exact, graphed, batched in
                  zip(m["sets"], m["exact_mb"], m["graphed_mb"], m["graphed_batched_mb"], strict=True)]),
              "precision_rows": TEMPLATE.rows("precision_row", s["precision"]),
              "training_rows": TEMPLATE.rows("training_row", runs["rows"]),
              **{f"small_{v}": small["time_ratio"][v] for v in ("exact", "graphed", "head")},
              "small_batched": small["time_ratio"]["graphed_batched"], "small_ce": small["ce_ms"],
              **{f"resnet_{v}": resnet["time_ratio"][v] for v in ("exact", "graphed")},
              "resnet_batched": resnet["time_ratio"]["graphed_batched"],
              "resnet_bf16": precision["preact_resnet32"]["bfloat16"]["median"],
              "resnet_bf16_meta": precision["preact_resnet32"]["bfloat16_meta_loss"]["median"],
              "resnet_tf32": precision["preact_resnet32"]["tf32"]["median"],
              "resnet_defaults": precision["preact_resnet32"]["torch_defaults"]["median"],
              "small_defaults": precision["small_cnn"]["torch_defaults"]["median"], **runs["summary"]}
    return TEMPLATE.fill("section", fields)


def _step_row(m: dict, variant: str) -> dict:
    ratios = m["time_ratios"][variant]
    return {"network": m["network"], "ce_ms": m["ce_ms"],
            "variant": NAMES.get(variant, variant), "ratio": m["time_ratio"][variant], "low": min(ratios),
            "high": max(ratios), "memory": m["memory_ratio"][variant]}


def _training(runs: list[dict]) -> dict:
    """The training table's rows (one per seed) and the figures the prose quotes."""
    by = {(r["name"], r["seed"]): r for r in runs}
    seeds = sorted({seed for _, seed in by})
    rows, gaps = [], []
    for seed in seeds:
        f32, bf16, graphed = by[("float32", seed)], by[("bfloat16", seed)], by.get(("graphed", seed))
        gap = 100 * (bf16["val_accuracy"] - f32["val_accuracy"])
        gaps.append(gap)
        rows.append({"seed": seed, "float32": f32["val_accuracy"], "float32_s": f32["seconds"],
                     "bfloat16": bf16["val_accuracy"], "bfloat16_s": bf16["seconds"], "gap": gap,
                     "graphed": "" if graphed is None else
                     f"{graphed['val_accuracy']:.4f} ({graphed['seconds']:.1f} s)"})
    first = seeds[0]
    graphed = by[("graphed", first)]
    return {"rows": rows, "summary": {
        "bf16_gap": statistics.mean(gaps), "training_mode": by[("float32", first)]["mode"],
        "bf16_seconds": statistics.mean(by[("bfloat16", s)]["seconds"] for s in seeds),
        "fp32_seconds": statistics.mean(by[("float32", s)]["seconds"] for s in seeds),
        "graphed_accuracy": graphed["val_accuracy"], "graphed_seconds": graphed["seconds"],
        "fp32_accuracy": by[("float32", first)]["val_accuracy"],
        "fp32_seconds_first": by[("float32", first)]["seconds"]}}


def targets(gpu: dict) -> list[dict]:
    """Issue 22's targets: each with what was measured and whether it is met."""
    s = gpu["sections"]
    steps = {m["network"]: m["time_ratio"] for m in s["meta_step"]}
    memory = {m["network"]: m for m in s["meta_step"]}
    over_m = {m["network"]: m for m in s["memory"]}
    gap = _training(s["training"])["rows"]
    out = []
    for network, bound in (("small_cnn", 8.0), ("preact_resnet32", 30.0)):
        best = min(steps[network][v] for v in ("exact", "graphed", "graphed_batched"))
        out.append(_target(f"exact, {network}: <= {bound:g}x a CE step",
                           f"{steps[network]['exact']:.1f}x eager, {steps[network]['graphed']:.1f}x graphed, "
                           f"{steps[network]['graphed_batched']:.1f}x graphed and batched", best <= bound))
    for network in ("small_cnn", "preact_resnet32"):
        fo, ex = steps[network]["first_order"], steps[network]["exact"]
        out.append(_target(f"first_order cheaper than exact, {network}", f"{fo:.1f}x against {ex:.1f}x", fo < ex))
    for network in ("small_cnn", "preact_resnet32"):
        head = steps[network]["head"]
        out.append(_target(f"head, {network}: <= 1.5x", f"{head:.2f}x", head <= 1.5))
    for network in ("small_cnn", "preact_resnet32"):
        m, ratio = over_m[network], memory[network]["memory_ratio"]["exact"]
        growth = max(m["exact_mb"]) / min(m["exact_mb"]) - 1
        out.append(_target(f"exact peak memory flat in M (within 10%) and <= 5x CE, {network}",
                           f"+{growth:.0%} from M = {m['sets'][0]} to {m['sets'][-1]}; {ratio:.2f}x CE",
                           growth <= 0.1 and ratio <= 5))
    worst = max(abs(r["gap"]) for r in gap)
    out.append(_target(f"bfloat16 within {BF16_POINTS} points of float32 (short training)",
                       ", ".join(f"{r['gap']:+.2f}" for r in gap) + " points", worst <= BF16_POINTS))
    return out


def _target(name: str, measured: str, met: bool) -> dict:
    return {"name": name, "measured": measured, "verdict": "yes" if met else "**no**"}
