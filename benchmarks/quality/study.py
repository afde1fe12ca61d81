"""The quality study: MLNT against its control, cross-entropy, early stopping and Confident Learning.

MLNT is measured against its own control (the same EMA teacher without the meta loss), cross-entropy, early
stopping and Confident Learning (cleanlab) across noise kinds and rates, several seeds, with label-issue detection
measured on the same runs.

Every run goes through the pipeline's own steps (``components.noise``, ``components.baseline``,
``components.mlnt``) with the schedule of ``params.yaml``; only the training-set size (sub-sampled to fit
2 CPU cores), the seed and each row's own switches (``meta_weight``, ``warm_start``, ``mode``) change. Each
(noise setting, seed) cell is one task; tasks run in parallel worker processes and a finished cell is kept
under ``--work`` (a rerun with the same code, settings, ingested data and threads per cell skips it; the ingest
itself is redone when ``--data`` or params.yaml's ``ingest`` section differ from what it was made from). The raw
records go to ``docs/quality/results.json``; ``benchmarks.quality.report`` renders ``docs/results.md`` and the plots
from that file alone.

    python -m benchmarks.quality [--quick] [--setting symmetric-50] [--workers 2] [--work artifacts/quality]
                                 [--output docs/results.md]
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

from components import baseline, ingest, mlnt, noise
from components.common.artifacts import read_arrays
from components.common.atomic import write_atomic, write_json
from components.common.code import code_digest
from components.common.config import load_params
from components.common.model_file import load_model
from components.common.splits import normalise
from components.evaluate import classification_metrics, detection_summary, label_issues
from model.trainer import predict


@dataclass(frozen=True)
class Setting:
    kind: str
    rate: float

    @property
    def name(self) -> str:
        return "clean" if self.kind == "none" else f"{self.kind}-{round(100 * self.rate)}"


CLEAN = Setting("none", 0.0)
# the module whose code (every project file it can run, its report's included) a cached cell must have been made with
STUDY = "benchmarks.quality.study"
MADE_FROM = "made_from.json"  # in the study's ingest folder: the ingest config (data path included) it was made from
ECE_BINS = 15  # bins of every expected calibration error the study records (results.json: ece_bins)
SETTINGS = (Setting("symmetric", 0.2), Setting("symmetric", 0.5), Setting("symmetric", 0.8),
            Setting("asymmetric", 0.4), Setting("instance", 0.4))


@dataclass(frozen=True)
class WarmStart:
    """The warm-start option's schedule: MLNT from CE's early-stopped weights for a few epochs."""

    epochs: int = 8
    ramp_start: float = 0.0
    ramp_end: float = 3.0


@dataclass(frozen=True)
class Modes:
    """Where MLNT's three modes are compared, each against the control, from the initialisation on one
    schedule: smaller than the other cells, since ``exact`` costs 16-30x a CE step on the CPU, and long enough
    that the teacher has left its start (the report prints the share still on it)."""

    setting: Setting = Setting("symmetric", 0.5)
    train_size: int = 2000  # training rows, besides the validation rows
    batch_size: int = 32  # more steps per image: the teacher leaves its start within the budget
    epochs: int = 8
    ramp_start: float = 1.0
    ramp_end: float = 5.0
    seeds: tuple[int, ...] = (0, 1)
    names: tuple[str, ...] = ("head", "first_order", "exact")


@dataclass(frozen=True)
class StudyConfig:
    train_size: int = 4000  # images drawn for each cell (training + validation); sub-sampled to fit 2 cores
    headline: Setting = Setting("symmetric", 0.5)  # with more data, the meta_weight sweep and the clean ceiling
    headline_size: int = 12000  # the pipeline's noise.train_size
    seeds: tuple[int, ...] = (0, 1, 2)
    settings: tuple[Setting, ...] = SETTINGS
    folds: int = 3  # Confident Learning's out-of-sample probabilities
    sweep: tuple[float, ...] = (0.0, 0.25, 1.0, 4.0)  # meta_weight as multiples of params.yaml's (the paper's)
    warm: WarmStart = WarmStart()
    modes: Modes | None = Modes()
    epochs: int = 25  # the smaller cells': more passes over fewer images, to memorise; 0: params.yaml's
    headline_epochs: int = 0  # 0: params.yaml's baseline.epochs and mlnt.epochs, the pipeline's schedule
    batch_size: int = 0  # 0: params.yaml's

    def overrides(self, setting: Setting) -> dict:
        """The values that replace params.yaml's in the ``baseline`` and ``mlnt`` sections."""
        epochs = self.headline_epochs if setting in (self.headline, CLEAN) else self.epochs
        return {k: v for k, v in (("epochs", epochs), ("batch_size", self.batch_size)) if v}

    def size(self, setting: Setting) -> int:
        return self.headline_size if setting in (self.headline, CLEAN) else self.train_size


