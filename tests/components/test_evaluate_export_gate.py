"""evaluate's metrics, export's ONNX parity, and the gate's pass and fail paths (real onnx and onnxruntime)."""

import datetime as dt
import hashlib
import itertools
import json
import os
import re
import shutil
import subprocess
import threading
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

from components import gate
from components.common import report as pipeline_run
from components.evaluate import (
    auroc,
    classification_metrics,
    detection_summary,
    expected_calibration_error,
    flag_issues,
    label_issues,
    per_class_issues,
)
from components.export import Probabilities, input_transform, interface, onnx_metadata, parity, to_onnx
from components.gate import GateConfig, decide, promote, read_champion, report
from components.gate import run as run_gate
from model.networks import SmallCNN
from tests.components.conftest import write_manifest


def test_metrics_on_a_hand_checked_example():
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8]])
    labels = np.array([0, 1, 1, 1])
    m = classification_metrics(probs, labels, 2, bins=10)
    assert m["accuracy"] == 0.75 and m["per_class_accuracy"] == [1.0, 2 / 3]
    assert m["macro_f1"] == pytest.approx(np.mean([2 * 0.5 * 1 / 1.5, 2 * 1 * (2 / 3) / (5 / 3)]))
    # Bins (0.5,0.6], (0.6,0.7], (0.7,0.8], (0.8,0.9]: |0-0.6| + |1-0.7| + |1-0.8| + |1-0.9|, each with weight 1/4.
    assert expected_calibration_error(probs, labels, 10) == pytest.approx((0.6 + 0.3 + 0.2 + 0.1) / 4)


def test_auroc_equals_pair_counting():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 5, 60).astype(float)  # many ties
    positive = rng.random(60) < 0.4
    pairs = [(1.0 if p > n else 0.5 if p == n else 0.0) for p, n in itertools.product(scores[positive],
                                                                                       scores[~positive])]
    assert auroc(scores, positive) == pytest.approx(np.mean(pairs))


def test_label_issue_ranking_and_its_scores():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.45, 0.55]])
    given = np.array([0, 0, 1, 1])
    noisy = np.array([False, True, True, False])
    rows, summary = label_issues(probs, given, noisy)
    assert [r["index"] for r in rows] == [1, 2, 3, 0]
    assert [r["suggested_label"] for r in rows] == [1, 0, 0, 1]  # never the given label
    assert [r["flagged"] for r in rows] == [True, True, False, False]
    assert summary["estimated_issues"] == 2 and summary["precision"] == 1.0 and summary["recall"] == 1.0
    assert summary["auroc"] == 1.0 and summary["estimated_noise_rate"] == 0.5 == summary["true_noise_rate"]


def test_the_flagged_set_is_the_top_of_the_ranking_and_per_class_counts_it():
    """k = the number of disagreements (1 here, row 1); the flagged row is the one ranked first (row 0, whose
    prediction agrees with its label but with p = 0.4), as label_issues.csv's first k rows show."""
    probs = np.array([[0.4, 0.35, 0.25], [0.5, 0.45, 0.05], [0.1, 0.1, 0.8]])
    given = np.array([0, 1, 2])
    rows, summary = label_issues(probs, given, np.array([True, False, False]))
    assert summary["estimated_issues"] == 1 and rows[0]["index"] == 0 and summary["precision"] == 1.0
    # the flagged row suggests the likeliest other class (1), not its own label, the teacher's prediction; the
    # unflagged row 1, whose prediction (0) is another class, suggests that
    assert [(r["index"], r["flagged"], r["suggested_label"]) for r in rows] == [(0, True, 1), (1, False, 0),
                                                                                (2, False, 0)]
    assert per_class_issues(given, flag_issues(probs, given)[2], ["a", "b", "c"]) == {
        "a": {"labels": 1, "flagged": 1, "share": 1.0}, "b": {"labels": 1, "flagged": 0, "share": 0.0},
        "c": {"labels": 1, "flagged": 0, "share": 0.0}}


@pytest.fixture(scope="module")
def exported():
    torch.manual_seed(0)
    net = SmallCNN(4, image_size=8, width=4, hidden=8).eval()
    onnx_bytes = to_onnx(net, torch.randn(2, 1, 8, 8), {"class_names": json.dumps(list("abcd"))})
    return net, onnx_bytes


def test_onnx_export_dynamic_batch_metadata_and_parity(exported):
    net, onnx_bytes = exported
    model = onnx.load_from_string(onnx_bytes)
    assert {o.domain: o.version for o in model.opset_import}[""] == 18  # the opset the card and docs name
    assert {p.key: p.value for p in model.metadata_props}["class_names"] == '["a", "b", "c", "d"]'
    assert not any(t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    session = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"])
    for batch in (1, 7, 300):
        assert session.run(None, {"images": np.zeros((batch, 1, 8, 8), np.float32)})[0].shape == (batch, 4)
    report = parity(onnx_bytes, net, torch.randn(256, 1, 8, 8), 1e-4)
    assert report["passed"] and report["max_abs_diff"] <= 1e-4 and report["argmax_agreement"] == 1.0


def test_an_example_of_one_image_as_the_data_pipeline_lays_it_out_exports_a_dynamic_batch_graph(exported):
    """``export.parity_images: 1`` (or a test split of one image) gave a one-image example with the test set's
    strides (NHWC images permuted to NCHW), which the exporter refused with a dynamic batch axis ("Invalid ranges
    [2:1]"): the step failed."""
    net, onnx_bytes = exported
    one = to_onnx(net, torch.randn(1, 8, 8, 1).permute(0, 3, 1, 2), {"class_names": json.dumps(list("abcd"))})
    assert one == onnx_bytes  # the graph does not depend on the example's values
    session = ort.InferenceSession(one, providers=["CPUExecutionProvider"])
    assert session.run(None, {"images": np.zeros((3, 1, 8, 8), np.float32)})[0].shape == (3, 4)


def test_the_same_weights_export_to_the_same_bytes_however_export_is_called(exported, tmp_path):
    """No stack trace, source path or module path of the exporting process ships in the ONNX file: another process,
    with the export module loaded under another name (as ``python -m`` loads it as ``__main__``), writes the same
    bytes, so a release's sha256 follows its weights, not where or how export ran."""
    import subprocess  # noqa: PLC0415
    import sys  # noqa: PLC0415

    net, onnx_bytes = exported
    root = Path(__file__).resolve().parents[2]
    assert str(root).encode() not in onnx_bytes and b"stack_trace" not in onnx_bytes
    torch.save(net.state_dict(), tmp_path / "weights.pt")
    script = (
        "import importlib.util, json, sys, torch\n"
        "from model.networks import SmallCNN\n"
        "spec = importlib.util.spec_from_file_location('elsewhere', 'components/export.py')\n"
        "sys.modules['elsewhere'] = module = importlib.util.module_from_spec(spec)\n"
        "spec.loader.exec_module(module)\n"
        "export = vars(module)\n"
        "net = SmallCNN(4, image_size=8, width=4, hidden=8).eval()\n"
        "net.load_state_dict(torch.load(sys.argv[1]))\n"
        "torch.manual_seed(1)\n"
        "data = export['to_onnx'](net, torch.randn(2, 1, 8, 8), {'class_names': json.dumps(list('abcd'))})\n"
        "open(sys.argv[2], 'wb').write(data)\n")
    subprocess.run([sys.executable, "-c", script, str(tmp_path / "weights.pt"), str(tmp_path / "other.onnx")],
                   cwd=root, check=True, timeout=300)
    assert (tmp_path / "other.onnx").read_bytes() == onnx_bytes


def test_parity_fails_when_the_graph_differs_from_the_model(exported):
    net, onnx_bytes = exported
    other = SmallCNN(4, image_size=8, width=4, hidden=8).eval()  # other weights
    report = parity(onnx_bytes, other, torch.randn(64, 1, 8, 8), 1e-4)
    assert not report["passed"] and report["max_abs_diff"] > 1e-4
    with torch.no_grad():
        assert torch.allclose(Probabilities(net)(torch.zeros(1, 1, 8, 8)).sum(), torch.tensor(1.0))


def test_parity_needs_both_the_tolerance_and_every_argmax(exported):
    """``passed`` is "within max_abs_diff AND every argmax equal": the faithful graph fails a tolerance tighter than
    float32 rounding although every argmax agrees, and a graph whose probabilities are within the tolerance but
    whose top class differs fails too (a serving model that answers another class is not the model judged)."""
    net, onnx_bytes = exported
    images = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    report = parity(onnx_bytes, net, images, 1e-12)
    assert report["argmax_agreement"] == 1.0 and report["max_abs_diff"] > 1e-12  # float32 rounding, nothing more
    assert report["passed"] is False
    # two constant models 1e-3 apart in one logit: probabilities within 1e-3 of each other, top class 0 vs 1
    exported_net, other = (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 4)).eval() for _ in range(2))
    with torch.no_grad():
        for module, top in ((exported_net, 0), (other, 1)):
            module[1].weight.zero_()
            module[1].bias.zero_()
            module[1].bias[top] = 1e-3
    graph = to_onnx(exported_net, torch.zeros(2, 1, 8, 8), {})
    report = parity(graph, other, images[:16], 1e-3)
    assert report["max_abs_diff"] <= 1e-3 and report["argmax_agreement"] == 0.0
    assert report["passed"] is False


IMAGENET = {"mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225]}


@pytest.mark.parametrize("manifest, size, want", [
    ({"dataset": "clothing1m", "format": "shards", "transform": {"resize": 256, "crop": 224, **IMAGENET}}, 224,
     {"method": "short side, then centre crop", "resize": 256, "crop": 224, "filter": "bilinear", "offset": "round",
      "jpeg_draft": True}),
    ({"dataset": "imagefolder", "format": "arrays", "image_shape": [64, 64, 3]}, 64,
     {"method": "short side, then centre crop", "resize": 64, "crop": 64, "filter": "bilinear", "offset": "floor",
      "jpeg_draft": False}),
    ({"dataset": "fashion-mnist", "format": "arrays", "image_shape": [28, 28, 1]}, 28,
     {"method": "resize to the input size", "filter": "bilinear"}),
    ({"dataset": "cifar10n", "format": "arrays", "image_shape": [32, 32, 3]}, 32,
     {"method": "resize to the input size", "filter": "bilinear"}),
])
def test_the_card_and_the_onnx_metadata_record_how_images_were_resized_and_cropped(exported, manifest, size, want):
    """The card's ``input.transform`` and the ONNX metadata's ``input_transform``: the resize and centre crop training
    and evaluate applied (the shards' manifest transform at decode, an image folder's ``load_image`` at ingest), or,
    for a dataset stored at its final size, that requests of that size are used as they are."""
    transform = input_transform(manifest, size)
    assert {k: v for k, v in transform.items() if k != "note"} == want
    assert f"{size}x{size}" in transform["note"]
    meta = {"in_channels": 3, "image_size": size, "num_classes": 4, "normalisation": IMAGENET}
    card = interface("small_cnn", list("abcd"), meta, transform=transform)
    assert card["input"]["transform"] == transform and card["input"]["shape"] == ["batch", 3, size, size]
    metadata = onnx_metadata(list("abcd"), IMAGENET, "teacher", transform=transform)
    assert json.loads(metadata["input_transform"]) == transform and "input_transform" in metadata["input_layout"]
    net, _ = exported
    model = onnx.load_from_string(to_onnx(net, torch.randn(2, 1, 8, 8), metadata))
    assert json.loads({p.key: p.value for p in model.metadata_props}["input_transform"]) == transform
    assert "transform" not in interface("small_cnn", list("abcd"), meta)["input"]  # as the benchmarks call it
    assert "input_transform" not in onnx_metadata(list("abcd"), IMAGENET, "teacher")


@pytest.mark.parametrize("manifest, found", [
    ({"format": "shards"}, "expected a transform with resize and crop for a sharded dataset, found None"),
    ({"format": "shards", "transform": {"resize": 256, "crop": 200}}, "found resize 256, crop 200"),
    ({"format": "shards", "transform": {"resize": 200, "crop": 224}}, "found resize 200, crop 224"),
])
def test_a_manifest_whose_transform_does_not_fit_the_model_is_refused(manifest, found):
    with pytest.raises(ValueError, match="ingest manifest: expected") as err:
        input_transform(manifest, 224)
    assert found in str(err.value)


def write_export(folder, *, accuracy=0.9, parity_ok=True, tamper=False, baseline=0.85, validation=None,
                 onnx=b"onnx-bytes", task=None):
    export, evaluate = folder / "export", folder / "evaluate"
    export.mkdir(parents=True)
    evaluate.mkdir(parents=True)
    (export / "model.onnx").write_bytes(onnx)
    digest = hashlib.sha256(onnx + (b"x" if tamper else b"")).hexdigest()
    card = {"model": "teacher", "onnx_sha256": digest, "metrics": {"accuracy": accuracy},
            **(task or {"class_names": ["cat", "dog"], "input": {"shape": ["batch", 1, 28, 28]},
                        "output": {"shape": ["batch", 2]}})}
    (export / "model_card.json").write_text(json.dumps(card))
    (export / "parity.json").write_text(json.dumps({"passed": parity_ok, "max_abs_diff": 1e-7,
                                                    "max_abs_diff_allowed": 1e-4, "argmax_agreement": 1.0}))
    metrics = {"teacher": {"accuracy": accuracy}, "baseline_best_epoch": {"accuracy": baseline}}
    if validation is not None:
        metrics["validation"] = validation
    (evaluate / "metrics.json").write_text(json.dumps(metrics))
    return export, evaluate


def test_gate_passes_promotes_and_never_overwrites(tmp_path):
    export, evaluate = write_export(tmp_path / "a")
    config = GateConfig(min_accuracy=0.5, registry=str(tmp_path / "releases"))
    decision = run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "gate")
    assert decision["passed"] and all(r.startswith("pass: ") for r in decision["reasons"])
    release = tmp_path / "releases" / decision["version"]
    assert (release / "model.onnx").read_bytes() == b"onnx-bytes"
    assert (tmp_path / "releases" / "latest").resolve() == release.resolve()
    assert json.loads((tmp_path / "gate" / "decision.json").read_text())["passed"] is True
    moment = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)
    decision = decide(config, export=export, evaluate=evaluate, registry=tmp_path / "releases")  # the new champion
    released = promote(export, decision, tmp_path / "releases", evaluate=evaluate, now=moment)
    assert released.startswith("v20260102T030405Z-")
    decision = decide(config, export=export, evaluate=evaluate, registry=tmp_path / "releases")
    with pytest.raises(FileExistsError, match=r"expected a new version, found it exists \(never overwritten\)"):
        promote(export, decision, tmp_path / "releases", evaluate=evaluate, now=moment)
    assert not [p for p in (tmp_path / "releases").iterdir() if p.name.startswith(".") and p.name != ".lock"]


