"""The command line the probes run after the study share (``inner_lr``, ``seeds``): where the study's cells, its
records and the probe's page are, ``--workers`` and ``--render``.

Each probe's page goes beside the study's results.json (default ``docs/quality/<page>``) with its own records beside
it as ``.json``; ``--quick`` points every default at what ``python -m benchmarks.quality --quick`` wrote, so a check
never reads or replaces the committed study.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

from components.common.atomic import write_json, write_text

QUICK_ROOT = Path("artifacts/quality-quick")  # where `python -m benchmarks.quality --quick` writes


def parser(module: str, description: str, page: str) -> argparse.ArgumentParser:
    """The parser of ``python -m <module>``, with the options every probe takes; ``page``: its page's file name."""
    found = argparse.ArgumentParser(prog=f"python -m {module}", description=description)
    found.add_argument("--quick", action="store_true",
                       help="the cells of `python -m benchmarks.quality --quick` (then every path below defaults to "
                            f"{QUICK_ROOT}/..., beside them)")
    found.add_argument("--work", type=Path, help="the study's cells and ingest (default artifacts/quality)")
    found.add_argument("--results", type=Path, help="the study's records (default docs/quality/results.json)")
    found.add_argument("--output", type=Path, help=f"the page (default docs/quality/{page}; its records go beside it "
                                                   "as .json)")
    found.add_argument("--workers", type=int, default=2)
    found.add_argument("--render", action="store_true",
                       help="no training: render --output again from the records beside it (its .json)")
    found.set_defaults(page=page)
    return found


def parse(found: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """The arguments, with ``work``, ``results`` and ``output`` defaulted (beside the quick study with ``--quick``)."""
    args = found.parse_args(argv)
    root = QUICK_ROOT if args.quick else None
    args.work = args.work or root or Path("artifacts/quality")
    args.results = args.results or (root / "quality" if root else Path("docs/quality")) / "results.json"
    args.output = args.output or args.results.with_name(args.page)
    return args


def write_page(args: argparse.Namespace, name: str, text: str, what: str) -> None:
    """The page at ``args.output``, and one line saying so."""
    write_text(args.output, text)
    print(f"{name}: {what} -> {args.output}")


def publish(args: argparse.Namespace, name: str, found: dict, text: str, what: str) -> int:
    """A probe's records beside its page (``.json``), then the page rendered from them; returns 0."""
    write_json(args.output.with_suffix(".json"), found)
    write_page(args, name, text, what)
    return 0


def render_again(args: argparse.Namespace, name: str, render: Callable[[dict, dict], str]) -> int:
    """``--render``: the page again from the records beside it and the study's, nothing trained."""
    records = args.output.with_suffix(".json")
    write_page(args, name, render(json.loads(records.read_text()), json.loads(args.results.read_text())),
               f"rendered from {records}")
    return 0
