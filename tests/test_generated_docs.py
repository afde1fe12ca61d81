"""Every generated doc is the rendering of its committed data: a doc edited by hand, or data changed without the
doc rendered again, fails here, naming the doc and the command that renders it.

- docs/benchmarks.md, docs/results.md and docs/quality/'s pages (inner_lr, seeds, held_out, exact, calibration):
  rendered again from their JSON and compared;
- the generated blocks of docs/serving.md and docs/monitoring.md (``docs.generate``): likewise, and the release
  they quote (``docs/release/``) is one release, the one docs/pipeline-run.md says the run released;
- docs/pipeline-run.md, whose artifacts are not in git: the md5 of every artifact it was rendered from must be the
  md5 ``dvc.lock`` lists; where the artifacts are here with those md5s, the page is rendered again and compared.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
import yaml

from benchmarks.quality import calibration, exact, held_out, inner_lr, seeds
from benchmarks.quality import report as quality_report
from benchmarks.speed import report as bench_report
from components.common import report
from docs import generate

ROOT = Path(__file__).resolve().parent.parent
PIPELINE_RUN = Path("docs/pipeline-run.md")
RESULTS_COMMAND = "make results (python -m components.common.report --output docs/pipeline-run.md)"


def _json(path: str) -> dict:
    return json.loads((ROOT / path).read_text())


RENDERED = {  # doc: (its data, the command that renders it again, the rendering)
    "docs/benchmarks.md": ("benchmarks/results.json and benchmarks/gpu/results.json",
                           "python -m benchmarks.speed.report",
                           lambda: bench_report.render(_json("benchmarks/results.json"),
                                                       _json("benchmarks/gpu/results.json"))),
    "docs/results.md": ("docs/quality/results.json", "python -m benchmarks.quality.report",
                        lambda: quality_report.render(_json("docs/quality/results.json"))),
    "docs/quality/inner_lr.md": ("docs/quality/inner_lr.json", "python -m benchmarks.quality.inner_lr --render",
                                 lambda: inner_lr.render(_json("docs/quality/inner_lr.json"),
                                                         _json("docs/quality/results.json"))),
    "docs/quality/seeds.md": ("docs/quality/seeds.json", "python -m benchmarks.quality.seeds --render",
                              lambda: seeds.render(_json("docs/quality/seeds.json"),
                                                   _json("docs/quality/results.json"))),
    "docs/quality/held_out.md": ("docs/quality/held_out.json", "python -m benchmarks.quality.held_out --render",
                                 lambda: held_out.render(_json("docs/quality/held_out.json"))),
    "docs/quality/exact.md": ("docs/quality/exact.json", "python -m benchmarks.quality.exact --render",
                              lambda: exact.render(_json("docs/quality/exact.json"),
                                                   _json("docs/quality/results.json"))),
    "docs/quality/calibration.md": ("docs/quality/calibration.json",
                                    "python -m benchmarks.quality.calibration --render",
                                    lambda: calibration.render(_json("docs/quality/calibration.json"))),
}


@pytest.mark.parametrize("doc", sorted(RENDERED))
def test_the_doc_is_the_rendering_of_its_committed_data(doc):
    data, command, render = RENDERED[doc]
    if (ROOT / doc).read_text() != render():
        pytest.fail(f"{doc} differs from its rendering of {data}: run `{command}` (or `make docs`) and commit the "
                    "doc; a change by hand belongs in the renderer or the data", pytrace=False)


# --- figures quoted in prose ------------------------------------------------------------------------------------

GENERATED = ("docs/results.md", "docs/quality/inner_lr.md", "docs/quality/seeds.md", "docs/pipeline-run.md",
             "docs/benchmarks.md", "docs/quality/held_out.md", "docs/quality/exact.md", "docs/quality/calibration.md")
# (doc, where its quoted figures start, where they end, which are checked): "signed", every difference (a figure
# with a sign or a ± spread); "all", every decimal figure
QUOTED = {"quality.md, What we learned": ("docs/quality.md", "\n## What we learned\n", "\n## ", "signed"),
          "quality.md, the headline setting": ("docs/quality.md", "\n| headline setting |", "\n", "all"),
          "README.md, results": ("README.md", "\n## How much better than cross-entropy?", "\n## ", "signed"),
          "data.md, calibration on noisy labels": ("docs/data.md", "**Calibration on noisy labels.**", "\n\n", "all")}
FIGURE = re.compile(r"(?<![\w.])([+-]?)(\d+\.\d+)(?: ± (\d+\.\d+))?(?![\w.]*\d)")


def _figures(text: str) -> list[tuple[str, str, str]]:
    """(sign, value, spread) of every decimal figure of ``text``, ``−`` read as ``-``, across line breaks."""
    return FIGURE.findall(re.sub(r"\s+", " ", text.replace("−", "-")))


def _quoted(doc: str, start: str, end: str) -> str:
    text = (ROOT / doc).read_text()
    assert start in text, f"{doc}: expected a part starting {start.strip()!r}"
    return text.split(start, 1)[1].split(end, 1)[0]


@pytest.mark.parametrize("part", sorted(QUOTED))
def test_every_figure_the_prose_quotes_is_in_a_generated_doc(part):
    """A rerun that changes the records changes the generated docs; the prose quoting the old figures fails here
    until it is updated (or the figure is generated)."""
    doc, start, end, which = QUOTED[part]
    generated = {f"{sign}{value}" + (f" ± {spread}" if spread else "")
                 for path in GENERATED for sign, value, spread in _figures((ROOT / path).read_text())}
    generated |= {f"{sign}{value}" for path in GENERATED for sign, value, _ in _figures((ROOT / path).read_text())}
    missing = []
    for sign, value, spread in _figures(_quoted(doc, start, end)):
        if which == "signed" and not (sign or spread):
            continue
        # an unsigned spread names its direction in words ("2.47 ± 0.82 points below"): either sign is the figure
        signs = [sign] if sign or not spread else ["+", "-", ""]
        if not any(f"{s}{value}" + (f" ± {spread}" if spread else "") in generated for s in signs):
            missing.append(f"{sign}{value}" + (f" ± {spread}" if spread else ""))
    assert not missing, (f"{part}: {', '.join(missing)} in none of {', '.join(GENERATED)}: update the prose to the "
                         "generated figures, or generate the figure (benchmarks/quality/report.py)")


def test_the_readme_states_the_recorded_time_of_make_quality():
    results, probe = _json("docs/quality/results.json"), _json("docs/quality/inner_lr.json")
    more = _json("docs/quality/seeds.json")
    study = results["wall_seconds"] + sum(r["wall_seconds"] for r in results.get("reruns", []))
    text = re.sub(r"\s+", " ", _quoted("README.md", "\n## How much better than cross-entropy?", "\n## "))
    total = study + probe["wall_seconds"] + more["wall_seconds"]
    stated = (f"({total / 60:.1f} minutes on 2 CPU cores: {study / 60:.1f} for the study, as results.md records, "
              f"{probe['wall_seconds'] / 60:.1f} for the inner learning rates, as inner_lr.md records, and "
              f"{more['wall_seconds'] / 60:.1f} for more seeds, as seeds.md records")
    assert stated in text, f"README.md: expected `make quality`'s recorded time, {stated!r}"
    exact = f"({_json('docs/quality/exact.json')['wall_seconds'] / 60:.1f} minutes, as exact.md records"
    assert exact in text, f"README.md: expected the `exact` probe's recorded time, {exact!r}"


@pytest.mark.parametrize("doc", [str(doc) for doc in generate.DOCS])
def test_the_generated_blocks_are_the_rendering_of_their_committed_data(doc):
    problems = [line for line in generate.stale(ROOT) if line.startswith(f"{doc}:")]
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def test_a_stale_block_is_named_with_its_data_and_command(tmp_path):
    for path in {*generate.DOCS, *(s for block in generate.BLOCKS.values() for s in block.sources),
                 generate.RELEASE / "decision.json", generate.RELEASE / "v1_response.json"}:
        (tmp_path / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / path, tmp_path / path)
    assert generate.stale(tmp_path) == []
    doc = tmp_path / "docs" / "serving.md"
    doc.write_text(re.sub(r'"confidence": [0-9.]+', '"confidence": 0.5365', doc.read_text(), count=1))
    assert generate.stale(tmp_path) == [
        "docs/serving.md: the block serving-response differs from its rendering of docs/release/v1_response.json, "
        "docs/release/model_card.json; run `python -m docs.generate` (`make docs`)"]
    doc.write_text(doc.read_text().replace("<!-- end: serving-runtime -->\n", ""))
    expected = "docs/serving.md: expected the generated blocks serving-response, serving-runtime once each, found"
    with pytest.raises(generate.GenerateError, match=re.escape(expected)):
        generate.rendered(Path("docs/serving.md"), tmp_path)


def test_the_recorded_release_is_one_release():
    card, decision = _json("docs/release/model_card.json"), _json("docs/release/decision.json")
    answer = _json("docs/release/v1_response.json")
    assert card["onnx_sha256"] == decision["onnx_sha256"] == answer["onnx_sha256"]
    assert answer["version"] == decision["version"] and answer["status"] == 200
    (prediction,) = answer["response"]["predictions"]
    assert prediction["class"] == card["class_names"][prediction["class_index"]]


def test_the_recorded_release_is_the_one_the_documented_run_released():
    """The release the documented run's gate made, or found the champion already (a rerun of an unchanged run)."""
    released = re.search(r"(?:released as |the champion already \()`([^`]+)`", (ROOT / PIPELINE_RUN).read_text())
    if released is None:
        pytest.skip(f"{PIPELINE_RUN}: the documented run's model is in no release (its gate failed)")
    recorded = _json("docs/release/decision.json")["version"]
    assert recorded == released[1], (
        f"docs/release/ holds {recorded}, {PIPELINE_RUN} says the run released {released[1]}: record it with "
        f"`python -m docs.generate --record releases/{released[1]}` (part of `make results`)")


