"""More seeds for MLNT against its control, where the quality study's three could not tell a gain from noise.

The study's ablation (MLNT against the same EMA teacher without the meta loss, ``meta_weight`` 0) left differences
smaller than their spread over seeds 0-2. This trains the same cells on more seeds, with CE (early stopping, and the
neighbour features), the control and MLNT only (no Confident Learning, no sweep, no warm start), and pools them with
the study's seeds. The cells are the study's: its ``StudyConfig``, params, ingested data, thread count and code
(``benchmarks.quality.study``'s ``run_task``, part ``seeds``). One of the study's own cells (``CHECK``) is trained
again first: its figures must equal results.json's, which is what lets the seeds pool; ``render`` refuses otherwise.

The rule, fixed before the first run: MLNT's gain over its control at a setting is shown when the 95 % confidence
interval of the mean per-seed difference (test accuracy of the released models, Student's t over the seeds) lies
above zero; the Wilcoxon signed-rank test's p-value and the count of positive seeds are given beside it. Three
settings were tested first (those where MLNT led its control on all of seeds 0-2); symmetric 20 % and 80 % were
added after that run (``--add``), so that the pooled figure is not drawn from settings picked for their first seeds.
The rule is per setting, with no correction for the five settings tested, so a single p-value near 0.05 is not a
finding on its own.

    python -m benchmarks.quality.seeds [--work artifacts/quality] [--results docs/quality/results.json]
                                       [--output docs/quality/seeds.md] [--workers 2] [--seeds 3 4 ...]
    python -m benchmarks.quality.seeds --settings symmetric-20 --add  # one more setting into the recorded run
    python -m benchmarks.quality.seeds --render  # the page again from the recorded seeds.json, no training
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats

from benchmarks.quality import probe
from benchmarks.quality import study as quality
from benchmarks.quality.report import mean_std, pct
from benchmarks.template import Template

# every noisy setting of the study: the three where MLNT minus control was positive on seeds 0-2 and the two where it
# was not, so the pooled figure is not drawn from settings picked for their first seeds
SETTINGS = ("symmetric-20", "symmetric-50", "symmetric-80", "asymmetric-40", "instance-40")
SEEDS = tuple(range(3, 10))
CHECK = ("asymmetric-40", 0)  # a study cell trained again: its figures must be results.json's
METHODS = ("ce_early", "ema_control", "mlnt")
CONFIDENCE = 0.95  # of the interval the rule reads
KEPT = ("accuracy", "val_accuracy", "released", "student_last_accuracy")  # of each method's record, where it has them
TEMPLATE = Template(Path(__file__).with_name("templates") / "seeds.md")


def cells(study: quality.StudyConfig, params: dict, ingested: Path, work: Path, threads: int,
          settings: tuple[str, ...], seeds: tuple[int, ...], check: tuple[str, int] = CHECK) -> list[quality.Task]:
    """The check cell, then every (setting, seed), the headline setting's (the slowest) first."""
    by_name = {s.name: s for s in study.settings}
    unknown = sorted({*settings, check[0]} - set(by_name))
    if unknown:
        raise SystemExit(f"seeds: unknown setting {', '.join(unknown)}. Valid: {', '.join(sorted(by_name))}")
    clash = sorted(set(seeds) & set(study.seeds))
    if clash:
        raise SystemExit(f"seeds: expected seeds the study has not run, found {clash} (the study's: "
                         f"{list(study.seeds)})")
    where = cell_fields(ingested, work, threads)
    ordered = sorted(settings, key=lambda name: by_name[name] != study.headline)
    return [quality.Task(by_name[check[0]], check[1], study, params, **where),
            *(quality.Task(by_name[name], seed, study, params, **where) for name in ordered for seed in seeds)]


def cell_fields(ingested: Path, work: Path, threads: int) -> dict:
    """The ``quality.Task`` fields of a study cell trained again with the code as it is now (part ``seeds``: CE,
    the control and MLNT), beside the study's own cells in ``work``."""
    return {"ingested": str(ingested), "work": str(work), "threads": threads,
            "code": quality.code_digest(quality.STUDY), "part": "seeds"}


def prepare(study: quality.StudyConfig, *, results_path: Path, work: Path, data: Path, params_file: Path,
            workers: int) -> tuple[dict, Path, int]:
    """The study's params, its ingest in ``work`` (made once) and the threads of each of ``workers`` cells, once the
    study saved at ``results_path`` is known to take cells made with them (``quality.check_rerun``)."""
    threads = quality.threads_per_cell(workers)
    params = quality.study_params(params_file)
    quality.check_rerun(results_path, dataclasses.asdict(study), params, threads)  # the study's cells, or none
    return params, quality.ingest_once(work / "ingest", {**params["ingest"], "path": str(data)}), threads


