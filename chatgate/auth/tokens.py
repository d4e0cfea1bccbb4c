"""Login tokens: how a webmail that already signed its user in signs them into chat.

A token names exactly one user and an expiry, sealed with HMAC-SHA256 under
the secret the webmail and chatgate share (``[webmail] token_secret``)::

    cg1.<base64url(localpart@domain "|" expiry)>.<base64url(HMAC-SHA256)>

The webmail may mint tokens itself with that recipe, or ask the admin API
(``POST /api/tokens``) or ``chatgate-admin token USER``. The chat pane hands
the token to SASL PLAIN as the password (inside TLS or HTTPS only); the
authcid must name the same user, so a token can never open another account.
Tokens are verified in constant time and never logged.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import time

PREFIX = "cg1."


class TokenError(ValueError):
    """The token is malformed, forged, expired or for someone else."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _seal(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, b"chatgate login token\0" + payload, hashlib.sha256).digest()


def mint(secret: bytes, jid: str, lifetime: float, now: float | None = None) -> tuple[str, int]:
    """A token for the bare *jid*, valid *lifetime* seconds: (token, expiry as Unix time)."""
    if not secret:
        raise TokenError("no [webmail] token_secret is configured")
    expiry = int((time.time() if now is None else now) + lifetime)
    payload = f"{jid}|{expiry}".encode()
    return f"{PREFIX}{_b64(payload)}.{_b64(_seal(secret, payload))}", expiry


def looks_like_token(text: str) -> bool:
    return text.startswith(PREFIX)


def verify(secret: bytes, token: str, jid: str, now: float | None = None) -> None:
    """Accept *token* for the bare *jid*, or raise TokenError saying why."""
    if not secret:
        raise TokenError("login tokens are not enabled")
    try:
        _, payload_text, seal_text = token.split(".")
        payload, seal = _unb64(payload_text), _unb64(seal_text)
    except (ValueError, binascii.Error):
        raise TokenError("malformed token") from None
    if not hmac.compare_digest(seal, _seal(secret, payload)):
        raise TokenError("forged token")
    named, _, expiry = payload.decode("utf-8", "replace").rpartition("|")
    if named != jid:
        raise TokenError("the token is for another user")
    if not expiry.isdigit() or int(expiry) < (time.time() if now is None else now):
        raise TokenError("expired token")