def test_the_recorded_release_is_a_copy_of_the_local_one():
    version = _json("docs/release/decision.json")["version"]
    local = ROOT / "releases" / version
    if not local.is_dir():
        pytest.skip(f"releases/{version} is not in this checkout (releases/ is not in git)")
    for name in ("model_card.json", "decision.json"):
        assert (local / name).read_bytes() == (ROOT / "docs" / "release" / name).read_bytes(), (
            f"docs/release/{name} differs from releases/{version}/{name}: record it again with "
            f"`python -m docs.generate --record releases/{version}`")


# --- docs/pipeline-run.md ------------------------------------------------------------------------------------


def _sources() -> dict[str, str]:
    """The artifacts docs/pipeline-run.md names under *Sources*, with their md5."""
    text = (ROOT / PIPELINE_RUN).read_text()
    assert "\n## Sources\n" in text, f"{PIPELINE_RUN}: expected a Sources section; run `{RESULTS_COMMAND}`"
    return dict(re.findall(r"^\| `([^`]+)` \| `([0-9a-f]{32})` \|$", text.split("\n## Sources\n")[1], re.M))


def _locked() -> dict[str, str]:
    """Every output file dvc.lock lists, with its md5."""
    stages = yaml.safe_load((ROOT / "dvc.lock").read_text())["stages"]
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def test_the_held_out_label_issue_check_measured_the_teacher_dvc_lock_lists():
    measured, locked = _json("docs/quality/held_out.json")["teacher_md5"], _locked()["artifacts/mlnt/teacher.pt"]
    assert measured == locked, (f"docs/quality/held_out.md measured a teacher of md5 {measured}, dvc.lock lists "
                                f"{locked}: after `dvc repro`, run `make results` (python -m "
                                "benchmarks.quality.held_out) and commit it with dvc.lock")


