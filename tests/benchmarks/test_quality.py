"""The quality study: a one-seed, one-setting run on a tiny Fashion-MNIST; every figure of its report is
recomputed here from the run's own records."""

import dataclasses
import hashlib
import json
import re
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from benchmarks.quality import exact, inner_lr, probe, seeds
from benchmarks.quality import report as quality_report
from benchmarks.quality import study as quality
from components.common.code import code_of
from model.networks import SmallCNN
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
    cells = {r["setting"]: r for r in results["records"] if r["part"] == "main"}
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


def test_the_ablation_compares_every_mlnt_run_with_its_control(study):
    _, _, results, text = study
    noisy = next(r for r in results["records"] if r["setting"] == "symmetric-50" and r["part"] == "main")
    methods = noisy["methods"]
    # the sweep: 0, 1/4, 1 and 4 times params.yaml's meta_weight, one chosen on validation, never on test
    weights = {k: m["meta_weight"] for k, m in methods.items() if k.startswith(("mlnt", "ema_control"))}
    paper = methods["mlnt"]["meta_weight"]
    assert weights == {"ema_control": 0.0, "mlnt_x0.25": 0.25 * paper, "mlnt": paper, "mlnt_x4": 4 * paper,
                       "mlnt_selected": weights["mlnt_selected"], "ema_control_warm": 0.0, "mlnt_warm": paper}
    sweep = ("ema_control", "mlnt_x0.25", "mlnt", "mlnt_x4")
    chosen = max(sweep, key=lambda k: methods[k]["val_accuracy"])
    assert methods["mlnt_selected"]["chosen"] == chosen and methods["mlnt_selected"]["accuracy"] == methods[chosen][
        "accuracy"]
    assert not methods["mlnt"]["warm_start"] and methods["mlnt_warm"]["warm_start"]
    rows = {r[0]: r for r in table(text, "## The ablation at symmetric-50")[1:]}
    for key, label in quality_report.ABLATION:
        assert rows[label][1] == f"{100 * methods[key]['accuracy']:.2f} ± 0.00"
    gap = 100 * (methods["mlnt"]["accuracy"] - methods["ema_control"]["accuracy"])
    assert table(text, "## MLNT minus its control")[1][:2] == ["symmetric-50", f"{gap:+.2f} ± 0.00"]
    target = table(text, "## Targets")[1]
    assert target[:3] == ["≥ EMA-teacher control + 1 point, by more than one std, at symmetric-50", "MLNT",
                          f"{gap:+.2f} ± 0.00"]
    assert target[3] == ("met" if gap >= 1.0 else "**missed**")


def test_label_issue_and_mode_tables_come_from_the_records(study):
    _, _, results, text = study
    noisy = next(r for r in results["records"] if r["setting"] == "symmetric-50" and r["part"] == "main")
    rows = table(text, "## Label-issue detection")[1:]
    assert [r[1] for r in rows] == [label for _, label in quality_report.DETECTORS]
    for (key, _), row in zip(quality_report.DETECTORS, rows, strict=True):
        found = noisy["label_issues"][key]
        expected = [found[m] for m in ("precision", "recall", "f1", "auroc", "estimated_noise_rate",
                                       "true_noise_rate")]
        assert row[2:8] == [f"{v:.3f} ± 0.000" for v in expected]
        assert found["true_noise_rate"] == pytest.approx(noisy["realised_rate"])
        # MLNT's row: its F1 and AUROC minus its control's
        control = noisy["label_issues"]["ema_control"]
        assert row[8:] == ([f"{quality_report.signed(found[m] - control[m], 3)} ± 0.000" for m in ("f1", "auroc")]
                           if key == "mlnt" else ["—", "—"])
    (modes,) = [r["modes"] for r in results["records"] if r["part"] == "modes"]
    rows = table(text, "## MLNT's modes")[1:]
    assert [m[0] for m in rows] == ["control (meta_weight 0)", "head", "first_order", "exact"]
    for name, row in zip(("control", "head", "first_order", "exact"), rows, strict=True):
        assert row[1] == f"{100 * modes[name]['accuracy']:.2f} ± 0.00"
        assert modes[name]["mode"] == ("head" if name == "control" else name)
        assert modes[name]["meta_weight"] == (0.0 if name == "control" else modes["head"]["meta_weight"])
    assert modes["train"] == quality.QUICK.modes.train_size
    assert not re.search(r"\bnan\b", text)


def test_the_per_seed_differences_are_the_records(study):
    _, _, results, text = study
    noisy = next(r for r in results["records"] if r["setting"] == "symmetric-50" and r["part"] == "main")
    clean = next(r for r in results["records"] if r["setting"] == "clean")
    rows = {r[1]: r for r in table(text, "## Per-seed differences") if r[0] == "symmetric-50"}

    def gap(a: float, b: float) -> list[str]:
        value = quality_report.signed(100 * (a - b))
        return [f"{value} ± 0.00", value]

    methods = noisy["methods"]
    assert rows["control − CE early-stopped"][2:] == gap(methods["ema_control"]["accuracy"],
                                                         methods["ce_early"]["accuracy"])
    assert rows["MLNT − control, validation accuracy of the released models"][2:] == gap(
        methods["mlnt"]["val_accuracy"], methods["ema_control"]["val_accuracy"])
    assert rows["MLNT warm-started − MLNT"][2:] == gap(methods["mlnt_warm"]["accuracy"], methods["mlnt"]["accuracy"])
    assert rows["MLNT − CE on clean labels, last epoch"][2:] == gap(methods["mlnt"]["accuracy"],
                                                                    clean["methods"]["ce_last"]["accuracy"])
    (modes,) = [r["modes"] for r in results["records"] if r["part"] == "modes"]
    exact = next(r for r in table(text, "## Per-seed differences") if r[1] == "exact − control")
    assert exact[2:] == gap(modes["exact"]["accuracy"], modes["control"]["accuracy"])
    detection = table(text, "MLNT's list minus its control's")
    assert detection[1][0] == "symmetric-50" and detection[1][2] == quality_report.signed(
        noisy["label_issues"]["mlnt"]["f1"] - noisy["label_issues"]["ema_control"]["f1"], 3)
    # the quick study is not the pipeline's run (other size and schedule): its header does not say it is
    assert "pipeline's `dvc repro` run" not in text


