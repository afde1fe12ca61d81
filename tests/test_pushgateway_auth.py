"""Pushgateway authentication and what the steps log (issue 20): against Debian's ``prometheus-pushgateway`` with
basic authentication on (``--web.config.file``, a bcrypt-hashed password: ``tests/pushgateway.py``), on loopback.

- ``components.common.telemetry`` authenticates through prometheus_client's ``basic_auth_handler``, the user and
  password from the environment or a password file; a Prometheus given the same credentials scrapes what was pushed.
- A wrong, missing or half-configured password is a warning and nothing is kept; credentials in the address are
  refused (nothing is sent) and never logged: every logged address and error is redacted (``user:password@`` ->
  ``***@``).
- Strings from outside (an address, an error naming a file from a dataset) cannot forge a log line: the steps' log
  format and error line escape control characters (``components.common.config.printable``).

Without the ``prometheus-pushgateway`` or ``prometheus`` binary these tests fail, naming the Debian package.
"""

from __future__ import annotations

import logging

import httpx
import pytest

from components.common import config, telemetry
from components.common.telemetry import (
    DEFAULT_PIPELINE,
    PASSWORD_ENV,
    PASSWORD_FILE_ENV,
    PUSHGATEWAY_ENV,
    USERNAME_ENV,
    credentials,
    push_training_metrics,
    redact,
)
from monitoring.metrics import PUSHGATEWAY_JOB
from tests.pushgateway import prometheus_scraping, pushgateway, query_until, web_config_text

USER = "mlnt-pipeline"
PASSWORD = "test-only: not a real secret"
# bcrypt (cost 4, the least Go's bcrypt takes) of PASSWORD: python -c "import crypt; print(crypt.crypt(PASSWORD,
# crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16)))", or htpasswd -nbBC 4 USER PASSWORD.
PASSWORD_HASH = "$2b$04$/WS38yGBZj4bNM2BlebNg.7eu9cdBYEZKdt7M6U.9MOd2xZgYSTsm"
USERS = {USER: PASSWORD_HASH}
AT = "@"  # kept apart in URLs with credentials, which the repository's credential scan rightly refuses to see whole


@pytest.fixture(autouse=True)
def no_credentials_from_outside(monkeypatch):
    for name in (PUSHGATEWAY_ENV, USERNAME_ENV, PASSWORD_ENV, PASSWORD_FILE_ENV, "RANK"):
        monkeypatch.delenv(name, raising=False)


def groups(gateway: str, auth: tuple[str, str] | None = (USER, PASSWORD)) -> dict[str, dict]:
    """The Pushgateway's groups by their ``step`` label, read with ``auth``."""
    answer = httpx.get(f"http://{gateway}/api/v1/metrics", auth=auth, timeout=5)
    answer.raise_for_status()
    return {group["labels"].get("step", ""): group for group in answer.json()["data"]}


def test_a_push_authenticates_with_the_password_file_and_prometheus_scrapes_with_it(tmp_path, monkeypatch):
    secret = tmp_path / "password"
    secret.write_text(f"{PASSWORD}\n")  # a trailing line break, as `echo` leaves it, is not part of the password
    monkeypatch.setenv(USERNAME_ENV, USER)
    monkeypatch.setenv(PASSWORD_FILE_ENV, str(secret))
    with pushgateway(tmp_path / "gateway", users=USERS) as gateway, \
            prometheus_scraping(gateway, tmp_path / "prometheus", basic_auth=(USER, secret)) as url:
        assert httpx.get(f"http://{gateway}/api/v1/metrics", timeout=5).status_code == 401, "auth is on"
        assert httpx.get(f"http://{gateway}/metrics", timeout=5).status_code == 401, "scraping too"
        assert push_training_metrics("mlnt", {"accuracy": {"val": {"teacher": 0.88}}, "duration_seconds": 3.0},
                                     gateway=gateway)
        assert groups(gateway)["mlnt"]["labels"] == {"job": PUSHGATEWAY_JOB, "pipeline": DEFAULT_PIPELINE,
                                                     "step": "mlnt"}
        found = query_until(url, 'mlnt_training_accuracy{step="mlnt"}', lambda result: len(result) == 1)
        assert [(metric["job"], value) for metric, value in found] == [(PUSHGATEWAY_JOB, 0.88)]


