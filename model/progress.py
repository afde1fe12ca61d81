"""Progress that suits where it is read: a live tqdm bar on a terminal, one line a minute in a log.

Carriage-return updates are what a terminal wants and what a log file (CI, ``dvc repro > log``, a Kubeflow pod)
does not: there every redraw would be kept. ``progress`` picks by whether stderr is a terminal.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterable, Iterator
from typing import Any

from tqdm.auto import tqdm

LOG_EVERY_S = 60.0


def interactive() -> bool:
    return sys.stderr.isatty()


def progress(iterable: Iterable, *, desc: str, total: int | None = None, unit: str = "it",
             disable: bool = False, every_s: float = LOG_EVERY_S) -> Any:
    """``iterable``, reporting progress: a tqdm bar on a terminal, else a line every ``every_s`` seconds and one
    at the end. Both have ``set_postfix(**values)`` and ``close()``."""
    if interactive():
        return tqdm(iterable, desc=desc, total=total, unit=unit, disable=disable, leave=False, dynamic_ncols=True)
    return LogLines(iterable, desc=desc, total=total, unit=unit, disable=disable, every_s=every_s)


class LogLines:
    """Progress as whole lines: ``<desc>: <n>/<total> <unit> (<rate> <unit>/s, <elapsed>) k=v ...``."""

    def __init__(self, iterable: Iterable, *, desc: str, total: int | None, unit: str, disable: bool, every_s: float):
        self.iterable, self.desc, self.unit, self.disable, self.every_s = iterable, desc, unit, disable, every_s
        self.total = total if total is not None else (len(iterable) if hasattr(iterable, "__len__") else None)
        self.n, self.postfix, self.closed = 0, {}, False
        self.started = self.last = time.perf_counter()

    def __iter__(self) -> Iterator:
        for item in self.iterable:
            yield item
            self.n += 1
            now = time.perf_counter()
            if now - self.last >= self.every_s:
                self.last = now
                self._line()
        self.close()

    def set_postfix(self, **values: Any) -> None:
        self.postfix = values

    def close(self) -> None:
        if not self.closed and self.n:
            self._line()
        self.closed = True

    def _line(self) -> None:
        if self.disable:
            return
        elapsed = time.perf_counter() - self.started
        of = f"/{self.total}" if self.total is not None else ""
        extra = "".join(f" {k}={v}" for k, v in self.postfix.items())
        print(f"{self.desc}: {self.n}{of} {self.unit} ({self.n / max(elapsed, 1e-9):.1f} {self.unit}/s, "
              f"{elapsed:.0f} s){extra}", file=sys.stderr, flush=True)
