"""The reports' templates: parts are read as written, a missing field is named, the templates state no figure of
their own, and the speed report argues from the one table of targets."""

import dataclasses
import json
import re
import string
from pathlib import Path

import pytest

from benchmarks.quality import exact, inner_lr
from benchmarks.quality import report as quality_report
from benchmarks.speed import report, targets
from benchmarks.template import Template, TemplateError

ROOT = Path(__file__).resolve().parents[2]
# The numbers a template may state: identities (a CE step is 1x a CE step), units (GB = 10^9 bytes, the tar
# format's 512-byte blocks and 10 KiB records), the load average's 1-minute window, an exit status and the
# control's meta_weight 0, and the allocator row's expectation, written before the measurement.
ALLOWED = {"0", "1", "1x", "10", "512", "10^9", "10^5"}


def test_parts_keep_their_leading_spaces_and_line_breaks(tmp_path):
    path = tmp_path / "t.md"
    path.write_text("<!-- part: page -->\n# {title}\n\n{rows}\n\n<!-- part: note -->\n and more\n\n"
                    "<!-- part: row -->\n\n| {a:.2f} |\n")
    template = Template(path)
    assert template.parts == {"page": "# {title}\n\n{rows}", "note": " and more", "row": "\n| {a:.2f} |"}
    assert template.fill("page", title="T", rows=template.rows("row", [{"a": 1}, {"a": 2.5}], "")) == \
        "# T\n\n\n| 1.00 |\n| 2.50 |"


@pytest.mark.parametrize(("text", "message"), [
    ("# no marker\n", "expected a line '<!-- part: name -->' first, found '# no marker'"),
    ("<!-- part: a -->\nx\n<!-- part: a -->\ny\n", "expected each part once, found a more than once"),
])
def test_a_malformed_template_is_named(tmp_path, text, message):
    (tmp_path / "t.md").write_text(text)
    with pytest.raises(TemplateError, match=re.escape(message)):
        Template(tmp_path / "t.md").parts  # noqa: B018 - reading the parts is the check


def test_a_missing_part_or_field_is_named_with_the_file(tmp_path):
    (tmp_path / "t.md").write_text("<!-- part: page -->\n{machine[name]} {missing}\n")
    template = Template(tmp_path / "t.md")
    with pytest.raises(TemplateError, match=re.escape("part 'page': a placeholder names 'missing', which is not "
                                                      "among the fields supplied (machine)")):
        template.fill("page", machine={"name": "x"})
    with pytest.raises(TemplateError, match=re.escape("expected a part 'other'. Valid: page")):
        template.fill("other")


@pytest.mark.parametrize("template", [report.TEMPLATE, quality_report.TEMPLATE, inner_lr.TEMPLATE, exact.TEMPLATE],
                         ids=["benchmarks", "results", "inner_lr", "exact"])
def test_the_templates_state_no_figure_of_their_own(template):
    stated = set()
    for text in template.parts.values():
        literal = "".join(piece for piece, *_ in string.Formatter().parse(text))
        stated |= {token.strip("(),.:;*`-") for token in re.findall(r"\S*\d\S*", literal)}
    figures = {token for token in stated if not re.search(r"[A-Za-z]", token.removesuffix("x"))}
    assert figures <= ALLOWED, f"{template.path}: figures typed into the prose: {sorted(figures - ALLOWED)}"


def test_the_speed_report_argues_from_the_table_of_targets(monkeypatch):
    results = json.loads((ROOT / "benchmarks" / "results.json").read_text())
    text = report.render(results)
    assert "**What 20x would take.**" in text and "(target: at most 16 MiB," in text
    table = {**targets.TARGETS, "exact_time": dataclasses.replace(targets.TARGETS["exact_time"], bound=25),
             "serving_rss_growth": dataclasses.replace(targets.TARGETS["serving_rss_growth"], bound=8)}
    monkeypatch.setattr(report, "TARGETS", table)
    text = report.render(results)
    assert "**What 25x would take.**" in text and "For `exact` at M = 10 to reach 25x" in text
    assert "(target: at most 8 MiB," in text
