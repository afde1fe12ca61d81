"""The Grafana dashboard, declared once as data; ``python -m monitoring.dashboard`` writes monitoring/dashboards/.

Panels are ``Panel`` entries grouped in ``Row``s; ``build()`` lays them out on Grafana's 24-column grid and returns
the dashboard JSON (schemaVersion 39, timeseries and stat panels). Queries use three template variables:
``${datasource}`` (a Prometheus data source), ``$model`` (the served models, from ``mlnt_model_info``) and
``$pipeline`` (the training pipelines that pushed, the label of their pushes). The training panels follow
``$pipeline`` and not ``$model``: there ``model`` is the trained network (teacher, student, baseline), not the served
model.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

from components.common.atomic import write_text
from monitoring import DASHBOARD_FILE, DOCS_URL
from monitoring.metrics import KSERVE, KSERVE_STAGES

UID = "mlnt-pipeline"
GRID_WIDTH = 24
DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
MODEL = 'model=~"$model"'
PIPELINE = 'pipeline=~"$pipeline"'


@dataclass(frozen=True)
class Query:
    """One panel query: the PromQL ``expr`` and its ``legend`` (Grafana's legend format; empty: automatic)."""

    expr: str
    legend: str = ""


@dataclass(frozen=True)
class Panel:
    """One panel as data: title, queries and description, and how it is drawn (unit, ``timeseries`` or ``stat``, size
    on the grid, the alert threshold ``limit``, the y range, extra field defaults and options)."""

    title: str
    queries: tuple[Query, ...]
    description: str
    unit: str = "short"
    kind: str = "timeseries"  # or "stat"
    width: int = 8
    height: int = 8
    limit: float | None = None  # the alert threshold, drawn in red (below it for `low_is_bad`)
    low_is_bad: bool = False
    value_range: tuple[float, float] | None = None
    defaults: dict = field(default_factory=dict)  # extra fieldConfig.defaults
    options: dict = field(default_factory=dict)  # extra panel options


@dataclass(frozen=True)
class Row:
    """A titled row of panels, laid out left to right."""

    title: str
    panels: tuple[Panel, ...]


def rate(series: str, matchers: str = MODEL, window: str = "$__rate_interval") -> str:
    """``rate(series{matchers}[window])``; by default the selected models' series over Grafana's rate interval."""
    return f"rate({series}{{{matchers}}}[{window}])"


def ratio(numerator: str, denominator: str, by: str = "model") -> str:
    """``sum by (by) (numerator) / sum by (by) (denominator)``."""
    return f"sum by ({by}) ({numerator}) / sum by ({by}) ({denominator})"


def quantile(q: float, histogram: str, *, model: str = "model", what: str = "", matchers: str = "") -> Query:
    """Quantile ``q`` of a histogram per served model, of its series that also match ``matchers`` (if any);
    ``model`` is the label that names the model."""
    selected = ", ".join(filter(None, (f'{model}=~"$model"', matchers)))
    return Query(f"histogram_quantile({q}, sum by ({model}, le) ({rate(histogram + '_bucket', selected)}))",
                 f"{{{{{model}}}}} {what}p{round(q * 100)}")


def batch_p95() -> Query:
    """The 95th percentile of images per request, clamped at 1: ``histogram_quantile`` spreads the lowest bucket
    (le=1) from 0, so traffic of single images read as a p95 between 0 and 1."""
    query = quantile(0.95, "mlnt_batch_size")
    return Query(f"clamp_min({query.expr}, 1)", query.legend)


def stage_quantiles(qs: tuple[float, ...] = (0.5, 0.95)) -> tuple[Query, ...]:
    """Each quantile of each stage of KServe's model call, from KServe's own histograms (labelled model_name)."""
    return tuple(quantile(q, metric.name, model="model_name", what=f"{stage} ")
                 for stage, metric in zip(KSERVE_STAGES, KSERVE, strict=True) for q in qs)


ROWS = (
    Row("Serving", (
        Panel("Request rate by outcome",
              (Query(f"sum by (protocol, outcome) ({rate('mlnt_requests_total')})", "{{protocol}} {{outcome}}"),),
              "Inference requests per second, by protocol (v1 and v2 over REST, grpc-v2) and outcome.",
              unit="reqps"),
        Panel("Server-error ratio",
              (Query(ratio(rate("mlnt_requests_total", f'{MODEL}, outcome="server_error"'),
                           rate("mlnt_requests_total", f'{MODEL}, outcome!="client_error"')), "{{model}}"),),
              "Share of the valid requests (client errors aside) that ended in a server error; "
              "MlntPredictorHighErrorRate fires above 5% with at least 20 valid requests in 5 minutes.",
              unit="percentunit", limit=0.05),
        Panel("Latency p50 / p95 / p99",
              tuple(quantile(q, "mlnt_request_duration_seconds", matchers='outcome!="client_error"')
                    for q in (0.5, 0.95, 0.99)),
              "Request latency quantiles per model, over every protocol, client errors aside (they are refused in "
              "a millisecond); MlntPredictorHighLatency fires when the p95 over 10 minutes stays above 500ms for 10 "
              "minutes (it needs a request at least every 10 minutes).",
              unit="s", limit=0.5),
        Panel("Batch size",
              (Query(ratio(rate("mlnt_batch_size_sum"), rate("mlnt_batch_size_count")), "{{model}} mean"),
               batch_p95()),
              "Images per request: mean and 95th percentile (at least 1: histogram_quantile reads the lowest "
              "bucket, le=1, as spread from 0)."),
        Panel("Requests in flight",
              (Query(f"sum by (model, protocol) (mlnt_requests_in_flight{{{MODEL}}})", "{{model}} {{protocol}}"),),
              "Inference requests being answered at the scrape, over every replica: requests waiting for the "
              "predictor pile up here before its latency shows them."),
        Panel("Served model",
              (Query(f"max by (model, version) (mlnt_model_info{{{MODEL}}})", "{{model}} {{version}}"),),
              "The model name and version each predictor serves.", kind="stat", options={"textMode": "name"}),
        Panel("Stage latency p50 / p95 (KServe)", stage_quantiles(),
              "Time per request in each stage of KServe's model call, from KServe's own histograms "
              "(request_preprocess_seconds, request_predict_seconds, request_postprocess_seconds), over REST and "
              "gRPC: preprocess decodes and checks the input (encoded images are decoded here), predict runs "
              "onnxruntime, postprocess updates the prediction metrics and builds the response. Shows where the "
              "time goes when MlntPredictorHighLatency fires; the rest of a request's latency is the protocol: "
              "reading, decoding and encoding the body.",
              unit="s", width=24),
    )),
    Row("Predictions", (
        Panel("Predicted-class mix",
              (Query(f"sum by (class) ({rate('mlnt_predictions_total')}) / ignoring (class) group_left "
                     f"sum({rate('mlnt_predictions_total')})", "{{class}}"),),
              "Share of each predicted class among the predictions of the selected models (stacked to 100%).",
              unit="percentunit",
              defaults={"custom": {"stacking": {"mode": "percent", "group": "A"}, "fillOpacity": 60}}),
        Panel("Mean top-1 confidence",
              (Query(ratio(rate("mlnt_prediction_confidence_sum"), rate("mlnt_prediction_confidence_count")),
                     "{{model}}"),),
              "Mean top-1 probability; MlntLowConfidence fires when the mean over 30 minutes stays below 50% for 30 "
              "minutes (it needs a prediction at least every 30 minutes).",
              unit="percentunit", limit=0.5, low_is_bad=True, value_range=(0, 1)),
        Panel("Prediction drift",
              (Query(f"avg by (model) (mlnt_prediction_drift{{{MODEL}}})", "{{model}}"),),
              "Total-variation distance between the recent predicted-class distribution and the model's own on "
              "the test set (the card's); MlntPredictionDrift fires above 0.2 for 30 minutes.",
              limit=0.2, value_range=(0, 1)),
        Panel("Label disagreement (last hour)",
              (Query(ratio(rate("mlnt_feedback_disagreements_total", window="1h"),
                           rate("mlnt_feedback_total", window="1h")), "{{model}}"),),
              "Share of user feedback labels that differ from the prediction; MlntLabelDisagreement fires above "
              "30% with at least 20 labels an hour.", unit="percentunit", limit=0.3, width=12),
        Panel("Feedback labels per hour",
              (Query(f"sum by (model) (increase(mlnt_feedback_total{{{MODEL}}}[1h]))", "{{model}}"),),
              "Feedback labels posted back in the last hour.", width=12),
    )),
    Row("Training", (
        Panel("Accuracy",
              (Query(f"max by (pipeline, step, model, split) (mlnt_training_accuracy{{{PIPELINE}}})",
                     "{{pipeline}} {{step}} {{model}} {{split}}"),),
              "Accuracy of the trained networks (teacher, student, baseline) on the test and validation splits, "
              "pushed by the pipeline steps, per pipeline (the $pipeline variable).", unit="percentunit", width=12),
        Panel("Step duration",
              (Query(f"max by (pipeline, step) (mlnt_training_duration_seconds{{{PIPELINE}}})",
                     "{{pipeline}} {{step}}"),),
              "Wall-clock duration of each pipeline step, per pipeline.", unit="s", width=12),
        Panel("Estimated noise rate",
              (Query(f"max by (pipeline) (mlnt_training_estimated_noise_rate{{{PIPELINE}}})", "{{pipeline}}"),),
              "Label-noise rate estimated by each pipeline's last run.", unit="percentunit", kind="stat", height=5),
        Panel("Release gate",
              (Query(f"min by (pipeline) (mlnt_gate_passed{{{PIPELINE}}})", "{{pipeline}}"),),
              "Whether each pipeline's last run passed the release gate; MlntTrainingGateFailed fires on a fail.",
              kind="stat", height=5, limit=1, low_is_bad=True,
              defaults={"mappings": [{"type": "value", "options": {
                  "0": {"text": "failed", "color": "red", "index": 0},
                  "1": {"text": "passed", "color": "green", "index": 1}}}]}),
        Panel("Since the last successful run",
              (Query(f"time() - max by (pipeline) (mlnt_training_last_success_timestamp_seconds{{{PIPELINE}}})",
                     "{{pipeline}}"),),
              "Time since each pipeline's last run whose model passed the release gate (the gate's push); a run "
              "that fails the gate or stops before it leaves it counting.", unit="s", kind="stat", height=5),
    )),
)


def _thresholds(panel: Panel) -> dict:
    good, bad = ("red", "green") if panel.low_is_bad else ("green", "red")
    steps = [{"color": good, "value": None}]
    if panel.limit is not None:
        steps.append({"color": bad, "value": panel.limit})
    return {"mode": "absolute", "steps": steps}


def _field_defaults(panel: Panel) -> dict:
    custom = {"drawStyle": "line", "lineWidth": 1, "fillOpacity": 10, "showPoints": "never",
              "thresholdsStyle": {"mode": "off" if panel.limit is None else "dashed"}}
    defaults = {"unit": panel.unit, "thresholds": _thresholds(panel), "mappings": [],
                "color": {"mode": "palette-classic" if panel.kind == "timeseries" else "thresholds"}}
    if panel.kind == "timeseries":
        defaults["custom"] = custom | panel.defaults.get("custom", {})
    if panel.value_range is not None:
        defaults["min"], defaults["max"] = panel.value_range
    return defaults | {key: value for key, value in panel.defaults.items() if key != "custom"}


def _options(panel: Panel) -> dict:
    if panel.kind == "stat":
        options = {"reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False},
                   "colorMode": "value", "graphMode": "none", "justifyMode": "auto", "orientation": "auto",
                   "textMode": "auto", "wideLayout": True, "showPercentChange": False}
    else:
        options = {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True, "calcs": []},
                   "tooltip": {"mode": "multi", "sort": "desc"}}
    return options | panel.options


