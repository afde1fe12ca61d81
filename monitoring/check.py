"""Every check of the rules and the dashboard; ``python -m monitoring.check`` runs them all.

- promtool parses the rule file and every dashboard query (written as recording rules into a temporary rule
  file, template variables replaced by literals), and runs the rule unit tests;
- every alert has a firing and a non-firing unit test (and a pending one when it has a ``for:``), a severity, a
  summary, a description and a runbook link whose anchor exists in docs/monitoring.md;
- every metric named in a rule or a panel is in the contract (``monitoring.metrics``), every recording rule the
  queries use is defined, and every contract metric is used somewhere;
- every label a rule or a panel selects, groups or matches on is one its series carry (the contract's labels, the
  target labels, those a recording rule keeps or creates; an aggregation's ``by`` and ``without`` labels those of
  the series it aggregates), and every value it selects by ``=``, ``!=`` or ``=~`` is one the label takes, where the
  contract fixes them (``LABEL_VALUES``); Grafana's variables match anything;
- ``rate()``, ``irate()`` and ``increase()`` read only counters and histograms' series, and every
  ``histogram_quantile()`` keeps the ``le`` of the buckets it reads;
- every threshold and ``for`` an alert's annotations, the alert table of docs/monitoring.md and the dashboard's
  panels state is the one its rule has.

Its readers of the dashboard are public for ``monitoring.query`` and ``monitoring.render``: ``panels_of`` walks the
panels, ``fill_variables`` replaces the template variables (``TEMPLATE_VARIABLE``) of a query.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import yaml

from monitoring import DASHBOARD_FILE, DOCS_FILE, DOCS_URL, ROOT, RULE_TESTS_DIR, RULES_FILE
from monitoring.metrics import LABEL_VALUES, METRICS, PUSHED_LABELS, SERIES, TARGET_LABELS, TRAINING

BUILTIN_SERIES = frozenset({"up"})  # written by Prometheus itself for every scrape target
# the type of every contract series (a histogram's _bucket, _sum and _count are "histogram") and of BUILTIN_SERIES
SERIES_KINDS = {series: metric.kind for metric in METRICS for series in metric.series} | dict.fromkeys(
    BUILTIN_SERIES, "gauge")
# a literal for each of the dashboard's template variables, for promtool (monitoring.snapshot starts from them)
VARIABLES = {"model": "fmnist", "pipeline": "mlnt", "datasource": "prometheus", "__rate_interval": "5m",
             "__interval": "1m", "__range": "1h"}  # pipeline: telemetry's DEFAULT_PIPELINE, what a run pushes
RECORD_NAME = re.compile(r"^[a-z_]+:[a-z0-9_]+:[a-z0-9_]+$")  # level:metric:operations
# a Grafana template variable in a query: $name, ${name} or ${name:format}; the name is group 1 or group 2
TEMPLATE_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")

_STRINGS = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MATCHERS_AND_RANGES = re.compile(r"\{[^}]*\}|\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])[a-zA-Z_:][\w:]*(?![\w:])(?!\s*\()")  # not a function or aggregation
_KEYWORDS = frozenset({"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring", "group_left",
                       "group_right", "inf", "nan", "atan2"})
_LABEL_VALUES = re.compile(r"^\s*label_values\((.+),\s*(\w+)\s*\)\s*$")  # a variable's query: selector, label
# a selector's metric name (if any) and the text between its braces, in an expression whose strings are blanked
_SELECTOR = re.compile(r"(?<![\w:])([a-zA-Z_:][\w:]*)?\s*\{([^}]*)\}")
_MATCHER = re.compile(r'\s*([a-zA-Z_]\w*)\s*(=~|!~|!=|=)\s*("(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`)\s*,?')
_LABEL_LIST = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_LABEL_FUNCTION = re.compile(r"\b(label_replace|label_join)\s*\(")
# an aggregation up to the parenthesis of its operand, with its grouping when it comes first: operator, by or
# without, labels; PromQL also allows the grouping after the operand (``_TRAILING_GROUPING``)
_AGGREGATION = re.compile(r"(?<![\w:])(sum|min|max|avg|group|stddev|stdvar|count|count_values|bottomk|topk|quantile"
                          r"|limitk|limit_ratio)\s*(?:(by|without)\s*\(([^)]*)\)\s*)?\(")
_TRAILING_GROUPING = re.compile(r"\s*(by|without)\s*\(([^)]*)\)")
_RATE_FUNCTION = re.compile(r"(?<![\w:])(rate|irate|increase)\s*\(")  # meaningful on series that only count up
_QUANTILE_FUNCTION = re.compile(r"(?<![\w:])histogram_quantile\s*\(")
# an alert's threshold: the constant a comparison holds its expression to (8 * 86400 too)
_COMPARISON = re.compile(r"(?<![=!<>])(?:>=|<=|>|<)\s*(?:bool\s+)?(\d[\d.e]*(?:\s*[*/]\s*\d[\d.e]*)*)")
# a threshold in prose: "threshold 5%", "at least 20", "more than 8 days", "above 500ms", "> 0.5 s", "≥ 20"
_STATED_THRESHOLD = re.compile(r"(?:\bthreshold|\bat least|\bmore than|\bless than|\babove|\bbelow|>=?|<=?|≥|≤)\s*"
                               r"(\d+(?:\.\d+)?)\s*(%|ms\b|s\b|seconds?\b|minutes?\b|hours?\b|days?\b)?")
_STATED_FOR = re.compile(r"\bfor (\d+) (minutes?|hours?)\b")
_UNITS = {"%": 0.01, "ms": 0.001, "s": 1, "second": 1, "minute": 60, "hour": 3600, "day": 86400}
_DURATION_UNITS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "y": 31536000}
_ALERT_TABLE_ROW = re.compile(r"^\|\s*(Mlnt\w+)\s*\|(.*)\|\s*([^|]*?)\s*\|\s*(\w+)\s*\|\s*$", flags=re.MULTILINE)

# label name -> the values it takes where they are known (None: any), in the order they are declared
Labels = dict[str, tuple[str, ...] | None]


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


# labels


@dataclass(frozen=True)
class Matcher:
    """One label matcher of a selector: ``label op "value"``, the value unquoted."""

    label: str
    op: str  # =, !=, =~ or !~
    value: str


def _blank_strings(expr: str) -> str:
    """``expr`` with the inside of every string literal blanked (same length, same positions), so that braces,
    parentheses, commas and keywords inside strings do not count."""
    return _STRINGS.sub(lambda match: match.group(0)[0] + " " * (len(match.group(0)) - 2) + match.group(0)[-1], expr)


def _unquote(literal: str) -> str:
    if literal.startswith("`"):
        return literal[1:-1]
    try:
        return ast.literal_eval(literal)  # PromQL's escapes are Go's; the ones a query uses are Python's too
    except (SyntaxError, ValueError):
        return literal[1:-1]


def selectors(expr: str) -> list[tuple[str | None, list[Matcher]]]:
    """Every selector with braces in ``expr``: its metric name (None for ``{__name__=...}``-only ones) and matchers."""
    blank = _blank_strings(expr)
    return [(match.group(1), [Matcher(found.group(1), found.group(2), _unquote(found.group(3)))
                              for found in _MATCHER.finditer(expr[match.start(2):match.end(2)])])
            for match in _SELECTOR.finditer(blank)]


def _split_labels(text: str) -> list[str]:
    return [label.strip() for label in text.split(",") if label.strip()]


def label_lists(expr: str) -> list[tuple[str, list[str]]]:
    """Every ``by``, ``without``, ``on``, ``ignoring``, ``group_left`` and ``group_right`` list: keyword, labels."""
    return [(match.group(1), _split_labels(match.group(2))) for match in _LABEL_LIST.finditer(_blank_strings(expr))]


def _closing(blank: str, start: int) -> int:
    """The index in ``blank`` (``expr`` with its strings blanked) of the parenthesis that closes the one just
    before ``start``; the length of ``blank`` when none does."""
    depth = 0
    for index in range(start, len(blank)):
        if blank[index] in "([{":
            depth += 1
        elif blank[index] in ")]}":
            if not depth:
                return index
            depth -= 1
    return len(blank)


def _arguments(expr: str, blank: str, start: int) -> list[str]:
    """The arguments of the call whose parenthesis is just before ``start``, as written in ``expr``: split at the
    commas of ``blank`` (strings blanked) outside brackets."""
    args, depth, begin = [], 0, start
    for index in range(start, len(blank)):
        char = blank[index]
        if char in "([{":
            depth += 1
        elif char in ")]}" and depth:
            depth -= 1
        elif char == ")" or (char == "," and not depth):
            args.append(expr[begin:index].strip())
            begin = index + 1
            if char == ")":
                break
    return args


def label_functions(expr: str) -> list[tuple[str, list[str]]]:
    """Every ``label_replace`` and ``label_join`` call: the function and its string arguments, unquoted
    (label_replace: dst, replacement, src, regex; label_join: dst, separator, src...)."""
    blank = _blank_strings(expr)
    return [(match.group(1), [_unquote(arg) for arg in _arguments(expr, blank, match.end())[1:]
                              if _STRINGS.fullmatch(arg)])
            for match in _LABEL_FUNCTION.finditer(blank)]


@dataclass(frozen=True)
class Aggregation:
    """One aggregation of an expression: its operator, its grouping (``by``, ``without`` or None) and the labels
    that names, the text of its operand (the parameter of topk, quantile and count_values included), and where it
    starts and ends in the expression."""

    operator: str
    grouping: str | None
    labels: tuple[str, ...]
    operand: str
    start: int
    end: int


def aggregations(expr: str) -> list[Aggregation]:
    """Every aggregation in ``expr``, nested ones too, in the order they start; the grouping may come before the
    operand (``sum by (model) (x)``) or after it (``sum (x) by (model)``)."""
    blank, found = _blank_strings(expr), []
    for match in _AGGREGATION.finditer(blank):
        close = _closing(blank, match.end())
        grouping, labels, end = match.group(2), match.group(3) or "", close + 1
        trailing = None if grouping else _TRAILING_GROUPING.match(blank, end)
        if trailing:
            grouping, labels, end = trailing.group(1), trailing.group(2), trailing.end()
        found.append(Aggregation(match.group(1), grouping, tuple(_split_labels(labels)), expr[match.end():close],
                                 match.start(), end))
    return found


def _outermost(found: list[Aggregation]) -> list[Aggregation]:
    """The aggregations of ``found`` that no other of them holds in its operand."""
    return [one for one in found if not any(other.start < one.start and one.end <= other.end for other in found)]


def _merge(labelsets: Iterable[Labels]) -> Labels:
    """The labels of any of ``labelsets``; a label's values are the union of theirs, or any if one takes any."""
    merged: Labels = {}
    for labels in labelsets:
        for label, values in labels.items():
            if label not in merged:
                merged[label] = values
            elif merged[label] is not None:
                merged[label] = None if values is None else tuple(dict.fromkeys(merged[label] + values))
    return merged


