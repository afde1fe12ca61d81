"""Security rules that hold for every file of the repository: no credentials, model files loaded without running
code, serving on ONNX alone, and every dependency pinned. (The image's non-root user and the manifests' security
contexts, limits and RBAC are checked in tests/test_release_tooling.py and tests/test_k8s.py.)"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from tests.reliability.workspace import ROOT

CREDENTIALS = {
    "private key": re.compile(r"-----BEGIN (?:[A-Z]+ )?PRIVATE KEY-----"),
    "AWS access key id": re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    "GitHub token": re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})"),
    "Slack token": re.compile(r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    "Google API key": re.compile(r"\bAIza[0-9A-Za-z_-]{35}\b"),
    "JSON web token": re.compile(r"\beyJ[A-Za-z0-9_-]{10,}\.eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9_-]{10,}"),
    "password in a URL": re.compile(r"\b[a-z][a-z0-9+.-]*://[^/\s:@'\"]+:[^/\s@'\"]+@"),
}
# In configuration files (YAML, env, INI, TOML, Dockerfile, shell, Makefile): a secret-named key with a literal value.
# A value taken from elsewhere (${{ secrets.X }}, $VAR, secretKeyRef) is what such a file should hold instead; a key
# whose value is on the next lines (a mapping: a volume's `secret:`) holds no literal.
ASSIGNED = re.compile(r"(?i)\b[\w.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key)\b[ \t]*[:=][ \t]*"
                      r"['\"]?(?![$<{]|\s|['\"]|secretKeyRef|valueFrom|true\b|false\b|null\b)[^\s'\"#]{6,}")
CONFIG_SUFFIXES = {".yaml", ".yml", ".env", ".ini", ".cfg", ".toml", ".sh", ".conf", ".properties"}
CONFIG_NAMES = {"Dockerfile", "Makefile", ".env"}
# Fixtures that hold a fake credential on purpose, to prove the k8s credential check can fail.
ALLOWED = {("tests/test_k8s.py", "AWS access key id"), ("tests/test_k8s.py", "password in a URL")}
CODE = ("model", "components", "serving", "pipelines", "benchmarks", "monitoring")


def repository_files() -> list[Path]:
    """Every file git tracks or would add (not ignored), as paths relative to the repository."""
    listed = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout.split("\n")
    return [Path(name) for name in listed if name and (ROOT / name).is_file()]


def credential_findings(name: str, text: str) -> list[str]:
    found = [kind for kind, pattern in CREDENTIALS.items() if pattern.search(text)]
    path = Path(name)
    if (path.suffix in CONFIG_SUFFIXES or path.name in CONFIG_NAMES) and ASSIGNED.search(text):
        found.append("secret-named setting with a literal value")
    return [kind for kind in found if (name, kind) not in ALLOWED]


def test_no_credentials_in_the_repository():
    problems = []
    for path in repository_files():
        if (ROOT / path).stat().st_size < 2_000_000:
            text = (ROOT / path).read_bytes().decode("utf-8", errors="ignore")
            problems += [f"{path}: {kind}" for kind in credential_findings(path.as_posix(), text)]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(("name", "text"), [
    ("notes.md", "-----BEGIN RSA " + "PRIVATE KEY-----\nMIIE"),
    ("a.py", "key = 'AKIA" + "Q" * 16 + "'"),
    ("a.py", "url = 'https://bot:hunter2" + "@example.invalid/x'"),
    ("a.py", "t = 'ghp_" + "a" * 36 + "'"),
    ("deploy.yaml", "env:\n  - name: X\n    db_password: " + "s3cr3t-value\n"),
    (".env", "API_KEY=" + "abcdef123456\n"),
    ("tests/test_k8s.py", "-----BEGIN " + "PRIVATE KEY-----"),  # the allow-list is per finding, not per file
])
def test_the_credential_scan_catches_a_planted_secret(name, text):
    assert credential_findings(name, text)


@pytest.mark.parametrize("text", ["password: ${{ secrets.DB }}", "token: $GH_TOKEN", "api_key: <set me>",
                                  "valueFrom:\n  secretKeyRef: {name: x}", "automountServiceAccountToken: false",
                                  "volumes:\n  - name: t\n    secret:\n      secretName: mlnt-feedback-token"])
def test_the_credential_scan_accepts_references(text):
    assert not credential_findings("deploy.yaml", text)


def python_files(*folders: str) -> list[Path]:
    return [p for p in repository_files() if p.suffix == ".py" and (not folders or p.parts[0] in folders)]


def calls(source: str) -> list[tuple[str, ast.Call]]:
    """Every call in Python source, with its dotted name (``torch.load``, ``np.load``, ``eval``)."""
    return [(ast.unparse(node.func), node) for node in ast.walk(ast.parse(source)) if isinstance(node, ast.Call)]


def keyword(call: ast.Call, name: str) -> object:
    value = next((k.value for k in call.keywords if k.arg == name), None)
    return value.value if isinstance(value, ast.Constant) else value


def safe_yaml_loaders(source: str) -> set[str]:
    """PyYAML's safe loaders and the classes ``source`` derives from them (``class _Loader(yaml.SafeLoader)``)."""
    safe = {"yaml.SafeLoader", "yaml.CSafeLoader", "SafeLoader", "CSafeLoader"}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ClassDef) and any(ast.unparse(base) in safe for base in node.bases):
            safe.add(node.name)
    return safe


