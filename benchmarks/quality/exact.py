"""Is `head` mode why the meta loss adds nothing? The authors' `exact` update at the headline setting, against the
quality study's control.

Every headline figure of the quality study is `head` mode, which takes the fast step on the classifier head only;
the reference codes' second-order step on every parameter (`exact`) was measured only on a smaller, shorter run (the
modes table of docs/results.md: 2,000 images, 8 epochs, two seeds). This trains `exact`-mode MLNT on the headline
cells themselves (symmetric 50 %, the pipeline's 12,000 images and schedule, the study's seeds), nothing else
changed. Beside it, each cell trains CE, the control and `head`-mode MLNT again (``benchmarks.quality.study``'s cell
part ``seeds``, which ``benchmarks.quality.seeds`` runs): their figures must be results.json's to the last digit,
which is what lets `exact` be set against the study's own control and `head` runs; ``render`` refuses otherwise.

It costs about an hour on 2 cores: an `exact` step of the small CNN (batch 128, M = 10) costs about 30 CE steps
(the targets table of docs/benchmarks.md), and each seed's `exact` run has about 1,100 meta steps; ``--workers 3``
trains the three cells at once (the page states the recorded invocation's minutes). It is not part of `make
quality`, whose other runs take ``--workers 2``. An interrupted run resumes: a finished cell is cached
(``quality.run_task``) and the `exact` run resumes from its last checkpoint, but only while the study's code is
unchanged: a cell made by other code is trained again from the start, its `exact` run included.

    python -m benchmarks.quality.exact [--work artifacts/quality] [--results docs/quality/results.json]
                                       [--output docs/quality/exact.md] [--workers 2]
    python -m benchmarks.quality.exact --render  # the page again from the recorded exact.json, no training
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np

from benchmarks.quality import probe, seeds
from benchmarks.quality import study as quality
from benchmarks.quality.report import mean_std, pct
from benchmarks.template import Template

EXACT = "mlnt_exact"
ROWS = ("ce_early", "ema_control", "mlnt", EXACT)  # the page's rows, in order
KEPT = (*seeds.KEPT, "mode")  # of each method's record (not its seconds: a resumed `exact` run times its end only)
TEMPLATE = Template(Path(__file__).with_name("templates") / "exact.md")


def run_one(task: quality.Task) -> dict:
    """One headline cell: CE, the control and `head` MLNT (``quality.run_task``, cached when an identical run left
    them), then `exact` MLNT in the same cell, from the same noise labels and CE features."""
    record = quality.run_task(task)  # sets torch's threads to the task's
    cell = quality._Cell(task)
    exact: dict = {"methods": {}, "curves": {}}
    cell._mlnt_run(EXACT, dataclasses.replace(cell.mlnt_config, mode="exact"), exact)
    methods = {**record["methods"], EXACT: exact["methods"][EXACT]}
    return {"setting": task.setting.name, "seed": task.seed,
            "methods": {m: {k: methods[m][k] for k in KEPT if k in methods[m]} for m in ROWS}}


def run_probe(results: dict, study: quality.StudyConfig, *, results_path: Path, work: Path, data: Path,
              params_file: Path, workers: int) -> dict:
    """Every seed of the study's headline setting, ``workers`` cells at a time on the study's thread count."""
    params, ingested, threads = seeds.prepare(study, results_path=results_path, work=work, data=data,
                                              params_file=params_file, workers=workers)
    where = seeds.cell_fields(ingested, work, threads)
    todo = [quality.Task(study.headline, seed, study, params, **where) for seed in study.seeds]
    started = time.perf_counter()
    with quality.spawned_pool(workers) as pool:
        records = list(pool.map(run_one, todo))
    return {"setting": study.headline.name, "records": records, "wall_seconds": round(time.perf_counter() - started, 1),
            "workers": workers, "threads_per_worker": threads}


def reproduction_problems(found: dict, results: dict) -> list[str]:
    """How the cells' CE, control and `head` MLNT differ from the study's records of them: one line per figure
    (none: every cell reproduced)."""
    return [problem for record in found["records"] for problem in seeds.reproduction_problems(record, results)]


def render(found: dict, results: dict) -> str:
    """The page: each row's test accuracy, its per-seed difference to the control (mean ± sd, 95 % interval, each
    seed's), the student at its last step (and its per-seed difference to the control's) and validation
    accuracy."""
    problems = reproduction_problems(found, results)
    if problems:
        raise ValueError("exact: the cells did not reproduce the study's figures, so `exact` cannot be set against "
                         "its control: " + "; ".join(problems))
    by_seed = {r["seed"]: r["methods"] for r in found["records"]}
    order = sorted(by_seed)
    control = [by_seed[s]["ema_control"] for s in order]
    lines, tested = [], {}
    for method in ROWS:
        runs = [by_seed[s][method] for s in order]
        gap = np.array([run["accuracy"] - base["accuracy"] for run, base in zip(runs, control, strict=True)])
        tested[method] = seeds.paired(gap)
        lines.append(TEMPLATE.fill("row", method=TEMPLATE.fill(method), accuracy=_column(runs, "accuracy"),
                                   **tested[method], per_seed=_each(gap),
                                   student=_column(runs, "student_last_accuracy"),
                                   student_gap=_student_gap(runs, control), validation=_column(runs, "val_accuracy")))
    exact_gap = tested[EXACT]
    study, level = results["study"], 100 * seeds.CONFIDENCE
    return TEMPLATE.fill("page", setting=found["setting"], seeds=", ".join(map(str, order)),
                         images=study["headline_size"],
                         epochs=study["headline_epochs"] or results["params"]["mlnt"]["epochs"],
                         level=level, minutes=found["wall_seconds"] / 60, workers=found["workers"],
                         threads=found["threads_per_worker"], rows="\n".join(lines),
                         verdict=TEMPLATE.fill(seeds._verdict(exact_gap), **exact_gap, level=level)) + "\n"


def _each(gap: np.ndarray) -> str:
    """Each seed's difference, in points."""
    return ", ".join(f"{100 * g:+.2f}" for g in gap)


def _student_gap(runs: list[dict], control: list[dict]) -> str:
    """The student at its last step minus the control's, per seed (mean ± sd, then each seed's), in points: how much
    the meta loss slowed the student's memorisation; a dash for CE, which has no student."""
    key = "student_last_accuracy"
    if not all(key in r for r in runs):
        return "—"
    gap = np.array([run[key] - base[key] for run, base in zip(runs, control, strict=True)])
    mean, sd = mean_std(100 * gap)
    return TEMPLATE.fill("student_gap", mean=mean, sd=sd, per_seed=_each(gap))


def _column(runs: list[dict], key: str) -> str:
    """Mean ± std of ``key`` over ``runs`` in percent, or a dash where the runs do not record it (CE has no
    student and records no validation accuracy)."""
    return pct([r[key] for r in runs]) if all(key in r for r in runs) else "—"


def main(argv: list[str] | None = None) -> int:
    parser = probe.parser("benchmarks.quality.exact", __doc__.splitlines()[0], "exact.md")
    parser.add_argument("--data", type=Path, default=Path("data/fashion-mnist"), help="Fashion-MNIST files")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    args = probe.parse(parser, argv)
    if args.render:
        return probe.render_again(args, "exact", render)
    results = json.loads(args.results.read_text())
    found = run_probe(results, quality.QUICK if args.quick else quality.StudyConfig(), results_path=args.results,
                      work=args.work, data=args.data, params_file=args.params, workers=args.workers)
    return probe.publish(args, "exact", found, render(found, results),
                         f"{len(found['records'])} cells in {found['wall_seconds']:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
