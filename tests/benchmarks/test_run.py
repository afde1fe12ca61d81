"""make bench: a quick run writes valid results and the report rendered from them, the predictor served every
request; --sections reruns one section into earlier results; the committed report is the rendering of the committed
results; the memory measurement counts tensor bytes."""

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from benchmarks import report, run
from benchmarks.measure import peak_memory
from tests.components.conftest import make_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Quick:
    results: dict
    output: Path
    json: Path
    data: Path


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("bench")
    data = make_fashion_mnist(tmp / "fashion-mnist", train=300, test=60)
    paths = {"json": tmp / "results.json", "output": tmp / "docs" / "benchmarks.md"}
    assert bench(data, "--quick", "--json", paths["json"], "--output", paths["output"]) == 0
    return Quick(json.loads(paths["json"].read_text()), paths["output"], paths["json"], data)


def bench(data: Path, *args: object) -> int:
    return run.main(["--data", str(data), "--params", str(ROOT / "params.yaml"), "--networks", "small_cnn",
                     *map(str, args)])


def test_quick_run_writes_results_and_their_report(quick):
    results, output = quick.results, quick.output
    step = results["meta_step"][0]
    assert set(step["time_ratio"]) == set(step["memory_ratio"]) == set(report.VARIANTS)
    assert all(v > 0 for v in [*step["time_ratio"].values(), *step["memory_mb"].values()])
    assert 0 < step["changed_fraction"] < 1
    assert results["machine"]["freed_memory_retained"] is True  # as in a training process (glibc here)
    found = results["allocator"]  # each kind measured in its own process: the setting applied in one only
    assert found["retained"]["applied"] is True and found["default"]["applied"] is False
    assert set(found["default"]["page_faults"]) == {"ce", "first_order", "exact"}
    assert [r["sets"] for r in results["scaling"]["sets"]] == list(run.QUICK.sweep_sets)
    assert [t["met"] in (True, False) for t in results["targets"]] and results["duration_s"] > 0
    assert output.read_text() == report.render(results)
    assert sorted(p.name for p in (output.parent / report.FOLDER).iterdir()) == [
        "memory_ratios.png", "scaling_batch.png", "scaling_sets.png", "time_ratios.png"]


def test_every_target_row_is_in_the_report(quick):
    text = quick.output.read_text()
    for t in quick.results["targets"]:
        assert f"| {t['target']} | {t['value']:.2f} | {t['goal']} |" in text


def test_the_predictor_served_every_request_and_its_percentiles_are_ordered(quick):
    serving = quick.results["serving"]
    assert [r["batch"] for r in serving["results"]] == list(run.QUICK.serving_batches)
    for row in serving["results"]:
        ms, rss = row["latency_ms"], row["rss_mb"]
        assert row["errors"] == 0 and row["requests"] == run.QUICK.serving_requests
        assert 0 < ms["p50"] <= ms["p90"] <= ms["p99"] <= ms["max"]
        assert row["requests_per_s"] > 0 and min(rss.values()) > 0
    assert "## Serving: the predictor under concurrent load" in quick.output.read_text()


def test_sections_reruns_one_section_and_keeps_the_others(quick, tmp_path):
    paths = {"json": tmp_path / "results.json", "output": tmp_path / "benchmarks.md"}
    shutil.copyfile(quick.json, paths["json"])
    assert bench(quick.data, "--quick", "--sections", "serving", "--json", paths["json"],
                 "--output", paths["output"]) == 0
    merged, kept = json.loads(paths["json"].read_text()), quick.results

    def without(results: dict, *names: str) -> dict:
        return {k: v for k, v in results.items() if k not in names}

    replaced = ("serving", "section_s", "reruns", "targets")
    assert without(merged, *replaced) == without(kept, *replaced)
    assert without(merged["section_s"], "serving") == without(kept["section_s"], "serving")
    assert [r["sections"] for r in merged["reruns"]] == [["serving"]]
    assert merged["serving"]["results"] and merged["targets"] == report.targets(merged)
    assert paths["output"].read_text() == report.render(merged)
    assert "Since then `--sections serving` reran serving alone" in paths["output"].read_text()


@pytest.mark.parametrize(("args", "message"), [
    (("--quick", "--sections", "serving,nonsense"), "--sections: expected names from meta_step, "),
    (("--sections", "serving"), "holds a quick run; this would be a full run (pass --quick to both or to neither)"),
    (("--quick", "--sections", "serving", "--json", "missing.json"), "found no such file or directory (run "),
    (("--quick", "--sections", "serving", "--json", "list.json"), "found no 'quick' in it"),
])
def test_sections_refuses_unknown_names_and_results_it_cannot_merge_into(quick, tmp_path, capsys, args, message):
    (tmp_path / "list.json").write_text("[]")
    args = [str(tmp_path / a) if a.endswith(".json") else a for a in args]
    with pytest.raises(SystemExit) as stopped:
        bench(quick.data, "--json", quick.json, *args)
    assert stopped.value.code == 2 and message in capsys.readouterr().err


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
