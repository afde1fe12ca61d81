"""``docs/results.md`` and its plots, from the quality study's raw records alone (``docs/quality/results.json``).

    python -m benchmarks.quality.report [--results docs/quality/results.json] [--output docs/results.md]

Every figure in the report is a field of those records (the study's settings, params.yaml's sections it ran with),
a mean ± standard deviation over seeds of one, or a difference of two such means; the targets' bounds are
``TARGETS``. The words are in ``templates/results.md`` (``benchmarks.template``): a part per section, filled here;
the tables' cells, whose columns follow the settings that ran, are formatted here (``pct``, ``num``).
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmarks.template import Template
from components.common.atomic import write_atomic, write_json, write_text

METHODS = (("ce_last", "CE, last epoch"),
           ("ce_early", "CE, early stopping (best validation)"),
           ("cleanlab_last", "Confident Learning (cleanlab) + CE, last epoch"),
           ("cleanlab_early", "Confident Learning (cleanlab) + CE, early stopping"),
           ("ema_control", "EMA-teacher control (MLNT with meta_weight 0)"),
           ("mlnt", "MLNT (paper's meta_weight)"))
ABLATION = (("ce_last", "CE, last epoch"), ("ce_early", "CE, early stopping"),
            ("ema_control", "EMA-teacher control: meta_weight 0"),
            ("mlnt_x0.25", "MLNT, meta_weight x 1/4"), ("mlnt", "MLNT, the paper's meta_weight"),
            ("mlnt_x4", "MLNT, meta_weight x 4"), ("mlnt_selected", "MLNT, meta_weight chosen on validation"),
            ("ema_control_warm", "EMA-teacher control, warm start from CE"), ("mlnt_warm", "MLNT, warm start from CE"))
DETECTORS = (("mlnt", "MLNT (released model, in-sample)"),
             ("ema_control", "EMA-teacher control (released model, in-sample)"),
             ("cleanlab", "cleanlab (out-of-sample CE)"))
FOLDER = "quality"  # beside the report: results.json and the plots
TEMPLATE = Template(Path(__file__).with_name("templates") / "results.md")


@dataclass(frozen=True)
class Target:
    bound: float  # points of clean test accuracy
    settings: tuple[str, ...]  # where it is checked, when the study ran them


TARGETS = {
    "over_control": Target(1.0, ("symmetric-50", "symmetric-80")),  # MLNT above its control, by more than one std
    "over_ce_early": Target(2.0, ("symmetric-50",)),  # MLNT above CE with early stopping
    "near_clean": Target(3.0, ("symmetric-50",)),  # MLNT at most this far below clean CE, early-stopped
}


def mean_std(values: list[float]) -> tuple[float, float]:
    array = np.asarray(values, dtype=float)
    return float(array.mean()), float(array.std(ddof=1)) if array.size > 1 else 0.0


def pct(values: list[float]) -> str:
    """Mean ± std of fractions, in percent: the one format of every accuracy in the report."""
    mean, std = mean_std(values)
    return f"{100 * mean:.2f} ± {100 * std:.2f}"


def num(values: list[float]) -> str:
    mean, std = mean_std(values)
    return f"{mean:.3f} ± {std:.3f}"


def main_records(results: dict) -> list[dict]:
    return [r for r in results["records"] if r.get("part", "main") == "main"]


def settings(results: dict) -> list[str]:
    """The noisy settings in the order they were run (clean labels excluded)."""
    names = [r["setting"] for r in main_records(results) if r["kind"] != "none"]
    return list(dict.fromkeys(sorted(names, key=_setting_order)))


def _setting_order(name: str) -> tuple:
    kind, _, rate = name.rpartition("-")
    return ({"symmetric": 0, "asymmetric": 1, "instance": 2}.get(kind, 3), int(rate))


def field(results: dict, setting: str, get: Callable[[dict], float]) -> list[float]:
    return [get(r) for r in main_records(results) if r["setting"] == setting]


def accuracy(results: dict, setting: str, method: str, key: str = "accuracy") -> list[float]:
    return field(results, setting, lambda r: r["methods"][method][key])


def paired_gap(results: dict, setting: str, method: str, other: str,
               key: str = "accuracy") -> tuple[float, float]:
    """Mean ± std over seeds of the per-seed difference ``method - other`` in ``key`` (test accuracy), in
    points."""
    return mean_std([100 * (a - b) for a, b in zip(accuracy(results, setting, method, key),
                                                     accuracy(results, setting, other, key), strict=True)])


def signed(value: float, digits: int = 2) -> str:
    """A difference with its sign, ``+0.00`` for a zero whatever its sign."""
    return f"{round(value, digits) + 0.0:+.{digits}f}"


def paired(pairs: list[tuple[float, float]], scale: float = 100.0, digits: int = 2) -> tuple[str, str]:
    """Per-seed differences ``a - b`` of ``pairs`` (in seed order), times ``scale``: their mean ± std, and each."""
    values = [scale * (a - b) for a, b in pairs]
    mean, std = mean_std(values)
    return f"{signed(mean, digits)} ± {std:.{digits}f}", ", ".join(signed(v, digits) for v in values)


def detection_gap(results: dict, setting: str, metric: str) -> tuple[str, str]:
    """MLNT's label-issue list minus its control's in ``metric`` (F1 or AUROC, not points), paired by seed: the mean
    ± std and each seed's value."""
    mlnt, control = (field(results, setting, lambda r, k=k: r["label_issues"][k][metric])
                     for k in ("mlnt", "ema_control"))
    return paired(list(zip(mlnt, control, strict=True)), 1.0, 3)


