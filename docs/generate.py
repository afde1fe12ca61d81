"""The generated blocks of docs/serving.md and docs/monitoring.md, rendered from data recorded in the repository.

    python -m docs.generate                           # rewrite every block from the recorded data (`make docs`)
    python -m docs.generate --check                   # exit 1, naming each stale block, if a doc differs
    python -m docs.generate --record releases/latest  # record a release first (serves it: needs artifacts/ too)

Each block sits between ``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` (the markers of docs/reliability.md);
the prose around it is the doc's own. Every figure in a block is a field of its data, or a simple function of
fields (a minimum, a difference); nothing is typed in by hand.

- ``serving-response`` (docs/serving.md): ``docs/release/v1_response.json``, a v1 answer of the served release;
- ``serving-runtime`` (docs/serving.md): ``benchmarks/results.json`` (``make bench``);
- ``monitoring-snapshot`` (docs/monitoring.md): ``docs/monitoring/snapshot.json`` (``python -m monitoring.snapshot``)
  and the served release's card, ``docs/release/model_card.json``.

``--record RELEASE`` copies the release's ``model_card.json`` and ``decision.json`` into ``docs/release/``, serves
it (``python -m serving`` on a free loopback port) and records its answer to a v1 request with the first image of
``artifacts/ingest/test.npz`` as a PNG: what docs/serving.md's example sends.
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import io
import json
import math
import re
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from components.common.atomic import write_atomic

ROOT = Path(__file__).resolve().parent.parent
RELEASE = Path("docs/release")  # the recorded release: model_card.json, decision.json, v1_response.json
SNAPSHOT = Path("docs/monitoring/snapshot.json")
SNAPSHOT_COMMAND = "python -m monitoring.snapshot --model releases/latest --output docs/monitoring/dashboard.png"
BENCH = Path("benchmarks/results.json")
TEST_SET = Path("artifacts/ingest/test.npz")
MODEL_NAME = "mlnt-classifier"
PLACES = 4  # of the probabilities shown
MARKED = re.compile(r"<!-- generated: (?P<name>[\w-]+) -->\n(?P<body>.*?)<!-- end: (?P=name) -->", re.S)


class GenerateError(Exception):
    """A block cannot be rendered: the message names the doc, the block or the data, and what was expected."""


@dataclass(frozen=True)
class Block:
    doc: Path
    sources: tuple[Path, ...]
    render: Callable[[Path], str]  # the repository root -> the block's text, ending in a newline


# --- the data ----------------------------------------------------------------------------------------------


def load(root: Path, path: Path) -> dict:
    try:
        return json.loads((root / path).read_text())
    except OSError as err:
        raise GenerateError(f"{path}: expected recorded data, found {err.strerror.lower()}") from None
    except ValueError as err:
        raise GenerateError(f"{path}: expected JSON, found invalid JSON ({err})") from None


def release_card(root: Path, version: str, *, fix: str = "") -> dict:
    """The recorded release's model card; a ``GenerateError`` if the recorded release is not ``version``."""
    recorded = load(root, RELEASE / "decision.json").get("version")
    if recorded != version:
        raise GenerateError(f"{RELEASE}: expected the release {version}, found {recorded}"
                            + (f"; {fix}" if fix else ""))
    return load(root, RELEASE / "model_card.json")


# --- serving-response ----------------------------------------------------------------------------------------


def serving_response(root: Path) -> str:
    recorded = load(root, RELEASE / "v1_response.json")
    release_card(root, recorded["version"], fix="record the release again with `python -m docs.generate --record "
                 "releases/latest`")  # the card beside the answer is the same release's
    lines = []
    for i, p in enumerate(recorded["response"]["predictions"]):
        head = {key: _rounded(p[key]) for key in p if key != "probabilities"}
        probabilities = json.dumps(_rounded(p["probabilities"]))
        opening = '{"predictions": [' if i == 0 else "                 "
        lines += [f"{opening}{json.dumps(head)[:-1]},", f'                  "probabilities": {probabilities}}}']
    lines[-1] += "]}"
    image = recorded["image"]
    return _text(["```json", *lines, "```", "",
                  f"(the release `{recorded['version']}` on the test image above, image {image['index']} of "
                  f"`{image['source']}`, labelled `{image['label']}`; probabilities rounded to {PLACES} places here. "
                  "The whole answer is recorded in [release/v1_response.json](release/v1_response.json), with the "
                  "release's card beside it, by `python -m docs.generate --record releases/latest`.)"])


