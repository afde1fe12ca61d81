"""evaluate: the baseline, the MLNT student and the MLNT teacher on the clean test set, and the label-issue list.

Writes ``artifacts/evaluate/metrics.json`` (a public contract: ``{"baseline": {...}, "baseline_best_epoch": {...},
"student": {...}, "teacher": {...}, "label_issues": {...}, "validation": {...}, "test": {...}}``; each model with
``accuracy``, ``per_class_accuracy`` (null for a class with no test image), ``macro_f1`` (over the classes in the
test labels or the predictions) and ``ece`` on the clean test set (``baseline`` is CE's last epoch,
``baseline_best_epoch`` the epoch CE's validation picked, which export may release; the baseline also keeps
``best_epoch_accuracy``; ``model_sha256``: the sha256 of the model file scored, which export checks the file it
releases against); ``class_names`` in the order of ``per_class_accuracy``; ``ece_bins``, the bins of every ECE
here; ``validation``: where the set every selection used came from and whether its labels are clean;
``test``: where the test split came from), ``confusion_<model>.csv`` (``actual,predicted`` class names for ``dvc
plots``), ``calibration_<model>.csv`` (the reliability diagram of each model on the test set),
``roc_label_issues.csv`` (the label-issue score's ROC curve against the known noise) and ``label_issues.csv``:
every training sample ranked by how likely its given label is wrong (score = 1 - the teacher's probability of the
given label), ``flagged`` for the first ``estimated_issues`` rows, with the suggested label (the teacher's likeliest
class other than the given one), both also by class name, and the image's ``key`` where the dataset names its
images (Clothing1M's key, an image folder's file). The teacher trained on these images: the scores are in-sample.
Each model file must record the training inputs of ``ingest`` and ``noise`` (``model_file.TRAINED_ON``): models
trained before the noise step was re-run are refused, never scored against labels they did not train on, and so
are probabilities that are not finite (a diverged network), naming the model file.

``label_issues`` in metrics.json always holds the estimated number and rate of issues and their count per given
class (``per_class``). The detection figures (precision, recall, F1, AUROC, the true noise rate) count only the
rows whose clean label is known, and are present only where those rows hold both noisy and clean labels
(``ground_truth`` true): a user's own labels under noise kind ``none`` have no truth to measure against.
"""

from __future__ import annotations

import csv
import io
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from components.common.artifacts import read_json, read_manifest, sha256_file
from components.common.atomic import atomic_set, prepare_output, write_json, write_text
from components.common.config import CONFIG_FILE, as_record, cli
from components.common.errors import DataError
from components.common.model_file import check_fits, check_trained_on, load_model
from components.common.splits import load_split, read_noise_labels, test_digest, test_set, training_digest
from components.common.steps import FOLDERS
from components.common.telemetry import reports
from components.formats import OWN_TEST_SPLIT
from components.formats.webdataset import read_index
from model.trainer import predict

BASELINE_OUT = FOLDERS["baseline"]
INGEST_OUT = FOLDERS["ingest"]
MLNT_OUT = FOLDERS["mlnt"]
NOISE_OUT = FOLDERS["noise"]

OUT = FOLDERS["evaluate"]
STEP_OF = {"baseline": "baseline", "baseline_best_epoch": "baseline", "student": "mlnt", "teacher": "mlnt"}  # wrote it


@dataclass(frozen=True)
class EvaluateConfig:
    """The ``evaluate`` section of params.yaml: ``ece_bins`` (the bins of every expected calibration error the step
    reports, export's too), ``batch_size`` (images per prediction batch) and ``workers`` (the DataLoader processes
    decoding a sharded dataset)."""

    ece_bins: int = 15  # bins of the expected calibration error
    batch_size: int = 512
    workers: int = 2  # DataLoader processes decoding a sharded dataset

    def __post_init__(self) -> None:
        if self.workers < 0:
            raise ValueError(f"workers: expected >= 0, found {self.workers}")
        if self.ece_bins < 1 or self.batch_size < 1:
            raise ValueError(f"ece_bins, batch_size: expected >= 1, found {self.ece_bins}, {self.batch_size}")


