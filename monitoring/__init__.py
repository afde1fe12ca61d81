"""Monitoring of the MLNT predictor and training pipeline.

The contract and its checks: ``monitoring.metrics`` is the metric contract; ``monitoring/rules/mlnt.rules.yml``
holds the Prometheus recording and alert rules, unit-tested by ``monitoring/tests/*.yml``; ``monitoring.dashboard``
builds the Grafana dashboard; ``monitoring.check`` runs every promtool and contract check; ``monitoring.sync``
writes the k8s copies.

Running it on one machine: ``monitoring.local`` starts real servers on loopback ports (Prometheus, the predictor)
for the tests, the benchmarks and the snapshot; ``monitoring.pushgateway`` starts a Pushgateway (with basic auth if
asked). The dashboard snapshot (``python -m monitoring.snapshot``): ``monitoring.traffic`` drives scripted traffic
at a served model, ``monitoring.pipeline_run`` runs a tiny pipeline whose pushes fill the Training row,
``monitoring.query`` reads every panel back from Prometheus, and ``monitoring.render`` draws the dashboard.
"""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
RULES_FILE = PACKAGE / "rules" / "mlnt.rules.yml"
RULE_TESTS_DIR = PACKAGE / "tests"  # promtool test rules files, *.yml
DASHBOARD_FILE = PACKAGE / "dashboards" / "mlnt.json"
DOCS_FILE = ROOT / "docs" / "monitoring.md"
DOCS_URL = "https://github.com/mlnt-pipeline/mlnt-pipeline/blob/main/docs/monitoring.md"
