"""``docs/results.md`` and its plots, from the quality study's raw records alone (``docs/quality/results.json``).

    python -m benchmarks.quality_report [--results docs/quality/results.json] [--output docs/results.md]

Every figure in the report is a mean ± standard deviation (over seeds) of a field of those records, or a
difference of two such means; nothing is typed in by hand.
"""

from __future__ import annotations

import argparse
import io
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np

from components.atomic import write_atomic, write_json

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
DETECTORS = (("mlnt", "MLNT (released model)"), ("ema_control", "EMA-teacher control (released model)"),
             ("cleanlab", "cleanlab (out-of-sample CE)"))
FOLDER = "quality"  # beside the report: results.json and the plots


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
    names = settings(results)
    lines = _header(results) + _accuracy_table(results, names) + _ablation(results) + _gaps(results, names)
    lines += _diagnosis_table(results)
    lines += _targets(results, names) + _calibration_table(results, names)
    lines += _detection_table(results, names) + _modes_table(results) + _plots_section()
    return "\n".join(lines) + "\n"


def _header(results: dict) -> list[str]:
    study, params, machine = results["study"], results["params"], results["machine"]
    base, meta = params["baseline"], params["mlnt"]
    top = headline(results)
    cell = next((r for r in main_records(results) if r["setting"] != top and r["kind"] != "none"), None)
    big = next((r for r in main_records(results) if r["setting"] == top), None)
    sizes = []
    if big:
        sizes.append(f"{top}: {study['headline_size']} images drawn per cell ({big['train']} training with noisy "
                     f"labels, {big['val']} validation with clean labels), {study['headline_epochs'] or base['epochs']}"
                     " epochs (params.yaml's schedule, the pipeline's own run)")
    if cell:
        sizes.append(f"the other settings: {study['train_size']} images ({cell['train']} training, {cell['val']} "
                     f"validation), {study['epochs'] or base['epochs']} epochs (more passes over fewer images)")
    seconds = results["wall_seconds"] + sum(r["wall_seconds"] for r in results.get("reruns", []))
    return ["# Quality study: MLNT against its EMA-teacher control, CE, early stopping and Confident Learning", "",
            "Generated by `make quality` (`python -m benchmarks.quality`) from the raw records in "
            f"[`{FOLDER}/results.json`]({FOLDER}/results.json); do not edit by hand. Method and lessons: "
            "[quality.md](quality.md).", "",
            f"- Data: {params['ingest']['dataset']}; " + "; ".join(sizes) + ". The full clean test set. Seeds "
            f"{', '.join(map(str, study['seeds']))} (each draws its own images, noise, initialisation and data "
            "order); every row of a setting has the same images, noise, seed, schedule and selection rule.",
            f"- Every method: network `{base['network']}`, SGD lr {base['lr']}, momentum {base['momentum']}, weight "
            f"decay {base['weight_decay']}, batch {study['batch_size'] or base['batch_size']}. The model kept is "
            f"chosen on the clean validation set (every {base['eval_every']} steps and at each epoch end), never on "
            "the test set.",
            f"- MLNT and its control, as published: from the network's initialisation (CE's model gives only the "
            f"neighbour features), `{meta['mode']}` mode, M = {meta['num_sets']}, ρ = {meta['fraction']}, k = "
            f"{meta['neighbours']}, α = {meta['inner_lr']}, meta_weight {meta['meta_weight']} in the paper's units; "
            f"meta loss and EMA teacher start together after a {meta['ramp_start']}-epoch warm-up (teacher copied "
            f"from the student), ramp-up to epoch {meta['ramp_end']} with EMA decay {meta['ema_during_ramp']}, then "
            f"{meta['ema_after_ramp']}; the better of student and teacher on validation is released. The control is "
            "the same run with meta_weight 0: the same EMA teacher of plain CE.",
            f"- Warm start (at {top}): from CE's early-stopped weights, {study['warm']['epochs']} epochs, ramp-up "
            f"{study['warm']['ramp_start']} → {study['warm']['ramp_end']} epochs. meta_weight sweep (at {top}): "
            f"{', '.join(f'{m:g}' for m in study['sweep'])} × the paper's, one chosen per seed on validation.",
            f"- Confident Learning: `cleanlab.filter.find_label_issues` on {study['folds']}-fold out-of-sample "
            "probabilities (fold models trained for CE's early-stopping epoch count), then CE on the kept samples.",
            f"- Ran in {seconds / 60:.1f} min on {machine['cpus']} CPU cores ({results['workers']} cells in parallel, "
            f"{results['threads_per_worker']} thread(s) each), torch {machine['torch']}, finished "
            f"{results['finished']}.", ""]


