"""chatgate.jid: user and domain addresses, RFC 7622 §3 plus DNS host names."""

from __future__ import annotations

import pytest

from chatgate.jid import parse_domain, parse_user


@pytest.mark.parametrize(
    "text, expected",
    [
        ("alice@example.com", ("alice", "example.com")),
        ("Alice@Example.COM", ("alice", "example.com")),
        ("alice.smith-jr_2@mail.example.co.uk", ("alice.smith-jr_2", "mail.example.co.uk")),
        ("alice@example.com.", ("alice", "example.com")),  # §3.2: a final dot is stripped
        ("Jürgen@München.de", ("jürgen", "münchen.de")),
        ("a@xn--mnchen-3ya.de", ("a", "xn--mnchen-3ya.de")),
        ("x" * 1023 + "@example.com", ("x" * 1023, "example.com")),
    ],
)
def test_good_user_addresses_are_prepared(text, expected):
    assert parse_user(text) == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "missing localpart"),
        ("alice", "missing localpart"),
        ("example.com", "missing localpart"),
        ("@example.com", "missing localpart"),
        ("alice@", "missing domain"),
        ("alice@example.com/desk", "resource"),
        ("alice@example.com/", "resource"),
        ("al ice@example.com", "invalid character ' ' in localpart"),
        ('"alice"@example.com', "invalid character '\"' in localpart"),
        ("alice@bob@example.com", "invalid character '@' in domain"),
        ("alice:x@example.com", "invalid character ':' in localpart"),
        ("\u00ad@example.com", "empty localpart"),  # soft hyphen maps to nothing
        ("x" * 1024 + "@example.com", "longer than 1023 bytes"),
        ("\u00e9" * 512 + "@example.com", "longer than 1023 bytes"),  # counted in UTF-8 bytes
        ("alice@localhost", "at least one dot"),
        ("alice@example..com", "empty label"),
        ("alice@.example.com", "empty label"),
        ("alice@-example.com", "hyphen"),
        ("alice@example-.com", "hyphen"),
        ("alice@ex_ample.com", "invalid character '_' in domain"),
        ("alice@" + "a" * 64 + ".com", "not 1-63 letters"),
        ("alice@" + "ü" * 60 + ".de", "not a valid internationalized label"),
        ("alice@" + ".".join(["a" * 63] * 4) + ".com", "longer than 253 characters"),
        ("alice@192.0.2.1", "IP address"),
        ("alice@[2001:db8::1]", "IP address"),
        ("alice@2001:db8::1", "IP address"),
        ("alice@example.123", "IP address"),
    ],
)
def test_bad_user_addresses_say_why(text, reason):
    with pytest.raises(ValueError, match="^invalid address ") as error:
        parse_user(text)
    message = str(error.value)
    assert reason in message
    assert "\n" not in message


def test_the_message_names_the_value_cut_short():
    with pytest.raises(ValueError) as error:
        parse_user("a b" + "c" * 500 + "@example.com")
    assert "'a bccc" in str(error.value)
    assert len(str(error.value)) < 200


@pytest.mark.parametrize(
    "text, expected",
    [
        ("example.com", "example.com"),
        ("EXAMPLE.Com", "example.com"),
        ("chat.example.org.", "chat.example.org"),
    ],
)
def test_good_domains_are_prepared(text, expected):
    assert parse_domain(text) == expected


@pytest.mark.parametrize(
    "text, reason",
    [
        ("", "missing domain"),
        ("example", "at least one dot"),
        ("alice@example.com", "invalid character '@' in domain"),
        ("example.com/x", "invalid character '/' in domain"),
        ("127.0.0.1", "IP address"),
        ("a..b", "empty label"),
        ("exa mple.com", "invalid character ' ' in domain"),
    ],
)
def test_bad_domains_say_why(text, reason):
    with pytest.raises(ValueError, match="^invalid domain ") as error:
        parse_domain(text)
    assert reason in str(error.value)