def test_the_pipeline_run_was_rendered_from_the_artifacts_dvc_lock_lists():
    sources, locked = _sources(), _locked()
    assert sorted(sources) == sorted(f"artifacts/{step}/{name}" for step, name in report.SOURCES), (
        f"{PIPELINE_RUN}: expected every artifact components.common.report reads under Sources; "
        f"run `{RESULTS_COMMAND}`")
    differ = [f"{path}: rendered from md5 {md5}, dvc.lock lists {locked.get(path, 'no such output')}"
              for path, md5 in sources.items() if locked.get(path) != md5]
    assert not differ, (f"{PIPELINE_RUN} does not describe the run in dvc.lock ({'; '.join(differ)}): after "
                        f"`dvc repro`, run `{RESULTS_COMMAND}` and commit it with dvc.lock")


def test_the_pipeline_run_is_the_rendering_of_the_local_artifacts():
    locked = _locked()
    paths = [Path("artifacts") / step / name for step, name in report.SOURCES]
    missing = [str(p) for p in paths if not (ROOT / p).is_file()]
    if missing:
        pytest.skip(f"{', '.join(missing)}: not here (artifacts/ is not in git; `dvc repro` makes them)")
    other = [str(p) for p in paths if report.md5(ROOT / p) != locked.get(p.as_posix())]
    if other:
        pytest.skip(f"{', '.join(other)}: not the run dvc.lock records (their md5 differs), so not the run "
                    f"{PIPELINE_RUN} describes")
    fresh = report.render(ROOT / "artifacts", ROOT / "params.yaml", ROOT / "dvc.lock")
    if (ROOT / PIPELINE_RUN).read_text() != fresh:
        pytest.fail(f"{PIPELINE_RUN} differs from its rendering of artifacts/ (dvc.lock's run): run "
                    f"`{RESULTS_COMMAND}`", pytrace=False)


