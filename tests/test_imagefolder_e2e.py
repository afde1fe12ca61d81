"""docs/data.md's own-folder walkthrough through the real `dvc repro`: a folder of PNG and JPEG files in class
sub-folders whose training labels are really noisy (a quarter of the images sit in a wrong class folder, unknown to
the pipeline), with a clean val/ and test/ folder, run with recipes/imagefolder.yaml shrunk to two CPU cores.
Model selection, calibration and the gate use the val/ folder; the label-issue list names files and finds the
misplaced ones without any ground truth given."""

import csv
import json

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

from tests.test_pipeline_e2e import ROOT, commit_all, copy_repository, sh

CLASSES = ("boot", "coat", "dress", "shirt")
SIZES = {"train": 240, "val": 40, "test": 60}
MISPLACED = 0.25


def write_own_folder(root, seed: int = 0) -> set[str]:
    """``train/<class>/``, ``val/<class>/`` and ``test/<class>/`` of 20x20 images, class c a bright band at rows
    4c..4c+3; returns the training files placed in a wrong class folder."""
    rng = np.random.default_rng(seed)
    misplaced = set()
    for split, n in SIZES.items():
        for i in range(n):
            c = int(rng.integers(0, len(CLASSES)))
            pixels = rng.integers(0, 60, (20, 20, 3)).astype(np.uint8)
            pixels[4 * c + 2:4 * c + 5, 2:18] = 250
            folder = c
            if split == "train" and rng.random() < MISPLACED:
                folder = int((c + rng.integers(1, len(CLASSES))) % len(CLASSES))
            name = f"{split}/{CLASSES[folder]}/{i:04d}.{'jpg' if i % 3 == 0 else 'png'}"
            (root / name).parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(pixels).save(root / name, **({"quality": 95} if name.endswith(".jpg") else {}))
            if folder != c:
                misplaced.add(name)
    return misplaced


def shrunk_walkthrough(repo) -> None:
    """recipes/imagefolder.yaml with the path of the fixture and a schedule for seconds, not hours."""
    params = yaml.safe_load((ROOT / "recipes" / "imagefolder.yaml").read_text())
    params["ingest"].update(path="data/mine", image_size=20)
    for section in ("baseline", "mlnt"):
        params[section].update(epochs=4, batch_size=32, eval_every=4, checkpoint_every=4, progress=False)
    params["mlnt"].update(neighbours=5, ramp_start=0.5, ramp_end=2.0)
    params["export"].update(parity_images=32)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    repo = copy_repository(tmp_path_factory.mktemp("imagefolder") / "repo")
    misplaced = write_own_folder(repo / "data" / "mine")
    (repo / "misplaced.json").write_text(json.dumps(sorted(misplaced)))
    shrunk_walkthrough(repo)
    commit_all(repo)
    return repo


def test_own_folder_walkthrough_selects_on_the_clean_val_folder(repo):
    from components.common.model_file import load_model  # noqa: PLC0415
    from components.common.splits import normalise  # noqa: PLC0415
    from model.trainer import Data, predict  # noqa: PLC0415

    sh(repo, "dvc", "repro")
    art = repo / "artifacts"
    manifest = json.loads((art / "ingest" / "manifest.json").read_text())
    assert manifest["counts"] == SIZES and manifest["class_names"] == list(CLASSES)
    assert manifest["labels"] == "as given" and manifest["test_source"] == "the dataset's test split"
    summary = json.loads((art / "noise" / "summary.json").read_text())
    assert (summary["val_source"], summary["val_clean"], summary["val"]) == ("the dataset's val split", True, 40)
    assert summary["train"] == SIZES["train"] and summary["realised_rate_train"] is None  # all of it; truth unknown
    # selection used the val folder: the accuracy CE's best epoch was picked with is its accuracy on val/
    net, saved = load_model(art / "baseline" / "model.pt")
    with np.load(art / "ingest" / "val.npz") as val:
        data = Data(normalise(val["images"], **saved["normalisation"]), torch.from_numpy(val["labels"]))
    on_val = float((predict(net.eval(), data, batch_size=64).argmax(1) == data.labels).float().mean())
    assert json.loads((art / "baseline" / "metrics.json").read_text())["val_accuracy"] == pytest.approx(on_val)
    metrics = json.loads((art / "evaluate" / "metrics.json").read_text())
    assert metrics["validation"] == {"source": "the dataset's val split", "clean": True, "size": 40}
    assert metrics["test"]["clean"] is True and "warning" not in metrics["test"]  # its own test/ folder
    issues = metrics["label_issues"]
    assert issues["ground_truth"] is False and "precision" not in issues and "auroc" not in issues
    assert set(issues["per_class"]) == set(CLASSES)
    assert sum(c["labels"] for c in issues["per_class"].values()) == SIZES["train"]
    assert sum(c["flagged"] for c in issues["per_class"].values()) == issues["estimated_issues"]
    with open(art / "evaluate" / "label_issues.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == SIZES["train"] and "injected_noise" not in rows[0]
    misplaced = set(json.loads((repo / "misplaced.json").read_text()))
    top = {r["key"] for r in rows[:len(misplaced)]}  # the files a user would check first
    assert len(top & misplaced) > 0.5 * len(misplaced), (len(top & misplaced), len(misplaced))
    card = json.loads((repo / "releases" / "imagefolder" / "latest" / "model_card.json").read_text())
    assert card["validation"]["clean"] is True
    assert card["calibration"]["fitted_on"] == "clean validation set (40 images)"
    decision = json.loads((art / "gate" / "decision.json").read_text())
    assert decision["passed"] is True and decision["min_accuracy"] == 0.0
    assert any("the CE baseline's best epoch" in r for r in decision["reasons"])
