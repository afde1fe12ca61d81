"""make gpu-check's script on the CPU (--quick), its reruns, and the GPU section rendered from its results."""

import copy
import json
from pathlib import Path

import pytest

from benchmarks.gpu import check
from benchmarks.gpu import report as gpu_report

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "fashion-mnist"
needs_data = pytest.mark.skipif(not (DATA / "train-images-idx3-ubyte.gz").is_file(),
                                reason=f"needs Fashion-MNIST in {DATA} (make data)")


@needs_data
def test_the_quick_run_measures_every_section_and_a_rerun_keeps_the_others(tmp_path):
    first = tmp_path / "first"
    assert check.main(["--quick", "--data", str(DATA), "--out", str(first)]) == 0
    results = json.loads((first / "results.json").read_text())
    assert sorted(results["sections"]) == sorted(check.SECTIONS) and results["finished"]
    assert not any("error" in v for v in results["sections"].values() if isinstance(v, dict)), results["sections"]
    assert results["sections"]["tests"]["returncode"] == 0  # --quick collects the GPU tests
    assert "tests collected" in (first / "pytest.log").read_text()
    step = {m["network"]: m for m in results["sections"]["meta_step"]}
    assert set(step) == set(check.NETWORKS) and set(step["small_cnn"]["time_ratio"]) == set(check.VARIANTS)
    assert [(r["name"], r["mode"]) for r in results["sections"]["training"]] == [
        ("float32", "head"), ("bfloat16", "head"), ("graphed", "head")]  # auto on the CPU: head
    memory = {m["network"]: m for m in results["sections"]["memory"]}["small_cnn"]
    assert memory["graphed_mb"][0] == memory["graphed_mb"][-1]  # the static arithmetic: flat in M
    second = tmp_path / "second"
    assert check.main(["--quick", "--data", str(DATA), "--out", str(second), "--sections", "memory",
                       "--previous", str(first / "results.json")]) == 0
    rerun = json.loads((second / "results.json").read_text())
    assert rerun["kept_from_earlier_run"]["sections"] == ["tests", "training", "meta_step", "precision"]
    assert rerun["sections"]["training"] == results["sections"]["training"]


def test_without_a_gpu_the_full_run_says_so(capsys, monkeypatch):
    monkeypatch.setattr(check.torch.cuda, "is_available", lambda: False)
    assert check.main(["--data", "nowhere"]) == 2
    assert capsys.readouterr().err == ("error: benchmarks.gpu.check: expected a CUDA device "
                                       "(torch.cuda.is_available() is False); --quick checks the script on the CPU\n")


def test_an_unknown_section_is_refused(capsys):
    with pytest.raises(SystemExit):
        check.main(["--quick", "--sections", "tests,speed"])
    assert "--sections: expected names from tests, training, meta_step, precision, memory, found tests,speed" in \
        capsys.readouterr().err


def committed():
    return json.loads((ROOT / "benchmarks" / "gpu" / "results.json").read_text())


def test_the_targets_follow_the_figures():
    gpu = committed()
    met = {t["name"]: t["verdict"] for t in gpu_report.targets(gpu)}
    assert met["exact, small_cnn: <= 8x a CE step"] == "**no**"
    faster = copy.deepcopy(gpu)
    for m in faster["sections"]["meta_step"]:
        if m["network"] == "small_cnn":
            m["time_ratio"]["graphed"] = 7.9
    met = {t["name"]: t["verdict"] for t in gpu_report.targets(faster)}
    assert met["exact, small_cnn: <= 8x a CE step"] == "yes"
    for run in faster["sections"]["training"]:
        if run["name"] == "bfloat16" and run["seed"] == 1:
            run["val_accuracy"] -= 0.01  # a point below float32's
    gap = next(t for t in gpu_report.targets(faster) if t["name"].startswith("bfloat16"))
    assert gap["verdict"] == "**no**" and "-0.83 points" in gap["measured"]


def test_the_gpu_section_names_the_device_and_the_decision():
    text = gpu_report.section(committed())
    assert text.startswith("## GPU\n\nMeasured on **NVIDIA H200**")
    assert "**The second-order meta step runs in float32** (`amp_meta: false`" in text