def unsafe_loads(source: str, path: str) -> list[str]:
    problems, safe_loaders = [], safe_yaml_loaders(source)
    for name, call in calls(source):
        where = f"{path}:{call.lineno}: {name}"
        loader = keyword(call, "Loader")
        if name == "yaml.load" and loader is not None and ast.unparse(loader) in safe_loaders:
            continue  # yaml.load with a safe loader is yaml.safe_load
        if name == "torch.load" and keyword(call, "weights_only") is not True:
            problems.append(f"{where} without weights_only=True")
        if name in ("np.load", "numpy.load") and keyword(call, "allow_pickle") not in (None, False):
            problems.append(f"{where} with allow_pickle")
        if name in ("pickle.load", "pickle.loads", "yaml.load", "yaml.unsafe_load", "yaml.full_load", "torch.jit.load",
                    "joblib.load", "eval", "exec"):
            problems.append(where)
    return problems


def test_model_files_are_loaded_without_running_code():
    """In the code that ships (not the tests): torch.load only with weights_only=True; no pickle, eval or exec."""
    problems = [p for path in python_files(*CODE) for p in unsafe_loads((ROOT / path).read_text(), str(path))]
    assert not problems, "\n".join(problems)


def test_the_only_unpickler_admits_a_fixed_list_of_globals():
    """CIFAR-10's batches are pickles: they are read by an Unpickler whose find_class refuses all but a list."""
    unpicklers = []
    for path in python_files(*CODE):
        for node in ast.walk(ast.parse((ROOT / path).read_text())):
            if isinstance(node, ast.ClassDef) and any("Unpickler" in ast.unparse(b) for b in node.bases):
                methods = {m.name for m in node.body if isinstance(m, ast.FunctionDef)}
                unpicklers.append((str(path), node.name, "find_class" in methods))
    assert unpicklers == [("components/formats/cifar.py", "_SafeUnpickler", True)]


def test_the_load_scan_catches_unsafe_calls():
    bad = ("import torch, pickle, numpy as np\ntorch.load('m.pt')\ntorch.load('m.pt', weights_only=False)\n"
           "np.load('a.npy', allow_pickle=True)\npickle.loads(b'')\nyaml.load(text)\n")
    assert len(unsafe_loads(bad, "bad.py")) == 5
    safe = ("import yaml\nclass L(yaml.SafeLoader):\n    pass\nyaml.load(t, Loader=L)\n"
            "yaml.load(t, Loader=yaml.SafeLoader)\n")
    assert unsafe_loads(safe, "safe.py") == []
    assert len(unsafe_loads("import yaml\nyaml.load(t, Loader=yaml.Loader)\n", "unsafe.py")) == 1


def imported_modules(path: Path) -> set[str]:
    tree = ast.parse((ROOT / path).read_text())
    names = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    return names | {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}


def test_serving_reads_only_onnx():
    """The predictor imports neither torch nor the training code: a model reaches it as ONNX, never as a pickle."""
    banned = ("torch", "torchvision", "components", "model", "pickle", "dill", "cloudpickle", "joblib")
    found = {f"{path}: {module}" for path in python_files("serving") for module in imported_modules(path)
             if module.split(".")[0] in banned}
    assert not found
    loaded = subprocess.run([sys.executable, "-c", "import sys; sys.argv = sys.argv[:1]; import serving.__main__, "
                             "serving.server; print(sorted(m for m in sys.modules if m.split('.')[0] in "
                             "('torch', 'components', 'model')))"], cwd=ROOT, capture_output=True, text=True,
                            check=True, timeout=120)
    assert loaded.stdout.strip() == "[]"


def normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def constraints() -> dict[str, str]:
    """constraints.txt as {normalised name: version}; every line must pin one exact version."""
    pins = {}
    for line in (ROOT / "constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            match = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s=;]+)", line.strip())
            assert match, f"constraints.txt: expected name==version, found {line!r}"
            pins[normalised(match[1])] = match[2]
    return pins


def requirement_name(spec: str) -> str:
    return normalised(re.split(r"[<>=!~\[; ]", spec)[0])


def test_every_dependency_is_pinned_in_constraints():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    # The DVC remote plugins (docs/data.md) are installed on demand, never by the set-up: DVC itself pins what they
    # may be, so only the environment the set-up installs is pinned here.
    remotes = {"s3", "gs", "azure", "ssh"}
    wanted = [*project["dependencies"], *(d for name, extra in project["optional-dependencies"].items()
                                          if name not in remotes for d in extra)]
    pins = constraints()
    unpinned = [d for d in wanted if requirement_name(d) not in pins]
    assert not unpinned, f"in pyproject.toml but not pinned in constraints.txt: {unpinned}"
    for exact in ("torch", "torchvision", "kfp", "kfp-kubernetes", "kserve"):
        spec = next(d for d in project["dependencies"] if requirement_name(d) == exact)
        assert spec == f"{exact}=={pins[exact]}", f"pyproject.toml: expected {exact}=={pins[exact]}, found {spec}"
    assert "-c constraints.txt" in (ROOT / "Makefile").read_text()
