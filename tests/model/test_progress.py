"""Progress: a tqdm bar on a terminal, whole lines in a log (one every ``every_s`` seconds and one at the end)."""

import io
import re
import sys

from model import progress as progress_module
from model.progress import LogLines, progress


def test_a_log_gets_whole_lines_and_one_at_the_end(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # a log file, not a terminal
    bar = progress(range(3), desc="train", total=3, unit="steps", every_s=3600)
    assert isinstance(bar, LogLines)
    for _ in bar:
        bar.set_postfix(loss="0.500")
    bar.close()  # a second close writes nothing more
    lines = sys.stderr.getvalue().splitlines()
    assert len(lines) == 1 and re.fullmatch(r"train: 3/3 steps \(\d+\.\d steps/s, \d+ s\) loss=0\.500", lines[0]), lines


def test_a_disabled_progress_writes_nothing(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    assert list(progress(range(3), desc="quiet", disable=True, every_s=0)) == [0, 1, 2]
    assert sys.stderr.getvalue() == ""


def test_a_terminal_gets_a_tqdm_bar(monkeypatch):
    monkeypatch.setattr(progress_module, "interactive", lambda: True)
    assert not isinstance(progress(range(3), desc="bar", disable=True), LogLines)


def test_a_log_line_a_period_and_the_total_from_the_iterable(monkeypatch):
    """Without ``total`` a sized iterable gives it; lines come once every ``every_s`` seconds, not at every item after
    the first period."""
    monkeypatch.setattr(sys, "stderr", io.StringIO())
    clock = iter(range(10**6))
    monkeypatch.setattr(progress_module.time, "perf_counter", lambda: float(next(clock)))  # one second a call
    list(progress(range(6), desc="log", every_s=2.5))
    lines = sys.stderr.getvalue().splitlines()
    assert [line.split(" (")[0] for line in lines] == ["log: 3/6 it", "log: 5/6 it", "log: 6/6 it"], lines