@pytest.mark.parametrize(("kwargs", "config", "reason"), [
    ({}, {"min_accuracy": 0.99}, "fail: accuracy 0.9000, required at least min_accuracy 0.99"),
    ({"parity_ok": False}, {}, "fail: ONNX parity"),
    ({"tamper": True}, {}, "fail: model card sha256"),
    ({"baseline": 0.92}, {}, "fail: accuracy 0.9000, required at least the CE baseline's best epoch 0.9200 minus "
                             "max_below_baseline 0.0"),
    ({"baseline": None}, {}, "fail: the CE baseline's best-epoch accuracy: expected it in"),
])
def test_gate_fails_and_promotes_nothing(tmp_path, kwargs, config, reason):
    export, evaluate = write_export(tmp_path / "a", **kwargs)
    registry = tmp_path / "releases"
    decision = run_gate(GateConfig(registry=str(registry), **{"min_accuracy": 0.5, **config}), export=export,
                        evaluate=evaluate, out=tmp_path / "gate")
    assert not decision["passed"] and any(r.startswith(reason) for r in decision["reasons"])
    assert not registry.exists() or not any(registry.iterdir())


def test_gate_against_the_champion(tmp_path):
    registry = tmp_path / "releases"
    first, evaluate = write_export(tmp_path / "a", accuracy=0.9)
    champion = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=first, evaluate=evaluate,
                        out=tmp_path / "g1")
    assert champion["passed"]
    worse, evaluate = write_export(tmp_path / "b", accuracy=0.85)
    decision = decide(GateConfig(min_accuracy=0.5, max_regression=0.01), export=worse, evaluate=evaluate,
                      registry=registry)
    assert not decision["passed"] and decision["champion_accuracy"] == 0.9
    assert decision["champion_version"] == champion["version"]
    assert (f"fail: accuracy 0.8500, required at least the champion's 0.9000 minus max_regression 0.01 (the "
            f"champion: {registry / 'latest'} -> {champion['version']})") in decision["reasons"]
    assert decision["champion_onnx_sha256"] == champion["onnx_sha256"]
    (worse / "model_card.json").unlink()  # the new model's card missing: the champion is still named in full
    missing = decide(GateConfig(min_accuracy=0.5), export=worse, evaluate=evaluate, registry=registry)
    assert not missing["passed"]
    assert (missing["champion_version"], missing["champion_onnx_sha256"]) == (champion["version"],
                                                                              champion["onnx_sha256"])


def test_a_dvc_experiment_is_judged_against_the_champion_and_never_released(tmp_path, monkeypatch, capsys):
    """``dvc exp run`` runs the gate too: a workspace experiment replaced the champion others serve, and a queued one
    (run in a copy without the git-ignored registry) judged against none and said it released a version that was
    never in the registry."""
    registry = tmp_path / "repo" / "releases"
    first, evaluate = write_export(tmp_path / "a", accuracy=0.9)
    champion = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=first, evaluate=evaluate,
                        out=tmp_path / "g1")
    better, evaluate = write_export(tmp_path / "b", accuracy=0.95, onnx=b"better")
    copy = tmp_path / "queued"  # the copy a queued experiment runs in: no registry there
    copy.mkdir()
    monkeypatch.chdir(copy)
    monkeypatch.setenv("DVC_EXP_NAME", "rate08")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "repo"))
    decision = run_gate(GateConfig(min_accuracy=0.5, registry="releases"), export=better, evaluate=evaluate,
                        out=tmp_path / "g2")
    assert decision["passed"] and decision["released"] is False and decision["experiment"] == "rate08"
    assert decision["champion_version"] == champion["version"]  # judged against the repository's champion
    assert decision["reasons"][-1] == ("warning: not released: DVC experiment rate08 is judged, never released "
                                       "(`dvc exp apply rate08`, then `dvc repro`, releases it)")
    assert sorted(p.name for p in registry.iterdir() if not p.name.startswith(".")) == ["latest", champion["version"]]
    assert (registry / "latest").resolve().name == champion["version"] and not (copy / "releases").exists()
    report(decision)
    assert capsys.readouterr().out.splitlines()[0] == "gate: PASS: not released: DVC experiment rate08"
    assert pipeline_run._released(decision) == ", not released: DVC experiment `rate08`"  # make results' page
    worse, judged = write_export(tmp_path / "c", accuracy=0.5, onnx=b"worse")
    assert not run_gate(GateConfig(min_accuracy=0.5, registry="releases"), export=worse, evaluate=judged,
                        out=tmp_path / "g3")["passed"]  # the champion's bound holds in an experiment too
    monkeypatch.delenv("DVC_EXP_NAME")  # `dvc repro` (DVC sets DVC_ROOT for every stage): released as before
    monkeypatch.chdir(tmp_path / "repo")
    released = run_gate(GateConfig(min_accuracy=0.5, registry="releases"), export=better, evaluate=evaluate,
                        out=tmp_path / "g4")
    assert released["released"] is True and (registry / "latest").resolve().name == released["version"]


def test_a_champion_of_another_task_fails_the_gate_naming_the_difference(tmp_path):
    """Every recipe's registry was ``releases``: a Clothing1M champion (14 classes, 3x224x224) was compared by
    accuracy with a Fashion-MNIST model, which then replaced it, and serving switched tasks."""
    registry = tmp_path / "releases"
    clothing = {"class_names": [f"c{i}" for i in range(14)], "input": {"shape": ["batch", 3, 224, 224]},
                "output": {"shape": ["batch", 14]}}
    first, evaluate = write_export(tmp_path / "a", accuracy=0.75, baseline=0.7, task=clothing)
    champion = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=first, evaluate=evaluate,
                        out=tmp_path / "g1")
    assert champion["passed"]
    export, evaluate = write_export(tmp_path / "b", accuracy=0.86, onnx=b"other")
    decision = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=export, evaluate=evaluate,
                        out=tmp_path / "g2")
    assert not decision["passed"] and "version" not in decision
    assert (f"fail: the champion ({registry / 'latest'} -> {champion['version']}) is a model of another task: "
            f"class names ['cat', 'dog'] here, ['c0', 'c1', 'c2', 'c3', ... (14 in all)] in the champion; input "
            f"shape ['batch', 1, 28, 28] here, ['batch', 3, 224, 224] in the champion; output shape ['batch', 2] "
            f"here, ['batch', 14] in the champion; a registry holds one task's releases: set gate.registry to this "
            f"task's own") in decision["reasons"]
    assert (registry / "latest").readlink().name == champion["version"]


def test_a_champion_scored_on_another_test_set_fails_the_gate_unless_the_comparison_is_off(tmp_path):
    """An image folder's run with its clean test folder, then one whose test set is held out of its training images:
    the second model (0.75 on 36 noisy images) was refused against the first's 1.0 on 45 clean ones, and the other
    way round a model would pass against an unrelated number."""
    registry = tmp_path / "releases"
    card = {"class_names": ["cat", "dog"], "input": {"shape": ["batch", 1, 28, 28]}, "output": {"shape": ["batch", 2]}}
    first, evaluate = write_export(tmp_path / "a", accuracy=0.9, task={**card, "test": {"sha256": "a" * 64}})
    champion = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=first, evaluate=evaluate,
                        out=tmp_path / "g1")
    assert champion["passed"]
    export, evaluate = write_export(tmp_path / "b", accuracy=0.95, onnx=b"other", task={**card, "test": {"sha256":
                                                                                                         "b" * 64}})
    decision = decide(GateConfig(min_accuracy=0.5), export=export, evaluate=evaluate, registry=registry)
    assert not decision["passed"]
    assert (f"fail: the champion ({registry / 'latest'} -> {champion['version']}) was scored on another test set "
            f"(test sha256 bbbbbbbbbbbb... here, aaaaaaaaaaaa... in the champion), so the accuracies do not compare: "
            f"score both on one test set, or set gate.max_regression to 1 to release without comparing with the "
            f"champion") in decision["reasons"]
    assert decide(GateConfig(min_accuracy=0.5, max_regression=1.0), export=export, evaluate=evaluate,
                  registry=registry)["passed"]


def test_the_champion_gated_again_passes_without_a_new_version(tmp_path, capsys):
    """``dvc repro`` runs the gate every time (it judges against the registry, which DVC does not track): an
    unchanged pipeline gates the same ONNX bytes again, which pass and stay the one release (``released`` false,
    ``version`` the champion's), where every rerun used to add a copy and move ``latest``."""
    export, evaluate = write_export(tmp_path / "a")
    registry = tmp_path / "releases"
    config = GateConfig(min_accuracy=0.5, registry=str(registry))
    first = run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "g1")
    again = run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "g2")
    assert first["released"] is True and again["passed"] and again["released"] is False
    assert again["version"] == first["version"] == os.readlink(registry / "latest")
    assert {p.name for p in registry.iterdir() if not p.name.startswith(".")} == {first["version"], "latest"}
    assert (f"pass: the model is the champion already ({registry / 'latest'} -> {first['version']}, the same ONNX "
            f"sha256): nothing released again") in again["reasons"]
    assert json.loads((tmp_path / "g2" / "decision.json").read_text())["released"] is False
    gate.report(again)
    assert capsys.readouterr().out.startswith(f"gate: PASS: the champion already ({first['version']}): nothing "
                                              f"released again\n")


def test_a_model_released_again_within_its_versions_second_waits_for_the_next(tmp_path, monkeypatch):
    """Versions are named by the second and the model's hash: model A, then B, then A again (B is the champion, so A
    is released again) within one second met A's version and crashed with no decision written. It now waits for
    the next second."""
    a, evaluate = write_export(tmp_path / "a")
    b, _ = write_export(tmp_path / "b", onnx=b"other-bytes")
    config = GateConfig(min_accuracy=0.5, registry=str(tmp_path / "releases"))
    seconds = iter(["v20260102T030405Z", "v20260102T030405Z", "v20260102T030406Z", "v20260102T030406Z",
                    "v20260102T030407Z"])  # 3 gates, each asking in its predecessor's second, then the clock moves on
    monkeypatch.setattr(gate, "_version", lambda now, sha: f"{next(seconds)}-{sha[:8]}")
    first = run_gate(config, export=a, evaluate=evaluate, out=tmp_path / "g1")
    run_gate(config, export=b, evaluate=evaluate, out=tmp_path / "g2")
    third = run_gate(config, export=a, evaluate=evaluate, out=tmp_path / "g3")
    assert first["version"].startswith("v20260102T030405Z-") and third["version"].startswith("v20260102T030407Z-")
    assert third["released"] is True
    assert json.loads((tmp_path / "g3" / "decision.json").read_text())["version"] == third["version"]


