"""The command line of a check measured on a finished pipeline run (``held_out``, ``calibration``): the run's
artifacts measured and recorded as JSON beside the page, or the page rendered again from that JSON."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from components.common.artifacts import read_json
from components.common.atomic import write_json, write_text
from components.common.config import printable


@dataclass(frozen=True)
class Check:
    """One check: its ``name`` (``python -m benchmarks.quality.<name>``), its module's ``doc``, the default page
    (``output``), what a run's folder must hold (``needs``), the default number of ``draws`` and what one is
    (``draw``), ``measure(artifacts, draws)``, ``render(records)``, ``recorded(records, artifacts)``: whether
    the records measured the run in that folder (``--if-changed`` renders them then), and ``summary(records)``,
    what the line printed at the end says was measured."""

    name: str
    doc: str
    output: str
    needs: str
    draws: int
    draw: str
    measure: Callable[[Path, int], dict]
    render: Callable[[dict], str]
    recorded: Callable[[dict, Path], bool]
    summary: Callable[[dict], str]


def run(check: Check, argv: Sequence[str] | None) -> int:
    """``python -m benchmarks.quality.<name>``: measure or read the records, write the page; 0, or 1 with one error
    line when the run or the records cannot be read."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.quality.{check.name}",
                                     description=check.doc.splitlines()[0])
    parser.add_argument("--artifacts", type=Path, default=Path("artifacts"), metavar="DIR",
                        help=f"a finished pipeline run: {check.needs} (default artifacts)")
    parser.add_argument("--draws", type=int, default=check.draws, help=f"{check.draw} (default {check.draws})")
    parser.add_argument("--output", type=Path, default=Path(check.output),
                        help=f"the page (its records go beside it as .json; default {check.output})")
    parser.add_argument("--render", action="store_true", help="no measuring: the page again from its .json")
    parser.add_argument("--if-changed", action="store_true",
                        help="measure only if the .json records another run than DIR's; else render")
    args = parser.parse_args(argv)
    if args.draws < 2:
        parser.error(f"--draws: expected at least 2 (the page gives a std over them), found {args.draws}")
    records = args.output.with_suffix(".json")
    try:
        found = read_json(records, check.name) if args.render or (args.if_changed and records.is_file()) else None
        if found is None or (not args.render and not check.recorded(found, args.artifacts)):
            found = check.measure(args.artifacts, args.draws)
            write_json(records, found)
    except (ValueError, OSError) as err:  # DataError and ConfigError are ValueErrors
        print(f"error: {check.name}: {printable(err)}", file=sys.stderr)
        return 1
    write_text(args.output, check.render(found))
    print(f"{check.name}: {check.summary(found)} -> {args.output}")
    return 0