def by_seed(results: dict, setting: str) -> dict[int, dict]:
    return {r["seed"]: r for r in main_records(results) if r["setting"] == setting}


def headline(results: dict) -> str:
    study = results["study"]
    return _name(study["headline"])


def _name(setting: dict) -> str:
    return "clean" if setting["kind"] == "none" else f"{setting['kind']}-{round(100 * setting['rate'])}"


def _has(results: dict, setting: str, method: str) -> bool:
    cells = [r for r in main_records(results) if r["setting"] == setting]
    return bool(cells) and all(method in r["methods"] for r in cells)


# --- the report ----------------------------------------------------------------------------------------------


def render(results: dict) -> str:
    """The report: the template's sections, each filled with figures of ``results``; a section whose records are
    absent (the ablation, the diagnosis, the modes) is left out."""
    names = settings(results)
    sections = [_header(results), _accuracy_table(results, names), _ablation(results), _gaps(results, names),
                _per_seed(results, names), _diagnosis_table(results), _targets(results, names),
                _calibration_table(results, names), _detection_table(results, names), _modes_table(results),
                TEMPLATE.fill("plots", folder=FOLDER)]
    return "\n\n".join(s for s in sections if s) + "\n\n"


def _counted(count: float, noun: str) -> str:
    return TEMPLATE.fill("one" if count == 1 else "many", count=count, noun=noun)


def _table(rows: list[list[str]]) -> str:
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def _columns(names: list[str]) -> dict:
    """A table's header over the settings: its names and its rule."""
    return {"columns": " | ".join(names), "rule": "|---" * (len(names) + 1) + "|"}


def _header(results: dict) -> str:
    study, base = results["study"], results["params"]["baseline"]
    top = headline(results)
    cell = next((r for r in main_records(results) if r["setting"] != top and r["kind"] != "none"), None)
    big = next((r for r in main_records(results) if r["setting"] == top), None)
    sizes = []
    if big:
        sizes.append(TEMPLATE.fill("size_headline", top=top, study=study, cell=big,
                                   epochs=study["headline_epochs"] or base["epochs"], pipeline=_pipeline_cell(results),
                                   schedule="the study's schedule" if study["headline_epochs"] else
                                   "params.yaml's schedule"))
    if cell:
        sizes.append(TEMPLATE.fill("size_others", study=study, cell=cell, epochs=study["epochs"] or base["epochs"]))
    seconds = results["wall_seconds"] + sum(r["wall_seconds"] for r in results.get("reruns", []))
    return TEMPLATE.fill("header", results, folder=FOLDER, top=top, base=base, meta=results["params"]["mlnt"],
                         sizes="; ".join(sizes), seeds=", ".join(map(str, study["seeds"])),
                         batch=study["batch_size"] or base["batch_size"],
                         sweep=", ".join(f"{m:g}" for m in study["sweep"]), minutes=seconds / 60,
                         resumed=_resumed(results))


