"""Does temperature scaling on noisy validation labels calibrate the released model? Five fits on the same model.

The export step fits its temperature on the validation set, whose labels are noisy where a dataset has no clean
validation split (an image folder without ``val/``). This takes a finished pipeline run whose validation labels are
clean (``dvc repro``'s ``artifacts/``: ingest, noise, ``mlnt/teacher.pt`` and ``baseline/model.pt``, the two models
the export step chooses between), corrupts those labels (each setting of ``SETTINGS``, ``components.noise.corrupt``,
once per ``--draws`` seed) and fits T on them five ways: on the clean labels (the reference), on the noisy labels
alone (what the export step did before), and through the labels' noise matrix (forward correction) as estimated by
cleanlab's confident joint, by anchor points (``components.common.calibration``, what the export step does now), and
as realised (the true matrix, which no user has). Each T is scored by its expected calibration error against the
clean validation labels (which no noisy fit sees; the criterion the anchor estimator was chosen on) and on the clean
test set (no choice made on it). Trains nothing; a minute or two on a CPU.

    python -m benchmarks.quality.calibration [--artifacts artifacts] [--draws 5] [--output docs/quality/calibration.md]
    python -m benchmarks.quality.calibration --render  # the page again from the recorded calibration.json
    python -m benchmarks.quality.calibration --if-changed  # measure only another run than the recorded one
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.quality import on_run
from benchmarks.quality.report import mean_std
from benchmarks.template import Template
from components.common.artifacts import read_arrays, read_json, read_manifest
from components.common.calibration import NoisyFit, fit_temperature, fit_temperature_on_noisy_labels
from components.common.model_file import load_model
from components.common.report import md5
from components.common.splits import load_split, read_noise_labels, test_set
from components.evaluate import expected_calibration_error
from components.noise import NoiseConfig, _class_map, corrupt, transition_matrix

TEMPLATE = Template(Path(__file__).with_name("templates") / "calibration.md")
DRAWS = 5
BINS = 15
SETTINGS = (("none", 0.0), ("symmetric", 0.2), ("symmetric", 0.5), ("symmetric", 0.8), ("asymmetric", 0.4),
            ("pairflip", 0.3), ("instance", 0.4))
FITS = ("clean", "plain", "confident_joint", "anchor", "true_matrix")
MODELS = {"teacher": "mlnt/teacher.pt", "ce_best": "baseline/model.pt"}


def fits(logits: torch.Tensor, clean: np.ndarray, noisy: np.ndarray) -> tuple[dict[str, float], NoisyFit]:
    """The five temperatures of one model on one corruption of its validation labels, and the export step's fit of
    those labels (its noise rate goes on the page)."""
    from cleanlab.count import estimate_py_and_noise_matrices_from_probabilities  # noqa: PLC0415 - study-only

    labels = torch.from_numpy(noisy)
    k = logits.shape[1]
    _, given_by_true, _, _ = estimate_py_and_noise_matrices_from_probabilities(
        noisy, torch.softmax(logits, dim=1).numpy())  # cleanlab's matrix: [given, true]
    anchor = fit_temperature_on_noisy_labels(logits, labels)
    return {"clean": fit_temperature(logits, torch.from_numpy(clean)), "plain": anchor.uncorrected,
            "confident_joint": fit_temperature(logits, labels, noise_matrix=given_by_true.T),
            "anchor": anchor.temperature,
            "true_matrix": fit_temperature(logits, labels, noise_matrix=transition_matrix(clean, noisy, k))}, anchor


def _ece(logits: torch.Tensor, labels: np.ndarray, temperature: float) -> float:
    return expected_calibration_error(torch.softmax(logits / temperature, dim=1).numpy(), labels, BINS)


def measure(artifacts: Path, *, draws: int = DRAWS) -> dict:
    """Every model, setting and draw: each fit's temperature and its ECE on the clean validation and test labels."""
    started = time.perf_counter()
    summary = read_json(artifacts / "noise" / "summary.json", "noise", "val_clean")
    if not summary["val_clean"]:
        raise ValueError(f"{artifacts / 'noise' / 'summary.json'}: expected a run with clean validation labels "
                         "(noise.val_clean), which this check corrupts and scores against, found val_clean false")
    manifest = read_manifest(artifacts / "ingest")
    _, val, _ = load_split(artifacts / "ingest", artifacts / "noise", workers=0)
    clean = val.labels.numpy()
    images = _val_images(artifacts, manifest)
    models = {}
    for name, file in MODELS.items():
        net, saved = load_model(artifacts / file)
        test = test_set(artifacts / "ingest", saved["normalisation"], workers=0)
        with torch.no_grad():
            val_logits = torch.cat([net.eval()(x) for x, _ in val.eval_batches(512)]).double()
            test_logits = torch.cat([net(x) for x, _ in test.eval_batches(512)]).double()
        test_labels = test.labels.numpy()
        runs = []
        for kind, rate in SETTINGS:
            class_map = _class_map(NoiseConfig(kind=kind, rate=rate), manifest)
            for seed in range(draws):
                noisy = corrupt(clean, kind=kind, rate=rate, num_classes=val_logits.shape[1],
                                rng=np.random.default_rng(seed), class_map=class_map, images=images)
                found, anchor = fits(val_logits, clean, noisy)
                runs.append({"kind": kind, "rate": rate, "seed": seed, "realised_rate": float((noisy != clean).mean()),
                             "anchor_noise_rate": anchor.noise_rate,
                             **{fit: {"temperature": t, "val_ece": _ece(val_logits, clean, t),
                                      "test_ece": _ece(test_logits, test_labels, t)} for fit, t in found.items()}})
        models[name] = {"md5": md5(artifacts / file), "test_accuracy": float(
            (test_logits.argmax(1).numpy() == test_labels).mean()), "test_ece_uncalibrated": _ece(
            test_logits, test_labels, 1.0), "runs": runs}
    return {"artifacts": str(artifacts), "dataset": manifest["dataset"], "val_images": int(clean.size),
            "test_images": int(test_labels.size), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "draws": draws, "models": models, "wall_seconds": round(time.perf_counter() - started, 1)}