def _rounded(value):
    if isinstance(value, float):
        return round(value, PLACES)
    if isinstance(value, list):
        return [_rounded(v) for v in value]
    return value


# --- serving-runtime -----------------------------------------------------------------------------------------


def serving_runtime(root: Path) -> str:
    bench = load(root, BENCH)
    inference = {r["batch"]: r for r in bench["inference"]["results"]}
    served = {r["batch"]: r for r in bench["serving"]["results"]}
    batch = max(set(inference) & set(served))
    latency = served[batch]["latency_ms"]["p50"]
    onnx = inference[batch]["onnxruntime_ms"]
    threads = bench["inference"]["threads"]
    return _text([f"- At batch {batch} most of a request's time goes to JSON: FastAPI and KServe decode the "
                  f"{batch * math.prod(bench['serving']['input_shape']):,} numbers into Python lists (KServe 0.21 "
                  "does so for the binary tensor extension too), while onnxruntime itself takes "
                  f"{onnx:.1f} ms for the batch on {threads} thread{'s' if threads != 1 else ''}, against a median "
                  f"request latency of {latency:.0f} ms with {bench['serving']['clients']} clients (`make bench`, "
                  f"below; run of {measured(bench, 'serving')}). Encoded images are the smallest requests."])


def measured(bench: dict, section: str) -> str:
    """When ``section`` of the benchmark results was measured: the last ``--sections`` rerun of it, else the whole
    run's end."""
    again = [rerun["finished"] for rerun in bench.get("reruns", []) if section in rerun["sections"]]
    return again[-1] if again else bench["finished"]


# --- monitoring-snapshot -------------------------------------------------------------------------------------


def monitoring_snapshot(root: Path) -> str:
    snap = load(root, SNAPSHOT)
    model = snap["model"]
    calibration = _calibration(root, model)
    first, last = snap["phases"][0]["start"], snap["phases"][-1]["end"]
    start, end = (dt.datetime.fromtimestamp(t, dt.UTC) for t in (first, last))
    phases = {p["name"]: p for p in snap["phases"]}
    traffic = last - first
    lines = [f"![The dashboard's queries answered by Prometheus after a short pipeline run and {traffic / 60:.0f} "
             "minutes of synthetic traffic](monitoring/dashboard.png)", "",
             "*Generated by `python -m docs.generate` (`make docs`) from [snapshot.json](monitoring/snapshot.json) "
             "and the served release's [model card](release/model_card.json); do not edit by hand.*", "",
             f"Produced on {start:%Y-%m-%d} (traffic {start:%H:%M:%S}–{end:%H:%M:%S} UTC) against "
             f"`{model['release']}` ({model['version']}) with", "", "```",
             f"python -m monitoring.snapshot --model {model['release']} --output docs/monitoring/dashboard.png "
             f"--minutes {round(traffic / 60, 1):g}", "```", "",
             f"{_timing(snap, traffic)} {_training(snap)} **The traffic is synthetic**: {_clients(snap)}, about "
             f"{sum(snap['sent'].values()) / traffic:.0f} actions a second, in {len(phases)} phases that are shaded "
             "in the image:", ""]
    lines += [f"{i}. {_phase(snap, phase)}" for i, phase in enumerate(snap["phases"], 1)]
    lines += ["", _totals(snap) + f" The one-hour panels only cover these {traffic / 60:.0f} minutes. "
              + _confidence(snap, calibration)]
    return _text(lines)


