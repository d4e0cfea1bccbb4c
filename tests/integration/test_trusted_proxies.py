"""Client addresses behind a reverse proxy, over real HTTP against twistd chatgate.

The test plays the proxy on 127.0.0.1: it appends the address of the client
it speaks for to ``X-Forwarded-For``, as nginx does. With 127.0.0.1 in
``[http] trusted_proxies`` BOSH, ``/history/`` and ``/chat/token`` all count,
throttle, lock out and log that client address; with no trusted proxy (the
default) the header changes nothing, however a guesser rotates it.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator

import pytest

from tests.integration.bosh_client import SASL, Answer, BOSHClient, body, post
from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server

#: a guesser and an honest user, both behind the same proxy
GUESSER = "203.0.113.7"
USER = "198.51.100.9"
LIMITS = {"failures_per_account": 3, "failures_per_address": 6, "lockout": 120}


def _server(folder, **http: str) -> Iterator[Server]:
    srv = Server(folder, auth=LIMITS, limits={"max_preauth_per_address": 4},
                 webmail={"token_secret": "a-webmail-secret-of-at-least-32-characters"}, http=http)
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def proxied(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """chatgate behind a proxy on 127.0.0.1 that it trusts."""
    yield from _server(tmp_path_factory.mktemp("proxied"), trusted_proxies="127.0.0.1, ::1")


@pytest.fixture(scope="module")
def direct(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """chatgate with no trusted proxy: X-Forwarded-For is anyone's text."""
    yield from _server(tmp_path_factory.mktemp("direct"))


def via(*clients: str) -> dict[str, str]:
    """The header a proxy sends for a client (after whatever the client wrote itself)."""
    return {"X-Forwarded-For": ", ".join(clients)} if clients else {}


def basic(user: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()}


def history(server: Server, user: str, password: str, *clients: str) -> int:
    """The status of GET /history/contacts with these credentials, from *clients*."""
    return post(server.http_port, b"", {**basic(user, password), **via(*clients)}, method="GET",
                path="/history/contacts").status


def token(server: Server, user: str, password: str, *clients: str) -> int:
    """The status of POST /chat/token with these credentials, from *clients*."""
    return post(server.http_port, b"", {**basic(user, password), **via(*clients)}, path="/chat/token").status


