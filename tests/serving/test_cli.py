"""``python -m serving``'s command line: KServe's own model-server parser extended with the predictor's options, so
KServe's flags work and reach KServe's ModelServer, the older spellings still work, and mistakes fail clearly."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys

import httpx
import pytest
from fastapi import FastAPI

from serving.__main__ import get_args_parser, kserve_settings, main
from serving.server import install_docs
from tests.serving.conftest import ROOT

KSERVE_FLAGS = ("--http_port", "--grpc_port", "--workers", "--max_threads", "--max_asyncio_workers",
                "--enable_grpc", "--enable_docs_url", "--enable_latency_logging", "--configure_logging",
                "--grpc_max_receive_message_length", "--model_name")
OUR_FLAGS = ("--model", "--model-name", "--http-port", "--grpc-port", "--max-batch", "--max-body-bytes",
             "--drift-window", "--threads", "--max-decode-pixels", "--decode-threads", "--drift-client-share",
             "--feedback-token-file", "--feedback-rate", "--feedback-burst", "--enable-model-repository",
             "--client-header", "--trusted-proxy-hops")


def test_help_lists_kserves_flags_and_ours():
    done = subprocess.run([sys.executable, "-m", "serving", "--help"], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("usage: python -m serving")
    for flag in KSERVE_FLAGS + OUR_FLAGS:
        assert f"{flag} " in done.stdout or f"{flag}\n" in done.stdout, flag


@pytest.mark.parametrize(("argv", "error"), [
    (["--model"], "argument --model: expected one argument"),  # not KServe's --model_name, which it abbreviates
    (["--model", "r", "--workers", "two"], "argument --workers: invalid int value: 'two'"),
])
def test_bad_values_are_answered_by_our_parser_alone(argv, error):
    done = subprocess.run([sys.executable, "-m", "serving", *argv], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.startswith("usage: python -m serving") and done.stderr.count("usage:") == 1
    assert done.stderr.strip().splitlines()[-1] == f"python -m serving: error: {error}"


def test_enable_docs_url_serves_swagger_ui():
    app = FastAPI(docs_url=None)  # KServe's app, as created without the flag at import
    install_docs(app)

    async def get():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://serving") as client:
            return await client.get("/docs")

    answer = asyncio.run(get())
    assert answer.status_code == 200 and "swagger-ui" in answer.text


def test_defaults_are_kserves_with_our_model_name():
    args = get_args_parser().parse_args(["--model", "r"])
    assert (args.http_port, args.grpc_port, args.workers, args.max_threads) == (8080, 8081, 1, 4)
    assert args.enable_grpc is True and args.enable_docs_url is False
    assert args.model_name == "mlnt-classifier"


def test_the_older_spellings_mean_kserves_flags():
    old = get_args_parser().parse_args(["--model", "r", "--model-name", "m", "--http-port", "9000",
                                        "--grpc-port", "9001"])
    new = get_args_parser().parse_args(["--model", "r", "--model_name", "m", "--http_port", "9000",
                                        "--grpc_port", "9001"])
    assert vars(old) == vars(new) and (old.model_name, old.http_port, old.grpc_port) == ("m", 9000, 9001)


def test_our_defaults_do_not_change_kserves_own_parser():
    from kserve import model_server  # noqa: PLC0415

    get_args_parser()
    assert model_server.parser.get_default("model_name") == "model"


def test_an_unknown_flag_fails_with_the_usage_and_its_name(capsys):
    with pytest.raises(SystemExit) as exit_:
        get_args_parser().parse_args(["--model", "r", "--http-prot", "1"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2
    assert err.startswith("usage: python -m serving") and "error: unrecognized arguments: --http-prot 1" in err


@pytest.mark.parametrize(("argv", "message"), [
    (["--workers", "2"], "serving: --workers: expected 1 (KServe's extra REST workers are spawned processes"),
    (["--max_threads", "0"], "serving: --max_threads: expected at least 1, found 0"),
    (["--max-decode-pixels", "0"], "serving: --max-decode-pixels: expected at least 1, found 0"),
    (["--decode-threads", "0"], "serving: --decode-threads: expected at least 1, found 0"),
    (["--drift-client-share", "0"], "serving: --drift-client-share: expected a share in (0, 1], found 0.0"),
    (["--feedback-rate", "0"], "serving: --feedback-rate: expected more than 0 labels a second, found 0.0"),
    (["--trusted-proxy-hops", "2"], "serving: --trusted-proxy-hops: expected --client-header with it (the header "
                                    "the proxies append to), found 2 hops and no header"),
    (["--client-header", "x-forwarded-for", "--trusted-proxy-hops", "0"],
     "serving: --trusted-proxy-hops: expected at least 1, found 0"),
    (["--client-header", "x-forwarded-for:"],
     "serving: --client-header: expected a header name (letters, digits and hyphens), found 'x-forwarded-for:'"),
    (["--http_port", "9000", "--grpc_port", "9000"],
     "serving: --grpc_port: expected a port other than --http_port, found 9000 for both"),
])
def test_settings_the_predictor_cannot_run_with_fail_before_loading(argv, message, capsys):
    assert main(["--model", "no-such-release", *argv]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith(message), lines


def test_grpc_messages_are_capped_at_max_body_bytes():
    def cap(*argv: str) -> int:
        return kserve_settings(get_args_parser().parse_args(["--model", "r", *argv]))[
            "grpc_max_receive_message_length"]

    assert cap() == 8 * 2**20  # KServe's default is below our 16 MiB
    assert cap("--max-body-bytes", "65536") == 65536
    assert cap("--max-body-bytes", "65536", "--grpc_max_receive_message_length", "1000") == 1000


# In a child process: constructing a ModelServer configures logging and KServe's globals.
TO_MODEL_SERVER = """
import json, sys
from kserve import model_server
from serving.__main__ import get_args_parser, kserve_settings
from serving.server import make_server
server = make_server(kserve_settings(get_args_parser().parse_args(sys.argv[1:])), None)
print(json.dumps({"server": {k: getattr(server, k) for k in ("http_port", "grpc_port", "workers", "max_threads",
                                                             "enable_grpc", "enable_docs_url", "timeout_keep_alive")},
                  "repository": type(server.model_repository_extension).__name__,
                  "kserve_args": {k: getattr(model_server.args, k) for k in ("grpc_max_receive_message_length",
                                                                             "configure_logging", "model_name")}}))
"""


def test_kserves_flags_reach_the_model_server():
    argv = ["--model", "r", "--http_port", "9001", "--grpc_port", "9002", "--max_threads", "3", "--workers", "1",
            "--enable_grpc", "false", "--enable_docs_url", "true", "--timeout-keep-alive", "7",
            "--max-body-bytes", "65536", "--configure_logging", "false", "--model-name", "m"]
    done = subprocess.run([sys.executable, "-c", TO_MODEL_SERVER, *argv], cwd=ROOT, capture_output=True, text=True,
                          check=False, timeout=120)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["server"] == {"http_port": 9001, "grpc_port": 9002, "workers": 1, "max_threads": 3,
                               "enable_grpc": False, "enable_docs_url": True, "timeout_keep_alive": 7}
    assert found["repository"] == "ReadOnlyRepository"
    # the flags KServe reads from the namespace it parsed at import hold our parse
    assert found["kserve_args"] == {"grpc_max_receive_message_length": 65536, "configure_logging": False,
                                    "model_name": "m"}
