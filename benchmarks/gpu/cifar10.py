"""MLNT's published CIFAR-10 setup on a GPU, beside its control (meta_weight 0), CE and early stopping.

The pipeline's steps (ingest, noise, baseline, mlnt twice, evaluate) with ``benchmarks/gpu/cifar10.yaml``, once per
noise setting, and a report.

    python -m benchmarks.gpu.cifar10 [--data data/cifar10] [--settings symmetric:0.5,asymmetric:0.4]
                                     [--work artifacts/cifar10] [--output docs/cifar10-gpu.md] [--smoke]

It needs the CIFAR-10 python version (``cifar-10-batches-py/`` or ``cifar-10-python.tar.gz``, from
https://www.cs.toronto.edu/~kriz/cifar-10.html) and a CUDA device; without either it stops with a message that
says which is missing. ``--smoke`` runs one tiny epoch of everything on the CPU (what the test suite checks).
The report (``--output``, and its ``.json``) is written after each setting; a folder that cannot take it stops the
run before any training. In the image, which has no ``docs/`` and whose ``/app`` its user cannot write, pass a path
under ``--work``: ``--output artifacts/cifar10/cifar10-gpu.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.quality.study import ingest_once
from components import baseline, evaluate, ingest, mlnt, noise
from components.common.atomic import write_json, write_text
from components.common.config import build, load_params

PARAMS = Path(__file__).with_name("cifar10.yaml")
SECTIONS = {"ingest": ingest.IngestConfig, "noise": noise.NoiseConfig, "baseline": baseline.BaselineConfig,
            "mlnt": mlnt.MlntStepConfig, "evaluate": evaluate.EvaluateConfig}
SMOKE = {"noise": {"val_fraction": 0.2},
         "baseline": {"epochs": 1, "batch_size": 16, "device": "cpu", "progress": False, "lr_milestones": []},
         "mlnt": {"epochs": 1, "batch_size": 16, "device": "cpu", "progress": False, "lr_milestones": [],
                  "num_sets": 2, "neighbours": 4, "ramp_start": 0.0, "ramp_end": 0.5,
                  "rounds": 1}}


class MissingRequirementError(RuntimeError):
    """The data, the GPU or the writable --output folder that the published setup needs is not here."""


def configs(params_file: Path, kind: str, rate: float, *, data: Path, smoke: bool) -> dict:
    params = load_params(params_file)
    params["ingest"]["path"] = str(data)
    params["noise"].update(kind=kind, rate=rate)
    for section, values in (SMOKE if smoke else {}).items():
        params[section].update(values)
    return {name: build(cls, params.get(name, {}), where=f"{params_file}: {name}") for name, cls in SECTIONS.items()}


def parse_setting(text: str) -> tuple[str, float]:
    kind, _, rate = text.strip().partition(":")
    try:
        return kind, float(rate)
    except ValueError:
        raise ValueError(f"--settings: expected kind:rate such as symmetric:0.5, found {text!r}") from None


def setting_configs(params_file: Path, settings: str, *, data: Path, smoke: bool) -> list[dict]:
    """Every setting's configs, each checked before the first one trains (a typo in the last setting must not cost
    the GPU hours of the first)."""
    cfgs = []
    for text in settings.split(","):
        kind, rate = parse_setting(text)
        try:
            cfgs.append(configs(params_file, kind, rate, data=data, smoke=smoke))
        except ValueError as err:
            raise ValueError(f"--settings: {text.strip()!r}: {err}") from None
    return cfgs


def check_requirements(data: Path, *, smoke: bool) -> None:
    found = [p for p in (data / "cifar-10-batches-py", data / "cifar-10-python.tar.gz") if p.exists()]
    if not found:
        raise MissingRequirementError(
            f"{data}: expected cifar-10-batches-py/ or cifar-10-python.tar.gz (the CIFAR-10 python version from "
            "https://www.cs.toronto.edu/~kriz/cifar-10.html), found neither; pass --data")
    if not smoke and not torch.cuda.is_available():
        raise MissingRequirementError("expected a CUDA device for the published setup (PreAct ResNet-32, exact mode, "
                                      "120 epochs), found none; run it on a GPU machine, or --smoke to check the "
                                      "script on the CPU")


def check_output(output: Path) -> None:
    """``output``'s folder can be made and written: the report is written after each setting has trained (hours on
    a GPU), so a folder that cannot take it (the image has no docs/, and /app is not its user's) fails first."""
    folder = output.parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise MissingRequirementError(
            f"--output: expected a folder {folder} that can be made and written for {output.name} and "
            f"{output.with_suffix('.json').name}, found: {err.strerror or err}") from err


def run_setting(cfg: dict, work: Path) -> dict:
    """One noise setting through the pipeline's steps, in ``work``: CE, MLNT, and MLNT's control (the same run with
    ``meta_weight 0``: the same EMA teacher of plain CE, rounds and selection rule); returns the report's record."""
    # the ingest of this --data and ingest section: one of other data left in --work is made again, never reused
    ingested = ingest_once(work / "ingest", dataclasses.asdict(cfg["ingest"]))
    out = work / f"{cfg['noise'].kind}-{round(100 * cfg['noise'].rate)}"
    timings = {}
    summary = noise.run(cfg["noise"], ingest=ingested, out=out / "noise")
    control = dataclasses.replace(cfg["mlnt"], meta_weight=0.0)
    for name, step, config, kwargs in (("baseline", baseline.run, cfg["baseline"], {}),
                                       ("mlnt", mlnt.run, cfg["mlnt"], {"baseline": out / "baseline"}),
                                       ("ema_control", mlnt.run, control, {"baseline": out / "baseline"})):
        started = time.perf_counter()
        step(config, ingest=ingested, noise=out / "noise", out=out / name, **kwargs)
        timings[name] = round(time.perf_counter() - started, 1)
    metrics = {name: evaluate.run(cfg["evaluate"], ingest=ingested, noise=out / "noise", baseline=out / "baseline",
                                  mlnt=out / name, out=out / f"evaluate-{name}") for name in ("mlnt", "ema_control")}
    ce, ours, ctl = metrics["mlnt"]["baseline"], metrics["mlnt"], metrics["ema_control"]
    return {"setting": out.name, "realised_rate": summary["realised_rate_train"], "seconds": timings,
            "ce_last": ce["accuracy"], "ce_early": ce["best_epoch_accuracy"],
            "control_released": ctl["teacher"]["accuracy"], "mlnt_released": ours["teacher"]["accuracy"],
            "mlnt_student": ours["student"]["accuracy"], "label_issues_f1": ours["label_issues"]["f1"],
            "config": {k: dataclasses.asdict(v) for k, v in cfg.items() if k in ("baseline", "mlnt")}}


def render(results: dict) -> str:
    lines = ["# MLNT on CIFAR-10, the published setup", "",
             "Generated by `python -m benchmarks.gpu.cifar10` with `benchmarks/gpu/cifar10.yaml`; do not edit by hand.",
             f"Device: {results['device']}; finished {results['finished']}."
             + (" **Smoke run** (tiny data, one epoch, CPU): it checks the script, not the method." if
                results["smoke"] else ""), "",
             "Clean test accuracy. The control is MLNT with meta_weight 0: the same EMA teacher, rounds, schedule and "
             "selection rule; \"released\" is the better of student and teacher on the clean validation set; "
             "\"MLNT student\" is MLNT's student at its last step.", "",
             "| setting | realised noise | CE last (%) | CE early stopping (%) | control released (%) | "
             "MLNT released (%) | MLNT − control (points) | MLNT student (%) | label-issue F1 | "
             "hours (CE + MLNT + control) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in results["records"]:
        hours = sum(r["seconds"].values()) / 3600
        gap = 100 * (r["mlnt_released"] - r["control_released"])
        lines.append(f"| {r['setting']} | {100 * r['realised_rate']:.1f} % | {100 * r['ce_last']:.2f} | "
                     f"{100 * r['ce_early']:.2f} | {100 * r['control_released']:.2f} | "
                     f"{100 * r['mlnt_released']:.2f} | {gap:+.2f} | {100 * r['mlnt_student']:.2f} | "
                     f"{r['label_issues_f1']:.3f} | {hours:.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.gpu.cifar10", description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("data/cifar10"))
    parser.add_argument("--settings", default="symmetric:0.5,asymmetric:0.4",
                        help="comma-separated kind:rate noise settings (default: %(default)s)")
    parser.add_argument("--params", type=Path, default=PARAMS)
    parser.add_argument("--work", type=Path, default=Path("artifacts/cifar10"))
    parser.add_argument("--output", type=Path, default=Path("docs/cifar10-gpu.md"),
                        help="the report, and its .json beside it (default: %(default)s, in a checkout; in the "
                             "image, which has no docs/, a path under --work such as artifacts/cifar10/cifar10-gpu.md)")
    parser.add_argument("--smoke", action="store_true", help="one tiny epoch on the CPU: checks the script runs")
    args = parser.parse_args(argv)
    try:
        check_requirements(args.data, smoke=args.smoke)
        cfgs = setting_configs(args.params, args.settings, data=args.data, smoke=args.smoke)
        check_output(args.output)
    except (MissingRequirementError, ValueError) as err:
        print(f"error: benchmarks.gpu.cifar10: {err}", file=sys.stderr)
        return 2
    device = torch.cuda.get_device_name() if torch.cuda.is_available() and not args.smoke else "CPU"
    results = {"device": device, "smoke": args.smoke, "records": []}
    for cfg in cfgs:  # the report is written after each setting: a later failure keeps the hours already spent
        results["records"].append(run_setting(cfg, args.work))
        results["finished"] = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        write_json(args.output.with_suffix(".json"), results)
        text = render(results)
        write_text(args.output, text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