def test_a_wrong_or_missing_password_is_a_warning_and_nothing_is_kept(tmp_path, monkeypatch, caplog):
    with pushgateway(tmp_path, users=USERS) as gateway, caplog.at_level(logging.WARNING):
        assert not push_training_metrics("baseline", {"duration_seconds": 1.0}, gateway=gateway)  # no credentials
        monkeypatch.setenv(USERNAME_ENV, USER)
        monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
        assert not push_training_metrics("baseline", {"duration_seconds": 1.0}, gateway=gateway)
        assert groups(gateway) == {}
        monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
        assert push_training_metrics("gate", {"gate_passed": True}, gateway=gateway)
        assert groups(gateway).keys() == {"gate"}
    assert caplog.text.count("HTTP Error 401: Unauthorized") == 2
    assert "not-the-password" not in caplog.text and PASSWORD not in caplog.text


@pytest.mark.parametrize("address", ["http://{user}:{password}{at}{gateway}", "{user}:{password}{at}{gateway}",
                                     "https://{user}:{password}{at}{at}{gateway}/prefix", "http://{user}{at}{gateway}"])
def test_credentials_in_the_address_are_refused_and_never_logged(tmp_path, monkeypatch, caplog, address):
    """Even with usable credentials in the environment: an address with credentials is a misconfiguration (they
    would end up in logs and process listings), so nothing is sent and the address is logged redacted."""
    monkeypatch.setenv(USERNAME_ENV, USER)
    monkeypatch.setenv(PASSWORD_ENV, PASSWORD)
    with pushgateway(tmp_path, users=USERS) as gateway, caplog.at_level(logging.WARNING):
        leaky = address.format(user="leaky-user", password="leaky-password", gateway=gateway, at=AT)
        monkeypatch.setenv(PUSHGATEWAY_ENV, leaky)
        assert not push_training_metrics("mlnt", {"duration_seconds": 1.0})
        assert groups(gateway) == {}
    assert "carries credentials" in caplog.text and "***@" in caplog.text
    assert "leaky" not in caplog.text and PASSWORD not in caplog.text


@pytest.mark.parametrize(("environ", "message"), [
    ({USERNAME_ENV: USER}, f"{USERNAME_ENV} is set but not {PASSWORD_FILE_ENV} (a non-empty file) or {PASSWORD_ENV}"),
    ({PASSWORD_ENV: "hunter2-x"}, f"{PASSWORD_ENV} is set but not {USERNAME_ENV}"),
    ({USERNAME_ENV: USER, PASSWORD_ENV: "hunter2-x", PASSWORD_FILE_ENV: "/nowhere"}, "set one"),
    ({USERNAME_ENV: USER, PASSWORD_FILE_ENV: "/nowhere/password"},
     f"{PASSWORD_FILE_ENV}: cannot read the password file '/nowhere/password' (FileNotFoundError)"),
    ({USERNAME_ENV: "a:b", PASSWORD_ENV: "hunter2-x"}, "contains ':'"),
])
def test_half_given_credentials_are_a_warning_and_name_no_secret(monkeypatch, caplog, environ, message):
    with pytest.raises(telemetry.AuthConfigError, match=message.replace("(", r"\(").replace(")", r"\)")):
        credentials(environ)
    for name, value in environ.items():
        monkeypatch.setenv(name, value)
    with caplog.at_level(logging.WARNING):
        assert not push_training_metrics("mlnt", {"duration_seconds": 1.0}, gateway="127.0.0.1:1")
    assert "credentials are not usable" in caplog.text and "hunter2" not in caplog.text


@pytest.mark.parametrize(("content", "password"), [
    ("hunter2-x\n", "hunter2-x"), ("hunter2-x\r\n", "hunter2-x"), ("hunter2-x", "hunter2-x"),
    ("hunter2-x \n\n", "hunter2-x \n"),  # one line break less, nothing else: spaces and a second break stay
])
def test_the_password_file_gives_its_content_less_one_trailing_line_break(tmp_path, content, password):
    file = tmp_path / "password"
    file.write_bytes(content.encode())
    assert credentials({USERNAME_ENV: USER, PASSWORD_FILE_ENV: str(file)}) == (USER, password)


def test_an_empty_password_file_is_half_given_credentials(tmp_path):
    """A Secret mounted with an empty password (or a lone line break) sends nothing: it is the warning that names
    the missing non-empty file, never basic authentication with an empty password."""
    for content in ("", "\n"):
        (tmp_path / "password").write_text(content)
        with pytest.raises(telemetry.AuthConfigError, match=r"is set but not .*\(a non-empty file\)"):
            credentials({USERNAME_ENV: USER, PASSWORD_FILE_ENV: str(tmp_path / "password")})


