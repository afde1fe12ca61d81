"""monitoring.snapshot and its parts (render, query, traffic, pipeline_run): the dashboard's queries rendered from
recorded answers (no servers), and one short real run
against a tiny exported model: the predictor, a Pushgateway and a real Prometheus scraping both on loopback, a short
pipeline run (ingest .. gate on a tiny Fashion-MNIST) pushing to the Pushgateway, scripted traffic, query_range for
every panel query, a PNG and the JSON of the answers."""

from __future__ import annotations

import datetime as dt
import json
import math
import re
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from matplotlib import dates as mdates
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from components.formats.idx import read_fashion_mnist
from monitoring import ROOT, check, dashboard, local, pipeline_run, query, render, snapshot, traffic
from monitoring.metrics import PUSHGATEWAY_JOB
from monitoring.pushgateway import JOB_NAME, pushgateway_config
from tests.serving.conftest import CLASSES, write_release

PNG = b"\x89PNG\r\n\x1a\n"


def recorded(board: dict, start: float = 1_700_000_000.0, points: int = 60) -> dict:
    """A snapshot.json-like answer for every panel query: two series per query (one for a stat panel), except the
    training panels, which have none (as without a Pushgateway)."""
    times = start + 2.0 * np.arange(points)
    panels = []
    for panel in query.panels(board):
        training = panel["title"] in {p.title for p in dashboard.ROWS[-1].panels}
        targets = []
        for target in panel["targets"]:
            count = 0 if training else 1 if panel["type"] == "stat" else 2
            result = [{"metric": {"model": "fmnist", "version": "v1", "protocol": "v2", "outcome": f"o{k}",
                                  "class": CLASSES[k]},
                       "values": [[t, str(v)] for t, v in zip(times, 0.5 + 0.4 * np.sin(times / 30 + k), strict=True)]}
                      for k in range(count)]
            targets.append({"refId": target["refId"], "expr": target["expr"], "legendFormat": target["legendFormat"],
                            "query": check.fill_variables(target["expr"], check.VARIABLES), "result": result})
        panels.append({"id": panel["id"], "title": panel["title"], "type": panel["type"], "targets": targets})
    return {"title": board["title"], "model": {"name": "fmnist", "version": "v1"},
            "range": {"start": start, "end": float(times[-1]), "step": 2},
            "variables": check.VARIABLES, "panels": panels,
            "phases": [{"name": phase.name, "description": phase.description, "start": start + 30 * k,
                        "end": start + 30 * (k + 1)} for k, phase in enumerate(traffic.PHASES)]}


def test_render_draws_one_subplot_per_dashboard_panel_and_writes_a_png(tmp_path):
    board = dashboard.build()
    figure = render.render(board, recorded(board))
    expected = [f"panel {panel['id']}" for panel in query.panels(board)]
    assert sorted(ax.get_label() for ax in figure.axes) == sorted(expected)
    texts = {text.get_text() for text in figure.texts}
    assert {panel["title"] for panel in query.panels(board)} <= texts
    assert {row.title for row in dashboard.ROWS} <= texts
    out = render.save(figure, tmp_path / "docs" / "dashboard.png")
    assert out.read_bytes().startswith(PNG) and out.stat().st_size > 50_000


def test_render_again_from_a_recorded_json(tmp_path):
    (tmp_path / "snapshot.json").write_text(json.dumps(recorded(dashboard.build())))
    code = snapshot.main(["--from-json", str(tmp_path / "snapshot.json"), "--output", str(tmp_path / "again.png")])
    assert code == 0 and (tmp_path / "again.png").read_bytes().startswith(PNG)


def test_template_variables_and_legends():
    variables = {"model": "mlnt-classifier", "__rate_interval": "20s"}
    assert (check.fill_variables('rate(x{model=~"$model"}[$__rate_interval])', variables)
            == 'rate(x{model=~"mlnt-classifier"}[20s])')
    with pytest.raises(check.CheckError, match=r"unknown template variable \$nope in x\[\$nope\]"):
        check.fill_variables("x[$nope]", variables)
    assert render.legend("{{protocol}} {{outcome}}", {"protocol": "v2", "outcome": "ok"}) == "v2 ok"
    assert render.legend("__auto", {"__name__": "up", "job": "a"}) == 'up{job="a"}'
    assert render.legend("{{model}} {{nope}}", {"model": "m"}) == "m"  # a label the series lacks reads as nothing
    assert render.unit_text(0.25, "percentunit") == "25%" and render.unit_text(0.012, "s") == "12 ms"


