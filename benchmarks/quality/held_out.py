"""Does scoring the images the model trained on flatter the label-issue list? The same model and rules on images it
never saw.

The evaluate step ranks the training images with the MLNT teacher that trained on them: its probabilities are
in-sample, and a network gives the labels it fitted a higher probability, right or wrong. cleanlab's rules are
meant for out-of-sample probabilities (the quality study gives cleanlab k-fold CE probabilities). This takes a
finished pipeline run (``dvc repro``'s ``artifacts/``: ingest, noise, ``mlnt/teacher.pt``), scores the clean test
set (never trained on; no choice in this study is made on it), corrupts its labels as the run's noise step
corrupted the training labels (its kind and rate, ``components.noise.corrupt``), once per ``--draws`` seed, and
measures on those held-out probabilities the evaluate step's rule (``components.evaluate.flag_issues``) and
cleanlab's ``find_label_issues`` (its default, ``prune_by_noise_rate``); beside them, both rules on the run's own
training images and labels (in-sample, the evaluate step's list). Trains nothing; a minute on a CPU.

    python -m benchmarks.quality.held_out [--artifacts artifacts] [--draws 5] [--output docs/quality/held_out.md]
    python -m benchmarks.quality.held_out --render  # the page again from the recorded held_out.json
    python -m benchmarks.quality.held_out --if-changed  # measure only a run other than the recorded one (make results)
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from benchmarks.quality import on_run
from benchmarks.quality.report import mean_std
from benchmarks.template import Template
from components.common.artifacts import read_json, read_manifest
from components.common.config import CONFIG_FILE, build
from components.common.model_file import load_model
from components.common.report import md5
from components.common.splits import load_split, read_noise_labels, test_set
from components.evaluate import detection_summary, flag_issues
from components.noise import NoiseConfig, _class_map, corrupt
from model.trainer import predict

TEMPLATE = Template(Path(__file__).with_name("templates") / "held_out.md")
DRAWS = 5
SYNTHETIC = ("symmetric", "uniform_other", "pairflip", "asymmetric", "instance")
RULES = ("evaluate", "cleanlab")
METRICS = ("precision", "recall", "f1", "auroc")


def detect(probs: np.ndarray, given: np.ndarray, noisy: np.ndarray) -> dict[str, dict]:
    """Both rules on one set of probabilities: the evaluate step's (the k highest 1 - p(given), k the number of
    disagreements; ranked by -p, ``flag_issues``) and cleanlab's default, each scored against the known noise."""
    from cleanlab.filter import find_label_issues  # noqa: PLC0415 - a study-only dependency
    from cleanlab.rank import get_label_quality_scores  # noqa: PLC0415

    suspicion, _, flagged = flag_issues(probs, given)
    cleanlab = find_label_issues(given, probs, n_jobs=1)
    return {"evaluate": detection_summary(suspicion, flagged, noisy),
            "cleanlab": detection_summary(1.0 - get_label_quality_scores(given, probs), cleanlab, noisy)}


