"""The words of a generated report live in a template beside its renderer; the renderer supplies the figures.

A template file is markdown with ``{field}`` placeholders, filled by ``str.format_map``: a field names a value
(``{machine[name]}``, ``{duration_s:.0f}``), and the format after the colon is the figure's. The file holds named
parts, each starting at a line ``<!-- part: name -->`` and running to the next such line, less the line breaks at
its end: the page, and the pieces it is built from that repeat (a table's rows) or depend on the data (a sentence
only some runs need). Whatever else a part starts or ends with, spaces and line breaks included, is kept.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping
from pathlib import Path

MARKER = re.compile(r"^<!-- part: ([a-z0-9_]+) -->\n", re.M)


class TemplateError(ValueError):
    """A template that cannot be read or filled; the message names the file, the part and the field."""


class Template:
    """The named parts of one template file, read when first used."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @functools.cached_property
    def parts(self) -> dict[str, str]:
        pieces = MARKER.split(self.path.read_text())
        if pieces[0].strip():
            raise TemplateError(f"{self.path}: expected a line '<!-- part: name -->' first, found "
                                f"{pieces[0].strip().splitlines()[0]!r}")
        names = pieces[1::2]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise TemplateError(f"{self.path}: expected each part once, found {', '.join(repeated)} more than once")
        return {name: body.rstrip("\n") for name, body in zip(names, pieces[2::2], strict=True)}

    def fill(self, part: str, fields: Mapping[str, object] | None = None, /, **more: object) -> str:
        """The part ``part`` with its placeholders filled from ``fields`` and ``more``."""
        if part not in self.parts:
            raise TemplateError(f"{self.path}: expected a part {part!r}. Valid: {', '.join(self.parts)}")
        values = {**(fields or {}), **more}
        try:
            return self.parts[part].format_map(values)
        except (KeyError, IndexError) as exc:
            raise TemplateError(f"{self.path}, part {part!r}: a placeholder names {exc}, which is not among the "
                                f"fields supplied ({', '.join(sorted(values))})") from None

    def rows(self, part: str, items: list[Mapping[str, object]], separator: str = "\n") -> str:
        """The part filled once per item, joined by ``separator``."""
        return separator.join(self.fill(part, item) for item in items)
