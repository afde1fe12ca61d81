"""The container image definition and the model-release workflow, checked with the real linters (hadolint,
actionlint; both ship their binaries in PyPI wheels) and against the project's own pins and rules."""

import hashlib
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCKERFILE = (ROOT / "Dockerfile").read_text()


def lint(tool: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / tool), *args], cwd=ROOT, capture_output=True, text=True, check=False)


def test_hadolint_passes_the_dockerfile():
    done = lint("hadolint", "Dockerfile")
    assert done.returncode == 0, done.stdout + done.stderr


def test_hadolint_would_catch_a_root_image(tmp_path):
    """The check can fail: the same linter on a Dockerfile that breaks its rules."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python:latest\nRUN pip install torch\nUSER root\n")
    done = subprocess.run([str(BIN / "hadolint"), str(bad)], capture_output=True, text=True, check=False)
    assert done.returncode != 0 and "DL3007" in done.stdout and "DL3013" in done.stdout


def test_image_runs_as_a_non_root_user_and_holds_no_secrets():
    users = re.findall(r"^USER\s+(\S+)", DOCKERFILE, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("0", "root")
    names = re.findall(r"^(?:ENV|ARG)\s+(\w+)", DOCKERFILE, flags=re.M)
    names += re.findall(r"^\s+(\w+)=", DOCKERFILE, flags=re.M)  # continuation lines of ENV
    assert not [n for n in names if re.search(r"PASSWORD|SECRET|TOKEN|API_KEY|CREDENTIAL", n, re.I)]


def test_image_pins_match_the_project():
    pins = dict(re.findall(r"^(torch|torchvision)==(\S+)", (ROOT / "constraints.txt").read_text(), flags=re.M))
    for package, version in pins.items():
        assert f"{package}=={version}" in DOCKERFILE
    assert "-c constraints.txt ." in DOCKERFILE


def test_every_copied_path_exists_and_is_not_dockerignored():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert {".venv", "data", "artifacts", "releases", ".git"} <= ignored
    for line in re.findall(r"^COPY\s+(.+)$", DOCKERFILE, flags=re.M):
        for source in line.split()[:-1]:
            assert (ROOT / source).exists(), source
            assert source.rstrip("/") not in ignored, source


def test_the_code_the_image_ships_never_imports_the_tests():
    """tests/ is not in the image (.dockerignore): a shipped module that imports from it works from a checkout only."""
    folders = [source.rstrip("/") for line in re.findall(r"^COPY\s+(.+)$", DOCKERFILE, flags=re.M)
               for source in line.split()[:-1] if (ROOT / source).is_dir()]
    assert "benchmarks" in folders  # for a GPU node, its scripts with --output/--json under /app/artifacts
    found = [f"{path.relative_to(ROOT)}:{number}" for folder in folders
             for path in sorted((ROOT / folder).rglob("*.py"))
             for number, line in enumerate(path.read_text().splitlines(), 1)
             if re.match(r"\s*(from|import)\s+tests\b", line)]
    assert not found, f"shipped modules import from tests/: {', '.join(found)}"


def test_actionlint_passes_the_release_workflow():
    done = lint("actionlint", ".github/workflows/release.yml")
    assert done.returncode == 0, done.stdout + done.stderr


def test_dockerignore_keeps_credential_files_out_of_the_image():
    ignored = {line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()}
    assert {".env*", "*.env", "*.pem", "*.key", ".git"} <= ignored


def test_the_pinned_dependencies_are_audited_before_any_release():
    """pip-audit needs the network (PyPI's advisory data), so the workflow runs it, not `make test`: on the exact
    pins of constraints.txt, in the job the release job needs."""
    workflow = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())
    runs = [step.get("run", "") for step in workflow["jobs"]["test"]["steps"]]
    audit = next(run for run in runs if "pip_audit" in run)
    assert re.search(r"pip install pip-audit==\S+", audit)
    assert all(flag in audit for flag in ("--requirement constraints.txt", "--no-deps", "--strict"))
    assert workflow["jobs"]["release"]["needs"] == "test"


def test_release_publishes_only_after_the_gate_check():
    """The gate ran in ``make pipeline``; the workflow only reads its decision (``--check``): running the gate again
    (``--enforce``) would release a second model, judged against the first, and rewrite the DVC output."""
    workflow = yaml.safe_load((ROOT / ".github/workflows/release.yml").read_text())
    release = workflow["jobs"]["release"]
    assert release["needs"] == "test" and workflow["permissions"] == {"contents": "read"}
    names = [step.get("name", "") for step in release["steps"]]
    runs = [step.get("run", "") for step in release["steps"]]
    gate = next(i for i, run in enumerate(runs) if "components.gate --check" in run)
    assert not any("--enforce" in run for run in runs)
    publish = names.index("Publish the released model")
    assert runs.index("make pipeline") < gate < publish
    assert "if" not in release["steps"][publish]  # runs only when every earlier step passed


def test_the_image_holds_the_manifest_the_deploy_step_creates_the_inference_service_from():
    from pipelines.inference_service import MANIFEST  # noqa: PLC0415 - imports kserve

    copied = [line.split()[:-1] for line in re.findall(r"^COPY\s+(.+)$", DOCKERFILE, flags=re.M)]
    relative = MANIFEST.relative_to(ROOT) if MANIFEST.is_absolute() else MANIFEST
    assert any(str(relative) in sources or any(str(relative).startswith(s.rstrip("/") + "/") for s in sources)
               for sources in copied), relative


# ------------------------------------------------------------------------------------------------- the champion
WORKFLOW = ROOT / ".github" / "workflows" / "release.yml"
RESTORE = "Restore the champion (the latest published model release)"


def release_job() -> dict:
    return yaml.safe_load(WORKFLOW.read_text())["jobs"]["release"]


def test_release_runs_from_main_only_one_at_a_time_without_a_persisted_token():
    """A run started by hand on another branch publishes nothing; two releases never run at once (whatever their
    ref), so each judges against the champion the one before published; no checkout leaves a token in git's config
    (gh takes GH_TOKEN, nothing pushes with git)."""
    workflow = yaml.safe_load(WORKFLOW.read_text())
    release = workflow["jobs"]["release"]
    assert release["if"] == "github.ref == 'refs/heads/main'"
    assert release["concurrency"] == {"group": "model-release", "cancel-in-progress": False}
    checkouts = [step for job in workflow["jobs"].values() for step in job["steps"]
                 if step.get("uses", "").startswith("actions/checkout@")]
    assert len(checkouts) == 2 and all(step["with"]["persist-credentials"] is False for step in checkouts)
    runs = " ".join(step.get("run", "") for job in workflow["jobs"].values() for step in job["steps"])
    assert "git push" not in runs


def test_release_restores_the_published_champion_before_the_pipeline():
    steps = release_job()["steps"]
    names = [step.get("name", "") for step in steps]
    runs = [step.get("run", "") for step in steps]
    restore = names.index(RESTORE)
    assert runs.index("make setup data") < restore < runs.index("make pipeline")
    assert "if" not in steps[restore] and steps[restore]["env"]["GH_TOKEN"] == "${{ github.token }}"
    assert "gh release download" in runs[restore] and "pipelines.champion restore" in runs[restore]


def fake_release(folder: Path, *, accuracy: float = 0.8617) -> Path:
    """The assets the publish step uploads: model.onnx and the model card describing it."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(b"onnx bytes " + folder.name.encode())
    digest = hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()
    (folder / "model_card.json").write_text(json.dumps({"model": "teacher", "onnx_sha256": digest,
                                                        "metrics": {"accuracy": accuracy}}))
    return folder


def run_restore_step(tmp_path: Path, releases: dict[str, Path]) -> subprocess.CompletedProcess:
    """The workflow's restore step itself, in bash, in a fresh checkout (``tmp_path``: no releases/) with a fake
    ``gh`` that lists ``releases`` (tag: folder of assets) and downloads their files."""
    (tmp_path / "bin").mkdir()
    (tmp_path / ".venv").symlink_to(BIN.parent)  # the project's environment, as `make setup` leaves it
    listing = tmp_path / "tags.txt"
    listing.write_text("".join(f"{tag}\n" for tag in [*releases, "v1.0.0"]))
    gh = tmp_path / "bin" / "gh"
    gh.write_text("#!/bin/bash\nset -e\n"
                  f'if [ "$1 $2" = "release list" ]; then cat {listing}; exit 0; fi\n'
                  'if [ "$1 $2" = "release download" ]; then\n'
                  '  tag="$3"; shift 3; dir=""\n'
                  '  while [ $# -gt 0 ]; do [ "$1" = "--dir" ] && dir="$2"; shift; done\n'
                  f'  mkdir -p "$dir"; cp "{tmp_path}/assets/$tag"/* "$dir"/; exit 0\n'
                  'fi\nexit 2\n')
    gh.chmod(0o755)
    (tmp_path / "assets").mkdir()
    for tag, folder in releases.items():
        folder.rename(tmp_path / "assets" / tag)
    (tmp_path / "runner").mkdir()
    script = release_job()["steps"][[s.get("name") for s in release_job()["steps"]].index(RESTORE)]["run"]
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "RUNNER_TEMP": str(tmp_path / "runner"),
           "GITHUB_ENV": str(tmp_path / "runner" / "github-env"), "PYTHONPATH": str(ROOT), "GH_TOKEN": "x",
           "GH_REPO": "o/r", "HOME": str(tmp_path)}
    return subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=False)


