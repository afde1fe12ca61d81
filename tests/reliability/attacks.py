"""The attack classes a hostile client can try on the predictor, what stops each, and the test that tries it
(``tests/reliability/test_attacks.py``; the fuzz mutations of ``fuzz.py`` try their inputs on a real server too).
``docs/reliability.md`` renders this table (``python -m tests.reliability.catalogue --write``), and
``test_catalogue.py`` checks that every test named here exists."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Attack:
    id: str
    kind: str  # the heading it is listed under
    attack: str  # what the client does (Markdown)
    defence: str  # what stops it, and where (Markdown)
    test: str  # the test function in test_attacks.py that tries it
    checks: str  # what the test asserts (Markdown)


ATTACKS = [
    Attack("unload-the-model", "management endpoints",
           "`POST /v2/repository/models/{name}/unload` (or `load`), over REST or gRPC, without credentials",
           "the REST route is not on the served list (`serving.routes`): `Guard` answers 403 before KServe runs it; "
           "the repository extension behind both transports refuses too (`serving.repository`, gRPC "
           "`PERMISSION_DENIED`); only `--enable-model-repository` serves it",
           "test_management_routes_are_refused_and_the_model_stays",
           "every path variant (names, trailing slash, control characters) is a 403 naming the flag; the model stays "
           "ready and answers; the `/v2` metadata does not advertise the extension"),
    Attack("future-route", "management endpoints",
           "a route a later KServe adds to its app (a repository index, an admin or streaming endpoint)",
           "the served list is an allow-list of path templates: any route of the app not on it is refused",
           "test_every_route_of_the_app_is_served_or_refused",
           "every route of the running app, KServe's included routers walked into, answers as its template says "
           "(served: not 403; else 403); routes added to the app at run time (a router, a plain route, a mount) "
           "are refused"),
    Attack("pixel-bomb", "cost",
           "PNGs of a few kilobytes each that declare 4096 x 4096 pixels, as many as the body holds",
           "the request's pixels (width x height from the headers) are summed before the first decode and refused "
           "over `--max-decode-pixels` (`serving.inputs.decode_images`)",
           "test_requests_over_the_budget_are_refused_before_any_work",
           "a 400 with the budget's sentence, and no image was decoded (`decode_image` never called)"),
    Attack("declared-size", "cost",
           "shapes or data that declare more values or images than a request may hold, in JSON, v1 instances or the "
           "binary header (a 16 MiB body of 4-byte empty elements is four million of them)",
           "`serving.budget` checks what is declared before KServe parses the body, the binary elements are split "
           "only up to the declared count",
           "test_requests_over_the_budget_are_refused_before_any_work",
           "a 400 for each generated variant, answered before KServe's parser or the model ran"),
    Attack("stall-the-loop", "cost",
           "the most expensive requests the budget allows, several at once, while Kubernetes probes the pod",
           "images are decoded off the event loop on `--decode-threads` threads, so at most that many decodes run "
           "at once; onnxruntime runs in the executor",
           "test_health_answers_within_the_probe_timeout_during_the_worst_allowed_requests",
           "`/v2/health/live` and `/v2/health/ready` answer within the probes' `timeoutSeconds` "
           "(`k8s/base/serving/servingruntime.yaml`) all through, and every request gets its 200"),
    Attack("malformed", "malformed requests",
           "astronomically large shape products, a list or object where the (binary) header expects a datatype or "
           "name string, a non-ASCII digit in `Inference-Header-Content-Length`, feedback whose `instances` or "
           "`labels` are not lists",
           "`serving.budget` and `serving.binary` check types and sizes first; `serving.feedback` checks its forms",
           "test_malformed_requests_get_a_4xx_without_internals",
           "each generated variant is a 4xx whose body is one `error` sentence naming no exception type and holding "
           "no traceback; a good request answers afterwards"),
    Attack("internal-error", "malformed requests",
           "any request that makes the predictor fail in a way no check foresaw",
           "`Guard` answers an exception that escapes the app with a 500 of one sentence, and logs the traceback",
           "test_an_unforeseen_failure_is_a_500_without_internals",
           "the body names neither the exception nor its message; it is counted as a server error; the log has "
           "the traceback"),
    Attack("feedback-forgery", "feedback",
           "feedback labels sent by anyone who reaches the port, to fire the label-disagreement alert or hide one",
           "a bearer token from a file a Kubernetes Secret provides (`--feedback-token-file`) or "
           "`MLNT_FEEDBACK_TOKEN` (`serving.auth`); open only without one, with a warning at start",
           "test_feedback_requires_the_token_when_there_is_one",
           "no token, another scheme or another token: 401 with `WWW-Authenticate`, the counters unchanged; the "
           "token: 200; the runtime mounts the Secret and passes the flag"),
    Attack("feedback-flood", "feedback",
           "one client sending labels as fast as it can",
           "a token bucket per client, one unit per label (`--feedback-rate`, `--feedback-burst`); a client is its "
           "address (`serving.clients`)",
           "test_feedback_is_rate_limited_per_client",
           "past the burst: 429 with `Retry-After`, the counters unchanged; another client is still served"),
    Attack("drift-pinning", "drift",
           "one client filling the drift window with one image repeated, or with many images of one class",
           "an image is counted once while it is in the window; one client holds at most `--drift-client-share` of "
           "it; empty slots count as the training distribution (`serving.drift`)",
           "test_one_client_cannot_pin_the_drift_gauge",
           "for each strategy the gauge stays within the client's share; many clients still move it all the way"),
    Attack("forwarded-for-forgery", "client identity",
           "behind the gateway, one client sending `X-Forwarded-For` entries of its choosing (a new forged address "
           "on every request, many of them, malformed ones) to be many clients: past the drift cap and the "
           "feedback rate",
           "with `--client-header x-forwarded-for --trusted-proxy-hops N` the client is the entry the N-th trusted "
           "proxy appended, counted from the right; entries further left are never read, a header too short or "
           "malformed there counts as the peer (`serving.clients`); without the flag the header is not read at "
           "all. The ServingRuntime sets it for the one gateway in front (`k8s/base/serving/servingruntime.yaml`)",
           "test_clients_behind_the_gateway_are_the_addresses_it_appended",
           "through one peer, many forwarded clients with a population shift move the gauge past the drift "
           "alert's threshold (read from the rules) while one forwarded client forging left-most entries stays "
           "within its share; feedback is limited per forwarded client whatever it forges; the runtime's flags "
           "pass the predictor's checks"),
    Attack("log-forging", "logs",
           "newlines, carriage returns, terminal escapes and Unicode line separators in URL paths, model and tensor "
           "names, feedback labels and exception messages, to forge log lines",
           "every log record of the process escapes control characters in its message and in the exception "
           "messages of its traceback (`serving.logs`)",
           "test_log_lines_cannot_be_forged",
           "after such requests to a real server, no line of its log starts with the forged text, which appears "
           "escaped"),
]