def _calibration(root: Path, model: dict) -> dict | None:
    """The served release's ``card["calibration"]``: recorded in the snapshot, or (snapshots taken before it was)
    in the recorded release's card, which must then be the same release."""
    if "calibration" in model:
        return model["calibration"]
    fix = f"take the snapshot again ({SNAPSHOT_COMMAND})"
    return release_card(root, model["version"], fix=fix).get("calibration")


def _timing(snap: dict, traffic: float) -> str:
    from monitoring.traffic import MAX_SECONDS  # noqa: PLC0415 - httpx and numpy load only for this block

    run = snap.get("training")
    parts = " and ".join(([f"{run['seconds']:g} s of pipeline"] if run else []) + [f"{traffic:.0f} s of traffic"])
    limit = f"at most {MAX_SECONDS / 60:g} minutes of traffic are accepted"
    if "wall_seconds" in snap:
        return (f"It took {snap['wall_seconds']:.0f} s of wall time: {parts}, the rest starting, querying and "
                f"stopping the servers ({limit}).")
    return f"It took {parts}, besides starting, querying and stopping the servers and rendering ({limit})."


def _training(snap: dict) -> str:
    run = snap.get("training")
    if not run:
        return "No pipeline ran (`--no-pipeline`): the Training row is empty."
    accuracy = [v for s in _series(snap, "Accuracy") for _, v in s[1]]
    durations = {s[0]["step"]: s[1][-1][1] for s in _series(snap, "Step duration")}
    (noise,) = (s[1][-1][1] for s in _series(snap, "Estimated noise rate"))
    (gate,) = (s[1][-1][1] for s in _series(snap, "Release gate"))
    since = [s[1][-1][1] for s in _series(snap, "Since the last successful run")]  # none unless a gate passed
    steps = ", ".join(f"{step} {durations[step]:.2g} s" for step in run["pushing"] if step in durations)
    return (f"**The pipeline run is tiny**: {run['data']}, `{run['network']}`, {run['epochs']} epochs of baseline "
            f"and MLNT, `{run['noise']['kind']}` noise at rate {run['noise']['rate']:g}, and the gate's bar lowered to "
            f"{_pct(run['gate_min_accuracy'])} for so short a run (`--pipeline-images`, `--pipeline-epochs`; "
            "`--no-pipeline` leaves the Training row empty). Its model is not the one served: the row shows its "
            f"pushes — accuracy {min(accuracy):.2f} to {max(accuracy):.2f} for every network and split, step "
            f"durations {steps}, an estimated noise rate of {_pct(noise, 1)}, the gate "
            f"{'passed' if gate == 1 else 'failed'} — as flat lines, since a Pushgateway keeps the last push of each "
            "step, and *Since the last successful run* "
            + (f"counts up to {since[0]:.0f} s since the gate's push." if since else
               "stays empty: only a gate that passes stamps a success."))