def created_labels(expr: str) -> Labels:
    """The labels ``label_replace`` and ``label_join`` write in ``expr``; a ``label_replace`` to a literal (no
    ``$``) fixes its values."""
    created = []
    for function, strings in label_functions(expr):
        if strings:
            literal = function == "label_replace" and len(strings) > 1 and "$" not in strings[1]
            created.append({strings[0]: (strings[1],) if literal else None})
    return _merge(created)


def contract_labels() -> dict[str, Labels]:
    """The labels of every contract series and of ``BUILTIN_SERIES``: the metric's own (``le`` too for a histogram's
    buckets), ``PUSHED_LABELS`` for the training metrics and ``TARGET_LABELS``, with ``LABEL_VALUES``."""
    schema: dict[str, Labels] = {name: dict.fromkeys(TARGET_LABELS) for name in BUILTIN_SERIES}
    for metric in METRICS:
        for series in metric.series:
            own = (*metric.labels, *(("le",) if series.endswith("_bucket") else ()),
                   *(PUSHED_LABELS if metric in TRAINING else ()), *TARGET_LABELS)
            schema[series] = dict.fromkeys(own) | LABEL_VALUES.get(metric.name, {})
    return schema


def recorded_labels(expr: str, schema: Mapping[str, Labels]) -> Labels:
    """The labels of what a recording rule's ``expr`` returns, as far as a reading without a parser tells: those its
    ``by`` lists keep (less ``le`` after ``histogram_quantile``), or without any, those its series carry less its
    ``without`` lists; and those ``label_replace`` and ``label_join`` create. Values as the series' (``schema``)."""
    read = _merge(schema[name] for name in sorted(metric_names(expr)) if name in schema)
    created, lists = created_labels(expr), label_lists(expr)
    by = [label for kind, labels in lists if kind == "by" for label in labels]
    if by:
        kept = [label for label in by if not (label == "le" and "histogram_quantile" in expr)]
    else:
        dropped = {label for kind, labels in lists if kind == "without" for label in labels}
        kept = [label for label in read if label not in dropped]
    return _merge([{label: read.get(label) for label in kept if label in read or label not in created}, created])