def _targets(panel: Panel) -> list[dict]:
    return [{"refId": chr(ord("A") + index), "datasource": DATASOURCE, "expr": query.expr,
             "legendFormat": query.legend or "__auto", "range": panel.kind == "timeseries",
             "instant": panel.kind == "stat"}
            for index, query in enumerate(panel.queries)]


def panel_json(panel: Panel, panel_id: int, grid: dict) -> dict:
    """The Grafana JSON of ``panel``, with id ``panel_id``, at ``grid`` (x, y, w, h)."""
    return {"id": panel_id, "type": panel.kind, "title": panel.title, "description": panel.description,
            "datasource": DATASOURCE, "gridPos": grid, "targets": _targets(panel),
            "fieldConfig": {"defaults": _field_defaults(panel), "overrides": []}, "options": _options(panel)}


def layout(rows: tuple[Row, ...]) -> list[dict]:
    """Each row a collapsible header, its panels left to right, wrapping at the grid width."""
    panels, ids, y = [], count(1), 0
    for row in rows:
        panels.append({"id": next(ids), "type": "row", "title": row.title, "collapsed": False, "panels": [],
                       "gridPos": {"x": 0, "y": y, "w": GRID_WIDTH, "h": 1}})
        x, y, line = 0, y + 1, 0
        for panel in row.panels:
            if x + panel.width > GRID_WIDTH:
                x, y, line = 0, y + line, 0
            panels.append(panel_json(panel, next(ids), {"x": x, "y": y, "w": panel.width, "h": panel.height}))
            x, line = x + panel.width, max(line, panel.height)
        y += line
    return panels