def _accuracy_table(results: dict, names: list[str]) -> list[str]:
    lines = ["## Clean test accuracy (%), mean ± std over seeds", "",
             "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    realised = [pct(field(results, s, lambda r: r["realised_rate"])) for s in names]
    lines.append("| *realised noise rate of the training labels* | " + " | ".join(realised) + " |")
    for key, label in METHODS:
        lines.append(f"| {label} | " + " | ".join(pct(accuracy(results, s, key)) for s in names) + " |")
    clean = field(results, "clean", lambda r: r["methods"]["ce_early"]["accuracy"])
    if clean:
        last = field(results, "clean", lambda r: r["methods"]["ce_last"]["accuracy"])
        lines += ["", f"Ceiling, CE on clean labels ({headline(results)}'s images and schedule): last epoch "
                  f"{pct(last)}, early stopping {pct(clean)}."]
    return [*lines, ""]


def _ablation(results: dict) -> list[str]:
    """Every MLNT variant at the headline setting against its control."""
    top = headline(results)
    rows = [(k, label) for k, label in ABLATION if _has(results, top, k)]
    if not rows:
        return []
    lines = [f"## The ablation at {top}: what the meta loss adds to the same EMA teacher", "",
             "Test accuracy of the released model and of the student at its last step; validation accuracy, the "
             "only number any choice was made on; which model was released (student or teacher, per seed); the "
             "share of the released teacher's weights still on the weights it started from.", "",
             "| run | test accuracy (%) | student, last step (%) | validation accuracy (%) | released | "
             "teacher's start share | minutes |", "|---|---|---|---|---|---|---|"]
    for key, label in rows:
        runs = field(results, top, lambda r, k=key: r["methods"][k])
        student = pct([r["student_last_accuracy"] for r in runs]) if "student_last_accuracy" in runs[0] else "—"
        val = pct([r["val_accuracy"] for r in runs]) if "val_accuracy" in runs[0] else "—"
        released = ", ".join(r["released"] for r in runs) if "released" in runs[0] else "—"
        shares = [r["teacher_start_share_released"] for r in runs if r.get("teacher_start_share_released") is not None]
        share = num(shares) if shares else "—"
        if key == "mlnt_selected":
            released += " (chosen: " + ", ".join(r["chosen"] for r in runs) + ")"
        lines.append(f"| {label} | {pct([r['accuracy'] for r in runs])} | {student} | {val} | {released} | "
                     f"{share} | {num([r['seconds'] / 60 for r in runs])} |")
    return [*lines, ""]


def _gaps(results: dict, names: list[str]) -> list[str]:
    """The meta loss's effect at every setting, paired by seed."""
    lines = ["## MLNT minus its control, per setting (points, mean ± std over seeds of the per-seed difference)", "",
             "| setting | released model | student at its last step |", "|---|---|---|"]
    for setting in names:
        released = paired_gap(results, setting, "mlnt", "ema_control")
        student = paired_gap(results, setting, "mlnt", "ema_control", key="student_last_accuracy")
        lines.append(f"| {setting} | {released[0]:+.2f} ± {released[1]:.2f} | {student[0]:+.2f} ± {student[1]:.2f} |")
    return [*lines, ""]


def _diagnosis_table(results: dict) -> list[str]:
    """How large the meta loss's gradient is next to CE's, by mode and inner learning rate α."""
    found = results.get("diagnosis") or []
    if not found:
        return []
    first = found[0]
    lines = [f"## Why: the meta loss's gradient next to cross-entropy's ({headline(results)})", "",
             f"`benchmarks.meta_diagnosis` on each seed's MLNT run (the student at its last step, its released model "
             f"as the target, {first['batches']} training batches with MLNT's synthetic labels): the norm of "
             f"∇(w · J) at the run's meta_weight w = {first['meta_weight']} over that of ∇CE; their cosine; how far "
             "one inner step of size α moves the predictions (mean per-sample KL between before and after); and "
             "J next to CE. Seeds " + ", ".join(str(d["seed"]) for d in found) + ".", "",
             "| mode @ α | ‖∇(w·J)‖ / ‖∇CE‖ | cosine(∇J, ∇CE) | prediction shift (KL) | J | CE |",
             "|---|---|---|---|---|---|"]
    for key in first["rows"]:
        values = {m: [d["rows"][key][m] for d in found] for m in ("grad_ratio", "cosine", "shift", "meta", "ce")}
        lines.append(f"| {key} | " + " | ".join(_sci(v) for v in values.values()) + " |")
    return [*lines, ""]


def _sci(values: list[float]) -> str:
    """Mean ± std in three significant digits: the diagnosis spans many orders of magnitude."""
    mean, std = mean_std(values)
    return f"{mean:.3g} ± {std:.2g}"


def _targets(results: dict, names: list[str]) -> list[str]:
    """The targets, each checked from the records: the product default (MLNT with the paper's weight) and, where
    the sweep ran, the weight a user would choose on validation."""
    top = headline(results)
    variants = [("mlnt", "MLNT")] + ([("mlnt_selected", "MLNT, weight chosen on validation")]
                                     if _has(results, top, "mlnt_selected") else [])
    lines = ["## Targets", "", "| check | model | value | |", "|---|---|---|---|"]
    for setting in (s for s in ("symmetric-50", "symmetric-80") if s in names):
        for key, label in variants if setting == top else variants[:1]:
            mean, std = paired_gap(results, setting, key, "ema_control")
            met = mean >= 1.0 and mean > std
            lines.append(f"| ≥ EMA-teacher control + 1 point, by more than one std, at {setting} | {label} | "
                         f"{mean:+.2f} ± {std:.2f} | {_verdict(met)} |")
    if "symmetric-50" in names:
        for key, label in variants:
            mean, _ = paired_gap(results, "symmetric-50", key, "ce_early")
            lines.append(f"| ≥ CE early stopping + 2 points at symmetric-50 | {label} | {mean:+.2f} | "
                         f"{_verdict(mean >= 2.0)} |")
        clean = field(results, "clean", lambda r: r["methods"]["ce_early"]["accuracy"])
        if clean and top == "symmetric-50":
            for key, label in variants:
                gap = 100 * (mean_std(accuracy(results, top, key))[0] - mean_std(clean)[0])
                lines.append(f"| within 3 points of the clean ceiling at symmetric-50 | {label} | {gap:+.2f} | "
                             f"{_verdict(gap >= -3.0)} |")
    for setting in names:
        cleanlab = mean_std(field(results, setting, lambda r: r["label_issues"]["cleanlab"]["f1"]))[0]
        ours = mean_std(field(results, setting, lambda r: r["label_issues"]["mlnt"]["f1"]))[0]
        lines.append(f"| label-issue F1 ≥ cleanlab's at {setting} | MLNT | {ours - cleanlab:+.3f} | "
                     f"{_verdict(ours >= cleanlab)} |")
    return [*lines, ""]


def _verdict(met: bool) -> str:
    return "met" if met else "**missed**"


def _calibration_table(results: dict, names: list[str]) -> list[str]:
    lines = ["## Calibration: expected calibration error on the clean test set (15 bins; lower is better)", "",
             "Before the export step's temperature scaling, which leaves predictions unchanged.", "",
             "| method | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for key, label in METHODS:
        lines.append(f"| {label} | " + " | ".join(
            num(field(results, s, lambda r, k=key: r["methods"][k]["ece"])) for s in names) + " |")
    return [*lines, ""]


def _detection_table(results: dict, names: list[str]) -> list[str]:
    lines = ["## Label-issue detection on the training set (against the injected noise)", "",
             "Precision, recall and F1 of the flagged set; AUROC of the ranking; the estimated noise rate is the "
             "flagged share (MLNT and control: samples whose released model's prediction differs from the given "
             "label).", "",
             "| setting | detector | precision | recall | F1 | AUROC | estimated noise | true noise |",
             "|---|---|---|---|---|---|---|---|"]
    for setting in names:
        for key, label in DETECTORS:
            values = {m: field(results, setting, lambda r, m=m, k=key: r["label_issues"][k][m])
                      for m in ("precision", "recall", "f1", "auroc", "estimated_noise_rate", "true_noise_rate")}
            lines.append(f"| {setting} | {label} | " + " | ".join(num(v) for v in values.values()) + " |")
    return [*lines, ""]


def _modes_table(results: dict) -> list[str]:
    cells = [r for r in results["records"] if r.get("part") == "modes"]
    if not cells:
        return []
    modes = results["study"]["modes"]
    names = ["control", *modes["names"]]
    lines = [f"## MLNT's modes at {cells[0]['setting']}, each against the control, from the initialisation", "",
             f"{cells[0]['modes']['train']} training rows and the same {cells[0]['modes']['val']} clean validation "
             f"rows, batch {modes['batch_size']}, {modes['epochs']} epochs, warm-up {modes['ramp_start']} and ramp-up "
             f"to {modes['ramp_end']} epochs (the other settings as above); seeds "
             f"{', '.join(str(r['seed']) for r in cells)}. Fewer images than the other tables: `exact` and "
             "`first_order` cost 16-30× a CE step on the CPU (docs/benchmarks.md).", "",
             "| mode | test accuracy (%) | minus control (points) | student, last step (%) | released | "
             "teacher's start share at the end | minutes per run |", "|---|---|---|---|---|---|---|"]
    for name in names:
        runs = [r["modes"][name] for r in cells]
        gap = mean_std([100 * (r["modes"][name]["accuracy"] - r["modes"]["control"]["accuracy"]) for r in cells])
        lines.append(f"| {'control (meta_weight 0)' if name == 'control' else name} | "
                     f"{pct([r['accuracy'] for r in runs])} | {gap[0]:+.2f} ± {gap[1]:.2f} | "
                     f"{pct([r['student_last_accuracy'] for r in runs])} | "
                     f"{', '.join(r['released'] for r in runs)} | {num([r['teacher_start_share_final'] for r in runs])}"
                     f" | {num([r['seconds'] / 60 for r in runs])} |")
    return [*lines, ""]


def _plots_section() -> list[str]:
    return ["## Plots", "",
            f"![Clean test accuracy against the noise rate]({FOLDER}/accuracy.png)", "",
            f"![Validation accuracy of CE by epoch: convergence on clean labels, memorisation under noise]"
            f"({FOLDER}/curves.png)", "",
            f"![Validation accuracy of MLNT and its control by epoch, student and teacher]({FOLDER}/ablation.png)", "",
            f"![Precision-recall of the label-issue rankings, first seed]({FOLDER}/label_issues_pr.png)", ""]


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
    symmetric = [s for s in names if s.startswith("symmetric-")]
    others = [s for s in names if s not in symmetric]
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    rates = [int(s.rpartition("-")[2]) for s in symmetric]
    for key, label in METHODS:
        stats = [mean_std(accuracy(results, s, key)) for s in symmetric]
        axes[0].errorbar(rates, [100 * m for m, _ in stats], yerr=[100 * d for _, d in stats], marker="o",
                         capsize=3, label=label)
    clean = field(results, "clean", lambda r: r["methods"]["ce_early"]["accuracy"])
    if clean:
        axes[0].axhline(100 * mean_std(clean)[0], color="black", linestyle="--", label="CE on clean labels")
    axes[0].set(xlabel="symmetric noise rate (%)", ylabel="clean test accuracy (%)", title="Symmetric noise")
    axes[0].legend(fontsize=7)
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
    write_atomic(output, lambda fh: fh.write(text.encode()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality_report", description=__doc__.splitlines()[0])
    parser.add_argument("--results", type=Path, default=Path("docs") / FOLDER / "results.json")
    parser.add_argument("--output", type=Path, default=Path("docs/results.md"))
    args = parser.parse_args(argv)
    write(json.loads(args.results.read_text()), args.output)
    print(f"quality_report: {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
