"""Every bad input of the catalogue (cases.py): a non-zero exit, one message naming the file or field, the
expected and the found value, no traceback unless --debug, and the previous outputs untouched."""

from __future__ import annotations

import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from tests.reliability.cases import CASES, Case
from tests.reliability.faults import MARKER
from tests.reliability.workspace import ROOT, snapshot


def run_main(case: Case) -> int:
    """The step's ``main(argv)``, with a ``SystemExit`` turned into an exit code as the interpreter does."""
    module = importlib.import_module("serving.__main__" if case.step == "serving" else case.module)
    try:
        return module.main(list(case.argv))
    except SystemExit as exit_:
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
            return 1
        return exit_.code or 0


def message(case: Case, out: str, err: str) -> str:
    """What the user reads: the gate's verdict and reasons (stdout), else the last line of stderr."""
    if case.step == "gate" and "--enforce" in case.argv:
        return out
    lines = err.strip().splitlines()
    assert lines, f"{case.id}: no message on stderr"
    prefix = "serving: " if case.step == "serving" else f"error: {case.step}: "
    assert lines[-1].startswith(prefix), f"{case.id}: expected one line starting {prefix!r}, found:\n{err}"
    return lines[-1]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input_fails_clearly_and_changes_nothing(case, work, capsys, monkeypatch, request):
    if case.defect:
        request.applymarker(pytest.mark.xfail(strict=True, reason=case.defect))
    case.breaks()
    before = snapshot(work, ignore=case.may_write)
    monkeypatch.setattr(sys, "argv", ["python", *case.argv])  # KServe reads sys.argv; keep pytest's intact
    code = run_main(case)
    out, err = capsys.readouterr()
    said = message(case, out, err)
    assert code == case.code, f"{case.id}: exit {code}, expected {case.code}:\n{out}\n{err}"
    for fragment in case.says:
        assert fragment in said, f"{case.id}: {fragment!r} not in:\n{said}"
    assert "Traceback" not in out + err
    assert snapshot(work, ignore=case.may_write) == before, f"{case.id}: the workspace changed"
    assert not Path(MARKER).exists(), f"{case.id}: a loader ran code from the file"


def test_debug_shows_the_traceback(work):
    """--debug is the way to the traceback: the same error, raised."""
    from components import noise  # noqa: PLC0415

    with pytest.raises(ValueError, match=r"rate: expected a number in \[0, 1\], found 1.5"):
        noise.main(["--set", "noise.rate=1.5", "--debug"])


@pytest.mark.parametrize("module", ["components.noise", "serving"])
def test_the_real_command_line_prints_one_line_and_no_traceback(module, tmp_path):
    """The in-process runs above are the same ``main`` that ``python -m`` calls; once for real, to be sure."""
    argv = ["--params", "nowhere.yaml"] if module != "serving" else ["--model", "nowhere"]
    done = subprocess.run([sys.executable, "-m", module, *argv], cwd=tmp_path, capture_output=True, text=True,
                          check=False, timeout=120, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1 and "nowhere" in done.stderr