def test_units_read_as_grafana_shows_them():
    assert render.unit_text(3, "reqps") == "3 req/s" and render.unit_text(0, "s") == "0 s"
    assert render.unit_text(-120, "s") == "-2 min" and render.unit_text(0.0004, "s") == "400 µs"
    # Grafana's toSeconds: ns, µs, ms, s, min, hour, day, week, year (MlntTrainingStale's 8 days read in weeks)
    assert [render.unit_text(v, "s") for v in (4e-7, 59, 60, 7200, 86400, 8 * 86400, 4e7)] == [
        "400 ns", "59 s", "1 min", "2 hour", "1 day", "1.14 week", "1.27 year"]
    assert render.unit_text(90, "s") == "1.5 min"
    assert render._legend_layout(["a very long legend " * 10], 1.0) == (1, 1)  # wider than the panel: one column
    assert render._legend_layout(["abc"] * 5, 1.4) == (2, 3)  # each item 3 * 0.056 + 0.42 inches wide: two rows


def drawn(title: str, results: list[list[tuple[float, float]]], snapshot: dict | None = None, **panel_fields):
    """One panel of the dashboard (``title``; or a new one from ``panel_fields``) drawn from ``results``: one list of
    (time, value) per series, labelled model="m<k>"."""
    panel = next((p for p in query.panels(dashboard.build()) if p["title"] == title), None) or dashboard.panel_json(
        dashboard.Panel(title, (dashboard.Query("up", "{{model}}"),), "", **panel_fields), 1, {})
    target = {"legendFormat": panel["targets"][0]["legendFormat"],
              "result": [{"metric": {"model": f"m{k}", "version": "v1"}, "values": [[t, str(v)] for t, v in values]}
                         for k, values in enumerate(results)]}
    ax = Figure().add_axes((0, 0, 1, 1))
    if panel["type"] == "stat":
        render.draw_stat(ax, panel, {"targets": [target]})
    else:
        render.draw_timeseries(ax, panel, render.timeseries_lines({"targets": [target]}), snapshot or {})
    return ax


def test_a_stat_panel_shows_the_last_value_coloured_by_its_threshold_or_value_mapping():
    """Grafana's lastNotNull; red at or above the threshold; the value mapping's text; the legend for textMode
    name."""
    red, green = "#E02F44", "#56A64B"
    gate = drawn("Release gate", [[(0, 1), (1, 0), (2, math.nan)]])
    assert [(text.get_text(), text.get_color()) for text in gate.texts] == [("failed", red)]
    limit = drawn("limit", [[(0, 0.1), (1, 0.7)], [(0, 0.7), (1, 0.3)]], kind="stat", limit=0.5)
    assert [(text.get_text(), text.get_color()) for text in limit.texts] == [("0.7", red), ("0.3", green)]
    served = drawn("Served model", [[(0, 1)]])
    assert [text.get_text() for text in served.texts] == ["m0 v1"]


def test_a_time_series_panel_draws_its_lines_threshold_and_value_range():
    snapshot = {"range": {"start": 0.0, "end": 100.0},
                "phases": [{"name": phase.name, "start": 25.0 * k, "end": 25.0 * (k + 1)}
                           for k, phase in enumerate(traffic.PHASES)]}
    errors = drawn("Server-error ratio", [[(10, 0.01), (20, 0.03)]], snapshot)
    line, threshold = errors.lines
    assert list(line.get_ydata()) == [0.01, 0.03] and list(threshold.get_ydata()) == [0.05, 0.05]
    assert threshold.get_linestyle() == "--" and errors.get_ylim() == pytest.approx((0, 0.05 * 1.15))
    assert errors.get_xlim() == pytest.approx(tuple(render._unix_to_num(np.array([0.0, 100.0]))))
    assert len(errors.patches) == len(traffic.PHASES) - 1  # every phase shaded but the normal one
    assert not errors.texts
    low = drawn("Server-error ratio", [[(10, 0.01)]])  # the threshold far above the data: said, not drawn to scale
    assert [text.get_text() for text in low.texts] == ["threshold 5% off scale"]
    assert low.get_ylim() == pytest.approx((0, 0.01 * 1.15))
    assert drawn("Mean top-1 confidence", [[(0, 0.6), (1, 0.7)]]).get_ylim() == (0, 1)
    assert drawn("Predicted-class mix", [[(0, 1), (1, 1)], [(0, 3), (1, 1)]]).get_ylim() == (0, 1)
    assert drawn("Request rate by outcome", [[(0, 0), (1, 0)]]).get_ylim() == (0, 1)
    idle = drawn("Server-error ratio", [[(0, math.nan), (1, math.nan)]])  # a ratio of rates while idle
    assert [text.get_text() for text in idle.texts] == ["No data"]


