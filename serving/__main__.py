"""python -m serving --model DIR [--http_port 8080] [--grpc_port 8081] [KServe's other flags] [--max-batch 256] ...

Serve the release in DIR (``model.onnx``, ``model_card.json``; in a cluster KServe's storage initializer puts it at
/mnt/models) with KServe: Open Inference Protocol v2 over REST and gRPC, v1 over REST, label feedback, Prometheus
metrics at /metrics. Refuses to start, with one line naming the file, when the model does not match its card.

The command line is KServe's own model-server parser (``kserve.model_server.parser``) extended with the predictor's
options, as KServe's custom-model examples do, so KServe's flags work as its users expect. ``--http-port`` and
``--model-name`` stay as the older spellings of KServe's ``--http_port`` and ``--model_name``, and ``--grpc-port``
is ``--grpc_port`` spelt like them.
"""

from __future__ import annotations

import argparse
import copy
import sys
from types import ModuleType

from serving.clients import HEADER_NAME
from serving.release import ReleaseError, load_release

MODEL_NAME = "mlnt-classifier"
AT_LEAST_ONE = {"max_batch": "--max-batch", "max_body_bytes": "--max-body-bytes", "drift_window": "--drift-window",
                "max_decode_pixels": "--max-decode-pixels", "decode_threads": "--decode-threads",
                "feedback_burst": "--feedback-burst",
                "max_threads": "--max_threads"}  # option -> its spelling: ours with hyphens, KServe's with underscores


class _DefaultsHelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Each option's default after its help, except where the help states the default itself."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        if action.help and "(default " in action.help:
            return action.help
        return super()._get_help_string(action)


def get_args_parser() -> argparse.ArgumentParser:
    """The predictor's parser: a copy of KServe's model-server parser (KServe's own defaults stay as they are), the
    model name defaulting to ``MODEL_NAME``, and the predictor's options. Imports KServe."""
    # A copy of KServe's parser, so that our defaults do not change KServe's own.
    parser = argparse.ArgumentParser(prog="python -m serving", description=__doc__.split("\n\n")[1],
                                     parents=[copy.deepcopy(kserve_cli().parser)],
                                     formatter_class=_DefaultsHelpFormatter)
    parser.set_defaults(model_name=MODEL_NAME)
    from serving.model import MAX_DECODE_PIXELS  # noqa: PLC0415 -- imports KServe, which kserve_cli() has imported
    ours = parser.add_argument_group("the predictor's options")
    ours.add_argument("--model", required=True, help="release folder with model.onnx and model_card.json")
    ours.add_argument("--model-name", dest="model_name", default=argparse.SUPPRESS, help="the same as --model_name")
    ours.add_argument("--http-port", dest="http_port", type=int, default=argparse.SUPPRESS,
                      help="the same as --http_port")
    ours.add_argument("--grpc-port", dest="grpc_port", type=int, default=argparse.SUPPRESS,
                      help="the same as --grpc_port")
    ours.add_argument("--max-batch", type=int, default=256, help="most images in one request")
    ours.add_argument("--max-body-bytes", type=int, default=16 * 1024 * 1024,
                      help="largest request: REST body, and gRPC message unless --grpc_max_receive_message_length "
                           "is smaller")
    ours.add_argument("--max-decode-pixels", type=int, default=MAX_DECODE_PIXELS,
                      help="most pixels (width x height, summed over the images) one request may have decoded")
    ours.add_argument("--decode-threads", type=int, default=2,
                      help="most images decoded at once, all requests together")
    ours.add_argument("--drift-window", type=int, default=1000, help="recent predictions the drift gauge uses")
    ours.add_argument("--drift-client-share", type=float, default=0.1,
                      help="most of the drift window one client may hold (1: no cap)")
    ours.add_argument("--client-header", default=None, metavar="NAME",
                      help="tell clients apart by the address the trusted proxies appended to this header "
                           "(x-forwarded-for), REST and gRPC, instead of the connection's peer; only where every "
                           "request comes through those proxies (docs/serving.md, 'Who is a client')")
    ours.add_argument("--trusted-proxy-hops", type=int, default=None, metavar="N",
                      help="with --client-header: the client is entry N from the right, the address the N-th "
                           "proxy from the predictor appended; entries further left are never read (default 1 when "
                           "--client-header is given; without it, the option is refused)")
    ours.add_argument("--feedback-token-file", default=None,
                      help="file holding the bearer token feedback must carry (a mounted Secret); while it does not "
                           "exist, or without the option, $MLNT_FEEDBACK_TOKEN; neither: feedback is open, with a "
                           "warning")
    ours.add_argument("--feedback-rate", type=float, default=1.0, help="feedback labels a second per client")
    ours.add_argument("--feedback-burst", type=int, default=256, help="feedback labels at once per client")
    ours.add_argument("--enable-model-repository", action="store_true",
                      help="serve KServe's model repository extension (load, unload): off, anyone could unload")
    ours.add_argument("--threads", type=int, default=0, help="onnxruntime intra-op threads (0: its default)")
    return parser


