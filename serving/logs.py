"""Log lines a client cannot forge, and the predictor's own log lines shown beside KServe's.

URL paths (decoded: ``%0A`` is a newline), tensor names, model names and class labels reach log messages, and
exception messages reach tracebacks. ``SafeRecord`` (installed as the process's log record factory, so it holds for
KServe's, uvicorn's and gRPC's loggers as much as ours, whatever handlers a ``--log_config_file`` sets up) escapes
control characters there: a newline becomes ``\\n``, so what a client sent stays inside the line that quotes it.
The traceback's frames come from source files and keep their line breaks; only the exception messages in it are
escaped.
"""

from __future__ import annotations

import logging
import re
import traceback

# C0, DEL, C1, the Unicode line and paragraph separators, and the bidirectional marks, overrides and isolates
# that reorder what a terminal shows (components.common.config.UNPRINTABLE, which serving may not import)
CONTROL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069]")
NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def escape(text: str) -> str:
    """``text`` with every control character written as an escape (``\\n``, ``\\x1b``, ``\\u2028``)."""
    return CONTROL.sub(lambda m: NAMED.get(m[0]) or (f"\\x{ord(m[0]):02x}" if ord(m[0]) < 0x100
                                                      else f"\\u{ord(m[0]):04x}"), text)


def traceback_text(exc_info: tuple) -> str:
    """The traceback ``logging`` would print, with the exception messages (and notes) of the whole chain escaped."""
    top = traceback.TracebackException(*exc_info, compact=True)
    seen, stack = set(), [top]
    while stack:
        te = stack.pop()
        if id(te) in seen:
            continue
        seen.add(id(te))
        if hasattr(te, "_str"):  # the message as format_exception_only prints it (CPython 3.10 to 3.13)
            te._str = escape(te._str)
        else:  # an interpreter that keeps it elsewhere: one escaped line rather than a forgeable one
            return escape("".join(top.format()).rstrip("\n"))
        if getattr(te, "__notes__", None):
            te.__notes__ = [escape(str(note)) for note in te.__notes__]
        if isinstance(getattr(te, "msg", None), str):  # a SyntaxError prints its msg instead
            te.msg = escape(te.msg)
        stack += [e for e in (te.__cause__, te.__context__, *(getattr(te, "exceptions", None) or [])) if e]
    return "".join(top.format()).rstrip("\n")


class SafeRecord(logging.LogRecord):
    """A log record whose message and traceback hold no control character that came from outside."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self.exc_info and self.exc_info[1] is not None:
            self.exc_text = traceback_text(self.exc_info)  # the formatter uses it instead of formatting its own

    def getMessage(self) -> str:  # noqa: N802 -- logging's name
        """The formatted message with every control character escaped (``escape``)."""
        return escape(super().getMessage())


def install() -> None:
    """Every log record of the process from now on is a ``SafeRecord``."""
    logging.setLogRecordFactory(SafeRecord)


def show_with_kserve(name: str = "serving") -> None:
    """Our loggers write where KServe's logger writes, in its format, unless a log configuration set them up:
    without handlers they would print warnings only, and without a time or a level."""
    ours, kserve = logging.getLogger(name), logging.getLogger("kserve")
    if ours.handlers or not kserve.handlers:
        return
    for handler in kserve.handlers:
        ours.addHandler(handler)
    ours.setLevel(logging.INFO)
    ours.propagate = False
