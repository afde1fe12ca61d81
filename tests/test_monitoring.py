"""Monitoring: the Prometheus rules and their promtool unit tests, the dashboard's queries (parsed by promtool),
the metric contract, the runbook links, and the generated k8s copies. Needs Debian's promtool (`make system`)."""

import copy
import os
import re
import subprocess
import sys
from itertools import combinations

import pytest
import yaml

from monitoring import DASHBOARD_FILE, DOCS_FILE, ROOT, check, dashboard, sync
from monitoring.metrics import (
    CLIENT_FALLBACKS,
    FALLBACK_REASONS,
    KSERVE,
    KSERVE_STAGES,
    METRICS,
    OUTCOMES,
    PREDICTOR,
    PREDICTOR_JOB_REGEX,
    PUSHGATEWAY_JOB,
    PUSHGATEWAY_SCRAPE_JOB_REGEX,
    SERIES,
    TRAINING,
    TRAINING_LAST_SUCCESS,
)


@pytest.fixture(scope="module")
def rules():
    return check.load_rules()


@pytest.fixture(scope="module")
def board():
    return dashboard.build()


def panels(board: dict) -> list[dict]:
    return [panel for panel in board["panels"] if panel["type"] != "row"]


# promtool


def test_promtool_missing_says_how_to_install_it(monkeypatch):
    monkeypatch.setattr(check.shutil, "which", lambda _name: None)
    with pytest.raises(check.CheckError, match=r"install Debian's prometheus package \(make system\)"):
        check.promtool()


def test_rule_unit_tests_pass():
    output = check.run_rule_tests()
    assert output.count("SUCCESS") == len(check.rule_tests()) >= 3, output


def test_every_alert_has_a_firing_a_quiet_and_if_it_waits_a_pending_unit_test(rules):
    coverage = check.alert_test_kinds(rules, check.rule_tests())
    waits = {alert["alert"] for alert in check.alerts_of(rules) if "for" in alert}
    assert len(coverage) == 11 and len(waits) == 10, coverage
    assert all(kinds == {"firing", "quiet"} | ({"pending"} if alert in waits else set())
               for alert, kinds in coverage.items()), coverage
    assert check.coverage_problems(rules, check.rule_tests()) == []


def test_coverage_check_reports_an_untested_alert(rules):
    extended = copy.deepcopy(rules)
    extended["groups"][-1]["rules"].append({"alert": "MlntUntested", "expr": "vector(1)"})
    problems = check.coverage_problems(extended, check.rule_tests())
    assert problems == ["alert MlntUntested: no firing test in tests/", "alert MlntUntested: no quiet test in tests/"]


def test_coverage_check_reports_a_waiting_alert_without_a_pending_test(rules):
    extended = copy.deepcopy(rules)
    extended["groups"][-1]["rules"].append({"alert": "MlntUntested", "expr": "vector(1)", "for": "5m"})
    problems = check.coverage_problems(extended, check.rule_tests())
    assert "alert MlntUntested: no pending test in tests/" in problems and len(problems) == 3


def test_only_an_alerts_sample_in_the_pending_state_is_a_pending_test(rules, tmp_path):
    """A promql_expr_test that expects the alert's ``ALERTS`` sample firing, or another series naming the alert, is
    not the pending test a waiting alert needs."""
    cases = [{"expr": "ALERTS", "eval_time": "6m", "exp_samples": [
        {"labels": 'ALERTS{alertname="MlntPredictorDown", alertstate="firing"}', "value": 1},
        {"labels": 'other{alertname="MlntPredictorDown", alertstate="pending"}', "value": 1}]}]
    tests = tmp_path / "alerts.yml"
    tests.write_text(yaml.safe_dump({"tests": [{"interval": "1m", "promql_expr_test": cases}]}))
    assert "pending" not in check.alert_test_kinds(rules, [tests])["MlntPredictorDown"]


def test_rule_file_parses():
    assert "SUCCESS: 28 rules found" in check.check_rules()


def test_dashboard_queries_parse(board):
    output = check.check_dashboard(board)
    assert f"SUCCESS: {len(check.dashboard_exprs(board))} rules found" in output


def test_a_broken_rule_fails_with_its_name(tmp_path):
    broken = tmp_path / "broken.rules.yml"
    broken.write_text(yaml.safe_dump({"groups": [{"name": "g", "rules": [
        {"record": "model:ok:rate5m", "expr": "sum(rate(mlnt_requests_total[5m]))"},
        {"alert": "MlntBroken", "expr": "sum(rate(mlnt_requests_total[5m])"}]}]}))
    with pytest.raises(check.CheckError) as error:
        check.check_rules(broken)
    assert '"MlntBroken": could not parse expression' in str(error.value)


def test_a_broken_panel_query_fails_with_the_panel_title(board):
    broken = copy.deepcopy(board)
    panels(broken)[2]["targets"][1]["expr"] = 'histogram_quantile(0.95, sum by (le) (rate(x{model=~"$model"}[5m])'
    with pytest.raises(check.CheckError) as error:
        check.check_dashboard(broken)
    assert "panel 4 (Latency p50 / p95 / p99) query B" in str(error.value)
    assert "could not parse expression" in str(error.value)


def test_an_unknown_template_variable_fails_with_the_panel_title(board):
    broken = copy.deepcopy(board)
    panels(broken)[0]["targets"][0]["expr"] = 'sum(rate(mlnt_requests_total{model=~"$modle"}[5m]))'
    with pytest.raises(check.CheckError, match=r"panel 2 \(Request rate by outcome\) query A: unknown .*\$modle"):
        check.check_dashboard(broken)


# the metric contract