def run_probe(results: dict, study: quality.StudyConfig, *, results_path: Path, work: Path, data: Path,
              params_file: Path, workers: int, settings: tuple[str, ...] = SETTINGS, seeds: tuple[int, ...] = SEEDS,
              check: tuple[str, int] = CHECK) -> dict:
    """Train the cells (a cell finished earlier with the same code is taken from its cache) and keep, for each, the
    figures of ``METHODS``."""
    params, ingested, threads = prepare(study, results_path=results_path, work=work, data=data,
                                        params_file=params_file, workers=workers)
    todo = cells(study, params, ingested, work, threads, settings, seeds, check)
    started = time.perf_counter()
    with quality.spawned_pool(workers) as pool:
        records = list(pool.map(quality.run_task, todo))
    kept = [{"setting": r["setting"], "seed": r["seed"], "realised_rate": r["realised_rate"],
             "methods": {m: {k: r["methods"][m][k] for k in KEPT if k in r["methods"][m]} for m in METHODS}}
            for r in records]
    return {"settings": list(settings), "seeds": list(seeds), "check": {"setting": check[0], "seed": check[1]},
            "records": kept, "wall_seconds": round(time.perf_counter() - started, 1), "workers": workers,
            "threads_per_worker": threads, "invocations": 1}


def add(previous: dict, found: dict) -> dict:
    """``--add``: ``found``'s settings joined to the records ``previous`` holds (a setting in both: ``found``'s), its
    time added; refused unless both ran the same seeds, check cell and threads."""
    same = ("seeds", "check", "threads_per_worker")
    if any(previous[key] != found[key] for key in same):
        raise SystemExit(f"seeds: --add: expected the recorded run's {', '.join(same)} "
                         f"({', '.join(repr(previous[k]) for k in same)}), found "
                         f"{', '.join(repr(found[k]) for k in same)}; run every setting again instead")
    by_cell = {(r["setting"], r["seed"]): r for r in (*previous["records"], *found["records"])}
    settings = sorted({*previous["settings"], *found["settings"]},
                      key=lambda name: (SETTINGS.index(name) if name in SETTINGS else len(SETTINGS), name))
    return {**found, "settings": settings, "records": list(by_cell.values()),
            "wall_seconds": round(previous["wall_seconds"] + found["wall_seconds"], 1),
            "invocations": previous.get("invocations", 1) + 1}


def check_problems(found: dict, results: dict) -> list[str]:
    """How the check cell differs from the study's record of it: one line per figure (none: it reproduced)."""
    check = (found["check"]["setting"], found["check"]["seed"])
    return reproduction_problems(next(r for r in found["records"] if (r["setting"], r["seed"]) == check), results)


def reproduction_problems(again: dict, results: dict) -> list[str]:
    """How a study cell trained again (a record with its setting, seed and ``METHODS``' figures) differs from the
    study's record of it, in the figures ``KEPT``: one line per figure (none: it reproduced)."""
    setting, seed = again["setting"], again["seed"]
    study = _records([r for r in results["records"] if r.get("part", "main") == "main"], setting)[seed]
    return [f"{setting} seed {seed} {method} {key}: results.json {study[method].get(key, 'none')!r}, again {value!r}"
            for method in METHODS for key, value in again["methods"][method].items()
            if key in KEPT and study[method].get(key) != value]


def render(found: dict, results: dict) -> str:
    """The page: the check, then per setting the pooled seeds' accuracies and paired differences (of the released
    models, and of MLNT's and the control's students at their last step)."""
    problems = check_problems(found, results)
    if problems:
        raise ValueError("seeds: the check cell did not reproduce the study's figures, so its seeds do not pool "
                         "with these: " + "; ".join(problems))
    sections, by_seed_gaps = [], {}
    study_records = [r for r in results["records"] if r.get("part", "main") == "main"]
    for setting in found["settings"]:
        by_seed = {**_records(study_records, setting), **_records(found["records"], setting)}
        seeds = sorted(by_seed)
        acc = {m: np.array([by_seed[s][m]["accuracy"] for s in seeds]) for m in METHODS}
        last = {m: np.array([by_seed[s][m]["student_last_accuracy"] for s in seeds]) for m in ("mlnt", "ema_control")}
        gaps = {"mlnt_control": acc["mlnt"] - acc["ema_control"], "control_ce": acc["ema_control"] - acc["ce_early"],
                "mlnt_ce": acc["mlnt"] - acc["ce_early"], "students": last["mlnt"] - last["ema_control"]}
        for seed, gap in zip(seeds, gaps["mlnt_control"], strict=True):
            by_seed_gaps.setdefault(seed, []).append(gap)
        tested = {name: paired(gap) for name, gap in gaps.items()}
        sections.append(TEMPLATE.fill(
            "setting", setting=setting, n=len(seeds), seeds=_span(seeds),
            accuracy_rows="\n".join(TEMPLATE.fill("accuracy_row", method=TEMPLATE.fill(m), accuracy=pct(list(acc[m])))
                                    for m in METHODS),
            gap_rows="\n".join(TEMPLATE.fill("gap_row", comparison=TEMPLATE.fill(name), **row)
                               for name, row in tested.items()),
            per_seed=", ".join(f"{s}: {100 * g:+.2f}" for s, g in zip(seeds, gaps["mlnt_control"], strict=True)),
            verdict=TEMPLATE.fill(_verdict(tested["mlnt_control"]))))
    check = found["check"]
    return TEMPLATE.fill("page", settings=", ".join(found["settings"]), count=len(found["settings"]),
                         new_seeds=_span(found["seeds"]),
                         study_seeds=_span(results["study"]["seeds"]), check_setting=check["setting"],
                         check_seed=check["seed"], minutes=found["wall_seconds"] / 60, workers=found["workers"],
                         invocations=TEMPLATE.fill("invocations", count=found["invocations"])
                         if found.get("invocations", 1) > 1 else "",
                         threads=found["threads_per_worker"], sections="\n\n".join(sections),
                         pairs=sum(map(len, by_seed_gaps.values())),
                         pairs_positive=sum(g > 0 for gaps in by_seed_gaps.values() for g in gaps),
                         pooled=_pooled_rows(by_seed_gaps, new_seeds=found["seeds"])) + "\n"