def series_labels(rules: dict) -> dict[str, Labels]:
    """``contract_labels`` and the labels of every recording rule of ``rules`` (``recorded_labels``), in file order."""
    schema = contract_labels()
    for rule in rules_of(rules):
        if "record" in rule:
            schema[rule["record"]] = recorded_labels(rule["expr"], schema)
    return schema


def _listed(values: Iterable[str]) -> str:
    return ", ".join(values) or "none"


def _matcher_problem(series: str, labels: Labels, matcher: Matcher) -> str | None:
    found = f'found {matcher.label}{matcher.op}"{matcher.value}"'
    if matcher.label == "__name__":
        return None
    if matcher.label not in labels:
        return f"{series} has no label {matcher.label} ({found}; expected a label of {series}: {_listed(labels)})"
    values = labels[matcher.label]
    if values is None or matcher.op == "!~" or TEMPLATE_VARIABLE.search(matcher.value):
        return None
    if matcher.op in ("=", "!="):
        known = matcher.value in values
        what = f'label {matcher.label} of {series} never takes the value "{matcher.value}"'
    else:
        try:
            known = any(re.fullmatch(matcher.value, value) for value in values)
        except re.error:
            return None
        what = f'no value of label {matcher.label} of {series} matches "{matcher.value}"'
    return None if known else f"{what} ({found}; expected one of: {_listed(values)})"