QUICK = StudyConfig(train_size=600, headline_size=600, seeds=(0,), settings=(Setting("symmetric", 0.5),), folds=2,
                    warm=WarmStart(epochs=1, ramp_end=0.5), epochs=3, headline_epochs=3, batch_size=32,
                    modes=Modes(train_size=300, batch_size=32, epochs=2, ramp_start=0.5, ramp_end=1.0, seeds=(0,)))


@dataclass(frozen=True)
class Task:
    setting: Setting
    seed: int
    study: StudyConfig
    params: dict  # params.yaml's sections used by the study
    ingested: str
    work: str
    part: str = "main"  # "modes": the comparison of MLNT's modes; "seeds": a cell of benchmarks.quality.seeds
    threads: int = 1  # torch's intra-op threads the cell trains on: CPU training's floating-point sums depend on it
    code: str = ""  # the digest of the code a cell runs (``code_digest(STUDY)``, taken once by ``tasks``)

    @property
    def directory(self) -> Path:
        suffix = "" if self.part == "main" else f"-{self.part}"
        return Path(self.work) / f"{self.setting.name}-seed{self.seed}{suffix}"

    @property
    def fingerprint(self) -> str:
        """What the cell's record was made from: the study's settings, the params, the cell, the ingested data (the
        sha256 of the ingest's ``manifest.json``, which names the data's path and hashes its files), the thread
        count (another ``--workers`` trains on other threads, and so to other figures: its cells are not reused) and
        the code (an edit to the method, a step or the study trains the cell again)."""
        manifest = Path(self.ingested) / "manifest.json"
        data = hashlib.sha256(manifest.read_bytes()).hexdigest() if manifest.is_file() else None
        text = json.dumps([dataclasses.asdict(self.study), self.params, self.setting.name, self.seed, self.part, data,
                           self.threads, self.code],
                          sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


# --- one cell --------------------------------------------------------------------------------------------------


def cached_record(task: Task) -> dict | None:
    """The record an identical earlier run of ``task`` left (same fingerprint), or None."""
    cached = task.directory / "result.json"
    if cached.is_file():
        record = json.loads(cached.read_text())
        if record.get("fingerprint") == task.fingerprint:
            return record
    return None


def run_task(task: Task) -> dict:
    """One (noise setting, seed) cell: every method, or the cached record of an identical earlier run."""
    torch.set_num_threads(task.threads)
    if (record := cached_record(task)) is not None:
        return record
    shutil.rmtree(task.directory, ignore_errors=True)
    started = time.perf_counter()
    cell = _Cell(task)
    record = cell.run()
    record.update(setting=task.setting.name, kind=task.setting.kind, rate=task.setting.rate, seed=task.seed,
                  part=task.part, threads=task.threads, fingerprint=task.fingerprint,
                  seconds=round(time.perf_counter() - started, 1))
    write_json(task.directory / "result.json", record)
    return record


def training_configs(task: Task) -> tuple[baseline.BaselineConfig, mlnt.MlntStepConfig]:
    """The ``baseline`` and ``mlnt`` configs of a cell: params.yaml's, with the cell's seed and schedule."""
    common = {"seed": task.seed, "progress": False, "device": "cpu", **task.study.overrides(task.setting)}
    return (baseline.BaselineConfig(**{**task.params["baseline"], **common}),
            mlnt.MlntStepConfig(**{**task.params["mlnt"], **common, "rounds": 1}))


class _Cell:
    """The methods of one cell, each a sequence of pipeline steps in its own folder under the cell's."""

    def __init__(self, task: Task):
        self.task, self.dir, self.ingested = task, task.directory, Path(task.ingested)
        self.ce_config, self.mlnt_config = training_configs(task)
        self.test_images, self.test_labels = read_arrays(self.ingested / "test.npz", "ingest", "images", "labels")
        (self.train_images,) = read_arrays(self.ingested / "train.npz", "ingest", "images")

    def log(self, message: str) -> None:
        print(f"[quality] {self.task.setting.name} seed {self.task.seed}: {message}", file=sys.stderr, flush=True)

    def run(self) -> dict:
        noise_config = noise.NoiseConfig(**{**self.task.params["noise"], "kind": self.task.setting.kind,
                                            "rate": self.task.setting.rate, "seed": self.task.seed,
                                            "train_size": self.task.study.size(self.task.setting)})
        summary = noise.run(noise_config, ingest=self.ingested, out=self.dir / "noise")
        labels = dict(np.load(self.dir / "noise" / "labels.npz"))
        record: dict[str, Any] = {"realised_rate": summary["realised_rate_train"], "train": summary["train"],
                                  "val": summary["val"], "methods": {}, "label_issues": {}, "curves": {}, "pr": {}}
        if self.task.part == "modes":
            self._modes(self.task.study.modes, labels, record)
            return record
        ce = self._train_ce("ce", self.dir / "noise", record)
        self.log(f"CE: best epoch {ce['best_epoch']}, test {record['methods']['ce_early']['accuracy']:.4f}")
        if self.task.setting.kind == "none":
            return record
        if self.task.part == "seeds":  # benchmarks.quality.seeds: CE, the control and MLNT only
            self._mlnt(labels, record, ablation_only=True)
            return record
        self._confident_learning(labels, ce["best_epoch"], record)
        self._mlnt(labels, record)
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
        best epoch count, chosen on the validation set, and taken at its own best checkpoint on validation within
        those epochs), then CE on the training set without the issues."""
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

    def _mlnt(self, labels: dict, record: dict, *, ablation_only: bool = False) -> None:
        """The ablation: MLNT and its control (the same EMA teacher, ``meta_weight`` 0) on the published schedule
        from the initialisation; at the headline setting, unless ``ablation_only``, also both from CE's weights (the
        warm-start option) and the ``meta_weight`` sweep, whose member is chosen on the validation set."""
        study, weight = self.task.study, self.mlnt_config.meta_weight
        warm = {"warm_start": True, "epochs": study.warm.epochs, "ramp_start": study.warm.ramp_start,
                "ramp_end": study.warm.ramp_end}
        runs: dict[str, dict] = {"ema_control": {"meta_weight": 0.0}, "mlnt": {}}
        sweep = {}
        if self.task.setting == study.headline and not ablation_only:
            runs.update({"ema_control_warm": {"meta_weight": 0.0, **warm}, "mlnt_warm": warm})
            sweep = {_sweep_name(m): m * weight for m in study.sweep}
            runs.update({name: {"meta_weight": w} for name, w in sweep.items() if name not in runs})
        for name, changes in runs.items():
            self._mlnt_run(name, dataclasses.replace(self.mlnt_config, **changes), record)
        if sweep:  # the choice a user would make: the best validation accuracy (a tie: the first listed), never test
            chosen = max(sweep, key=lambda n: record["methods"][n]["val_accuracy"])
            record["methods"]["mlnt_selected"] = {**record["methods"][chosen], "chosen": chosen,
                                                  "meta_weight": sweep[chosen]}
        self._detect(labels, record, ("mlnt", "ema_control"))
        self.log("MLNT: " + ", ".join(f"{n} {record['methods'][n]['accuracy']:.4f}" for n in runs))

    def _mlnt_run(self, name: str, config: mlnt.MlntStepConfig, record: dict, *, noise_dir: Path | None = None):
        started = time.perf_counter()
        out = self.dir / name
        metrics = mlnt.run(config, ingest=self.ingested, noise=noise_dir or self.dir / "noise",
                           baseline=self.dir / "ce", out=out)
        history = json.loads((out / "history.json").read_text())
        record["curves"][name] = {key: [h.get(f"val_accuracy_{key}") for h in history]
                                  for key in ("student", "teacher")}
        record["methods"][name] = {
            **self._test(out / "teacher.pt"), "seconds": round(time.perf_counter() - started, 1),
            "meta_weight": config.meta_weight, "warm_start": config.warm_start, "mode": metrics["mode"],
            "student_last_accuracy": self._test(out / "student.pt")["accuracy"],
            **{k: metrics[k] for k in ("released", "val_accuracy", "best_step", "steps",
                                       "teacher_start_share_released", "teacher_start_share_final")}}

    def _detect(self, labels: dict, record: dict, names: tuple[str, ...]) -> None:
        """The label-issue list of each released model (as the evaluate step writes it)."""
        train_rows = np.flatnonzero(~labels["is_val"])
        images = self.train_images[labels["index"][train_rows]]
        given, noisy = labels["label"][train_rows], labels["is_noisy"][train_rows]
        for name in names:
            probs = self._probs(self.dir / name / "teacher.pt", images)
            record["label_issues"][name] = label_issues(probs, given, noisy)[1]
            record["pr"][name] = _pr_curve(1.0 - probs[np.arange(given.size), given], noisy)

    def _modes(self, modes: Modes, labels: dict, record: dict) -> None:
        """MLNT's three modes and their control on one schedule from the initialisation, on fewer training rows
        (the same clean validation rows); CE on those rows, on its usual schedule, gives the neighbour features."""
        keep = np.flatnonzero(labels["is_val"])
        train = np.flatnonzero(~labels["is_val"])[:modes.train_size]
        noise_dir = self._write_labels("modes", labels, drop=np.setdiff1d(np.arange(labels["label"].size),
                                                                          np.concatenate([keep, train])))
        self._train_ce("ce", noise_dir, record)
        config = dataclasses.replace(self.mlnt_config, warm_start=False, epochs=modes.epochs,
                                     batch_size=modes.batch_size, ramp_start=modes.ramp_start,
                                     ramp_end=modes.ramp_end)
        record["modes"] = {"train": int(train.size), "val": int(keep.size)}
        for name, changes in [("control", {"meta_weight": 0.0}), *((m, {"mode": m}) for m in modes.names)]:
            methods: dict = {}
            self._mlnt_run(f"mode-{name}", dataclasses.replace(config, **changes), {"methods": methods, "curves": {}},
                           noise_dir=noise_dir)
            record["modes"][name] = methods[f"mode-{name}"]
            self.log(f"mode {name}: test {record['modes'][name]['accuracy']:.4f}")

    # --- helpers ---------------------------------------------------------------------------------------------

    def _write_labels(self, name: str, labels: dict, *, drop: np.ndarray) -> Path:
        """A noise-step output without the training rows ``drop`` (positions in labels.npz)."""
        keep = np.ones(labels["label"].size, dtype=bool)
        keep[drop] = False
        out = self.dir / f"labels-{name}"
        rows = {k: v[keep] if v.ndim else v for k, v in labels.items()}  # the ingest's digest (0-d) stays as it is
        write_atomic(out / "labels.npz", lambda fh: np.savez(fh, **rows))
        return out

    def _probs(self, model: Path, images: np.ndarray) -> np.ndarray:
        net, saved = load_model(model)
        norm = saved["normalisation"]
        return predict(net, normalise(images, norm["mean"], norm["std"])).numpy()

    def _test(self, model: Path) -> dict:
        probs = self._probs(model, self.test_images)
        metrics = classification_metrics(probs, self.test_labels, probs.shape[1], bins=ECE_BINS)
        return {"accuracy": metrics["accuracy"], "ece": metrics["ece"]}


def _sweep_name(multiple: float) -> str:
    return {0.0: "ema_control", 1.0: "mlnt"}.get(multiple, f"mlnt_x{multiple:g}")


def _pr_curve(scores: np.ndarray, noisy: np.ndarray, points: int = 50) -> dict:
    """Precision and recall of the top-n of the ranking, at ``points`` evenly spaced n."""
    order = np.argsort(-scores, kind="mergesort")
    hits = np.cumsum(noisy[order])
    cut = np.unique(np.linspace(1, scores.size, points).round().astype(int))
    return {"precision": (hits[cut - 1] / cut).round(4).tolist(),
            "recall": (hits[cut - 1] / max(int(noisy.sum()), 1)).round(4).tolist()}


# --- the study ----------------------------------------------------------------------------------------------


def _diagnose(task: Task) -> dict:
    """The size of the meta loss's gradient next to CE's in the cell's MLNT run (``meta_diagnosis``)."""
    from benchmarks.quality.meta_diagnosis import diagnose  # noqa: PLC0415 - only the study's last phase

    _, config = training_configs(task)
    cell = task.directory
    return {"seed": task.seed, **diagnose(cell / "mlnt", ingest=Path(task.ingested), noise=cell / "noise",
                                          features=cell / "ce" / "model.pt", config=config,
                                          batches=2 if task.study == QUICK else 6)}


