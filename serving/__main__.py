"""python -m serving --model DIR [--model-name NAME] [--http-port 8080] [--max-batch 256] [--max-body-bytes N]

Serve the release in DIR (``model.onnx``, ``model_card.json``; in a cluster KServe's storage initializer puts it at
/mnt/models) with KServe: Open Inference Protocol v2 and v1, label feedback, Prometheus metrics at /metrics.
Refuses to start, with one line naming the file, when the model does not match its card.
"""

from __future__ import annotations

import argparse
import sys

from serving.release import ReleaseError, load_release


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.splitlines()[2])
    parser.add_argument("--model", required=True, help="release folder with model.onnx and model_card.json")
    parser.add_argument("--model-name", default="mlnt-classifier", help="the name in the endpoint paths")
    parser.add_argument("--http-port", type=int, default=8080)
    parser.add_argument("--max-batch", type=int, default=256, help="most images in one request")
    parser.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024, help="largest request body")
    parser.add_argument("--drift-window", type=int, default=1000, help="recent predictions the drift gauge uses")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = get_args_parser().parse_args(argv)
    for option in ("max_batch", "max_body_bytes", "drift_window"):
        if getattr(args, option) < 1:
            print(f"serving: --{option.replace('_', '-')}: expected at least 1, found {getattr(args, option)}",
                  file=sys.stderr)
            return 2
    try:
        release = load_release(args.model)  # before importing KServe: a bad release fails in a fraction of a second
        sys.argv = sys.argv[:1]  # KServe parses sys.argv when imported; our options are not its options
        from serving.server import build, serve  # noqa: PLC0415

        model = build(release, name=args.model_name, max_batch=args.max_batch, drift_window=args.drift_window,
                      threads=args.threads)
    except ReleaseError as exc:
        print(f"serving: refusing to start: {exc}", file=sys.stderr)
        return 2
    serve(model, http_port=args.http_port, max_body_bytes=args.max_body_bytes)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
