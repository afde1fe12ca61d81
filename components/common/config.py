"""Typed step configs from ``params.yaml``, and the one command-line convention of every step:

    python -m components.<step> [--params FILE] [--set section.key=value ...]

Each section of ``params.yaml`` is a frozen dataclass; the dataclass is the single source of truth for the
keys, their types and their defaults. Unknown sections or keys, and values of the wrong type, are errors that
name the file, the field, what was expected and what was found.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import re
import signal
import sys
import threading
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from components.common.steps import STEPS

DEFAULT_PARAMS = "params.yaml"
LOG_FORMAT = "%(levelname)s %(name)s: %(message)s"
# Characters that could forge or disguise a log line when a message echoes a file name, a URL or another string
# from the data: C0 and C1 controls (newline, carriage return, escape sequences), Unicode line and paragraph
# separators, and the bidirectional overrides and isolates that reorder what a terminal shows.
UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")


class ConfigError(ValueError):
    """A params file or an override does not match the typed config."""


def printable(text: object) -> str:
    """``str(text)`` on one line: every character of ``UNPRINTABLE`` written as its Python escape (``\\n``,
    ``\\x1b``, ``\\u2028``), so that a string from the data cannot start a forged log line."""
    return UNPRINTABLE.sub(lambda found: found[0].encode("unicode_escape").decode("ascii"), str(text))


class PrintableFormatter(logging.Formatter):
    """The steps' log format with ``printable`` applied to each record's line (a traceback, ours, stays as it is)."""

    def formatMessage(self, record: logging.LogRecord) -> str:  # noqa: N802 - logging's name
        """The record's formatted line with ``printable`` applied, so a message that echoes data stays on its line."""
        return printable(super().formatMessage(record))


class _PrintableMessages(logging.Formatter):
    """Another formatter's output with ``printable`` applied to the record's message alone (its format, colours and
    traceback stay as they are): what ``configure_logging(take_over=True)`` gives a handler it found."""

    def __init__(self, inner: logging.Formatter) -> None:
        super().__init__()
        self.inner = inner

    def format(self, record: logging.LogRecord) -> str:
        """``inner``'s line for a copy of ``record`` whose message is ``printable(record.getMessage())``."""
        escaped = logging.makeLogRecord({**record.__dict__, "msg": printable(record.getMessage()), "args": None})
        return self.inner.format(escaped)


def configure_logging(*, take_over: bool = False) -> None:
    """The steps' logging, set on the root logger: where it has no handler (a step's command line), one to stderr with
    ``PrintableFormatter(LOG_FORMAT)`` and the root at WARNING; the ``components`` and ``model`` loggers at INFO. A
    root that has handlers (pytest's, an embedding program's) is left as it is, unless ``take_over``: then each of its
    handlers writes the message through ``printable`` in its own format (a KFP step, whose executor configured the
    root with ``logging.basicConfig`` before the component's body runs). Idempotent."""
    root = logging.getLogger()
    if not root.handlers:  # as logging.basicConfig
        handler = logging.StreamHandler()
        handler.setFormatter(PrintableFormatter(LOG_FORMAT))
        root.addHandler(handler)
        root.setLevel(logging.WARNING)
    elif take_over:
        for handler in root.handlers:
            if not isinstance(handler.formatter, PrintableFormatter | _PrintableMessages):
                handler.setFormatter(_PrintableMessages(handler.formatter or logging.Formatter()))
    for name in ("components", "model"):
        logging.getLogger(name).setLevel(logging.INFO)


_MERGE_TAG = "tag:yaml.org,2002:merge"  # the tag of ``<<``, the key that merges another mapping's keys into its own
_MERGE_KEY = object()  # ``<<`` among a mapping's keys, told apart from a key named "<<" (quoted: no merge key)