# --- components.common.report on a run without ground truth ---------------------------------------------------------


CALIBRATION = {"temperature": 0.5, "fitted_on": "clean validation set (10 images)", "method": "temperature scaling",
               "test_ece_before": 0.1, "test_ece_after": 0.02, "val_ece_before": 0.12, "val_ece_after": 0.03}


def _run(tmp_path: Path, issues: dict, validation: dict | None = None, realised: float | None = 0.0,
         calibration: dict = CALIBRATION, released: str = "teacher") -> Path:
    """The six artifacts components.common.report reads, for a tiny made-up run."""
    model = {"accuracy": 0.8, "macro_f1": 0.79, "ece": 0.1}
    files = {"noise/summary.json": {"train": 90, "val": 10, "val_clean": True, "kind": "none", "requested_rate": None,
                                    "realised_rate_train": realised},
             "baseline/metrics.json": {"epochs": 3, "best_epoch": 2},
             "mlnt/metrics.json": {"mode": "head", "released": "teacher", "epochs": 3, "best_epoch": 3,
                                   "warm_start": False, "meta_weight": 0.4},
             "evaluate/metrics.json": {"baseline": {**model, "best_epoch_accuracy": 0.81}, "student": model,
                                       "teacher": model, "label_issues": issues,
                                       **({"validation": validation} if validation else {})},
             "gate/decision.json": {"passed": False, "reasons": ["fail: accuracy 0.8000, required at least 0.9"]},
             "export/model_card.json": {"model": released, "calibration": calibration}}
    for name, content in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(json.dumps(content))
    (tmp_path / "params.yaml").write_text(yaml.safe_dump({"ingest": {"dataset": "imagefolder"},
                                                          "baseline": {"network": "small_cnn", "epochs": 3},
                                                          "mlnt": {"epochs": 3}}))
    return tmp_path


def test_a_run_without_ground_truth_shows_what_was_not_measured(tmp_path):
    issues = {"estimated_issues": 7, "estimated_noise_rate": 0.07, "ground_truth": False,
              "per_class": {"cat": {"labels": 50, "flagged": 5, "share": 0.1},
                            "dog": {"labels": 40, "flagged": 2, "share": 0.05}}}
    art = _run(tmp_path, issues, {"source": "carved from the training labels", "clean": False,
                                  "warning": "selection ran on noisy labels"}, realised=None)
    text = report.render(art, art / "params.yaml", art / "no-dvc.lock")
    cells = "| not measured: no ground truth " * 5
    assert f"| 7 | 0.0700 {cells}|" in text
    assert "| cat | 50 | 5 | 0.1000 |" in text and "| dog | 40 | 2 | 0.0500 |" in text
    assert "imagefolder, 90 training and 10 validation images (**noisy validation labels**: selection ran on noisy " \
           "labels)" in text
    assert "noise `none`, realised unknown (no clean label known) on the training labels" in text  # no rate asked
    assert "Decision: **fail**." in text