def test_render_draws_each_panel_from_its_recorded_answers():
    board = dashboard.build()
    figure = render.render(board, recorded(board))
    axes = {ax.get_label(): ax for ax in figure.axes}
    requests = next(panel for panel in query.panels(board) if panel["title"] == "Request rate by outcome")
    assert len(axes[f"panel {requests['id']}"].get_lines()) == 2
    assert [text.get_text() for text in axes[f"panel {requests['id']}"].get_legend().get_texts()] == [
        "v2 o0", "v2 o1"]


def test_the_time_axis_reads_the_snapshot_times_in_utc_and_the_values_in_the_panel_unit():
    """The x axis: the snapshot's range as UTC dates, 3 to 7 HH:MM:SS ticks; the phases shaded over their own
    times; the y axis: at most 5 intervals, labelled in the panel's unit."""
    start = 1_700_000_000.0  # 2023-11-14 22:13:20 UTC
    snapshot = {"range": {"start": start, "end": start + 100},
                "phases": [{"name": "skewed", "start": start + 30, "end": start + 60}]}
    ax = drawn("Server-error ratio", [[(start + 10, 0.01), (start + 20, 0.03)]], snapshot)
    ax.figure.draw_without_rendering()
    utc = [mdates.num2date(x) for x in ax.get_xlim()]
    assert utc == [dt.datetime(2023, 11, 14, 22, 13, 20, tzinfo=dt.UTC), dt.datetime(2023, 11, 14, 22, 15, 0,
                                                                                       tzinfo=dt.UTC)]
    (shaded,) = ax.patches
    assert [mdates.num2date(x) for x in (shaded.get_x(), shaded.get_x() + shaded.get_width())] == [
        dt.datetime(2023, 11, 14, 22, 13, 50, tzinfo=dt.UTC), dt.datetime(2023, 11, 14, 22, 14, 20, tzinfo=dt.UTC)]
    times = [label.get_text() for label in ax.get_xticklabels()]
    assert 3 <= len(times) <= 7 and all(re.fullmatch(r"22:1[345]:[0-5]\d", time) for time in times), times
    values = [label.get_text() for label in ax.get_yticklabels()]
    assert len(values) <= 6 and all(value.endswith("%") for value in values), values


def test_the_class_mix_stacks_each_class_share_of_the_total_at_each_time():
    """Percent stacking: at each time, each series' share of the sum; a series absent at a time (a class not yet
    predicted) or NaN there counts as 0; one colour of Grafana's palette per series."""
    ax = drawn("Predicted-class mix", [[(0, 1), (60, 1), (120, 1)], [(60, 3), (120, math.nan)]])
    xs = render._unix_to_num(np.array([0.0, 60.0, 120.0]))
    tops = [[max(vertices[np.isclose(vertices[:, 0], x), 1]) for x in xs]
            for vertices in (band.get_paths()[0].vertices for band in ax.collections)]
    assert np.allclose(tops, [[1, 0.25, 1], [1, 1, 1]]), tops
    assert [to_hex(band.get_facecolor()[0]) for band in ax.collections] == [c.lower() for c in render.PALETTE[:2]]


def test_a_panel_with_one_idle_series_draws_the_others_and_a_stat_without_values_says_so():
    """"No data" only when every series is empty; the y range from the series that have values; a stat panel with no
    value says "No data"; below its threshold a low-is-bad stat is red, and a value mapping's colour wins."""
    red = "#E02F44"
    mixed = drawn("Server-error ratio", [[(0, math.nan), (1, math.nan)], [(0, 0.01), (1, 0.02)]])
    assert not mixed.texts and mixed.get_ylim() == pytest.approx((0, 0.05 * 1.15))
    assert [text.get_text() for text in drawn("Release gate", [[(0, math.nan)]]).texts] == ["No data"]
    low = drawn("low", [[(0, 0.3)]], kind="stat", limit=0.5, low_is_bad=True)
    assert [(text.get_text(), text.get_color()) for text in low.texts] == [("0.3", red)]
    at = drawn("at", [[(0, 0.5)]], kind="stat", limit=0.5)
    assert [(text.get_text(), text.get_color()) for text in at.texts] == [("0.5", red)]
    mapped = drawn("mapped", [[(0, 2)]], kind="stat",
                   defaults={"mappings": [{"type": "value", "options": {"2": {"text": "two", "color": "red"}}}]})
    assert [(text.get_text(), text.get_color()) for text in mapped.texts] == [("two", red)]


