"""Every check of the rules and the dashboard; ``python -m monitoring.check`` runs them all.

- promtool parses the rule file and every dashboard query (written as recording rules into a temporary rule
  file, template variables replaced by literals), and runs the rule unit tests;
- every alert has a firing and a non-firing unit test, a severity, a summary, a description and a runbook link
  whose anchor exists in docs/monitoring.md;
- every metric named in a rule or a panel is in the contract (``monitoring.metrics``), every recording rule the
  queries use is defined, and every contract metric is used somewhere.

Its readers of the dashboard are public for ``monitoring.query`` and ``monitoring.render``: ``panels_of`` walks the
panels, ``fill_variables`` replaces the template variables (``TEMPLATE_VARIABLE``) of a query.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from monitoring import DASHBOARD_FILE, DOCS_FILE, DOCS_URL, RULE_TESTS_DIR, RULES_FILE
from monitoring.metrics import METRICS, SERIES

BUILTIN_SERIES = frozenset({"up"})  # written by Prometheus itself for every scrape target
# a literal for each of the dashboard's template variables, for promtool (monitoring.snapshot starts from them)
VARIABLES = {"model": "fmnist", "datasource": "prometheus", "__rate_interval": "5m", "__interval": "1m",
             "__range": "1h"}
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")  # level:metric:operations
# a Grafana template variable in a query: $name, ${name} or ${name:format}; the name is group 1 or group 2
TEMPLATE_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS_AND_RANGES = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()")  # not a function or aggregation
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                       "group_right", "inf", "nan", "atan2"})
_LABEL_VALUES = re.compile(r"^\s*label_values\((.+),\s*\w+\s*\)\s*$")


class CheckError(Exception):
    """A check failed; the message says what and where."""


@dataclass(frozen=True)
class Expr:
    """One PromQL expression and ``where`` it comes from (a rule, a panel query or a variable), for messages."""

    where: str  # which rule, panel or variable, for messages
    expr: str


# promtool


def promtool() -> str:
    """The path of the ``promtool`` binary; a ``CheckError`` saying which package to install when it is not on PATH."""
    path = shutil.which("promtool")
    if path is None:
        raise CheckError("promtool not found: install Debian's prometheus package (make system)")
    return path


def run_promtool(*args: str) -> str:
    """Run ``promtool`` with ``args`` (at most 120 s): its output, or a ``CheckError`` holding it when promtool
    fails."""
    result = subprocess.run([promtool(), *args], capture_output=True, text=True, timeout=120, check=False)
    output = (result.stdout + result.stderr).strip()
    if result.returncode != 0:
        raise CheckError(f"promtool {' '.join(args)} failed:\n{output}")
    return output


def check_rules(path: Path = RULES_FILE) -> str:
    """promtool check rules: parses every expression; its message names the group and the rule that fails."""
    return run_promtool("check", "rules", str(path))


def rule_tests() -> list[Path]:
    """The promtool rule unit-test files: ``RULE_TESTS_DIR/*.yml``, sorted."""
    return sorted(RULE_TESTS_DIR.glob("*.yml"))


def run_rule_tests(paths: Iterable[Path] | None = None) -> str:
    """``promtool test rules`` on ``paths`` (default: every ``rule_tests`` file): its output, or a ``CheckError``."""
    return run_promtool("test", "rules", *map(str, rule_tests() if paths is None else paths))


def check_exprs(exprs: Iterable[Expr]) -> str:
    """Parse expressions with promtool, each as a recording rule in a group named after where it comes from."""
    groups = [{"name": item.where, "rules": [{"record": f"check:expr_{index}:parse", "expr": item.expr}]}
              for index, item in enumerate(exprs)]
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "queries.rules.yml"
        path.write_text(yaml.safe_dump({"groups": groups}, sort_keys=False))
        return check_rules(path)


# what the rules and the dashboard contain


def load_rules(path: Path = RULES_FILE) -> dict:
    """The rule file at ``path``, parsed (YAML)."""
    return yaml.safe_load(path.read_text())


def load_dashboard(path: Path = DASHBOARD_FILE) -> dict:
    """The dashboard at ``path``, parsed (JSON)."""
    return json.loads(path.read_text())


def rules_of(rules: dict) -> Iterator[dict]:
    """Every rule of every group, recording and alerting, in file order."""
    for group in rules["groups"]:
        yield from group["rules"]


def alerts_of(rules: dict) -> list[dict]:
    """The alerting rules (those with ``alert``), in file order."""
    return [rule for rule in rules_of(rules) if "alert" in rule]


def rule_exprs(rules: dict) -> list[Expr]:
    """Every rule's expression, named after its alert or record."""
    return [Expr(f"rule {rule.get('alert') or rule['record']}", rule["expr"]) for rule in rules_of(rules)]


def panels_of(panels: list[dict]) -> Iterator[dict]:
    """Every panel of a dashboard's ``panels`` list in layout order, rows included; a collapsed row's own panels
    follow it."""
    for panel in panels:
        yield panel
        yield from panels_of(panel.get("panels", []))  # collapsed rows hold their panels


def dashboard_exprs(dashboard: dict) -> list[Expr]:
    """Every panel query and query variable, as written (with template variables)."""
    exprs = [Expr(f"panel {panel['id']} ({panel['title']}) query {target['refId']}", target["expr"])
             for panel in panels_of(dashboard["panels"]) for target in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            selector = _LABEL_VALUES.match(query)
            exprs.append(Expr(f"variable {variable['name']}", selector.group(1) if selector else query))
    return exprs


def fill_variables(expr: str, variables: Mapping[str, str]) -> str:
    """``expr`` with Grafana's template variables (``TEMPLATE_VARIABLE``) replaced by their values in
    ``variables``; a ``CheckError`` names the first one that is not there."""

    def literal(match: re.Match) -> str:
        name = match.group(1) or match.group(2)
        if name not in variables:
            raise CheckError(f"unknown template variable ${name} in {expr}")
        return variables[name]

    return TEMPLATE_VARIABLE.sub(literal, expr)


def substitute(item: Expr) -> Expr:
    """Replace Grafana's template variables by the literals of ``VARIABLES``, so that promtool can parse the
    query; the ``CheckError`` of an unknown one says where it is."""
    try:
        return Expr(item.where, fill_variables(item.expr, VARIABLES))
    except CheckError as error:
        raise CheckError(f"{item.where}: {error}") from None


def metric_names(expr: str) -> set[str]:
    """The series and recording-rule names a PromQL expression reads."""
    text = _GROUPING.sub(" ", _MATCHERS_AND_RANGES.sub(" ", _STRINGS.sub(" ", expr)))
    return {name for name in _IDENTIFIER.findall(text) if name not in _KEYWORDS}


# the checks


def check_dashboard(dashboard: dict) -> str:
    """promtool's parse of every panel query and query variable of ``dashboard``, template variables replaced by
    ``VARIABLES``: its output, or a ``CheckError``."""
    return check_exprs(map(substitute, dashboard_exprs(dashboard)))


def contract_problems(rules: dict, dashboard: dict) -> list[str]:
    """One line per disagreement between the rules, the dashboard and the metric contract: a recording rule not named
    level:metric:operations, a recording rule used but not defined, a series not in the contract (nor
    ``BUILTIN_SERIES``), a contract metric nothing uses. Empty when they agree."""
    recorded = {rule["record"] for rule in rules_of(rules) if "record" in rule}
    problems = [f"rule {name}: not a level:metric:operations name" for name in sorted(recorded)
                if not RECORD_NAME.match(name)]
    used = set()
    for item in rule_exprs(rules) + dashboard_exprs(dashboard):
        for name in sorted(metric_names(item.expr)):
            used.add(name)
            if ":" in name and name not in recorded:
                problems.append(f"{item.where}: {name} is not recorded by {RULES_FILE.name}")
            elif ":" not in name and name not in SERIES | BUILTIN_SERIES:
                problems.append(f"{item.where}: {name} is not in the metric contract (monitoring/metrics.py)")
    problems += [f"metric {metric.name} is in the contract but no rule or panel uses it" for metric in METRICS
                 if not used & set(metric.series)]
    return problems


def alert_test_kinds(rules: dict, test_files: Iterable[Path]) -> dict[str, set[str]]:
    """For each alert, which kinds of unit test it has: "firing" (expected alerts) and "quiet" (none)."""
    coverage: dict[str, set[str]] = {alert["alert"]: set() for alert in alerts_of(rules)}
    for path in test_files:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                coverage.setdefault(case["alertname"], set()).add("firing" if case.get("exp_alerts") else "quiet")
    return coverage


def coverage_problems(rules: dict, test_files: Iterable[Path]) -> list[str]:
    """One line per alert without a firing or without a quiet unit test in ``test_files``."""
    return [f"alert {alert}: no {kind} test in {RULE_TESTS_DIR.name}/" for alert, kinds in
            alert_test_kinds(rules, test_files).items() for kind in ("firing", "quiet") if kind not in kinds]


def heading_anchors(markdown: str) -> set[str]:
    """GitHub's anchors for the headings of a Markdown document."""
    headings = re.findall(r"^#+\s+(.+?)\s*$", markdown, flags=re.MULTILINE)
    return {re.sub(r"[^\w\- ]", "", heading.lower()).replace(" ", "-") for heading in headings}


def alert_problems(rules: dict, docs: str) -> list[str]:
    """One line per alert without a summary, a description, a runbook_url or a severity label, or whose runbook_url
    is not ``DOCS_URL#<alert in lower case>`` with that anchor a heading of ``docs``."""
    anchors, problems = heading_anchors(docs), []
    for alert in alerts_of(rules):
        name, annotations = alert["alert"], alert.get("annotations", {})
        missing = [key for key in ("summary", "description", "runbook_url") if key not in annotations]
        missing += [] if "severity" in alert.get("labels", {}) else ["severity label"]
        problems += [f"alert {name}: no {key}" for key in missing]
        url = annotations.get("runbook_url", "")
        if url != f"{DOCS_URL}#{name.lower()}" or name.lower() not in anchors:
            problems.append(f"alert {name}: runbook_url must be {DOCS_URL}#{name.lower()}, a heading of "
                            f"{DOCS_FILE.name}")
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m monitoring.check``: promtool's checks of the rules, the dashboard and the rule unit tests, then
    the contract, coverage and alert checks; returns 0 when all pass, else 1 with the failures on stderr."""
    argparse.ArgumentParser(prog="python -m monitoring.check",
                            description="Run every check of the alert rules and the dashboard: promtool's, then "
                                        "the contract, coverage and alert checks.").parse_args(argv)
    rules, dashboard = load_rules(), load_dashboard()
    try:
        for output in (check_rules(), check_dashboard(dashboard), run_rule_tests()):
            print(output)
    except CheckError as error:
        print(error, file=sys.stderr)
        return 1
    problems = (contract_problems(rules, dashboard) + coverage_problems(rules, rule_tests())
                + alert_problems(rules, DOCS_FILE.read_text()))
    print("\n".join(problems) or "monitoring: all checks passed", file=sys.stderr if problems else sys.stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
