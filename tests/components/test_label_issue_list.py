"""The label-issue list where the clean label is known for only part of the training rows (Clothing1M)."""

import csv
import io
import json

import numpy as np
import pytest
import torch

from components import evaluate
from components.common.atomic import json_text
from components.evaluate import EvaluateConfig, _csv, _label_issue_list, flag_issues, roc_rows
from tests.components.conftest import write_manifest

NAMES = ["a", "b", "c"]


def _partly_known(tmp_path, n: int = 40):
    """An ingested training set of ``n`` images and the noise step's labels: the first 6 rows mislabelled, the
    clean label of rows 20 onwards unknown (-1), rows 36 onwards held out for validation."""
    ingest, noise = tmp_path / "ingest", tmp_path / "noise"
    ingest.mkdir()
    noise.mkdir()
    rng = np.random.default_rng(0)
    np.savez(ingest / "train.npz", images=rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
             labels=rng.integers(0, 3, n))
    write_manifest(ingest, NAMES, {"train": n})
    clean = rng.integers(0, 3, n)
    label = clean.copy()
    label[:6] = (clean[:6] + 1) % 3
    clean[20:] = -1
    is_val = np.arange(n) >= 36
    np.savez(noise / "labels.npz", index=np.arange(n), label=label, clean_label=clean,
             is_noisy=(clean >= 0) & (label != clean), is_val=is_val)
    return ingest, noise, label, clean, is_val


def test_rows_whose_clean_label_is_unknown_are_neither_noisy_nor_verified(tmp_path, monkeypatch):
    """``injected_noise`` is True or False only where the clean label is known, empty elsewhere (False would read as
    checked and correct); the true noise rate, precision, recall and AUROC count the known rows only."""
    ingest, noise, label, clean, is_val = _partly_known(tmp_path)
    train = ~is_val
    # the teacher doubts the 6 mislabelled rows and 6 rows of unknown truth (20..25), and trusts every other label
    doubted = np.zeros(train.sum(), dtype=bool)
    doubted[:6] = doubted[20:26] = True
    given = label[train]
    probs = np.full((given.size, 3), 0.05)
    probs[np.arange(given.size), np.where(doubted, (given + 1) % 3, given)] = 0.9
    monkeypatch.setattr(evaluate, "predict", lambda *args, **kwargs: torch.from_numpy(probs))
    rows, summary, roc = _label_issue_list(None, ingest, noise, EvaluateConfig(workers=0), NAMES)
    assert summary["ground_truth"] and summary["rows_with_clean_label"] == 20 and roc
    assert sorted(r["index"] for r in rows) == list(range(36))
    for row in rows:
        i = row["index"]
        assert row["injected_noise"] == ("" if clean[i] < 0 else bool(label[i] != clean[i])), row
    # counted over every row, the 6 doubted rows of unknown truth would halve the precision and the noise rate
    assert summary["estimated_issues"] == 12
    assert summary["true_noise_rate"] == 6 / 20 and summary["precision"] == 1.0 and summary["recall"] == 1.0
    assert summary["auroc"] == 1.0
    written = {int(r["index"]): r["injected_noise"] for r in csv.DictReader(io.StringIO(_csv(rows)))}
    assert written == {i: "" if clean[i] < 0 else str(bool(label[i] != clean[i])) for i in range(36)}


def test_precision_and_recall_are_the_csvs_flagged_rows_counted_where_the_clean_label_is_known(tmp_path, monkeypatch):
    """The flagged set is the CSV's first ``estimated_issues`` rows, over every row; its precision and recall count
    the known rows among them. (They were a second flagged set's, re-estimated on the known rows alone.)"""
    ingest, noise, label, clean, is_val = _partly_known(tmp_path)
    given = label[~is_val]
    # p(given), p(given + 1), p(given + 2) per row: trusted, except the 6 mislabelled rows (doubted, score .95),
    # 3 correct known rows (kept, but scored .55) and 6 rows of unknown truth (doubted, score .52)
    table = np.tile([0.9, 0.05, 0.05], (given.size, 1))
    table[:6], table[6:9], table[20:26] = [0.05, 0.95, 0.0], [0.45, 0.3, 0.25], [0.48, 0.52, 0.0]
    probs = np.zeros_like(table)
    for shift in range(3):
        probs[np.arange(given.size), (given + shift) % 3] = table[:, shift]
    monkeypatch.setattr(evaluate, "predict", lambda *args, **kwargs: torch.from_numpy(probs))
    rows, summary, roc = _label_issue_list(None, ingest, noise, EvaluateConfig(workers=0), NAMES)
    known = clean[~is_val] >= 0  # the ROC too counts the known rows alone: rows of unknown truth are no negatives
    assert roc == roc_rows(flag_issues(probs, given)[0][known], (label != clean)[~is_val][known])
    first = rows[:summary["estimated_issues"]]  # 12: 6 mislabelled, then the 3 correct known rows, then 3 unknown
    assert summary["estimated_issues"] == 12 and sorted(r["index"] for r in first[6:9]) == [6, 7, 8]
    found = [r["injected_noise"] for r in first if r["injected_noise"] != ""]
    assert summary["precision"] == found.count(True) / len(found) == 6 / 9 and summary["recall"] == 1.0


