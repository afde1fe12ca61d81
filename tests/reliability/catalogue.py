"""The generated parts of docs/reliability.md, rendered from the faults the tests run, so the two cannot drift:

    python -m tests.reliability.catalogue           # exit 1 if the doc is out of date
    python -m tests.reliability.catalogue --write   # rewrite the generated parts

Each part sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->``; the prose around them is the
doc's own."""

from __future__ import annotations

import argparse
import random
import re
import sys
from itertools import groupby

from tests.reliability.attacks import ATTACKS
from tests.reliability.cases import CASES, Case
from tests.reliability.crash import POINTS, PROMOTION_KILLS, TEAR, kill_plan
from tests.reliability.fuzz import MUTATIONS
from tests.reliability.workspace import ROOT

DOC = ROOT / "docs" / "reliability.md"
MARKED = re.compile(r"(<!-- generated: (?P<name>[\w-]+) -->\n)(?:.*?\n)?(<!-- end: (?P=name) -->)", re.S)


def cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def code(text: str) -> str:
    """``text`` as a Markdown code span, also when it holds backticks."""
    return f"`` {cell(text)} ``" if "`" in text else f"`{cell(text)}`"


def outcome(case: Case) -> str:
    if case.defect:
        return f"**open defect**: {case.defect}"
    kept = "untouched" if not case.may_write else f"untouched outside `{'`, `'.join(case.may_write)}`"
    return f"exit {case.code}; previous outputs {kept}"


def grouped_tables(items, header: tuple[str, ...], row) -> list[str]:
    """One markdown table per ``kind`` of ``items`` (in order), under the kind as a bold heading; ``row(item)``
    gives an item's cells."""
    parts = []
    for kind, group in groupby(items, key=lambda item: item.kind):
        parts += [f"\n**{kind[0].upper() + kind[1:]}**\n", "| " + " | ".join(header) + " |",
                  "|" + "---|" * len(header)]
        parts += ["| " + " | ".join(row(item)) + " |" for item in group]
    return parts


def bad_inputs() -> str:
    parts = [f"{len(CASES)} cases. Each: the step's exit code, a message with every quoted fragment, no traceback, "
             "every file of the workspace unchanged (sha256) and no code run from a file."]
    parts += grouped_tables(CASES, ("case", "command", "fault", "the message says", "outcome"),
                            lambda c: (f"`{c.id}`", f"`{c.command}`", cell(c.fault),
                                       " … ".join(code(s) for s in c.says), outcome(c)))
    return "\n".join(parts)


def point(entry: str) -> str:
    if entry == TEAR:
        return "`round0.pt` replaced by a truncated copy (no kill): the next run warns and resumes from `.prev`"
    name, _, n = entry.partition(":")
    return f"SIGKILL {POINTS[name][3].replace('n-th', _ordinal(int(n)))} (`{entry}`)"


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def kills() -> str:
    parts = []
    for step in ("baseline", "mlnt"):
        parts += [f"`{step}` (one run, each child resuming from what the last one left; then a run to the end):\n"]
        parts += [f"{i}. {point(entry)}" for i, entry in enumerate(kill_plan(step), 1)]
        parts.append("")
    parts += ["`gate` promotions (each from a fresh copy; then a rerun that promotes):\n"]
    parts += [f"{i}. {point(entry)}" for i, entry in enumerate(PROMOTION_KILLS, 1)]
    return "\n".join(parts)


def mutations() -> str:
    names = [mutate(random.Random(0)).mutation for mutate in MUTATIONS]
    return "\n".join(f"- {name}" for name in names)


def attacks() -> str:
    parts = [f"{len(ATTACKS)} attack classes, each tried by a test of `tests/reliability/test_attacks.py` with "
             "generated variants."]
    parts += grouped_tables(ATTACKS, ("attack", "what stops it", "test", "it checks"),
                            lambda a: (cell(a.attack), cell(a.defence), f"`{a.test}`", cell(a.checks)))
    return "\n".join(parts)


SECTIONS = {"bad-inputs": bad_inputs, "kills": kills, "mutations": mutations, "attacks": attacks}


def update(text: str) -> str:
    """``text`` with every generated part rendered anew."""
    found = set()

    def render(match: re.Match) -> str:
        found.add(match["name"])
        return match[1] + SECTIONS[match["name"]]() + "\n" + match[3]

    updated = MARKED.sub(render, text)
    missing = set(SECTIONS) - found
    if missing:
        raise ValueError(f"{DOC}: expected the generated parts {sorted(missing)}, found no markers for them")
    return updated


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.reliability.catalogue", description=__doc__.split("\n")[0])
    parser.add_argument("--write", action="store_true", help="rewrite the generated parts of the doc")
    args = parser.parse_args(argv)
    text = DOC.read_text()
    if args.write:
        DOC.write_text(update(text))
        return 0
    if update(text) != text:
        print(f"{DOC}: out of date; run python -m tests.reliability.catalogue --write", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