def _grouping_problems(where: str, aggregation: Aggregation, schema: Mapping[str, Labels]) -> list[str]:
    """One line per label of ``aggregation``'s ``by`` or ``without`` list that the series of its own operand do not
    carry (``recorded_labels`` of the operand): a label only another part of the expression has groups nothing."""
    names = sorted(name for name in metric_names(aggregation.operand) if name in schema)
    if not names or aggregation.grouping is None:
        return []
    available = recorded_labels(aggregation.operand, schema)
    return [f"{where}: {aggregation.grouping} ({', '.join(aggregation.labels)}) names {label}, which the series it "
            f"aggregates do not have (found {label}; expected a label of {', '.join(names)}: {_listed(available)})"
            for label in aggregation.labels if label not in available and not TEMPLATE_VARIABLE.search(label)]


def label_problems(item: Expr, schema: Mapping[str, Labels]) -> list[str]:
    """One line per label in ``item`` that its series do not carry, and per value a matcher selects by ``=``,
    ``!=`` or ``=~`` that the label never takes: the selectors' matchers against their series' labels, each
    aggregation's ``by`` or ``without`` list against the labels of the series it aggregates, the ``on``,
    ``ignoring`` and ``group_*`` lists and ``label_replace``/``label_join`` sources against the labels of every
    series ``item`` reads (and those it creates). Series not in ``schema`` are left to the metric-name check;
    template variables pass."""
    problems = [f"{item.where}: {problem}" for name, matchers in selectors(item.expr) if name in schema
                for matcher in matchers if (problem := _matcher_problem(name, schema[name], matcher))]
    names = sorted(name for name in metric_names(item.expr) if name in schema)
    if not names:
        return problems
    for aggregation in aggregations(item.expr):
        problems += _grouping_problems(item.where, aggregation, schema)
    readable = _merge([*(schema[name] for name in names), created_labels(item.expr)])
    expected = f"expected a label of {', '.join(names)}: {_listed(readable)}"
    for kind, labels in label_lists(item.expr):
        if kind in ("by", "without"):
            continue  # an aggregation's own: above
        problems += [f"{item.where}: {kind} ({', '.join(labels)}) names {label}, which no series it reads has "
                     f"(found {label}; {expected})" for label in labels
                     if label not in readable and not TEMPLATE_VARIABLE.search(label)]
    for function, strings in label_functions(item.expr):
        sources = strings[2:3] if function == "label_replace" else strings[2:]
        problems += [f"{item.where}: {function} reads label {label}, which no series it reads has "
                     f"(found {label}; {expected})" for label in sources if label and label not in readable]
    return problems