def _resumed(results: dict) -> str:
    """What the header's time leaves out: the cells an earlier, interrupted invocation finished (their time is not
    in ``wall_seconds``, which is the last invocation's); empty when none was."""
    cells = results.get("resumed_cells", 0)
    if not cells:
        return ""
    return f" (the last invocation only: {cells} of the {len(results['records'])} cells were finished before it)"


def _pipeline_cell(results: dict) -> str:
    """What the headline cell with the pipeline's seed shares with the pipeline's own run (``dvc repro``), and its
    figures, which differ from docs/pipeline-run.md's by the thread count; empty where the study's headline is not
    the pipeline's run (another size, schedule, noise or seed)."""
    study, params = results["study"], results["params"]
    seed = params["noise"]["seed"]
    record = by_seed(results, headline(results)).get(seed)
    noise = {"kind": params["noise"]["kind"], "rate": params["noise"]["rate"]}
    same = (record is not None and study["headline"] == noise
            and study["headline_size"] == params["noise"]["train_size"] and not study["headline_epochs"]
            and not study["batch_size"] and params["baseline"]["seed"] == params["mlnt"]["seed"] == seed)
    if not same:
        return ""
    return TEMPLATE.fill("pipeline_cell", seed=seed, threads=record.get("threads", results["threads_per_worker"]),
                         **{k: record["methods"][k]["accuracy"] for k in ("ce_last", "ce_early", "mlnt")})


def _accuracy_table(results: dict, names: list[str]) -> str:
    realised = " | ".join(pct(field(results, s, lambda r: r["realised_rate"])) for s in names)
    rows = _table([[label, *(pct(accuracy(results, s, key)) for s in names)] for key, label in METHODS])
    text = TEMPLATE.fill("accuracy", _columns(names), realised=realised, rows=rows)
    clean = field(results, "clean", lambda r: r["methods"]["ce_early"]["accuracy"])
    if clean:
        last = field(results, "clean", lambda r: r["methods"]["ce_last"]["accuracy"])
        text += "\n\n" + TEMPLATE.fill("ceiling", top=headline(results), last=pct(last), early=pct(clean))
    return text


def _ablation(results: dict) -> str:
    """Every MLNT variant at the headline setting against its control."""
    top = headline(results)
    rows = [(k, label) for k, label in ABLATION if _has(results, top, k)]
    if not rows:
        return ""
    cells = []
    for key, label in rows:
        runs = field(results, top, lambda r, k=key: r["methods"][k])
        student = pct([r["student_last_accuracy"] for r in runs]) if "student_last_accuracy" in runs[0] else "—"
        val = pct([r["val_accuracy"] for r in runs]) if "val_accuracy" in runs[0] else "—"
        released = ", ".join(r["released"] for r in runs) if "released" in runs[0] else "—"
        shares = [r["teacher_start_share_released"] for r in runs if r.get("teacher_start_share_released") is not None]
        share = num(shares) if shares else "—"
        if key == "mlnt_selected":
            released = TEMPLATE.fill("chosen", released=released, chosen=", ".join(r["chosen"] for r in runs))
        cells.append([label, pct([r["accuracy"] for r in runs]), student, val, released, share,
                      num([r["seconds"] / 60 for r in runs])])
    return TEMPLATE.fill("ablation", top=top, rows=_table(cells))


def _gaps(results: dict, names: list[str]) -> str:
    """The meta loss's effect at every setting, paired by seed."""
    rows = []
    for setting in names:
        released = paired_gap(results, setting, "mlnt", "ema_control")
        student = paired_gap(results, setting, "mlnt", "ema_control", key="student_last_accuracy")
        rows.append([setting, f"{released[0]:+.2f} ± {released[1]:.2f}", f"{student[0]:+.2f} ± {student[1]:.2f}"])
    return TEMPLATE.fill("gaps", rows=_table(rows))