def test_the_figure_holds_every_panel_shades_the_phases_and_is_saved_at_its_resolution(tmp_path):
    """Every panel inside the figure; each time series shaded with the snapshot's phases over its range; the header
    lists each phase at its start (UTC); the PNG at the figure's size in pixels (DPI)."""
    board = dashboard.build()
    snap = recorded(board)
    figure = render.render(board, snap)
    for ax in figure.axes:
        box = ax.get_position()
        assert box.x0 >= 0 and box.x1 <= 1 and box.y0 >= 0 and box.y1 <= 1, ax.get_label()
    series = [ax for ax in figure.axes if ax.get_xlim() != (0.0, 1.0)]
    assert series and all(len(ax.patches) == len(traffic.PHASES) - 1 for ax in series)
    assert all(ax.get_xlim() == pytest.approx(tuple(render._unix_to_num(np.array(
        [snap["range"]["start"], snap["range"]["end"]])))) for ax in series)
    starts = [f"{phase['name']} {dt.datetime.fromtimestamp(phase['start'], dt.UTC):%H:%M:%S}"
              for phase in snap["phases"]]
    assert any(all(start in text.get_text() for start in starts) for text in figure.texts)
    png = render.save(figure, tmp_path / "dashboard.png").read_bytes()
    size = int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")
    expected = figure.get_figwidth() * render.DPI, figure.get_figheight() * render.DPI
    assert all(abs(pixels - inches) <= 1 for pixels, inches in zip(size, expected, strict=True)), (size, expected)


def test_render_shades_the_traffic_phases_by_name():
    assert set(render.PHASE_COLORS) == {phase.name for phase in traffic.PHASES} - {"normal"}


def test_rendering_again_loads_no_server_code():
    """--from-json draws without kserve: only the traffic normalises (``serving.inputs``, which loads it)."""
    code = "import sys, monitoring.snapshot; sys.exit('kserve' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=False).returncode == 0


def test_traffic_duration_is_bounded(capsys):
    assert snapshot.main(["--model", "x", "--output", "x.png", "--minutes", "10"]) == 2
    assert "expected 5 to 240 seconds of traffic, found 600" in capsys.readouterr().err


def test_the_snapshot_takes_three_minutes_of_traffic_by_default_and_writes_its_json_beside_the_png(tmp_path,
                                                                                                   monkeypatch):
    """``--minutes`` defaults to 3; ``--json`` to snapshot.json beside ``--output`` (docs/monitoring.md)."""
    board, taken = dashboard.build(), []
    monkeypatch.setattr(snapshot, "take", lambda release, seconds, **kwargs: taken.append(seconds) or recorded(board))
    monkeypatch.setattr(render, "save", lambda figure, output: output)
    assert snapshot.main(["--model", "release", "--output", str(tmp_path / "docs" / "dashboard.png")]) == 0
    assert taken == [180] and json.loads((tmp_path / "docs" / "snapshot.json").read_text())["title"] == board["title"]


def test_the_pipeline_run_draws_a_quarter_as_many_test_images_and_at_least_100(tmp_path, monkeypatch):
    drawn = []
    monkeypatch.setattr(pipeline_run, "tiny_fashion_mnist", lambda folder, data, **kw: drawn.append(kw) or "images")
    monkeypatch.setattr(pipeline_run.subprocess, "run", lambda *args, **kwargs: subprocess.CompletedProcess(args, 0))
    for images in (200, 1000):
        pipeline_run.run_pipeline(tmp_path, "127.0.0.1:9091", data=tmp_path / "none", images=images, epochs=1)
    assert drawn == [{"train": 200, "test": 100}, {"train": 1000, "test": 250}]


def test_disagreeing_feedback_labels_are_another_class():
    """The "disagreeing feedback" phase: a wrong label is the next class, never the prediction itself."""
    posted = []

    def answer(request: httpx.Request) -> httpx.Response:
        posted.append(json.loads(request.content))
        return httpx.Response(200, json={})

    images = traffic.Images(np.zeros((4, 1, 8, 8), np.float32), None, np.zeros(1, np.int64), "zeros")
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        sent = traffic.Traffic(client, "http://predictor", "m", images, 10)
        sent.kept.extend([(3, 3), (9, 9)])
        sent.feedback(wrong_share=1.0)
    assert posted == [{"feedback": [{"predicted": 3, "label": 4}, {"predicted": 9, "label": 0}]}]