# types


def _kind_of(name: str) -> str | None:
    """What series ``name`` is, for messages: a contract metric's kind, "recording rule's series", or None for a
    name the metric-name check reports."""
    return "recording rule's series" if ":" in name else SERIES_KINDS.get(name)


def _rate_problems(item: Expr) -> list[str]:
    """One line per series that ``rate()``, ``irate()`` or ``increase()`` reads in ``item`` and that is not a
    counter or a histogram's series: they read every fall of a gauge (or of a recorded ratio) as a counter reset."""
    blank, problems = _blank_strings(item.expr), []
    for match in _RATE_FUNCTION.finditer(blank):
        close = _closing(blank, match.end())
        call = item.expr[match.start():close + 1]
        problems += [f"{item.where}: {match.group(1)}() reads {name}, a {kind} (found {call}; expected a counter, or "
                     f"a histogram's _bucket, _sum or _count series)"
                     for name in sorted(metric_names(item.expr[match.end():close]))
                     if (kind := _kind_of(name)) not in (None, "counter", "histogram")]
    return problems


def _quantile_problems(item: Expr) -> list[str]:
    """One line per ``histogram_quantile()`` in ``item`` whose outermost aggregations drop ``le`` (no ``by`` list
    with it, a ``without`` list with it, or no grouping at all), and per contract series it reads that is not a
    ``_bucket`` series: either way no buckets are left, and the quantile is NaN or nothing."""
    blank, problems = _blank_strings(item.expr), []
    expected = "expected le among the labels its buckets are aggregated by"
    for match in _QUANTILE_FUNCTION.finditer(blank):
        args = _arguments(item.expr, blank, match.end())
        buckets = args[1] if len(args) > 1 else ""
        for outer in _outermost(aggregations(buckets)):
            listed = f"{outer.grouping} ({', '.join(outer.labels)})"
            if outer.grouping is None:
                problems.append(f"{item.where}: histogram_quantile() aggregates its buckets into one series (found "
                                f"{outer.operator}(...); {expected})")
            elif ("le" in outer.labels) != (outer.grouping == "by"):
                problems.append(f"{item.where}: histogram_quantile() aggregates its buckets {listed} (found {listed}; "
                                f"{expected})")
        problems += [f"{item.where}: histogram_quantile() reads {name}, which has no le (found {name}; expected a "
                     f"histogram's _bucket series)" for name in sorted(metric_names(buckets))
                     if name in SERIES_KINDS and not name.endswith("_bucket")]
    return problems


def type_problems(item: Expr) -> list[str]:
    """One line per function ``item`` applies to a series of the wrong type: ``rate()``, ``irate()`` or
    ``increase()`` of a series that is not a counter or a histogram's (``_rate_problems``), and a
    ``histogram_quantile()`` whose buckets lose their ``le`` (``_quantile_problems``)."""
    return _rate_problems(item) + _quantile_problems(item)


def variable_label_problems(dashboard: dict, schema: Mapping[str, Labels]) -> list[str]:
    """One line per query variable ``label_values(selector, label)`` whose label its series do not carry."""
    problems = []
    for variable in dashboard.get("templating", {}).get("list", []):
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        found = _LABEL_VALUES.match(query) if variable.get("type") == "query" else None
        names = sorted(name for name in metric_names(found.group(1)) if name in schema) if found else []
        readable = _merge(schema[name] for name in names)
        if names and found.group(2) not in readable:
            problems.append(f"variable {variable['name']}: label_values reads label {found.group(2)}, which "
                            f"{', '.join(names)} does not have (found {found.group(2)}; expected a label of "
                            f"{', '.join(names)}: {_listed(readable)})")
    return problems


# the checks


def check_dashboard(dashboard: dict) -> str:
    """promtool's parse of every panel query and query variable of ``dashboard``, template variables replaced by
    ``VARIABLES``: its output, or a ``CheckError``."""
    return check_exprs(map(substitute, dashboard_exprs(dashboard)))


