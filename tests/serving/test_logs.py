"""Log records a client cannot forge (``serving.logs``): control characters escaped in messages and in the
exception messages of tracebacks, the frames kept as they are."""

from __future__ import annotations

import logging

import pytest

from serving import logs

FORGED = "\n2026-01-01 00:00:00.000 1 kserve INFO [x.py:f():1] FORGED"


@pytest.mark.parametrize(("text", "escaped"), [
    ("a\nb\r\tc", "a\\nb\\r\\tc"), ("\x1b[31mred", "\\x1b[31mred"), ("\x00\x7f\x85", "\\x00\\x7f\\x85"),
    ("line\u2028sep\u2029", "line\\u2028sep\\u2029"), ("plain ünïcode / path", "plain ünïcode / path"),
])
def test_control_characters_are_escaped(text, escaped):
    assert logs.escape(text) == escaped


def record(message: str, *args: object, exc_info=None) -> logs.SafeRecord:
    return logs.SafeRecord("x", logging.WARNING, __file__, 1, message, args, exc_info)


def test_a_message_and_its_arguments_stay_on_one_line():
    assert "\n" not in record("POST %s -> 400: %s", "/v2/x" + FORGED, FORGED).getMessage()
    assert "\n" not in record("model" + FORGED).getMessage()


def test_a_traceback_keeps_its_frames_and_escapes_its_messages():
    try:
        try:
            raise KeyError("inner" + FORGED)
        except KeyError as exc:
            raise ValueError("outer" + FORGED) from exc
    except ValueError as exc:
        text = logging.Formatter().format(record("failed", exc_info=(type(exc), exc, exc.__traceback__)))
    lines = text.splitlines()
    assert not any(line.startswith("2026") or line.startswith("FORGED") for line in lines)
    assert "ValueError: outer\\n2026-01-01" in text and "KeyError: 'inner\\n2026" in text
    assert lines[1] == "Traceback (most recent call last):" and any(line.startswith('  File "') for line in lines)
    assert "The above exception was the direct cause of the following exception:" in lines


def test_exception_groups_and_notes_are_escaped():
    error = ExceptionGroup("group" + FORGED, [ValueError("member" + FORGED)])
    error.add_note("note" + FORGED)
    text = logs.traceback_text((type(error), error, None))
    assert not any("FORGED" in line and "\\n" not in line for line in text.splitlines())


def test_installed_every_logger_makes_safe_records(caplog):
    factory = logging.getLogRecordFactory()
    try:
        logs.install()
        logging.getLogger("kserve").warning("unload '%s'", "m" + FORGED)
    finally:
        logging.setLogRecordFactory(factory)
    assert caplog.records[-1].getMessage().count("\n") == 0 and "\\n2026" in caplog.text