DIFFERENCES = (("ema_control", "ce_early", "accuracy"), ("mlnt", "ce_early", "accuracy"),
               ("mlnt", "ema_control", "accuracy"), ("mlnt", "ema_control", "student_last_accuracy"),
               ("mlnt", "ema_control", "val_accuracy"))  # (method, minus method, of what): at every setting
HEADLINE_DIFFERENCES = (("mlnt_x0.25", "ema_control"), ("mlnt_x4", "ema_control"), ("mlnt_selected", "ema_control"),
                        ("mlnt_warm", "mlnt"), ("ema_control_warm", "ema_control"))  # test accuracy, the headline's
WARM_VALIDATION = (("mlnt_warm", "mlnt"), ("ema_control_warm", "ema_control"))  # and on validation, where it is chosen
SHORT = {"ce_early": "CE early-stopped", "ema_control": "control", "mlnt": "MLNT",
         "mlnt_x0.25": "MLNT (meta_weight x 1/4)", "mlnt_x4": "MLNT (meta_weight x 4)",
         "mlnt_selected": "MLNT (meta_weight chosen on validation)", "mlnt_warm": "MLNT warm-started",
         "ema_control_warm": "control warm-started"}


def _per_seed(results: dict, names: list[str]) -> str:
    """Every paired difference the study's conclusions rest on, as mean ± std over seeds and each seed's value:
    accuracy in points at every setting (and, at the headline setting, the sweep, the warm start and the clean
    ceiling; the modes against their control), then the label-issue lists' F1 and AUROC, MLNT minus its control."""
    top, rows = headline(results), []

    def row(setting: str, label: str, pairs: list[tuple[float, float]], of: str = "accuracy") -> None:
        rows.append([setting, TEMPLATE.fill("difference", label=label, of=TEMPLATE.fill(f"of_{of}")), *paired(pairs)])

    def minus(method: str, other: str) -> str:
        return TEMPLATE.fill("minus", method=SHORT[method], other=SHORT[other])

    for setting in names:
        cells = by_seed(results, setting)
        for method, other, key in DIFFERENCES:
            if all(key in c["methods"][method] and key in c["methods"][other] for c in cells.values()):
                row(setting, minus(method, other),
                    [(c["methods"][method][key], c["methods"][other][key]) for c in cells.values()], key)
        if setting != top:
            continue
        for method, other in (d for d in HEADLINE_DIFFERENCES if _has(results, top, d[0])):
            row(setting, minus(method, other),
                [(c["methods"][method]["accuracy"], c["methods"][other]["accuracy"]) for c in cells.values()])
        for method, other in (d for d in WARM_VALIDATION if _has(results, top, d[0])):
            row(setting, minus(method, other), [(c["methods"][method]["val_accuracy"],
                                                 c["methods"][other]["val_accuracy"]) for c in cells.values()],
                "val_accuracy")
        clean = by_seed(results, "clean")
        for key in ("ce_early", "ce_last") if clean and set(clean) == set(cells) else ():
            row(setting, TEMPLATE.fill("minus_clean", ceiling=TEMPLATE.fill(f"clean_{key}")),
                [(cells[s]["methods"]["mlnt"]["accuracy"], clean[s]["methods"][key]["accuracy"]) for s in cells])
    modes = [r for r in results["records"] if r.get("part") == "modes"]
    for name in results["study"]["modes"]["names"] if modes else ():
        row(TEMPLATE.fill("modes_setting", setting=modes[0]["setting"]),
            TEMPLATE.fill("minus", method=name, other=SHORT["ema_control"]),
            [(r["modes"][name]["accuracy"], r["modes"]["control"]["accuracy"]) for r in modes])
    detection = [[setting, *detection_gap(results, setting, "f1"), *detection_gap(results, setting, "auroc")]
                 for setting in names]
    return TEMPLATE.fill("per_seed", seeds=", ".join(map(str, results["study"]["seeds"])),
                         modes_note=TEMPLATE.fill("modes_note", seeds=", ".join(str(r["seed"]) for r in modes))
                         if modes else "", rows=_table(rows),
                         detection=_table(detection))


