"""Who a client is (``serving.clients.ClientIdentity``): the peer by default; behind trusted proxies, the address the
N-th of them appended to the client header, never an entry further left; over gRPC, the same header from the call's
metadata."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

from serving.clients import GRPC, REASONS, ClientIdentity, address
from serving.server import FORWARDED_ALLOW_IPS, Protection, ignore_forwarded_for
from tests.serving.conftest import LIMITS, VERSION, predictor, write_release
from tests.serving.inprocess import NAME, InProcess
from tests.serving.test_server import V2, metric, v2_tensor

XFF = "x-forwarded-for"
PROXY = ("127.0.0.6", 40000)  # the last proxy: every request's peer
FALLBACKS = "mlnt_client_identity_fallbacks_total"


def scope(*values: str, client: tuple[str, int] | None = PROXY) -> dict:
    return {"type": "http", "client": client, "headers": [(b"host", b"predictor")]
            + [(XFF.encode(), value.encode()) for value in values]}


@pytest.mark.parametrize(("text", "client"), [
    ("203.0.113.7", "203.0.113.7"), (" 203.0.113.7 ", "203.0.113.7"), ("203.0.113.7:4711", "203.0.113.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"), ("[2001:db8:1:2::9]:443", "2001:db8:1:2::/64"),
    ("::ffff:203.0.113.7", "203.0.113.7"), ("fe80::1%eth0", "fe80::/64"),
    ("unknown", None), ("", None), ("example.org", None), ("203.0.113.7:http", None), ("[::1]x", None),
    ("1.2.3.4:5:6", None), ("\u0661.2.3.4", None),
])
def test_an_address_names_a_client(text, client):
    assert address(text) == client


def test_without_a_header_the_client_is_the_peer_and_the_header_is_not_read():
    identity = ClientIdentity()
    assert identity.of(scope("198.51.100.1")) == "127.0.0.6"
    assert identity.of(scope("198.51.100.1", client=None)) == "unknown"
    assert identity.of_metadata({XFF: "198.51.100.1"}) == GRPC


@pytest.mark.parametrize(("hops", "value", "client"), [
    (1, "198.51.100.1", "198.51.100.1"),
    (1, "6.6.6.6, 198.51.100.1", "198.51.100.1"),  # a forged entry on the left is never read
    (1, "6.6.6.6,7.7.7.7,198.51.100.1", "198.51.100.1"),
    (2, "198.51.100.1, 127.0.0.6", "198.51.100.1"),  # the gateway's entry, then the queue-proxy's
    (2, "6.6.6.6, 198.51.100.1, 127.0.0.6", "198.51.100.1"),
    (3, "6.6.6.6, 198.51.100.1, 10.1.0.5, 127.0.0.6", "198.51.100.1"),
])
def test_the_client_is_the_entry_the_nth_trusted_proxy_appended(hops, value, client):
    identity = ClientIdentity("X-Forwarded-For", hops)  # header names are case-insensitive
    assert identity.of(scope(value)) == client
    assert identity.of_metadata({XFF: value}) == client
    assert not identity.fallbacks


def test_repeated_header_lines_are_one_list_in_order():
    identity = ClientIdentity(XFF, 1)
    assert identity.of(scope("6.6.6.6", "7.7.7.7, 198.51.100.1")) == "198.51.100.1"
    assert ClientIdentity(XFF, 2).of(scope("6.6.6.6, 198.51.100.1", "127.0.0.6")) == "198.51.100.1"


def test_a_missing_short_or_malformed_header_counts_as_the_peer_and_is_logged_once(caplog):
    identity = ClientIdentity(XFF, 2)
    with caplog.at_level(logging.WARNING, logger="serving.clients"):
        for _ in range(3):
            assert identity.of(scope()) == "127.0.0.6"  # a probe, kubectl port-forward
            assert identity.of(scope("198.51.100.1")) == "127.0.0.6"  # one entry for two hops
            assert identity.of(scope("6.6.6.6, unknown, 127.0.0.6")) == "127.0.0.6"
            assert identity.of_metadata({}) == identity.of_metadata(None) == GRPC
    assert identity.fallbacks == {"missing": 9, "short": 3, "malformed": 3}
    lines = [record.getMessage() for record in caplog.records]
    assert len(lines) == 3, lines
    assert "a request without x-forwarded-for: counted as its peer 127.0.0.6" in lines[0]
    assert "expected x-forwarded-for with at least 2 entries (--trusted-proxy-hops), found 1" in lines[1]
    assert "expected an address as entry 2 from the right of x-forwarded-for, found 'unknown'" in lines[2]


@pytest.mark.parametrize(("header", "hops", "message"), [
    ("x forwarded", 1, r"expected a header name \(letters, digits and hyphens\), found 'x forwarded'"),
    ("", 1, "expected a header name"),
    (XFF, 0, "trusted proxy hops: expected at least 1, found 0"),
])
def test_bad_settings_are_refused(header, hops, message):
    with pytest.raises(ValueError, match=message):
        ClientIdentity(header, hops)


def test_a_grpc_call_is_the_client_its_metadata_names(tmp_path):
    release, _ = write_release(tmp_path / VERSION)
    served = InProcess(release, protection=Protection(LIMITS["max_body_bytes"], clients=ClientIdentity(XFF, 1)))
    rng = np.random.default_rng(0)

    def call(metadata: dict) -> None:
        served.grpc_infer(rng.standard_normal((2, 1, 8, 8)).astype(np.float32), metadata)  # new images: each counts

    call({XFF: "6.6.6.6, 198.51.100.9"})
    call({})
    assert set(served.model.metrics.drift.by_client) == {"198.51.100.9", GRPC}
    assert served.sample("mlnt_requests_total", protocol="grpc-v2", outcome="ok") == 2


def fallbacks(served: InProcess) -> dict[str, float]:
    return {reason: served.sample(FALLBACKS, reason=reason) for reason in REASONS}


def test_each_fall_back_to_the_peer_is_counted_in_the_metric_by_reason(tmp_path):
    release, _ = write_release(tmp_path / VERSION)
    served = InProcess(release, protection=Protection(LIMITS["max_body_bytes"], clients=ClientIdentity(XFF, 2)))
    assert fallbacks(served) == {"missing": 0, "short": 0, "malformed": 0}  # every reason's series from the start
    x = np.zeros((1, 1, 8, 8), np.float32)

    def infer(*values: str) -> None:
        headers = [(XFF, value) for value in values]
        assert served.request("POST", V2, json=v2_tensor(x), headers=headers, client=PROXY).status_code == 200

    infer("6.6.6.6, 198.51.100.1, 127.0.0.6")  # through both proxies: no fallback
    assert fallbacks(served) == {"missing": 0, "short": 0, "malformed": 0}
    infer()  # a probe, kubectl port-forward
    infer("198.51.100.1")  # one entry for two hops
    infer("198.51.100.1", "127.0.0.6")  # two lines, one list of two: no fallback
    infer("6.6.6.6, unknown, 127.0.0.6")
    infer("6.6.6.6, unknown, 127.0.0.6")
    served.grpc_infer(x, {})  # a gRPC call without the header in its metadata
    assert fallbacks(served) == {"missing": 2, "short": 1, "malformed": 2}
    assert served.protection.clients.fallbacks == fallbacks(served)


def test_without_a_client_header_nothing_is_counted_as_a_fallback(tmp_path):
    release, _ = write_release(tmp_path / VERSION)
    served = InProcess(release)  # the default: the peer, no header read
    x = np.zeros((1, 1, 8, 8), np.float32)
    for headers in ([], [(XFF, "198.51.100.1")], [(XFF, "unknown")]):
        assert served.request("POST", V2, json=v2_tensor(x), headers=headers).status_code == 200
    served.grpc_infer(x, {})
    assert fallbacks(served) == {"missing": 0, "short": 0, "malformed": 0}
    assert not served.protection.clients.fallbacks


def test_a_model_without_metrics_still_falls_back_without_counting(tmp_path):
    """The library's Classifier may have no metrics: install() then leaves the identity uncounted, not broken."""
    from fastapi import FastAPI  # noqa: PLC0415

    from serving.model import Classifier  # noqa: PLC0415
    from serving.release import load_release  # noqa: PLC0415
    from serving.server import install  # noqa: PLC0415

    release, _ = write_release(tmp_path / VERSION)
    model = Classifier(NAME, load_release(release), max_batch=LIMITS["max_batch"], threads=1)
    protection = Protection(max_body_bytes=LIMITS["max_body_bytes"], clients=ClientIdentity(XFF, hops=1))
    install(FastAPI(), model, protection)
    assert protection.clients.resolve(None, "127.0.0.1") == "127.0.0.1"
    assert protection.clients.fallbacks == {"missing": 1}