def test_a_run_with_ground_truth_keeps_its_table_and_reads_params_from_dvc_lock(tmp_path):
    issues = {"estimated_issues": 7, "estimated_noise_rate": 0.07, "true_noise_rate": 0.06, "precision": 0.5,
              "recall": 0.6, "f1": 0.55, "auroc": 0.9, "ground_truth": True,
              "per_class": {"cat": {"labels": 50, "flagged": 5, "share": 0.1}}}
    art = _run(tmp_path, issues, {"source": "the noise step's split", "clean": True})
    lock = {"stages": {"ingest": {"params": {"params.yaml": {"ingest": {"dataset": "fashion-mnist"}}}}}}
    (art / "dvc.lock").write_text(yaml.safe_dump(lock))
    text = report.render(art, art / "params.yaml", art / "dvc.lock")
    assert "| 7 | 0.0700 | 0.0600 | 0.5000 | 0.6000 | 0.5500 | 0.9000 |" in text
    assert "not measured" not in text and "| cat |" not in text
    assert "Data: fashion-mnist, 90 training and 10 validation images (clean validation labels)" in text
    assert f"| `artifacts/gate/decision.json` | `{report.md5(art / 'gate' / 'decision.json')}` |" in text


def test_the_ece_column_is_the_uncalibrated_networks_and_the_released_onnx_has_its_calibrated_ece(tmp_path):
    """The released ONNX divides its logits by the export step's temperature: its ECE is the card's
    ``test_ece_after``, not the table's (evaluate's, of the network before calibration), and the page says so."""
    art = _run(tmp_path, {"estimated_issues": 7, "estimated_noise_rate": 0.07})
    text = report.render(art, art / "params.yaml", art / "no-dvc.lock")
    assert "| model | accuracy | macro-F1 | ECE (uncalibrated) | epochs (last / chosen) |" in text
    assert ("ECE (uncalibrated): of each network's own probabilities. The ONNX the export step wrote (MLNT's "
            "released model) divides its logits by T = 0.500, fitted by temperature scaling on the clean validation "
            "set (10 images): its test ECE is 0.0200, against 0.1000 uncalibrated (`artifacts/export/"
            "model_card.json`, `calibration`).") in text
    assert f"| `artifacts/export/model_card.json` | `{report.md5(art / 'export' / 'model_card.json')}` |" in text


def test_a_calibration_kept_at_t_1_is_said_with_its_warning(tmp_path):
    kept = {"temperature": 1.0, "fitted_on": "noisy validation set (10 images)", "test_ece_before": 0.1,
            "test_ece_after": 0.1, "method": "none: too few validation images to estimate the labels' noise matrix",
            "warning": "kept T = 1: the noisy validation set's 10 images give 1 anchor point(s) a class"}
    art = _run(tmp_path, {"estimated_issues": 7, "estimated_noise_rate": 0.07}, calibration=kept,
               released="baseline_best_epoch")
    text = report.render(art, art / "params.yaml", art / "no-dvc.lock")
    assert ("The ONNX the export step wrote (CE's best epoch on validation) keeps its logits as they are (T = "
            "1.000; none: too few validation images to estimate the labels' noise matrix, on the noisy validation "
            "set (10 images)): its test ECE is 0.1000, against 0.1000 uncalibrated (`artifacts/export/"
            "model_card.json`, `calibration`). The export step warned: kept T = 1: the noisy validation set's 10 "
            "images give 1 anchor point(s) a class.") in text


def _recorded_copy(root: Path) -> Path:
    """The generated docs and every file their blocks are rendered from, copied under ``root``."""
    for path in {*generate.DOCS, *(s for block in generate.BLOCKS.values() for s in block.sources),
                 generate.RELEASE / "decision.json", generate.RELEASE / "v1_response.json"}:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(ROOT / path, root / path)
    return root


def test_a_stale_monitoring_block_is_named_too(tmp_path):
    doc = _recorded_copy(tmp_path) / "docs" / "monitoring.md"
    doc.write_text(doc.read_text().replace("**The traffic is synthetic**", "**The traffic is real**", 1))
    assert generate.stale(tmp_path) == [
        "docs/monitoring.md: the block monitoring-snapshot differs from its rendering of "
        "docs/monitoring/snapshot.json, docs/release/model_card.json; run `python -m docs.generate` (`make docs`)"]