def _val_images(artifacts: Path, manifest: dict) -> np.ndarray:
    """The validation set's images as ingest stored them (uint8), in the validation set's order: instance noise
    draws from them."""
    if "val" in manifest["counts"]:
        return read_arrays(artifacts / "ingest" / "val.npz", "ingest", "images")[0]
    labels = read_noise_labels(artifacts / "ingest", artifacts / "noise", "index", "is_val")
    (images,) = read_arrays(artifacts / "ingest" / "train.npz", "ingest", "images")
    return images[labels["index"][labels["is_val"]]]


def _runs(model: dict, kind: str, rate: float) -> list[dict]:
    return [run for run in model["runs"] if (run["kind"], run["rate"]) == (kind, rate)]


def _mean(model: dict, setting: tuple[str, float], fit: str, key: str) -> float:
    return float(np.mean([run[fit][key] for run in _runs(model, *setting)]))


def render_model(name: str, model: dict) -> str:
    """One model's section: its summary sentence and the test ECE, validation ECE and temperature tables."""
    settings = [(kind, rate) for kind, rate in SETTINGS if _runs(model, kind, rate)]

    def rows(key: str, cell) -> str:
        return "\n".join(TEMPLATE.fill("row", fit=TEMPLATE.fill(fit), cells=" | ".join(
            cell([run[fit][key] for run in _runs(model, *s)]) for s in settings)) for fit in FITS)

    def spread(values: list[float]) -> str:
        return "{:.3f} ± {:.3f}".format(*mean_std(values))

    def lower(fit: str, key: str) -> int:
        return sum(_mean(model, s, "anchor", key) < _mean(model, s, fit, key) for s in settings)

    anchor = [_mean(model, s, "anchor", "test_ece") for s in settings]
    worst = int(np.argmax(anchor))
    rates = " | ".join("{:.3f} ({:.3f})".format(*(float(np.mean([run[k] for run in _runs(model, *s)]))
                                                  for k in ("realised_rate", "anchor_noise_rate"))) for s in settings)
    return TEMPLATE.fill(
        "model", title=TEMPLATE.fill(name), accuracy=model["test_accuracy"], raw_ece=model["test_ece_uncalibrated"],
        settings=len(settings), better_plain=lower("plain", "test_ece"), better_cj=lower("confident_joint", "test_ece"),
        better_cj_val=lower("confident_joint", "val_ece"), worst=anchor[worst], worst_setting=_label(settings[worst]),
        clean_worst=max(_mean(model, s, "clean", "test_ece") for s in settings),
        headers=" | ".join(_label(s) for s in settings), rule="---|" * len(settings), rates=rates,
        test_rows=rows("test_ece", spread), val_rows=rows("val_ece", spread),
        t_rows=rows("temperature", lambda values: f"{np.mean(values):.3f}"))


def _label(setting: tuple[str, float]) -> str:
    return "no noise" if setting[0] == "none" else f"{setting[0]} {setting[1]:.0%}"


def render(found: dict) -> str:
    """The page: what was fitted and how it is scored, then one section per model."""
    models = found["models"]
    return TEMPLATE.fill(
        "page", seconds=found["wall_seconds"], artifacts=found["artifacts"], cpu=found["cpu_capability"],
        teacher_md5=models["teacher"]["md5"][:8], ce_md5=models["ce_best"]["md5"][:8], val=found["val_images"],
        test=found["test_images"], draws=found["draws"], draws_last=found["draws"] - 1, bins=BINS,
        models="\n\n".join(render_model(name, models[name]) for name in MODELS)) + "\n"


CHECK = on_run.Check(
    "calibration", __doc__, "docs/quality/calibration.md",
    "DIR/ingest, DIR/noise (clean validation labels), DIR/mlnt/teacher.pt, DIR/baseline/model.pt", DRAWS,
    "corruptions per setting", lambda artifacts, draws: measure(artifacts, draws=draws), render,
    lambda found, artifacts: all(found.get("models", {}).get(m, {}).get("md5") == md5(artifacts / file)
                                 for m, file in MODELS.items()),
    lambda found: f"{len(SETTINGS)} settings x {found['draws']} draws")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.quality.calibration``: 0, or 1 with one error line when the run cannot be read."""
    return on_run.run(CHECK, argv)


if __name__ == "__main__":
    raise SystemExit(main())