def _phase(snap: dict, phase: dict) -> str:
    name, seconds = phase["name"], phase["end"] - phase["start"]
    during = lambda series: [v for t, v in series if phase["start"] <= t <= phase["end"]]  # noqa: E731
    before = lambda series: [v for t, v in series if t <= phase["start"]]  # noqa: E731
    if name == "normal":
        batches = sorted({int(m[1]) for key in snap["sent"] if (m := re.match(r"v2 batch (\d+) ", key))})
        what = (f"Fashion-MNIST test images of every class, normalised with the card's mean and std, as v2 "
                f"requests of {' and '.join(map(str, batches))} images and some v1 requests of one; now and then "
                "feedback for kept predictions with their true labels;")
    elif name == "skewed":
        mix = {s[0]["class"]: max(during(s[1]), default=0.0) for s in _series(snap, "Predicted-class mix")}
        ((_, drift),) = _series(snap, "Prediction drift")
        limit, high = _limit("Prediction drift"), max(during(drift))
        what = (f"only `{max(mix, key=mix.get)}` images — the predicted-class mix turns to one class and the drift "
                f"gauge climbs from {before(drift)[-1]:.2f} to {high:.2f}, "
                f"{'over' if high > limit else 'under'} the {limit:g} threshold;")
    elif name == "bad requests":
        errors = {labels["protocol"]: max(during(points), default=0.0)
                  for labels, points in _series(snap, "Request rate by outcome") if labels["outcome"] == "client_error"}
        rising = sorted(protocol for protocol, peak in errors.items() if peak > 0)
        ((_, server),) = _series(snap, "Server-error ratio")
        what = ("normal traffic in which half of the requests are client errors (wrong shape, wrong datatype, "
                f"malformed JSON, unknown model name): the {' and '.join(map('`{}`'.format, rising))} "
                f"`client_error` rate rises to {max(errors.values()):.1f} a second while the server-error ratio "
                f"stays at {max(during(server)):g};")
    elif name == "disagreeing feedback":
        ((_, ratio),) = _series(snap, "Label disagreement (last hour)")
        what = ("normal traffic, but half of the feedback labels are wrong, as from a client that maps class "
                f"names wrongly: the one-hour disagreement ratio climbs from {_pct(before(ratio)[-1])} to "
                f"{_pct(ratio[-1][1])}.")
    else:
        what = phase["description"] + ";"
    return f"*{name}* ({seconds:.0f} s): {what}"


def _clients(snap: dict) -> str:
    """Who sent the traffic: one client, or (newer snapshots) a population of users behind one gateway."""
    users = snap.get("users")
    if not users:
        return "one client"
    return (f"{users} users behind one gateway (each request carries one of their addresses in "
            f"`X-Forwarded-For`, which the predictor trusts as the ServingRuntime configures it)")


def _totals(snap: dict) -> str:
    # "<kind> <status>": n, where one kind may have several statuses (feedback: 200 and 429)
    sent = [(key.rsplit(" ", 1)[0], int(key.rsplit(" ", 1)[1]), n) for key, n in snap["sent"].items()]
    inference = [(kind, status, n) for kind, status, n in sent if re.match(r"v\d batch ", kind)]
    ok = sum(n for _, status, n in inference if status == 200)
    failed = sum(n for _, status, n in inference if status != 200)
    batches = {int(kind.rsplit(" ", 1)[1]) for kind, _, _ in inference}
    largest = sum(n for kind, status, n in inference if status == 200 and int(kind.rsplit(" ", 1)[1]) == max(batches))
    bad = sum(n for kind, _, n in sent if kind.startswith("bad: "))
    feedback = sum(n for kind, status, n in sent if kind == "feedback" and status == 200)
    return (f"In all, {ok} successful inference requests ({largest} of them with {max(batches)} images)"
            + (f", {failed} failed ones" if failed else "") + f", {bad} client errors and {feedback} feedback posts.")


def _confidence(snap: dict, calibration: dict | None) -> str:
    ((_, mean),) = _series(snap, "Mean top-1 confidence")
    values = [v for _, v in mean]
    limit, low = _limit("Mean top-1 confidence"), min(values)
    said = (f"The mean top-1 confidence of this release stays between {_pct(low)} and {_pct(max(values))}, "
            f"{'above' if low > limit else 'at times below'} the {_pct(limit)} of `MlntLowConfidence`")
    if not calibration:
        return said + "; its card records no calibration."
    t = calibration["temperature"]
    on_test = (f", and on the clean test set, which no choice was made on, from {calibration['test_ece_before']:.3f} "
               f"to {calibration['test_ece_after']:.3f}" if "test_ece_after" in calibration else "")
    return (said + f". Its export calibrated it by temperature scaling, fitted on the {calibration['fitted_on']} "
            "and baked into the ONNX graph, predictions unchanged: validation ECE from "
            f"{calibration['val_ece_before']:.3f} to {calibration['val_ece_after']:.3f} at T = {t:.2f}{on_test} "
            "(`card[\"calibration\"]` in the [release's card](release/model_card.json)). Uncalibrated, the network "
            f"was {'under' if t < 1 else 'over'}-confident: T {'<' if t < 1 else '>'} 1 "
            f"{'sharpens' if t < 1 else 'flattens'} its softmax.")


