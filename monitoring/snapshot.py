"""The dashboard's queries on a real Prometheus, rendered into one PNG (there is no Grafana here).

    python -m monitoring.snapshot --model releases/latest --output docs/monitoring/dashboard.png [--minutes 3]
    python -m monitoring.snapshot --from-json docs/monitoring/snapshot.json --output dashboard.png  # render only

The command; each part is a module of its own. ``take``:

1. starts the predictor (``python -m serving``) for the release, a Pushgateway and a real Prometheus scraping
   both (``monitoring.local``, ``monitoring.pushgateway``: scrape and rule evaluation every second,
   ``monitoring/rules/mlnt.rules.yml``, the PodMonitor's job label for the predictor, ``honor_labels`` for the
   Pushgateway), all on free loopback ports;
2. runs the project's pipeline (``ingest`` .. ``gate``, ``monitoring.pipeline_run``) once in a temporary folder on
   a tiny Fashion-MNIST (``--pipeline-images`` training images of the real data, or synthetic ones without it) with
   short training (``--pipeline-epochs``) and ``MLNT_PUSHGATEWAY`` pointing at the Pushgateway: what its steps
   push fills the dashboard's Training row (``--no-pipeline`` leaves the row empty); the release served is still
   ``--model``;
3. drives scripted, synthetic traffic for ``--minutes`` (``monitoring.traffic``): normal Fashion-MNIST test images
   (random tensors if the data or the model's input shape does not fit), then one class's images only, a burst of
   client errors, and label feedback of which half disagrees at the end; v2 batches of 1 and 16 and some v1
   requests; from a population of users behind a gateway (``X-Forwarded-For``), which the predictor, started with
   the ServingRuntime's ``--client-header x-forwarded-for --trusted-proxy-hops 1``, tells apart as in the cluster;
4. asks ``/api/v1/query_range`` for every panel query of the dashboard (``monitoring.query``;
   ``monitoring.dashboard.build()``, template variables replaced as ``monitoring.check`` does, ``$model`` by the
   served model and ``$__rate_interval`` by ``--rate-interval``), and ``main`` writes the answers to ``--json``
   (default: ``snapshot.json`` beside the PNG);
5. stops the servers (SIGTERM, then SIGKILL after a timeout), whatever happened.

``main`` then renders the answers laid out like the dashboard (``monitoring.render``): one subplot per panel on its
grid position, with its title, unit, legend, threshold line and value range.

The whole run is bounded: at most ``monitoring.traffic.MAX_SECONDS`` of traffic,
``monitoring.pipeline_run.PIPELINE_TIMEOUT`` of pipeline (about 30 s by default on two CPU cores) and about half a
minute to start and stop.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx

from components.common.atomic import write_text
from monitoring import check, dashboard, local, query, render
from monitoring.local import PODMONITOR_JOB, PODMONITOR_JOB_NAME, LocalError, free_port, predictor, prometheus
from monitoring.metrics import PUSHGATEWAY_JOB
from monitoring.pipeline_run import (
    PIPELINE,
    PIPELINE_EPOCHS,
    PIPELINE_IMAGES,
    PUSHING_STEPS,
    PipelineError,
    run_pipeline,
)
from monitoring.pushgateway import JOB_NAME as PUSHGATEWAY_SCRAPE_JOB
from monitoring.pushgateway import prometheus_scraping, pushgateway
from monitoring.traffic import DATA, MAX_SECONDS, PREDICTOR_OPTIONS, Traffic, drive, load_images
from serving.release import ReleaseError, load_release

MODEL_NAME = "mlnt-classifier"
RATE_INTERVAL = "20s"  # what $__rate_interval becomes
DRIFT_WINDOW = 500  # the predictor's --drift-window: the drift gauge follows a phase within seconds
MAX_POINTS = 150  # per series in query_range


class SnapshotError(Exception):
    """The snapshot could not be taken; the message says which step and why."""


def take(release: Path, seconds: float, *, name: str = MODEL_NAME, rate_interval: str = RATE_INTERVAL,
         data: Path = DATA, workdir: Path | None = None, log: Callable[[str], None] = print, pipeline: bool = True,
         pipeline_images: int = PIPELINE_IMAGES, pipeline_epochs: int = PIPELINE_EPOCHS) -> dict:
    """Serve ``release``, run the pipeline once (unless not ``pipeline``), drive the traffic for ``seconds``, query
    Prometheus: the snapshot (JSON-ready). A ``SnapshotError`` says which part failed and why."""
    began = time.monotonic()

    def say(message: str) -> None:
        log(f"snapshot [{time.monotonic() - began:5.1f} s]: {message}")

    try:
        loaded = load_release(release)
    except ReleaseError as error:
        raise SnapshotError(f"release: {error}") from None
    images = load_images(loaded.spec, data)
    say(f"serving {release} ({loaded.version}); inputs: {images.source}")
    board = dashboard.build()
    with tempfile.TemporaryDirectory(prefix="mlnt-snapshot-") as folder:
        logs = Path(workdir or folder)
        try:
            port = free_port()  # known before the predictor starts, so that both start at once
            config = local.prometheus_config([f"127.0.0.1:{port}"], job_name=PODMONITOR_JOB_NAME, job=PODMONITOR_JOB)
            with contextlib.ExitStack() as servers:
                gateway = servers.enter_context(pushgateway(logs / "pushgateway")) if pipeline else None
                prom = servers.enter_context(
                    prometheus_scraping(gateway, logs / "prometheus", config=config) if gateway
                    else prometheus(f"127.0.0.1:{port}", logs / "prometheus"))
                url = servers.enter_context(predictor(release, logs / "predictor.log", port=port, model_name=name,
                                                      drift_window=DRIFT_WINDOW, **PREDICTOR_OPTIONS))
                client = servers.enter_context(httpx.Client(timeout=30))
                say(f"predictor {url}, prometheus {prom}" + (f" and pushgateway {gateway}" if gateway else "")
                    + " ready")
                training = None
                if gateway:
                    say(f"the pipeline ({' .. '.join((PIPELINE[0], PIPELINE[-1]))}, {pipeline_epochs} epochs) "
                        f"pushing to {gateway}")
                    training = run_pipeline(logs / "pipeline", gateway, images=pipeline_images,
                                            epochs=pipeline_epochs, data=data)
                    say(f"the pipeline ran in {training['seconds']:g} s on {training['data']}")
                    query.wait_for(client, prom, f'count(mlnt_training_duration_seconds{{job="{PUSHGATEWAY_JOB}"}}) '
                                   f">= {len(PUSHING_STEPS)}", "scraped the pipeline's pushes from the pushgateway")
                query.wait_for_scrape(client, prom, PODMONITOR_JOB)
                start = time.time() - 2
                traffic = Traffic(client, url, name, images, len(loaded.spec.class_names))
                phases = drive(traffic, seconds, say)
                time.sleep(2.5)  # the last requests scraped and the rules evaluated on them
                end = time.time()
                step = max(1.0, math.ceil((end - start) / MAX_POINTS))
                variables = check.VARIABLES | {"model": name, "__rate_interval": rate_interval,
                                               "__interval": f"{step:g}s", "__range": f"{round(end - start)}s"}
                recorded = query.collect(client, prom, board, start=start, end=end, step=step, variables=variables)
                say(f"{sum(len(panel['targets']) for panel in recorded)} queries answered; stopping the servers")
        except (LocalError, PipelineError, query.PrometheusError, check.CheckError) as error:
            raise SnapshotError(str(error)) from None
    say("stopped")
    return {"title": board["title"], "taken_at": dt.datetime.fromtimestamp(end, dt.UTC).isoformat(timespec="seconds"),
            "model": {"name": name, "version": loaded.version, "release": str(release),
                      "calibration": loaded.card.get("calibration")},  # docs/monitoring.md quotes it
            "prometheus": {"scrape_interval": "1s", "evaluation_interval": "1s", "job": PODMONITOR_JOB,
                           "rules": "monitoring/rules/mlnt.rules.yml",
                           "pushgateway": {"job_name": PUSHGATEWAY_SCRAPE_JOB, "honor_labels": True} if training
                           else None},
            "predictor": {"drift_window": DRIFT_WINDOW, **PREDICTOR_OPTIONS}, "users": len(traffic.users),
            "training": training, "inputs": images.source,
            "range": {"start": start, "end": end, "step": step}, "variables": variables, "phases": phases,
            "sent": dict(sorted(traffic.sent.items())), "panels": recorded,
            "wall_seconds": round(time.monotonic() - began, 1)}  # all but the rendering


def get_args_parser() -> argparse.ArgumentParser:
    """The command line: ``--model`` (take a snapshot) or ``--from-json`` (render one again), and ``--output``."""
    parser = argparse.ArgumentParser(prog="python -m monitoring.snapshot", description=__doc__.splitlines()[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", type=Path, help="the release folder to serve (model.onnx, model_card.json)")
    source.add_argument("--from-json", type=Path, help="render a snapshot.json again, without any server")
    parser.add_argument("--output", type=Path, required=True, help="the PNG to write")
    parser.add_argument("--json", type=Path, help="where the query results go (default: snapshot.json beside it)")
    duration = parser.add_mutually_exclusive_group()
    duration.add_argument("--minutes", type=float, help="traffic duration (default 3)")
    duration.add_argument("--seconds", type=float, help="traffic duration in seconds")
    parser.add_argument("--model-name", default=MODEL_NAME, help="the served model's name")
    parser.add_argument("--rate-interval", default=RATE_INTERVAL, help="what $__rate_interval becomes")
    parser.add_argument("--data", type=Path, default=DATA,
                        help="the Fashion-MNIST folder (test images for the traffic, a subset for the pipeline run)")
    parser.add_argument("--pipeline-images", type=int, default=PIPELINE_IMAGES,
                        help=f"training images of the pipeline run (default {PIPELINE_IMAGES}; a quarter as many "
                             "test images, at least 100)")
    parser.add_argument("--pipeline-epochs", type=int, default=PIPELINE_EPOCHS,
                        help=f"epochs of the run's baseline and MLNT (default {PIPELINE_EPOCHS})")
    parser.add_argument("--no-pipeline", action="store_true",
                        help="no pipeline run and no Pushgateway: the Training row stays empty")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Take a snapshot (writing its JSON) or read one, then render it to ``--output``; 0, or 1 or 2 on an error."""
    args = get_args_parser().parse_args(argv)
    seconds = args.seconds if args.seconds is not None else 60 * (args.minutes if args.minutes is not None else 3)
    if not 5 <= seconds <= MAX_SECONDS:
        print(f"monitoring.snapshot: expected 5 to {MAX_SECONDS} seconds of traffic, found {seconds:g}",
              file=sys.stderr)
        return 2
    try:
        if args.from_json:
            snapshot = json.loads(args.from_json.read_text())
        else:
            snapshot = take(args.model, seconds, name=args.model_name, rate_interval=args.rate_interval,
                            data=args.data, pipeline=not args.no_pipeline, pipeline_images=args.pipeline_images,
                            pipeline_epochs=args.pipeline_epochs)
            out = args.json or args.output.with_name("snapshot.json")
            write_text(out, json.dumps(snapshot, indent=1) + "\n")  # creates the folder; a crash leaves the old file
            print(f"wrote {out}")
    except (SnapshotError, OSError, ValueError) as error:
        print(f"monitoring.snapshot: {error}", file=sys.stderr)
        return 1
    print(f"wrote {render.save(render.render(dashboard.build(), snapshot), args.output)}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
