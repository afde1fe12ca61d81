"""The quality study: a one-seed, one-setting run on a tiny Fashion-MNIST; every figure of its report is
recomputed here from the run's own records."""

import json
import re
from pathlib import Path

import numpy as np
import pytest

from benchmarks import quality, quality_report
from tests.components.conftest import make_fashion_mnist

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("quality")
    data = make_fashion_mnist(tmp / "fashion-mnist", train=700, test=100)
    args = ["--quick", "--workers", "1", "--work", str(tmp / "work"), "--data", str(data),
            "--params", str(ROOT / "params.yaml"), "--output", str(tmp / "docs" / "results.md")]
    assert quality.main(args) == 0
    results = json.loads((tmp / "docs" / "quality" / "results.json").read_text())
    return tmp, args, results, (tmp / "docs" / "results.md").read_text()


def table(text: str, heading: str) -> list[list[str]]:
    """The rows of the markdown table under ``heading`` (header row first, separator dropped)."""
    block = text.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in block.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in row] for row in rows if not row[0].startswith("---")]


def test_every_accuracy_in_the_report_is_the_runs_own(study):
    _, _, results, text = study
    cells = {r["setting"]: r for r in results["records"]}
    assert set(cells) == {"symmetric-50", "clean"}
    noisy = cells["symmetric-50"]
    rows = table(text, "## Clean test accuracy")
    assert rows[0] == ["method", "symmetric-50"]
    assert rows[1] == ["*realised noise rate of the training labels*", f"{100 * noisy['realised_rate']:.2f} ± 0.00"]
    assert [r[0] for r in rows[2:]] == [label for _, label in quality_report.METHODS]
    for (key, _), row in zip(quality_report.METHODS, rows[2:], strict=True):
        assert row[1] == f"{100 * noisy['methods'][key]['accuracy']:.2f} ± 0.00"
    ceiling = cells["clean"]["methods"]["ce_early"]["accuracy"]
    assert f"early stopping {100 * ceiling:.2f} ± 0.00" in text
    gap = 100 * (noisy["methods"]["mlnt"]["accuracy"] - noisy["methods"]["ce_last"]["accuracy"])
    assert table(text, "## Targets")[1][1].startswith(f"{gap:+.2f}")


def test_label_issue_and_mode_tables_come_from_the_records(study):
    _, _, results, text = study
    noisy = next(r for r in results["records"] if r["setting"] == "symmetric-50")
    rows = table(text, "## Label-issue detection")[1:]
    assert [r[1] for r in rows] == [label for _, label in quality_report.DETECTORS]
    for (key, _), row in zip(quality_report.DETECTORS, rows, strict=True):
        found = noisy["label_issues"][key]
        expected = [found[m] for m in ("precision", "recall", "f1", "auroc", "estimated_noise_rate",
                                       "true_noise_rate")]
        assert row[2:] == [f"{v:.3f} ± 0.000" for v in expected]
        assert found["true_noise_rate"] == pytest.approx(noisy["realised_rate"])
    modes = table(text, "## MLNT's modes")[1:]
    assert [m[0] for m in modes] == ["head", "first_order", "exact"]
    for row in modes:
        assert row[1] == f"{100 * noisy['modes'][row[0]]['accuracy']:.2f} ± 0.00"
    assert not re.search(r"\bnan\b", text)


def test_plots_are_written_and_a_rerun_reuses_finished_cells(study):
    tmp, args, results, _ = study
    for name in ("accuracy.png", "curves.png", "label_issues_pr.png"):
        assert (tmp / "docs" / "quality" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = next(r for r in results["records"] if r["setting"] == "clean")["curves"]["ce"]
    assert len(curves) == quality.QUICK.epochs
    assert quality.main(args) == 0  # every cell is cached: the records are identical, timings included
    again = json.loads((tmp / "docs" / "quality" / "results.json").read_text())
    assert again["records"] == results["records"]


def test_precision_recall_curve_of_a_perfect_ranking():
    noisy = np.array([True, True, False, False, False])
    curve = quality._pr_curve(np.array([0.9, 0.8, 0.1, 0.2, 0.3]), noisy, points=5)
    assert curve["precision"] == [1.0, 1.0, pytest.approx(0.6667), 0.5, 0.4]
    assert curve["recall"] == [0.5, 1.0, 1.0, 1.0, 1.0]


def test_the_committed_report_is_the_rendering_of_the_committed_records():
    """docs/results.md is exactly what benchmarks.quality_report makes of docs/quality/results.json."""
    results = json.loads((ROOT / "docs" / "quality" / "results.json").read_text())
    assert (ROOT / "docs" / "results.md").read_text() == quality_report.render(results)
    assert len(results["records"]) == len(quality.SETTINGS) * 3 + 3  # every setting x 3 seeds, and clean labels
