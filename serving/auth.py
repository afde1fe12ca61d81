"""The feedback token: a bearer token that ``POST .../feedback`` must carry, from a file a Kubernetes Secret
provides (``--feedback-token-file``) or from ``MLNT_FEEDBACK_TOKEN``.

Feedback moves ``mlnt_feedback_total`` and the label-disagreement alert, so whoever may send it decides what the
alert says. With a token, a request without ``Authorization: Bearer <token>`` is a 401. The file wins when it
exists; while it does not (the optional Secret is not created), ``MLNT_FEEDBACK_TOKEN`` is the token, if set. The
file is read again when it changes (a Secret rotated by the kubelet, or created after the start: its token then
replaces the environment's); once it has held a token, a file that goes missing or empty closes feedback (503)
instead of opening it or falling back to the environment's. Without a token (no file, or a file that does not
exist yet, and no ``MLNT_FEEDBACK_TOKEN``) feedback is open, and the predictor says so at start in a warning.
"""

from __future__ import annotations

import hmac
import logging
import os
from pathlib import Path

from serving.inputs import BadRequest

log = logging.getLogger(__name__)
TOKEN_ENV = "MLNT_FEEDBACK_TOKEN"
CHALLENGE = {"WWW-Authenticate": 'Bearer realm="feedback"'}


class TokenError(Exception):
    """The token source cannot be used; the message names it, the expected and the found."""


class FeedbackToken:
    """The token feedback must carry: the file ``path``'s, read again when it changes, else (no ``path``, or while
    the file has never existed) the fixed ``token`` from the environment (see the module docstring); with neither,
    feedback is open."""

    def __init__(self, *, path: str | Path | None = None, token: str | None = None):
        self.path = Path(path) if path is not None else None
        self.fixed = token.strip() if token is not None else None
        if self.fixed == "":
            raise TokenError(f"{TOKEN_ENV}: expected a token, found an empty value")
        self.armed = False  # the file has held a token: losing it closes feedback, never opens it or falls back
        self.cached: tuple[tuple[int, int, int], str] | None = None

    @classmethod
    def from_settings(cls, path: str | None, environ: dict[str, str] | None = None) -> FeedbackToken:
        """The file if given, and ``MLNT_FEEDBACK_TOKEN`` if set, for while the file does not exist; an existing file
        must hold a token, and the variable must not be empty."""
        environ = os.environ if environ is None else environ
        found = cls(path=path or None, token=environ.get(TOKEN_ENV))
        if found.path is not None and found.path.exists():
            try:
                text = found.path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise TokenError(f"{found.path}: expected a readable file holding the feedback token, found {exc}") \
                    from None
            if not text:
                raise TokenError(f"{found.path}: expected the feedback token, found an empty file")
        return found

    def describe(self) -> str | None:
        """``None`` when feedback requires a token; else the warning to log at start."""
        if self.current_or_none() is not None:
            return None
        where = (f"{self.path} does not exist (the Secret is not mounted) and {TOKEN_ENV} is not set; the file's "
                 "token is required as soon as it appears" if self.path is not None
                 else f"no --feedback-token-file and no {TOKEN_ENV}")
        return (f"FEEDBACK IS NOT AUTHENTICATED: anyone who reaches the HTTP port can send feedback labels, which "
                f"move mlnt_feedback_total and the label-disagreement alert ({where})")

    def current_or_none(self) -> str | None:
        """``current``, with a lost token (its 503) read as ``None``."""
        try:
            return self.current()
        except BadRequest:
            return None

    def current(self) -> str | None:
        """The token now required (the file's, else the environment's while the file has never held one), ``None``
        while feedback is open; a ``BadRequest`` (503) when the file's is lost."""
        if self.path is None:
            return self.fixed
        try:
            stat = self.path.stat()
            key = (stat.st_ino, stat.st_mtime_ns, stat.st_size)
            if self.cached is None or self.cached[0] != key:
                self.cached = (key, self.path.read_text(encoding="utf-8").strip())
        except FileNotFoundError:
            if not self.armed:
                return self.fixed
            raise self._closed("found no such file") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise self._closed(f"found an unreadable file ({exc})") from None
        if not self.cached[1]:
            raise self._closed("found an empty file")
        self.armed = True
        return self.cached[1]

    def _closed(self, found: str) -> BadRequest:
        """The 503 for a lost token: the client is told feedback is closed, the log says why."""
        log.warning("feedback closed: expected the feedback token in %s, %s", self.path, found)
        return BadRequest("expected feedback to be open, found it closed: the predictor has lost its feedback "
                          "token (its log says why)", 503)

    def check(self, authorization: str | None) -> None:
        """Nothing if ``authorization`` (the header) carries the token or none is required; else a 401."""
        token = self.current()
        if token is None:
            return
        scheme, _, given = (authorization or "").strip().partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            found = "none" if not authorization else f"a {scheme[:20]!r} header without a bearer token"
            raise BadRequest(f"expected an 'Authorization: Bearer <feedback token>' header, found {found}", 401,
                             CHALLENGE)
        if not hmac.compare_digest(given.strip().encode("latin-1", "replace"), token.encode("utf-8")):
            raise BadRequest("expected the feedback token, found another bearer token", 401, CHALLENGE)
