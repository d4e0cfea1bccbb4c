"""Webmail login tokens: one user, one expiry, sealed."""

from __future__ import annotations

import pytest

from chatgate.auth.tokens import TokenError, looks_like_token, mint, verify

SECRET = b"s" * 32


def test_a_token_opens_its_user_until_it_expires():
    token, expiry = mint(SECRET, "alice@example.com", 60, now=1000)
    assert looks_like_token(token) and expiry == 1060
    verify(SECRET, token, "alice@example.com", now=1059)
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
    lambda t: "cg1.!!!.???",
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