def _every_clean_label_known(tmp_path, noisy: bool, n: int = 40):
    """Every clean label known, and either none of the given labels wrong (noise kind none on a curated dataset) or
    every one of them; rows 36 onwards held out for validation."""
    ingest, noise = tmp_path / "ingest", tmp_path / "noise"
    ingest.mkdir()
    noise.mkdir()
    rng = np.random.default_rng(0)
    clean = rng.integers(0, 3, n)
    label = (clean + 1) % 3 if noisy else clean
    np.savez(ingest / "train.npz", images=rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8), labels=clean)
    write_manifest(ingest, NAMES, {"train": n})
    is_val = np.arange(n) >= 36
    np.savez(noise / "labels.npz", index=np.arange(n), label=label, clean_label=clean, is_noisy=label != clean,
             is_val=is_val)
    return ingest, noise, label[~is_val]


@pytest.mark.parametrize("noisy", [False, True], ids=["none-noisy", "all-noisy"])
def test_without_both_noisy_and_clean_rows_there_is_no_detection_score(tmp_path, monkeypatch, noisy):
    """Detection is measured against known noise only when the known rows hold both noisy and correct labels: with
    none noisy (kind none on a curated dataset) or all noisy, precision, recall and AUROC are undefined, so they are
    left out (metrics.json stays valid JSON, no NaN), the ROC curve is empty and the rows carry no
    ``injected_noise`` column."""
    ingest, noise, given = _every_clean_label_known(tmp_path, noisy)
    probs = np.full((given.size, 3), 0.05)
    probs[np.arange(given.size), given] = 0.9
    probs[:3] = [0.9, 0.05, 0.05]  # the teacher doubts a few labels either way
    monkeypatch.setattr(evaluate, "predict", lambda *args, **kwargs: torch.from_numpy(probs))
    rows, summary, roc = _label_issue_list(None, ingest, noise, EvaluateConfig(workers=0), NAMES)
    text = json_text({"label_issues": summary})  # as write_json writes it into metrics.json
    assert "NaN" not in text and json.loads(text, parse_constant=lambda c: pytest.fail(f"{c} in metrics.json"))
    assert summary["ground_truth"] is False and summary["rows_with_clean_label"] == 36
    assert not {"true_noise_rate", "precision", "recall", "f1", "auroc"} & summary.keys(), summary
    assert roc == [] and all("injected_noise" not in row for row in rows)


def test_each_row_names_the_file_of_the_ingested_image_it_ranks(tmp_path, monkeypatch):
    """An image folder's ``train.npz`` keeps each image's file (``keys``): a row's ``key`` is the file of the ingested
    row it names (``index``), whose given label it shows, when labels.npz holds the rows in another order."""
    ingest, noise, n = tmp_path / "ingest", tmp_path / "noise", 12
    ingest.mkdir()
    noise.mkdir()
    rng = np.random.default_rng(0)
    keys = np.array([f"img{i:02d}.png" for i in range(n)])
    np.savez(ingest / "train.npz", images=rng.integers(0, 256, (n, 8, 8, 1), dtype=np.uint8),
             labels=rng.integers(0, 3, n), keys=keys)
    write_manifest(ingest, NAMES, {"train": n})
    index = rng.permutation(n)  # labels.npz's row j is the ingested image index[j]
    label = rng.integers(0, 3, n)
    np.savez(noise / "labels.npz", index=index, label=label, clean_label=np.full(n, -1), is_noisy=np.zeros(n, bool),
             is_val=np.arange(n) >= 9)
    probs = rng.dirichlet(np.ones(3), 9)
    monkeypatch.setattr(evaluate, "predict", lambda *args, **kwargs: torch.from_numpy(probs))
    rows, summary, roc = _label_issue_list(None, ingest, noise, EvaluateConfig(workers=0), NAMES)
    assert not summary["ground_truth"] and roc == []
    assert sorted(r["index"] for r in rows) == sorted(index[:9].tolist())
    given_of = dict(zip(index.tolist(), label.tolist(), strict=True))
    for row in rows:
        assert row["key"] == keys[row["index"]] and row["given_label"] == given_of[row["index"]], row


def test_labels_the_teacher_all_but_rules_out_are_ranked_by_their_probability_not_by_position():
    """Scores of 1 - p saturate at 1.0 in float32 below p of about 6e-8: the list still puts the least likely given
    label first, ties (equal probabilities) keep the training order, and the AUROC and the ROC curve read the same
    ranking (saturated scores would tie a noisy label with a clean one the teacher tells apart)."""
    chance = np.array([1e-9, 1e-12, 0.5, 1e-20, 1e-12], dtype=np.float32)
    probs = np.stack([chance, 1 - chance], axis=1)
    given = np.zeros(5, dtype=np.int64)
    suspicion, order, flagged = flag_issues(probs, given)
    assert order.tolist() == [3, 1, 4, 0, 2]
    assert flagged.tolist() == [True, True, False, True, True]
    noisy = np.array([False, True, False, True, True])  # the three least likely labels: a perfect ranking
    rows, summary = evaluate.label_issues(probs, given, noisy)
    assert [row["index"] for row in rows] == order.tolist()
    assert [row["score"] for row in rows] == [1.0, 1.0, 1.0, 1.0, 0.5]  # what users read: 1 - p, rounded
    assert summary["auroc"] == 1.0
    assert roc_rows(suspicion, noisy) == [{"fpr": 0.0, "tpr": 0.0}, {"fpr": 0.0, "tpr": 0.333333},
                                          {"fpr": 0.0, "tpr": 1.0}, {"fpr": 0.5, "tpr": 1.0},
                                          {"fpr": 1.0, "tpr": 1.0}]