def test_gate_relative_to_the_runs_own_baseline(tmp_path):
    """Without an absolute floor, a model passes where it matches its CE control and fails where it is worse; a
    run whose validation labels are noisy passes with the warning in its reasons."""
    noisy = {"source": "held out of the training images", "clean": False, "warning": "no clean validation set: x"}
    export, evaluate = write_export(tmp_path / "a", accuracy=0.41, baseline=0.40, validation=noisy)
    decision = decide(GateConfig(min_accuracy=0.0), export=export, evaluate=evaluate, registry=tmp_path / "r")
    assert decision["passed"] and decision["baseline_accuracy"] == 0.40
    assert "warning: no clean validation set: x" in decision["reasons"]
    export, evaluate = write_export(tmp_path / "b", accuracy=0.38, baseline=0.40)
    assert not decide(GateConfig(min_accuracy=0.0), export=export, evaluate=evaluate, registry=tmp_path / "r")["passed"]
    assert decide(GateConfig(min_accuracy=0.0, max_below_baseline=0.05), export=export, evaluate=evaluate,
                  registry=tmp_path / "r")["passed"]
    assert decide(GateConfig(min_accuracy=0.0, max_below_baseline=1.0), export=export, evaluate=evaluate,
                  registry=tmp_path / "r")["passed"]


def test_a_failed_comparison_says_how_much_one_test_image_weighs(tmp_path):
    """A gate failing by one image of a 60-image test split named no way out; its reasons now say what one image
    is worth, where evaluate recorded the test set's size, and nothing where the comparison passed."""
    export, evaluate = write_export(tmp_path / "a", accuracy=0.8, baseline=49 / 60)
    metrics = json.loads((evaluate / "metrics.json").read_text())
    (evaluate / "metrics.json").write_text(json.dumps({**metrics, "test": {"images": 60}}))
    decision = decide(GateConfig(min_accuracy=0.9), export=export, evaluate=evaluate, registry=tmp_path / "r")
    hint = ("(one of the 60 test images is 0.0167 of accuracy: a larger test split, more training, or a margin in "
            "params.yaml's gate section changes the verdict; docs/data.md)")
    assert not decision["passed"]
    assert f"fail: accuracy 0.8000, required at least min_accuracy 0.9 {hint}" in decision["reasons"]
    assert (f"fail: accuracy 0.8000, required at least the CE baseline's best epoch 0.8167 minus max_below_baseline "
            f"0.0 {hint}") in decision["reasons"]
    passed = decide(GateConfig(min_accuracy=0.5, max_below_baseline=0.02), export=export, evaluate=evaluate,
                    registry=tmp_path / "r")
    assert passed["passed"] and not any("test images" in reason for reason in passed["reasons"])


def test_missing_inputs_fail_the_gate(tmp_path):
    decision = decide(GateConfig(), export=tmp_path / "none", evaluate=tmp_path / "none", registry=tmp_path / "r")
    assert not decision["passed"] and decision["reasons"][0].startswith("fail: inputs missing or unreadable")


def test_enforce_exits_non_zero_on_a_fail(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    write_export(tmp_path / "artifacts")
    (tmp_path / "params.yaml").write_text("gate:\n  min_accuracy: 0.99\n")
    assert gate.main([]) == 0  # recorded, not enforced
    assert gate.main(["--enforce"]) == 1
    out = capsys.readouterr().out
    assert "gate: FAIL: not released" in out and not (tmp_path / "releases").exists()


def tree(root: Path) -> dict[str, tuple]:
    """Every path under ``root``: a link's target, or a file's bytes and modification time (``None`` for a folder)."""
    return {str(path.relative_to(root)): (os.readlink(path),) if path.is_symlink() else
            (path.read_bytes(), path.stat().st_mtime_ns) if path.is_file() else None
            for path in sorted(root.rglob("*"))}


def test_check_reads_the_decision_runs_nothing_and_writes_nothing(tmp_path, monkeypatch, capsys):
    """``--check`` after a gate that passed: its verdict, its reasons, exit 0; no second gate ran, no second
    release, ``latest`` and ``decision.json`` (a DVC output) unchanged byte for byte."""
    monkeypatch.chdir(tmp_path)
    write_export(tmp_path / "artifacts")
    (tmp_path / "params.yaml").write_text("gate:\n  min_accuracy: 0.5\n")
    assert gate.main([]) == 0
    released = json.loads((tmp_path / "artifacts" / "gate" / "decision.json").read_text())["version"]
    capsys.readouterr()
    before = tree(tmp_path)

    def no_gate(*args, **kwargs):
        raise AssertionError("--check ran the gate")

    monkeypatch.setattr(gate, "run", no_gate)
    monkeypatch.setattr(gate, "_release", no_gate)
    assert gate.main(["--check"]) == 0
    assert gate.main(["--check", "artifacts/gate"]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"gate: PASS: released as {released}\n  pass: clean-test accuracy")
    assert tree(tmp_path) == before
    assert sorted(p.name for p in (tmp_path / "releases").iterdir() if not p.name.startswith(".")) == [
        "latest", released]  # one release, not two


def test_check_exits_1_on_a_failed_decision(tmp_path, capsys):
    export, evaluate = write_export(tmp_path / "a")
    run_gate(GateConfig(min_accuracy=0.99, registry=str(tmp_path / "releases")), export=export, evaluate=evaluate,
             out=tmp_path / "gate")
    before = tree(tmp_path)
    assert gate.main(["--check", str(tmp_path / "gate")]) == 1
    assert gate.main([f"--check={tmp_path / 'gate'}"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("gate: FAIL: not released\n")
    assert "  fail: accuracy 0.9000, required at least min_accuracy 0.99\n" in out
    assert tree(tmp_path) == before


@pytest.mark.parametrize(("content", "found"), [
    (None, "no such file"),
    ("{not json", "a file that is unreadable or not a JSON object"),
    ("[true]", "a file that is unreadable or not a JSON object"),
    ('{"passed": "true", "reasons": []}', "passed 'true' and reasons []"),
    ('{"passed": true}', "passed True and reasons None"),
])
def test_check_of_a_missing_or_unreadable_decision_is_an_error_naming_the_file(tmp_path, capsys, content, found):
    (tmp_path / "gate").mkdir()
    if content is not None:
        (tmp_path / "gate" / "decision.json").write_text(content)
    before = tree(tmp_path)
    assert gate.main(["--check", str(tmp_path / "gate")]) == 1
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == (
        f"error: gate: {tmp_path / 'gate' / 'decision.json'}: expected the gate's decision (a JSON object with a "
        f"boolean passed and its reasons, written by `python -m components.gate`), found {found}\n")
    assert tree(tmp_path) == before


STALE = ("expected the decision of the current export and evaluate outputs, found a stale one (judged on other "
         "outputs: run the gate again, dvc repro)")


def stale_lines(export: str, evaluate: str, *, onnx: str | None = None, accuracy: str | None = None) -> list[str]:
    """What ``--check`` says of each output that differs from the decision: ``onnx``, ``accuracy`` what it found."""
    lines = []
    if onnx is not None:
        lines.append(f"{export}/model.onnx: expected sha256 {hashlib.sha256(b'onnx-bytes').hexdigest()} (the "
                     f"decision's onnx_sha256), found {onnx}")
    if accuracy is not None:
        lines.append(f"{evaluate}/metrics.json: expected teacher's accuracy 0.9 (the decision's accuracy), found "
                     f"{accuracy}")
    return lines


@pytest.mark.parametrize(("change", "onnx", "accuracy"), [
    ("rerun", "no such file", "0.41"),
    ("onnx", f"sha256 {hashlib.sha256(b'another model').hexdigest()}", None),
    ("accuracy", None, "0.41"),
    ("no-metrics", None, "no such file"),
    ("other-model", None, "none"),
], ids=["export-removed-evaluate-rerun", "other-onnx", "other-accuracy", "metrics-missing", "no-figure-for-the-model"])
def test_check_refuses_a_passing_decision_the_current_outputs_do_not_match(tmp_path, monkeypatch, capsys, change,
                                                                           onnx, accuracy):
    """A ``dvc repro`` that failed before the gate stage (DVC removed export's outputs, evaluate re-ran on a worse
    model) leaves the previous run's passing decision.json: ``--check`` printed its PASS and exited 0. It now
    compares the decision's ``onnx_sha256`` and ``accuracy`` with the export and evaluate outputs the gate reads,
    and refuses a stale decision in one line naming each file, the expected and the found (exit 1, nothing
    written)."""
    monkeypatch.chdir(tmp_path)
    write_export(tmp_path / "artifacts")
    (tmp_path / "params.yaml").write_text("gate:\n  min_accuracy: 0.5\n")
    assert gate.main([]) == 0 and gate.main(["--check"]) == 0
    capsys.readouterr()
    export, evaluate = tmp_path / "artifacts" / "export", tmp_path / "artifacts" / "evaluate"
    if change in ("rerun", "accuracy"):
        edit_json(evaluate / "metrics.json", lambda m: m["teacher"].update(accuracy=0.41))
    if change == "rerun":
        (export / "model.onnx").unlink()
    if change == "onnx":
        (export / "model.onnx").write_bytes(b"another model")
    if change == "no-metrics":
        (evaluate / "metrics.json").unlink()
    if change == "other-model":
        edit_json(evaluate / "metrics.json", lambda m: m.update(teacher={}, student={"accuracy": 0.9}))
    before = tree(tmp_path)
    assert gate.main(["--check"]) == 1
    captured = capsys.readouterr()
    problems = "; ".join(stale_lines("artifacts/export", "artifacts/evaluate", onnx=onnx, accuracy=accuracy))
    assert captured.out == "" and captured.err == f"error: gate: artifacts/gate/decision.json: {STALE}: {problems}\n"
    assert tree(tmp_path) == before


def test_check_of_another_folder_compares_with_the_outputs_its_gate_read(tmp_path, monkeypatch, capsys):
    """A gate run on other folders is checked against them (``--export``, ``--evaluate``); without them, against
    the step's own (``artifacts/export``, ``artifacts/evaluate``), which this run never wrote."""
    export, evaluate = write_export(tmp_path / "a")
    assert run_gate(GateConfig(min_accuracy=0.5, registry=str(tmp_path / "releases")), export=export,
                    evaluate=evaluate, out=tmp_path / "gate")["passed"]
    monkeypatch.chdir(tmp_path)
    assert gate.main(["--check", "gate", "--export", str(export), "--evaluate", str(evaluate)]) == 0
    assert capsys.readouterr().out.startswith("gate: PASS: released as v")
    assert gate.main(["--check", "gate"]) == 1
    problems = "; ".join(stale_lines("artifacts/export", "artifacts/evaluate", onnx="no such file",
                                     accuracy="no such file"))
    assert capsys.readouterr().err == f"error: gate: gate/decision.json: {STALE}: {problems}\n"


def test_check_refuses_the_gates_own_options(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        gate.main(["--check", str(tmp_path), "--enforce"])
    assert exit_.value.code == 2 and "unrecognized arguments: --enforce" in capsys.readouterr().err


def test_a_model_exactly_at_a_bound_passes(tmp_path):
    """0.8 - 0.1 is 0.7000000000000001 in floating point: a model exactly max_regression below the champion, or
    max_below_baseline below the CE baseline, passes; a hair below it still fails."""
    registry = tmp_path / "releases"
    loose = {"min_accuracy": 0.0, "max_below_baseline": 1.0}
    champion = write_export(tmp_path / "champion", accuracy=0.8, onnx=b"champion")
    assert run_gate(GateConfig(**loose, registry=str(registry)), export=champion[0], evaluate=champion[1],
                    out=tmp_path / "g0")["passed"]
    for accuracy, passes in ((0.7, True), (0.6999, False)):
        export, evaluate = write_export(tmp_path / f"c{accuracy}", accuracy=accuracy, baseline=0.8)
        against_champion = decide(GateConfig(**loose, max_regression=0.1), export=export, evaluate=evaluate,
                                  registry=registry)
        assert against_champion["passed"] is passes, against_champion["reasons"]
        against_baseline = decide(GateConfig(min_accuracy=0.0, max_below_baseline=0.1, max_regression=1.0),
                                  export=export, evaluate=evaluate, registry=registry)
        assert against_baseline["passed"] is passes, against_baseline["reasons"]


def test_a_model_exactly_at_min_accuracy_passes(tmp_path):
    """gate.min_accuracy is "at least": a model scoring exactly the floor passes it, a hair below fails."""
    for accuracy, passes in ((0.8, True), (0.7999, False)):
        export, evaluate = write_export(tmp_path / f"c{accuracy}", accuracy=accuracy, baseline=0.8)
        decision = decide(GateConfig(min_accuracy=0.8, max_below_baseline=1.0), export=export, evaluate=evaluate,
                          registry=tmp_path / "releases")
        assert decision["passed"] is passes, decision["reasons"]
        word = "pass" if passes else "fail"
        assert f"{word}: accuracy {accuracy:.4f}, required at least min_accuracy 0.8" in decision["reasons"]


def test_a_dangling_latest_fails_the_gate_and_releases_nothing(tmp_path):
    """``releases/latest`` pointing at a version that is gone (deleted by hand, a partial rsync) is a broken
    registry, not an empty one: the gate fails naming the champion's card, instead of releasing without comparing
    with the champion, and ``latest`` is left for a person to repair."""
    registry = tmp_path / "releases"
    registry.mkdir()
    (registry / "latest").symlink_to("v20260101T000000Z-deadbeef")
    export, evaluate = write_export(tmp_path / "c", accuracy=0.9)
    decision = decide(GateConfig(min_accuracy=0.5), export=export, evaluate=evaluate, registry=registry)
    assert not decision["passed"] and decision["champion_version"] is None
    assert (f"fail: champion {registry / 'latest' / 'model_card.json'}: expected a released model card with "
            f"metrics.accuracy, found none (point {registry / 'latest'} at a good release)") in decision["reasons"]
    assert not any(r.startswith("pass: no champion yet") for r in decision["reasons"])
    decision = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=export, evaluate=evaluate,
                        out=tmp_path / "gate")
    assert not decision["passed"] and "version" not in decision
    assert os.readlink(registry / "latest") == "v20260101T000000Z-deadbeef"
    assert sorted(p.name for p in registry.iterdir() if p.name != ".lock") == ["latest"]


def test_an_empty_latest_folder_is_no_champion_and_the_first_release_replaces_it(tmp_path):
    """An InferenceService applied before the first release mounts ``pvc://<registry>/latest``, and the kubelet
    creates the missing subPath as an empty folder: the gate must release into it as into an empty registry (before,
    every run failed naming the champion's card, for ever), while a folder with anything in it stays an error."""
    registry = tmp_path / "releases"
    (registry / "latest").mkdir(parents=True)
    export, evaluate = write_export(tmp_path / "c", accuracy=0.9)
    decision = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=export, evaluate=evaluate,
                        out=tmp_path / "gate")
    assert decision["passed"] and "pass: no champion yet" in " ".join(decision["reasons"])
    assert os.readlink(registry / "latest") == decision["version"]
    assert read_champion(registry).version == decision["version"]
    (registry / "latest").unlink()
    (registry / "latest").mkdir()
    (registry / "latest" / "notes.txt").write_text("not a release")
    with pytest.raises(ValueError, match=r"latest: expected a link to the champion's version folder, found a folder"):
        read_champion(registry)


def test_a_latest_folder_holding_a_release_fails_the_gate_and_releases_nothing(tmp_path):
    """A release copied to ``latest`` as a real folder was taken as the champion (version "latest"); the release
    then renamed its version into place and crashed replacing the folder with its link (IsADirectoryError), leaving
    an orphan version, a half-made link and no decision. It is a broken registry, refused before anything moves."""
    registry = tmp_path / "releases"
    export, evaluate = write_export(tmp_path / "c", accuracy=0.9)
    (registry / "latest").mkdir(parents=True)
    shutil.copy(export / "model_card.json", registry / "latest" / "model_card.json")
    decision = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=export, evaluate=evaluate,
                        out=tmp_path / "gate")
    assert not decision["passed"] and "version" not in decision
    assert any(r.startswith(f"fail: {registry / 'latest'}: expected a link to the champion's version folder, found a "
                            f"folder (move it to a version folder") for r in decision["reasons"]), decision["reasons"]
    assert sorted(p.name for p in registry.iterdir() if p.name != ".lock") == ["latest"]
    assert json.loads((tmp_path / "gate" / "decision.json").read_text())["passed"] is False


def test_a_champion_linked_by_path_is_named_by_its_version(tmp_path):
    """``latest`` pointed at the champion by hand (``./vX`` or an absolute path, which prune accepts) put that path
    in the decision's version, and from there in KFP's storageUri and CI's release tag: the version is the folder's
    name, however the link names it."""
    registry = tmp_path / "releases"
    export, evaluate = write_export(tmp_path / "c", accuracy=0.9)
    config = GateConfig(min_accuracy=0.5, registry=str(registry))
    version = run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "g1")["version"]
    for target in (f"./{version}", str((registry / version).resolve())):
        (registry / "latest").unlink()
        (registry / "latest").symlink_to(target)
        assert read_champion(registry).version == version
        again = run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "g2")
        assert again["passed"] and again["released"] is False
        assert again["version"] == again["champion_version"] == version