def _diagnosis_table(results: dict) -> str:
    """How large the meta loss's gradient is next to CE's, by mode and inner learning rate α."""
    found = results.get("diagnosis") or []
    if not found:
        return ""
    first = found[0]
    rows = [[key, *(_sci([d["rows"][key][m] for d in found]) for m in ("grad_ratio", "cosine", "shift", "meta", "ce"))]
            for key in first["rows"]]
    return TEMPLATE.fill("diagnosis", top=headline(results), first=first,
                         seeds=", ".join(str(d["seed"]) for d in found), rows=_table(rows))


def _sci(values: list[float]) -> str:
    """Mean ± std in three significant digits: the diagnosis spans many orders of magnitude."""
    mean, std = mean_std(values)
    return f"{mean:.3g} ± {std:.2g}"


def _targets(results: dict, names: list[str]) -> str:
    """The targets (``TARGETS``), each checked from the records: the product default (MLNT with the paper's weight)
    and, where the sweep ran, the weight a user would choose on validation."""
    top = headline(results)
    variants = ["mlnt"] + (["mlnt_selected"] if _has(results, top, "mlnt_selected") else [])
    rows = []

    def row(part: str, target: Target, setting: str, key: str, met: bool, **values: float) -> None:
        rows.append(TEMPLATE.fill(part, setting=setting, model=TEMPLATE.fill(key), verdict=_verdict(met),
                                  points=_counted(target.bound, "point"), **values))

    over, over_ce, near = TARGETS["over_control"], TARGETS["over_ce_early"], TARGETS["near_clean"]
    for setting in (s for s in over.settings if s in names):
        for key in variants if setting == top else variants[:1]:
            mean, std = paired_gap(results, setting, key, "ema_control")
            row("over_control_row", over, setting, key, mean >= over.bound and mean > std, mean=mean, std=std)
    for setting in (s for s in over_ce.settings if s in names):
        for key in variants:
            mean, _ = paired_gap(results, setting, key, "ce_early")
            row("over_ce_early_row", over_ce, setting, key, mean >= over_ce.bound, mean=mean)
    clean = field(results, "clean", lambda r: r["methods"]["ce_early"]["accuracy"])  # the ceiling: CE early-stopped
    for setting in (s for s in near.settings if s in names and s == top and clean):
        for key in variants:
            gap = 100 * (mean_std(accuracy(results, setting, key))[0] - mean_std(clean)[0])
            row("near_clean_row", near, setting, key, gap >= -near.bound, gap=gap)
    for setting in names:
        cleanlab = mean_std(field(results, setting, lambda r: r["label_issues"]["cleanlab"]["f1"]))[0]
        ours = mean_std(field(results, setting, lambda r: r["label_issues"]["mlnt"]["f1"]))[0]
        rows.append(TEMPLATE.fill("detection_row", setting=setting, model=TEMPLATE.fill("mlnt"),
                                  difference=ours - cleanlab, verdict=_verdict(ours >= cleanlab)))
    return TEMPLATE.fill("targets", rows="\n".join(rows))


def _verdict(met: bool) -> str:
    return TEMPLATE.fill("met" if met else "missed")


def _calibration_table(results: dict, names: list[str]) -> str:
    rows = _table([[label, *(num(field(results, s, lambda r, k=key: r["methods"][k]["ece"])) for s in names)]
                   for key, label in METHODS])
    return TEMPLATE.fill("calibration", _columns(names), ece_bins=results["ece_bins"], rows=rows)