def classification_metrics(probs: np.ndarray, labels: np.ndarray, num_classes: int, bins: int) -> dict:
    """Accuracy, per-class accuracy (the share of each of ``num_classes`` classes' images predicted right), macro F1
    and the expected calibration error over ``bins`` bins of the argmax of ``probs`` ``[N, K]`` against ``labels``.
    A class absent from ``labels`` has no per-class accuracy: None (JSON null), not 0, which would read as every
    image of it missed. Macro F1 is the mean over the classes in ``labels`` or among the predictions, as sklearn's
    ``f1_score(average="macro")``: a class with no correct prediction counts with F1 0; one in neither has no F1
    and is left out of the mean. With every class in ``labels`` (Fashion-MNIST's test set) it is the mean over all."""
    predicted = probs.argmax(1)
    correct = predicted == labels
    per_class, f1 = [], []
    for c in range(num_classes):
        actual, guessed = labels == c, predicted == c
        tp = float((actual & guessed).sum())
        per_class.append(tp / actual.sum() if actual.any() else None)
        if actual.any() or guessed.any():
            precision, recall = tp / max(guessed.sum(), 1), tp / max(actual.sum(), 1)
            f1.append(0.0 if tp == 0 else 2 * precision * recall / (precision + recall))
    return {"accuracy": float(correct.mean()), "per_class_accuracy": per_class, "macro_f1": float(np.mean(f1)),
            "ece": expected_calibration_error(probs, labels, bins)}


def check_finite(probs: np.ndarray, source: Path | str, scored: str) -> None:
    """A ``DataError`` naming ``source`` (the model file) and what it ``scored`` where a row of ``probs`` holds NaN
    or inf (a diverged network): argmax would read a NaN row as class 0, counted right or wrong as if predicted, and
    the ECE would be NaN, which strict JSON refuses."""
    bad = int((~np.isfinite(probs)).any(axis=1).sum())
    if bad:
        raise DataError(f"{source}: expected finite probabilities from {scored}, found NaN or inf in {bad} of its "
                        f"{len(probs)} rows (a diverged network?): train it again")


def expected_calibration_error(probs: np.ndarray, labels: np.ndarray, bins: int) -> float:
    """Sum over equal-width confidence bins of |accuracy - mean confidence|, weighted by the bin's share."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(correct[inside].mean() - confidence[inside].mean())
    return float(total)


def reliability_rows(probs: np.ndarray, labels: np.ndarray, bins: int) -> list[dict]:
    """The reliability diagram: per non-empty equal-width confidence bin, the mean confidence, the accuracy and
    the count (the terms of ``expected_calibration_error``)."""
    confidence, correct = probs.max(1), probs.argmax(1) == labels
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    return [{"confidence": round(float(confidence[which == b].mean()), 6),
             "accuracy": round(float(correct[which == b].mean()), 6), "count": int((which == b).sum())}
            for b in range(bins) if (which == b).any()]


def roc_rows(scores: np.ndarray, positives: np.ndarray) -> list[dict]:
    """The ROC curve of ``scores`` against ``positives``: one point per distinct score, from (0, 0) to (1, 1);
    its area is ``auroc``."""
    order = np.argsort(-scores, kind="mergesort")
    hits, ranked = positives[order], scores[order]
    last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1] if ranked.size else np.zeros(0, dtype=int)
    tp, fp = np.cumsum(hits)[last], np.cumsum(~hits)[last]
    tpr, fpr = tp / max(int(positives.sum()), 1), fp / max(int((~positives).sum()), 1)
    return [{"fpr": 0.0, "tpr": 0.0}, *({"fpr": round(float(f), 6), "tpr": round(float(t), 6)}
                                          for f, t in zip(fpr, tpr, strict=True))]


def auroc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve (ties counted half): the chance a positive outranks a negative."""
    pos, neg = scores[positives], scores[~positives]
    if not pos.size or not neg.size:
        return float("nan")
    ranks = _average_ranks(np.concatenate([pos, neg]))
    return float((ranks[:pos.size].sum() - pos.size * (pos.size + 1) / 2) / (pos.size * neg.size))


def _average_ranks(values: np.ndarray) -> np.ndarray:
    order = values.argsort(kind="mergesort")
    ranks = np.empty(values.size)
    sorted_values = values[order]
    start = 0
    while start < values.size:
        end = start
        while end + 1 < values.size and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start:end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def detection_summary(scores: np.ndarray, flagged: np.ndarray, is_noisy: np.ndarray) -> dict:
    """How a flagged set and a ranking score find the injected noise: precision, recall and F1 of the flagged
    set, AUROC of the score, and the estimated (flagged share) beside the true noise rate."""
    estimated, tp = int(flagged.sum()), int((flagged & is_noisy).sum())
    precision, recall = tp / max(estimated, 1), tp / max(int(is_noisy.sum()), 1)
    return {"estimated_issues": estimated, "estimated_noise_rate": estimated / max(flagged.size, 1),
            "true_noise_rate": float(is_noisy.mean()) if is_noisy.size else 0.0, "precision": precision,
            "recall": recall, "f1": 0.0 if tp == 0 else 2 * precision * recall / (precision + recall),
            "auroc": auroc(scores, is_noisy)}