def contract_problems(rules: dict, dashboard: dict) -> list[str]:
    """One line per disagreement between the rules, the dashboard and the metric contract: a recording rule not named
    level:metric:operations, a recording rule used but not defined, a series not in the contract (nor
    ``BUILTIN_SERIES``), a contract metric nothing uses, a label a series does not carry or a label value it never
    takes (``label_problems``, ``variable_label_problems``), a function of a series of the wrong type
    (``type_problems``). Empty when they agree."""
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
    schema = series_labels(rules)
    for item in rule_exprs(rules) + dashboard_exprs(dashboard):
        problems += label_problems(item, schema) + type_problems(item)
    return problems + variable_label_problems(dashboard, schema)


def alert_test_kinds(rules: dict, test_files: Iterable[Path]) -> dict[str, set[str]]:
    """For each alert, which kinds of unit test it has: "firing" (expected alerts), "quiet" (none) and "pending" (a
    promql_expr_test expecting its ``ALERTS`` sample with ``alertstate="pending"``)."""
    coverage: dict[str, set[str]] = {alert["alert"]: set() for alert in alerts_of(rules)}
    for path in test_files:
        for test in yaml.safe_load(path.read_text())["tests"]:
            for case in test.get("alert_rule_test", []):
                coverage.setdefault(case["alertname"], set()).add("firing" if case.get("exp_alerts") else "quiet")
            for case in test.get("promql_expr_test", []):
                for sample in case.get("exp_samples") or []:
                    labels = sample.get("labels", "")
                    name = re.search(r'\balertname="([^"]+)"', labels)
                    if labels.startswith("ALERTS{") and 'alertstate="pending"' in labels and name:
                        coverage.setdefault(name.group(1), set()).add("pending")
    return coverage


def coverage_problems(rules: dict, test_files: Iterable[Path]) -> list[str]:
    """One line per alert without a firing or without a quiet unit test in ``test_files``, or, when it has a
    ``for:``, without a pending one (the alert pending, not yet firing, inside its ``for``)."""
    waits = {alert["alert"] for alert in alerts_of(rules) if alert.get("for")}
    return [f"alert {alert}: no {kind} test in {RULE_TESTS_DIR.name}/" for alert, kinds in
            alert_test_kinds(rules, test_files).items()
            for kind in ("firing", "quiet", *(("pending",) if alert in waits else ())) if kind not in kinds]


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


def _number(text: str) -> float:
    """A comparison's constant: a number, or numbers multiplied and divided (``8 * 86400``)."""
    parts = re.split(r"\s*([*/])\s*", text.strip())
    value = float(parts[0])
    for op, operand in zip(parts[1::2], parts[2::2], strict=True):
        value = value * float(operand) if op == "*" else value / float(operand)
    return value


def alert_thresholds(expr: str) -> list[float]:
    """The constants ``expr`` compares with by ``>``, ``<``, ``>=`` or ``<=`` (its thresholds and guards)."""
    return [_number(found) for found in _COMPARISON.findall(_blank_strings(expr))]


def stated_thresholds(text: str) -> list[tuple[str, float]]:
    """Each threshold ``text`` states ("threshold 5%", "at least 20", "more than 8 days", "> 0.5 s"): the words, and
    the value in the rule's units (a ratio for %, seconds for durations)."""
    found = []
    for match in _STATED_THRESHOLD.finditer(text):
        unit = match.group(2) or ""
        unit = unit if unit in ("%", "ms", "s") else unit.rstrip("s")  # seconds, minutes, hours, days: singular
        found.append((match.group(0).strip(), float(match.group(1)) * _UNITS.get(unit, 1)))
    return found


def duration_seconds(text: str) -> float:
    """A Prometheus duration (``5m``, ``1h30m``) or a ``for N minutes`` phrase's ``N minutes``, in seconds."""
    phrase = re.fullmatch(r"(\d+) (minute|hour)s?", text.strip())
    if phrase:
        return int(phrase.group(1)) * _UNITS[phrase.group(2)]
    return sum(int(number) * _DURATION_UNITS[unit] for number, unit in re.findall(r"(\d+)(ms|s|m|h|d|w|y)", text))


def _numbers(values: Iterable[float]) -> str:
    return _listed(f"{value:g}" for value in values)


