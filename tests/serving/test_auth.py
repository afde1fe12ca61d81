"""The feedback token (``serving.auth``) and the per-client rate limit (``serving.clients``), without a server; the
token as feedback's first check, in-process (``tests.serving.inprocess``)."""

from __future__ import annotations

import math
import os

import pytest

from serving.auth import TOKEN_ENV, FeedbackToken, TokenError
from serving.clients import RateLimiter, peer
from serving.inputs import BadRequest
from serving.server import Protection
from tests.serving.conftest import LIMITS
from tests.serving.inprocess import NAME, InProcess

SECRET = "s" * 12 + "-feedback"


def refused(token: FeedbackToken, header: str | None) -> BadRequest:
    with pytest.raises(BadRequest) as error:
        token.check(header)
    return error.value


def test_without_a_token_feedback_is_open_and_says_so():
    token = FeedbackToken.from_settings(None, {})
    token.check(None)
    assert "FEEDBACK IS NOT AUTHENTICATED" in token.describe() and TOKEN_ENV in token.describe()


def test_a_token_from_the_environment_is_required():
    token = FeedbackToken.from_settings(None, {TOKEN_ENV: f" {SECRET}\n"})
    assert token.describe() is None
    token.check(f"Bearer {SECRET}")
    token.check(f"bearer  {SECRET} ")
    for header, found in [(None, "found none"), ("Basic dXNlcjpwYXNz", "found a 'Basic' header"),
                          ("Bearer", "found a 'Bearer' header without a bearer token"),
                          (f"Bearer {SECRET}x", "found another bearer token"),
                          (f"Bearer {SECRET[:-1]}", "found another bearer token"),  # a prefix is another token
                          ("Bearer s", "found another bearer token")]:
        error = refused(token, header)
        assert error.status == 401 and found in str(error) and error.headers["WWW-Authenticate"].startswith("Bearer")
        assert SECRET not in str(error)


def test_an_empty_token_is_refused_at_start(tmp_path):
    with pytest.raises(TokenError, match=f"{TOKEN_ENV}: expected a token, found an empty value"):
        FeedbackToken.from_settings(None, {TOKEN_ENV: " "})
    (tmp_path / "token").write_text("\n")
    with pytest.raises(TokenError, match="token: expected the feedback token, found an empty file"):
        FeedbackToken.from_settings(str(tmp_path / "token"), {})


def test_a_token_file_is_required_once_it_appears_and_follows_its_rotation(tmp_path):
    path = tmp_path / "token"
    token = FeedbackToken.from_settings(str(path), {})
    token.check(None)  # the optional Secret is not mounted yet, and no MLNT_FEEDBACK_TOKEN: open
    assert "does not exist" in token.describe() and f"{TOKEN_ENV} is not set" in token.describe()
    path.write_text(SECRET)
    assert refused(token, None).status == 401
    token.check(f"Bearer {SECRET}")
    rotated = tmp_path / "new"
    rotated.write_text("rotated-token-2")
    os.replace(rotated, path)  # the kubelet swaps a Secret's files atomically
    assert refused(token, f"Bearer {SECRET}").status == 401
    token.check("Bearer rotated-token-2")
    same_size = tmp_path / "same"
    same_size.write_text("rotated-token-3")  # openssl rand -hex 32: every rotation has the same length
    os.replace(same_size, path)
    assert refused(token, "Bearer rotated-token-2").status == 401
    token.check("Bearer rotated-token-3")


def test_the_environments_token_is_required_while_the_token_file_does_not_exist(tmp_path):
    """The ServingRuntime always passes --feedback-token-file, its Secret optional: without the Secret,
    MLNT_FEEDBACK_TOKEN is the token; once the file appears, its token replaces the environment's, and a file lost
    after that closes feedback (503) rather than falling back to the environment's token."""
    path = tmp_path / "token"
    token = FeedbackToken.from_settings(str(path), {TOKEN_ENV: f"{SECRET}-env\n"})
    assert token.describe() is None  # no warning: feedback is not open
    assert refused(token, None).status == 401
    assert refused(token, f"Bearer {SECRET}").status == 401
    token.check(f"Bearer {SECRET}-env")
    path.write_text(SECRET)  # the Secret is created: its token replaces the environment's
    assert refused(token, f"Bearer {SECRET}-env").status == 401
    token.check(f"Bearer {SECRET}")
    path.unlink()
    assert refused(token, f"Bearer {SECRET}-env").status == 503