def tasks(study: StudyConfig, params: dict, ingested: Path, work: Path, threads: int = 1) -> list[Task]:
    """Every cell, the most expensive first (the headline and modes, then the other noisy cells, then clean), each
    to train on ``threads`` threads with the code as it is now."""
    where = {"ingested": str(ingested), "work": str(work), "threads": threads, "code": code_digest(STUDY)}
    cells = [Task(s, seed, study, params, **where) for s in study.settings for seed in study.seeds]
    cells.sort(key=lambda t: t.setting != study.headline)
    if study.modes is not None:
        cells[len(study.seeds):len(study.seeds)] = [Task(study.modes.setting, seed, study, params, part="modes",
                                                         **where) for seed in study.modes.seeds]
    return cells + [Task(CLEAN, seed, study, params, **where) for seed in study.seeds]


def ingest_once(out: Path, config: dict) -> Path:
    """``out``, holding the ingest of ``config`` (params.yaml's ``ingest`` section with the data's ``path``): the one
    already there when it was made from the same config (``MADE_FROM``), else ingested again."""
    made_from, wanted = Path(out) / MADE_FROM, json.loads(json.dumps(config))
    if (Path(out) / "train.npz").is_file() and made_from.is_file() and json.loads(made_from.read_text()) == wanted:
        return Path(out)
    made_from.unlink(missing_ok=True)  # an ingest that fails part-way is not taken for the config's
    ingest.run(ingest.IngestConfig(**config), out=Path(out))
    write_json(made_from, wanted)
    return Path(out)