def test_signed_differences_have_no_negative_zero():
    assert quality_report.signed(-0.0004) == "+0.00" and quality_report.signed(-0.006) == "-0.01"
    assert quality_report.paired([(0.5, 0.5), (0.4, 0.5)]) == ("-5.00 ± 7.07", "+0.00, -10.00")


def test_the_diagnosis_table_is_the_records(study):
    _, _, results, text = study
    (found,) = results["diagnosis"]
    assert found["run"] == "mlnt" and found["seed"] == 0
    rows = table(text, "## Why: the meta loss's gradient")[1:]
    assert [r[0] for r in rows] == [f"{m}@{a:g}" for m in ("exact", "first_order", "head")
                                    for a in (0.2, 2.0, 20.0)]
    for row in rows:
        measured = found["rows"][row[0]]
        assert row[1] == f"{measured['grad_ratio']:.3g} ± 0"
        assert row[4] == f"{measured['meta']:.3g} ± 0"


def _as_pipeline_run(tmp: Path) -> Path:
    """The headline cell's files laid out as dvc repro's artifacts/ (once per study)."""
    cell, pipeline = tmp / "work" / "symmetric-50-seed0", tmp / "pipeline"
    if not pipeline.exists():
        pipeline.mkdir()
        for step, there in {"ingest": tmp / "work" / "ingest", "noise": cell / "noise", "baseline": cell / "ce",
                            "mlnt": cell / "mlnt"}.items():
            (pipeline / step).symlink_to(there)
    return pipeline


def test_the_diagnosis_of_a_pipeline_run_is_the_studys_for_the_same_run(study, capsys):
    from benchmarks.quality import meta_diagnosis  # noqa: PLC0415

    tmp, _, results, _ = study
    pipeline = _as_pipeline_run(tmp)
    out = tmp / "diagnosis.json"
    assert meta_diagnosis.main(["--artifacts", str(pipeline), "--batches", "2", "--json", str(out)]) == 0
    (recorded,) = results["diagnosis"]
    assert json.loads(out.read_text())["rows"] == recorded["rows"]
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[:2] for line in printed if line.startswith("*")] == [["*", "head@0.2"]]  # the run's own


def test_the_held_out_check_scores_the_released_model_as_evaluate_does_and_renders_its_records(study, capsys):
    from benchmarks.quality import held_out  # noqa: PLC0415

    tmp, _, results, _ = study
    page = tmp / "held_out" / "held_out.md"
    assert held_out.main(["--artifacts", str(_as_pipeline_run(tmp)), "--draws", "2", "--output", str(page)]) == 0
    found = json.loads(page.with_suffix(".json").read_text())
    # in-sample, the evaluate step's rule is the study's label-issue list of the same released model
    (record,) = [r for r in results["records"] if r["setting"] == "symmetric-50" and r["seed"] == 0
                 and r.get("part", "main") == "main"]
    assert found["in_sample"]["evaluate"] == record["label_issues"]["mlnt"]
    assert [run["seed"] for run in found["held_out"]] == [0, 1] and found["test_images"] == 100
    for run in found["held_out"]:  # symmetric noise at 0.5 over 10 classes flips about 45 % of 100 labels
        assert 0.25 < run["realised_rate"] < 0.65 and run["evaluate"]["true_noise_rate"] == run["realised_rate"]
        assert run["evaluate"]["true_noise_rate"] == run["cleanlab"]["true_noise_rate"]
    assert found["teacher_md5"] == hashlib.md5((tmp / "pipeline" / "mlnt" / "teacher.pt").read_bytes()).hexdigest()
    text = page.read_text()
    assert held_out.main(["--render", "--output", str(page)]) == 0 and page.read_text() == text
    rows = table(text, "# The label-issue list on images the model never trained on")
    assert rows[1][2:] == [f"{found['in_sample']['evaluate'][m]:.3f}" for m in held_out.METRICS]
    assert rows[4][:2] == ["cleanlab `find_label_issues`", "held out (the test images)"]
    # make results: the recorded run is rendered, not measured again; another run's teacher is measured
    records, recorded = page.with_suffix(".json"), page.with_suffix(".json").read_text()
    again = ["--artifacts", str(tmp / "pipeline"), "--draws", "2", "--output", str(page), "--if-changed"]
    assert held_out.main(again) == 0 and records.read_text() == recorded and page.read_text() == text
    records.write_text(json.dumps({**found, "teacher_md5": "0" * 32, "wall_seconds": -1.0}))
    assert held_out.main(again) == 0
    measured = json.loads(records.read_text())
    assert measured["teacher_md5"] == found["teacher_md5"] and measured["wall_seconds"] >= 0
    capsys.readouterr()