def test_versions_released_within_one_second_sort_in_release_order(tmp_path, monkeypatch):
    """Versions are named by the second and the hash, and prune keeps the newest by name: two releases in one second
    sorted by their hashes, so prune could remove the newer (the rollback target) and keep the older. A release now
    waits for the next second while its second has a version, whatever the hash."""
    registry = tmp_path / "releases"
    models = sorted((write_export(tmp_path / str(i), onnx=f"model {i}".encode()) for i in range(4)),
                    key=lambda m: hashlib.sha256((m[0] / "model.onnx").read_bytes()).hexdigest(), reverse=True)
    seconds = iter(["v20260102T030405Z", "v20260102T030405Z", "v20260102T030406Z", "v20260102T030406Z",
                    "v20260102T030407Z"])  # the second release asks in the first one's second, then the clock moves
    monkeypatch.setattr(gate, "_version", lambda now, sha: f"{next(seconds)}-{sha[:8]}")
    config = GateConfig(min_accuracy=0.5, registry=str(registry))
    released = [run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "gate")["version"]
                for export, evaluate in models[:3]]  # hashes descending: by name, the same second sorts them backwards
    assert [v[:18] for v in released] == ["v20260102T030405Z-", "v20260102T030406Z-", "v20260102T030407Z-"]
    assert sorted(released) == released
    assert gate.prune(registry, 2) == [released[0]]


def test_the_gate_fails_before_releasing_when_it_cannot_write_its_decision(tmp_path):
    """A decision folder that cannot be written failed only after the release had moved ``latest``; a rerun then
    said "released: false", and CI published nothing. It now fails first, naming the folder, and releases nothing."""
    registry = tmp_path / "releases"
    export, evaluate = write_export(tmp_path / "c", accuracy=0.9)
    (tmp_path / "blocked").write_text("a file where the gate's folder should be")
    with pytest.raises(OSError, match=r"expected a folder for the gate outputs, found a file at"):
        run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=export, evaluate=evaluate,
                 out=tmp_path / "blocked" / "gate")
    assert not registry.exists() or not read_champion(registry)


def test_a_release_is_synced_to_disk_before_latest_leads_to_it(tmp_path, monkeypatch):
    """After a power cut, ``latest`` must not lead to a version whose files never reached the disk: each released
    file is synced before the version is renamed into place, and the registry's entries after each rename."""
    registry = tmp_path / "releases"
    export, evaluate = write_export(tmp_path / "c", accuracy=0.9)
    calls, fsync, replace = [], os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: (calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}"))),
                                                 fsync(fd))[1])
    monkeypatch.setattr(os, "replace", lambda a, b: (calls.append(("replace", str(b))), replace(a, b))[1])
    version = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=export, evaluate=evaluate,
                       out=tmp_path / "gate")["version"]
    synced = [Path(path) for kind, path in calls if kind == "fsync"]
    staged = {p.name for p in synced if p.parent.name.startswith(".incoming.")}
    assert {"model.onnx", "model_card.json", "parity.json"} <= staged
    link = calls.index(("replace", str(registry / "latest")))
    assert ("fsync", str(registry.resolve())) in calls[link + 1:]
    assert os.readlink(registry / "latest") == version


def test_promote_is_a_compare_and_swap_on_latest(tmp_path):
    """A decision judged against a champion that another gate has since replaced is not promoted: without the
    check, two candidates judged against the same old champion could both be promoted, the worse one last."""
    config = GateConfig(min_accuracy=0.0, max_below_baseline=1.0, max_regression=0.0, registry=str(tmp_path / "r"))
    registry = Path(config.registry)
    champion = write_export(tmp_path / "c", accuracy=0.80, onnx=b"champion")
    better, worse = (write_export(tmp_path / name, accuracy=a, onnx=name.encode())
                     for name, a in (("better", 0.90), ("worse", 0.85)))
    assert run_gate(config, export=champion[0], evaluate=champion[1], out=tmp_path / "g0")["passed"]
    judged = {name: decide(config, export=e, evaluate=v, registry=registry)
              for name, (e, v) in (("better", better), ("worse", worse))}
    assert judged["better"]["passed"] and judged["worse"]["passed"]  # each against the old champion
    released = promote(better[0], judged["better"], registry, evaluate=better[1])
    with pytest.raises(ValueError, match=rf"latest: expected the champion the decision was judged against "
                                         rf"\({judged['worse']['champion_version']}\), found {released} \(another gate "
                                         rf"promoted since\): decide again; nothing released"):
        promote(worse[0], judged["worse"], registry, evaluate=worse[1])
    assert (registry / "latest").readlink().name == released
    assert not [p for p in registry.iterdir() if p.name.startswith(".incoming.")]


def test_a_dead_gates_staging_folder_and_link_go_at_the_next_promotion(tmp_path):
    """A gate killed while holding the lock leaves ``.incoming.*`` (its copy) and ``.latest.<pid>`` (its new
    link); the next gate, holding the lock, removes them and touches nothing else."""
    config = GateConfig(min_accuracy=0.0, max_below_baseline=1.0, registry=str(tmp_path / "r"))
    registry = Path(config.registry)
    first = write_export(tmp_path / "a", accuracy=0.80, onnx=b"first")
    assert run_gate(config, export=first[0], evaluate=first[1], out=tmp_path / "g0")["passed"]
    (registry / ".incoming.dead").mkdir()
    (registry / ".incoming.dead" / "model.onnx").write_bytes(b"half")
    (registry / ".latest.4242").symlink_to("nowhere")
    second = write_export(tmp_path / "b", accuracy=0.85, onnx=b"second")
    assert run_gate(config, export=second[0], evaluate=second[1], out=tmp_path / "g1")["passed"]
    hidden = sorted(p.name for p in registry.iterdir() if p.name.startswith("."))
    assert hidden == [".lock"] and len([p for p in registry.iterdir() if p.name.startswith("v")]) == 2


def test_promote_refuses_a_model_changed_since_it_was_judged(tmp_path):
    """The ONNX file is hashed when judged; a file swapped before the copy is never released under that hash."""
    registry = tmp_path / "releases"
    export, evaluate = write_export(tmp_path / "a")
    decision = decide(GateConfig(min_accuracy=0.5), export=export, evaluate=evaluate, registry=registry)
    (export / "model.onnx").write_bytes(b"another model")
    with pytest.raises(ValueError, match=rf"model.onnx: expected the model the gate judged \(sha256 "
                                         rf"{decision['onnx_sha256']}\), found sha256 "
                                         rf"{hashlib.sha256(b'another model').hexdigest()}; nothing released"):
        promote(export, decision, registry, evaluate=evaluate)
    assert {p.name for p in registry.iterdir()} == {".lock"}


def test_the_gate_releases_the_bytes_it_judged(tmp_path, monkeypatch):
    """``run`` copies the files into the registry's staging folder and judges that copy under the lock: a model
    swapped after the first look fails the card's hash; one swapped after the copy changes nothing released."""
    registry = tmp_path / "releases"
    config = GateConfig(min_accuracy=0.5, registry=str(registry))
    export, evaluate = write_export(tmp_path / "a")
    real_decide = gate.decide

    def swap_after_the_first_look(*args, **kwargs):
        decision = real_decide(*args, **kwargs)
        (export / "model.onnx").write_bytes(b"swapped")
        return decision

    monkeypatch.setattr(gate, "decide", swap_after_the_first_look)
    decision = run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "gate")
    assert not decision["passed"] and "version" not in decision
    assert any(r.startswith("fail: model card sha256") for r in decision["reasons"])
    assert {p.name for p in registry.iterdir()} == {".lock"}  # nothing staged is left, nothing released

    (export / "model.onnx").write_bytes(b"onnx-bytes")
    monkeypatch.setattr(gate, "decide", real_decide)
    real_stage = gate._stage

    def swap_after_the_copy(*args):
        staged = real_stage(*args)
        (export / "model.onnx").write_bytes(b"swapped")
        return staged

    monkeypatch.setattr(gate, "_stage", swap_after_the_copy)
    decision = run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "gate")
    assert decision["passed"]
    assert (registry / decision["version"] / "model.onnx").read_bytes() == b"onnx-bytes"