def test_rules_and_dashboard_use_only_contract_metrics_and_show_all_of_them(rules, board):
    assert check.contract_problems(rules, board) == []


def test_contract_check_reports_unknown_metrics_and_recordings(rules, board):
    broken_rules, broken_board = copy.deepcopy(rules), copy.deepcopy(board)
    rule_named(broken_rules, "MlntPredictorHighErrorRate")["expr"] = "model:mlnt_requests:typo_rate5m > 0.05"
    panels(broken_board)[0]["targets"][0]["expr"] = "sum(rate(mlnt_request_total[5m]))"
    problems = check.contract_problems(broken_rules, broken_board)
    assert "rule MlntPredictorHighErrorRate: model:mlnt_requests:typo_rate5m is not recorded by mlnt.rules.yml" \
        in problems
    assert ("panel 2 (Request rate by outcome) query A: mlnt_request_total is not in the metric contract "
            "(monitoring/metrics.py)") in problems


def test_contract_check_reports_an_unused_metric_and_a_recording_not_named_by_the_convention(rules, board):
    """Every contract metric is used by a rule or a panel, and every recording rule is named level:metric:operations
    (monitoring.check's docstring)."""
    problems = check.contract_problems({"groups": []}, {"panels": [], "templating": {"list": []}})
    assert problems == [f"metric {metric.name} is in the contract but no rule or panel uses it" for metric in METRICS]
    misnamed = copy.deepcopy(rules)
    misnamed["groups"][0]["rules"].append({"record": "mlnt_requests_rate5m", "expr": "rate(mlnt_requests_total[5m])"})
    assert "rule mlnt_requests_rate5m: not a level:metric:operations name" in check.contract_problems(misnamed, board)


def test_the_dashboards_query_variables_are_checked_too(board):
    """promtool parses every panel query and query variable: the variable's selector, out of label_values()."""
    assert check.Expr("variable model", "mlnt_model_info") in check.dashboard_exprs(board)


def test_alert_thresholds_are_read_from_every_comparison():
    assert check.alert_thresholds('x > 0.05 and y >= 20 and z{a="<1"} < 0.5 and w <= 8 * 86400') == [
        0.05, 20, 0.5, 691200]


def test_the_check_command_fails_when_a_check_does(monkeypatch, capsys):
    """``python -m monitoring.check`` exits 1 with the problems on stderr, 0 when every check passes (promtool's
    own checks are stood in for here; test_rule_unit_tests_pass and the parse tests run them)."""
    for name in ("check_rules", "check_dashboard", "run_rule_tests"):
        monkeypatch.setattr(check, name, lambda *args: "SUCCESS")
    assert check.main([]) == 0 and "monitoring: all checks passed" in capsys.readouterr().out
    monkeypatch.setattr(check, "contract_problems", lambda rules, board: ["metric x: not in the contract"])
    assert check.main([]) == 1 and "metric x: not in the contract" in capsys.readouterr().err


@pytest.mark.parametrize(("expr", "names"), [
    ('sum by (model, le) (rate(mlnt_request_duration_seconds_bucket{model=~"$model"}[$__rate_interval]))',
     {"mlnt_request_duration_seconds_bucket"}),
    ("a:b:c < 0.5 and on (model) d:e:f > 0", {"a:b:c", "d:e:f"}),
    ('max by (job) (up{job=~".*mlnt.*"}) == 0 or absent(up{job="x"})', {"up"}),
    ("time() - max(mlnt_gate_passed offset 5m) * 1e3 + 0x1F", {"mlnt_gate_passed"}),
    ("sum(rate(x[5m:1m])) without (instance) / ignoring(class) group_left y", {"x", "y"}),
])
def test_metric_names_are_read_from_promql(expr, names):
    assert check.metric_names(expr) == names


# labels and label values

MLNT_REQUESTS_LABELS = "model, protocol, outcome, job, instance, namespace, pod, container, endpoint"


def rule_named(rules: dict, name: str) -> dict:
    """The alert or recording rule ``name`` of ``rules``."""
    return next(rule for rule in check.rules_of(rules) if rule.get("alert") == name or rule.get("record") == name)


