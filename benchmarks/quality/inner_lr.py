"""Does a stronger meta loss help? MLNT trained with larger inner learning rates, against the quality study's control.

``benchmarks.quality.meta_diagnosis`` finds the meta gradient a few percent of cross-entropy's at the paper's inner step
(α = 0.2). This trains `head`-mode MLNT at the headline setting with larger α, where the diagnosis puts the meta
gradient near and above CE's, on the cells ``make quality`` left under ``--work`` (their noise labels and CE
features, the study's seeds and schedule, only ``inner_lr`` changed), and compares it with the study's own
control and paper-α MLNT from ``--results``. Run it after ``make quality``:

    python -m benchmarks.quality.inner_lr [--work artifacts/quality] [--results docs/quality/results.json]
                                  [--output docs/quality/inner_lr.md] [--workers 2]
    python -m benchmarks.quality.inner_lr --render  # the table again from the recorded inner_lr.json, no training
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import torch

from benchmarks.quality import probe
from benchmarks.quality import study as quality
from benchmarks.quality.report import mean_std, pct
from benchmarks.template import Template

INNER_LRS = (2.0, 20.0)
TEMPLATE = Template(Path(__file__).with_name("templates") / "inner_lr.md")


def run_one(task: quality.Task, inner_lr: float, threads: int) -> dict:
    """One seed at one α: the study's MLNT row with ``inner_lr`` changed, in the cell's folder."""
    torch.set_num_threads(threads)
    cell = quality._Cell(task)
    record: dict = {"methods": {}, "curves": {}}
    name = f"mlnt_alpha{inner_lr:g}"
    cell._mlnt_run(name, dataclasses.replace(cell.mlnt_config, inner_lr=inner_lr), record)
    return {"seed": task.seed, "inner_lr": inner_lr, **record["methods"][name]}


def run_probe(results: dict, study: quality.StudyConfig, *, work: Path, workers: int,
              inner_lrs: tuple[float, ...] = INNER_LRS) -> dict:
    """Every (seed, α) of the headline setting whose cell the study left under ``work``."""
    cells = [quality.Task(study.headline, seed, study, results["params"], str(work / "ingest"), str(work))
             for seed in study.seeds]
    missing = [str(t.directory) for t in cells if not (t.directory / "ce" / "model.pt").is_file()]
    if missing:
        raise SystemExit(f"inner_lr: expected the quality study's cells, found none at {', '.join(missing)}; "
                         "run make quality first")
    started = time.perf_counter()
    threads = quality.threads_per_cell(workers)
    with quality.spawned_pool(workers) as pool:
        runs = list(pool.map(run_one, *zip(*[(t, a, threads) for a in inner_lrs for t in cells], strict=True)))
    return {"runs": runs, "inner_lrs": list(inner_lrs), "setting": study.headline.name,
            "wall_seconds": round(time.perf_counter() - started, 1)}


def render(found: dict, results: dict) -> str:
    """The table: the study's control and paper-α MLNT, then each larger α, per-seed differences to the control."""
    setting = found["setting"]
    study = {r["seed"]: r["methods"] for r in results["records"]
             if r["setting"] == setting and r.get("part", "main") == "main"}
    rows = [(TEMPLATE.fill("control"), {s: m["ema_control"] for s, m in study.items()}),
            (TEMPLATE.fill("paper", alpha=results["params"]["mlnt"]["inner_lr"]),
             {s: m["mlnt"] for s, m in study.items()})]
    for alpha in found["inner_lrs"]:
        runs = {r["seed"]: r for r in found["runs"] if r["inner_lr"] == alpha}
        rows.append((TEMPLATE.fill("alpha", alpha=alpha), runs))
    control = rows[0][1]
    for label, by_seed in rows[1:]:
        if sorted(by_seed) != sorted(control):
            raise ValueError(f"{label}: expected runs of the study's seeds {sorted(control)} (its {setting} cells), "
                             f"found seeds {sorted(by_seed)}: the probe and results.json are of different studies; "
                             "run the probe again after the study (make quality)")
    lines = []
    for label, by_seed in rows:
        seeds = sorted(by_seed)
        gap = mean_std([100 * (by_seed[s]["accuracy"] - control[s]["accuracy"]) for s in seeds])
        lines.append(TEMPLATE.fill("row", label=label, accuracy=pct([by_seed[s]["accuracy"] for s in seeds]),
                                   gap=gap[0], gap_std=gap[1],
                                   student=pct([by_seed[s]["student_last_accuracy"] for s in seeds]),
                                   validation=pct([by_seed[s]["val_accuracy"] for s in seeds])))
    return TEMPLATE.fill("page", setting=setting, mode=", ".join(sorted({r["mode"] for r in found["runs"]})),
                         seeds=", ".join(map(str, sorted(control))), minutes=found["wall_seconds"] / 60,
                         rows="\n".join(lines)) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = probe.parser("benchmarks.quality.inner_lr", __doc__.splitlines()[0], "inner_lr.md")
    parser.add_argument("--inner-lrs", type=float, nargs="+", default=list(INNER_LRS))
    args = probe.parse(parser, argv)
    if args.render:
        return probe.render_again(args, "inner_lr", render)
    results = json.loads(args.results.read_text())
    found = run_probe(results, quality.QUICK if args.quick else quality.StudyConfig(), work=args.work,
                      workers=args.workers, inner_lrs=tuple(args.inner_lrs))
    return probe.publish(args, "inner_lr", found, render(found, results),
                         f"{len(found['runs'])} runs in {found['wall_seconds']:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