def test_the_header_says_which_pipeline_run_fills_the_training_row():
    assert "this run has none" in render.training_text({})
    run = {"steps": list(pipeline_run.PIPELINE), "seconds": 41.5, "data": "300 training and 100 test images of x",
           "network": "small_cnn", "epochs": 1, "noise": {"kind": "symmetric", "rate": 0.5},
           "gate_min_accuracy": 0.5}
    text = render.training_text({"training": run})
    assert "ingest, noise, baseline, mlnt, evaluate, export, gate" in text and "41.5 s on 300 training" in text
    assert "gate bar 50%" in text


def test_the_pipeline_runs_on_a_tiny_fashion_mnist_with_short_training(tmp_path):
    source = pipeline_run.tiny_fashion_mnist(tmp_path / "fmnist", tmp_path / "none", train=50, test=20)
    assert source.startswith("50 training and 20 test synthetic images")
    dataset = read_fashion_mnist(tmp_path / "fmnist")
    assert dataset.train_images.shape == (50, 28, 28, 1) and dataset.test_labels.shape == (20,)
    params = pipeline_run.pipeline_params(2)
    assert params["baseline"]["epochs"] == params["mlnt"]["epochs"] == 2 and params["noise"]["train_size"] == 0
    assert 0 < params["mlnt"]["ramp_start"] < params["mlnt"]["ramp_end"] <= 2
    assert params["gate"]["min_accuracy"] == pipeline_run.PIPELINE_MIN_ACCURACY


def test_the_traffic_is_many_users_behind_a_gateway():
    """Every request names one of the users in X-Forwarded-For, as the cluster's gateway appends it, and the
    snapshot's predictor reads it as the ServingRuntime's does."""
    seen = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers.get_list("x-forwarded-for"))
        return httpx.Response(200, json={"outputs": [{"name": "class_index", "data": [0]}], "predictions": []})

    images = traffic.Images(np.zeros((4, 1, 8, 8), np.float32), None, np.zeros(1, np.int64), "zeros")
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        sent = traffic.Traffic(client, "http://predictor", "m", images, len(CLASSES))
        for phase in traffic.PHASES:
            for _ in range(50):
                sent.step(phase)
    assert all(len(header) == 1 and header[0] in sent.users for header in seen)
    assert len({header[0] for header in seen}) > 100 and len(sent.users) == traffic.USERS
    assert len(set(traffic.user_addresses(508))) == 508
    with pytest.raises(ValueError, match="expected 1 to 508 users, found 509"):
        traffic.user_addresses(509)
    runtime = yaml.safe_load((ROOT / "k8s/base/serving/servingruntime.yaml").read_text())["spec"]["containers"][0]
    options = {key: runtime["args"][runtime["args"].index("--" + key.replace("_", "-")) + 1]
               for key in traffic.PREDICTOR_OPTIONS}
    assert options == {key: str(value) for key, value in traffic.PREDICTOR_OPTIONS.items()}


def test_the_traffic_sends_a_burst_of_client_errors_and_the_skewed_pool_only_in_their_phases():
    bodies = []

    def answer(request: httpx.Request) -> httpx.Response:
        bodies.append((request.url.path, request.content))
        return httpx.Response(200, json={"outputs": [{"name": "class_index", "data": [0]}], "predictions": []})

    images = traffic.Images(np.arange(4, dtype=np.float32).reshape(4, 1, 1, 1), None, np.array([2]), "four")
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        sent = traffic.Traffic(client, "http://predictor", "m", images, len(CLASSES))
        kinds = {}
        for phase in traffic.PHASES:
            bodies.clear()
            before = set(sent.sent)
            for _ in range(60):
                sent.step(phase)
            kinds[phase.name] = set(sent.sent) - before
            if phase.name == "skewed":
                data = [json.loads(body)["inputs"][0]["data"] for path, body in bodies if path.endswith("/infer")]
                assert data and all(set(values) == {2.0} for values in data)
    assert any(kind.startswith("bad: ") for kind in kinds["bad requests"])
    assert not any(kind.startswith("bad: ") for name, new in kinds.items() if name != "bad requests" for kind in new)
    with pytest.raises(ValueError, match="expected 1 to 508 users, found 0"):
        traffic.user_addresses(0)