def _detection_table(results: dict, names: list[str]) -> str:
    """Each detector's list at every setting; on MLNT's row, its F1 and AUROC minus its control's, paired by seed."""
    metrics = ("precision", "recall", "f1", "auroc", "estimated_noise_rate", "true_noise_rate")
    rows = []
    for setting in names:
        for key, label in DETECTORS:
            cells = [num(field(results, setting, lambda r, m=m, k=key: r["label_issues"][k][m])) for m in metrics]
            gaps = ["—", "—"]
            if key == "mlnt":
                gaps = [detection_gap(results, setting, m)[0] for m in ("f1", "auroc")]
            rows.append([setting, label, *cells, *gaps])
    return TEMPLATE.fill("detection", rows=_table(rows))


def _modes_table(results: dict) -> str:
    cells = [r for r in results["records"] if r.get("part") == "modes"]
    if not cells:
        return ""
    modes = results["study"]["modes"]
    rows = []
    for name in ["control", *modes["names"]]:
        runs = [r["modes"][name] for r in cells]
        gap = mean_std([100 * (r["modes"][name]["accuracy"] - r["modes"]["control"]["accuracy"]) for r in cells])
        rows.append([TEMPLATE.fill("control") if name == "control" else name, pct([r["accuracy"] for r in runs]),
                     f"{gap[0]:+.2f} ± {gap[1]:.2f}", pct([r["student_last_accuracy"] for r in runs]),
                     ", ".join(r["released"] for r in runs), num([r["teacher_start_share_final"] for r in runs]),
                     num([r["seconds"] / 60 for r in runs])])
    return TEMPLATE.fill("modes", setting=cells[0]["setting"], train=cells[0]["modes"]["train"],
                         val=cells[0]["modes"]["val"], modes=modes, seeds=", ".join(str(r["seed"]) for r in cells),
                         rows=_table(rows))


# --- plots ---------------------------------------------------------------------------------------------------


def plots(results: dict) -> dict[str, bytes]:
    import matplotlib  # noqa: PLC0415 - the report's only use of it

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt  # noqa: PLC0415

    names = settings(results)
    out = {}
    for name, draw in (("accuracy.png", _plot_accuracy), ("curves.png", _plot_curves),
                       ("ablation.png", _plot_ablation), ("label_issues_pr.png", _plot_pr)):
        figure = draw(plt, results, names)
        buffer = io.BytesIO()
        figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
        plt.close(figure)
        out[name] = buffer.getvalue()
    return out


def _plot_accuracy(plt, results, names):
    """Symmetric noise by rate on the left (the headline cell, larger and on another schedule, as its own markers:
    a line through it would show every method gaining from 20 % to 50 % noise), the other kinds on the right."""
    symmetric = [s for s in names if s.startswith("symmetric-")]
    others = [s for s in names if s not in symmetric]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    study, headline_cell = results["study"], headline(results)
    sizes = {"line": f"{study['train_size']:,} images, {study['epochs']} epochs",
             "apart": f"{study['headline_size']:,} images, "
                      f"{study['headline_epochs'] or results['params']['mlnt']['epochs']} epochs"}
    for key, label in METHODS:
        parts = {"line": [s for s in symmetric if s != headline_cell],
                 "apart": [s for s in symmetric if s == headline_cell]}
        colour = None
        for part, cells in parts.items():
            stats = [mean_std(accuracy(results, s, key)) for s in cells]
            drawn = axes[0].errorbar([int(s.rpartition("-")[2]) for s in cells], [100 * m for m, _ in stats],
                                     yerr=[100 * d for _, d in stats], marker="o" if part == "line" else "D",
                                     linestyle="-" if part == "line" else "none", capsize=3, color=colour,
                                     label=label if part == "line" or not parts["line"] else None)
            colour = drawn.lines[0].get_color()
    clean = field(results, "clean", lambda r: r["methods"]["ce_early"]["accuracy"])
    if clean and headline_cell in symmetric:
        axes[0].plot([int(headline_cell.rpartition("-")[2])], [100 * mean_std(clean)[0]], marker="*", markersize=12,
                     color="black", linestyle="none", label="CE on clean labels")
    axes[0].set(xlabel=f"symmetric noise rate (%); circles and lines: {sizes['line']}; diamonds and star: "
                       f"{sizes['apart']}", ylabel="clean test accuracy (%)", title="Symmetric noise")
    axes[0].legend(fontsize=7, loc="lower left")
    width = 0.8 / len(METHODS)
    for i, (key, label) in enumerate(METHODS):
        stats = [mean_std(accuracy(results, s, key)) for s in others]
        axes[1].bar(np.arange(len(others)) + i * width, [100 * m for m, _ in stats],
                    yerr=[100 * d for _, d in stats], width=width, label=label)
    axes[1].set_xticks(np.arange(len(others)) + 0.4 - width / 2, others)
    axes[1].set(ylabel="clean test accuracy (%)", title="Class-dependent and instance-dependent noise (same colours)")
    if others:
        low = min(100 * mean_std(accuracy(results, s, k))[0] for s in others for k, _ in METHODS)
        axes[1].set_ylim(max(0.0, low - 10), 100)
    return figure