def github_env(checkout: Path) -> dict[str, str]:
    """What the restore step run in ``checkout`` left for the later steps (``GITHUB_ENV``: one NAME=value a line)."""
    lines = (checkout / "runner" / "github-env").read_text().splitlines()
    return dict(line.split("=", 1) for line in lines)


def candidate(tmp_path: Path, accuracy: float) -> tuple[Path, Path]:
    """An export and evaluate folder the gate judges: a model of ``accuracy``, parity held."""
    export, evaluate = fake_release(tmp_path / "export", accuracy=accuracy), tmp_path / "evaluate"
    (export / "parity.json").write_text(json.dumps({"passed": True}))
    evaluate.mkdir()
    (evaluate / "metrics.json").write_text(json.dumps({"teacher": {"accuracy": accuracy},
                                                       "baseline_best_epoch": {"accuracy": accuracy}}))
    return export, evaluate


def test_the_restored_champion_is_what_the_gate_judges_against(tmp_path):
    """CI's fresh checkout, a candidate 3 points below the published champion: without the restored champion the
    gate passes it ("no champion yet"); with it, max_regression fails it."""
    from components.gate import GateConfig, decide  # noqa: PLC0415

    old = fake_release(tmp_path / "older", accuracy=0.70)
    champion = fake_release(tmp_path / "latest", accuracy=0.8617)
    checkout = tmp_path / "checkout"
    checkout.mkdir()
    done = run_restore_step(checkout, {"model-v20261130T103942Z-6b55a15c": old,
                                       "model-v20261130T200637Z-01d62f8c": champion})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "champion: releases/latest -> v20261130T200637Z-01d62f8c (accuracy 0.8617)" in done.stdout
    registry = checkout / "releases"
    assert github_env(checkout) == {"MODEL_REGISTRY": "releases"}  # no params.yaml: the gate's default
    assert (registry / "latest").readlink() == Path("v20261130T200637Z-01d62f8c")
    assert {p.name for p in (registry / "latest").iterdir()} == {"model.onnx", "model_card.json"}
    export, evaluate = candidate(tmp_path, 0.8317)
    config = GateConfig(min_accuracy=0.0, max_below_baseline=1.0, max_regression=0.01)
    assert decide(config, export=export, evaluate=evaluate, registry=tmp_path / "fresh")["passed"]
    judged = decide(config, export=export, evaluate=evaluate, registry=registry)
    assert not judged["passed"] and judged["champion_version"] == "v20261130T200637Z-01d62f8c"