@pytest.mark.parametrize(("where", "old", "new", "problem"), [
    # a misspelt label value in a panel: the panel would show "No data" for ever
    ("Server-error ratio", 'outcome="server_error"', 'outcome="server-error"',
     'panel 3 (Server-error ratio) query A: label outcome of mlnt_requests_total never takes the value '
     '"server-error" (found outcome="server-error"; expected one of: ok, client_error, server_error)'),
    # a misspelt label name in a panel's matcher ...
    ("Server-error ratio", 'outcome="server_error"', 'outcomes="server_error"',
     'panel 3 (Server-error ratio) query A: mlnt_requests_total has no label outcomes (found '
     f'outcomes="server_error"; expected a label of mlnt_requests_total: {MLNT_REQUESTS_LABELS})'),
    # ... and in its by list
    ("Request rate by outcome", "by (protocol, outcome)", "by (protocol, outcom)",
     "panel 2 (Request rate by outcome) query A: by (protocol, outcom) names outcom, which the series it aggregates "
     f"do not have (found outcom; expected a label of mlnt_requests_total: {MLNT_REQUESTS_LABELS})"),
    # a misspelt value in a rule, and a label value a recording rule creates
    ("model:mlnt_requests:error_ratio_rate5m", 'outcome="server_error"', 'outcome="server_errors"',
     'rule model:mlnt_requests:error_ratio_rate5m: label outcome of mlnt_requests_total never takes the value '
     '"server_errors" (found outcome="server_errors"; expected one of: ok, client_error, server_error)'),
    ("MlntTrainingStale", f'{{job="{PUSHGATEWAY_JOB}"}})', '{job="mlnt_pipeline"})',
     'rule MlntTrainingStale: label job of mlnt_training_last_success_timestamp_seconds never takes the value '
     '"mlnt_pipeline" (found job="mlnt_pipeline"; expected one of: mlnt-pipeline)'),
    # labels a recording rule keeps: the alert joins on model, which the recorded series still have
    ("MlntLabelDisagreement", "on (model)", "on (models)",
     "rule MlntLabelDisagreement: on (models) names models, which no series it reads has (found models; expected a "
     "label of model:mlnt_feedback:increase1h, model:mlnt_feedback_disagreement:ratio_rate1h: model)"),
    # label_replace's source label
    ("model_stage:kserve_request_duration_seconds:p50_5m", '"model_name"', '"modelname"',
     "rule model_stage:kserve_request_duration_seconds:p50_5m: label_replace reads label modelname, which no series "
     "it reads has (found modelname; expected a label of request_postprocess_seconds_bucket, "
     "request_predict_seconds_bucket, request_preprocess_seconds_bucket: model_name, le, job, instance, namespace, "
     "pod, container, endpoint, stage, model)"),
])
def test_contract_check_reports_a_misspelt_label_or_label_value(rules, board, where, old, new, problem):
    broken_rules, broken_board = copy.deepcopy(rules), copy.deepcopy(board)
    titled = [panel for panel in panels(broken_board) if panel["title"] == where]
    target = titled[0]["targets"][0] if titled else rule_named(broken_rules, where)
    assert old in target["expr"]
    target["expr"] = target["expr"].replace(old, new, 1)
    assert check.contract_problems(broken_rules, broken_board) == [problem]


@pytest.mark.parametrize(("expr", "problems"), [
    # Grafana's variables match anything; a regex must match one of the values
    ('sum(rate(mlnt_requests_total{model=~"$model", protocol="${protocol}", outcome=~"server_error|client_error"}'
     '[$__rate_interval]))', []),
    ('sum(rate(mlnt_requests_total{outcome=~"server-.*"}[5m]))',
     ['panel 9 (p) query A: no value of label outcome of mlnt_requests_total matches "server-.*" (found '
      'outcome=~"server-.*"; expected one of: ok, client_error, server_error)']),
    # != a value the label never takes matches every series: a misspelling too; !~ is not checked
    ('mlnt_requests_total{outcome!="eror", protocol!~"grpc.*"}',
     ['panel 9 (p) query A: label outcome of mlnt_requests_total never takes the value "eror" (found '
      'outcome!="eror"; expected one of: ok, client_error, server_error)']),
    # every label whose values the contract fixes: the latency's protocol, the fallbacks' reason, the trained model
    ('mlnt_request_duration_seconds_count{protocol="http"} + on () mlnt_client_identity_fallbacks_total{'
     'reason="malformed"} + on () mlnt_training_accuracy{model="techer"}',
     ['panel 9 (p) query A: label protocol of mlnt_request_duration_seconds_count never takes the value "http" (found '
      'protocol="http"; expected one of: v1, v2, grpc-v2)',
      'panel 9 (p) query A: label model of mlnt_training_accuracy never takes the value "techer" (found '
      'model="techer"; expected one of: teacher, student, baseline)']),
    # a !~ that no value matches excludes nothing, but is not reported
    ('mlnt_requests_total{protocol!~"http.*"}', []),
    # a value of a label the recording rules create (stage, from label_replace) or keep (outcome)
    ('model_stage:kserve_request_duration_seconds:p95_5m{stage="predcit"} + on (model) '
     'model_outcome:mlnt_requests:rate5m{outcome="ok"}',
     ['panel 9 (p) query A: label stage of model_stage:kserve_request_duration_seconds:p95_5m never takes the value '
      '"predcit" (found stage="predcit"; expected one of: preprocess, predict, postprocess)']),
    # the target labels and the le of a histogram's buckets; the training metrics' pushed labels
    ('sum by (le, pod) (rate(mlnt_batch_size_bucket{instance="a:1"}[5m]))', []),
    ('max by (step, split) (mlnt_training_accuracy{split="test", model="student", job="mlnt-pipeline"})', []),
    ('max by (step) (mlnt_training_accuracy{split="train"})',
     ['panel 9 (p) query A: label split of mlnt_training_accuracy never takes the value "train" (found '
      'split="train"; expected one of: test, val)']),
    # strings hold braces and commas; a label a recorded series no longer has (instance: summed away)
    ('label_replace(model:mlnt_requests:rate5m{instance="a"}, "x", "}", "model", "a,b")',
     ['panel 9 (p) query A: model:mlnt_requests:rate5m has no label instance (found instance="a"; expected a label '
      'of model:mlnt_requests:rate5m: model)']),
])
def test_label_matchers_and_lists_are_checked_against_the_series_labels(rules, expr, problems):
    schema = check.series_labels(rules)
    assert check.label_problems(check.Expr("panel 9 (p) query A", expr), schema) == problems


def test_recording_rules_keep_and_create_labels_with_their_values(rules):
    schema = check.series_labels(rules)
    assert schema["model_outcome:mlnt_requests:rate5m"] == {"model": None, "outcome": OUTCOMES}
    assert schema["model_stage:kserve_request_duration_seconds:p95_5m"] == {"model": None, "stage": KSERVE_STAGES}
    assert schema["model:mlnt_request_duration_seconds:p99_5m"] == {"model": None}  # le is gone after the quantile
    assert schema["mlnt_client_identity_fallbacks_total"]["reason"] == FALLBACK_REASONS