def test_an_existing_token_file_wins_over_the_environment_from_the_start(tmp_path):
    (tmp_path / "token").write_text(SECRET)
    token = FeedbackToken.from_settings(str(tmp_path / "token"), {TOKEN_ENV: "from-the-environment"})
    token.check(f"Bearer {SECRET}")
    assert "another bearer token" in str(refused(token, "Bearer from-the-environment"))
    with pytest.raises(TokenError, match=f"{TOKEN_ENV}: expected a token, found an empty value"):
        FeedbackToken.from_settings(str(tmp_path / "token"), {TOKEN_ENV: ""})  # set to nothing: refused as alone


@pytest.mark.parametrize("lose", ["delete", "empty"])
def test_a_token_file_that_goes_missing_closes_feedback(tmp_path, lose, caplog):
    path = tmp_path / "token"
    path.write_text(SECRET)
    token = FeedbackToken.from_settings(str(path), {})
    token.check(f"Bearer {SECRET}")
    path.unlink() if lose == "delete" else path.write_text("")
    error = refused(token, f"Bearer {SECRET}")
    assert error.status == 503 and str(path) not in str(error)  # the path is for the log, not the client
    assert str(path) in caplog.text


def test_the_rate_limiter_is_a_token_bucket_per_client():
    now = [0.0]
    limiter = RateLimiter(2.0, 10, clients=2, clock=lambda: now[0])
    assert limiter.take("a", 10) == 0.0
    assert limiter.take("a", 1) == pytest.approx(0.5)  # empty: one unit in half a second
    assert limiter.take("b", 10) == 0.0  # another client has its own bucket
    assert limiter.take("a", 11) == math.inf  # more than a burst never fits
    now[0] = 2.0
    assert limiter.take("a", 4) == 0.0 and limiter.take("a", 1) == pytest.approx(0.5)
    limiter.take("c", 1)  # a third client: the least recently seen (b) is forgotten
    assert set(limiter.buckets) == {"a", "c"}
    now[0] = 3600.0  # an hour idle fills a's bucket to one burst, no more: 10 at once, then it waits
    assert limiter.take("a", 10) == 0.0 and limiter.take("a", 10) == pytest.approx(5.0)


def test_the_client_is_the_peer_address():
    assert peer({"client": ("10.1.2.3", 5555), "headers": [(b"x-forwarded-for", b"1.1.1.1")]}) == "10.1.2.3"
    assert peer({}) == "unknown"


def test_the_token_is_feedbacks_first_check_made_before_the_body_is_read(release):
    predictor = InProcess(release[0], protection=Protection(LIMITS["max_body_bytes"],
                                                            token=FeedbackToken(token=SECRET)))
    three_hundred = {"instances": [[[[0.0] * 8] * 8]] * 300, "labels": [0] * 300}  # over the batch and body limits
    url = f"/v1/models/{NAME}/feedback"
    for body in [{"content": b"{not json"}, {"json": three_hundred}, {"json": {"feedback": 7}},
                 {"json": {"predicted": 0, "label": 1}}]:
        answer = predictor.request("POST", url, **body)
        assert answer.status_code == 401, (body, answer.text)
        assert answer.json() == {"error": "expected an 'Authorization: Bearer <feedback token>' header, found none"}
        assert answer.headers["www-authenticate"].startswith("Bearer")
    signed = {"authorization": f"Bearer {SECRET}"}
    assert predictor.request("POST", url, content=b"{not json", headers=signed).status_code == 400
    assert predictor.request("POST", url, json=three_hundred, headers=signed).status_code == 413
    assert predictor.request("POST", url, json={"predicted": 0, "label": 1}, headers=signed).json()["received"] == 1
    assert predictor.sample("mlnt_feedback_total") == 1
