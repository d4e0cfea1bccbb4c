"""Webmail login tokens: one user, one sign-in time, one expiry, sealed."""

from __future__ import annotations

import base64
import hashlib
import hmac

import pytest

from chatgate.auth.tokens import TokenError, looks_like_token, mint, renew, verify

SECRET = b"s" * 32
HOUR = 3600.0


def test_a_token_opens_its_user_until_it_expires():
    token, expiry = mint(SECRET, "alice@example.com", 60, now=1000)
    assert looks_like_token(token) and token.startswith("cg2.") and expiry == 1060
    claims = verify(SECRET, token, "alice@example.com", now=1059)
    assert (claims.jid, claims.signed_in, claims.expiry) == ("alice@example.com", 1000.0, 1060)
    with pytest.raises(TokenError, match="expired"):
        verify(SECRET, token, "alice@example.com", now=1061)


def test_a_token_names_exactly_one_user():
    token, _ = mint(SECRET, "alice@example.com", 60)
    with pytest.raises(TokenError, match="another user"):
        verify(SECRET, token, "bob@example.com")
    with pytest.raises(TokenError, match="another user"):
        verify(SECRET, token, "alice@example.co")


@pytest.mark.parametrize("tamper", [
    lambda t: t[:-2] + ("A" if t[-2] != "A" else "B") + t[-1],  # the seal
    lambda t: t.replace(t.split(".")[1], mint(SECRET, "bob@example.com", 60)[0].split(".")[1]),  # the payload
    lambda t: t + ".x",
    lambda t: "cg2.!!!.???",
])
def test_tampered_tokens_are_refused(tamper):
    token, _ = mint(SECRET, "alice@example.com", 60)
    with pytest.raises(TokenError):
        verify(SECRET, tamper(token), "alice@example.com")


def test_another_secret_or_none_refuses():
    token, _ = mint(SECRET, "alice@example.com", 60)
    with pytest.raises(TokenError, match="forged"):
        verify(b"t" * 32, token, "alice@example.com")
    with pytest.raises(TokenError, match="not enabled"):
        verify(b"", token, "alice@example.com")
    with pytest.raises(TokenError):
        mint(b"", "alice@example.com", 60)


def _sealed(prefix: str, label: bytes, payload: bytes) -> str:
    seal = hmac.new(SECRET, label + payload, hashlib.sha256).digest()

    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{prefix}{b64(payload)}.{b64(seal)}"


def test_the_documented_recipe_is_what_verify_accepts():
    """A webmail following the module docstring's recipe (a fraction in signed_in allowed)."""
    token = _sealed("cg2.", b"chatgate login token v2\0", b"alice@example.com|1000.125|1060")
    assert verify(SECRET, token, "alice@example.com", now=1001).signed_in == 1000.125
    for bad in (b"alice@example.com|1000|", b"alice@example.com|10e2|1060", b"alice@example.com|1061|1060",
                b"alice@example.com|1060"):
        with pytest.raises(TokenError, match="malformed"):
            verify(SECRET, _sealed("cg2.", b"chatgate login token v2\0", bad), "alice@example.com", now=1001)


def test_first_recipe_tokens_are_refused():
    """cg1 tokens carry no sign-in time, so they could not be revoked."""
    old = _sealed("cg1.", b"chatgate login token\0", b"alice@example.com|1060")
    assert looks_like_token(old)
    with pytest.raises(TokenError, match="cg1"):
        verify(SECRET, old, "alice@example.com", now=1000)
    relabelled = "cg2." + old[len("cg1."):]
    with pytest.raises(TokenError):
        verify(SECRET, relabelled, "alice@example.com", now=1000)


def test_a_token_from_a_sign_in_before_the_credentials_changed_is_refused():
    token, _ = mint(SECRET, "alice@example.com", 300, now=1000)
    verify(SECRET, token, "alice@example.com", now=1010, changed=999.9)
    with pytest.raises(TokenError, match="revoked"):
        verify(SECRET, token, "alice@example.com", now=1010, changed=1000.0005)
    with pytest.raises(TokenError, match="revoked"):  # the same millisecond: refused
        verify(SECRET, token, "alice@example.com", now=1010, changed=1000)
    later, _ = mint(SECRET, "alice@example.com", 300, now=1000.002)
    verify(SECRET, later, "alice@example.com", now=1010, changed=1000.0005)


def test_no_token_stands_for_a_sign_in_older_than_max_age():
    token, _ = mint(SECRET, "alice@example.com", 24 * HOUR, now=0)
    verify(SECRET, token, "alice@example.com", now=12 * HOUR, max_age=12 * HOUR)
    with pytest.raises(TokenError, match="token_max_age"):
        verify(SECRET, token, "alice@example.com", now=12 * HOUR + 1, max_age=12 * HOUR)


def test_a_renewed_token_keeps_the_sign_in_time_and_stops_at_max_age():
    token, _ = mint(SECRET, "alice@example.com", 300, now=1000.5)
    now = 1000.5
    for _ in range(5):  # renewed at half life, as the pane does
        now += 150
        claims = verify(SECRET, token, "alice@example.com", now=now, max_age=HOUR)
        token, expiry = renew(SECRET, claims, 300, HOUR, now=now)
        renewed = verify(SECRET, token, "alice@example.com", now=now, max_age=HOUR)
        assert renewed.signed_in == 1000.5 and expiry == int(now + 300)
    late = 1000.5 + HOUR - 100
    token, expiry = renew(SECRET, claims, 300, HOUR, now=late)
    assert expiry == int(1000.5 + HOUR)  # never past the sign-in's max age
    claims = verify(SECRET, token, "alice@example.com", now=late + 90, max_age=HOUR)
    with pytest.raises(TokenError, match="token_max_age"):
        renew(SECRET, claims, 300, HOUR, now=1000.5 + HOUR)
    with pytest.raises(TokenError, match="expired"):
        verify(SECRET, token, "alice@example.com", now=1000.5 + HOUR + 1, max_age=HOUR)
