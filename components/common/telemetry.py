"""telemetry: a training step's final metrics, pushed to a Prometheus Pushgateway when one is configured.

Set ``MLNT_PUSHGATEWAY=host:port`` (or a URL) and call, at the end of a successful step::

    push_training_metrics("mlnt", {"accuracy": {"val": {"teacher": 0.88, "student": 0.87}},
                                   "estimated_noise_rate": 0.49, "duration_seconds": 312.5})

The metrics (names, help and labels from ``monitoring.metrics``) go under job ``mlnt-pipeline`` with the grouping
key ``pipeline`` and ``step``, replacing that step's previous push for that pipeline. ``pipeline`` names the
pipeline the run belongs to (``MLNT_PIPELINE``, default ``mlnt``; a name of letters, digits, ``.``, ``_`` and ``-``,
``pipeline_problem``), so that two pipelines pushing to one Pushgateway (two datasets, two recipes) keep their own
groups instead of overwriting each other's: ``mlnt_training_accuracy{step,split,model}``,
``mlnt_training_estimated_noise_rate``, ``mlnt_training_duration_seconds{step}``, ``mlnt_gate_passed`` and
``mlnt_training_last_success_timestamp_seconds``. A run succeeds when its model passes the release gate, so only the
gate step's push (``RELEASE_STEP``) with ``gate_passed`` true carries that timestamp (the time of the push); the gate's
push replaces the metrics it carries and keeps the rest of its group, so a gate that fails leaves the last success's
timestamp in place (and a run that fails before the gate never touches it). Without the variable nothing is sent; a
push that fails is a warning, never a failed step: refused, unreachable, timed out, an HTTP error status, or an
answer that is not HTTP at all (another service at that port: ``http.client.HTTPException``). An address that is
not ``host:port`` or an http or https URL (``address_problem``: another scheme such as ``tcp://``, a port that is
not a number from 0 to 65535, no host) is one warning naming it, and nothing is sent. Unknown keys, splits or
models are a ``ValueError`` either way.

Authentication: a Pushgateway that asks for basic authentication (its ``--web.config.file``) gets it through
prometheus_client's ``basic_auth_handler``, the user from ``MLNT_PUSHGATEWAY_USERNAME`` and the password from the
file named by ``MLNT_PUSHGATEWAY_PASSWORD_FILE`` (a mounted Kubernetes Secret) or from ``MLNT_PUSHGATEWAY_PASSWORD``.
Credentials in the address itself (``user:password@`` before the host) are refused, nothing is pushed, and the address
is logged with them replaced by ``***``: ``redact`` applies to every line this module logs, and ``printable`` (the
steps' log escaping, ``components.common.config``) keeps a line from the environment or an error on one line. A
half-given configuration (a user without a password, both password variables, an unreadable file) is a warning
too, and nothing is sent. Basic authentication sends the password with every push: use ``https://`` wherever the
path to the Pushgateway leaves the pod's node.
"""

from __future__ import annotations

import functools
import http.client
import logging
import os
import re
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from urllib.parse import urlsplit

from prometheus_client import CollectorRegistry, Gauge, push_to_gateway, pushadd_to_gateway
from prometheus_client.exposition import basic_auth_handler, default_handler

from components.common.config import printable
from monitoring import metrics as contract

