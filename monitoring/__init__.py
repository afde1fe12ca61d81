"""Monitoring of the MLNT predictor and training pipeline.

``monitoring.metrics`` is the metric contract; ``monitoring/rules/mlnt.rules.yml`` holds the Prometheus recording
and alert rules, unit-tested by ``monitoring/tests/*.yml``; ``monitoring.dashboard`` builds the Grafana dashboard;
``monitoring.check`` runs every promtool and contract check; ``monitoring.sync`` writes the k8s copies.
"""

from pathlib import Path

PACKAGE = Path(__file__).resolve().parent
ROOT = PACKAGE.parent
RULES_FILE = PACKAGE / "rules" / "mlnt.rules.yml"
RULE_TESTS_DIR = PACKAGE / "tests"  # promtool test rules files, *.yml
DASHBOARD_FILE = PACKAGE / "dashboards" / "mlnt.json"
DOCS_FILE = ROOT / "docs" / "monitoring.md"
DOCS_URL = "https://github.com/mlnt-pipeline/mlnt-pipeline/blob/main/docs/monitoring.md"
