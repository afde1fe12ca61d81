"""The quality study: MLNT against cross-entropy, early stopping and Confident Learning (cleanlab) across noise
kinds and rates, several seeds, with label-issue detection measured on the same runs.

Every run goes through the pipeline's own steps (``components.noise``, ``components.baseline``,
``components.mlnt``) with the schedule of ``params.yaml``; only the training-set size (sub-sampled to fit
2 CPU cores), the seed and the method's own switches change. Each (noise setting, seed) cell is one task;
tasks run in parallel worker processes and a finished cell is kept under ``--work`` (a rerun with the same
settings skips it). The raw records go to ``docs/quality/results.json``; ``benchmarks.quality_report`` renders
``docs/results.md`` and the plots from that file alone.

    python -m benchmarks.quality [--quick] [--workers 2] [--work artifacts/quality] [--output docs/results.md]
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import multiprocessing
import os
import platform
import shutil
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from components import baseline, ingest, mlnt, noise
from components.artifacts import read_arrays
from components.atomic import write_atomic, write_json
from components.evaluate import classification_metrics, detection_summary, label_issues
from components.training import load_model, normalise
from model.trainer import predict


@dataclass(frozen=True)
class Setting:
    kind: str
    rate: float

    @property
    def name(self) -> str:
        return "clean" if self.kind == "none" else f"{self.kind}-{round(100 * self.rate)}"


CLEAN = Setting("none", 0.0)
SETTINGS = (Setting("symmetric", 0.2), Setting("symmetric", 0.5), Setting("symmetric", 0.8),
            Setting("asymmetric", 0.4), Setting("instance", 0.4))


@dataclass(frozen=True)
class StudyConfig:
    train_size: int = 4000  # images drawn for each cell (training + validation); sub-sampled to fit 2 cores
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: tuple[Setting, ...] = SETTINGS
    folds: int = 3  # Confident Learning's out-of-sample probabilities
    modes_setting: Setting = Setting("symmetric", 0.5)  # where MLNT's three modes are compared
    modes_epochs: int = 2  # their (short) MLNT schedule: exact and first_order cost 16-27x a CE step
    modes_ramp_end: float = 0.5
    epochs: int = 0  # 0: params.yaml's baseline.epochs (the quick mode shortens everything)
    mlnt_epochs: int = 0  # 0: params.yaml's mlnt.epochs
    rounds: int = 2  # MLNT with iterative training
    batch_size: int = 0  # 0: params.yaml's

    def overrides(self, section: str) -> dict:
        """The values that replace params.yaml's in the ``baseline`` or ``mlnt`` section."""
        epochs = self.epochs if section == "baseline" else self.mlnt_epochs
        return {k: v for k, v in (("epochs", epochs), ("batch_size", self.batch_size)) if v}


QUICK = StudyConfig(train_size=600, seeds=(0,), settings=(Setting("symmetric", 0.5),), folds=2, modes_epochs=1,
                    epochs=3, mlnt_epochs=2, batch_size=32)