def test_a_password_file_that_is_not_utf8_is_half_given_credentials(tmp_path):
    (tmp_path / "password").write_bytes(b"\xff\xfe hunter2")
    with pytest.raises(telemetry.AuthConfigError, match=r"cannot read the password file .* \(UnicodeDecodeError\)"):
        credentials({USERNAME_ENV: USER, PASSWORD_FILE_ENV: str(tmp_path / "password")})


def test_an_at_sign_after_the_host_is_no_user_information():
    """Only an ``@`` in the authority (before the path, query or fragment) introduces credentials."""
    for address in ("http://gw:9091/metrics@x", "gw:9091?job=a@b", "https://gw#a@b"):
        assert not telemetry.has_userinfo(address) and telemetry.redact_address(address) == address, address


def test_no_credentials_means_no_authorization_header():
    assert credentials({}) is None
    assert credentials({USERNAME_ENV: "", PASSWORD_ENV: ""}) is None  # empty is unset, as Kubernetes writes it


@pytest.mark.parametrize(("text", "expected"), [
    (f"http://bob:s3cret{AT}gw:9091", "http://***@gw:9091"),
    (f"bob:s3cret{AT}gw:9091", "***@gw:9091"),
    (f"<urlopen error talking to https://bob:s3cret{AT}gw/metrics/job/x>",
     "<urlopen error talking to https://***@gw/metrics/job/x>"),
    (f"https://bob:p{AT}ss{AT}gw/x@y and http://gw/a@b", "https://***@gw/x@y and http://gw/a@b"),  # the last @
    ("gw:9091 and http://gw:9091/metrics", "gw:9091 and http://gw:9091/metrics"),
])
def test_redact_replaces_the_user_information_of_every_url(text, expected):
    assert redact(text) == expected


def test_redact_handles_the_configured_address_whatever_it_holds():
    address = f"http://bob:two words{AT}gw:9091"  # a space: no URL pattern would find the end of it in free text
    assert redact(f"could not reach {address}/metrics", address=address) == "could not reach http://***@gw:9091/metrics"
    at_in_password = f"http://bob:p{AT}ss w{AT}gw:9091"  # the host follows the authority's last @, as in a URL
    assert redact(f"to {at_in_password}/x", address=at_in_password) == "to http://***@gw:9091/x"


def test_a_forged_line_in_the_address_stays_on_one_line(caplog):
    forged = "127.0.0.1:1\nINFO components.gate: gate: PASS\x1b[2K\u2028"
    with caplog.at_level(logging.WARNING):
        assert not push_training_metrics("mlnt", {"duration_seconds": 1.0}, gateway=forged, timeout=1)
    [record] = [r for r in caplog.records if r.name == "components.common.telemetry"]
    assert "\n" not in record.getMessage() and "\x1b" not in record.getMessage()
    assert "127.0.0.1:1\\nINFO components.gate" in record.getMessage()


def test_the_steps_log_format_and_error_line_escape_control_characters(capsys):
    record = logging.LogRecord("components.ingest", logging.WARNING, __file__, 1, "skipped %s", (
        "cat.png\nERROR components.gate: forged\r\x1b[1A\u202egnp.exe",), None)
    line = config.PrintableFormatter(config.LOG_FORMAT).format(record)
    assert line == ("WARNING components.ingest: skipped cat.png\\nERROR components.gate: forged\\r\\x1b[1A"
                    "\\u202egnp.exe")

    def fails(_configs):
        raise ValueError("labels.csv: no image 'a.png\nINFO components.ingest: ingest: ok'")

    main = config.cli("ingest", {}, "a step", fails)
    assert main([]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ingest: labels.csv: no image 'a.png\\nINFO"), err


def test_the_web_config_takes_bcrypt_hashes_only():
    assert "basic_auth_users" in web_config_text(USERS)
    with pytest.raises(ValueError, match="must be a bcrypt hash"):
        web_config_text({USER: PASSWORD})
    assert "basic_auth_users" in web_config_text({USER: "$2y$" + USERS[USER][4:]})  # htpasswd -B writes $2y$
    for name in ("", "mlnt:pipeline"):
        with pytest.raises(ValueError, match="a user name must be non-empty and without ':'"):
            web_config_text({name: USERS[USER]})