def _series(snap: dict, title: str) -> list[tuple[dict, list[tuple[float, float]]]]:
    """Every series the panel ``title`` answered: its labels and its (time, value) points, NaN left out."""
    panels = [p for p in snap["panels"] if p["title"] == title]
    if not panels:
        raise GenerateError(f"{SNAPSHOT}: expected a panel titled {title!r}, found none")
    return [(r["metric"], [(float(t), float(v)) for t, v in r["values"] if not math.isnan(float(v))])
            for target in panels[0]["targets"] for r in target["result"]]


def _limit(title: str) -> float:
    """The alert threshold that the dashboard draws on the panel ``title``."""
    from monitoring.dashboard import ROWS  # noqa: PLC0415

    limit = next((p.limit for row in ROWS for p in row.panels if p.title == title), None)
    if limit is None:
        raise GenerateError(f"monitoring/dashboard.py: expected a panel {title!r} with an alert threshold, found none")
    return limit


def _words(line: str) -> list[str]:
    """``line`` split at spaces, except inside a code span and before a ``%``."""
    words: list[str] = []
    for token in line.split(" "):
        if words and (words[-1].count("`") % 2 or token.startswith("%")):
            words[-1] += " " + token
        else:
            words.append(token)
    return words


def _pct(share: float, places: int = 0) -> str:
    return f"{100 * share:.{places}f} %"


def _text(lines: list[str]) -> str:
    """The block's text: each paragraph or list item wrapped (not code or an image), a newline at the end."""
    fenced, out = False, []
    for line in lines:
        fenced ^= line.startswith("```")
        out.append(line if fenced or line.startswith(("```", "![")) else _wrap(line))
    return "\n".join(out) + "\n"


def _wrap(line: str, width: int = 116) -> str:
    """One paragraph or list item as lines of at most ``width`` characters (a list item's continuation indented)."""
    if len(line) <= width:
        return line
    indent = " " * (len(m[0]) if (m := re.match(r"\d+\. |- ", line)) else 0)
    out, current = [], ""
    for word in _words(line):
        if current and len(current) + 1 + len(word) > width:
            out.append(current)
            current = indent + word
        else:
            current = f"{current} {word}" if current else word
    return "\n".join([*out, current])


BLOCKS = {
    "serving-response": Block(Path("docs/serving.md"), (RELEASE / "v1_response.json", RELEASE / "model_card.json"),
                              serving_response),
    "serving-runtime": Block(Path("docs/serving.md"), (BENCH,), serving_runtime),
    "monitoring-snapshot": Block(Path("docs/monitoring.md"), (SNAPSHOT, RELEASE / "model_card.json"),
                                 monitoring_snapshot),
}
DOCS = tuple(dict.fromkeys(block.doc for block in BLOCKS.values()))


# --- the docs ------------------------------------------------------------------------------------------------


def rendered(doc: Path, root: Path = ROOT) -> str:
    """``doc``'s text with each of its blocks rendered again; a ``GenerateError`` for an unknown or missing
    block."""
    text = (root / doc).read_text()
    names = [m["name"] for m in MARKED.finditer(text)]
    unknown = sorted(set(names) - set(BLOCKS))
    expected = sorted(name for name, block in BLOCKS.items() if block.doc == doc)
    if unknown or sorted(names) != expected:
        raise GenerateError(f"{doc}: expected the generated blocks {', '.join(expected)} once each, found "
                            f"{', '.join(names) or 'none'}" + (f" (unknown: {', '.join(unknown)})" if unknown else ""))
    return MARKED.sub(lambda m: f"<!-- generated: {m['name']} -->\n{BLOCKS[m['name']].render(root)}"
                                f"<!-- end: {m['name']} -->", text)