@dataclass(frozen=True)
class Task:
    setting: Setting
    seed: int
    study: StudyConfig
    params: dict  # params.yaml's sections used by the study
    ingested: str
    work: str

    @property
    def directory(self) -> Path:
        return Path(self.work) / f"{self.setting.name}-seed{self.seed}"

    @property
    def fingerprint(self) -> str:
        text = json.dumps([dataclasses.asdict(self.study), self.params, self.setting.name, self.seed], sort_keys=True,
                          default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- one cell --------------------------------------------------------------------------------------------------


def run_task(task: Task, threads: int) -> dict:
    """One (noise setting, seed) cell: every method, or the cached record of an identical earlier run."""
    torch.set_num_threads(threads)
    cached = task.directory / "result.json"
    if cached.is_file():
        record = json.loads(cached.read_text())
        if record.get("fingerprint") == task.fingerprint:
            return record
    shutil.rmtree(task.directory, ignore_errors=True)
    started = time.perf_counter()
    cell = _Cell(task)
    record = cell.run()
    record.update(setting=task.setting.name, kind=task.setting.kind, rate=task.setting.rate, seed=task.seed,
                  fingerprint=task.fingerprint, seconds=round(time.perf_counter() - started, 1))
    write_json(cached, record)
    return record


class _Cell:
    """The methods of one cell, each a sequence of pipeline steps in its own folder under the cell's."""

    def __init__(self, task: Task):
        self.task, self.dir, self.ingested = task, task.directory, Path(task.ingested)
        study = task.study
        common = {"seed": task.seed, "progress": False, "device": "cpu"}
        self.ce_config = baseline.BaselineConfig(**{**task.params["baseline"], **common,
                                                    **study.overrides("baseline")})
        self.mlnt_config = mlnt.MlntStepConfig(**{**task.params["mlnt"], **common, "rounds": study.rounds,
                                                  **study.overrides("mlnt")})
        self.test_images, self.test_labels = read_arrays(self.ingested / "test.npz", "ingest", "images", "labels")
        (self.train_images,) = read_arrays(self.ingested / "train.npz", "ingest", "images")

    def log(self, message: str) -> None:
        print(f"[quality] {self.task.setting.name} seed {self.task.seed}: {message}", file=sys.stderr, flush=True)

    def run(self) -> dict:
        noise_config = noise.NoiseConfig(**{**self.task.params["noise"], "kind": self.task.setting.kind,
                                            "rate": self.task.setting.rate, "seed": self.task.seed,
                                            "train_size": self.task.study.train_size})
        summary = noise.run(noise_config, ingest=self.ingested, out=self.dir / "noise")
        labels = dict(np.load(self.dir / "noise" / "labels.npz"))
        record: dict[str, Any] = {"realised_rate": summary["realised_rate_train"], "train": summary["train"],
                                  "val": summary["val"], "methods": {}, "label_issues": {}, "curves": {}, "pr": {}}
        ce = self._train_ce("ce", self.dir / "noise", record)
        self.log(f"CE: best epoch {ce['best_epoch']}, test {record['methods']['ce_early']['accuracy']:.4f}")
        if self.task.setting.kind == "none":
            return record
        self._confident_learning(labels, ce["best_epoch"], record)
        self._mlnt(labels, record)
        if self.task.setting == self.task.study.modes_setting:
            self._modes(record)
        return record

    # --- methods ---------------------------------------------------------------------------------------------

    def _train_ce(self, name: str, noise_dir: Path, record: dict, *, epochs: int = 0) -> dict:
        config = dataclasses.replace(self.ce_config, epochs=epochs) if epochs else self.ce_config
        started = time.perf_counter()
        metrics = baseline.run(config, ingest=self.ingested, noise=noise_dir, out=self.dir / name)
        seconds = time.perf_counter() - started
        if name in ("ce", "cleanlab"):
            history = json.loads((self.dir / name / "history.json").read_text())
            record["curves"][name] = [h["val_accuracy_student"] for h in history]
            for suffix, model in (("last", "final.pt"), ("early", "model.pt")):
                record["methods"][f"{name}_{suffix}"] = {**self._test(self.dir / name / model),
                                                         "seconds": round(seconds, 1)}
        return metrics

    def _confident_learning(self, labels: dict, epochs: int, record: dict) -> None:
        """cleanlab's find_label_issues on out-of-sample probabilities from k-fold CE models (each trained for CE's
        best epoch count, chosen on the validation set), then CE on the training set without the issues."""
        from cleanlab.filter import find_label_issues  # noqa: PLC0415 - a study-only dependency
        from cleanlab.rank import get_label_quality_scores  # noqa: PLC0415

        train_rows = np.flatnonzero(~labels["is_val"])
        probs = np.zeros((train_rows.size, int(labels["clean_label"].max()) + 1), dtype=np.float32)
        folds = np.random.default_rng(self.task.seed).permutation(train_rows.size) % self.task.study.folds
        started = time.perf_counter()
        for fold in range(self.task.study.folds):
            held_out = folds == fold
            fold_dir = self._write_labels(f"fold{fold}", labels, drop=train_rows[held_out])
            self._train_ce(f"fold{fold}", fold_dir, record, epochs=epochs)
            probs[held_out] = self._probs(self.dir / f"fold{fold}" / "model.pt",
                                          self.train_images[labels["index"][train_rows[held_out]]])
        given, noisy = labels["label"][train_rows], labels["is_noisy"][train_rows]
        flagged = find_label_issues(given, probs, n_jobs=1)  # cells are the parallel unit; no nested pool
        scores = 1.0 - get_label_quality_scores(given, probs)
        record["label_issues"]["cleanlab"] = detection_summary(scores, flagged, noisy)
        record["pr"]["cleanlab"] = _pr_curve(scores, noisy)
        pruned_dir = self._write_labels("pruned", labels, drop=train_rows[flagged])
        self._train_ce("cleanlab", pruned_dir, record)
        for key in ("cleanlab_last", "cleanlab_early"):
            record["methods"][key]["seconds"] = round(time.perf_counter() - started, 1)
        self.log(f"Confident Learning: {int(flagged.sum())} issues, test "
                 f"{record['methods']['cleanlab_early']['accuracy']:.4f}")

    def _mlnt(self, labels: dict, record: dict) -> None:
        started = time.perf_counter()
        mlnt.run(self.mlnt_config, ingest=self.ingested, noise=self.dir / "noise", baseline=self.dir / "ce",
                 out=self.dir / "mlnt")
        seconds = round(time.perf_counter() - started, 1)
        history = json.loads((self.dir / "mlnt" / "history.json").read_text())
        record["curves"]["mlnt_iterative"] = [h["val_accuracy_teacher"] for h in history]
        train_rows = np.flatnonzero(~labels["is_val"])
        images = self.train_images[labels["index"][train_rows]]
        given, noisy = labels["label"][train_rows], labels["is_noisy"][train_rows]
        for name, model in (("mlnt", "teacher_round1.pt"), ("mlnt_iterative", "teacher.pt")):
            path = self.dir / "mlnt" / model
            record["methods"][name] = {**self._test(path), "seconds": seconds}
            probs = self._probs(path, images)
            record["label_issues"][name] = label_issues(probs, given, noisy)[1]
            record["pr"][name] = _pr_curve(1.0 - probs[np.arange(given.size), given], noisy)
        self.log(f"MLNT: teacher test {record['methods']['mlnt']['accuracy']:.4f}, after "
                 f"{self.task.study.rounds} rounds {record['methods']['mlnt_iterative']['accuracy']:.4f}")

    def _modes(self, record: dict) -> None:
        """MLNT's three modes from the same CE warm start, on a short schedule (the exact mode's cost)."""
        study = self.task.study
        record["modes"] = {}
        for mode in ("head", "first_order", "exact"):
            config = dataclasses.replace(self.mlnt_config, mode=mode, rounds=1, epochs=study.modes_epochs,
                                         ramp_end=study.modes_ramp_end)
            started = time.perf_counter()
            mlnt.run(config, ingest=self.ingested, noise=self.dir / "noise", baseline=self.dir / "ce",
                     out=self.dir / f"mode-{mode}")
            record["modes"][mode] = {**self._test(self.dir / f"mode-{mode}" / "teacher.pt"),
                                     "seconds": round(time.perf_counter() - started, 1)}
            self.log(f"mode {mode}: teacher test {record['modes'][mode]['accuracy']:.4f}")

    # --- helpers ---------------------------------------------------------------------------------------------

    def _write_labels(self, name: str, labels: dict, *, drop: np.ndarray) -> Path:
        """A noise-step output without the training rows ``drop`` (positions in labels.npz)."""
        keep = np.ones(labels["label"].size, dtype=bool)
        keep[drop] = False
        out = self.dir / f"labels-{name}"
        write_atomic(out / "labels.npz", lambda fh: np.savez(fh, **{k: v[keep] for k, v in labels.items()}))
        return out

    def _probs(self, model: Path, images: np.ndarray) -> np.ndarray:
        net, saved = load_model(model)
        norm = saved["normalisation"]
        return predict(net, normalise(images, norm["mean"], norm["std"])).numpy()

    def _test(self, model: Path) -> dict:
        probs = self._probs(model, self.test_images)
        metrics = classification_metrics(probs, self.test_labels, probs.shape[1], bins=15)
        return {"accuracy": metrics["accuracy"], "ece": metrics["ece"]}


def _pr_curve(scores: np.ndarray, noisy: np.ndarray, points: int = 50) -> dict:
    """Precision and recall of the top-n of the ranking, at ``points`` evenly spaced n."""
    order = np.argsort(-scores, kind="mergesort")
    hits = np.cumsum(noisy[order])
    cut = np.unique(np.linspace(1, scores.size, points).round().astype(int))
    return {"precision": (hits[cut - 1] / cut).round(4).tolist(),
            "recall": (hits[cut - 1] / max(int(noisy.sum()), 1)).round(4).tolist()}


# --- the study ----------------------------------------------------------------------------------------------


def tasks(study: StudyConfig, params: dict, ingested: Path, work: Path) -> list[Task]:
    """Every cell, the most expensive first (the modes comparison, then the noisy cells, then clean labels)."""
    cells = [Task(s, seed, study, params, str(ingested), str(work)) for s in study.settings for seed in study.seeds]
    cells.sort(key=lambda t: t.setting != study.modes_setting)
    return cells + [Task(CLEAN, seed, study, params, str(ingested), str(work)) for seed in study.seeds]


def run_study(study: StudyConfig, *, work: Path, workers: int, data: Path, params_file: Path) -> dict:
    params = yaml.safe_load(Path(params_file).read_text())
    params = {k: params[k] for k in ("ingest", "noise", "baseline", "mlnt")}
    ingested = Path(work) / "ingest"
    if not (ingested / "train.npz").is_file():
        ingest.run(ingest.IngestConfig(**{**params["ingest"], "path": str(data)}), out=ingested)
    started = time.perf_counter()
    todo = tasks(study, params, ingested, Path(work))
    threads = max(1, (os.cpu_count() or 1) // workers)
    records = []
    # spawn, not fork: a forked child of a process whose torch thread pools are running can deadlock
    with ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        futures = [pool.submit(run_task, task, threads) for task in todo]
        for future in as_completed(futures):
            records.append(future.result())
    order = {(t.setting.name, t.seed): i for i, t in enumerate(todo)}
    records.sort(key=lambda r: order[(r["setting"], r["seed"])])
    return {"study": dataclasses.asdict(study), "params": params, "records": records,
            "wall_seconds": round(time.perf_counter() - started, 1), "workers": workers,
            "threads_per_worker": threads,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                        "python": platform.python_version()},
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def main(argv: list[str] | None = None) -> int:
    from benchmarks import quality_report  # noqa: PLC0415 - matplotlib loads only here

    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, one setting, two epochs: checks it runs")
    parser.add_argument("--workers", type=int, default=2, help="parallel cells (default 2)")
    parser.add_argument("--work", type=Path, default=Path("artifacts/quality"), help="the cells' folders")
    parser.add_argument("--data", type=Path, default=Path("data/fashion-mnist"), help="Fashion-MNIST files")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--output", type=Path, default=Path("docs/results.md"),
                        help="the report; results.json and the plots go to <its folder>/quality/")
    args = parser.parse_args(argv)
    results = run_study(QUICK if args.quick else StudyConfig(), work=args.work, workers=args.workers,
                        data=args.data, params_file=args.params)
    quality_report.write(results, args.output)
    print(f"quality: {len(results['records'])} cells in {results['wall_seconds']:.0f} s -> {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
