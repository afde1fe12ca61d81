"""dvc.yaml against the code: every stage depends on every project file its module imports, directly or through
other project modules, so an edit anywhere in that code reruns the stage (and `dvc repro` never reports "up to
date" for results computed by old code); the folder dependencies do not hash Python's caches."""

import json
from pathlib import Path

import pytest
import yaml

from components.common.code import PACKAGES, ROOT, code_of

STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]


def covered(path: Path, deps: list[str]) -> bool:
    return any(path == Path(dep) or Path(dep) in path.parents for dep in deps)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_every_stage_depends_on_all_the_code_it_runs(stage):
    spec = STAGES[stage]
    module = spec["cmd"].split("python -m ", 1)[1].split()[0]
    missing = sorted(str(p) for p in code_of(module) if not covered(p, spec.get("deps", [])))
    assert not missing, f"dvc.yaml stage {stage!r} runs {module} but does not depend on: {', '.join(missing)}"


def test_evaluate_depends_on_the_noise_summary_its_validation_record_reads(tmp_path, monkeypatch):
    """metrics.json["validation"] comes from the noise step's summary.json: flipping noise.val_clean under kind none
    leaves labels.npz byte-identical, and without the dependency `dvc repro` would keep the old record."""
    from components import evaluate  # noqa: PLC0415
    from components.common.steps import FOLDERS  # noqa: PLC0415

    read, real = [], evaluate.read_json
    monkeypatch.setattr(evaluate, "read_json", lambda path, *args: read.append(Path(path)) or real(path, *args))
    (tmp_path / "summary.json").write_text(json.dumps({"val_source": "held_out", "val_clean": True, "val": 10}))
    assert evaluate.validation_record(tmp_path)["clean"] is True
    assert read, "validation_record read nothing through read_json"
    deps = STAGES["evaluate"]["deps"]
    for path in read:
        assert covered(FOLDERS["noise"] / path.relative_to(tmp_path), deps), (path.name, deps)


def test_the_code_walk_sees_imports_inside_functions():
    """``components.common.curves`` imports dvclive inside a function; ``components.common.splits`` imports its
    helpers at the top: both kinds are found, and third-party modules are not."""
    code = code_of("components.baseline")
    assert {Path("components/common/splits.py"), Path("components/common/streaming.py"), Path("model/trainer.py"),
            Path("components/formats/webdataset.py"), Path("components/common/config.py")} <= code
    assert all(p.parts[0] in PACKAGES for p in code)


def test_the_code_walk_sees_modules_imported_by_name_and_the_packages_on_the_way():
    """``from monitoring import metrics`` (telemetry) names a module, not a name in a package; and every package on
    the way runs its ``__init__`` (components.common.code)."""
    code = code_of("components.baseline")
    assert {Path("monitoring/metrics.py"), Path("monitoring/__init__.py"), Path("components/__init__.py"),
            Path("components/common/__init__.py"), Path("model/__init__.py")} <= code
    assert Path("serving/inputs.py") in code_of("monitoring.traffic")  # imported inside a function only


def test_the_stages_are_the_steps_in_order_each_writing_its_folder():
    """dvc.yaml's stages are components.common.steps' table, in order, each writing only under its folder."""
    from components.common.steps import FOLDERS, STEPS  # noqa: PLC0415

    assert tuple(STAGES) == STEPS
    for stage, spec in STAGES.items():
        assert spec["cmd"] == f"python -m components.{stage}"
        written = [next(iter(o)) if isinstance(o, dict) else o
                   for key in ("outs", "metrics", "plots") for o in spec.get(key, [])]
        assert all(Path(p).is_relative_to(FOLDERS[stage]) for p in written), (stage, written)


def test_folder_dependencies_do_not_hash_python_caches():
    patterns = (ROOT / ".dvcignore").read_text().split()
    assert "__pycache__/" in patterns and "*.pyc" in patterns


def test_readme_activates_the_venv_before_its_first_dvc_command():
    """After `make run` the tools are in .venv/ only: a bare `dvc metrics show` is "command not found"."""
    lines = (ROOT / "README.md").read_text().splitlines()
    first_dvc = next(i for i, line in enumerate(lines) if line.startswith("dvc "))  # a command a user types
    assert any(line.startswith("source .venv/bin/activate") for line in lines[:first_dvc])


def test_every_output_but_the_checkpoints_is_cached():
    """Outputs live under the git-ignored artifacts/: one with ``cache: false`` is in neither git nor the DVC cache,
    so ``dvc metrics diff`` and ``dvc exp show`` cannot show a committed run's value and ``dvc checkout`` cannot
    restore it. Only the persisted checkpoints (resumed in place, large, rewritten every run) stay out of the cache."""
    uncached = []
    for stage, spec in STAGES.items():
        for key in ("outs", "metrics", "plots"):
            for out in spec.get(key, []):
                path, options = next(iter(out.items())) if isinstance(out, dict) else (out, None)
                options = options or {}
                if options.get("cache", True) is False and not options.get("persist", False):
                    uncached.append(f"{stage}: {path}")
    assert not uncached, f"dvc.yaml: outputs with cache: false: {', '.join(uncached)}"


def test_the_check_of_other_sections_is_no_dependency_of_a_stage():
    """Every step checks every params section before it starts (``config.check_sections``), importing each step's
    module for its config class; that decides whether the step runs, not what it writes, so those imports are not
    the stage's code: an edit to the gate reruns neither training, nor changes a training's checkpoint id."""
    from components.common.code import CHECK_ONLY, code_digest  # noqa: PLC0415
    from components.common.config import step_configs  # noqa: PLC0415

    assert Path("components/baseline.py") not in code_of("components.gate")
    assert Path("components/gate.py") not in code_of("components.baseline")
    assert code_digest("components.baseline") != code_digest("components.mlnt")
    # the exempted function imports the step modules and nothing else
    skipped = CHECK_ONLY[Path("components/common/config.py")]
    assert skipped == {"step_configs"}
    assert {cls.__module__ for cls in step_configs().values()} == {f"components.{step}" for step in STAGES}