def _among(value: float, thresholds: Iterable[float]) -> bool:
    return any(math.isclose(value, threshold, rel_tol=1e-9) for threshold in thresholds)


def _disagreements(where: str, text: str, alert: dict, thresholds: list[float]) -> list[str]:
    """What ``text`` (at ``where``) states about ``alert`` that its rule does not have: a threshold none of
    ``thresholds``, a ``for N minutes`` other than its ``for:``."""
    name, problems = alert["alert"], []
    if thresholds:
        problems += [f"{where} says {words!r} ({value:g}), but {name} compares with {_numbers(thresholds)}"
                     for words, value in stated_thresholds(text) if not _among(value, thresholds)]
    wait = duration_seconds(alert.get("for", "0s"))
    problems += [f"{where} says {match.group(0)!r}, but the for: of {name} is {alert.get('for', 'none')}"
                 for match in _STATED_FOR.finditer(text) if duration_seconds(match.group(0)[4:]) != wait]
    return problems


def threshold_problems(rules: dict, docs: str, dashboard: dict) -> list[str]:
    """One line per threshold or ``for`` stated about an alert that its rule does not have: in its summary and
    description ("threshold 5%", "at least 20 labels", "for 10 minutes"), in the alert table of ``docs`` (the "Fires
    when" threshold, the For and the Severity columns; every alert must have a row) and in the dashboard's panels
    whose description names it (the description's "above 0.2" or "for 30 minutes", the panel's threshold line)."""
    problems, rows = [], {match.group(1): match for match in _ALERT_TABLE_ROW.finditer(docs)}
    for alert in alerts_of(rules):
        name, thresholds = alert["alert"], alert_thresholds(alert["expr"])
        annotations = alert.get("annotations", {})
        for key in ("summary", "description"):
            problems += _disagreements(f"alert {name}: its {key}", annotations.get(key, ""), alert, thresholds)
        row = rows.get(name)
        if row is None:
            problems.append(f"alert {name}: no row in the alert table of {DOCS_FILE.relative_to(ROOT)}")
            continue
        where = f"alert {name}: the alert table of {DOCS_FILE.relative_to(ROOT)}"
        fires, wait, severity = row.group(2), row.group(3), row.group(4)
        problems += _disagreements(where, fires, alert, thresholds)
        if "for" not in alert:
            same_wait = wait == "at once"
        else:
            same_wait = duration_seconds(wait) == duration_seconds(alert["for"])
        if not same_wait:
            problems.append(f"{where} says For {wait!r}, but its for: is {alert.get('for', 'none (at once)')}")
        if severity != alert.get("labels", {}).get("severity"):
            problems.append(f"{where} says Severity {severity!r}, but its severity label is "
                            f"{alert.get('labels', {}).get('severity')!r}")
    alerts = {alert["alert"]: alert for alert in alerts_of(rules)}
    for panel in panels_of(dashboard["panels"]):
        named = [alerts[name] for name in re.findall(r"\bMlnt\w+", panel.get("description", "")) if name in alerts]
        if len(named) != 1:
            continue  # no alert, or several: nothing to hold the panel to
        alert, where = named[0], f"panel {panel['id']} ({panel['title']})"
        thresholds = alert_thresholds(alert["expr"])
        problems += _disagreements(f"{where}: its description", panel["description"], alert, thresholds)
        steps = panel.get("fieldConfig", {}).get("defaults", {}).get("thresholds", {}).get("steps", [])
        lines = [step["value"] for step in steps if step.get("value") is not None]
        problems += [f"{where}: its threshold line is at {line:g}, but {alert['alert']} compares with "
                     f"{_numbers(thresholds)}" for line in lines if thresholds and not _among(line, thresholds)]
    return problems


def main(argv: list[str] | None = None) -> int:
    """``python -m monitoring.check``: promtool's checks of the rules, the dashboard and the rule unit tests, then
    the contract (names and labels), coverage, alert and threshold checks; returns 0 when all pass, else 1 with the
    failures on stderr."""
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
    docs = DOCS_FILE.read_text()
    problems = (contract_problems(rules, dashboard) + coverage_problems(rules, rule_tests())
                + alert_problems(rules, docs) + threshold_problems(rules, docs, dashboard))
    print("\n".join(problems) or "monitoring: all checks passed", file=sys.stderr if problems else sys.stdout)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