def bosh(server: Server, localpart: str, password: str, *clients: str) -> str:
    """A BOSH SASL PLAIN attempt from *clients*: "success" or the SASL failure's condition.
    The session is ended after it, so that it holds no unauthenticated slot."""
    client = BOSHClient(server.http_port, wait=2, headers=via(*clients))
    created = client.create()
    assert client.sid, created.raw
    try:
        auth = base64.b64encode(f"\0{localpart}\0{password}".encode()).decode()
        answer = client.request(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{auth}</auth>")
        return _outcome(answer)
    finally:
        client.request(type="terminate")


def _outcome(answer: Answer) -> str:
    assert answer.body is not None, answer.raw
    if answer.body.find(f"{{{SASL}}}success") is not None:
        return "success"
    failure = answer.body.find(f"{{{SASL}}}failure")
    assert failure is not None, answer.raw
    return next(child for child in failure if not child.tag.endswith("}text")).tag.split("}")[1]


def bosh_session(server: Server, *clients: str) -> Answer:
    return post(server.http_port, body(rid=1, to="example.com", wait=2, hold=1), via(*clients))


# -- behind a trusted proxy


def test_a_guesser_is_locked_out_while_a_user_behind_the_same_proxy_signs_in(proxied):
    # carol's password guessed from GUESSER, once on each endpoint: one count, one address
    assert bosh(proxied, "carol", "guess 1", GUESSER) == "not-authorized"
    assert history(proxied, "carol@example.com", "guess 2", GUESSER) == 401
    assert token(proxied, "carol@example.com", "guess 3", GUESSER) == 401
    # locked there: even the right password is refused, on every endpoint
    assert bosh(proxied, "carol", PASSWORD, GUESSER) == "temporary-auth-failure"
    assert history(proxied, "carol@example.com", PASSWORD, GUESSER) == 429
    assert token(proxied, "carol@example.com", PASSWORD, GUESSER) == 429
    # what the guesser writes itself left of the proxy's entry changes nothing
    for forged in ("192.0.2.1", "192.0.2.2", USER, "127.0.0.1"):
        assert history(proxied, "carol@example.com", PASSWORD, forged, GUESSER) == 429
    assert bosh(proxied, "carol", PASSWORD, USER, GUESSER) == "temporary-auth-failure"
    # carol herself, through the same proxy, signs in everywhere
    client = BOSHClient(proxied.http_port, wait=2, headers=via(USER))
    assert client.login("carol", PASSWORD, presence=False, poll=False) == "carol@example.com/web"
    client.request(type="terminate")
    assert history(proxied, "carol@example.com", PASSWORD, USER) == 200
    assert token(proxied, "carol@example.com", PASSWORD, USER) == 200
    # and so does anyone the proxy itself speaks for without the header
    assert history(proxied, "carol@example.com", PASSWORD) == 200
    # the logs name the client, and the proxy it came through
    log = proxied.log_text()
    assert f"refused login to example.com from {GUESSER} via 127.0.0.1:" in log
    assert "(http /history/contacts): temporary-auth-failure" in log
    assert "(http /chat/token): not-authorized" in log
    assert not [line for line in log.splitlines() if "refused login" in line and USER in line]


def test_a_guesser_of_many_accounts_locks_only_its_own_address(proxied):
    guesser = "203.0.113.8"
    for user in ("alice@example.com", "bob@example.com", "dave@other.org"):
        assert history(proxied, user, "guess a", guesser) == 401
        assert token(proxied, user, "guess b", guesser) == 401
    # six failures: the address is locked for every account, a fresh one too
    assert history(proxied, "carol@example.com", "guess c", guesser) == 429
    assert bosh(proxied, "alice", PASSWORD, guesser) == "temporary-auth-failure"
    # the proxy's other users are not
    assert history(proxied, "alice@example.com", PASSWORD, USER) == 200
    assert bosh(proxied, "bob", PASSWORD, USER) == "success"
    assert token(proxied, "dave@other.org", PASSWORD, "198.51.100.10") == 200


def test_unauthenticated_sessions_are_counted_per_client_address(proxied):
    crowd = "203.0.113.9"
    held = [bosh_session(proxied, crowd) for _ in range(4)]
    assert all(answer.get("sid") for answer in held)
    refused = bosh_session(proxied, crowd)
    assert refused.stream_error() == "policy-violation", refused.raw
    # the next client of the same proxy is not refused
    other = bosh_session(proxied, "198.51.100.11")
    assert other.get("sid"), other.raw
    for answer in [*held, other]:
        post(proxied.http_port, body(rid=2, sid=answer.get("sid"), type="terminate"))


# -- no trusted proxy: the header is ignored


def test_without_trusted_proxies_a_forged_header_changes_nothing(direct):
    assert history(direct, "carol@example.com", "guess 1", "192.0.2.1") == 401
    assert token(direct, "carol@example.com", "guess 2", "192.0.2.2") == 401
    assert bosh(direct, "carol", "guess 3", "192.0.2.3") == "not-authorized"
    # locked at the address it really comes from; a new header each time is no escape
    for n in range(4, 10):
        assert history(direct, "carol@example.com", PASSWORD, f"192.0.2.{n}") == 429
    assert token(direct, "carol@example.com", PASSWORD, "198.51.100.9") == 429
    assert bosh(direct, "carol", PASSWORD, "198.51.100.9") == "temporary-auth-failure"
    log = direct.log_text()
    assert "refused login to example.com from 127.0.0.1:" in log
    assert "192.0.2." not in log and "198.51.100.9" not in log
