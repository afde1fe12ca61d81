"""``make setup`` builds .venv with Python 3.11 only (pyproject.toml's requires-python): it refuses another
interpreter with one line before creating anything, and replaces a .venv of another version. Checked with fake
interpreters and a .venv in a temporary folder, so that nothing is installed."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="needs GNU make")

# A fake interpreter: prints its version for `-c ...`, makes DIR a .venv of itself for `-m venv --clear DIR` (emptying
# it, as venv does), has no pip where a file `nopip` lies beside it, and echoes anything else (pip) instead of running
# it.
FAKE = """#!/bin/bash
if [ "$1" = -c ]; then echo {version}; exit 0; fi
if [ "$1 $2" = "-m pip" ] && [ -e "$(dirname "$0")/nopip" ]; then echo "No module named pip" >&2; exit 1; fi
if [ "$1 $2" = "-m venv" ]; then
  dir="${{@: -1}}"; rm -rf "$dir"; mkdir -p "$dir/bin"; cp "$0" "$dir/bin/python"; echo "created by {version}"; exit 0
fi
echo "{version} ran $*"
"""


def fake_python(folder: Path, name: str, version: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(FAKE.format(version=version))
    path.chmod(0o755)
    return path


def setup(venv: Path, *args: str, path: Path | None = None) -> subprocess.CompletedProcess:
    """``make`` of the set-up stamp of ``venv`` (the project's own .venv is never touched), without the PYTHON and
    make flags of the environment (``make test`` passes its own down), ``path`` first on PATH."""
    env = {name: value for name, value in os.environ.items() if name not in {"PYTHON", "MAKEFLAGS", "MFLAGS"}}
    if path is not None:
        env["PATH"] = f"{path}{os.pathsep}{env['PATH']}"
    return subprocess.run(["make", "--no-print-directory", f"{venv}/.installed", f"VENV={venv}", *args], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=60, env=env)


def test_another_python_is_refused_with_one_line_before_anything_is_created(tmp_path):
    python = fake_python(tmp_path / "bin", "python3", "3.12")
    done = setup(tmp_path / ".venv", f"PYTHON={python}")
    assert done.returncode != 0
    assert (f"setup: expected Python 3.11 (pyproject.toml's requires-python), found Python 3.12 (PYTHON={python}): "
            f"install python3.11 (and python3.11-venv), or set PYTHON=/path/to/python3.11") in done.stderr.splitlines()
    assert not (tmp_path / ".venv").exists()


def test_a_missing_python_is_named(tmp_path):
    done = setup(tmp_path / ".venv", f"PYTHON={tmp_path / 'python3.11'}")
    assert done.returncode != 0
    assert f"found no Python (PYTHON={tmp_path / 'python3.11'})" in done.stderr


def test_a_venv_of_another_python_is_recreated_keeping_the_system_stamp(tmp_path):
    venv = tmp_path / ".venv"
    fake_python(venv / "bin", "python", "3.12")  # a first `make setup` with python3 3.12, whose install failed
    (venv / ".system").touch()
    python = fake_python(tmp_path / "bin", "python3.11", "3.11")
    done = setup(venv, f"PYTHON={python}")
    assert done.returncode == 0, done.stderr
    assert f"setup: recreating {venv} with {python}: its Python is not 3.11" in done.stdout
    assert "created by 3.11" in done.stdout and "3.11 ran -m pip install -q -c constraints.txt" in done.stdout
    assert (venv / ".system").exists() and (venv / ".installed").exists()


def test_a_venv_of_python_311_without_pip_is_recreated(tmp_path):
    """A set-up interrupted while venv installed pip left a .venv that every later `make setup` failed in."""
    venv = tmp_path / ".venv"
    fake_python(venv / "bin", "python", "3.11")
    (venv / "bin" / "nopip").touch()
    python = fake_python(tmp_path / "bin", "python3.11", "3.11")
    done = setup(venv, f"PYTHON={python}")
    assert done.returncode == 0, done.stderr
    assert f"setup: recreating {venv} with {python}: it has no pip (an interrupted set-up?)" in done.stdout
    assert "created by 3.11" in done.stdout and "3.11 ran -m pip install -q -c constraints.txt" in done.stdout


def test_a_venv_of_python_311_is_kept_whatever_python_is(tmp_path):
    venv = tmp_path / ".venv"
    fake_python(venv / "bin", "python", "3.11")
    done = setup(venv, f"PYTHON={fake_python(tmp_path / 'bin', 'python3', '3.12')}")
    assert done.returncode == 0, done.stderr
    assert "created by" not in done.stdout and "3.11 ran -m pip install" in done.stdout


def test_python_defaults_to_python311_where_there_is_one(tmp_path):
    fake_python(tmp_path / "bin", "python3.11", "3.11")
    done = setup(tmp_path / ".venv", "-n", path=tmp_path / "bin")
    assert f"python3.11 -m venv --clear {tmp_path / '.venv'}" in done.stdout