def test_the_first_release_says_there_is_no_champion(tmp_path):
    done = run_restore_step(tmp_path, {})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "::notice::No previous model release" in done.stdout and "first release" in done.stdout
    assert not (tmp_path / "releases").exists()


def test_restore_refuses_what_the_gate_could_not_judge_against(tmp_path):
    from pipelines import champion  # noqa: PLC0415

    assert champion.latest_tag(["v1.0", "model-v20261130T103942Z-6b55a15c", "model-v20261201T000000Z-01d62f8c",
                                "model-latest"]) == "model-v20261201T000000Z-01d62f8c"
    assert champion.latest_tag(["v1.0", ""]) is None
    tag = "model-v20261201T000000Z-01d62f8c"
    tampered = fake_release(tmp_path / "tampered")
    (tampered / "model.onnx").write_bytes(b"another model")
    no_accuracy = fake_release(tmp_path / "no-accuracy")
    card = json.loads((no_accuracy / "model_card.json").read_text())
    (no_accuracy / "model_card.json").write_text(json.dumps({**card, "metrics": {}}))
    missing = fake_release(tmp_path / "missing")
    (missing / "model_card.json").unlink()
    damaged = [fake_release(tmp_path / f"accuracy-{i}", accuracy=a) for i, a in enumerate((float("nan"), 1.7, -0.1))]
    for folder, message in ((tampered, "expected the model card of the model.onnx beside it"),
                            (no_accuracy, "expected a released model card with metrics.accuracy"),
                            *((folder, "a finite number in \\[0, 1\\]") for folder in damaged),
                            (missing, "found none for model_card.json")):
        with pytest.raises(ValueError, match=message):
            champion.restore(folder, tag=tag, registry=tmp_path / "registry")
        assert not (tmp_path / "registry" / "latest").exists()
    with pytest.raises(ValueError, match="expected a model release tag"):
        champion.restore(fake_release(tmp_path / "good"), tag="v1.0", registry=tmp_path / "registry")
    assert champion.restore(tmp_path / "good", tag=tag, registry=tmp_path / "registry") == (tag[6:], 0.8617)
    with pytest.raises(FileExistsError, match="expected a registry without a champion"):
        champion.restore(tmp_path / "good", tag=tag, registry=tmp_path / "registry")