PUSHGATEWAY_ENV = "MLNT_PUSHGATEWAY"
USERNAME_ENV = "MLNT_PUSHGATEWAY_USERNAME"
PASSWORD_ENV = "MLNT_PUSHGATEWAY_PASSWORD"
PASSWORD_FILE_ENV = "MLNT_PUSHGATEWAY_PASSWORD_FILE"
EXPERIMENT_ENV = "DVC_EXP_NAME"  # set by `dvc exp run` for every stage of an experiment
PIPELINE_ENV = "MLNT_PIPELINE"  # the pipeline a run belongs to: the grouping key's `pipeline`
DEFAULT_PIPELINE = "mlnt"
PIPELINE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
KEYS = ("accuracy", "estimated_noise_rate", "duration_seconds", "gate_passed")
RELEASE_STEP = "gate"  # the step whose pass ends a successful run: it alone pushes the last success's time
# The user-information part of a URL in free text (``user:password@`` after ``scheme://``, up to the authority's
# last ``@``; or at the start of a bare ``host:port`` address): what ``redact`` replaces.
USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)[^/?#\s]*@|^[^/?#\s]*@")
log = logging.getLogger(__name__)


class AuthConfigError(ValueError):
    """The Pushgateway credentials are configured in a way that cannot be used (the message names no secret)."""


def redact(text: object, *, address: str | None = None) -> str:
    """``text`` with the user information of every URL in it (``user:password@``) replaced by ``***@``; every
    occurrence of ``address`` first, split as a URL is (its authority's last ``@``), whatever characters it holds."""
    text = str(text)
    if address:
        text = text.replace(address, redact_address(address))
    return USERINFO.sub(lambda found: f"{found['scheme'] or ''}***@", text)


def redact_address(address: str) -> str:
    """``address`` (a URL, or ``host:port``) with anything before its host's ``@`` replaced by ``***``."""
    scheme, separator, rest = address.rpartition("://") if "://" in address else ("", "", address)
    authority = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" not in authority:
        return address
    return f"{scheme}{separator}***@{authority.rpartition('@')[2]}{rest[len(authority):]}"


def has_userinfo(address: str) -> bool:
    """Whether the address carries credentials of its own (``user@`` or ``user:password@`` before the host)."""
    return redact_address(address) != address


def safe(text: object, *, address: str | None = None) -> str:
    """What this module logs of an address or an error: redacted (``redact``), on one line (``printable``)."""
    return printable(redact(text, address=address))


def address_problem(address: str) -> str | None:
    """What is wrong with a Pushgateway ``address`` (``host:port``, or a URL), or None if prometheus_client can send
    to it: like prometheus_client, an address without a scheme is taken as an http address; the result needs a host
    and, if it has a port, a number from 0 to 65535. Another scheme (``tcp://``, the form of Kubernetes'
    ``<SERVICE>_PORT`` variables) is refused: prometheus_client would send to a host named after it."""
    scheme = re.match(r"([A-Za-z][A-Za-z0-9+.-]*)://", address)
    if scheme and scheme.group(1).lower() not in ("http", "https"):
        return f"scheme {scheme.group(1)}://"
    url = address if scheme else f"http://{address}"
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 -- a ValueError for a port that is not a number or out of range
    except ValueError as err:
        return str(err)
    return None if parts.hostname else "no host"


def pipeline_problem(name: str) -> str | None:
    """What is wrong with ``name`` as the ``pipeline`` label of the pushed metrics, or None: a label value the
    dashboard and alerts can name, 1 to 63 letters, digits, ``.``, ``_`` or ``-``, starting with a letter or digit."""
    if PIPELINE_NAME.fullmatch(name):
        return None
    return (f"expected 1 to 63 letters, digits, '.', '_' or '-', starting with a letter or digit, found "
            f"{printable(repr(name))}")


def pipeline_name(environ: Mapping[str, str] | None = None) -> str:
    """The pipeline the pushed metrics belong to: ``MLNT_PIPELINE`` of ``environ`` (the process's by default), or
    ``DEFAULT_PIPELINE`` where it is unset or empty."""
    environ = os.environ if environ is None else environ
    return environ.get(PIPELINE_ENV) or DEFAULT_PIPELINE


def credentials(environ: Mapping[str, str] | None = None) -> tuple[str, str] | None:
    """(user, password) for the Pushgateway from ``environ`` (the process's by default), or None if no user and no
    password is set. The password comes from the file ``MLNT_PUSHGATEWAY_PASSWORD_FILE`` names (its content, less
    one trailing line break) or from ``MLNT_PUSHGATEWAY_PASSWORD``; ``AuthConfigError`` for anything half-set."""
    environ = os.environ if environ is None else environ
    user = environ.get(USERNAME_ENV) or None
    literal, file = environ.get(PASSWORD_ENV) or None, environ.get(PASSWORD_FILE_ENV) or None
    if literal is not None and file is not None:
        raise AuthConfigError(f"both {PASSWORD_ENV} and {PASSWORD_FILE_ENV} are set: set one")
    password = literal
    if file is not None:
        try:
            password = Path(file).read_text(encoding="utf-8").removesuffix("\n").removesuffix("\r")
        except (OSError, UnicodeDecodeError) as err:
            raise AuthConfigError(f"{PASSWORD_FILE_ENV}: cannot read the password file {file!r} "
                                  f"({type(err).__name__})") from None
    if user is None and password is None:
        return None
    if user is None or not password:
        given, missing = (PASSWORD_ENV if file is None else PASSWORD_FILE_ENV, USERNAME_ENV) if user is None else (
            USERNAME_ENV, f"{PASSWORD_FILE_ENV} (a non-empty file) or {PASSWORD_ENV}")
        raise AuthConfigError(f"{given} is set but not {missing}: basic authentication needs both")
    if ":" in user:
        raise AuthConfigError(f"{USERNAME_ENV} contains ':', which basic authentication cannot carry")
    return user, password


def auth_handler(auth: tuple[str, str] | None) -> Callable:
    """The push handler: prometheus_client's ``basic_auth_handler`` with ``auth``, or its default handler."""
    if auth is None:
        return default_handler
    user, password = auth

    def handler(url: str, method: str, timeout: float | None, headers: list, data: bytes) -> Callable[[], None]:
        return basic_auth_handler(url, method, timeout, headers, data, username=user, password=password)

    return handler


def push_training_metrics(step: str, metrics: dict, *, gateway: str | None = None, timeout: float = 5.0) -> bool:
    """Push ``metrics`` (keys: ``KEYS``; ``accuracy`` is ``{split: {model: value}}``) for ``step``; True if sent.
    Credentials come from the environment (``credentials``), never from ``gateway``. A step's push replaces its
    group (HTTP PUT); the release step's replaces only the metrics it carries (POST), keeping the last success's
    timestamp when its gate failed."""
    registry = training_registry(step, metrics)
    gateway = gateway or os.environ.get(PUSHGATEWAY_ENV)
    if not gateway or os.environ.get("RANK", "0") != "0":  # under torchrun, the main process speaks for all
        return False
    if os.environ.get(EXPERIMENT_ENV):  # its groups would replace the pipeline's own runs'
        log.info("telemetry: DVC experiment %s: the %s step's metrics are not pushed (an experiment is judged, not "
                 "monitored: dvc exp show has them)", safe(os.environ[EXPERIMENT_ENV]), safe(step))
        return False
    refusal = _refusal(gateway)
    if refusal is not None:
        log.warning("telemetry: %s; the %s step's metrics were not pushed", refusal, safe(step))
        return False
    try:
        auth = credentials()
    except AuthConfigError as exc:
        log.warning("telemetry: the Pushgateway credentials are not usable (%s); the %s step's metrics were not "
                    "pushed to %s", safe(exc), safe(step), safe(gateway, address=gateway))
        return False
    try:
        push = pushadd_to_gateway if step == RELEASE_STEP else push_to_gateway
        push(gateway, job=contract.PUSHGATEWAY_JOB, registry=registry,
             grouping_key={"pipeline": pipeline_name(), "step": step}, timeout=timeout, handler=auth_handler(auth))
    # refused, unreachable, timed out, an HTTP error status (OSError); an address urllib still refuses (ValueError);
    # an answer that is not HTTP, e.g. another service at that port (HTTPException: BadStatusLine, InvalidURL, ...)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        reason = f"{type(exc).__name__}: {exc}" if isinstance(exc, http.client.HTTPException) else exc
        log.warning("telemetry: could not push the %s step's metrics to the Pushgateway at %s (%s); the step "
                    "itself succeeded", safe(step), safe(gateway, address=gateway),
                    safe(reason, address=gateway))
        return False
    return True


def _refusal(gateway: str) -> str | None:
    """Why nothing can be pushed to ``gateway`` as configured (the start of a warning), or None: credentials in the
    address, an address that is not ``host:port`` or an http or https URL, a pipeline name that is not a label."""
    if has_userinfo(gateway):
        return (f"the Pushgateway address {safe(gateway, address=gateway)} carries credentials: they are never read "
                f"from the address (set {USERNAME_ENV} and {PASSWORD_FILE_ENV} or {PASSWORD_ENV})")
    problem = address_problem(gateway)
    if problem is not None:
        return (f"the Pushgateway address {safe(gateway, address=gateway)} ({PUSHGATEWAY_ENV}) is not usable "
                f"({safe(problem, address=gateway)}): expected host:port or an http or https URL")
    problem = pipeline_problem(pipeline_name())
    if problem is not None:
        return f"{PIPELINE_ENV} is not usable as the pipeline's name ({problem})"
    return None


def reports(step: str, summarise: Callable[[dict], dict]) -> Callable:
    """Decorate a step's ``run`` so that each successful call pushes ``summarise(result)`` and its duration."""

    def decorate(run: Callable[..., dict]) -> Callable[..., dict]:
        @functools.wraps(run)
        def timed(*args, **kwargs) -> dict:
            started = time.monotonic()
            result = run(*args, **kwargs)
            push_training_metrics(step, {**summarise(result), "duration_seconds": time.monotonic() - started})
            return result
        return timed

    return decorate


def training_registry(step: str, metrics: dict) -> CollectorRegistry:
    """A registry holding ``metrics`` as the contract's gauges, with the last success's timestamp (now) when ``step``
    is the release step and its gate passed; ``ValueError`` for anything outside the contract."""
    unknown = sorted(set(metrics) - set(KEYS))
    if unknown:
        raise ValueError(f"telemetry: unknown metric keys {unknown}. Valid: {', '.join(KEYS)}")
    registry = CollectorRegistry()

    def gauge(metric: contract.Metric) -> Gauge:
        return Gauge(metric.name, metric.help, metric.labels, registry=registry)

    accuracy = gauge(contract.TRAINING_ACCURACY)
    for split, by_model in metrics.get("accuracy", {}).items():
        _check(split, contract.SPLITS, "split")  # a split with no model too
        for model, value in by_model.items():
            _check(model, contract.TRAINING_MODELS, "model")
            accuracy.labels(step=step, split=split, model=model).set(float(value))
    if "estimated_noise_rate" in metrics:
        gauge(contract.TRAINING_NOISE_RATE).set(float(metrics["estimated_noise_rate"]))
    if "duration_seconds" in metrics:
        gauge(contract.TRAINING_DURATION).labels(step=step).set(float(metrics["duration_seconds"]))
    if "gate_passed" in metrics:
        gauge(contract.GATE_PASSED).set(1.0 if metrics["gate_passed"] else 0.0)
    if step == RELEASE_STEP and metrics.get("gate_passed"):
        gauge(contract.TRAINING_LAST_SUCCESS).set(time.time())
    return registry


def _check(value: str, valid: tuple[str, ...], what: str) -> None:
    if value not in valid:
        raise ValueError(f"telemetry: unknown {what} {value!r}. Valid: {', '.join(valid)}")
