"""make bench: a quick run writes valid results and the report rendered from them; the committed report is
the rendering of the committed results; the memory measurement counts tensor bytes."""

import json
from pathlib import Path

import pytest
import torch

from benchmarks import report, run
from benchmarks.measure import peak_memory
from tests.components.conftest import make_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    data = make_fashion_mnist(tmp / "fashion-mnist", train=300, test=60)
    paths = {"json": tmp / "results.json", "output": tmp / "docs" / "benchmarks.md"}
    assert run.main(["--quick", "--data", str(data), "--params", str(ROOT / "params.yaml"), "--networks",
                     "small_cnn", "--json", str(paths["json"]), "--output", str(paths["output"])]) == 0
    return json.loads(paths["json"].read_text()), paths["output"]


def test_quick_run_writes_results_and_their_report(quick):
    results, output = quick
    step = results["meta_step"][0]
    assert set(step["time_ratio"]) == set(step["memory_ratio"]) == set(report.VARIANTS)
    assert all(v > 0 for v in [*step["time_ratio"].values(), *step["memory_mb"].values()])
    assert 0 < step["changed_fraction"] < 1
    assert [r["sets"] for r in results["scaling"]["sets"]] == list(run.QUICK.sweep_sets)
    assert [t["met"] in (True, False) for t in results["targets"]] and results["duration_s"] > 0
    assert output.read_text() == report.render(results)
    assert sorted(p.name for p in (output.parent / report.FOLDER).iterdir()) == [
        "memory_ratios.png", "scaling_batch.png", "scaling_sets.png", "time_ratios.png"]


def test_every_target_row_is_in_the_report(quick):
    results, output = quick
    text = output.read_text()
    for t in results["targets"]:
        assert f"| {t['target']} | {t['value']:.2f} | {t['goal']} |" in text


def test_committed_report_is_the_rendering_of_the_committed_results():
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    assert not results["quick"], "benchmarks/results.json must come from a full make bench"
    assert results["targets"] == report.targets(results)
    assert (ROOT / "docs" / "benchmarks.md").read_text() == report.render(results)


def test_peak_memory_counts_the_tensors_a_step_holds_at_once():
    def step():
        a = torch.ones(1024, 1024)  # 4 MiB
        b = torch.ones(1024, 1024)  # 4 MiB more while a is alive
        del a, b
        torch.ones(512, 1024)  # 2 MiB after both are freed

    assert peak_memory(step, torch.device("cpu")) == 8 * 2**20