class _Loader(yaml.SafeLoader):
    """YAML as DVC reads params files (YAML 1.2's core schema: ``010`` is 10, ``5e-4`` a float, ``no`` and
    ``1:30`` strings, where PyYAML's YAML 1.1 reads 8, a string, False and 90), and a key given twice in one
    mapping is an error (YAML 1.1 keeps the last one silently: a section pasted twice dropped the first). Merge
    keys (``mlnt: {<<: *train, mode: head}``) work as in DVC: a key of the mapping itself overrides a merged one."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.parents: dict[yaml.Node, tuple[yaml.Node, Any]] = {}  # node -> (parent, key node or index): ``field``
        self.checked: set[yaml.Node] = set()  # the mappings whose own keys were checked for duplicates

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node:
        """The node, remembering where it is (the first place: an alias is the anchored node), for ``field``."""
        node = super().compose_node(parent, index)
        if parent is not None:
            self.parents.setdefault(node, (parent, index))
        return node

    def field(self, node: yaml.Node) -> str:
        """Where ``node`` is, as a field: ``noise.seed``, ``mlnt.lr_milestones[1]``; "" for the document itself."""
        path = ""
        while node in self.parents:
            node, index = self.parents[node]
            step = f"[{index}]" if isinstance(index, int) else ""  # a sequence's item, or a mapping's key itself
            path = (f".{index.value}" if isinstance(index, yaml.ScalarNode) else step) + path
        return path.lstrip(".")

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """The mapping's own keys checked (``refuse_duplicates``), then the mappings its ``<<`` names merged in:
        a key of its own overrides a merged one, and of the mappings merged, an earlier one overrides a later one
        (``<<: [*a, *b]``), as DVC reads them. Not PyYAML's merge, which lets a merged mapping's own merged key
        override its own key (``c: {<<: *x}`` with ``x: &x {k: 1, <<: *base}`` took base's ``k``)."""
        self.refuse_duplicates(node)
        merges = [value for key, value in node.value if key.tag == _MERGE_TAG]
        node.value = [(key, value) for key, value in node.value if key.tag != _MERGE_TAG]  # first: a cycle stops here
        merged = []
        for value in merges:
            sources = value.value if isinstance(value, yaml.SequenceNode) else [value]
            for source in reversed(sources):  # the pairs are read in order, the last one of a key kept
                if not isinstance(source, yaml.MappingNode):
                    raise yaml.constructor.ConstructorError(
                        "while constructing a mapping", node.start_mark,
                        f"expected a mapping or a list of mappings to merge, found {source.id}", source.start_mark)
                self.flatten_mapping(source)
                merged += source.value
        node.value = merged + node.value

    def refuse_duplicates(self, node: yaml.MappingNode) -> None:
        """A ``ConstructorError`` when a key appears twice among the mapping's own keys (``<<`` included). Checked
        before the merge, once: merging a mapping into another flattens that one too, and its own keys can no
        longer be told from merged ones."""
        if node in self.checked:
            return
        self.checked.add(node)
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            key = _MERGE_KEY if key_node.tag == _MERGE_TAG else self.construct_object(key_node)
            if isinstance(key, typing.Hashable) and key in seen:
                shown = "<<" if key is _MERGE_KEY else repr(key)
                raise yaml.constructor.ConstructorError(
                    None, None, f"found the key {shown} twice in one mapping (first at line {seen[key]})",
                    key_node.start_mark)
            if isinstance(key, typing.Hashable):
                seen[key] = key_node.start_mark.line + 1


def _core_int(text: str) -> int:
    digits = text.replace("_", "")
    sign, digits = (-1, digits[1:]) if digits[0] == "-" else (1, digits.lstrip("+"))
    base = {"0b": 2, "0o": 8, "0x": 16}.get(digits[:2])
    return sign * (int(digits[2:], base) if base else int(digits, 10))


def _core_float(text: str) -> float:
    lowered = text.lower().replace("_", "")
    return float(lowered.replace(".inf", "inf").replace(".nan", "nan"))


def _construct_core(loader: _Loader, node: yaml.ScalarNode, make: Callable[[str], Any]) -> Any:
    """``make`` of the scalar; one the core schema's patterns take for a number but that holds no digits (``0x_``:
    DVC's reader fails on it too) is a YAML error naming the field, not a bare ``ValueError``."""
    text = loader.construct_scalar(node)
    try:
        return make(text)
    except ValueError:
        where = loader.field(node)
        raise yaml.constructor.ConstructorError(
            None, None, f"{where + ': ' if where else ''}expected a number, found {text!r}, a prefix without digits",
            node.start_mark) from None


# YAML 1.2 as DVC's parser (ruamel.yaml's 1.2 resolver) reads params.yaml: digits may be grouped with "_", also
# right after the sign or the point (``-_1`` is -1, ``._5`` 0.5); 0b/0o/0x prefixes; a number that starts with its
# point takes an exponent only with a sign (``.1e+5`` is 10000.0, ``.1e5`` a string).
_CORE = {  # tag -> (pattern, first characters, constructor)
    "tag:yaml.org,2002:null": (r"~|null|Null|NULL|", ["~", "n", "N", ""], lambda text: None),
    "tag:yaml.org,2002:bool": (r"true|True|TRUE|false|False|FALSE", list("tTfF"), lambda text: text.lower() == "true"),
    "tag:yaml.org,2002:int": (r"[-+]?0b[01_]+|[-+]?0o[0-7_]+|[-+]?0x[0-9a-fA-F_]+|[-+]?[0-9_]+",
                              list("-+0123456789"), _core_int),
    "tag:yaml.org,2002:float": (r"[-+]?[0-9][0-9_]*(?:\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)"
                                r"|[-+]?\.[0-9_]+(?:[eE][-+][0-9]+)?"
                                r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)", list("-+0123456789."), _core_float),
}
_YAML_11_ONLY = {"tag:yaml.org,2002:timestamp",  # 2026-01-01 stays a string, as in YAML 1.2
                 "tag:yaml.org,2002:value"}  # and so does =, YAML 1.1's "value key"
_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag not in _CORE and tag not in _YAML_11_ONLY]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
for _tag, (_pattern, _first, _make) in _CORE.items():
    _Loader.add_implicit_resolver(_tag, re.compile(f"^(?:{_pattern})$"), _first)
    _Loader.add_constructor(_tag, lambda loader, node, make=_make: _construct_core(loader, node, make))


