"""A real Pushgateway on loopback (with basic authentication when asked), and a real Prometheus that scrapes it, for
the telemetry tests: shipped in ``monitoring.pushgateway`` (``monitoring.snapshot`` starts them too), re-exported
here."""

from monitoring.pushgateway import (
    JOB_NAME,
    prometheus_scraping,
    pushgateway,
    pushgateway_config,
    query,
    query_until,
    web_config_text,
)

__all__ = ["JOB_NAME", "prometheus_scraping", "pushgateway", "pushgateway_config", "query", "query_until",
           "web_config_text"]