def test_every_training_metric_carries_the_pushs_job_and_step_labels(rules):
    """The training steps push under job=mlnt-pipeline with the grouping key step (components.common.telemetry):
    every training metric may be selected and grouped by both."""
    schema = check.series_labels(rules)
    for metric in TRAINING:
        expr = f'max by (step) ({metric.name}{{job="{PUSHGATEWAY_JOB}", step="gate"}})'
        assert check.label_problems(check.Expr("panel 9 (p) query A", expr), schema) == [], metric.name


def test_a_label_takes_any_value_when_one_of_the_series_read_leaves_it_open():
    """Where several series are read, a label's values are the union of theirs, or any if one takes any."""
    assert check._merge([{"a": ("x",), "b": ("x",)}, {"a": None, "b": ("y", "x")}, {"a": ("z",)}]) == {
        "a": None, "b": ("x", "y")}


def test_a_recording_rule_without_by_keeps_the_labels_of_its_series_less_its_without_list():
    labels = check.recorded_labels("sum without (instance, pod, le) (rate(mlnt_batch_size_bucket[5m]))",
                                   check.contract_labels())
    assert set(labels) == {"model", "job", "namespace", "container", "endpoint"}


def test_a_grouping_label_is_one_the_aggregations_own_series_carry(rules, board):
    """A ratio grouped by a label only its numerator has matches nothing: ``reason`` is a label of the fallbacks,
    not of the requests summed below the line, so the recorded ratio and its alert would be empty for ever."""
    broken = copy.deepcopy(rules)
    fallbacks = rule_named(broken, "model:mlnt_client_identity_fallbacks:ratio_rate5m")
    fallbacks["expr"] = fallbacks["expr"].replace("sum by (model)", "sum by (model, reason)")
    assert check.contract_problems(broken, board) == [
        "rule model:mlnt_client_identity_fallbacks:ratio_rate5m: by (model, reason) names reason, which the series "
        f"it aggregates do not have (found reason; expected a label of mlnt_requests_total: {MLNT_REQUESTS_LABELS})"]


@pytest.mark.parametrize(("expr", "problems"), [
    # the grouping after the aggregation's operand, as PromQL allows it
    ("sum(rate(mlnt_client_identity_fallbacks_total[5m])) by (reason) / ignoring (reason) group_left "
     "sum(rate(mlnt_requests_total[5m])) by (reason)",
     ["panel 9 (p) query A: by (reason) names reason, which the series it aggregates do not have (found reason; "
      f"expected a label of mlnt_requests_total: {MLNT_REQUESTS_LABELS})"]),
    # an outer aggregation sees the labels the inner one keeps, and a without list is checked the same way
    ("max by (model) (sum by (model, outcome) (rate(mlnt_requests_total[5m]))) + on (model) "
     "sum without (class) (rate(mlnt_prediction_confidence_count[5m]))",
     ["panel 9 (p) query A: without (class) names class, which the series it aggregates do not have (found class; "
      "expected a label of mlnt_prediction_confidence_count: model, job, instance, namespace, pod, container, "
      "endpoint)"]),
    ("max by (outcome) (sum by (model) (rate(mlnt_requests_total[5m])))",
     ["panel 9 (p) query A: by (outcome) names outcome, which the series it aggregates do not have (found outcome; "
      "expected a label of mlnt_requests_total: model)"]),
])
def test_each_aggregations_grouping_is_checked_against_its_own_operand(rules, expr, problems):
    schema = check.series_labels(rules)
    assert check.label_problems(check.Expr("panel 9 (p) query A", expr), schema) == problems


RATEABLE = "expected a counter, or a histogram's _bucket, _sum or _count series"


@pytest.mark.parametrize(("expr", "problems"), [
    # counters and a histogram's series are what rate(), irate() and increase() are for
    ('sum(rate(mlnt_requests_total[5m])) + sum(irate(mlnt_batch_size_sum[1m])) + '
     'sum(increase(mlnt_prediction_confidence_count[1h])) + sum(rate(mlnt_batch_size_bucket{le="1"}[5m]))', []),
    # a gauge goes down as well as up: rate() reads every fall as a counter reset
    ("avg by (model) (rate(mlnt_prediction_drift[5m]))",
     ["panel 9 (p) query A: rate() reads mlnt_prediction_drift, a gauge (found rate(mlnt_prediction_drift[5m]); "
      f"{RATEABLE})"]),
    ('increase(up{job="x"}[1h]) > 0 or irate(model:mlnt_requests:rate5m[5m])',
     ['panel 9 (p) query A: increase() reads up, a gauge (found increase(up{job="x"}[1h]); ' f"{RATEABLE})",
      "panel 9 (p) query A: irate() reads model:mlnt_requests:rate5m, a recording rule's series (found "
      f"irate(model:mlnt_requests:rate5m[5m]); {RATEABLE})"]),
])
def test_rate_and_increase_read_only_counters_and_histograms(expr, problems):
    assert check.type_problems(check.Expr("panel 9 (p) query A", expr)) == problems


QUANTILE = "expected le among the labels its buckets are aggregated by"