def test_the_traffic_sends_fashion_mnist_only_to_a_model_of_its_shape_and_classes(tmp_path):
    from serving.release import InputSpec  # noqa: PLC0415 - as the traffic does

    pipeline_run.tiny_fashion_mnist(tmp_path, tmp_path / "none", train=20, test=30)
    spec = InputSpec("images", 1, 28, 28, (0.5,), (0.25,), "probabilities", tuple(traffic.FASHION_MNIST_CLASSES))
    assert "(30 images; skewed phase: 'Trouser' only)" in traffic.load_images(spec, tmp_path).source
    other = InputSpec("images", 1, 28, 28, (0.5,), (0.25,), "probabilities", tuple(f"c{k}" for k in range(10)))
    assert traffic.load_images(other, tmp_path).source.startswith("random normalised tensors")


def test_the_pipeline_run_draws_a_random_subset_of_the_real_data(tmp_path):
    pipeline_run.tiny_fashion_mnist(tmp_path / "real", tmp_path / "none", train=200, test=100)
    pipeline_run.tiny_fashion_mnist(tmp_path / "tiny", tmp_path / "real", train=20, test=10)
    real, tiny = read_fashion_mnist(tmp_path / "real"), read_fashion_mnist(tmp_path / "tiny")
    assert tiny.train_images.shape == (20, 28, 28, 1) and tiny.test_labels.shape == (10,)
    assert not np.array_equal(tiny.train_images, real.train_images[:20])
    rows = {image.tobytes() for image in real.train_images}
    assert all(image.tobytes() in rows for image in tiny.train_images)


def test_a_local_server_is_stopped_whatever_happens_and_must_exit_cleanly(tmp_path, monkeypatch):
    """SIGTERM, then SIGKILL after the timeout: a server that had to be killed is a LocalError; one that exits before
    it is ready is one at once, ending with its log; a failing body still stops it."""
    stop = local.stop
    monkeypatch.setattr(local, "stop", lambda process: stop(process, timeout=1))
    log = tmp_path / "server.log"
    log.write_text("x" * 5000 + "the end")
    stubborn = "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('up', flush=True); " \
               "time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", stubborn], stdout=subprocess.PIPE)
    process.stdout.readline()
    killed = r"(?s)did not shut down cleanly on SIGTERM: had to be killed\n.*the end$"
    with pytest.raises(local.LocalError, match=killed), local.supervised(process, "server", log):
        pass
    assert process.returncode is not None and len(local.tail(log)) == 3000
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(RuntimeError), local.supervised(process, "server", log):
        raise RuntimeError("the body failed")
    assert process.poll() is not None
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    with pytest.raises(local.LocalError, match="server exited with 3 before it was ready"):
        local.wait_until(f"http://127.0.0.1:{local.free_port()}/-/ready", process, "server", log, timeout=5)


def test_a_local_server_must_exit_0_on_sigterm_and_is_stopped_when_interrupted(tmp_path):
    """Only an exit code of 0 on SIGTERM is a clean stop; a body stopped by Ctrl-C (a BaseException, not an
    Exception) still stops the server."""
    log = tmp_path / "server.log"
    failing = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(3)); " \
              "print('up', flush=True); time.sleep(60)"
    process = subprocess.Popen([sys.executable, "-c", failing], stdout=subprocess.PIPE)
    process.stdout.readline()
    with pytest.raises(local.LocalError, match="server did not shut down cleanly on SIGTERM: exited with 3"), \
            local.supervised(process, "server", log):
        pass
    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    with pytest.raises(KeyboardInterrupt), local.supervised(process, "server", log):
        raise KeyboardInterrupt
    alive = process.poll() is None
    process.kill()
    process.wait()
    assert not alive


def test_a_local_server_is_ready_when_it_answers_200_and_not_ready_in_time_is_an_error(tmp_path, monkeypatch):
    """``wait_until`` polls until the URL answers 200 (Prometheus answers 503 while it starts; refused connections
    are retried); a server not ready after ``timeout`` seconds is a LocalError naming the URL, ending with its log."""
    log = tmp_path / "server.log"
    log.write_text("the end")
    answers = iter([httpx.ConnectError("refused"), 503, 404, 200])

    def get(url: str, timeout: float) -> httpx.Response:
        answer = next(answers)
        if isinstance(answer, Exception):
            raise answer
        return httpx.Response(answer)

    process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        monkeypatch.setattr(local.httpx, "get", get)
        local.wait_until("http://server/-/ready", process, "server", log, timeout=10)
        assert next(answers, "none left") == "none left"
        monkeypatch.setattr(local.httpx, "get", lambda url, timeout: httpx.Response(503))
        with pytest.raises(local.LocalError, match=r"(?s)^server was not ready after 1 s \(http://server/-/ready\):"
                                                   r"\n.*the end$"):
            local.wait_until("http://server/-/ready", process, "server", log, timeout=1)
    finally:
        local.stop(process, timeout=1)