def test_restore_leaves_the_registry_as_it_was_when_it_refuses(tmp_path, capsys):
    """A card whose accuracy is not a number and a registry whose ``latest`` is a link to nothing are refused before
    anything is copied; the command says so in one line (exit 1), ``latest-tag`` of a missing file too, and prints
    nothing at all where there is no model release (the workflow's first release)."""
    from pipelines import champion  # noqa: PLC0415

    tag = "model-v20261201T000000Z-01d62f8c"
    text = fake_release(tmp_path / "text", accuracy="0.8617")
    registry = tmp_path / "registry"
    with pytest.raises(ValueError, match=r"expected a released model card with metrics\.accuracy"):
        champion.restore(text, tag=tag, registry=registry)
    assert not registry.exists()
    registry.mkdir()
    (registry / "latest").symlink_to("v20261130T000000Z-6b55a15c")  # a champion pruned away, or half restored
    good = fake_release(tmp_path / "good")
    assert champion.main(["restore", str(good), "--tag", tag, "--registry", str(registry)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: pipelines.champion: ") and err.count("\n") == 1, err
    assert "expected a registry without a champion" in err and [p.name for p in registry.iterdir()] == ["latest"]
    assert champion.main(["latest-tag", str(tmp_path / "no-such-file")]) == 1
    assert capsys.readouterr().err.count("\n") == 1
    (tmp_path / "tags.txt").write_text(f"v1.0\n{tag}-rc1\nmodel-latest\n")
    assert champion.main(["latest-tag", str(tmp_path / "tags.txt")]) == 0
    assert capsys.readouterr().out == ""


PUBLISH = "Publish the released model"


def run_publish_step(tmp_path: Path, decision: dict | None, *,
                     env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess, str]:
    """The workflow's publish step itself, in bash, after a gate that wrote ``decision`` (None: the one in
    ``tmp_path`` already), with the environment the restore step left (``env``; by default its own for a checkout
    without params.yaml), a fake ``gh`` that records its arguments and a fake report module; returns the run and
    what ``gh`` was asked."""
    (tmp_path / "bin").mkdir(parents=True, exist_ok=True)
    if decision is not None:
        (tmp_path / "artifacts" / "gate").mkdir(parents=True)
        (tmp_path / "artifacts" / "gate" / "decision.json").write_text(json.dumps(decision))
    calls = tmp_path / "gh-calls.txt"
    gh = tmp_path / "bin" / "gh"
    gh.write_text(f'#!/bin/bash\necho "$@" >> {calls}\n')
    gh.chmod(0o755)
    if (tmp_path / ".venv").is_symlink():  # the project's environment (run_restore_step's): the link goes, not it
        (tmp_path / ".venv").unlink()
    python = tmp_path / ".venv" / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text("#!/bin/bash\necho notes > release-notes.md\n")  # the report: its own tests cover it
    python.chmod(0o755)
    script = release_job()["steps"][[s.get("name") for s in release_job()["steps"]].index(PUBLISH)]["run"]
    env = {"PATH": f"{tmp_path / 'bin'}:/usr/bin:/bin", "GH_TOKEN": "x", "GITHUB_SHA": "abc", "HOME": str(tmp_path),
           **({"MODEL_REGISTRY": "releases"} if env is None else env)}
    done = subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=False)
    return done, calls.read_text() if calls.exists() else ""


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq (on GitHub's runners) is not installed here")
def test_publish_creates_the_release_the_gate_made_and_none_for_a_model_released_already(tmp_path):
    """A rerun of an unchanged pipeline passes the gate without a new version (``released`` false): publishing it
    again would fail on the existing tag, so the step says so and succeeds; a new version is published by its name."""
    version = "v20261201T050000Z-01d62f8c"
    digest = released(tmp_path / "new", "releases", version)
    decision = {"passed": True, "version": version, "released": True, "onnx_sha256": digest}
    done, asked = run_publish_step(tmp_path / "new", decision)
    assert done.returncode == 0, done.stderr
    assert asked.startswith(f"release create model-{version} releases/{version}/model.onnx "
                            f"releases/{version}/model_card.json "), asked
    done, asked = run_publish_step(tmp_path / "again", {"passed": True, "version": version, "released": False})
    assert done.returncode == 0 and asked == "", (done.stderr, asked)
    assert f"::notice::The model is the champion already ({version}, the same ONNX bytes)" in done.stdout


def released(checkout: Path, registry: str, version: str) -> str:
    """The release ``version`` as the gate leaves it in ``checkout``'s ``registry``; returns its model's sha256."""
    folder = fake_release(checkout / registry / version)
    return hashlib.sha256((folder / "model.onnx").read_bytes()).hexdigest()


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq (on GitHub's runners) is not installed here")
def test_the_release_job_restores_into_and_publishes_from_the_params_registry(tmp_path, monkeypatch):
    """A ``gate.registry`` other than ``releases`` (the recipes' ``releases/<task>``): the job restored the champion
    into ``releases/``, where the gate never looked, so a candidate 10 points below it passed ("no champion yet"),
    and published ``releases/latest``, the old champion, under the new version's name. Now the champion is
    restored where the gate looks, and the model published is the version the gate released there."""
    from components import gate  # noqa: PLC0415

    checkout = tmp_path / "checkout"
    checkout.mkdir()
    (checkout / "params.yaml").write_text("gate:\n  registry: releases/fmnist\n  min_accuracy: 0.0\n"
                                          "  max_below_baseline: 1.0\n")
    done = run_restore_step(checkout, {"model-v20261130T200637Z-01d62f8c": fake_release(tmp_path / "champion",
                                                                                         accuracy=0.95)})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "champion: releases/fmnist/latest -> v20261130T200637Z-01d62f8c (accuracy 0.9500)" in done.stdout
    assert github_env(checkout) == {"MODEL_REGISTRY": "releases/fmnist"}
    assert not (checkout / "releases" / "latest").exists()
    monkeypatch.chdir(checkout)
    candidate(checkout / "artifacts", 0.85)  # the gate as `make pipeline` runs it, with params.yaml
    assert gate.main([]) == 0 and gate.main(["--check"]) == 1
    decision = gate.read_decision()
    assert "fail: accuracy 0.8500, required at least the champion's 0.9500 minus max_regression 0.01 (the " \
           "champion: releases/fmnist/latest -> v20261130T200637Z-01d62f8c)" in decision["reasons"]
    for folder in ("export", "evaluate"):
        shutil.rmtree(checkout / "artifacts" / folder)
    candidate(checkout / "artifacts", 0.96)
    assert gate.main([]) == 0 and gate.main(["--check"]) == 0
    decision = gate.read_decision()
    version = decision["version"]
    assert decision["released"] is True and (checkout / "releases" / "fmnist" / "latest").readlink() == Path(version)
    done, asked = run_publish_step(checkout, None, env=github_env(checkout))
    assert done.returncode == 0, done.stdout + done.stderr
    assert asked.startswith(f"release create model-{version} releases/fmnist/{version}/model.onnx "
                            f"releases/fmnist/{version}/model_card.json "), asked


@pytest.mark.skipif(shutil.which("jq") is None, reason="jq (on GitHub's runners) is not installed here")
def test_publish_uploads_nothing_but_the_model_the_gate_released(tmp_path):
    """The file uploaded must be the model the decision names (its ``onnx_sha256``): another model in the version
    folder, or none, fails the step with one error naming the file, the expected and the found, and nothing is
    published."""
    version = "v20261201T050000Z-01d62f8c"
    digest = released(tmp_path / "other", "models/fmnist", version)
    (tmp_path / "other" / "models" / "fmnist" / version / "model.onnx").write_bytes(b"another model")
    decision = {"passed": True, "version": version, "released": True, "onnx_sha256": digest}
    done, asked = run_publish_step(tmp_path / "other", decision, env={"MODEL_REGISTRY": "models/fmnist"})
    other = hashlib.sha256(b"another model").hexdigest()
    assert done.returncode == 1 and asked == "", (done.stdout, asked)
    assert (f"::error::models/fmnist/{version}/model.onnx: expected the model the gate released (onnx_sha256 "
            f"{digest} in artifacts/gate/decision.json), found sha256 {other}; nothing published\n") in done.stdout
    done, asked = run_publish_step(tmp_path / "none", decision, env={"MODEL_REGISTRY": "models/fmnist"})
    assert done.returncode == 1 and asked == "", (done.stdout, asked)
    assert (f"::error::models/fmnist/{version}/model.onnx: expected the model the gate released (onnx_sha256 "
            f"{digest} in artifacts/gate/decision.json), found no such file; nothing published\n") in done.stdout


def test_the_image_records_the_commit_it_was_built_from():
    """The image has neither git nor .git (.dockerignore), so export's model card would say ``unknown``: the build
    passes the commit (``--build-arg GIT_COMMIT=$(git rev-parse HEAD)``, docs/deploy.md) into MLNT_GIT_COMMIT, which
    export reads there, and the OCI revision label."""
    assert re.search(r"^ARG GIT_COMMIT=unknown$", DOCKERFILE, flags=re.M)
    assert re.search(r"^ENV MLNT_GIT_COMMIT=\$\{GIT_COMMIT\}$", DOCKERFILE, flags=re.M)
    assert re.search(r"^LABEL org\.opencontainers\.image\.revision=\$\{GIT_COMMIT\}$", DOCKERFILE, flags=re.M)
    assert "--build-arg GIT_COMMIT=$(git rev-parse HEAD)" in (ROOT / "docs" / "deploy.md").read_text()