@pytest.mark.parametrize(("expr", "problems"), [
    ("histogram_quantile(0.95, sum by (model, le) (rate(mlnt_request_duration_seconds_bucket[5m])))", []),
    ("histogram_quantile(0.95, sum(rate(mlnt_request_duration_seconds_bucket[5m])) by (le))", []),
    ("histogram_quantile(0.95, rate(mlnt_request_duration_seconds_bucket[5m]))", []),  # no aggregation: le kept
    # the le dropped by a by list, by a without list and by no grouping at all: one series, no buckets
    ("histogram_quantile(0.95, sum by (model) (rate(mlnt_request_duration_seconds_bucket[5m])))",
     [f"panel 9 (p) query A: histogram_quantile() aggregates its buckets by (model) (found by (model); {QUANTILE})"]),
    ("histogram_quantile(0.9, sum without (le, pod) (rate(mlnt_batch_size_bucket[5m])))",
     [f"panel 9 (p) query A: histogram_quantile() aggregates its buckets without (le, pod) (found without (le, pod); "
      f"{QUANTILE})"]),
    ("histogram_quantile(0.5, max(rate(mlnt_batch_size_bucket[5m])))",
     [f"panel 9 (p) query A: histogram_quantile() aggregates its buckets into one series (found max(...); "
      f"{QUANTILE})"]),
    # the quantile of a histogram's _count series has no buckets to read
    ("histogram_quantile(0.5, sum by (le) (rate(mlnt_batch_size_count[5m])))",
     ["panel 9 (p) query A: histogram_quantile() reads mlnt_batch_size_count, which has no le (found "
      "mlnt_batch_size_count; expected a histogram's _bucket series)"]),
])
def test_a_quantile_keeps_the_le_of_its_buckets(expr, problems):
    assert check.type_problems(check.Expr("panel 9 (p) query A", expr)) == problems


@pytest.mark.parametrize(("name", "old", "new", "found"), [
    ("model:mlnt_prediction_drift:avg", "avg by (model) (mlnt_prediction_drift)",
     "avg by (model) (rate(mlnt_prediction_drift[5m]))", "rate() reads mlnt_prediction_drift, a gauge"),
    ("model:mlnt_request_duration_seconds:p95_5m", "sum by (model, le) (", "sum by (model) (",
     "histogram_quantile() aggregates its buckets by (model)"),
])
def test_the_contract_check_reports_a_rule_of_the_wrong_type(rules, board, name, old, new, found):
    """The shipped rules pass (test_rules_and_dashboard_use_only_contract_metrics_and_show_all_of_them); the same
    rules with a gauge's rate or a quantile without le do not."""
    broken = copy.deepcopy(rules)
    rule = rule_named(broken, name)
    assert old in rule["expr"]
    rule["expr"] = rule["expr"].replace(old, new)
    problems = check.contract_problems(broken, board)
    assert len(problems) == 1 and problems[0].startswith(f"rule {name}: {found} (found "), problems


def test_a_variable_reading_a_missing_label_is_reported(rules, board):
    broken = copy.deepcopy(board)
    broken["templating"]["list"][1]["query"]["query"] = "label_values(mlnt_model_info, models)"
    assert check.contract_problems(rules, broken) == [
        "variable model: label_values reads label models, which mlnt_model_info does not have (found models; "
        "expected a label of mlnt_model_info: model, version, job, instance, namespace, pod, container, endpoint)"]


