"""Reading a release for serving: the card's hash must match the model, or the predictor refuses to start."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

import serving.release
from components.export import class_distribution
from serving.release import ReleaseError, load_release
from tests.serving.conftest import PREDICTED_SHARES, ROOT, TRAIN_SHARES, VERSION, write_release


def test_a_release_is_read_with_its_spec_version_and_the_models_own_class_shares(release):
    """The drift gauge's reference is the model's predictions on the test set, not the noisy labels' shares."""
    served = load_release(release[0])
    assert served.spec.shape == (1, 8, 8) and served.spec.class_names == ("ant", "bee", "cat", "dog")
    assert served.version == VERSION and served.reference_distribution == tuple(PREDICTED_SHARES)


def test_a_tampered_model_refuses_to_start_with_one_clear_line(release, tmp_path):
    folder = tmp_path / "tampered"
    shutil.copytree(release[0], folder)
    card = json.loads((folder / "model_card.json").read_text())
    (folder / "model.onnx").write_bytes((folder / "model.onnx").read_bytes() + b"\0")
    done = subprocess.run([sys.executable, "-m", "serving", "--model", str(folder), "--http-port", "1"], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith(f"serving: refusing to start: {folder / 'model.onnx'}: sha256 does not match the "
                               f"model card: expected {card['onnx_sha256']}, found ")


@pytest.mark.parametrize(("damage", "message"), [
    (lambda f: (f / "model_card.json").unlink(), "model_card.json: expected a readable file, found no such file"),
    (lambda f: (f / "model_card.json").write_text("{"), "model_card.json: expected a JSON object, found invalid"),
    (lambda f: (f / "model.onnx").unlink(), "model.onnx: expected a readable file, found no such file"),
])
def test_missing_or_broken_files_are_named(release, tmp_path, damage, message):
    folder = tmp_path / "broken"
    shutil.copytree(release[0], folder)
    damage(folder)
    with pytest.raises(ReleaseError, match=message):
        load_release(folder)
    with pytest.raises(ReleaseError, match=r"expected a release folder with model\.onnx and model_card\.json, "
                                           r"found nothing"):
        load_release(tmp_path / "none")


def test_an_older_card_falls_back_to_the_training_shares_then_uniform_with_a_warning(release, tmp_path, caplog):
    folder = tmp_path / "old"
    shutil.copytree(release[0], folder)
    card = json.loads((folder / "model_card.json").read_text())
    del card["predicted_class_distribution"]
    (folder / "model_card.json").write_text(json.dumps(card))
    (folder / "decision.json").unlink()
    assert load_release(folder).reference_distribution == tuple(TRAIN_SHARES)
    assert "no predicted_class_distribution (exported before it was recorded)" in caplog.text
    del card["train_class_distribution"]
    (folder / "model_card.json").write_text(json.dumps(card))
    served = load_release(folder)
    assert served.reference_distribution == (0.25,) * 4 and "uniform" in caplog.text
    assert served.version == f"sha256-{card['onnx_sha256'][:8]}"


def test_export_writes_the_training_class_shares():
    assert class_distribution(np.array([0, 0, 1, 3]), 4) == [0.5, 0.25, 0.0, 0.25]
    with pytest.raises(ValueError, match=r"expected labels in 0..3, found labels from 0 to 4"):
        class_distribution(np.array([0, 4]), 4)


def registry_of_two(registry):
    """``registry`` with two released versions (different models), each with the decision.json the gate writes,
    and ``latest`` linked to the first; their names and ONNX sha256s."""
    registry.mkdir()
    versions = {}
    for seed, name in enumerate(("v20260101T000000Z-aaaaaaaa", "v20260102T000000Z-bbbbbbbb")):
        folder = write_release(registry / name, seed=seed)[0]
        sha = json.loads((folder / "model_card.json").read_text())["onnx_sha256"]
        (folder / "decision.json").write_text(json.dumps({"passed": True, "version": name, "onnx_sha256": sha}))
        versions[name] = sha
    (registry / "latest").symlink_to(next(iter(versions)))
    return versions


def test_a_release_is_read_from_the_version_latest_named_at_start_even_if_the_gate_moves_it(tmp_path, monkeypatch):
    """The gate re-points ``latest`` with a rename (``components.gate``) while the predictor may be reading it: every
    file comes from the one version folder the link named when reading began, and that folder is the one named."""
    registry = tmp_path / "releases"
    versions = registry_of_two(registry)
    first, second = versions
    read = serving.release._read_bytes

    def read_then_promote(path):
        data = read(path)
        if path.name == "model.onnx":  # the gate promotes the other version between two reads
            link = registry / ".latest.tmp"
            link.symlink_to(second)
            link.replace(registry / "latest")
        return data

    monkeypatch.setattr(serving.release, "_read_bytes", read_then_promote)
    served = load_release(registry / "latest")
    assert (served.version, hashlib.sha256(served.onnx).hexdigest()) == (first, versions[first])
    assert served.folder == (registry / first).resolve()


def test_a_decision_for_another_model_refuses_to_start(tmp_path):
    versions = registry_of_two(tmp_path / "releases")
    first, second = versions
    decision = tmp_path / "releases" / first / "decision.json"
    decision.write_text(json.dumps({"passed": True, "version": second, "onnx_sha256": versions[second]}))
    with pytest.raises(ReleaseError, match=rf"^{decision}: expected onnx_sha256 {versions[first]} \(the model\.onnx "
                                           rf"read\), found {versions[second]}$"):
        load_release(tmp_path / "releases" / "latest")