def study_params(params_file: Path) -> dict:
    """The sections of ``params_file`` the study's cells use."""
    params = load_params(params_file)
    return {k: params[k] for k in ("ingest", "noise", "baseline", "mlnt")}


def threads_per_cell(workers: int) -> int:
    """The torch threads each of ``workers`` parallel cells trains on: the machine's cores shared out."""
    return max(1, (os.cpu_count() or 1) // workers)


def spawned_pool(workers: int) -> ProcessPoolExecutor:
    """A pool of ``workers`` processes for cells, started by spawn, not fork: a forked child of a process whose torch
    thread pools are running can deadlock."""
    return ProcessPoolExecutor(max_workers=workers, mp_context=multiprocessing.get_context("spawn"))


def run_study(study: StudyConfig, *, work: Path, workers: int, data: Path, params_file: Path,
              only: frozenset[str] | None = None) -> dict:
    """Every cell of ``study``; a cell an identical earlier run finished (the same code, settings, data and
    threads) is taken from its cache: a resumed study. With ``only``, the cells of the settings it names."""
    params = study_params(params_file)
    ingested = ingest_once(Path(work) / "ingest", {**params["ingest"], "path": str(data)})
    started = time.perf_counter()
    threads = threads_per_cell(workers)
    todo = [t for t in tasks(study, params, ingested, Path(work), threads) if only is None or t.setting.name in only]
    resumed = sum(cached_record(task) is not None for task in todo)
    records = []
    with spawned_pool(workers) as pool:
        futures = [pool.submit(run_task, task) for task in todo]
        for future in as_completed(futures):
            records.append(future.result())
    order = {(t.setting.name, t.seed, t.part): i for i, t in enumerate(todo)}
    records.sort(key=lambda r: order[(r["setting"], r["seed"], r["part"])])
    diagnosis = [_diagnose(t) for t in todo if t.setting == study.headline and t.part == "main"]
    return {"study": dataclasses.asdict(study), "params": params, "ece_bins": ECE_BINS, "records": records,
            "diagnosis": diagnosis, "wall_seconds": round(time.perf_counter() - started, 1), "workers": workers,
            "threads_per_worker": threads, "resumed_cells": resumed,
            "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                        "python": platform.python_version()},
            "finished": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}


def check_rerun(previous: Path, study: dict, params: dict, threads: int) -> None:
    """SystemExit unless cells of ``study`` with ``params``, trained on ``threads`` threads each, may replace some of
    the records of the study saved at ``previous`` (none saved: any may); checked before a rerun trains anything."""
    if not previous.is_file():
        return
    results = json.loads(previous.read_text())
    same = json.loads(json.dumps([study, params, ECE_BINS], default=str))  # tuples: lists
    if [results["study"], results["params"], results.get("ece_bins")] != same:
        raise SystemExit(f"quality: {previous} was made with other study settings or params; rerun the whole "
                         "study (make quality) instead of --setting")
    if results.get("threads_per_worker") != threads:  # its header states one thread count
        raise SystemExit(f"quality: {previous}'s cells trained on {results.get('threads_per_worker')} thread(s) "
                         f"each, this rerun's would train on {threads}; rerun with the --workers that gives "
                         "the same, or the whole study (make quality)")


def merge(previous: Path, rerun: dict, only: frozenset[str]) -> dict:
    """``rerun``'s records in place of those settings' records in the study saved at ``previous``."""
    if not previous.is_file():
        return rerun
    check_rerun(previous, rerun["study"], rerun["params"], rerun["threads_per_worker"])
    results = json.loads(previous.read_text())
    kept = [r for r in results["records"] if r["setting"] not in only]
    results["records"] = kept + rerun["records"]
    if rerun["diagnosis"]:
        results["diagnosis"] = rerun["diagnosis"]
    results.setdefault("reruns", []).append({"settings": sorted(only), "wall_seconds": rerun["wall_seconds"],
                                             "finished": rerun["finished"]})
    return results


def main(argv: list[str] | None = None) -> int:
    from benchmarks.quality import report as quality_report  # noqa: PLC0415 - matplotlib loads only here

    parser = argparse.ArgumentParser(prog="python -m benchmarks.quality", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, one setting, three epochs: checks it runs")
    parser.add_argument("--setting", action="append", metavar="NAME",
                        help="run this setting's cells again (repeatable; e.g. symmetric-80, clean) and replace "
                             "them in the existing results.json; a cell whose code, settings and data are those "
                             "it was cached with is not trained again (it would give the same figures), so an "
                             "interrupted rerun resumes")
    parser.add_argument("--workers", type=int, default=2, help="parallel cells (default 2)")
    parser.add_argument("--work", type=Path, help="the cells' folders (default artifacts/quality; with --quick, "
                                                   "artifacts/quality-quick)")
    parser.add_argument("--data", type=Path, default=Path("data/fashion-mnist"), help="Fashion-MNIST files")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--output", type=Path,
                        help="the report; results.json and the plots go to <its folder>/quality/ (default "
                             "docs/results.md; with --quick, artifacts/quality-quick/results.md, so a check never "
                             "replaces the committed study)")
    args = parser.parse_args(argv)
    study = QUICK if args.quick else StudyConfig()
    work = args.work or Path("artifacts/quality-quick" if args.quick else "artifacts/quality")
    output = args.output or (work / "results.md" if args.quick else Path("docs/results.md"))
    only = frozenset(args.setting) if args.setting else None
    known = {s.name for s in (*study.settings, CLEAN)}
    if only and not only <= known:
        parser.error(f"--setting: unknown {', '.join(sorted(only - known))}. Valid: {', '.join(sorted(known))}")
    if only:  # before any cell trains, not after
        check_rerun(quality_report.results_path(output), dataclasses.asdict(study), study_params(args.params),
                    threads_per_cell(args.workers))
    results = run_study(study, work=work, workers=args.workers, data=args.data, params_file=args.params, only=only)
    if only:
        results = merge(quality_report.results_path(output), results, only)
    quality_report.write(results, output)
    print(f"quality: {len(results['records'])} cells in {results['wall_seconds']:.0f} s -> {output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
