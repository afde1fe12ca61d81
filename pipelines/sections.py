"""A step's ``<step>_params`` pipeline parameter read back into its params.yaml section.

The pipeline passes each section as JSON text (pipelines/mlnt_pipeline.py), which a user may edit in the KFP UI: a
text that is not a JSON object fails the step with a ``ConfigError`` naming the parameter, what was expected and what
was found, before the step's typed config is built from it.
"""

from __future__ import annotations

import json

from components.common.config import ConfigError

SHOWN = 80  # characters of a wrong value an error repeats
KINDS = {list: "an array", str: "a string", bool: "a boolean", int: "a number", float: "a number"}


def section(text: str, step: str) -> dict:
    """The ``step`` section that the pipeline parameter ``<step>_params`` holds as JSON text; a ``ConfigError``
    for invalid JSON or JSON that is not an object."""
    expected = f"{step}_params: expected a JSON object (the {step} section)"
    try:
        value = json.loads(text)
    except ValueError as err:  # json.JSONDecodeError
        raise ConfigError(f"{expected}, found invalid JSON: {err}") from None
    if not isinstance(value, dict):
        found = "null" if value is None else f"{KINDS[type(value)]}, {_short(text.strip())}"
        raise ConfigError(f"{expected}, found {found}")
    return value


def _short(text: str) -> str:
    """``text`` cut to ``SHOWN`` characters."""
    return text if len(text) <= SHOWN else f"{text[:SHOWN]}..."
