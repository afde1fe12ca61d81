"""The container image definition and the model-release workflow, checked with the real linters (hadolint,
actionlint; both ship their binaries in PyPI wheels) and against the project's own pins and rules."""

import re
import subprocess
import sys
from pathlib import Path

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
    assert "benchmarks" in folders  # make bench (python -m benchmarks.run) runs in the image
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