def _plot_curves(plt, results, names):
    figure, axis = plt.subplots(figsize=(7, 4.5))
    for setting in ["clean", *names]:
        curves = field(results, setting, lambda r: r["curves"]["ce"])
        if curves:
            length = min(len(c) for c in curves)
            mean = 100 * np.mean([c[:length] for c in curves], axis=0)
            axis.plot(np.arange(1, length + 1), mean, label=f"CE, {setting}",
                      linestyle="--" if setting == "clean" else "-")
    axis.set(xlabel="epoch", ylabel="validation accuracy (%), clean labels", title="CE by epoch, mean over seeds")
    axis.legend(fontsize=7)
    return figure


def _plot_ablation(plt, results, names):
    """Validation accuracy by epoch of MLNT and its control at every setting, student and teacher (seed means)."""
    figure, axes = plt.subplots(1, len(names), figsize=(3.4 * len(names), 3.4), squeeze=False)
    for axis, setting in zip(axes[0], names, strict=True):
        for key, colour in (("ema_control", "tab:gray"), ("mlnt", "tab:red")):
            for model, style in (("student", ":"), ("teacher", "-")):
                curves = field(results, setting, lambda r, k=key, m=model: r["curves"][k][m])
                length = min(len(c) for c in curves)
                # None (a gap in the line) where the teacher does not exist yet: the warm-up
                values = np.array([[np.nan if v is None else v for v in c[:length]] for c in curves], dtype=float)
                axis.plot(np.arange(1, length + 1), 100 * values.mean(axis=0), style, color=colour,
                          label=f"{'MLNT' if key == 'mlnt' else 'control'}, {model}")
        axis.set(title=setting, xlabel="epoch")
    axes[0][0].set_ylabel("validation accuracy (%)")
    axes[0][0].legend(fontsize=7)
    return figure


def _plot_pr(plt, results, names):
    figure, axes = plt.subplots(1, len(names), figsize=(3.2 * len(names), 3.4), squeeze=False)
    for axis, setting in zip(axes[0], names, strict=True):
        record = next(r for r in main_records(results) if r["setting"] == setting)
        for key, label in DETECTORS:
            curve = record["pr"][key]
            axis.plot(curve["recall"], curve["precision"], label=label)
        axis.set(title=f"{setting}, seed {record['seed']}", xlabel="recall", ylim=(0, 1.02))
    axes[0][0].set_ylabel("precision")
    axes[0][0].legend(fontsize=7)
    return figure


def results_path(output: Path) -> Path:
    """Where ``write`` puts the raw records of the report at ``output``."""
    return Path(output).parent / FOLDER / "results.json"


def write(results: dict, output: Path) -> None:
    """The report at ``output``; results.json and the plots in ``<output's folder>/quality/``."""
    output = Path(output)
    folder = output.parent / FOLDER
    write_json(folder / "results.json", results)
    for name, data in plots(results).items():
        write_atomic(folder / name, lambda fh, data=data: fh.write(data))
    text = render(results)
    write_text(output, text)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality.report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("docs") / FOLDER / "results.json")
    parser.add_argument("--output", type=Path, default=Path("docs/results.md"))
    args = parser.parse_args(argv)
    write(json.loads(args.results.read_text()), args.output)
    print(f"quality_report: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
