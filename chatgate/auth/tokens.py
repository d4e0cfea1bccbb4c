"""Login tokens: how a webmail that already signed its user in signs them into chat.

A token names exactly one user, when that user signed in, and an expiry,
sealed with HMAC-SHA256 under the secret the webmail and chatgate share
(``[webmail] token_secret``)::

    payload = localpart@domain "|" signed_in "|" expiry
    seal    = HMAC-SHA256(token_secret, "chatgate login token v2" NUL payload)
    token   = "cg2." base64url(payload) "." base64url(seal)      (base64url without "=" padding)

``signed_in`` is the Unix time the user proved who they are (typed their
password into the webmail, or into the pane), in decimal seconds, a fraction
allowed (``1767225600`` or ``1767225600.125``; chatgate writes milliseconds);
``expiry`` is a whole Unix time, not before ``signed_in``. Clocks are compared
across machines: keep them synchronised (NTP).

The webmail may mint tokens itself with that recipe, or ask the admin API
(``POST /api/tokens``) or ``chatgate-admin token USER``. The chat pane hands
the token to SASL PLAIN as the password (inside TLS or HTTPS only); the
authcid must name the same user, so a token can never open another account.
Tokens are verified in constant time and never logged.

A token is refused once its user's credentials change (a new password, the
account removed or made again: see ``IDirectory.credentials_changed``) if its
sign-in came before, and in any case ``[webmail] token_max_age`` after its
sign-in. ``POST /chat/token`` renews a token with the same sign-in time
(:func:`renew`), so renewing never outlasts either rule.

``cg1.`` tokens (the first recipe, without a sign-in time) are refused: with no
sign-in time they could not be revoked. A webmail that mints its own tokens
switches to this recipe when chatgate is upgraded.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import math
import re
import time
from dataclasses import dataclass

PREFIX = "cg2."
_LABEL = b"chatgate login token v2\0"
_SIGNED_IN = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")
_EXPIRY = re.compile(r"[0-9]{1,12}")


class TokenError(ValueError):
    """The token is malformed, forged, expired, revoked or for someone else."""


@dataclass(frozen=True)
class Claims:
    """What a verified token says."""

    jid: str
    #: Unix time of the sign-in the token stands for
    signed_in: float
    #: Unix time after which it is refused
    expiry: int


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _seal(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, _LABEL + payload, hashlib.sha256).digest()


def _now(now: float | None) -> float:
    return time.time() if now is None else now


def mint(secret: bytes, jid: str, lifetime: float, now: float | None = None,
         signed_in: float | None = None) -> tuple[str, int]:
    """A token for the bare *jid*, valid *lifetime* seconds: (token, expiry as Unix time).

    *signed_in* is when the user signed in (default: *now*, a fresh sign-in);
    it is written in milliseconds, rounded down.
    """
    if not secret:
        raise TokenError("no [webmail] token_secret is configured")
    now = _now(now)
    signed_in = now if signed_in is None else signed_in
    expiry = int(now + lifetime)
    payload = f"{jid}|{math.floor(signed_in * 1000) / 1000:.3f}|{expiry}".encode()
    return f"{PREFIX}{_b64(payload)}.{_b64(_seal(secret, payload))}", expiry


def renew(secret: bytes, claims: Claims, lifetime: float, max_age: float,
          now: float | None = None) -> tuple[str, int]:
    """A token continuing *claims*' sign-in: the same sign-in time, an expiry
    *lifetime* from *now* but never past sign-in + *max_age*; TokenError once
    that is reached (the user signs in again)."""
    now = _now(now)
    end = claims.signed_in + max_age
    if now >= end:
        raise TokenError("the sign-in is older than [webmail] token_max_age")
    return mint(secret, claims.jid, min(lifetime, end - now), now, claims.signed_in)


def looks_like_token(text: str) -> bool:
    """Whether a password is a login token of either recipe (a cg1 one is then refused)."""
    return text.startswith(PREFIX) or text.startswith("cg1.")


def verify(secret: bytes, token: str, jid: str, now: float | None = None, *,
           max_age: float | None = None, changed: float | None = None) -> Claims:
    """Accept *token* for the bare *jid*, or raise TokenError saying why.

    *max_age*: refuse it that many seconds after its sign-in. *changed*: when
    the user's credentials were last set; refuse it unless it was signed in after.
    """
    if not secret:
        raise TokenError("login tokens are not enabled")
    if not token.startswith(PREFIX):
        raise TokenError("not a cg2 token (the cg1 recipe is no longer accepted)")
    try:
        _, payload_text, seal_text = token.split(".")
        payload, seal = _unb64(payload_text), _unb64(seal_text)
    except (ValueError, binascii.Error):
        raise TokenError("malformed token") from None
    if not hmac.compare_digest(seal, _seal(secret, payload)):
        raise TokenError("forged token")
    fields = payload.decode("utf-8", "replace").rsplit("|", 2)
    if len(fields) != 3 or not _SIGNED_IN.fullmatch(fields[1]) or not _EXPIRY.fullmatch(fields[2]):
        raise TokenError("malformed token")
    claims = Claims(fields[0], float(fields[1]), int(fields[2]))
    if claims.jid != jid:
        raise TokenError("the token is for another user")
    if claims.signed_in > claims.expiry:
        raise TokenError("malformed token")
    now = _now(now)
    if claims.expiry < now:
        raise TokenError("expired token")
    if max_age is not None and claims.signed_in + max_age < now:
        raise TokenError("the sign-in is older than [webmail] token_max_age")
    if changed is not None and claims.signed_in <= changed:
        raise TokenError("revoked: the credentials changed after the sign-in")
    return claims
