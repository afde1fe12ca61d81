"""The ``validate`` step's ``data_docs`` artifact: one self-contained HTML page of the validation.

KFP shows an ``HTML`` artifact as one file, so the Great Expectations Data Docs site (an ``index.html`` linking to
``expectations/``, ``validations/`` and ``static/``) cannot travel as one: its index alone would be a page of dead
links. This page is written from the ``report.json`` that ``components.validate.run`` writes, pass or fail: the
verdict, every failed expectation (table, expectation, column, what was expected, what was observed), the training
images that are near-duplicates of one with another label (``label_conflicts``, a warning) and the statistics.
Every value is HTML-escaped; the page has no link, script, image or stylesheet outside itself. The step keeps the
report itself as its ``report`` artifact, where the page sends the reader for the label conflicts it leaves out.
"""

from __future__ import annotations

import html
import json
from pathlib import Path
from typing import Any

STYLE = ("body{font-family:sans-serif;margin:1.5em}table{border-collapse:collapse}"
         "td,th{border:1px solid #999;padding:.3em .6em;text-align:left;vertical-align:top}"
         ".fail{color:#b00020}.pass{color:#1b5e20}")


def _text(value: Any) -> str:
    return html.escape(value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str))


def summary_html(report: dict) -> str:
    """The page of ``report`` (``components.validate.run``'s ``report.json``)."""
    failures = report.get("failures") or []
    verdict = (f'<p class="fail">{len(failures)} expectation(s) failed: nothing downstream ran on this data.</p>'
               if failures else '<p class="pass">Every expectation was met.</p>')
    rows = "".join(f"<tr><td>{_text(f.get('table', ''))}</td><td>{_text(f.get('expectation', ''))}</td>"
                   f"<td>{_text(f.get('column', ''))}</td><td>{_text(f.get('expected', ''))}</td>"
                   f"<td>{_text(f.get('observed', ''))}</td></tr>" for f in failures)
    table = ("<h2>Failed expectations</h2><table><tr><th>table</th><th>expectation</th><th>column</th>"
             f"<th>expected</th><th>observed</th></tr>{rows}</table>") if failures else ""
    statistics = "".join(f"<tr><th>{_text(key)}</th><td>{_text(value)}</td></tr>"
                         for key, value in (report.get("statistics") or {}).items())
    stats = f"<h2>Statistics</h2><table>{statistics}</table>" if statistics else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Data validation</title>"
            f"<style>{STYLE}</style></head><body><h1>Data validation (Great Expectations)</h1>{verdict}{table}"
            f"{_conflicts(report.get('label_conflicts') or [])}{stats}</body></html>\n")


CONFLICTS_SHOWN = 100  # training pairs with two labels listed on the page; report.json (kept too) holds every one


def _conflicts(conflicts: list) -> str:
    """The training images that are near-duplicates of one with another label (one of the two labels is wrong), the
    first ``CONFLICTS_SHOWN`` of them; "" without any."""
    if not conflicts:
        return ""
    items = "".join(f"<li>{_text(pair)}</li>" for pair in conflicts[:CONFLICTS_SHOWN])
    more = (f"<p>... and {len(conflicts) - CONFLICTS_SHOWN} more in report.json's label_conflicts (the validate "
            "step's report artifact).</p>" if len(conflicts) > CONFLICTS_SHOWN else "")
    return (f"<h2>Training images with another label's near-duplicate ({len(conflicts)})</h2><p>One of the two "
            f"labels of each pair is wrong; the step still passed.</p><ul>{items}</ul>{more}")


def write_summary(report: str | Path, out: str | Path) -> bool:
    """Write the page of the report file ``report`` to ``out``; returns whether there was a report to write
    (validate fails before writing one when it cannot read the ingested data: then nothing is written)."""
    try:
        data = json.loads(Path(report).read_text())
    except (OSError, ValueError):
        return False
    Path(out).write_text(summary_html(data if isinstance(data, dict) else {}))
    return True