def stale(root: Path = ROOT) -> list[str]:
    """One line per block whose committed text is not its rendering."""
    found = []
    for doc in DOCS:
        fresh = {m["name"]: m["body"] for m in MARKED.finditer(rendered(doc, root))}
        for m in MARKED.finditer((root / doc).read_text()):
            if m["body"] != fresh[m["name"]]:
                sources = ", ".join(map(str, BLOCKS[m["name"]].sources))
                found.append(f"{doc}: the block {m['name']} differs from its rendering of {sources}; run "
                             "`python -m docs.generate` (`make docs`)")
    return found


# --- recording a release -------------------------------------------------------------------------------------


def record(release: Path, root: Path = ROOT, *, test_set: Path = TEST_SET, index: int = 0) -> Path:
    """Copy ``release``'s card and decision into ``RELEASE``, serve it, record its v1 answer for one test image."""
    import httpx  # noqa: PLC0415 - only recording serves
    import numpy as np  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    from monitoring.local import LocalError, predictor  # noqa: PLC0415
    from serving.release import ReleaseError, load_release  # noqa: PLC0415

    try:
        loaded = load_release(release)
    except ReleaseError as err:
        raise GenerateError(f"--record: {err}") from None
    if not (root / test_set).is_file():
        raise GenerateError(f"--record: {test_set}: expected the test set of the run that made the release, found "
                            "no such file (run `dvc repro`)")
    with np.load(root / test_set) as data:
        pixels, label = data["images"][index], int(data["labels"][index])
    buffer = io.BytesIO()
    Image.fromarray(pixels[..., 0] if pixels.shape[-1] == 1 else pixels).save(buffer, format="PNG")
    png = buffer.getvalue()
    body = {"instances": [{"image": {"b64": base64.b64encode(png).decode()}}]}
    path = f"/v1/models/{MODEL_NAME}:predict"
    try:
        with tempfile.TemporaryDirectory(prefix="mlnt-docs-") as tmp, \
                predictor(release, Path(tmp) / "predictor.log", model_name=MODEL_NAME) as url:
            answer = httpx.post(url + path, content=json.dumps(body), timeout=30)
    except LocalError as err:
        raise GenerateError(f"--record: serving {release}: {err}") from None
    if answer.status_code != 200:
        raise GenerateError(f"--record: {path}: expected 200, found {answer.status_code}: {answer.text[:300]}")
    out = root / RELEASE
    out.mkdir(parents=True, exist_ok=True)
    for name in ("model_card.json", "decision.json"):
        copied = (Path(release) / name).read_bytes()
        write_atomic(out / name, lambda fh, data=copied: fh.write(data))
    recorded = {"release": str(release), "version": loaded.version, "onnx_sha256": loaded.card["onnx_sha256"],
                "image": {"source": str(test_set), "index": index, "label": loaded.spec.class_names[label],
                          "png_sha256": hashlib.sha256(png).hexdigest()},
                "request": {"method": "POST", "path": path, "body": "{\"instances\": [{\"image\": {\"b64\": "
                            "<the PNG in base64>}}]}"},
                "status": answer.status_code, "response": answer.json()}
    write_atomic(out / "v1_response.json", lambda fh: fh.write((json.dumps(recorded, indent=1) + "\n").encode()))
    return out / "v1_response.json"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m docs.generate", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="write nothing; exit 1 if a block is stale")
    parser.add_argument("--record", type=Path, metavar="RELEASE",
                        help="first record this release (card, decision, a served v1 answer) into docs/release/")
    args = parser.parse_args(argv)
    try:
        if args.check:
            problems = stale()
            print("\n".join(problems) or f"docs.generate: {', '.join(map(str, DOCS))} up to date",
                  file=sys.stderr if problems else sys.stdout)
            return 1 if problems else 0
        if args.record:
            print(f"docs.generate: recorded {record(args.record)}")
        for doc in DOCS:
            text = rendered(doc)
            if text != (ROOT / doc).read_text():
                write_atomic(ROOT / doc, lambda fh, text=text: fh.write(text.encode()))
                print(f"docs.generate: {doc} rewritten")
    except GenerateError as err:
        print(f"docs.generate: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
