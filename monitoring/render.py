"""The dashboard drawn with matplotlib from recorded query answers: there is no Grafana here.

Reads the dashboard (``monitoring.dashboard.build()``: rows, panels and their grid positions, walked with
``monitoring.check.panels_of``) and a snapshot, the JSON ``monitoring.snapshot`` records (``panels``: every query's
``query_range`` answer; ``phases``, ``range``, ``model``, ``variables``, ``training``); writes nothing but the PNG
``save`` is given. ``render`` lays the panels out on the dashboard's 24-column grid, one subplot per panel with its
title, unit, legend, threshold line and value range, the traffic phases shaded.
"""

from __future__ import annotations

import datetime as dt
import math
import re
from pathlib import Path

import numpy as np
from matplotlib import dates as mdates
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Patch
from matplotlib.ticker import FuncFormatter, MaxNLocator

from monitoring import check, dashboard

PALETTE = ("#7EB26D", "#EAB839", "#6ED0E0", "#EF843C", "#E24D42", "#1F78C1", "#BA43A9", "#705DA0", "#508642",
           "#CCA300", "#447EBC", "#C15C17")  # Grafana's classic palette
PHASE_COLORS = {"skewed": "#1F78C1", "bad requests": "#E24D42", "disagreeing feedback": "#EAB839"}  # traffic.PHASES
# the figure, in inches: a dashboard grid unit's height and width, margins, the header, the gap between panels,
# room for the y tick labels, and a legend's row and item sizes (7 pt)
ROW_UNIT, COLUMN_UNIT, MARGIN, HEADER, GAP, AXIS_LEFT = 0.3, 0.62, 0.25, 1.25, 0.1, 0.72
LEGEND_ROW, LEGEND_CHAR, LEGEND_HANDLE = 0.17, 0.056, 0.42
DPI = 110


def legend(fmt: str, metric: dict[str, str]) -> str:
    """Grafana's legend: ``{{label}}`` replaced by the series' label values; ``__auto`` or none: the labels."""
    if fmt and fmt != "__auto":
        return re.sub(r"\{\{\s*(\w+)\s*\}\}", lambda m: metric.get(m.group(1), ""), fmt).strip()
    labels = ", ".join(f'{key}="{value}"' for key, value in sorted(metric.items()) if key != "__name__")
    return f"{metric.get('__name__', '')}{{{labels}}}" if labels or "__name__" in metric else "value"


# Grafana's unit "s" (its toSeconds): a value under each bound, divided by the size, with the suffix
SECONDS = ((1e-6, 1e-9, "ns"), (1e-3, 1e-6, "µs"), (1, 1e-3, "ms"), (60, 1, "s"), (3600, 60, "min"),
           (86400, 3600, "hour"), (604800, 86400, "day"), (31536000, 604800, "week"), (math.inf, 3.15569e7, "year"))


def unit_text(value: float, unit: str) -> str:
    """A value as Grafana shows it in ``unit`` (the units the dashboard uses; others as plain numbers)."""
    if not math.isfinite(value):
        return str(value)
    if unit == "s":
        if value == 0:
            return "0 s"
        _, size, suffix = next(step for step in SECONDS if abs(value) < step[0])
        return f"{value / size:.3g} {suffix}"
    scale, suffix = {"percentunit": (100, "%"), "reqps": (1, " req/s")}.get(unit, (1, ""))
    return f"{value * scale:.3g}{suffix}"