def test_the_predictor_exports_the_fallback_counter_at_zero_without_a_client_header(server, client):
    client.post(server + V2, json=v2_tensor(np.zeros((1, 1, 8, 8), np.float32)), headers={XFF: "unknown"})
    for reason in REASONS:  # a contract metric (monitoring.metrics.CLIENT_FALLBACKS), at zero and never counted
        assert metric(client, server, FALLBACKS, model=NAME, reason=reason) == 0



@pytest.mark.parametrize(("options", "statuses"), [
    ({}, [200, 429, 429]),  # the header is not read: one client, the loopback peer, with a burst of one label
    ({"client_header": XFF}, [200, 200, 200]),  # read: three clients, as the header says
])
def test_the_running_predictor_reads_x_forwarded_for_only_with_a_client_header(release, tmp_path, client, options,
                                                                               statuses):
    """uvicorn, as KServe starts it, would put the address X-Forwarded-For names in place of a loopback peer: a
    local client, or one through ``kubectl port-forward``, would have been a new client with every request."""
    with predictor(release[0], tmp_path / "predictor.log", feedback_rate=0.001, feedback_burst=1, **options) as url:
        answers = [client.post(f"{url}/v1/models/{NAME}/feedback", json={"predicted": "cat", "label": "dog"},
                               headers={XFF: f"198.51.100.{i}"}) for i in range(1, 4)]
    assert [answer.status_code for answer in answers] == statuses, answers[-1].text


def test_uvicorn_is_told_to_trust_no_forwarded_header_and_a_setting_of_its_own_is_overridden(monkeypatch, caplog):
    monkeypatch.setenv(FORWARDED_ALLOW_IPS, "*")
    with caplog.at_level(logging.WARNING, logger="serving.server"):
        ignore_forwarded_for()
    assert os.environ[FORWARDED_ALLOW_IPS] == ""
    assert "FORWARDED_ALLOW_IPS=* is ignored: the predictor reads no forwarded header unless --client-header" \
        in caplog.text