def measure(artifacts: Path, *, draws: int = DRAWS, batch_size: int = 512) -> dict:
    """Both rules in-sample (the run's training labels) and held out (the test set, ``draws`` corruptions)."""
    started = time.perf_counter()
    noise_config = build(NoiseConfig, read_json(artifacts / "noise" / CONFIG_FILE, "noise", "kind"),
                         where=str(artifacts / "noise" / CONFIG_FILE))
    if noise_config.kind not in SYNTHETIC or noise_config.rate == 0.0:
        raise ValueError(f"{artifacts / 'noise' / CONFIG_FILE}: expected a run with synthetic noise (kind "
                         f"{', '.join(SYNTHETIC)} at a rate above 0), whose wrong labels are known, found kind "
                         f"{noise_config.kind!r} at rate {noise_config.rate}")
    manifest = read_manifest(artifacts / "ingest")
    teacher_file = artifacts / "mlnt" / "teacher.pt"
    teacher, saved = load_model(teacher_file)
    labels = read_noise_labels(artifacts / "ingest", artifacts / "noise", "label", "is_noisy", "is_val")
    train = ~labels["is_val"]
    train_data, _, _ = load_split(artifacts / "ingest", artifacts / "noise", workers=0)
    in_sample = predict(teacher, train_data, batch_size=batch_size, desc="held_out: the training images").numpy()
    test = test_set(artifacts / "ingest", saved["normalisation"], workers=0)
    held_out = predict(teacher, test, batch_size=batch_size, desc="held_out: the test images").numpy()
    clean = test.labels.numpy().astype(np.int64)
    images = None
    if noise_config.kind == "instance":
        with np.load(artifacts / "ingest" / "test.npz") as data:
            images = data["images"]
    runs = []
    for seed in range(draws):
        noisy_labels = corrupt(clean, kind=noise_config.kind, rate=noise_config.rate,
                               num_classes=saved["num_classes"], rng=np.random.default_rng(seed),
                               class_map=_class_map(noise_config, manifest), images=images)
        noisy = noisy_labels != clean
        runs.append({"seed": seed, "realised_rate": float(noisy.mean()), **detect(held_out, noisy_labels, noisy)})
    return {"artifacts": str(artifacts), "dataset": manifest["dataset"],
            "noise": {"kind": noise_config.kind, "rate": noise_config.rate},
            "teacher_md5": md5(teacher_file),  # as dvc.lock lists it: tests/test_generated_docs.py compares them
            "train_images": int(train.sum()), "test_images": int(clean.size),
            "in_sample": {"realised_rate": float(labels["is_noisy"][train].mean()),
                          **detect(in_sample, labels["label"][train], labels["is_noisy"][train])},
            "held_out": runs, "wall_seconds": round(time.perf_counter() - started, 1)}


def render(found: dict) -> str:
    """The page: each rule in-sample and held out (mean ± std over the draws), then the held-out difference per
    draw."""
    rows = []
    for rule in RULES:
        rows.append(TEMPLATE.fill("row", rule=TEMPLATE.fill(rule), where=TEMPLATE.fill("in_sample"),
                                  **{m: f"{found['in_sample'][rule][m]:.3f}" for m in METRICS}))
    for rule in RULES:
        rows.append(TEMPLATE.fill("row", rule=TEMPLATE.fill(rule), where=TEMPLATE.fill("held_out"), **{
            m: "{:.3f} ± {:.3f}".format(*mean_std([run[rule][m] for run in found["held_out"]])) for m in METRICS}))
    gaps = {m: [run["evaluate"][m] - run["cleanlab"][m] for run in found["held_out"]] for m in ("f1", "auroc")}
    in_gap = {m: found["in_sample"]["evaluate"][m] - found["in_sample"]["cleanlab"][m] for m in ("f1", "auroc")}
    rates = [run["realised_rate"] for run in found["held_out"]]
    draws = len(found["held_out"])
    return TEMPLATE.fill(
        "page", rows="\n".join(rows), draws=draws, draws_last=draws - 1, kind=found["noise"]["kind"],
        rate=found["noise"]["rate"], dataset=found["dataset"], train=found["train_images"],
        test=found["test_images"], teacher=found["teacher_md5"][:8], seconds=found["wall_seconds"],
        in_rate=found["in_sample"]["realised_rate"], min_rate=min(rates), max_rate=max(rates),
        f1_gap="{:+.3f} ± {:.3f}".format(*mean_std(gaps["f1"])),
        auroc_gap="{:+.3f} ± {:.3f}".format(*mean_std(gaps["auroc"])),
        f1_each=", ".join(f"{g:+.3f}" for g in gaps["f1"]), in_f1_gap=in_gap["f1"],
        in_auroc_gap=in_gap["auroc"]) + "\n"


CHECK = on_run.Check(
    "held_out", __doc__, "docs/quality/held_out.md", "DIR/ingest, DIR/noise, DIR/mlnt/teacher.pt", DRAWS,
    "corruptions of the test labels", lambda artifacts, draws: measure(artifacts, draws=draws), render,
    lambda found, artifacts: found.get("teacher_md5") == md5(artifacts / "mlnt" / "teacher.pt"),
    lambda found: f"{len(found['held_out'])} draws")


def main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.quality.held_out``: 0, or 1 with one error line when the run cannot be read."""
    return on_run.run(CHECK, argv)


if __name__ == "__main__":
    raise SystemExit(main())