def read_yaml(text: str) -> Any:
    """``text`` parsed as params files are (``_Loader``: YAML 1.2's core schema, no key twice)."""
    return yaml.load(text, Loader=_Loader)


def load_params(path: str | Path) -> dict[str, Any]:
    """The parsed params file: a mapping of section name (a step of ``STEPS``) to a mapping of keys. A section that
    is no step (a typo: ``nosie``) is an error, not a section every step ignores."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: expected a params file, found none (pass --params FILE)")
    try:
        data = read_yaml(path.read_text()) or {}
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: expected valid YAML, found a syntax error: {_yaml_error(err)}") from err
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of sections to mappings, found {type(data).__name__}")
    for name, section in data.items():
        if not isinstance(section, dict):
            raise ConfigError(f"{path}: expected a mapping of sections to mappings, found section {name!r}: "
                              f"{type(section).__name__}")
    unknown = [name for name in data if name not in STEPS]
    if unknown:
        raise ConfigError(f"{path}: expected sections named after the steps ({', '.join(STEPS)}), found "
                          f"{', '.join(map(repr, unknown))}")
    return data


def _yaml_error(err: Exception) -> str:
    """A YAML error in one line: the problem and where it is (PyYAML's own text spans several lines)."""
    mark = getattr(err, "problem_mark", None)
    if getattr(err, "problem", None) and mark is not None:
        return f"{err.problem} at line {mark.line + 1}, column {mark.column + 1}"
    return " ".join(str(err).split())


def build(cls: type, values: Mapping[str, Any], *, where: str) -> Any:
    """An instance of the dataclass ``cls`` from ``values``, type-checked; missing keys take defaults."""
    hints = typing.get_type_hints(cls)
    fields = {f.name for f in dataclasses.fields(cls)}
    # a key that is no string (``1: 2``, ``~: 1``) is unknown too, shown with its type: sorting it among strings failed
    unknown = sorted(key if isinstance(key, str) else f"{key!r} ({type(key).__name__})"
                     for key in values if key not in fields)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}. Valid: {', '.join(sorted(fields))}")
    checked = {key: coerce(value, hints[key], where=f"{where}.{key}") for key, value in values.items()}
    try:
        return cls(**checked)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from err