def _pooled_rows(by_seed_gaps: dict[int, list[float]], *, new_seeds) -> str:
    """MLNT minus the control over every setting, a seed at a time (each seed's mean over the settings: a seed's
    settings share its data and random stream), for every seed and for the seeds added after the study."""
    rows = []
    for seeds in (sorted(by_seed_gaps), sorted(set(new_seeds) & by_seed_gaps.keys())):
        means = np.array([np.mean(by_seed_gaps[s]) for s in seeds])
        rows.append(TEMPLATE.fill("gap_row", comparison=TEMPLATE.fill("pooled", seeds=_span(seeds)), **paired(means)))
    return "\n".join(rows)


def paired(gap: np.ndarray) -> dict:
    """Mean, standard deviation and 95 % t-interval of per-seed differences (in points), the count of positive
    seeds, and the two-sided Wilcoxon signed-rank p-value."""
    points = 100 * np.asarray(gap, dtype=float)
    (mean, sd), n = mean_std(points), points.size
    half = float(stats.t.ppf(0.5 + CONFIDENCE / 2, n - 1)) * sd / np.sqrt(n)
    nonzero = points[points != 0]
    p = float(stats.wilcoxon(nonzero).pvalue) if nonzero.size else 1.0
    return {"mean": mean, "sd": sd, "low": mean - half, "high": mean + half, "positive": int((points > 0).sum()),
            "n": n, "p": p}


def _verdict(gap: dict) -> str:
    """The rule's answer for a ``paired`` difference: its interval above zero, below it, or across it."""
    return "shown" if gap["low"] > 0 else "worse" if gap["high"] < 0 else "not_shown"


def _records(records: list[dict], setting: str) -> dict[int, dict]:
    """The methods' figures of ``setting``'s records, by seed."""
    return {r["seed"]: r["methods"] for r in records if r["setting"] == setting}


def _span(seeds) -> str:
    seeds = sorted(seeds)
    if seeds == list(range(seeds[0], seeds[-1] + 1)) and len(seeds) > 2:
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def main(argv: list[str] | None = None) -> int:
    parser = probe.parser("benchmarks.quality.seeds", __doc__.splitlines()[0], "seeds.md")
    parser.add_argument("--data", type=Path, default=Path("data/fashion-mnist"), help="Fashion-MNIST files")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--settings", nargs="+", help=f"default: {' '.join(SETTINGS)} (--quick: the quick study's)")
    parser.add_argument("--seeds", type=int, nargs="+", help=f"default: {' '.join(map(str, SEEDS))} (--quick: 1)")
    parser.add_argument("--add", action="store_true",
                        help="add these --settings to the records beside --output (same seeds, check and threads), "
                             "keeping its other settings'")
    args = probe.parse(parser, argv)
    if args.render:
        return probe.render_again(args, "seeds", render)
    results = json.loads(args.results.read_text())
    study = quality.QUICK if args.quick else quality.StudyConfig()
    settings = tuple(args.settings or ([s.name for s in study.settings] if args.quick else SETTINGS))
    seeds = tuple(args.seeds or ((1,) if args.quick else SEEDS))
    check = (study.headline.name, study.seeds[0]) if args.quick else CHECK
    previous = args.output.with_suffix(".json")
    if args.add and not previous.is_file():
        raise SystemExit(f"seeds: --add: expected the records of an earlier run at {previous}, found none")
    found = run_probe(results, study, results_path=args.results, work=args.work, data=args.data,
                      params_file=args.params, workers=args.workers, settings=settings, seeds=seeds, check=check)
    if args.add:
        found = add(json.loads(previous.read_text()), found)
    return probe.publish(args, "seeds", found, render(found, results),
                         f"{len(found['records'])} cells in {found['wall_seconds']:.0f} s")


if __name__ == "__main__":
    raise SystemExit(main())
