"""code: the project files a step runs, found by walking its imports, and their digest.

``code_of("components.baseline")`` is every project file ``python -m components.baseline`` can execute: the module,
the project modules it imports at any depth of its code (imports inside functions count), and the packages on the
way (their ``__init__``). ``dvc.yaml`` declares these files as each stage's dependencies (``tests/test_dvc_stages.py``
checks it), and ``code_digest`` hashes them into the id of a training run's checkpoint folder, so that a run of other
code never resumes a checkpoint of the old one (DVC reruns the stage after an edit; the edit must retrain too).
"""

from __future__ import annotations

import ast
import functools
import hashlib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]  # the folder holding the project's packages (the repo, or the image's)
PACKAGES = ("components", "model", "monitoring", "serving", "pipelines", "benchmarks")


def module_file(name: str) -> Path | None:
    """The file of the project module ``name`` (``a.b`` -> ``a/b.py`` or ``a/b/__init__.py``), if it is one."""
    base = ROOT.joinpath(*name.split("."))
    for path in (base.with_suffix(".py"), base / "__init__.py"):
        if path.is_file():
            return path
    return None


# Functions whose imports are not followed: ``config.step_configs`` imports every step's module for its config class,
# so that a step checks every params section before it starts (``config.check_sections``). That check decides only
# whether a step runs, never what it computes: following it would make every stage depend on all the code (an edit
# to the gate retraining both networks) and change every training's checkpoint id (``code_digest``).
CHECK_ONLY = {Path("components/common/config.py"): {"step_configs"}}


def imported(path: Path) -> set[str]:
    """The project modules ``path`` imports, at any depth of its code (imports inside functions count), but those
    inside the functions ``CHECK_ONLY`` names for it."""
    names = set()
    for node in _nodes(ast.parse(path.read_text(), str(path)), CHECK_ONLY.get(_relative(path), set())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)  # submodules imported by name
    project = set()
    for name in names:
        if name.split(".")[0] in PACKAGES:
            parts = name.split(".")
            project.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))  # packages run their __init__
    return project


def _nodes(tree: ast.AST, skipped: set[str]):
    """Every node of ``tree`` (as ``ast.walk``) but the bodies of the functions named in ``skipped``."""
    todo = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name in skipped:
            continue
        yield node
        todo.extend(ast.iter_child_nodes(node))


def _relative(path: Path) -> Path:
    return path.resolve().relative_to(ROOT) if path.resolve().is_relative_to(ROOT) else path


def code_of(module: str) -> set[Path]:
    """Every project file that running ``python -m <module>`` can execute, relative to ``ROOT``."""
    seen, todo = set(), [module]
    while todo:
        path = module_file(todo.pop())
        if path is None or path in seen:
            continue
        seen.add(path)
        todo.extend(imported(path))
    return {p.relative_to(ROOT) for p in seen}


@functools.cache
def code_digest(module: str) -> str:
    """sha256 of the files of ``code_of(module)``: each one's path and bytes, in path order (read once a process)."""
    digest = hashlib.sha256()
    for path in sorted(code_of(module)):
        digest.update(path.as_posix().encode() + b"\0" + (ROOT / path).read_bytes() + b"\0")
    return digest.hexdigest()