def _variables() -> list[dict]:
    return [
        {"name": "datasource", "label": "Data source", "type": "datasource", "query": "prometheus",
         "current": {}, "hide": 0, "includeAll": False, "multi": False, "options": [], "refresh": 1, "regex": ""},
        _query_variable("model", "Model", "label_values(mlnt_model_info, model)"),
        _query_variable("pipeline", "Pipeline", "label_values(mlnt_training_duration_seconds, pipeline)"),
    ]


def _query_variable(name: str, label: str, definition: str) -> dict:
    """A template variable of the label values ``definition`` lists, several or all of them at once."""
    return {"name": name, "label": label, "type": "query", "datasource": DATASOURCE, "definition": definition,
            "query": {"query": definition, "refId": "PrometheusVariableQueryEditor-VariableQuery", "qryType": 1},
            "current": {}, "hide": 0, "includeAll": True, "allValue": ".*", "multi": True, "options": [],
            "refresh": 2, "regex": "", "sort": 1}


def build(rows: tuple[Row, ...] = ROWS) -> dict:
    """The dashboard JSON: ``rows`` laid out on the grid, the template variables ``datasource``, ``model`` and
    ``pipeline``, and the runbook link."""
    return {
        "uid": UID, "title": "MLNT pipeline", "description": "The MLNT predictor and training pipeline",
        "tags": ["mlnt", "mlops"], "timezone": "browser", "editable": True, "graphTooltip": 1,
        "schemaVersion": 39, "version": 1, "refresh": "1m", "time": {"from": "now-6h", "to": "now"},
        "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
        "links": [{"title": "Runbooks", "type": "link", "url": DOCS_URL, "targetBlank": True, "icon": "doc",
                   "tags": [], "asDropdown": False, "includeVars": False, "keepTime": False, "tooltip": ""}],
        "annotations": {"list": [{"builtIn": 1, "datasource": {"type": "grafana", "uid": "-- Grafana --"},
                                  "enable": True, "hide": True, "iconColor": "rgba(0, 211, 255, 1)",
                                  "name": "Annotations & Alerts", "type": "dashboard"}]},
        "templating": {"list": _variables()},
        "panels": layout(rows),
    }


def render(dashboard: dict | None = None) -> str:
    """``dashboard`` (default: ``build()``) as the text of the dashboard file: JSON indented by 2, a final newline."""
    return json.dumps(build() if dashboard is None else dashboard, indent=2) + "\n"


def parser() -> argparse.ArgumentParser:
    """The command line of ``python -m monitoring.dashboard``: one optional output file."""
    parser = argparse.ArgumentParser(prog="python -m monitoring.dashboard",
                                     description="Write the Grafana dashboard JSON that monitoring/dashboard.py "
                                                 "declares.")
    parser.add_argument("file", nargs="?", type=Path, default=DASHBOARD_FILE, metavar="FILE",
                        help="where to write the dashboard JSON (default: %(default)s)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """``python -m monitoring.dashboard [FILE]``: write the rendered dashboard to ``FILE`` (default
    ``DASHBOARD_FILE``), creating its folder, atomically (a crash leaves the previous file); returns 0. ``--help``
    prints the usage and writes nothing."""
    out = parser().parse_args([] if argv is None else argv).file
    write_text(out, render())
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