def flag_issues(probs: np.ndarray, given: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """How suspect each sample's label is, -p(given label) (higher: more suspect), the ranking (most suspect first,
    ties in training order), and the flagged set: the k most suspect, k the number of samples whose prediction
    disagrees with their label (the estimate of how many labels are wrong). The label-issue score users read is
    1 - p (``label_issues``); ranking and AUROC use -p itself, since 1 - p saturates at 1.0 where p is below
    float32's resolution of 1 (about 6e-8) and would tie labels the teacher tells apart."""
    suspicion = -probs[np.arange(given.size), given]
    estimated = int((probs.argmax(1) != given).sum())
    order = np.argsort(-suspicion, kind="mergesort")
    flagged = np.zeros(given.size, dtype=bool)
    flagged[order[:estimated]] = True
    return suspicion, order, flagged


def suggest(probs: np.ndarray, given: np.ndarray) -> np.ndarray:
    """The likeliest class other than the given label, per sample: what to relabel to if the label is wrong. Never
    the given label, also where the model's own prediction is it (a flagged sample whose label has the largest
    probability, though a small one)."""
    others = probs.copy()
    others[np.arange(given.size), given] = -np.inf
    return others.argmax(1)


def label_issues(probs: np.ndarray, given: np.ndarray, is_noisy: np.ndarray, *,
                 flags: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None) -> tuple[list[dict], dict]:
    """The ranking by score, best first (``label_issues.csv``'s rows; the flagged set is its first
    ``estimated_issues``, each marked ``flagged``), and how the flagged set finds the injected noise; ``flags`` is
    ``flag_issues``'s answer for ``probs`` and ``given`` where the caller has it."""
    suspicion, order, flagged = flag_issues(probs, given) if flags is None else flags
    suggested = suggest(probs, given)
    summary = detection_summary(suspicion, flagged, is_noisy)
    score = 1.0 + suspicion  # 1 - p(given label)
    rows = [{"rank": r + 1, "index": int(i), "flagged": bool(flagged[i]), "given_label": int(given[i]),
             "suggested_label": int(suggested[i]), "score": round(float(score[i]), 6),
             "injected_noise": bool(is_noisy[i])} for r, i in enumerate(order)]
    return rows, summary


def per_class_issues(given: np.ndarray, flagged: np.ndarray, names: list[str]) -> dict[str, dict]:
    """Per given class: its number of labels, how many of them are flagged, and that share."""
    table = {}
    for c, name in enumerate(names):
        rows = given == c
        count = int(flagged[rows].sum())
        table[name] = {"labels": int(rows.sum()), "flagged": count, "share": count / max(int(rows.sum()), 1)}
    return table


@reports("evaluate", lambda m: {"accuracy": {"test": {n: m[n]["accuracy"] for n in ("baseline", "student", "teacher")}},
                                 "estimated_noise_rate": m["label_issues"]["estimated_noise_rate"]})
def run(config: EvaluateConfig, *, ingest: Path = INGEST_OUT, noise: Path = NOISE_OUT,
        baseline: Path = BASELINE_OUT, mlnt: Path = MLNT_OUT, out: Path = OUT) -> dict:
    """Reads the ingested test set, the noise step's labels and the four model files; writes the metrics, the
    confusion and calibration CSVs, the label-issue list and its ROC curve to ``out``; returns the metrics. Every
    input is read and checked, and everything computed, before the first file is written; the files are written as
    one ``atomic_set``, so a failure leaves the previous outputs as they were."""
    ingest, noise, out = Path(ingest), Path(noise), prepare_output(out, step="evaluate")
    models = {"baseline": Path(baseline) / "final.pt", "baseline_best_epoch": Path(baseline) / "model.pt",
              "student": Path(mlnt) / "student.pt", "teacher": Path(mlnt) / "teacher.pt"}
    nets = {name: load_model(path) for name, path in models.items()}
    digests = {name: sha256_file(path) for name, path in models.items()}  # export releases only a file scored here
    _, saved = nets["teacher"]
    manifest = read_manifest(ingest)
    for name, path in models.items():
        check_fits(path, nets[name][1], manifest, ingest / "manifest.json")
    names = manifest["class_names"]
    validation = validation_record(noise)  # the noise step's summary and labels, checked before any work
    labels = _read_labels(ingest, noise)
    trained_on, inputs = training_digest(ingest, noise), f"the inputs in {ingest} and {noise}"
    for name, path in models.items():  # after the labels' own checks, which name what is wrong with a damaged file
        check_trained_on(path, nets[name][1], trained_on, inputs=inputs, step=STEP_OF[name])
    test = test_set(ingest, saved["normalisation"], workers=config.workers)
    test_labels = test.labels.numpy()
    k = saved["num_classes"]
    metrics, csvs = {}, {}
    for name, (net, _) in nets.items():
        probs = predict(net, test, batch_size=config.batch_size, desc=f"evaluate {name} on the test set").numpy()
        check_finite(probs, models[name], f"the {name} model on the test set")
        metrics[name] = classification_metrics(probs, test_labels, k, config.ece_bins)
        metrics[name]["model_sha256"] = digests[name]
        csvs[f"confusion_{name}.csv"] = _confusion_csv(test_labels, probs.argmax(1), names)
        csvs[f"calibration_{name}.csv"] = _csv(reliability_rows(probs, test_labels, config.ece_bins))
    metrics["baseline"]["best_epoch_accuracy"] = metrics["baseline_best_epoch"]["accuracy"]
    rows, summary, roc = _label_issue_list(nets["teacher"][0], ingest, noise, config, names, labels=labels,
                                           teacher_file=models["teacher"])
    csvs["roc_label_issues.csv"] = _csv(roc, fields=["fpr", "tpr"])
    for row in rows:
        row["given_class"], row["suggested_class"] = names[row["given_label"]], names[row["suggested_label"]]
    metrics["label_issues"] = summary
    metrics["class_names"] = names
    metrics["ece_bins"] = config.ece_bins  # export's calibration report uses the same bins
    metrics["validation"] = validation
    metrics["test"] = test_record(manifest, ingest)
    csvs["label_issues.csv"] = _csv(rows)
    with atomic_set():  # nothing is written until everything is computed; then all files as one set
        for file, text in csvs.items():
            write_text(out / file, text)
        write_json(out / CONFIG_FILE, as_record(config))
        write_json(out / "metrics.json", metrics)
    return metrics


def validation_record(noise: Path) -> dict:
    """Where the validation set that every selection, calibration and gate decision used came from, and whether
    its labels are clean (from the noise step's summary), with the warning when they are not."""
    summary = read_json(Path(noise) / "summary.json", "noise", "val_source", "val_clean")
    record = {"source": summary["val_source"], "clean": summary["val_clean"], "size": summary.get("val")}
    if not summary["val_clean"]:
        record["warning"] = summary.get("warning", "the validation labels are noisy")
    return record


LABEL_KEYS = ("index", "label", "clean_label", "is_noisy", "is_val")


def _read_labels(ingest: Path, noise: Path) -> dict[str, np.ndarray]:
    """The arrays of the noise step's ``labels.npz`` that evaluate uses, checked against the ingested training set
    (``read_noise_labels``)."""
    return read_noise_labels(ingest, noise, *LABEL_KEYS)


def _label_issue_list(teacher, ingest: Path, noise: Path, config: EvaluateConfig, names: list[str], *,
                      labels: dict[str, np.ndarray] | None = None, teacher_file: Path | str = "the teacher"):
    """Every training row ranked by ``label_issues``, the summary, and the ROC points (empty without ground
    truth). The detection figures count only the rows whose clean label is known (all of them under synthetic
    noise; Clothing1M's images with a clean label; none of a user's own labels under kind none); a row's
    ``injected_noise`` is left empty where its clean label is unknown, and the column dropped without ground truth.
    ``teacher_file``: where ``teacher`` was read from, which ``check_finite`` names."""
    labels = _read_labels(ingest, noise) if labels is None else labels
    train = ~labels["is_val"]
    rows_index, given = labels["index"][train], labels["label"][train]
    train_data, _, _ = load_split(ingest, noise, workers=config.workers)
    probs = predict(teacher, train_data, batch_size=config.batch_size,
                    desc="evaluate: the teacher on the training labels").numpy()
    check_finite(probs, teacher_file, "the teacher model on the training rows")
    known = labels["clean_label"][train] >= 0
    noisy = labels["is_noisy"][train][known]
    flags = flag_issues(probs, given)  # one ranking for the CSV, the flagged set and the scores on known rows
    rows, everywhere = label_issues(probs, given, labels["is_noisy"][train], flags=flags)
    suspicion, _, flagged = flags
    summary = {k: everywhere[k] for k in ("estimated_issues", "estimated_noise_rate")}
    summary["per_class"] = per_class_issues(given, flagged, names)
    summary["rows_with_clean_label"] = int(known.sum())
    summary["ground_truth"] = bool(noisy.any() and not noisy.all())
    roc = []
    if summary["ground_truth"]:  # the flagged set of every row (the CSV's first estimated_issues), on known rows
        measured = detection_summary(suspicion[known], flagged[known], noisy)
        summary.update({k: measured[k] for k in ("true_noise_rate", "precision", "recall", "f1", "auroc")})
        roc = roc_rows(suspicion[known], noisy)
    source_keys = _source_keys(ingest)
    for row in rows:
        position = row["index"]  # the row's place among the training rows of labels.npz
        row["index"] = int(rows_index[position])  # report the row of the ingested training set
        if source_keys is not None:
            row["key"] = source_keys[row["index"]]
        if not summary["ground_truth"]:
            del row["injected_noise"]  # nothing is known about it
        elif not known[position]:
            row["injected_noise"] = ""  # clean label unknown: neither noisy nor verified correct
    return rows, summary, roc


def _source_keys(ingest: Path) -> list[str] | None:
    """The source key (Clothing1M's image path, an image folder's file name) of every ingested training row, where
    the dataset has them."""
    if read_manifest(ingest)["format"] == "shards":
        return [key.decode() for key in read_index(ingest, "train").key]
    with np.load(ingest / "train.npz") as train:
        return train["keys"].tolist() if "keys" in train.files else None


def _confusion_csv(actual: np.ndarray, predicted: np.ndarray, names: list[str]) -> str:
    """``actual,predicted`` rows by class name, for ``dvc plots``' confusion template."""
    return _csv([{"actual": names[a], "predicted": names[p]} for a, p in zip(actual, predicted, strict=True)])


def test_record(manifest: dict, ingest: Path) -> dict:
    """Where the test set came from (``source``), whether its labels are clean (a dataset's own test split: its
    owner's labels; a test set held out of a user's training images keeps their labels as given, so its accuracy
    is agreement with noisy labels), a ``warning`` when they are not, its digest (``sha256``, for the gate) and its
    size (``images``: one image is 1 / images of accuracy, which the gate's reasons say when a comparison fails)."""
    source = manifest.get("test_source", OWN_TEST_SPLIT)
    record = {"source": source, "clean": source == OWN_TEST_SPLIT, "sha256": test_digest(ingest),
              "images": manifest["counts"].get("test")}
    if not record["clean"]:
        record["warning"] = (f"the test set was {source}: its accuracy is agreement with noisy labels, not clean "
                             f"accuracy; give a clean test split (a test/ folder, or labels.csv split test)")
    return record


def _csv(rows: list[dict], *, fields: list[str] | None = None) -> str:
    text = io.StringIO()
    writer = csv.DictWriter(text, fieldnames=fields or (list(rows[0]) if rows else ["empty"]))
    writer.writeheader()
    writer.writerows(rows)
    return text.getvalue()


def _main(configs: dict) -> None:
    m = run(configs["evaluate"])
    issues = m["label_issues"]
    found = (f"F1 {issues['f1']:.3f}, AUROC {issues['auroc']:.3f}, estimated noise "
             f"{issues['estimated_noise_rate']:.3f} (true {issues['true_noise_rate']:.3f})" if issues["ground_truth"]
             else f"{issues['estimated_issues']} suspect labels, estimated noise {issues['estimated_noise_rate']:.3f} "
                  f"(no ground truth to measure the detection against)")
    test = "clean test accuracy" if m["test"]["clean"] else "test accuracy (labels as given, not clean)"
    print(f"evaluate: {test} baseline {m['baseline']['accuracy']:.4f} (best epoch "
          f"{m['baseline']['best_epoch_accuracy']:.4f}), MLNT's last student {m['student']['accuracy']:.4f}, its "
          f"released model (teacher.pt) {m['teacher']['accuracy']:.4f}; label issues: {found}")
    for record in (m["validation"], m["test"]):
        if not record["clean"]:
            print(f"WARNING: {record['warning']}", file=sys.stderr)


main = cli("evaluate", {"evaluate": EvaluateConfig}, __doc__.splitlines()[0], _main)

if __name__ == "__main__":
    raise SystemExit(main())
