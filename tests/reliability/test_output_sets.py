"""Each step's output files as a set, and its output folder checked before the work: on the good workspace (a copy),
a failure while writing a step's last file leaves every file of the step as it was; a bad input found late
(evaluate) changes no file; a file in place of the output folder fails at once with a message naming it."""

from __future__ import annotations

import errno
import importlib
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch

from components.common import atomic
from tests.reliability.workspace import snapshot

# step: (the files of its set that it writes, the last one written)
SETS = {
    "ingest": (("train.npz", "test.npz"), "manifest.json"),
    "noise": (("labels.npz", "transition.json", "config.json"), "summary.json"),
    "baseline": (("model.pt", "final.pt", "history.json", "config.json"), "metrics.json"),
    "mlnt": (("student.pt", "teacher.pt", "history.json", "evaluations.json", "config.json"), "metrics.json"),
    "evaluate": (("confusion_teacher.csv", "calibration_teacher.csv", "roc_label_issues.csv", "label_issues.csv",
                  "config.json"), "metrics.json"),
    "export": (("model.onnx", "parity.json"), "model_card.json"),
}
# a training step's resumable state, and the failed run's own curves (kept aside; live/, the published ones, stays)
NOT_IN_THE_SET = ("checkpoints", "live.partial")


@pytest.mark.parametrize("step", SETS)
def test_a_failure_writing_the_last_file_leaves_every_file_of_the_step(step, work, capsys, monkeypatch):
    """The earlier files are replaced by marked bytes first, so that a rewrite shows even where the rerun would
    write the same bytes; the last file's write then fails as a full disk does."""
    out = Path("artifacts", step)
    earlier, last = SETS[step]
    published = [p for p in (out / "live").rglob("*") if p.is_file()]  # a training step's curves: the same rule
    for path in [out / name for name in earlier] + published:
        path.write_bytes(b"the previous output of " + path.name.encode())
    before = snapshot(out, ignore=NOT_IN_THE_SET)
    real = atomic.atomic_path

    @contextmanager
    def full_at_the_last(path):
        with real(path) as tmp:
            yield tmp
            if Path(path).name == last and Path(path).parent.name == step:
                raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(atomic, "atomic_path", full_at_the_last)
    code = importlib.import_module(f"components.{step}").main([])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"error: {step}: {out / last}: expected a writable folder {out} with room for {last}, found: No space " \
           f"left on device (free: " in err
    assert snapshot(out, ignore=NOT_IN_THE_SET) == before
    assert not [p for p in out.iterdir() if atomic.TEMP.fullmatch(p.name)]


def test_evaluate_reads_every_input_before_it_writes(work, capsys):
    """A teacher that predicts differently and a noise summary without ``val_clean``: the summary is checked before
    the work, and no CSV is replaced."""
    teacher = Path("artifacts/mlnt/teacher.pt")
    payload = torch.load(teacher, weights_only=True)
    first = next(iter(payload["state_dict"]))
    payload["state_dict"][first] = payload["state_dict"][first] + 0.5
    torch.save(payload, teacher)
    Path("artifacts/noise/summary.json").write_text('{"val_source": 1}\n')
    before = snapshot(work)
    code = importlib.import_module("components.evaluate").main([])
    err = capsys.readouterr().err
    assert code == 1
    assert "artifacts/noise/summary.json: expected the key 'val_clean'" in err
    assert snapshot(work) == before


def test_evaluate_checks_the_labels_before_the_work(work, capsys, monkeypatch):
    """labels.npz without ``is_val``: it fails before any prediction."""
    labels = Path("artifacts/noise/labels.npz")
    with np.load(labels) as arrays:
        kept = {k: arrays[k] for k in arrays.files if k != "is_val"}
    np.savez(labels, **kept)
    before = snapshot(work)
    evaluate = importlib.import_module("components.evaluate")

    def no_prediction(*_args, **_kwargs):
        raise AssertionError("predicted before the labels were checked")

    monkeypatch.setattr(evaluate, "predict", no_prediction)
    assert evaluate.main([]) == 1
    assert "is_val" in capsys.readouterr().err
    assert snapshot(work) == before


def test_evaluate_refuses_model_files_of_another_dataset(work, capsys):
    """An ingested dataset with another class count than the model files (ingest re-run by hand): evaluate names the
    model file and the manifest, and changes no file (it scored the ten-class models against eleven class names)."""
    manifest = Path("artifacts/ingest/manifest.json")
    content = json.loads(manifest.read_text())
    manifest.write_text(json.dumps({**content, "class_names": [*content["class_names"], "extra"]}))
    before = snapshot(work)
    assert importlib.import_module("components.evaluate").main([]) == 1
    err = capsys.readouterr().err
    assert "artifacts/baseline/final.pt: expected a model for the dataset of artifacts/ingest/manifest.json (11 " \
           "classes" in err, err
    assert snapshot(work) == before


@pytest.mark.parametrize("step", SETS)
def test_a_file_in_place_of_the_output_folder_fails_before_the_work(step, work, capsys, monkeypatch):
    out = Path("artifacts", step)
    for path in sorted(out.rglob("*"), reverse=True):
        path.rmdir() if path.is_dir() and not path.is_symlink() else path.unlink()
    out.rmdir()
    out.write_text("not a folder")
    before = snapshot(work)
    module = importlib.import_module(f"components.{step}")
    for work_function in ("load_split", "test_set", "read", "choose", "_read_ingest"):
        if hasattr(module, work_function):  # the step's first piece of work must not start
            monkeypatch.setattr(module, work_function, lambda *_a, **_k: pytest.fail("the work began"))
    code = module.main([])
    err = capsys.readouterr().err
    assert code == 1, err
    assert f"error: {step}: {out}: expected a folder for the {step} outputs, found a file at {out}" in err
    assert snapshot(work) == before