def test_contract_is_plain_data_without_collectors():
    done = subprocess.run([sys.executable, "-c", "import sys, monitoring.metrics; "
                           "assert 'prometheus_client' not in sys.modules"], capture_output=True, text=True,
                          check=False, cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert len({metric.name for metric in METRICS}) == len(METRICS) == 19
    assert "mlnt_prediction_confidence_bucket" in SERIES and "mlnt_requests_total" in SERIES
    assert "request_predict_seconds_bucket" in SERIES  # KServe's own, read by the stage-latency panel and rules
    assert not set(KSERVE) & set(PREDICTOR)  # KServe creates those collectors; the predictor must not


def test_client_identity_fallbacks_are_a_predictor_metric_that_an_alert_reads(rules):
    assert CLIENT_FALLBACKS in PREDICTOR and CLIENT_FALLBACKS.labels == ("model", "reason")
    alert = next(rule for rule in check.alerts_of(rules) if rule["alert"] == "MlntClientIdentityFallbacks")
    recorded = {rule["record"]: rule["expr"] for rule in check.rules_of(rules) if "record" in rule}
    read = set().union(*(check.metric_names(recorded.get(name, name)) for name in check.metric_names(alert["expr"])))
    assert read == {CLIENT_FALLBACKS.name, "mlnt_requests_total"}
    assert (alert["for"], alert["labels"]) == ("15m", {"severity": "warning"})


def test_predictor_down_selects_the_contract_job_regex(rules):
    down = next(rule for rule in check.alerts_of(rules) if rule["alert"] == "MlntPredictorDown")
    assert down["expr"].count(f'up{{job=~"{PREDICTOR_JOB_REGEX}"}}') == 2


def test_replicas_down_and_pushgateway_down_select_the_contract_job_regexes(rules):
    replicas = rule_named(rules, "MlntPredictorReplicasDown")
    assert replicas["expr"].count(f'up{{job=~"{PREDICTOR_JOB_REGEX}"}}') == 2
    pushgateway_down = rule_named(rules, "MlntPushgatewayDown")["expr"]
    assert pushgateway_down.count(f'up{{job=~"{PUSHGATEWAY_SCRAPE_JOB_REGEX}"}}') == 3  # down, and gone


def test_training_stale_allows_one_missed_weekly_run_and_reads_the_pushed_timestamp(rules):
    """MlntTrainingStale's 8 days are the weekly CronJob's period plus a day; it reads the timestamp the gate pushes
    under the pipeline's job, twice: its age, and absent() for a Pushgateway that lost it or was never pushed to."""
    stale = next(rule for rule in check.alerts_of(rules) if rule["alert"] == "MlntTrainingStale")
    cronjob = yaml.safe_load((ROOT / "k8s/base/pipeline/cronjob.yaml").read_text())
    minute, hour, day, month, weekday = cronjob["spec"]["schedule"].split()
    assert (day, month) == ("*", "*") and weekday.isdigit() and minute.isdigit() and hour.isdigit()  # weekly
    assert "> 8 * 86400" in stale["expr"] and "8 days" in stale["annotations"]["summary"]
    selector = f'{TRAINING_LAST_SUCCESS.name}{{job="{PUSHGATEWAY_JOB}"}}'
    assert stale["expr"].count(selector) == 2 and f"absent({selector})" in stale["expr"]
    assert f"max by (job, pipeline) ({selector})" in stale["expr"]  # each pipeline judged on its own timestamp
    assert (stale["for"], stale["labels"]) == ("1h", {"severity": "warning"})


# alerts, runbooks and the dashboard


def test_alerts_have_severity_annotations_and_a_runbook_section(rules):
    assert check.alert_problems(rules, DOCS_FILE.read_text()) == []


def test_thresholds_stated_in_annotations_docs_and_panels_are_the_rules(rules, board):
    assert check.threshold_problems(rules, DOCS_FILE.read_text(), board) == []


@pytest.mark.parametrize(("text", "stated"), [
    ("(threshold 5%)", [("threshold 5%", 0.05)]),
    ("has been 975ms (threshold 500ms) for 10 minutes", [("threshold 500ms", 0.5)]),
    ("(threshold 30%, at least 20 labels an hour)", [("threshold 30%", 0.3), ("at least 20", 20)]),
    ("p95 latency > 0.5 s; ≥ 20 labels; more than 8 days", [("> 0.5 s", 0.5), ("≥ 20", 20), ("more than 8 days",
                                                                                            691200)]),
    ("the mean top-1 probability of model {{ $labels.model }}", []),
])
def test_stated_thresholds_are_read_in_the_rules_units(text, stated):
    assert check.stated_thresholds(text) == stated


def test_a_threshold_or_for_changed_in_the_rule_alone_is_reported(rules, board):
    broken = copy.deepcopy(rules)
    errors, latency = rule_named(broken, "MlntPredictorHighErrorRate"), rule_named(broken, "MlntPredictorHighLatency")
    errors["expr"] = errors["expr"].replace("> 0.05", "> 0.09")
    latency["for"], latency["labels"]["severity"] = "14m", "critical"
    assert check.threshold_problems(broken, DOCS_FILE.read_text(), board) == [
        "alert MlntPredictorHighErrorRate: its description says 'threshold 5%' (0.05), but "
        "MlntPredictorHighErrorRate compares with 0.09, 20",
        "alert MlntPredictorHighErrorRate: the alert table of docs/monitoring.md says '> 5 %' (0.05), but "
        "MlntPredictorHighErrorRate compares with 0.09, 20",
        "alert MlntPredictorHighLatency: its description says 'for 10 minutes', but the for: of "
        "MlntPredictorHighLatency is 14m",
        "alert MlntPredictorHighLatency: the alert table of docs/monitoring.md says For '10m', but its for: is 14m",
        "alert MlntPredictorHighLatency: the alert table of docs/monitoring.md says Severity 'warning', but its "
        "severity label is 'critical'",
        "panel 3 (Server-error ratio): its description says 'above 5%' (0.05), but MlntPredictorHighErrorRate "
        "compares with 0.09, 20",
        "panel 3 (Server-error ratio): its threshold line is at 0.05, but MlntPredictorHighErrorRate compares with "
        "0.09, 20",
        "panel 4 (Latency p50 / p95 / p99): its description says 'for 10 minutes', but the for: of "
        "MlntPredictorHighLatency is 14m",
    ]
    problems = check.threshold_problems(rules, "# Monitoring\n", board)
    assert len(problems) == 11 and all("no row in the alert table of docs/monitoring.md" in p for p in problems)


def test_a_missing_runbook_section_is_reported(rules):
    problems = check.alert_problems(rules, "# Monitoring\n### MlntPredictorDown\n")
    assert len(problems) == 10 and all("runbook_url must be" in problem for problem in problems)


def test_runbook_anchors_are_githubs():
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as hyphens."""
    assert check.heading_anchors("# Monitoring\n### MlntPredictorDown (critical)\n## What's new?\n") == {
        "monitoring", "mlntpredictordown-critical", "whats-new"}


def test_an_alert_without_for_must_say_at_once_in_the_alert_table(rules, board):
    docs = DOCS_FILE.read_text()
    row = next(line for line in docs.splitlines() if line.startswith("| MlntTrainingGateFailed |"))
    assert "| at once |" in row
    problems = check.threshold_problems(rules, docs.replace(row, row.replace("| at once |", "| 5m |")), board)
    assert problems == ["alert MlntTrainingGateFailed: the alert table of docs/monitoring.md says For '5m', but its "
                        "for: is none (at once)"]


def test_a_panel_naming_several_alerts_is_held_to_none_of_them(rules, board):
    """A panel description that names two alerts has no one alert to hold its thresholds to."""
    several = copy.deepcopy(board)
    panel = next(p for p in panels(several) if p["title"] == "Server-error ratio")
    panel["description"] = "MlntPredictorHighLatency and MlntPredictorHighErrorRate fire above 5% of requests."
    assert check.threshold_problems(rules, DOCS_FILE.read_text(), several) == []


def _panel_answers(board: dict, title: str, series: list[dict], expected: list[list[dict]], tmp_path) -> None:
    """promtool evaluates panel ``title``'s queries (template variables as ``check.VARIABLES``) at 10m on the input
    ``series`` scraped every minute, query i expecting the samples ``expected[i]``; it raises with promtool's report
    otherwise."""
    panel = next(panel for panel in panels(board) if panel["title"] == title)
    cases = [{"expr": check.substitute(check.Expr(title, target["expr"])).expr, "eval_time": "10m",
              "exp_samples": samples} for target, samples in zip(panel["targets"], expected, strict=True)]
    test = tmp_path / "panel_test.yml"
    test.write_text(yaml.safe_dump({"tests": [{"interval": "1m", "input_series": series,
                                               "promql_expr_test": cases}]}, sort_keys=False))
    check.run_promtool("test", "rules", str(test))


def test_the_class_mix_panel_answers_each_classs_share_not_its_rate(board, tmp_path):
    """The panel's unit is percentunit: Grafana's legend and tooltip show its values with it (percent stacking
    changes the axis only), so the query itself answers shares."""
    _panel_answers(board, "Predicted-class mix",
                   [{"series": 'mlnt_predictions_total{model="fmnist", class="Bag"}', "values": "0+48x10"},
                    {"series": 'mlnt_predictions_total{model="fmnist", class="Coat"}', "values": "0+16x10"}],
                   [[{"labels": '{class="Bag"}', "value": 0.75}, {"labels": '{class="Coat"}', "value": 0.25}]],
                   tmp_path)


def test_the_batch_size_p95_of_single_images_is_one(board, tmp_path):
    """Every request one image: histogram_quantile alone reads the bucket le=1 as spread from 0 (a p95 of 0.95)."""
    series = [{"series": f'mlnt_batch_size_bucket{{model="fmnist", le="{le}"}}', "values": "0+6x10"}
              for le in ("1", "2", "4", "+Inf")]
    series += [{"series": f'mlnt_batch_size_{part}{{model="fmnist"}}', "values": "0+6x10"} for part in ("sum", "count")]
    one = [{"labels": '{model="fmnist"}', "value": 1}]
    _panel_answers(board, "Batch size", series, [one, one], tmp_path)


def test_dashboard_is_a_grafana_dashboard_with_a_sane_layout(board):
    assert board["schemaVersion"] == 39 and board["uid"] == dashboard.UID
    variables = {variable["name"]: variable for variable in board["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert variables["model"]["datasource"]["uid"] == "${datasource}"
    assert len({panel["id"] for panel in board["panels"]}) == len(board["panels"])
    assert {panel["type"] for panel in panels(board)} == {"timeseries", "stat"}
    boxes = [panel["gridPos"] for panel in board["panels"]]
    assert all(box["x"] + box["w"] <= dashboard.GRID_WIDTH for box in boxes)
    assert not [pair for pair in combinations(boxes, 2) if overlap(*pair)]
    for panel in panels(board):
        assert panel["datasource"]["uid"] == "${datasource}" and panel["targets"], panel["title"]


def test_panels_are_laid_out_left_to_right_wrapping_at_the_grid_width():
    """A row's panels fill the 24 columns before they wrap; the next line starts below the tallest panel of the one
    before, and the next row below its last line."""
    rows = (dashboard.Row("A", (dashboard.Panel("a", (), "", width=8, height=8),
                                dashboard.Panel("b", (), "", width=16, height=5),
                                dashboard.Panel("c", (), "", width=24, height=4))),
            dashboard.Row("B", (dashboard.Panel("d", (), "", width=12, height=6),)))
    assert [(item["title"], item["gridPos"]) for item in dashboard.layout(rows)] == [
        ("A", {"x": 0, "y": 0, "w": 24, "h": 1}), ("a", {"x": 0, "y": 1, "w": 8, "h": 8}),
        ("b", {"x": 8, "y": 1, "w": 16, "h": 5}), ("c", {"x": 0, "y": 9, "w": 24, "h": 4}),
        ("B", {"x": 0, "y": 13, "w": 24, "h": 1}), ("d", {"x": 0, "y": 14, "w": 12, "h": 6})]


def test_panels_draw_their_alert_threshold_value_range_and_value_mappings(board):
    """The alert threshold is a dashed line, red above it (below it for a panel where low is bad); stat panels
    show the last value, coloured by threshold or by their value mappings; time series ask for a range, stats for
    an instant."""
    by_title = {panel["title"]: panel for panel in panels(board)}
    errors = by_title["Server-error ratio"]["fieldConfig"]["defaults"]
    assert errors["thresholds"]["steps"] == [{"color": "green", "value": None}, {"color": "red", "value": 0.05}]
    assert errors["custom"]["thresholdsStyle"] == {"mode": "dashed"}
    confidence = by_title["Mean top-1 confidence"]["fieldConfig"]["defaults"]
    assert confidence["thresholds"]["steps"] == [{"color": "red", "value": None}, {"color": "green", "value": 0.5}]
    assert (confidence["min"], confidence["max"]) == (0, 1)
    requests = by_title["Request rate by outcome"]["fieldConfig"]["defaults"]
    assert requests["custom"]["thresholdsStyle"] == {"mode": "off"} and len(requests["thresholds"]["steps"]) == 1
    gate = by_title["Release gate"]
    assert gate["fieldConfig"]["defaults"]["mappings"][0]["options"]["0"]["text"] == "failed"
    assert by_title["Served model"]["options"]["textMode"] == "name"
    for panel in panels(board):
        stat = panel["type"] == "stat"
        assert all((target["range"], target["instant"]) == (not stat, stat) for target in panel["targets"])
        assert panel["fieldConfig"]["defaults"]["color"]["mode"] == ("thresholds" if stat else "palette-classic")
        if stat:
            assert panel["options"]["reduceOptions"]["calcs"] == ["lastNotNull"], panel["title"]
    assert [target["legendFormat"] for target in by_title["Latency p50 / p95 / p99"]["targets"]] == [
        "{{model}} p50", "{{model}} p95", "{{model}} p99"]
    automatic = dashboard.panel_json(dashboard.Panel("x", (dashboard.Query("up"),), "d"), 1, {})
    assert automatic["targets"][0]["legendFormat"] == "__auto"


def overlap(a: dict, b: dict) -> bool:
    return all(a[at] < b[at] + b[size] and b[at] < a[at] + a[size] for at, size in (("x", "w"), ("y", "h")))


def test_serving_panels_follow_the_model_variable_and_training_panels_do_not(board):
    rows, current = {}, None
    for panel in board["panels"]:
        current = panel["title"] if panel["type"] == "row" else current
        rows.setdefault(current, []).extend(target["expr"] for target in panel.get("targets", []))
    follows = re.compile(r'\bmodel(_name)?=~"\$model"')  # KServe labels its own metrics model_name: the same name
    assert all(follows.search(expr) for row in ("Serving", "Predictions") for expr in rows[row])
    assert not any("$model" in expr for expr in rows["Training"])


# the generated files


def test_generated_files_are_up_to_date():
    stale = [str(path.relative_to(ROOT)) for path in sync.stale()]
    assert not stale, f"{stale} differ from what the code generates: run `python -m monitoring.sync`"


def test_prometheus_rule_holds_the_rule_groups(rules):
    resource = yaml.safe_load(sync.K8S_RULE.read_text())
    assert resource["apiVersion"] == "monitoring.coreos.com/v1" and resource["kind"] == "PrometheusRule"
    assert resource["metadata"] == {"name": "mlnt-rules", "labels": {
        "release": "kube-prometheus-stack", "app.kubernetes.io/part-of": "mlnt-pipeline"}}
    assert resource["spec"]["groups"] == rules["groups"]


def test_sync_check_reports_a_stale_copy(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(sync, "rendered", lambda: {tmp_path / "missing.json": "{}\n"})
    monkeypatch.setattr(sync, "ROOT", tmp_path)
    assert sync.main(["--check"]) == 1
    assert "run `python -m monitoring.sync`" in capsys.readouterr().err


class FailingText(str):
    """A rendered text whose writing fails half-way, as a full disk or a crash would."""

    def encode(self, *args, **kwargs):
        raise OSError("No space left on device")


def test_sync_writes_the_stale_files_byte_for_byte_and_leaves_no_temporary(monkeypatch, tmp_path):
    fresh, same = tmp_path / "k8s" / "rule.yaml", tmp_path / "mlnt.json"
    same.write_text("{}\n")
    texts = {fresh: "# Generated; do not edit.\nexpr: |\n  up == 0\n", same: "{}\n"}
    monkeypatch.setattr(sync, "rendered", lambda: texts)
    assert sync.write() == [fresh]
    assert fresh.read_bytes() == texts[fresh].encode() and same.read_bytes() == b"{}\n"
    assert sorted(path.name for path in tmp_path.rglob("*")) == ["k8s", "mlnt.json", "rule.yaml"]


def test_a_sync_that_fails_mid_write_leaves_the_previous_file(monkeypatch, tmp_path):
    path = tmp_path / "mlnt.json"
    path.write_text("{\"old\": true}\n")
    monkeypatch.setattr(sync, "rendered", lambda: {path: FailingText("{}\n")})
    with pytest.raises(OSError, match="No space left on device"):
        sync.write()
    assert path.read_text() == "{\"old\": true}\n" and [p.name for p in tmp_path.iterdir()] == ["mlnt.json"]


def test_the_dashboard_command_writes_the_committed_bytes(tmp_path, capsys):
    out = tmp_path / "dashboards" / "mlnt.json"
    assert dashboard.main([str(out)]) == 0
    assert out.read_bytes() == dashboard.render().encode() == DASHBOARD_FILE.read_bytes()
    assert [p.name for p in out.parent.iterdir()] == ["mlnt.json"] and f"wrote {out}" in capsys.readouterr().out


@pytest.mark.parametrize("module", ["monitoring.sync", "monitoring.dashboard"])
def test_help_prints_the_usage_and_writes_nothing(module, tmp_path):
    """``--help`` was once a file name (the dashboard wrote its JSON into ``--help``) or ignored (sync ran)."""
    sync_written = {path: path.stat().st_mtime_ns for path in sync.rendered()}
    done = subprocess.run([sys.executable, "-m", module, "--help"], cwd=tmp_path, capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert done.returncode == 0 and done.stdout.startswith(f"usage: python -m {module} [-h]"), done.stderr
    assert "wrote" not in done.stdout and list(tmp_path.iterdir()) == []
    assert {path: path.stat().st_mtime_ns for path in sync.rendered()} == sync_written


def test_the_commands_keep_their_arguments(monkeypatch, tmp_path, capsys):
    """No argument: the defaults (write ``DASHBOARD_FILE``; write the stale files); ``FILE`` and ``--check`` as
    before; an argument they do not take is refused (exit 2), not taken for a file name."""
    assert dashboard.parser().parse_args([]).file == DASHBOARD_FILE
    assert sync.parser().parse_args([]).check is False and sync.parser().parse_args(["--check"]).check is True
    written = []
    monkeypatch.setattr(sync, "write", lambda: written.append(True) or [])
    assert sync.main([]) == 0 and sync.main(None) == 0 and written == [True, True]
    for main, argv in ((dashboard.main, ["a.json", "b.json"]), (dashboard.main, ["--out"]), (sync.main, ["-x"])):
        with pytest.raises(SystemExit) as exit_:
            main([str(tmp_path / arg) if not arg.startswith("-") else arg for arg in argv])
        assert exit_.value.code == 2
    assert "unrecognized arguments" in capsys.readouterr().err and list(tmp_path.iterdir()) == []