def series(target: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(legend, times, values)`` per series of one query's answer, times as Unix seconds."""
    out = []
    for item in target.get("result", []):
        values = np.asarray([[float(t), float(v)] for t, v in item.get("values", [])]).reshape(-1, 2)
        out.append((legend(target.get("legendFormat", ""), item.get("metric", {})), values[:, 0], values[:, 1]))
    return out


def _unix_to_num(seconds: np.ndarray | float) -> np.ndarray:
    """Unix seconds -> matplotlib's date numbers (days since 1970, its default epoch)."""
    return np.asarray(seconds, dtype=float) / 86400.0 + mdates.date2num(dt.datetime(1970, 1, 1, tzinfo=dt.UTC))


def _no_data(ax) -> None:
    ax.text(0.5, 0.5, "No data", ha="center", va="center", color="#888888", fontsize=12, transform=ax.transAxes)


def _legend_layout(labels: list[str], width: float) -> tuple[int, int]:
    """Columns and rows of a legend of ``labels`` in ``width`` inches (Grafana's list legend, at 7 pt)."""
    if not labels:
        return 0, 0
    item = max(map(len, labels)) * LEGEND_CHAR + LEGEND_HANDLE
    columns = max(1, min(len(labels), int(width // item)))
    return columns, math.ceil(len(labels) / columns)


def timeseries_lines(recorded: dict) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """``(legend, times, values)`` of every series of every query of one recorded panel."""
    return [line for target in recorded.get("targets", []) for line in series(target)]


def draw_timeseries(ax, panel: dict, lines: list, snapshot: dict) -> None:
    """One time-series panel: its lines (or percent-stacked areas), threshold, value range, unit and phases."""
    defaults = panel["fieldConfig"]["defaults"]
    unit = defaults.get("unit", "short")
    stacking = defaults.get("custom", {}).get("stacking", {}).get("mode")
    shade_phases(ax, snapshot)
    if not lines or all(np.isnan(values).all() for _, _, values in lines):
        _no_data(ax)
    elif stacking == "percent":
        times = np.unique(np.concatenate([t for _, t, _ in lines]))
        stack = np.zeros((len(lines), len(times)))
        for row, (_, t, values) in enumerate(lines):
            stack[row, np.searchsorted(times, t)] = np.nan_to_num(values)
        total = stack.sum(axis=0)
        shares = np.divide(stack, total, out=np.full_like(stack, np.nan), where=total > 0)
        ax.stackplot(_unix_to_num(times), shares, labels=[name for name, _, _ in lines],
                     colors=[PALETTE[k % len(PALETTE)] for k in range(len(lines))], alpha=0.9, lw=0)
        ax.set_ylim(0, 1)
    else:
        for k, (name, t, values) in enumerate(lines):
            ax.plot(_unix_to_num(t), values, lw=1.4, color=PALETTE[k % len(PALETTE)], label=name)
    steps = defaults.get("thresholds", {}).get("steps", [])
    if defaults.get("custom", {}).get("thresholdsStyle", {}).get("mode") == "dashed" and len(steps) > 1:
        ax.axhline(steps[1]["value"], color="#E02F44", lw=1, ls="--")
    if "min" in defaults or "max" in defaults:
        ax.set_ylim(defaults.get("min"), defaults.get("max"))
    elif stacking != "percent":
        top = max([np.nanmax(v) for _, _, v in lines if np.isfinite(v).any()] or [0.0])
        limit = steps[1]["value"] if len(steps) > 1 else None
        if limit is not None and limit > 3 * top > 0:  # far above the data: say so instead of flattening the lines
            ax.text(0.99, 0.97, f"threshold {unit_text(limit, unit)} off scale", color="#E02F44", fontsize=7.5,
                    ha="right", va="top", transform=ax.transAxes)
        elif limit is not None:
            top = max(top, limit)
        ax.set_ylim(0, top * 1.15 if top > 0 else 1)
    style_axes(ax, unit)


def shade_phases(ax, snapshot: dict) -> None:
    """The snapshot's time range, its traffic phases shaded (the first, normal traffic, not)."""
    for phase in snapshot.get("phases", []):
        if phase["name"] in PHASE_COLORS:
            ax.axvspan(_unix_to_num(phase["start"]), _unix_to_num(phase["end"]), color=PHASE_COLORS[phase["name"]],
                       alpha=0.13, lw=0, zorder=0)
    span = snapshot.get("range")
    if span:
        ax.set_xlim(_unix_to_num(span["start"]), _unix_to_num(span["end"]))


def style_axes(ax, unit: str) -> None:
    """Grafana's look: values in ``unit``, at most 5 of them, UTC times, a light grid, no top and right spines."""
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: unit_text(v, unit)))
    ax.yaxis.set_major_locator(MaxNLocator(5))
    ax.xaxis.set_major_locator(mdates.AutoDateLocator(minticks=3, maxticks=7, tz=dt.UTC))
    ax.xaxis.set_major_formatter(mdates.DateFormatter("%H:%M:%S", tz=dt.UTC))
    ax.tick_params(labelsize=8, length=2, colors="#444444")
    ax.grid(True, color="#e6e6e6", lw=0.6)
    ax.set_axisbelow(True)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    for side in ("left", "bottom"):
        ax.spines[side].set_color("#bbbbbb")


def draw_stat(ax, panel: dict, recorded: dict) -> None:
    """One stat panel: the last non-null value of each series (Grafana's lastNotNull), coloured by threshold."""
    defaults = panel["fieldConfig"]["defaults"]
    unit, steps = defaults.get("unit", "short"), defaults.get("thresholds", {}).get("steps", [])
    mappings = {key: option for mapping in defaults.get("mappings", []) for key, option in
                mapping.get("options", {}).items()}
    colors = {"green": "#56A64B", "red": "#E02F44"}
    ax.set_axis_off()
    shown = []
    for target in recorded.get("targets", []):
        for name, _, values in series(target):
            finite = values[np.isfinite(values)]
            if len(finite):
                shown.append((name, float(finite[-1])))
    if not shown:
        return _no_data(ax)
    for k, (name, value) in enumerate(shown):
        color = colors.get(steps[0]["color"], "#56A64B") if steps else "#56A64B"
        if len(steps) > 1 and value >= steps[1]["value"]:
            color = colors.get(steps[1]["color"], color)
        mapped = mappings.get(f"{value:g}")
        if mapped:
            text, color = mapped["text"], colors.get(mapped.get("color"), color)
        elif panel.get("options", {}).get("textMode") == "name":
            text = name
        else:
            text = unit_text(value, unit)
        y = 0.5 + (len(shown) / 2 - k - 0.5) / len(shown) * 0.8
        inches = ax.get_position().width * ax.figure.get_figwidth()
        ax.text(0.5, y, text, ha="center", va="center", fontsize=min(24, 0.9 * inches * 72 / (0.62 * len(text))),
                color=color, weight="bold", transform=ax.transAxes)


def render(board: dict, snapshot: dict) -> Figure:
    """The figure: the dashboard's rows and panels on its 24-column grid, one subplot per panel (labelled
    ``panel <id>``), each drawn from the recorded answers to its queries."""
    recorded_by_title = {panel["title"]: panel for panel in snapshot.get("panels", [])}
    layout = list(check.panels_of(board["panels"]))  # rows and panels
    grid_height = max(item["gridPos"]["y"] + item["gridPos"]["h"] for item in layout)
    width, height = dashboard.GRID_WIDTH * COLUMN_UNIT + 2 * MARGIN, HEADER + grid_height * ROW_UNIT + MARGIN
    figure = Figure(figsize=(width, height), dpi=DPI, facecolor="white")

    def box(left: float, top: float, box_width: float, box_height: float) -> list[float]:
        """Inches from the top-left corner -> a figure rectangle [left, bottom, width, height]."""
        return [left / width, 1 - (top + box_height) / height, box_width / width, box_height / height]

    model, span = snapshot.get("model", {}), snapshot.get("range")
    when = dt.datetime.fromtimestamp(span["end"], dt.UTC).strftime("%Y-%m-%d %H:%M UTC") if span else "?"
    figure.text(MARGIN / width, 1 - 0.45 / height, f"{board.get('title', 'Dashboard')}: the dashboard's queries "
                f"on Prometheus, {when}", fontsize=15, weight="bold", va="baseline")
    phases = ", ".join(f"{p['name']} {dt.datetime.fromtimestamp(p['start'], dt.UTC):%H:%M:%S}"
                       for p in snapshot.get("phases", []))
    figure.text(MARGIN / width, 1 - 0.6 / height,
                f"Model {model.get('name', '?')} {model.get('version', '')}, synthetic traffic in phases: "
                f"{phases or 'none recorded'} (shaded as in the legend).\n$__rate_interval = "
                f"{snapshot.get('variables', {}).get('__rate_interval', '?')}. {training_text(snapshot)}",
                fontsize=9.5, linespacing=1.5, color="#555555", va="top")
    patches = [Patch(color=color, alpha=0.3, label=name) for name, color in PHASE_COLORS.items()]
    figure.legend(handles=patches, loc="upper right", bbox_to_anchor=(1 - MARGIN / width, 1 - 0.1 / height),
                  ncol=len(patches), fontsize=9, frameon=False)
    for item in layout:
        pos = item["gridPos"]
        left, top = MARGIN + pos["x"] * COLUMN_UNIT, HEADER + pos["y"] * ROW_UNIT
        panel_width, panel_height = pos["w"] * COLUMN_UNIT - GAP, pos["h"] * ROW_UNIT - GAP
        if item["type"] == "row":
            figure.text(left / width, 1 - (top + 0.26) / height, item["title"], fontsize=13, weight="bold",
                        va="baseline")
            continue
        figure.add_artist(FancyBboxPatch((left / width, 1 - (top + panel_height) / height), panel_width / width,
                                         panel_height / height, boxstyle="square,pad=0", facecolor="#fafafa",
                                         edgecolor="#d0d0d0", lw=0.8, transform=figure.transFigure, zorder=-1))
        figure.text((left + 0.12) / width, 1 - (top + 0.24) / height, item["title"], fontsize=10,
                    weight="bold", va="baseline")
        recorded = recorded_by_title.get(item["title"], {})
        if item["type"] == "stat":
            ax = figure.add_axes(box(left, top + 0.35, panel_width, panel_height - 0.4), label=f"panel {item['id']}")
            draw_stat(ax, item, recorded)
            continue
        lines = timeseries_lines(recorded)
        plot_width = panel_width - AXIS_LEFT - 0.2
        names = [name for name, _, values in lines if np.isfinite(values).any()]
        columns, rows = _legend_layout(names, plot_width + AXIS_LEFT - 0.2)
        bottom = 0.32 + rows * LEGEND_ROW
        ax = figure.add_axes(box(left + AXIS_LEFT, top + 0.4, plot_width, panel_height - 0.4 - bottom),
                             label=f"panel {item['id']}")
        ax.set_facecolor("#fafafa")
        draw_timeseries(ax, item, lines, snapshot)
        handles, labels = ax.get_legend_handles_labels()
        if handles:
            ax.legend(handles, labels, loc="upper left", ncol=columns, fontsize=8, frameon=False,
                      handlelength=1.2, columnspacing=1.0, borderaxespad=0, handletextpad=0.4,
                      bbox_to_anchor=((left + 0.12) / width, 1 - (top + panel_height - bottom + 0.3) / height),
                      bbox_transform=figure.transFigure)
    return figure


def training_text(snapshot: dict) -> str:
    """The header's sentence on the Training row: the pipeline run whose pushes it shows, if any."""
    run = snapshot.get("training")
    if not run:
        return "The Training row reads what the pipeline pushes to a Pushgateway; this run has none."
    return (f"The Training row: what one pipeline run ({', '.join(run['steps'])}) pushed to a Pushgateway just "
            f"before the traffic:\n{run['seconds']:g} s on {run['data']}, {run['network']}, {run['epochs']} epochs, "
            f"{run['noise']['kind']} noise at rate {run['noise']['rate']:g}, gate bar {run['gate_min_accuracy']:.0%}; "
            "that run's model is not the one served.")


def save(figure: Figure, output: Path) -> Path:
    """Write ``figure`` as a PNG to ``output`` (its folder made if need be), at the figure's resolution."""
    output.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(output, dpi=figure.dpi, facecolor=figure.get_facecolor())
    return output