def coerce(value: Any, hint: Any, *, where: str) -> Any:
    """``value`` checked against the type ``hint`` (int, float, bool, str, tuples, X | None, Literal)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [a for a in args if a is not type(None)]
        errors = []
        for option in options:
            try:
                return coerce(value, option, where=where)
            except ConfigError as err:
                errors.append(str(err))
        raise ConfigError(errors[0] if len(errors) == 1 else f"{where}: expected {_name(hint)}, found {value!r}")
    if origin is typing.Literal:  # the value and its type: True == 1 and 3.0 == 3 are no choice of 1 or 3
        if not any(value == choice and type(value) is type(choice) for choice in args):
            raise ConfigError(f"{where}: expected one of {', '.join(map(repr, args))}, found {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{where}: expected a list, found {value!r} ({type(value).__name__})")
        item = args[0]
        return tuple(coerce(v, item, where=f"{where}[{i}]") for i, v in enumerate(value))
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, float) and not math.isfinite(value):  # NaN passes every comparison
        raise ConfigError(f"{where}: expected a finite number, found {value!r}")
    if hint in (int, float, str, bool) and (not isinstance(value, hint) or (hint is int and isinstance(value, bool))):
        raise ConfigError(f"{where}: expected {hint.__name__}, found {value!r} ({type(value).__name__})")
    return value


CONFIG_FILE = "config.json"  # in a step's output folder: the config it ran with (``as_record``)


def as_record(config: Any) -> dict[str, Any]:
    """A step's config as it ran, for its outputs (``config.json``, or ``config`` in ingest's manifest): the
    dataclass's fields, JSON types (tuples as lists). Export records these in the model card, so the card says what
    ran even when a step was run by hand with ``--set``."""
    return json.loads(json.dumps(dataclasses.asdict(config)))


def apply_override(params: dict[str, dict[str, Any]], assignment: str, sections: Mapping[str, type]) -> None:
    """Apply one ``section.key=value`` to ``params`` in place; ``value`` is parsed as YAML."""
    target, sep, raw = assignment.partition("=")
    section, dot, key = target.strip().partition(".")
    if not sep or not dot or not key:
        raise ConfigError(f"--set {assignment!r}: expected section.key=value")
    if section not in sections:
        raise ConfigError(f"--set {assignment!r}: unknown section {section!r}. Valid: {', '.join(sections)}")
    fields = {f.name for f in dataclasses.fields(sections[section])}
    if key not in fields:
        raise ConfigError(f"--set {assignment!r}: unknown key {key!r} in section {section!r}. "
                          f"Valid: {', '.join(sorted(fields))}")
    try:
        comment = _comment(raw)
        value = read_yaml(raw) if raw.strip() else ""
    except yaml.YAMLError as err:
        raise ConfigError(f"--set {assignment!r}: expected a YAML value, found {raw!r} ({_yaml_error(err)})") from err
    if comment is not None:  # a list's or a mapping's item is quoted inside it: no example for the whole value
        example = "" if raw.lstrip().startswith(("[", "{")) else \
            f", as in --set '{target.strip()}={json.dumps(raw.strip())}'"
        raise ConfigError(f"--set {assignment!r}: expected a value without a YAML comment, found {raw!r}, of which "
                          f"YAML drops {raw[comment:]!r} as a comment; quote the string that holds the '#'{example}")
    params.setdefault(section, {})[key] = value


def _comment(text: str) -> int | None:
    """Where the YAML comment in ``text`` starts (a ``#`` first or after a space, outside quotes), or None: a comment
    in a ``--set`` value (``data/run #1``) would drop the rest of it without a word."""
    tokens = [(token.start_mark.index, token.end_mark.index) for token in yaml.scan(text, Loader=_Loader)]
    return next((i for i, char in enumerate(text)
                 if char == "#" and not any(start <= i < end for start, end in tokens)), None)


def parser_for(step: str, sections: Mapping[str, type], description: str,
               running: Mapping[str, Any] | None = None, source: str = DEFAULT_PARAMS,
               problems: Sequence[str] = ()) -> argparse.ArgumentParser:
    """The parser of ``python -m components.<step>``; ``--help`` lists every parameter with the value that will
    run (``running``: the typed configs the params file and overrides give) and, where it differs, the default.
    ``problems``: why ``source`` gives no valid values for some sections, whose code defaults are listed instead."""
    lines = [f"parameters (section.key: type = the value {source} gives; the code's default where it differs):"]
    lines += [f"  not valid, so the code's defaults are shown instead: {problem}" for problem in problems]
    for section, cls in sections.items():
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
            value = getattr(running[section], f.name) if running and section in running else default
            differs = f"  (default {_as_yaml(default)})" if value != default else ""
            lines.append(f"  {section}.{f.name}: {_name(hints[f.name])} = {_as_yaml(value)}{differs}")
    parser = argparse.ArgumentParser(prog=f"python -m components.{step}", description=description,
                                     epilog="\n".join(lines), formatter_class=argparse.RawDescriptionHelpFormatter,
                                     allow_abbrev=False)  # --deb would set debug, which ``cli`` reads before parsing
    parser.add_argument("--params", default=DEFAULT_PARAMS, help="the params file (default: %(default)s)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="override one parameter; repeatable; the value is parsed as YAML")
    parser.add_argument("--debug", action="store_true", help="show the full traceback on errors")
    return parser


def parse(argv: Sequence[str] | None, step: str, sections: Mapping[str, type],
          description: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Parse the command line of a step into one typed config per section of ``sections``; also returns the params
    file's sections as given, with the ``--set`` overrides applied. Every other step's section in the file is
    checked too (``check_sections``), so that a mistake in a later step's section fails the first step, not the step
    that reads it hours later; ``--help`` answers before any of this."""
    running, source, problems = _running(argv, sections)
    args = parser_for(step, sections, description, running, source, problems).parse_args(argv)
    params = load_params(args.params)
    for assignment in args.overrides:
        apply_override(params, assignment, sections)
    source = f"{args.params} with --set overrides" if args.overrides else str(args.params)
    configs = {name: build(cls, params.get(name, {}), where=f"{source}: {name}")
               for name, cls in sections.items()}
    check_sections({name: values for name, values in params.items() if name not in sections}, source)
    return configs, params


def step_configs() -> dict[str, type]:
    """Each step's typed config, by its section's name, in the order of ``STEPS``: the one place that knows them.
    Imported when asked, since every step's module imports this one."""
    from components import baseline, evaluate, export, gate, ingest, mlnt, noise, validate  # noqa: PLC0415

    return {"ingest": ingest.IngestConfig, "validate": validate.ValidateConfig, "noise": noise.NoiseConfig,
            "baseline": baseline.BaselineConfig, "mlnt": mlnt.MlntStepConfig, "evaluate": evaluate.EvaluateConfig,
            "export": export.ExportConfig, "gate": gate.GateConfig}


def check_sections(params: Mapping[str, Mapping[str, Any]], source: str, *,
                   data_path: str | None = None) -> dict[str, Any]:
    """Each section of ``params`` built as its step will build it (``step_configs``), before anything runs: a
    ``ConfigError`` naming ``source``, the section and the field, rather than a step that fails after the ones before
    it have run (``dvc repro`` runs ingest to baseline, hours with the Clothing1M recipe, before the mlnt step reads
    its section). Ingest's is built with ``data_path`` over its ``path`` where given (the folder a pipeline's ingest
    reads); whether that folder exists is for the ingest step to find. Returns the configs, by section, in the order
    of ``STEPS``."""
    given = {**params, "ingest": {**params["ingest"], "path": data_path}} \
        if data_path is not None and "ingest" in params else params
    return {name: build(cls, given[name], where=f"{source}: {name}")
            for name, cls in step_configs().items() if name in given}


def _running(argv: Sequence[str] | None, sections: Mapping[str, type]) -> tuple[dict[str, Any], str, list[str]]:
    """The configs the command line's params file and overrides give, as far as they are valid, with what is not
    (for ``--help``; the real parse fails on it)."""
    pre = argparse.ArgumentParser(add_help=False, allow_abbrev=False)  # as ``parser_for``'s
    pre.add_argument("--params", default=DEFAULT_PARAMS)
    pre.add_argument("--set", dest="overrides", action="append", default=[])
    known, _ = pre.parse_known_args(argv)
    source = f"{known.params}{' with --set' if known.overrides else ''}"
    try:
        params = load_params(known.params)
        for assignment in known.overrides:
            apply_override(params, assignment, sections)
    except ConfigError as err:
        return {}, source, [str(err)]
    running, problems = {}, []
    for name, cls in sections.items():
        try:
            running[name] = build(cls, params.get(name, {}), where=name)
        except ConfigError as err:
            problems.append(str(err))
    return running, source, problems


def cli(step: str, sections: Mapping[str, type], description: str, body: Callable[..., Any], *,
        with_params: bool = False) -> Callable[[Sequence[str] | None], int]:
    """A ``main(argv) -> exit code`` for a step that calls ``body(configs)`` (``with_params``: ``body(configs,
    params)``, ``params`` being the params file's sections as given, overrides applied): errors become one clear
    message unless ``--debug``."""

    def main(argv: Sequence[str] | None = None) -> int:
        configure_logging()  # a configured root (pytest's, an embedding program's) is left as it is
        debug = "--debug" in (sys.argv[1:] if argv is None else argv)
        previous = exit_on_sigterm()
        try:
            configs, params = parse(argv, step, sections, description)
            body(configs, params) if with_params else body(configs)
        except (ConfigError, ValueError, TypeError, OSError, RuntimeError) as err:
            if debug:
                raise
            print(*error_lines(step, err), sep="\n", file=sys.stderr)
            return 2 if isinstance(err, ConfigError) else 1
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        return 0

    return main


def exit_on_sigterm() -> Any:
    """Make SIGTERM (a pod's preemption or deletion, ``kill``, torchrun stopping its workers) raise ``SystemExit(143)``
    in this process, so that the cleanup clauses run (``atomic_path`` removes its temporary file, an ``atomic_set``
    its staged files; the previous outputs stay) where the default action would end the process on the spot. Only in
    the main thread, and only where SIGTERM has its default action: an embedding program's handler (a KFP executor,
    torchrun's agent, a test runner) stays. A second SIGTERM ends the process at once. Returns the handler to restore
    afterwards, or None where nothing was installed."""
    if threading.current_thread() is not threading.main_thread() or \
            signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
        return None

    def stop(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_DFL)  # a second SIGTERM is not held up by the cleanup
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, stop)
    return signal.SIG_DFL


def error_lines(step: str, err: BaseException) -> list[str]:
    """What ``cli`` prints for ``err``, each line ``error: STEP: ...`` with ``printable`` applied: one line, a line
    break in the message escaped (a value from the data cannot start a line), unless ``err`` lists its failures one a
    line (``failures``, validate's ``ValidationFailedError``): then a line for its first and one for each failure,
    as long as the message has exactly those lines (a break inside a value from the data adds one: one line again)."""
    message = str(err)
    lines = message.split("\n")
    failures = getattr(err, "failures", None)
    if not isinstance(failures, Sequence) or isinstance(failures, str) or len(lines) != 1 + len(failures):
        lines = [message]
    return [f"error: {step}: {printable(line)}" for line in lines]


def _as_yaml(value: Any) -> str:
    """``value`` as one would write it in params.yaml or a ``--set`` value (``[]``, ``true``), not as Python's repr."""
    return yaml.safe_dump(_plain(value), default_flow_style=True, width=math.inf).removesuffix("\n...\n").strip()


def _plain(value: Any) -> Any:
    return list(map(_plain, value)) if isinstance(value, tuple) else str(value) if isinstance(value, Path) else value


def _name(hint: Any) -> str:
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_name(a) for a in args)
    if origin is tuple:
        return f"list[{_name(args[0])}]"
    if origin is typing.Literal:
        return "{" + ", ".join(map(str, args)) + "}"
    return "None" if hint is type(None) else getattr(hint, "__name__", str(hint))