def test_a_local_predictor_takes_two_different_free_ports_never_8081_and_an_absolute_release(tmp_path, monkeypatch):
    """``python -m serving`` on a free HTTP port and a free gRPC port, never KServe's default 8081 and never the
    other one; the release's path resolved (the predictor runs in the repository root); options as flags."""
    started, real_popen = [], subprocess.Popen

    def popen(argv, **kwargs):
        started.append(argv)
        return real_popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def ports(*numbers):
        monkeypatch.setattr(local, "free_port", iter(numbers).__next__)

    monkeypatch.setattr(local.subprocess, "Popen", popen)
    monkeypatch.setattr(local, "wait_until", lambda *args: None)
    monkeypatch.setattr(local, "stop", lambda process: process.kill() or 0)
    monkeypatch.chdir(tmp_path)
    ports(7000, 7000, 7001)
    with local.predictor_process(Path("release"), tmp_path / "log", model_name="x") as (url, _):
        assert url == "http://127.0.0.1:7000"
    ports(7000, 7002)
    with local.predictor(Path("release"), tmp_path / "log", grpc_port=7000) as url:
        assert url == "http://127.0.0.1:7002"
    assert [argv[argv.index("--grpc_port") + 1] for argv in started] == ["7001", "7000"]
    assert started[0][started[0].index("--model") + 1] == str((tmp_path / "release").resolve())
    assert started[0][-1] == "--model-name=x"


def test_the_queries_ask_prometheus_for_the_range_with_the_variables_filled_and_report_a_refusal():
    asked = []

    def answer(request: httpx.Request) -> httpx.Response:
        asked.append((request.url.path, dict(request.url.params)))
        expr = request.url.params["query"]
        if expr == "refused":
            return httpx.Response(400, json={"status": "error", "error": "parse error"})
        if expr == "warned":
            return httpx.Response(200, json={"status": "error", "error": "too many samples"})
        series = [] if expr.startswith("up") else [{"metric": {}, "values": [[1, "1"]]}]
        return httpx.Response(200, json={"status": "success", "data": {"result": series}})

    board = dashboard.build()
    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        collected = query.collect(client, "http://prom", board, start=10.0, end=70.0, step=2.0,
                                  variables=check.VARIABLES | {"model": "m"})
        assert [panel["title"] for panel in collected] == [panel["title"] for panel in query.panels(board)]
        assert "row" not in {panel["type"] for panel in collected}
        first = board["panels"][1]["targets"][0]
        assert asked[0] == ("/api/v1/query_range", {"query": check.fill_variables(first["expr"], check.VARIABLES
                                                                                  | {"model": "m"}),
                                                    "start": "10.000", "end": "70.000", "step": "2"})
        for expr, message in (("refused", "HTTP 400: parse error"), ("warned", "HTTP 200: too many samples")):
            with pytest.raises(query.PrometheusError, match=f"query_range '{expr}': {message}"):
                query.query_range(client, "http://prom", expr, 0, 1, 1)
        asked.clear()
        with pytest.raises(query.PrometheusError, match=r"prometheus had not scraped the predictor \(job j\)"):
            query.wait_for_scrape(client, "http://prom", "j", timeout=0.5)
        assert asked[0] == ("/api/v1/query", {"query": 'up{job="j"} == 1'})


def test_prometheus_scrapes_the_predictor_and_the_pushgateway_with_honor_labels():
    config = yaml.safe_load(pushgateway_config("127.0.0.1:9091", config=local.prometheus_config(
        ["127.0.0.1:8080"], job_name="podMonitor/mlnt/mlnt-classifier/0", job="mlnt/mlnt-classifier")))
    predictor, gateway = config["scrape_configs"]
    assert predictor["static_configs"] == [{"targets": ["127.0.0.1:8080"]}] and "honor_labels" not in predictor
    assert predictor["relabel_configs"] == [{"target_label": "job", "replacement": "mlnt/mlnt-classifier"}]
    assert gateway == {"job_name": JOB_NAME, "honor_labels": True, "static_configs": [{"targets": ["127.0.0.1:9091"]}]}
    assert config["rule_files"] and config["global"]["scrape_interval"] == "1s"