def test_the_registry_lock_holds_a_second_gate_back(tmp_path):
    """While one gate holds the registry's lock, another waits (and gives up after its timeout, naming the lock)."""
    import threading  # noqa: PLC0415

    registry = tmp_path / "releases"
    export, evaluate = write_export(tmp_path / "a")
    outcome = {}
    with gate.registry_lock(registry):
        with pytest.raises(TimeoutError, match=r"releases/.lock: expected to take the registry's lock within 0.2 s, "
                                               r"found another gate holding it all that time"), \
                gate.registry_lock(registry, timeout=0.2):
            pass
        waiting = threading.Thread(target=lambda: outcome.update(run_gate(
            GateConfig(min_accuracy=0.5, registry=str(registry)), export=export, evaluate=evaluate,
            out=tmp_path / "gate")))
        waiting.start()
        waiting.join(0.5)
        assert waiting.is_alive() and not (registry / "latest").exists()  # judged, waiting to promote
    waiting.join(10)
    assert outcome["passed"] and (registry / "latest").readlink().name == outcome["version"]


def test_a_registry_that_is_a_file_is_refused_before_anything_is_locked(tmp_path):
    (tmp_path / "releases").write_text("x")
    with pytest.raises(NotADirectoryError, match=r"releases: expected a registry folder, found a file"), \
            gate.registry_lock(tmp_path / "releases"):
        pass


def test_detection_summary_by_hand():
    """Shared by the evaluate step's label-issue list and the quality study's cleanlab column."""
    noisy = np.array([True, True, False, False])
    summary = detection_summary(np.array([0.9, 0.2, 0.8, 0.1]), np.array([True, False, True, False]), noisy)
    assert summary == {"estimated_issues": 2, "estimated_noise_rate": 0.5, "true_noise_rate": 0.5,
                       "precision": 0.5, "recall": 0.5, "f1": 0.5, "auroc": 0.75}  # 3 of 4 pairs ranked right


def test_the_roc_curve_has_the_auroc_as_its_area_and_the_reliability_rows_give_the_ece():
    from components.evaluate import reliability_rows, roc_rows  # noqa: PLC0415

    rng = np.random.default_rng(1)
    scores, positives = rng.integers(0, 6, 300).astype(float), rng.random(300) < 0.3  # many ties
    points = roc_rows(scores, positives)
    fpr, tpr = (np.array([p[k] for p in points]) for k in ("fpr", "tpr"))
    assert points[0] == {"fpr": 0.0, "tpr": 0.0} and points[-1] == {"fpr": 1.0, "tpr": 1.0}
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    assert np.trapezoid(tpr, fpr) == pytest.approx(auroc(scores, positives), abs=1e-5)
    probs = rng.dirichlet(np.ones(4), 500)
    labels = rng.integers(0, 4, 500)
    rows = reliability_rows(probs, labels, 10)
    assert sum(r["count"] for r in rows) == 500
    ece = sum(r["count"] / 500 * abs(r["accuracy"] - r["confidence"]) for r in rows)
    assert ece == pytest.approx(expected_calibration_error(probs, labels, 10), abs=1e-5)


def test_the_cards_commit_is_dirty_for_an_edited_file_not_for_dvc_lock(tmp_path, monkeypatch):
    """``dvc repro`` rewrites the tracked dvc.lock after every stage, before export asks git: a clean checkout's
    card said ``<sha>-dirty``. An edit of any other tracked file still marks it, from any folder of the repo."""
    from components.export import git_commit  # noqa: PLC0415

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    (tmp_path / "sub").mkdir()
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    (tmp_path / "sub" / "code.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@e", "commit", "-qm", "c")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True,
                          check=True).stdout.strip()
    monkeypatch.chdir(tmp_path / "sub")
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\nstages: {}\n")
    (tmp_path / "sub" / "untracked.py").write_text("y = 1\n")  # not a tracked file: the commit is still clean
    assert git_commit() == head
    (tmp_path / "sub" / "code.py").write_text("x = 2\n")
    assert git_commit() == head + "-dirty"


def test_a_test_set_held_out_of_labels_as_given_is_not_called_clean(tmp_path):
    """An image folder without test/ holds its test set out of the user's own labels: evaluate, the gate and its
    reasons called its accuracy "clean-test accuracy" though it is agreement with noisy labels. Now it says so and
    warns; a dataset's own test split is still clean."""
    from components.evaluate import test_record  # noqa: PLC0415

    ingest = tmp_path / "ingest"
    ingest.mkdir()
    np.savez(ingest / "test.npz", images=np.zeros((2, 4, 4, 1), np.uint8), labels=np.array([0, 1]))
    write_manifest(ingest, ["a", "b"], {"test": 2}, image_shape=(4, 4, 1))
    own = test_record({"test_source": "the dataset's test split", "counts": {"test": 2}}, ingest)
    assert own["clean"] is True and "warning" not in own and len(own["sha256"]) == 64 and own["images"] == 2
    held = test_record({"test_source": "held out of the training images (test_fraction 0.2), labelled as given",
                        "counts": {"test": 2}}, ingest)
    assert held["clean"] is False and held["warning"].startswith(
        "the test set was held out of the training images (test_fraction 0.2), labelled as given: its accuracy is "
        "agreement with noisy labels, not clean accuracy")
    export, evaluate = write_export(tmp_path / "a")
    metrics = json.loads((evaluate / "metrics.json").read_text())
    (evaluate / "metrics.json").write_text(json.dumps({**metrics, "test": held}))
    decision = decide(GateConfig(min_accuracy=0.5), export=export, evaluate=evaluate, registry=tmp_path / "r")
    assert decision["passed"]
    assert decision["reasons"][0] == (f"pass: test accuracy (labels as given, not clean) of the exported model "
                                      f"(teacher) is 0.9 in {evaluate / 'metrics.json'}")
    assert f"warning: {held['warning']}" in decision["reasons"]


def fake_registry(root, count: int, latest: int) -> list[str]:
    """``count`` releases, a second apart, ``latest`` pointing at the one of index ``latest``; their names."""
    versions = [f"v20261201T0000{i:02d}Z-{i:08x}" for i in range(count)]
    for version in versions:
        (root / version).mkdir(parents=True)
        (root / version / "model_card.json").write_text(json.dumps({"metrics": {"accuracy": 0.9}}))
    (root / "latest").symlink_to(versions[latest])
    return versions


def test_prune_keeps_the_newest_versions_and_the_champion_and_touches_nothing_else(tmp_path, capsys):
    """Nothing removed a release (every changed model adds one): ``--prune KEEP`` keeps the KEEP newest and the
    champion, even an old one (``latest`` moved back to roll out an earlier model), and only version folders."""
    registry = tmp_path / "releases"
    versions = fake_registry(registry, 6, latest=1)
    (registry / "notes").mkdir()
    (registry / f"{versions[0]}.bak").mkdir()  # named like a version, but not one
    leftover = registry / ".removing.v20250101T000000Z-deadbeef"  # a killed prune's, of a version gone since
    leftover.mkdir()
    (leftover / "model.onnx").write_bytes(b"onnx")
    assert gate.main(["--prune", "2", "--registry", str(registry)]) == 0
    assert sorted(p.name for p in registry.iterdir() if p.name != ".lock") == sorted(
        [versions[1], versions[4], versions[5], "latest", "notes", f"{versions[0]}.bak"])
    out = capsys.readouterr().out
    assert f"gate: removed {registry / versions[0]}" in out and "gate: 3 version(s) removed" in out
    assert os.readlink(registry / "latest") == versions[1] and gate.read_champion(registry).version == versions[1]
    assert gate.prune(registry, 3) == []  # the champion and the two newest are all that is left
    (registry / "latest").unlink()
    (registry / "latest").symlink_to((registry / versions[1]).resolve())  # pointed at by hand, an absolute path
    assert gate.prune(registry, 1) == [versions[4]]  # the champion kept, however the link names it


def test_prune_renames_each_version_before_deleting_it_and_waits_for_the_registry_lock(tmp_path, monkeypatch):
    """A version half deleted is never a release (``.removing.<version>`` is hidden); and a prune never runs while a
    gate holds the lock (its first act, removing leftovers, would delete the gate's staging folder)."""
    registry = tmp_path / "releases"
    fake_registry(registry, 3, latest=2)
    deleted, rmtree = [], shutil.rmtree
    monkeypatch.setattr(gate.shutil, "rmtree", lambda path, *a, **k: (deleted.append(Path(path).name),
                                                                       rmtree(path, *a, **k)))
    with gate.registry_lock(registry):
        staging = registry / ".incoming.live"  # a gate promoting now
        staging.mkdir()
        pruning = threading.Thread(target=gate.prune, args=(registry, 1), daemon=True)
        pruning.start()
        pruning.join(1.0)
        assert pruning.is_alive() and staging.is_dir() and not deleted
        staging.rmdir()
    pruning.join(30)
    assert not pruning.is_alive() and len(deleted) == 2 and all(n.startswith(".removing.v") for n in deleted)


def test_prune_reads_the_registry_from_params_yaml_and_says_why_it_cannot(tmp_path, monkeypatch, capsys):
    registry = tmp_path / "elsewhere"
    versions = fake_registry(registry, 3, latest=2)
    (tmp_path / "params.yaml").write_text("gate:\n  registry: elsewhere\n")
    monkeypatch.chdir(tmp_path)
    assert gate.main(["--prune", "1"]) == 0
    assert sorted(p.name for p in registry.iterdir() if p.name.startswith("v")) == [versions[2]]

    def denied(*_):
        raise PermissionError(13, "Permission denied", str(registry / versions[2]))

    monkeypatch.setattr(gate, "prune", denied)
    assert gate.main(["--prune", "1"]) == 1
    assert capsys.readouterr().err.startswith(f"error: gate: [Errno 13] Permission denied: '{registry}")


def test_prune_refuses_what_it_cannot_do_safely(tmp_path, capsys):
    registry = tmp_path / "releases"
    versions = fake_registry(registry, 3, latest=0)
    with pytest.raises(ValueError, match="keep: expected at least 1 version kept, found 0"):
        gate.prune(registry, 0)
    (registry / versions[0] / "model_card.json").unlink()  # latest leads to no release: a broken registry
    assert gate.main(["--prune", "1", "--registry", str(registry)]) == 1
    assert "expected a released model card with metrics.accuracy" in capsys.readouterr().err
    assert all((registry / v).is_dir() for v in versions)  # nothing removed
    assert gate.main(["--prune", "1", "--registry", str(tmp_path / "nothing")]) == 1
    assert "nothing: expected a registry folder, found none" in capsys.readouterr().err


def test_ece_and_reliability_bins_are_closed_on_the_right():
    """Guo et al.'s bins ((m-1)/M, m/M]: a confidence exactly on an edge belongs to the bin below it, in the ECE and
    in the reliability rows alike (0.75 with 4 bins is in (0.5, 0.75], apart from 0.9 in (0.75, 1])."""
    from components.evaluate import reliability_rows  # noqa: PLC0415

    probs, labels = np.array([[0.75, 0.25], [0.9, 0.1]]), np.array([0, 1])
    assert expected_calibration_error(probs, labels, 4) == pytest.approx(0.5 * 0.25 + 0.5 * 0.9)
    assert reliability_rows(probs, labels, 4) == [{"confidence": 0.75, "accuracy": 1.0, "count": 1},
                                                  {"confidence": 0.9, "accuracy": 0.0, "count": 1}]


def test_per_class_share_is_the_flagged_part_of_that_class_labels():
    """``per_class``'s share is flagged / labels of the given class (1 of 4 "a" labels flagged: 0.25)."""
    given = np.array([0, 0, 0, 0, 1, 1])
    flagged = np.array([True, False, False, False, True, True])
    assert per_class_issues(given, flagged, ["a", "b"]) == {"a": {"labels": 4, "flagged": 1, "share": 0.25},
                                                            "b": {"labels": 2, "flagged": 2, "share": 1.0}}