def test_the_held_out_check_needs_synthetic_noise(tmp_path, capsys):
    from benchmarks.quality import held_out  # noqa: PLC0415

    (tmp_path / "noise").mkdir()
    (tmp_path / "noise" / "config.json").write_text(json.dumps({"kind": "none", "rate": 0.0}))
    assert held_out.main(["--artifacts", str(tmp_path), "--output", str(tmp_path / "page.md")]) == 1
    assert capsys.readouterr().err == (
        f"error: held_out: {tmp_path}/noise/config.json: expected a run with synthetic noise (kind symmetric, "
        "uniform_other, pairflip, asymmetric, instance at a rate above 0), whose wrong labels are known, found kind "
        "'none' at rate 0.0\n")
    assert not (tmp_path / "page.md").exists()


def test_the_diagnosis_without_a_finished_run_says_what_it_expected(tmp_path, capsys):
    from benchmarks.quality import meta_diagnosis  # noqa: PLC0415

    assert meta_diagnosis.main(["--artifacts", str(tmp_path)]) == 1
    assert capsys.readouterr().err == (f"error: meta_diagnosis: {tmp_path}/mlnt/config.json: expected the output "
                                       "of the mlnt step, found no such file (run python -m components.mlnt "
                                       "first)\n")


def test_no_inner_step_moves_no_prediction():
    from benchmarks.quality.meta_diagnosis import _prediction_shift  # noqa: PLC0415

    torch.manual_seed(0)
    net = SmallCNN(4, image_size=8, width=4, hidden=8)
    x, synth = torch.randn(6, 1, 8, 8), torch.randint(4, (3, 6))
    assert _prediction_shift(net, x, synth, 0.0, head_only=False) == 0.0
    assert _prediction_shift(net, x, synth, 1.0, head_only=True) > 0.0