def test_a_block_given_twice_or_closed_by_another_name_is_refused(tmp_path):
    doc = _recorded_copy(tmp_path) / "docs" / "serving.md"
    block = re.search(r"<!-- generated: serving-runtime -->\n.*?<!-- end: serving-runtime -->\n", doc.read_text(),
                      re.S)[0]
    text = doc.read_text()
    doc.write_text(text + "\n" + block)
    with pytest.raises(generate.GenerateError, match="found serving-response, serving-runtime, serving-runtime"):
        generate.rendered(Path("docs/serving.md"), tmp_path)
    doc.write_text(text.replace("<!-- end: serving-response -->", "<!-- end: serving-runtime -->"))  # misnamed end
    with pytest.raises(generate.GenerateError, match=r"once each, found serving-runtime$"):
        generate.rendered(Path("docs/serving.md"), tmp_path)


def test_data_of_another_release_than_the_recorded_one_is_refused_with_the_fix(tmp_path):
    """The answer in docs/serving.md and the calibration quoted in docs/monitoring.md must be the recorded
    release's: data of another release names the fix instead of quoting another model's card."""
    _recorded_copy(tmp_path)
    recorded = _json("docs/release/decision.json")["version"]
    answer = tmp_path / generate.RELEASE / "v1_response.json"
    answer.write_text(json.dumps({**json.loads(answer.read_text()), "version": "v-other"}))
    with pytest.raises(generate.GenerateError, match=re.escape(
            f"docs/release: expected the release v-other, found {recorded}; record the release again with "
            "`python -m docs.generate --record releases/latest`")):
        generate.serving_response(tmp_path)
    snapshot = tmp_path / generate.SNAPSHOT
    snap = json.loads(snapshot.read_text())
    model = {key: value for key, value in snap["model"].items() if key != "calibration"}  # an older snapshot's
    snapshot.write_text(json.dumps({**snap, "model": {**model, "version": "v-other"}}))
    with pytest.raises(generate.GenerateError, match=re.escape(
            f"expected the release v-other, found {recorded}; take the snapshot again")):
        generate.monitoring_snapshot(tmp_path)


def test_check_exits_1_naming_each_stale_block_and_0_when_none(monkeypatch, capsys):
    monkeypatch.setattr(generate, "stale", lambda: ["docs/serving.md: the block serving-runtime differs"])
    assert generate.main(["--check"]) == 1
    out, err = capsys.readouterr()
    assert err == "docs/serving.md: the block serving-runtime differs\n" and out == ""
    monkeypatch.setattr(generate, "stale", lambda: [])
    assert generate.main(["--check"]) == 0
    assert capsys.readouterr().out == "docs.generate: docs/serving.md, docs/monitoring.md up to date\n"


def test_the_totals_count_failed_inference_requests_apart_from_the_successful_ones():
    sent = {"v2 batch 16 200": 10, "v2 batch 16 500": 2, "v2 batch 1 200": 5, "v1 batch 1 200": 3, "bad: shape 400": 4,
            "feedback 200": 6, "feedback 429": 1}
    assert generate._totals({"sent": sent}) == ("In all, 18 successful inference requests (10 of them with 16 images), "
                                                "2 failed ones, 4 client errors and 6 feedback posts.")
    assert generate._clients({}) == "one client"  # snapshots taken before the gateway's users


def test_a_figure_from_a_rerun_section_is_dated_by_that_rerun():
    """`python -m benchmarks.run --sections serving` then `docs.generate` quoted the new serving latency under the
    date of the whole earlier run."""
    bench = {"finished": "2026-12-01 06:23 UTC",
             "reruns": [{"sections": ["serving"], "finished": "2026-12-02 09:52 UTC"},
                        {"sections": ["inference"], "finished": "2026-12-03 10:00 UTC"}]}
    assert generate.measured(bench, "serving") == "2026-12-02 09:52 UTC"
    assert generate.measured(bench, "meta_step") == "2026-12-01 06:23 UTC"