def test_the_card_says_whether_the_temperature_was_fitted_on_clean_or_noisy_labels():
    """``calibration.fitted_on`` names the validation labels the temperature was fitted on: clean, or noisy."""
    from components.export import calibrate  # noqa: PLC0415
    from model.trainer import Data  # noqa: PLC0415

    torch.manual_seed(0)
    net = SmallCNN(4, image_size=8, width=4, hidden=8).eval()
    val = Data(torch.randn(16, 1, 8, 8), torch.arange(16) % 4)
    assert calibrate(net, val, bins=5, clean=True)["fitted_on"] == "clean validation set (16 images)"
    assert calibrate(net, val, bins=5, clean=False)["fitted_on"] == "noisy validation set (16 images)"


def test_the_baseline_comparison_turned_off_needs_no_baseline_and_older_metrics_still_give_one(tmp_path):
    """``max_below_baseline: 1`` is "no comparison": a run whose metrics hold no CE baseline passes without one; and
    metrics written before ``baseline_best_epoch`` give the baseline's ``best_epoch_accuracy`` to compare with."""
    export, evaluate = write_export(tmp_path / "a", baseline=None)
    decision = decide(GateConfig(min_accuracy=0.5, max_below_baseline=1.0), export=export, evaluate=evaluate,
                      registry=tmp_path / "r")
    assert decision["passed"] and decision["baseline_accuracy"] is None, decision["reasons"]
    metrics = json.loads((evaluate / "metrics.json").read_text())
    (evaluate / "metrics.json").write_text(json.dumps({"teacher": metrics["teacher"],
                                                       "baseline": {"best_epoch_accuracy": 0.92}}))
    decision = decide(GateConfig(min_accuracy=0.5), export=export, evaluate=evaluate, registry=tmp_path / "r")
    assert not decision["passed"] and decision["baseline_accuracy"] == 0.92


def test_the_decision_records_the_bounds_and_the_model_it_judged(tmp_path):
    """decision.json is a public contract: the three bounds as configured, the model's name and hash, and the
    champion it was judged against."""
    registry = tmp_path / "releases"
    first, evaluate = write_export(tmp_path / "a", accuracy=0.9, onnx=b"first")
    champion = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=first, evaluate=evaluate,
                        out=tmp_path / "g1")
    export, evaluate = write_export(tmp_path / "b", accuracy=0.95, onnx=b"second")
    config = GateConfig(min_accuracy=0.3, max_below_baseline=0.2, max_regression=0.1, registry=str(registry))
    run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "g2")
    decision = json.loads((tmp_path / "g2" / "decision.json").read_text())
    assert decision["passed"] and decision["released"] is True
    assert (decision["min_accuracy"], decision["max_below_baseline"], decision["max_regression"]) == (0.3, 0.2, 0.1)
    assert (decision["model"], decision["onnx_sha256"]) == ("teacher", hashlib.sha256(b"second").hexdigest())
    assert (decision["champion_version"], decision["champion_accuracy"]) == (champion["version"], 0.9)
    assert decision["accuracy"] == 0.95 and decision["baseline_accuracy"] == 0.85


def test_a_champion_of_another_task_fails_even_with_the_champion_comparison_off(tmp_path):
    """``max_regression: 1`` turns off the accuracy comparison, not the task check: serving would switch tasks."""
    registry = tmp_path / "releases"
    clothing = {"class_names": [f"c{i}" for i in range(14)], "input": {"shape": ["batch", 3, 224, 224]},
                "output": {"shape": ["batch", 14]}}
    first, evaluate = write_export(tmp_path / "a", accuracy=0.75, baseline=0.7, task=clothing)
    assert run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=first, evaluate=evaluate,
                    out=tmp_path / "g1")["passed"]
    export, evaluate = write_export(tmp_path / "b", accuracy=0.86, onnx=b"other")
    decision = decide(GateConfig(min_accuracy=0.5, max_regression=1.0), export=export, evaluate=evaluate,
                      registry=registry)
    assert not decision["passed"] and any("is a model of another task" in r for r in decision["reasons"])


def test_a_released_version_is_named_as_prune_recognises_it_and_readable_by_all(tmp_path):
    """``v<UTC second>-<8 hex digits of the sha256>``: the name ``prune`` matches (a release it did not recognise
    would never be pruned), holding the four files, its folder readable by the predictor's user as well."""
    registry = tmp_path / "releases"
    export, evaluate = write_export(tmp_path / "a")
    decision = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=export, evaluate=evaluate,
                        out=tmp_path / "gate")
    version = decision["version"]
    assert gate.VERSION.fullmatch(version) and version.endswith("-" + hashlib.sha256(b"onnx-bytes").hexdigest()[:8])
    release = registry / version
    assert sorted(p.name for p in release.iterdir()) == ["decision.json", "model.onnx", "model_card.json",
                                                         "parity.json"]
    assert json.loads((release / "decision.json").read_text())["version"] == version
    assert release.stat().st_mode & 0o755 == 0o755


def test_prune_takes_its_options_as_key_value_and_defaults_to_releases_without_a_params_file(tmp_path, monkeypatch,
                                                                                              capsys):
    """``--prune=KEEP`` is ``--prune KEEP``; with no params.yaml in the working folder the registry is ``releases``
    (``--registry``'s help: "default: gate.registry of params.yaml, else releases")."""
    versions = fake_registry(tmp_path / "releases", 3, latest=2)
    monkeypatch.chdir(tmp_path)
    assert gate.main(["--prune=2"]) == 0, capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "releases").iterdir() if p.name.startswith("v")) == versions[1:]


def test_export_chooses_the_model_with_the_higher_validation_accuracy(tmp_path):
    """The teacher unless the CE baseline's best epoch (``model.pt``, not its last epoch ``final.pt``) is better on
    validation."""
    from components.export import choose  # noqa: PLC0415

    for folder in ("baseline", "mlnt"):
        (tmp_path / folder).mkdir()
    for base, teacher, want in ((0.80, 0.90, ("teacher", tmp_path / "mlnt" / "teacher.pt", 0.90)),
                                (0.95, 0.90, ("baseline_best_epoch", tmp_path / "baseline" / "model.pt", 0.95))):
        (tmp_path / "baseline" / "metrics.json").write_text(json.dumps({"val_accuracy": base}))
        (tmp_path / "mlnt" / "metrics.json").write_text(json.dumps({"val_accuracy": teacher}))
        assert choose(tmp_path / "baseline", tmp_path / "mlnt") == want


@pytest.mark.parametrize(("values", "message"), [
    ({"parity_images": 0}, "parity_images, max_abs_diff: expected >= 1 and > 0, found 0, 0.0001"),
    ({"max_abs_diff": 0.0}, "parity_images, max_abs_diff: expected >= 1 and > 0, found 256, 0.0"),
    ({"workers": -1}, "workers: expected >= 0, found -1"),
])
def test_export_refuses_a_parity_check_that_cannot_pass_or_check_anything(values, message):
    from components.export import ExportConfig  # noqa: PLC0415

    with pytest.raises(ValueError, match=re.escape(message)):
        ExportConfig(**values)
    assert ExportConfig(parity_images=1, max_abs_diff=1e-9, workers=0).workers == 0


def test_the_card_records_what_each_step_ran_with_over_the_params_file(caplog):
    """A step whose outputs record no config keeps the file's section; one that records its config replaces it,
    with a warning naming only the settings the file gives otherwise (a key the file leaves out is no difference)."""
    from components.export import ran_with  # noqa: PLC0415

    given = {"noise": {"rate": 0.3, "seed": 0}, "mlnt": {"epochs": 2}}
    with caplog.at_level("WARNING"):
        recorded = ran_with(given, {"noise": {"rate": 0.6, "seed": 0, "kind": "symmetric"}, "mlnt": None})
    assert recorded == {"noise": {"rate": 0.6, "seed": 0, "kind": "symmetric"}, "mlnt": {"epochs": 2}}
    assert caplog.text.count("noise.") == 1 and "noise.rate 0.6 (the params file: 0.3)" in caplog.text


def test_prune_never_falls_back_to_another_registry_over_a_broken_params_file(tmp_path, monkeypatch, capsys):
    """params.yaml names ``gate.registry: mine`` but fails to load (a misspelt section): ``--prune`` must not prune
    ``releases`` instead; it refuses, naming the params file, and removes nothing (exit 2, the step's for a config
    error)."""
    mine, releases = fake_registry(tmp_path / "mine", 3, latest=2), fake_registry(tmp_path / "releases", 3, latest=2)
    (tmp_path / "params.yaml").write_text("gate:\n  registry: mine\nnosie:\n  rate: 0.3\n")
    monkeypatch.chdir(tmp_path)
    assert gate.main(["--prune", "1"]) == 2
    assert "params.yaml" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "releases").iterdir() if p.name.startswith("v")) == releases
    assert sorted(p.name for p in (tmp_path / "mine").iterdir() if p.name.startswith("v")) == mine