def test_a_short_real_snapshot_of_a_tiny_release(tmp_path):
    assert shutil.which("prometheus"), "expected the prometheus server on PATH (make system installs it), found none"
    release, _ = write_release(tmp_path / "release")
    png, out = tmp_path / "dashboard.png", tmp_path / "snapshot.json"
    assert snapshot.main(["--model", str(release), "--output", str(png), "--seconds", "10",
                          "--pipeline-images", "300", "--pipeline-epochs", "1"]) == 0
    assert png.read_bytes().startswith(PNG)
    taken = json.loads(out.read_text())
    assert [panel["title"] for panel in taken["panels"]] == [panel["title"] for panel in query.panels(
        dashboard.build())]
    assert [phase["name"] for phase in taken["phases"]] == [phase.name for phase in traffic.PHASES]
    assert taken["predictor"]["client_header"] == "x-forwarded-for" and taken["users"] == traffic.USERS

    def values(title: str, **labels: str) -> list[float]:
        """The panel's finite values (a ratio of rates is NaN while the predictor is idle, as before the traffic)."""
        panel = next(p for p in taken["panels"] if p["title"] == title)
        return [float(v) for target in panel["targets"] for item in target["result"]
                if labels.items() <= item["metric"].items() for _, v in item["values"] if math.isfinite(float(v))]

    def last(title: str, **labels: str) -> float:
        return max(values(title, **labels), default=float("nan"))

    def label_sets(title: str, *names: str) -> set[tuple[str, ...]]:
        panel = next(p for p in taken["panels"] if p["title"] == title)
        return {tuple(item["metric"].get(name, "") for name in names) for target in panel["targets"]
                for item in target["result"]}

    assert last("Request rate by outcome", protocol="v2", outcome="ok") > 0
    assert last("Request rate by outcome", protocol="v2", outcome="client_error") > 0
    assert last("Feedback labels per hour") > 0
    assert last("Prediction drift") > 0
    assert last("Batch size") > 1  # batches of 1 and 16
    assert last("Stage latency p50 / p95 (KServe)") > 0  # KServe's own histograms, selected by model_name
    assert any(key.startswith("bad: ") for key in taken["sent"]) and taken["sent"].get("v2 batch 16 200", 0) > 0

    # The Training row: what the pipeline's steps pushed to the Pushgateway, scraped with their own labels.
    assert taken["training"]["steps"] == list(pipeline_run.PIPELINE) and taken["training"]["epochs"] == 1
    assert taken["prometheus"]["pushgateway"] == {"job_name": JOB_NAME, "honor_labels": True}
    assert taken["training"]["pushgateway_job"] == PUSHGATEWAY_JOB
    assert {("evaluate", "teacher", "test"), ("evaluate", "student", "test"), ("evaluate", "baseline", "test"),
            ("mlnt", "teacher", "val"), ("baseline", "baseline", "val")} <= label_sets("Accuracy", "step", "model",
                                                                                        "split")
    assert values("Accuracy") and all(0 <= value <= 1 for value in values("Accuracy"))
    assert label_sets("Step duration", "step") == {(step,) for step in pipeline_run.PUSHING_STEPS}
    assert all(value > 0 for value in values("Step duration"))
    assert 0 < last("Estimated noise rate") < 1
    assert set(values("Release gate")) <= {0.0, 1.0} and values("Release gate")
    if last("Release gate") == 1:  # only a gate that passed stamps a successful run
        assert 0 < last("Since the last successful run") < 600
    else:
        assert values("Since the last successful run") == []


def test_the_committed_snapshot_answers_the_dashboards_queries():
    """docs/monitoring/snapshot.json holds the answers to the dashboard as it is: a panel added, removed or given
    another query since the snapshot was taken would be drawn in docs/monitoring/dashboard.png with old answers, or
    not at all. Take it again (docs/monitoring.md names the command) after changing monitoring/dashboard.py."""
    recorded = json.loads((ROOT / "docs" / "monitoring" / "snapshot.json").read_text())
    board = dashboard.build()
    expected = {panel["title"]: [target["expr"] for target in panel["targets"]] for panel in query.panels(board)}
    found = {panel["title"]: [target["expr"] for target in panel["targets"]] for panel in recorded["panels"]}
    assert found == expected, ("docs/monitoring/snapshot.json answers other queries than monitoring/dashboard.py "
                               "asks: take the snapshot again (python -m monitoring.snapshot --model releases/latest "
                               "--output docs/monitoring/dashboard.png --minutes 3; python -m docs.generate)")