def kserve_cli() -> ModuleType:
    """``kserve.model_server``, imported with an empty command line. KServe parses sys.argv when it is imported
    (``parse_known_args``): it would answer a bad value of one of its flags, or our ``--model`` without a value (an
    abbreviation of its ``--model_name``), with its own usage before ours is read. Our one strict parse is handed to
    it instead (``serving.server.hand_to_kserve``)."""
    argv, sys.argv = sys.argv, sys.argv[:1]
    try:
        from kserve import model_server  # noqa: PLC0415 -- FastAPI, gRPC and KServe's app: only when parsing
    finally:
        sys.argv = argv
    return model_server


def problem(args: argparse.Namespace) -> str | None:
    """The first option the predictor cannot run with, as one line; ``None`` when all are usable."""
    for option, spelling in AT_LEAST_ONE.items():
        if getattr(args, option) < 1:
            return f"{spelling}: expected at least 1, found {getattr(args, option)}"
    if not 0 < args.drift_client_share <= 1:
        return f"--drift-client-share: expected a share in (0, 1], found {args.drift_client_share}"
    if not args.feedback_rate > 0:
        return f"--feedback-rate: expected more than 0 labels a second, found {args.feedback_rate}"
    if args.workers != 1:
        return (f"--workers: expected 1 (KServe's extra REST workers are spawned processes that import a fresh app, "
                f"without this predictor's model, guard, metrics and feedback route; run more replicas instead), "
                f"found {args.workers}")
    if args.enable_grpc and args.grpc_port == args.http_port:
        return f"--grpc_port: expected a port other than --http_port, found {args.grpc_port} for both"
    return client_problem(args)


def client_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with ``--client-header`` and ``--trusted-proxy-hops``, as one line; ``None`` when nothing."""
    if args.trusted_proxy_hops is not None and args.client_header is None:
        return (f"--trusted-proxy-hops: expected --client-header with it (the header the proxies append to), found "
                f"{args.trusted_proxy_hops} hops and no header")
    if args.trusted_proxy_hops is not None and args.trusted_proxy_hops < 1:
        return f"--trusted-proxy-hops: expected at least 1, found {args.trusted_proxy_hops}"
    if args.client_header is not None and not HEADER_NAME.fullmatch(args.client_header):
        return f"--client-header: expected a header name (letters, digits and hyphens), found {args.client_header!r}"
    return None


def kserve_settings(args: argparse.Namespace) -> dict:
    """The parsed options, with gRPC messages capped at ``--max-body-bytes`` as REST bodies are."""
    settings = vars(args).copy()
    settings["grpc_max_receive_message_length"] = min(args.grpc_max_receive_message_length, args.max_body_bytes)
    return settings


def main(argv: list[str] | None = None) -> int:
    """``python -m serving``: parse and check the options (``problem``), read the feedback token and the release,
    build the model and serve it until stopped. Returns 2, with one line on stderr, for an unusable option, token or
    release."""
    args = get_args_parser().parse_args(sys.argv[1:] if argv is None else argv)
    if (found := problem(args)) is not None:
        print(f"serving: {found}", file=sys.stderr)
        return 2
    from serving.auth import FeedbackToken, TokenError  # noqa: PLC0415 -- KServe is imported by now

    try:
        token = FeedbackToken.from_settings(args.feedback_token_file)
        release = load_release(args.model)  # before onnxruntime and the model: a bad release fails fast
        from serving.clients import ClientIdentity  # noqa: PLC0415
        from serving.server import Protection, build, serve  # noqa: PLC0415

        model = build(release, name=args.model_name, max_batch=args.max_batch, drift_window=args.drift_window,
                      threads=args.threads, drift_client_share=args.drift_client_share,
                      max_decode_pixels=args.max_decode_pixels, decode_threads=args.decode_threads)
    except (ReleaseError, TokenError) as exc:
        print(f"serving: refusing to start: {exc}", file=sys.stderr)
        return 2
    protection = Protection(max_body_bytes=args.max_body_bytes, docs=args.enable_docs_url,
                            repository=args.enable_model_repository, token=token, feedback_rate=args.feedback_rate,
                            feedback_burst=args.feedback_burst,
                            clients=ClientIdentity(args.client_header, args.trusted_proxy_hops or 1))
    serve(model, kserve_settings(args), protection)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