@pytest.mark.parametrize(("gate_section", "message"), [
    ("registy: mine", "params.yaml: gate: unknown key(s) registy. Valid: max_below_baseline, max_regression, "
                      "min_accuracy, registry; or name the registry: --registry DIR"),
    ("registry: ''", "params.yaml: gate: registry: expected the registry folder, found ''"),
    ("registry: 5", "params.yaml: gate.registry: expected str, found 5 (int)"),
    ("registry: mine\n  min_accuracy: 2", "params.yaml: gate: min_accuracy: expected a number in [0, 1], found 2.0"),
], ids=["misspelt-key", "empty", "number", "another-key-invalid"])
def test_prune_refuses_a_gate_section_the_gate_step_refuses(tmp_path, monkeypatch, capsys, gate_section, message):
    """``--prune`` read ``gate.registry`` as ``str(gate.get("registry") or "releases")``: a misspelt key or an empty
    one pruned ``releases``, a number the folder ``5``, where the gate step refuses the file. It refuses as the step
    does (exit 2, one line naming the field) and removes nothing from either registry."""
    mine, releases = fake_registry(tmp_path / "mine", 3, latest=2), fake_registry(tmp_path / "releases", 3, latest=2)
    (tmp_path / "params.yaml").write_text(f"gate:\n  {gate_section}\n")
    monkeypatch.chdir(tmp_path)
    assert gate.main(["--prune", "1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: gate: {message}") and err.count("\n") == 1, err
    assert gate.main([]) == 2  # the step refuses the same file
    assert sorted(p.name for p in (tmp_path / "releases").iterdir() if p.name.startswith("v")) == releases
    assert sorted(p.name for p in (tmp_path / "mine").iterdir() if p.name.startswith("v")) == mine


def test_a_class_never_predicted_right_has_f1_zero_and_one_in_neither_labels_nor_predictions_is_left_out():
    """Per class c: precision and recall of ``predicted == c``; a class with no correct prediction (2 here) has F1 0
    and counts in the mean; a class neither in the labels nor predicted (3) has no accuracy (None) and is left out of
    the mean, as sklearn's default labels."""
    probs = np.eye(4)[[0, 1, 1, 1]] * 0.7 + 0.075
    m = classification_metrics(probs, np.array([0, 0, 1, 2]), 4, bins=10)
    assert m["per_class_accuracy"] == [0.5, 1.0, 0.0, None]
    # class 0: precision 1, recall 1/2; class 1: precision 1/3, recall 1; class 2: F1 0
    assert m["macro_f1"] == pytest.approx((2 / 3 + 0.5 + 0.0) / 3)


def test_every_label_issue_row_describes_the_sample_it_names():
    """Each row of ``label_issues.csv`` carries its own sample's given label, suggested label (its likeliest class
    other than the given one), score and injected noise, and ``rank`` counts from 1 in the order of the scores (the
    rows are not in index order here); the first ``estimated_issues`` rows are flagged."""
    rng = np.random.default_rng(3)
    probs = rng.dirichlet(np.ones(3), 30)
    given, noisy = rng.integers(0, 3, 30), rng.random(30) < 0.3
    rows, summary = label_issues(probs, given, noisy)
    assert [r["index"] for r in rows] != list(range(30))
    assert [r["rank"] for r in rows] == list(range(1, 31))
    for row in rows:
        i = row["index"]
        others = [c for c in range(3) if c != given[i]]
        assert (row["given_label"], row["suggested_label"], row["injected_noise"]) == (
            given[i], max(others, key=lambda c: probs[i, c]), noisy[i]), row
        assert row["score"] == pytest.approx(1 - probs[i, given[i]], abs=1e-6), row
    assert [r["flagged"] for r in rows] == [r["rank"] <= summary["estimated_issues"] for r in rows]
    assert [r["score"] for r in rows] == sorted((r["score"] for r in rows), reverse=True)


def test_promote_refuses_a_decision_whose_champion_is_no_longer_latest(tmp_path):
    """The compare-and-swap holds both ways: a decision judged with no champion is not promoted over one released
    since, and one judged against a champion is not promoted once ``latest`` no longer leads to it (moved aside by
    hand): nothing is released either time."""
    config = GateConfig(min_accuracy=0.0, max_below_baseline=1.0, registry=str(tmp_path / "r"))
    registry = Path(config.registry)
    first, second = (write_export(tmp_path / name, accuracy=a, onnx=name.encode())
                     for name, a in (("first", 0.8), ("second", 0.9)))
    before_any = decide(config, export=second[0], evaluate=second[1], registry=registry)
    champion = run_gate(config, export=first[0], evaluate=first[1], out=tmp_path / "g0")["version"]
    with pytest.raises(ValueError, match=rf"judged against \(none\), found {champion} \(another gate"):
        promote(second[0], before_any, registry, evaluate=second[1])
    judged = decide(config, export=second[0], evaluate=second[1], registry=registry)
    (registry / "latest").unlink()
    with pytest.raises(ValueError, match=rf"judged against \({champion}\), found none \(another gate"):
        promote(second[0], judged, registry, evaluate=second[1])
    assert sorted(p.name for p in registry.iterdir() if p.name != ".lock") == [champion]


def test_promote_waits_for_the_registry_lock_and_removes_a_dead_gates_leftovers(tmp_path):
    """``promote`` on its own takes the registry's lock (created with its parent folders) before it reads the
    champion, and, holding it, removes what a killed gate or prune left (``.incoming.*``, ``.removing.*``,
    ``.latest.<pid>``)."""
    registry = tmp_path / "nested" / "releases"
    export, evaluate = write_export(tmp_path / "a")
    decision = decide(GateConfig(min_accuracy=0.5), export=export, evaluate=evaluate, registry=registry)
    outcome = {}
    with gate.registry_lock(registry):
        for leftover in (".incoming.dead", ".removing.v20250101T000000Z-deadbeef"):
            (registry / leftover).mkdir()
        (registry / ".latest.4242").symlink_to("nowhere")
        promoting = threading.Thread(target=lambda: outcome.update(
            version=promote(export, decision, registry, evaluate=evaluate)))
        promoting.start()
        promoting.join(0.5)
        assert promoting.is_alive() and not (registry / "latest").is_symlink()
    promoting.join(10)
    assert os.readlink(registry / "latest") == outcome["version"]
    assert sorted(p.name for p in registry.iterdir()) == [".lock", "latest", outcome["version"]]


def test_prune_touches_only_version_folders_and_lists_the_removed_oldest_first(tmp_path):
    """Only folders named exactly as versions are removed: a file or a link with a version's name, and a folder
    whose hash part is not 8 hex digits, stay as they are (the link's target too); ``prune`` returns the versions
    it removed, oldest first."""
    registry = tmp_path / "releases"
    versions = fake_registry(registry, 4, latest=3)
    outside = tmp_path / "elsewhere" / "v20240101T000000Z-0000000a"
    outside.mkdir(parents=True)
    (registry / "v20240101T000000Z-0000000a").symlink_to(outside)
    (registry / "v20240101T000000Z-0000000b").write_text("not a release")
    (registry / "v20240101T000000Z-0000000c0").mkdir()
    assert gate.prune(registry, 1) == versions[:3]
    assert sorted(p.name for p in registry.iterdir() if p.name != ".lock") == sorted(
        [versions[3], "latest", "v20240101T000000Z-0000000a", "v20240101T000000Z-0000000b",
         "v20240101T000000Z-0000000c0"])
    assert outside.is_dir() and (registry / "v20240101T000000Z-0000000a").is_symlink()


def test_enforce_is_read_anywhere_and_a_config_error_keeps_its_exit_code(tmp_path, monkeypatch, capsys):
    """``--enforce`` after ``--set`` still turns a fail into exit 1; a config error under ``--enforce`` is still 2,
    and ``--prune`` is recognised after ``--registry``."""
    monkeypatch.chdir(tmp_path)
    write_export(tmp_path / "artifacts")
    (tmp_path / "params.yaml").write_text("gate:\n  min_accuracy: 0.5\n")
    assert gate.main(["--set", "gate.min_accuracy=0.99", "--enforce"]) == 1
    assert gate.main(["--enforce", "--set", "gate.min_accuracy=2"]) == 2
    assert "min_accuracy" in capsys.readouterr().err
    versions = fake_registry(tmp_path / "releases", 3, latest=2)
    assert gate.main(["--registry", str(tmp_path / "releases"), "--prune", "1"]) == 0
    assert sorted(p.name for p in (tmp_path / "releases").iterdir() if p.name.startswith("v")) == versions[2:]


def test_parity_records_the_largest_difference_and_passes_at_the_bound(exported):
    """``max_abs_diff`` is the largest difference of any probability (not a mean), ``max_abs_diff_allowed`` the
    bound given, and a difference exactly at the bound is within it."""
    net, onnx_bytes = exported
    images = torch.randn(256, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    got = ort.InferenceSession(onnx_bytes, providers=["CPUExecutionProvider"]).run(None, {"images": images.numpy()})[0]
    with torch.no_grad():
        want = Probabilities(net).eval()(images).numpy()
    report = parity(onnx_bytes, net, images, 1e-4)
    assert report == {"images": 256, "max_abs_diff": float(np.abs(got - want).max()), "argmax_agreement": 1.0,
                      "max_abs_diff_allowed": 1e-4, "passed": True}
    assert report["max_abs_diff"] > 0 and parity(onnx_bytes, net, images, report["max_abs_diff"])["passed"] is True


def test_parity_fails_when_a_single_argmax_differs():
    """Every argmax must agree: one image in a hundred answered with another class fails the check, however close
    the probabilities."""
    exported_net, other = (torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 2)).eval() for _ in range(2))
    with torch.no_grad():
        for module, bias in ((exported_net, 0.0), (other, 1e-4)):
            module[1].weight.zero_()
            module[1].weight[0, 0] = 1e-3  # class 0 for a positive first pixel, a tie (class 0) for a zero one
            module[1].bias.copy_(torch.tensor([0.0, bias]))  # the other model breaks the tie for class 1
    images = torch.zeros(100, 1, 8, 8)
    images[1:, 0, 0, 0] = 1.0
    report = parity(to_onnx(exported_net, images, {}), other, images, 1e-3)
    assert report["argmax_agreement"] == 0.99 and report["max_abs_diff"] <= 1e-3 and report["passed"] is False


def test_the_exported_graph_keeps_no_metadata_of_the_exporter(exported):
    """``strip_provenance``: no node, value or graph of the file keeps the exporter's metadata (stack traces, FX
    nodes, module paths, its signature); the model's own metadata stays."""
    _, onnx_bytes = exported
    graph = onnx.load_from_string(onnx_bytes).graph
    kept = {(type(item).__name__, p.key) for item in (*graph.node, *graph.value_info, *graph.input, *graph.output,
                                                     *graph.initializer, graph) for p in item.metadata_props}
    assert kept == set()
    assert {p.key for p in onnx.load_from_string(onnx_bytes).metadata_props} == {"class_names"}


def test_the_onnx_metadata_holds_the_normalisation_and_the_model_chosen():
    metadata = onnx_metadata(list("ab"), IMAGENET, "baseline_best_epoch")
    assert json.loads(metadata["normalisation"]) == IMAGENET and json.loads(metadata["class_names"]) == ["a", "b"]
    assert metadata["model"] == "baseline_best_epoch"


def test_the_training_class_distribution_refuses_a_label_outside_the_classes():
    from components.export import class_distribution  # noqa: PLC0415

    assert class_distribution(np.array([0, 1, 1, 1]), 2) == [0.25, 0.75]
    for labels in ([0, 2], [-1, 0], []):
        with pytest.raises(ValueError, match=r"train_class_distribution: expected labels in 0\.\.1"):
            class_distribution(np.array(labels), 2)


def test_the_params_digest_is_canonical_json_and_none_records_none():
    """``params_sha256`` is the sha256 of the params as canonical JSON (keys sorted, no spaces), which anyone can
    recompute from the card; ``run`` without params records none (``made_by`` and the digest both None)."""
    from components.export import made_by, params_digest  # noqa: PLC0415

    assert params_digest({"b": {"y": 1, "x": [1, 2]}, "a": 0.5}) == hashlib.sha256(
        b'{"a":0.5,"b":{"x":[1,2],"y":1}}').hexdigest()
    assert made_by(None) is None and params_digest(None) is None


def test_settings_that_cannot_change_the_result_stay_as_the_file_gives_them(caplog):
    """The KFP pipeline trains with ``device: cuda`` where params.yaml says ``auto``: the card recorded ``cuda``,
    warned of a change nobody made, and its params_sha256 differed from ``dvc repro``'s for the same settings."""
    from components.export import params_digest, ran_with  # noqa: PLC0415

    given = {"mlnt": {"device": "auto", "workers": 2, "epochs": 3}}
    with caplog.at_level("WARNING"):
        recorded = ran_with(given, {"mlnt": {"device": "cuda", "workers": 0, "epochs": 3, "progress": False}})
    assert recorded == {"mlnt": {"device": "auto", "workers": 2, "epochs": 3, "progress": False}}
    assert "the model card records" not in caplog.text
    assert params_digest(ran_with(given, {"mlnt": {"device": "cuda", "workers": 2, "epochs": 3}})) == \
        params_digest(given)


def test_a_step_that_recorded_its_config_replaces_the_files_section_whole():
    """A section the step's outputs record replaces the file's: a key only the file has did not run."""
    from components.export import ran_with  # noqa: PLC0415

    assert ran_with({"noise": {"rate": 0.3, "gone": 1}}, {"noise": {"rate": 0.3}}) == {"noise": {"rate": 0.3}}


def test_a_sharded_manifest_without_a_crop_is_refused_with_the_transform_error():
    with pytest.raises(ValueError, match="expected a transform with resize and crop for a sharded dataset"):
        input_transform({"format": "shards", "transform": {"resize": 256}}, 224)


def test_the_training_class_distribution_has_a_share_for_every_class():
    """Classes above the largest label given still get their share, 0: one per class, in class order."""
    from components.export import class_distribution  # noqa: PLC0415

    assert class_distribution(np.array([0, 1, 1, 1]), 4) == [0.25, 0.75, 0.0, 0.0]


def test_the_transform_note_names_the_corner_and_the_draft_decoding_each_dataset_had():
    shards = input_transform({"format": "shards", "transform": {"resize": 256, "crop": 224}}, 224)["note"]
    folder = input_transform({"dataset": "imagefolder", "format": "arrays"}, 64)["note"]
    assert "its corner at round((side - crop) / 2), halves to even" in shards
    assert "a JPEG decoded at the draft scale no smaller than 256" in shards
    assert folder.endswith("its corner at (side - crop) // 2") and "draft" not in folder


def _logit_sets(correct: float, n: int, seed: int = 0, jitter: float = 0.0):
    """A network that returns its input (``nn.Flatten``), and validation and test sets of ``n`` logit rows over 4
    classes, the top one the label a share ``correct`` of the time, two logits apart, plus normal noise of standard
    deviation ``jitter``."""
    from model.trainer import Data  # noqa: PLC0415

    def draw(generator):
        labels = torch.randint(0, 4, (n,), generator=generator)
        right = torch.rand(n, generator=generator) < correct
        top = torch.where(right, labels, (labels + 1) % 4)
        logits = torch.nn.functional.one_hot(top, 4).float() * 2.0 + jitter * torch.randn(n, 4, generator=generator)
        return Data(logits[:, :, None, None], labels)

    generator = torch.Generator().manual_seed(seed)
    return torch.nn.Flatten(), draw(generator), draw(generator)


def test_a_validation_set_without_an_error_keeps_t_1_with_a_warning(caplog):
    """40 clean validation images all right: the likelihood grows as T falls, the fit ran to e^-4 and the released
    model gave near one-hot probabilities on a test set it gets 77 % right (test ECE 0.22 for 0.01)."""
    from components.export import calibrate  # noqa: PLC0415

    net, val, test = _logit_sets(1.0, 40)
    _, _, test = _logit_sets(0.77, 400)
    with caplog.at_level("WARNING"):
        result = calibrate(net, val, bins=10, test=(net(test.images).double(), test.labels))
    assert result["temperature"] == 1.0 and result["test_ece_after"] == result["test_ece_before"]
    assert result["warning"] == ("kept T = 1: the fit ran to the edge of its range (T = 0.0183), as it does where "
                                 "the validation set holds no error to calibrate on")
    assert "export: calibration kept T = 1" in caplog.text
    _, val, _ = _logit_sets(0.9, 40)  # with errors: fitted
    assert calibrate(net, val, bins=10)["temperature"] != 1.0


