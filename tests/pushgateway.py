"""A real Pushgateway on loopback, and a real Prometheus that scrapes it, for the telemetry tests: shipped in
``monitoring.pushgateway`` (``monitoring.snapshot`` starts them too), re-exported here."""

from monitoring.pushgateway import JOB_NAME, prometheus_scraping, pushgateway, pushgateway_config, query, query_until

__all__ = ["JOB_NAME", "prometheus_scraping", "pushgateway", "pushgateway_config", "query", "query_until"]