def test_plots_are_written_and_a_rerun_reuses_finished_cells(study):
    tmp, args, results, _ = study
    for name in ("accuracy.png", "curves.png", "ablation.png", "label_issues_pr.png"):
        assert (tmp / "docs" / "quality" / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = next(r for r in results["records"] if r["setting"] == "clean")["curves"]["ce"]
    assert len(curves) == quality.QUICK.headline_epochs
    assert quality.main(args) == 0  # every cell is cached: the records are identical, timings included
    again = json.loads((tmp / "docs" / "quality" / "results.json").read_text())
    assert again["records"] == results["records"]


def test_the_ingest_and_the_cells_follow_the_data_and_params_ingest(tmp_path, monkeypatch):
    """Another --data or params.yaml ingest section: the ingest is made again and no cached cell is reused; back
    to the first, the cells' fingerprints are the first run's."""
    ingested, cells = [], {}
    real = quality.ingest.run
    monkeypatch.setattr(quality.ingest, "run",
                        lambda config, out: ingested.append(config.path) or real(config, out=out))
    monkeypatch.setattr(quality, "ProcessPoolExecutor", lambda max_workers, mp_context: ThreadPoolExecutor(1))
    monkeypatch.setattr(quality, "_diagnose", lambda task: {})

    def run_task(task):  # the fingerprint each cell's cache is checked against, instead of training it
        cells[(task.setting.name, task.seed, task.part)] = task.fingerprint
        return {"setting": task.setting.name, "seed": task.seed, "part": task.part}

    monkeypatch.setattr(quality, "run_task", run_task)
    first, other = (make_fashion_mnist(tmp_path / name, train=60, test=20, seed=seed)
                    for name, seed in (("first", 0), ("other", 1)))
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    seeded = tmp_path / "params.yaml"
    seeded.write_text(yaml.safe_dump({**params, "ingest": {**params["ingest"], "seed": params["ingest"]["seed"] + 1}}))

    def study(data: Path, params_file: Path = ROOT / "params.yaml") -> dict:
        cells.clear()
        quality.run_study(quality.QUICK, work=tmp_path / "work", workers=1, data=data, params_file=params_file)
        return dict(cells)

    made = study(first)
    assert ingested == [str(first)] and study(first) == made and ingested == [str(first)]  # nothing to redo
    moved = study(other)
    assert ingested[-1] == str(other) and all(moved[cell] != made[cell] for cell in made)
    manifest = json.loads((tmp_path / "work" / "ingest" / "manifest.json").read_text())
    assert manifest["source"] == str(other)
    reseeded = study(other, seeded)
    assert ingested[-1] == str(other) and len(ingested) == 3 and all(reseeded[c] != moved[c] for c in moved)
    assert study(first) == made and len(ingested) == 4


def test_a_cell_trained_on_other_threads_is_not_reused(tmp_path):
    """CPU training's figures depend on torch's thread count (--workers sets it): a cell's cache is keyed on it."""
    task = quality.Task(quality.CLEAN, 0, quality.QUICK, {}, str(tmp_path), str(tmp_path), threads=1)
    assert dataclasses.replace(task, threads=2).fingerprint != task.fingerprint
    assert {t.threads for t in quality.tasks(quality.QUICK, {}, tmp_path, tmp_path, threads=3)} == {3}


def test_a_cell_made_by_other_code_is_not_reused(tmp_path):
    """A cached cell holds the figures of the code that made it: the fingerprint holds the digest of every file the
    study can run (``components.common.code``), taken when the tasks are made."""
    task = quality.Task(quality.CLEAN, 0, quality.QUICK, {}, str(tmp_path), str(tmp_path), code="before")
    assert dataclasses.replace(task, code="after").fingerprint != task.fingerprint
    made = quality.tasks(quality.QUICK, {}, tmp_path, tmp_path)
    assert {t.code for t in made} == {quality.code_digest(quality.STUDY)}
    assert {"model/mlnt.py", "components/mlnt.py", "benchmarks/quality/study.py"} <= {
        p.as_posix() for p in code_of(quality.STUDY)}


def test_one_setting_is_rerun_into_the_saved_study(study, capsys, monkeypatch):
    """``--setting``: the setting's cells replace theirs in the saved study; a cell made with the same code, settings
    and data is taken from its cache (the same figures), one made with other code is trained again, and a rerun that
    stopped part-way resumes: the cells it finished are not trained a second time."""
    tmp, args, results, _ = study
    saved = tmp / "docs" / "quality" / "results.json"
    before = json.loads(saved.read_text())
    cells = {path: path.stat().st_mtime_ns for path in (tmp / "work").rglob("result.json")}

    def trained() -> set[str]:
        """The settings of the cells whose record was written since ``cells`` was taken."""
        return {json.loads(path.read_text())["setting"] for path, mtime in cells.items()
                if path.stat().st_mtime_ns != mtime}

    assert quality.main([*args, "--setting", "clean"]) == 0
    assert trained() == set()  # nothing changed since the study: its cached cell is the rerun's
    same = json.loads(saved.read_text())
    assert same["records"] == results["records"] and same["reruns"][-1]["settings"] == ["clean"]
    monkeypatch.setattr(quality, "code_digest", lambda module: "an edit since the study")
    assert quality.main([*args, "--setting", "clean"]) == 0
    assert trained() == {"clean"}  # other code: trained again, the other settings' cells left alone
    again = json.loads(saved.read_text())
    unchanged = [r for r in again["records"] if r["setting"] != "clean"]
    assert unchanged == [r for r in results["records"] if r["setting"] != "clean"]
    rerun, = (r for r in again["records"] if r["setting"] == "clean")
    first, = (r for r in results["records"] if r["setting"] == "clean")
    assert rerun["fingerprint"] != first["fingerprint"]  # made by the other code
    assert _untimed({**rerun, "fingerprint": ""}) == _untimed({**first, "fingerprint": ""})  # the same figures
    assert again["reruns"][-1]["settings"] == ["clean"] and again["wall_seconds"] == before["wall_seconds"]
    assert again["diagnosis"] == before["diagnosis"]  # only the headline setting's rerun measures it again
    cells = {path: path.stat().st_mtime_ns for path in (tmp / "work").rglob("result.json")}
    assert quality.main([*args, "--setting", "clean"]) == 0
    assert trained() == set()  # finished with this code already: what a rerun that was stopped finds
    other = {**again, "threads_per_worker": again["threads_per_worker"] + 1, "records": [], "reruns": []}
    with pytest.raises(SystemExit, match="thread"):
        quality.merge(saved, other, frozenset({"clean"}))
    with pytest.raises(SystemExit):
        quality.main([*args, "--setting", "symmetric-33"])
    assert "--setting: unknown symmetric-33. Valid: clean, symmetric-50" in capsys.readouterr().err


def _untimed(record: object) -> object:
    """``record`` without its ``seconds`` entries, at any depth."""
    if isinstance(record, dict):
        return {k: _untimed(v) for k, v in record.items() if k != "seconds"}
    return record


def test_a_rerun_the_saved_study_cannot_take_is_refused_before_anything_trains(study, monkeypatch):
    """Another thread count (or other params) than the saved study's: refused at once, not after the setting's cells
    were trained and their caches replaced."""
    tmp, args, results, _ = study
    monkeypatch.setattr(quality, "run_study", lambda *a, **k: pytest.fail("trained before the check"))
    monkeypatch.setattr(quality, "threads_per_cell", lambda workers: results["threads_per_worker"] + 1)
    with pytest.raises(SystemExit, match=f"cells trained on {results['threads_per_worker']} thread"):
        quality.main([*args, "--setting", "clean"])
    other = tmp / "params.yaml"
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    other.write_text(yaml.safe_dump({**params, "mlnt": {**params["mlnt"], "meta_weight": 1.0}}))
    monkeypatch.setattr(quality, "threads_per_cell", lambda workers: results["threads_per_worker"])
    with pytest.raises(SystemExit, match="other study settings or params"):
        quality.main([*args, "--params", str(other), "--setting", "clean"])


@pytest.mark.parametrize(("argv", "work", "output"), [
    ([], "artifacts/quality", "docs/results.md"),
    (["--quick"], "artifacts/quality-quick", "artifacts/quality-quick/results.md"),  # never the committed study
    (["--quick", "--work", "w"], "w", "w/results.md"),
])
def test_the_quick_check_writes_beside_its_cells_not_over_the_committed_study(monkeypatch, argv, work, output):
    ran = {}
    monkeypatch.setattr(quality, "run_study", lambda study, **kw: ran.update(kw) or {"records": [], "wall_seconds": 0})
    monkeypatch.setattr(quality_report, "write", lambda results, path: ran.update(output=path))
    assert quality.main(argv) == 0
    assert ran["work"] == Path(work) and ran["output"] == Path(output)


def test_the_inner_lr_probe_trains_on_the_study_cells_and_reports_against_the_control(study, tmp_path):
    tmp, _, results, _ = study
    output = tmp / "docs" / "quality" / "inner_lr.md"
    assert inner_lr.main(["--quick", "--work", str(tmp / "work"), "--results", str(output.with_name("results.json")),
                          "--output", str(output), "--workers", "1", "--inner-lrs", "2"]) == 0
    (run,) = json.loads(output.with_suffix(".json").read_text())["runs"]
    assert (run["inner_lr"], run["seed"], run["meta_weight"]) == (2.0, 0, results["params"]["mlnt"]["meta_weight"])
    assert (tmp / "work" / "symmetric-50-seed0" / "mlnt_alpha2" / "teacher.pt").is_file()
    control = next(r for r in results["records"] if r["setting"] == "symmetric-50" and r["part"] == "main")[
        "methods"]["ema_control"]
    rows = table(output.read_text(), "# MLNT with larger inner learning rates")
    assert [r[0] for r in rows[1:]] == ["control (meta_weight 0)", "α = 0.2 (the paper's)", "α = 2"]
    assert rows[3][1:3] == [f"{100 * run['accuracy']:.2f} ± 0.00",
                            f"{100 * (run['accuracy'] - control['accuracy']):+.2f} ± 0.00"]
    with pytest.raises(SystemExit, match="expected the quality study's cells, found none at"):
        inner_lr.main(["--quick", "--work", str(tmp_path), "--results", str(output.with_name("results.json")),
                       "--output", str(tmp_path / "x.md")])
    found = json.loads(output.with_suffix(".json").read_text())
    three = {**results, "records": [{**r, "seed": seed} for r in results["records"] for seed in (0, 1, 2)]}
    with pytest.raises(ValueError, match=r"α = 2: expected runs of the study's seeds \[0, 1, 2\] \(its symmetric-50 "
                                         r"cells\), found seeds \[0\]"):
        inner_lr.render(found, three)  # a quick probe against a full study (make docs after a stray --quick)


def test_more_seeds_train_the_control_and_mlnt_and_pool_with_the_study_once_its_cell_reproduces(study):
    """benchmarks.quality.seeds: the study's own cell trained again gives results.json's figures, the new seeds' cells
    train CE, the control and MLNT only, and the page's paired differences are those of the pooled seeds."""
    tmp, _, results, _ = study
    output = tmp / "docs" / "quality" / "seeds.md"
    assert seeds.main(["--quick", "--work", str(tmp / "work"), "--results", str(output.with_name("results.json")),
                       "--output", str(output), "--data", str(tmp / "fashion-mnist"), "--params",
                       str(ROOT / "params.yaml"), "--workers", "1", "--seeds", "1"]) == 0
    found = json.loads(output.with_suffix(".json").read_text())
    assert [(r["setting"], r["seed"]) for r in found["records"]] == [("symmetric-50", 0), ("symmetric-50", 1)]
    assert seeds.check_problems(found, results) == []  # the check cell: results.json's figures, to the last digit
    assert sorted(p.name for p in (tmp / "work" / "symmetric-50-seed1-seeds").iterdir() if p.is_dir()) == [
        "ce", "ema_control", "mlnt", "noise"]  # no Confident Learning, sweep or warm start
    study_cell = next(r for r in results["records"] if r["setting"] == "symmetric-50" and r["part"] == "main")
    by_seed = {0: study_cell["methods"], 1: found["records"][1]["methods"]}
    gaps = [100 * (by_seed[s]["mlnt"]["accuracy"] - by_seed[s]["ema_control"]["accuracy"]) for s in (0, 1)]
    rows = table(output.read_text(), "## symmetric-50: 2 seeds (0, 1)")
    assert rows[5][:2] == ["MLNT − control", f"{np.mean(gaps):+.2f} ± {np.std(gaps, ddof=1):.2f}"]
    assert f"0: {gaps[0]:+.2f}, 1: {gaps[1]:+.2f}" in output.read_text()
    changed = json.loads(json.dumps(found))
    changed["records"][0]["methods"]["mlnt"]["accuracy"] += 0.001
    with pytest.raises(ValueError, match=r"did not reproduce the study's figures, so its seeds do not pool with these: "
                                         r"symmetric-50 seed 0 mlnt accuracy: results.json"):
        seeds.render(changed, results)
    changed["records"][0]["methods"]["ce_early"]["val_accuracy"] = 0.5  # a figure the study did not record
    assert "symmetric-50 seed 0 ce_early val_accuracy: results.json 'none', again 0.5" in seeds.check_problems(
        changed, results)
    with pytest.raises(SystemExit, match=r"expected seeds the study has not run, found \[0\]"):
        seeds.cells(quality.QUICK, {}, tmp, tmp, 1, ("symmetric-50",), (0, 1), check=("symmetric-50", 0))


def test_exact_mode_trains_in_the_headline_cells_beside_their_reproduced_control(study):
    """benchmarks.quality.exact: each headline cell trains CE, the control and `head` MLNT again (results.json's
    figures, to the last digit) and `exact` MLNT from the same noise labels and CE features; the page's differences
    are per seed against the control."""
    tmp, _, results, _ = study
    output = tmp / "docs" / "quality" / "exact.md"
    assert exact.main(["--quick", "--work", str(tmp / "work"), "--results", str(output.with_name("results.json")),
                       "--output", str(output), "--data", str(tmp / "fashion-mnist"), "--params",
                       str(ROOT / "params.yaml"), "--workers", "1"]) == 0
    found = json.loads(output.with_suffix(".json").read_text())
    (record,) = found["records"]
    assert exact.reproduction_problems(found, results) == []
    assert [record["methods"][m]["mode"] for m in ("mlnt", exact.EXACT)] == ["head", "exact"]
    cell = tmp / "work" / "symmetric-50-seed0-seeds"
    assert (cell / exact.EXACT / "teacher.pt").is_file()
    assert json.loads((cell / exact.EXACT / "config.json").read_text())["mode"] == "exact"
    methods = record["methods"]
    rows = table(output.read_text(), "# MLNT's `exact` update at the headline setting")
    assert [r[0] for r in rows[1:]] == ["CE, early-stopped", "control (meta_weight 0)", "MLNT, `head`", "MLNT, `exact`"]
    gap = 100 * (methods[exact.EXACT]["accuracy"] - methods["ema_control"]["accuracy"])
    assert rows[4][1:3] == [f"{100 * methods[exact.EXACT]['accuracy']:.2f} ± 0.00", f"{gap:+.2f} ± 0.00"]
    assert rows[4][4] == f"{gap:+.2f}" and rows[2][2] == "+0.00 ± 0.00"
    student = 100 * (methods[exact.EXACT]["student_last_accuracy"] - methods["ema_control"]["student_last_accuracy"])
    assert rows[4][6] == f"{student:+.2f} ± 0.00 ({student:+.2f})" and rows[1][6] == "—"
    changed = json.loads(json.dumps(found))
    changed["records"][0]["methods"]["ema_control"]["accuracy"] += 0.001
    with pytest.raises(ValueError, match=r"did not reproduce the study's figures, so `exact` cannot be set against "
                                         r"its control: symmetric-50 seed 0 ema_control accuracy: results.json"):
        exact.render(changed, results)


def test_more_seeds_of_another_setting_are_added_to_the_recorded_run():
    """``--add``: the new setting's records join the recorded ones (in the study's order), the time adds up and the
    page says how many invocations made it; another run's seeds, check cell or threads are refused."""
    def run(settings, seconds, **changes):
        records = [{"setting": s, "seed": seed, "methods": {}} for s in ("asymmetric-40", *settings)
                   for seed in ((0,) if s == "asymmetric-40" else ()) + (3, 4)]
        return {"settings": list(settings), "seeds": [3, 4], "check": {"setting": "asymmetric-40", "seed": 0},
                "records": records, "wall_seconds": seconds, "workers": 2, "threads_per_worker": 1,
                "invocations": 1, **changes}

    joined = seeds.add(run(["symmetric-50", "asymmetric-40"], 100.0), run(["symmetric-20"], 50.0))
    assert joined["settings"] == ["symmetric-20", "symmetric-50", "asymmetric-40"]
    assert (joined["wall_seconds"], joined["invocations"]) == (150.0, 2)
    assert sorted((r["setting"], r["seed"]) for r in joined["records"]) == [
        ("asymmetric-40", 0), ("asymmetric-40", 3), ("asymmetric-40", 4), ("symmetric-20", 3), ("symmetric-20", 4),
        ("symmetric-50", 3), ("symmetric-50", 4)]
    assert seeds.TEMPLATE.fill("invocations", count=2) == (" over 2 invocations (`--add`, each training the check "
                                                           "cell again)")
    with pytest.raises(SystemExit, match=r"--add: expected the recorded run's seeds, check, threads_per_worker "
                                         r"\(\[3, 4\]"):
        seeds.add(run(["symmetric-50"], 100.0), run(["symmetric-20"], 50.0, seeds=[3, 4, 5]))


def test_the_paired_differences_are_a_t_interval_and_a_signed_rank_test():
    found = seeds.paired(np.array([0.01, 0.02, 0.03]))  # accuracies: 1, 2 and 3 points
    half = 4.302653 / np.sqrt(3)  # Student's t, 2 degrees of freedom, 97.5 %
    assert found["mean"] == pytest.approx(2.0) and found["sd"] == pytest.approx(1.0)
    assert (found["low"], found["high"]) == (pytest.approx(2 - half), pytest.approx(2 + half))
    assert (found["positive"], found["n"]) == (3, 3) and found["p"] == pytest.approx(0.25)  # 2 of 8 sign patterns
    assert seeds._verdict(found) == "not_shown"  # 2 - 2.48 < 0: three seeds this spread show nothing
    assert seeds._verdict(seeds.paired(np.array([0.010, 0.012, 0.011]))) == "shown"
    assert seeds._verdict(seeds.paired(np.array([-0.01, -0.02, -0.015]))) == "worse"


@pytest.mark.parametrize("module", [inner_lr, seeds, exact])
@pytest.mark.parametrize(("argv", "paths"), [
    ([], ("artifacts/quality", "docs/quality/results.json", "docs/quality/{page}")),
    (["--quick"], ("artifacts/quality-quick", "artifacts/quality-quick/quality/results.json",
                   "artifacts/quality-quick/quality/{page}")),  # where `benchmarks.quality --quick` wrote
])
def test_a_probe_reads_and_writes_beside_its_study(monkeypatch, tmp_path, module, argv, paths):
    monkeypatch.chdir(tmp_path)
    Path(paths[1]).parent.mkdir(parents=True)
    Path(paths[1]).write_text('{"records": "the study\'s"}')  # only there: the probe reads no other study
    used = {}
    monkeypatch.setattr(module, "run_probe", lambda results, study, work, **kw: used.update(work=work, results=results)
                        or {"runs": [], "records": [], "wall_seconds": 0})
    monkeypatch.setattr(probe, "write_json", lambda path, found: used.update(output=path.with_suffix(".md")))
    monkeypatch.setattr(module, "render", lambda found, results: "")
    monkeypatch.setattr(probe, "write_text", lambda path, text: used.update(page=path))
    assert module.main(argv) == 0
    page = Path(paths[2].format(page=Path(module.__file__).stem + ".md"))
    assert (used["work"], used["output"], used["page"]) == (Path(paths[0]), page, page)
    assert used["results"] == {"records": "the study's"}


def test_precision_recall_curve_of_a_perfect_ranking():
    noisy = np.array([True, True, False, False, False])
    curve = quality._pr_curve(np.array([0.9, 0.8, 0.1, 0.2, 0.3]), noisy, points=5)
    assert curve["precision"] == [1.0, 1.0, pytest.approx(0.6667), 0.5, 0.4]
    assert curve["recall"] == [0.5, 1.0, 1.0, 1.0, 1.0]


def test_the_committed_report_is_the_rendering_of_the_committed_records():
    """docs/results.md is exactly what benchmarks.quality.report makes of docs/quality/results.json."""
    results = _committed()
    assert (ROOT / "docs" / "results.md").read_text() == quality_report.render(results)
    study = quality.StudyConfig()
    seeds = len(study.seeds)
    # every setting x 3 seeds, the modes comparison, and clean labels
    assert len(results["records"]) == len(study.settings) * seeds + len(study.modes.seeds) + seeds


def test_the_committed_inner_lr_table_is_the_rendering_of_its_records():
    results = _committed()
    found = json.loads((ROOT / "docs" / "quality" / "inner_lr.json").read_text())
    assert (ROOT / "docs" / "quality" / "inner_lr.md").read_text() == inner_lr.render(found, results)
    assert sorted((r["seed"], r["inner_lr"]) for r in found["runs"]) == [
        (seed, alpha) for seed in quality.StudyConfig().seeds for alpha in sorted(inner_lr.INNER_LRS)]


def _committed() -> dict:
    return json.loads((ROOT / "docs" / "quality" / "results.json").read_text())


@pytest.mark.parametrize(("validation", "chosen", "multiple"), [
    ({"ema_control": 0.70, "mlnt_x0.25": 0.72, "mlnt": 0.71, "mlnt_x4": 0.69}, "mlnt_x0.25", 0.25),
    # a tie on validation goes to the member the sweep lists first (docs/quality.md): here the control, not 4x
    ({"ema_control": 0.72, "mlnt_x0.25": 0.70, "mlnt": 0.71, "mlnt_x4": 0.72}, "ema_control", 0.0),
])
def test_the_meta_weight_is_chosen_on_validation_never_on_test(monkeypatch, validation, chosen, multiple):
    """The sweep's member is the one with the best validation accuracy, whatever the test set says."""
    params = {k: v for k, v in yaml.safe_load((ROOT / "params.yaml").read_text()).items()
              if k in ("ingest", "noise", "baseline", "mlnt")}
    study = quality.StudyConfig()
    cell = object.__new__(quality._Cell)
    cell.task = quality.Task(study.headline, 0, study, params, "unused", "unused")
    cell.ce_config, cell.mlnt_config = quality.training_configs(cell.task)
    test = {"ema_control": 0.80, "mlnt_x0.25": 0.60, "mlnt": 0.75, "mlnt_x4": 0.90}

    def mlnt_run(name, config, record, **_):
        record["methods"][name] = {"accuracy": test.get(name, 0.5), "val_accuracy": validation.get(name, 0.5),
                                   "meta_weight": config.meta_weight}

    monkeypatch.setattr(cell, "_mlnt_run", mlnt_run)
    monkeypatch.setattr(cell, "_detect", lambda *args: None)
    monkeypatch.setattr(cell, "log", lambda message: None)
    record = {"methods": {}}
    cell._mlnt({}, record)
    selected = record["methods"]["mlnt_selected"]
    assert selected["chosen"] == chosen and selected["accuracy"] == test[chosen]
    assert selected["meta_weight"] == multiple * params["mlnt"]["meta_weight"]


def test_the_clean_ceiling_has_the_headline_size_and_schedule():
    """CE on clean labels is the headline setting's ceiling: the same images drawn and the same epochs."""
    study = quality.StudyConfig(epochs=25, headline_epochs=7, train_size=4000, headline_size=12000)
    other = quality.Setting("symmetric", 0.2)
    assert study.size(quality.CLEAN) == study.size(study.headline) == 12000 and study.size(other) == 4000
    assert study.overrides(quality.CLEAN) == study.overrides(study.headline) == {"epochs": 7}
    assert study.overrides(other) == {"epochs": 25}
    assert quality.StudyConfig(headline_epochs=0, batch_size=0).overrides(quality.CLEAN) == {}


def _with_gaps(results: dict, setting: str, gaps: list[float]) -> dict:
    """``results`` with MLNT's test accuracy set to its control's plus ``gaps`` (points, one per seed)."""
    results = json.loads(json.dumps(results))
    cells = [r for r in results["records"] if r["setting"] == setting and r.get("part", "main") == "main"]
    for record, gap in zip(cells, gaps, strict=True):
        record["methods"]["mlnt"]["accuracy"] = record["methods"]["ema_control"]["accuracy"] + gap / 100
    return results


def test_the_control_target_needs_one_point_and_more_than_one_std():
    """≥ control + 1 point, by more than one std: a mean gap of 1.5 points spread by 2.6 points is missed."""
    results = _committed()
    top = quality_report.headline(results)

    def verdict(gaps: list[float]) -> str:
        rows = table(quality_report._targets(_with_gaps(results, top, gaps), quality_report.settings(results)),
                     "## Targets")
        (row,) = [r for r in rows if r[0].startswith("≥ EMA-teacher control") and top in r[0] and r[1] == "MLNT"]
        return row[3]

    assert verdict([1.4, 1.5, 1.6]) == "met"
    assert verdict([-1.5, 3.0, 3.0]) == "**missed**"  # mean 1.5, std 2.6
    assert verdict([0.8, 0.9, 1.0]) == "**missed**"  # mean 0.9 < 1 point


def test_the_header_names_the_pipelines_run_only_where_the_headline_cell_is_it():
    """The headline cell with the pipeline's seed is the pipeline's run only on the pipeline's size, schedule,
    batch and seeds; the header states the schedule the cells ran."""
    results = _committed()
    said = "pipeline's `dvc repro` run"
    assert said in quality_report._header(results)
    for part, key, value in (("study", "headline_epochs", 3), ("study", "batch_size", 64),
                             ("study", "headline_size", 600)):
        changed = json.loads(json.dumps(results))
        changed[part][key] = value
        assert said not in quality_report._header(changed), key
    changed = json.loads(json.dumps(results))
    changed["params"]["mlnt"]["seed"] += 1
    assert said not in quality_report._header(changed)
    changed = json.loads(json.dumps(results))
    changed["study"]["headline_epochs"], changed["study"]["epochs"], changed["study"]["batch_size"] = 3, 4, 64
    header = quality_report._header(changed)
    assert ", 3 epochs" in header and ", 4 epochs" in header and "batch 64" in header
    assert "3 epochs (the study's schedule)" in header and "params.yaml's schedule" not in header
    assert "15 epochs (params.yaml's schedule;" in quality_report._header(results)
    changed = {**results, "wall_seconds": 600.0, "reruns": [{"settings": ["clean"], "wall_seconds": 300.0}]}
    assert "Ran in 15.0 min on" in quality_report._header(changed)  # the study and its reruns
    resumed = quality_report._header({**changed, "resumed_cells": 3})  # an interrupted study, resumed
    assert f"Ran in 15.0 min (the last invocation only: 3 of the {len(results['records'])} cells were finished " \
           "before it) on" in resumed


def test_the_calibration_check_fits_as_the_export_step_does_and_renders_its_records(study, capsys):
    """Each draw's `anchor points` temperature is the export step's fit of those noisy labels, `clean labels` the
    fit of the clean ones; the noise realised is the setting's; the page renders again from its records."""
    from benchmarks.quality import calibration  # noqa: PLC0415
    from components.common.calibration import fit_temperature, fit_temperature_on_noisy_labels  # noqa: PLC0415
    from components.common.model_file import load_model  # noqa: PLC0415
    from components.common.splits import load_split  # noqa: PLC0415
    from components.noise import corrupt  # noqa: PLC0415

    tmp, _, _, _ = study
    pipeline, page = _as_pipeline_run(tmp), tmp / "calibration" / "calibration.md"
    assert calibration.main(["--artifacts", str(pipeline), "--draws", "2", "--output", str(page)]) == 0
    found = json.loads(page.with_suffix(".json").read_text())
    assert set(found["models"]) == {"teacher", "ce_best"} and found["draws"] == 2
    teacher = found["models"]["teacher"]
    assert teacher["md5"] == hashlib.md5((pipeline / "mlnt" / "teacher.pt").read_bytes()).hexdigest()
    assert [(r["kind"], r["rate"], r["seed"]) for r in teacher["runs"]] == [
        (kind, rate, seed) for kind, rate in calibration.SETTINGS for seed in (0, 1)]
    net, _ = load_model(pipeline / "mlnt" / "teacher.pt")
    _, val, _ = load_split(pipeline / "ingest", pipeline / "noise", workers=0)
    with torch.no_grad():
        logits = torch.cat([net.eval()(x) for x, _ in val.eval_batches(512)]).double()
    clean = val.labels.numpy()
    for run in teacher["runs"][:8]:  # no noise, then symmetric 20 %, 50 % and 80 %, two draws each
        noisy = corrupt(clean, kind=run["kind"], rate=run["rate"], num_classes=10,
                        rng=np.random.default_rng(run["seed"]))
        assert run["realised_rate"] == float((noisy != clean).mean()) and run["realised_rate"] >= 0.5 * run["rate"]
        assert run["clean"]["temperature"] == fit_temperature(logits, val.labels)
        assert run["anchor"]["temperature"] == fit_temperature_on_noisy_labels(logits, torch.from_numpy(noisy)
                                                                               ).temperature
        assert run["plain"]["temperature"] == fit_temperature(logits, torch.from_numpy(noisy))
    text = page.read_text()
    assert calibration.main(["--render", "--output", str(page)]) == 0 and page.read_text() == text
    rows = table(text, "**Test ECE** (clean test labels)")
    assert rows[0] == ["fit", "no noise", *(f"{kind} {rate:.0%}" for kind, rate in calibration.SETTINGS[1:])]
    assert rows[1][0].startswith("realised noise rate")
    assert [row[0] for row in rows[2:7]] == ["clean labels", "noisy labels alone", "confident joint (cleanlab)",
                                             "anchor points (the export step's)", "true matrix"]
    capsys.readouterr()


def test_the_calibration_check_needs_clean_validation_labels(tmp_path, capsys):
    from benchmarks.quality import calibration  # noqa: PLC0415

    (tmp_path / "noise").mkdir()
    (tmp_path / "noise" / "summary.json").write_text(json.dumps({"val_clean": False}))
    assert calibration.main(["--artifacts", str(tmp_path), "--output", str(tmp_path / "page.md")]) == 1
    assert capsys.readouterr().err == (
        f"error: calibration: {tmp_path}/noise/summary.json: expected a run with clean validation labels "
        "(noise.val_clean), which this check corrupts and scores against, found val_clean false\n")
    assert not (tmp_path / "page.md").exists()