def test_too_few_noisy_validation_images_for_the_noise_matrix_keep_t_1():
    """31 noisy validation images give one anchor a class: the card claimed 71 % label noise where 19 % was, and
    T = 0.09. Below 10 anchors (301 images) T stays 1, with a warning; from 301 on, the matrix is estimated."""
    from components.common.calibration import anchors_per_class, fit_temperature_on_noisy_labels  # noqa: PLC0415
    from components.export import calibrate  # noqa: PLC0415

    net, val, _ = _logit_sets(0.8, 300)
    result = calibrate(net, val, bins=10, clean=False)
    assert result["temperature"] == 1.0 and "noise_matrix" not in result
    assert result["method"] == "none: too few validation images to estimate the labels' noise matrix"
    assert result["warning"] == ("kept T = 1: the noisy validation set's 300 images give 9 anchor point(s) a class, "
                                 "the top 3 %; the noise matrix needs 10 (at least 301 images)")
    net, val, _ = _logit_sets(0.8, 301, jitter=1.0)
    result, fit = calibrate(net, val, bins=10, clean=False), fit_temperature_on_noisy_labels(val.images.flatten(1),
                                                                                           val.labels)
    assert result["temperature"] == pytest.approx(fit.temperature) and "warning" not in result
    assert result["noise_matrix"] == np.round(fit.noise_matrix, 4).tolist()
    assert result["estimated_noise_rate"] == round(fit.noise_rate, 4)
    assert result["method"] == "temperature scaling through the labels' noise matrix (anchor points)"
    for n in (31, 300, 301, 333, 1200):  # what estimate_noise_matrix takes, probabilities untied
        probabilities = np.random.default_rng(n).random(n)
        assert (probabilities >= np.percentile(probabilities, 97)).sum() == anchors_per_class(n)


def test_calibration_scores_every_image_of_a_set_larger_than_one_batch():
    """The logits are taken 512 images at a time: every batch counts, in order (600 images: two batches)."""
    from components.common.calibration import fit_temperature  # noqa: PLC0415
    from components.export import _logits as export_logits  # noqa: PLC0415
    from components.export import calibrate  # noqa: PLC0415
    from model.trainer import Data  # noqa: PLC0415

    torch.manual_seed(0)
    net = SmallCNN(4, image_size=8, width=4, hidden=8).eval()
    images, labels = torch.randn(600, 1, 8, 8), torch.arange(600) % 4
    val, test = Data(images, labels), Data(images.flip(0), labels.flip(0))
    with torch.no_grad():
        logits = net(images).double()
    result = calibrate(net, val, bins=5, test=(export_logits(net, test, "the test set"), test.labels))
    assert result["temperature"] == pytest.approx(fit_temperature(logits, labels))
    assert result["test_ece_after"] == pytest.approx(result["val_ece_after"])  # the same images, in another order


# --- the card carries evaluate's figures; promote judges again; malformed inputs; accuracies are fractions ----------


def edit_json(path: Path, change) -> None:
    value = json.loads(path.read_text())
    change(value)
    path.write_text(json.dumps(value))


def scored(export, evaluate, *, test: str = "t" * 64, model: str = "m" * 64) -> None:
    """Give evaluate's metrics and the card the test set's and the model file's digests, as the steps write them."""
    for path, record in ((evaluate / "metrics.json", lambda v: v["teacher"]),
                         (export / "model_card.json", lambda v: v)):
        edit_json(path, lambda v, record=record: (v.update(test={"sha256": test, "clean": True, "images": 100}),
                                                  record(v).update(model_sha256=model)))


@pytest.mark.parametrize(("change", "found"), [
    (lambda c: c["metrics"].update(accuracy=0.2), "metrics.accuracy 0.2 where evaluate has 0.9"),
    (lambda c: c["test"].update(sha256="a" * 64), f"test.sha256 {'a' * 64!r} where evaluate has {'t' * 64!r}"),
    (lambda c: c.update(model_sha256="b" * 64), f"model_sha256 {'b' * 64!r} where evaluate has {'m' * 64!r}"),
])
def test_the_gate_refuses_a_card_whose_figures_are_not_evaluates(tmp_path, change, found):
    """evaluate run again after export (or the card edited): the gate judged evaluate's accuracy and released a card
    holding another, which the next gate took as the champion's."""
    export, evaluate = write_export(tmp_path / "a")
    scored(export, evaluate)
    config = GateConfig(min_accuracy=0.5, registry=str(tmp_path / "releases"))
    assert decide(config, export=export, evaluate=evaluate, registry=tmp_path / "releases")["passed"]
    edit_json(export / "model_card.json", change)
    decision = run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "gate")
    refused = [r for r in decision["reasons"] if r.startswith(f"fail: {export / 'model_card.json'}: expected the "
                                                              f"figures evaluate recorded for teacher in "
                                                              f"{evaluate / 'metrics.json'}, found ")]
    assert not decision["passed"] and len(refused) == 1 and found in refused[0], decision["reasons"]
    assert "re-run python -m components.export" in refused[0]
    assert not (tmp_path / "releases").exists() or not any((tmp_path / "releases").glob("v*"))


def test_a_card_and_older_metrics_without_digests_still_pass(tmp_path):
    """Metrics and cards written before the model files' digests compare by accuracy alone."""
    export, evaluate = write_export(tmp_path / "a")
    decision = decide(GateConfig(min_accuracy=0.5), export=export, evaluate=evaluate, registry=tmp_path / "r")
    assert decision["passed"], decision["reasons"]
    assert f"pass: the model card's figures are evaluate's ({evaluate / 'metrics.json'})" in decision["reasons"]


def test_promote_refuses_a_decision_that_did_not_pass(tmp_path):
    registry = tmp_path / "releases"
    export, evaluate = write_export(tmp_path / "a", accuracy=0.3)
    decision = decide(GateConfig(min_accuracy=0.8), export=export, evaluate=evaluate, registry=registry)
    assert not decision["passed"]
    with pytest.raises(ValueError, match=r"decision: expected a decision that passed, found passed False \(fail: "
                                         r"accuracy 0.3000, required at least min_accuracy 0.8"):
        promote(export, decision, registry, evaluate=evaluate)
    assert not registry.exists() or not any(registry.glob("v*"))


def test_promote_judges_the_staged_copy_again(tmp_path):
    """A card swapped after the decision (another accuracy, another task) is not released under it."""
    registry = tmp_path / "releases"
    export, evaluate = write_export(tmp_path / "a", accuracy=0.9)
    decision = decide(GateConfig(min_accuracy=0.0, max_regression=1.0), export=export, evaluate=evaluate,
                      registry=registry)
    assert decision["passed"]
    edit_json(export / "model_card.json", lambda c: (c["metrics"].update(accuracy=0.999),
                                                     c.update(class_names=["x", "y", "z"])))
    with pytest.raises(ValueError, match=r"expected the release's files to pass the gate again under the registry's "
                                         r"lock, found: fail: .*model_card.json: expected the figures evaluate "
                                         r"recorded .*; nothing released") as err:
        promote(export, decision, registry, evaluate=evaluate)
    assert sorted(p.name for p in registry.iterdir()) == [".lock"]
    assert f"fail: {export / 'model_card.json'}: expected" in str(err.value)  # the file judged, not its gone copy
    assert str(registry) not in str(err.value)


@pytest.mark.parametrize(("where", "change", "message"), [
    ("card", lambda c: c.update(input="float32[batch,1,28,28]"),
     "model_card.json: expected input as a JSON object written by the export step, found str 'float32[batch,1,28"),
    ("card", lambda c: c.update(output=["batch", 2]),
     "model_card.json: expected output as a JSON object written by the export step, found list ['batch', 2]"),
    ("card", lambda c: c.update(test=["sha", 100]),
     "model_card.json: expected test as a JSON object written by the export step, found list ['sha', 100]"),
    ("card", lambda c: c.update(metrics=[0.9]),
     "model_card.json: expected metrics as a JSON object written by the export step, found list [0.9]"),
    ("card", lambda c: c.update(model=["teacher"]),
     "model_card.json: expected model as a JSON string written by the export step, found list ['teacher']"),
    ("metrics", lambda m: m.update(test=["sha", 100]),
     "metrics.json: expected test as a JSON object written by the evaluate step, found list ['sha', 100]"),
    ("metrics", lambda m: m.update(teacher=[0.9]),
     "metrics.json: expected teacher as a JSON object written by the evaluate step, found list [0.9]"),
    ("metrics", lambda m: m.update(validation="noisy"),
     "metrics.json: expected validation as a JSON object written by the evaluate step, found str 'noisy'"),
])
def test_malformed_gate_inputs_are_fail_reasons_naming_file_key_expected_and_found(tmp_path, where, change,
                                                                                   message):
    """A list or string where the gate reads an object was an AttributeError and no decision at all (``--check``
    then read the previous one); judged against a champion, so that every comparison runs."""
    registry = tmp_path / "releases"
    champion = write_export(tmp_path / "champion", onnx=b"champion")
    assert run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=champion[0],
                    evaluate=champion[1], out=tmp_path / "g0")["passed"]
    export, evaluate = write_export(tmp_path / "a", onnx=b"candidate")
    edit_json(export / "model_card.json" if where == "card" else evaluate / "metrics.json", change)
    decision = run_gate(GateConfig(min_accuracy=0.5, registry=str(registry)), export=export, evaluate=evaluate,
                        out=tmp_path / "gate")
    assert not decision["passed"]
    assert any(r.startswith("fail: ") and message in r for r in decision["reasons"]), decision["reasons"]
    assert gate.read_decision(tmp_path / "gate")["passed"] is False
    assert len(list(registry.glob("v*"))) == 1


def test_a_gate_that_stops_before_deciding_leaves_no_old_decision_behind(tmp_path, monkeypatch, capsys):
    """``gate --check`` after a gate that crashed must not read the previous run's pass."""
    export, evaluate = write_export(tmp_path / "a")
    config = GateConfig(min_accuracy=0.5, registry=str(tmp_path / "releases"))
    assert run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "gate")["passed"]

    def crash(*_args, **_kwargs):
        raise OSError("the disk went away")

    monkeypatch.setattr(gate, "decide", crash)
    with pytest.raises(OSError, match="the disk went away"):
        run_gate(config, export=export, evaluate=evaluate, out=tmp_path / "gate")
    assert gate.check_main(["--check", str(tmp_path / "gate")]) == 1
    assert "decision.json: expected the gate's decision" in capsys.readouterr().err


@pytest.mark.parametrize("accuracy", [float("inf"), float("nan"), 1.7, -0.1])
def test_an_accuracy_that_is_no_fraction_fails_the_gate(tmp_path, accuracy):
    export, evaluate = write_export(tmp_path / "a", accuracy=accuracy, onnx=b"x")
    decision = run_gate(GateConfig(min_accuracy=0.5, registry=str(tmp_path / "releases")), export=export,
                        evaluate=evaluate, out=tmp_path / "gate")
    assert not decision["passed"] and "version" not in decision
    assert (f"fail: clean-test accuracy of the exported model (teacher) is {accuracy!r} in "
            f"{evaluate / 'metrics.json'}: expected a finite number in [0, 1]") in decision["reasons"]


@pytest.mark.parametrize("baseline", [float("nan"), 1.5, -0.2])
def test_a_baseline_accuracy_that_is_no_fraction_is_no_baseline(tmp_path, baseline):
    export, evaluate = write_export(tmp_path / "a", baseline=baseline)
    decision = decide(GateConfig(min_accuracy=0.5), export=export, evaluate=evaluate, registry=tmp_path / "r")
    assert not decision["passed"] and decision["baseline_accuracy"] is None
    assert any(r.startswith("fail: the CE baseline's best-epoch accuracy: expected it in") and
               f"found {baseline!r}, not a finite number in [0, 1]" in r for r in decision["reasons"])


@pytest.mark.parametrize("accuracy", [float("nan"), float("inf"), 1.5, -0.5])
def test_a_champion_whose_accuracy_is_no_fraction_is_a_damaged_card(tmp_path, accuracy):
    """read_champion's documented ValueError, not a champion every later gate fails against ("the champion's
    nan")."""
    registry = tmp_path / "releases"
    (registry / "vX").mkdir(parents=True)
    (registry / "vX" / "model_card.json").write_text(json.dumps({"metrics": {"accuracy": accuracy}}))
    (registry / "latest").symlink_to("vX")
    with pytest.raises(ValueError, match=rf"model_card.json: expected a released model card with metrics.accuracy, "
                                         rf"found {re.escape(repr(accuracy))}, not a finite number in \[0, 1\]"):
        read_champion(registry)
