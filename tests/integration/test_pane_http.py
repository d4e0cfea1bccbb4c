"""The chat pane's HTTP side, with a plain HTTP client: static files at /chat/
(package data, no listings, a strict CSP), its config, token renewal at
/chat/token, and the public chat-link answer /api/sites/<host>/chat that the
loader asks, with CORS for the configured webmail origins."""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from chatgate.auth.tokens import mint
from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, login, logout

SECRET = "a-webmail-secret-of-at-least-32-characters"
WEBMAIL = "https://mail.example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("pane-http"), webmail={"token_secret": SECRET},
                 http={"cors_origins": WEBMAIL})
    provision(srv)
    srv.admin("site", "add", "mail.example.com")
    srv.admin("site", "add", "private.example.net", "--hide-chat-link")
    srv.start()
    yield srv
    srv.stop()


def fetch(server: Server, path: str, method: str = "GET", headers: dict[str, str] | None = None,
          ) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", method=method,
                                     headers=headers or {}, data=b"" if method == "POST" else None)
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, {k.lower(): v for k, v in answer.headers.items()}, answer.read()
    except urllib.error.HTTPError as e:
        return e.code, {k.lower(): v for k, v in e.headers.items()}, e.read()


def basic(user: str, secret: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()}


def as_json(body: bytes) -> Any:
    return json.loads(body)


def test_the_pane_is_served_with_a_strict_policy(server):
    status, headers, body = fetch(server, "/chat/")
    assert status == 200
    assert headers["content-type"] == "text/html; charset=utf-8"
    assert b'<script type="module" src="js/app.js">' in body
    policy = headers["content-security-policy"]
    assert "script-src 'self'" in policy and "connect-src 'self'" in policy
    assert f"frame-ancestors 'self' {WEBMAIL}" in policy
    assert headers["x-content-type-options"] == "nosniff"
    for path, kind in [("/chat/js/app.js", "text/javascript"), ("/chat/css/pane.css", "text/css"),
                       ("/chat/loader.js", "text/javascript"), ("/chat/conversation.html", "text/html"),
                       ("/chat/vendor/strophe.esm.js", "text/javascript"), ("/chat/icon.svg", "image/svg+xml")]:
        status, headers, _ = fetch(server, path)
        assert (status, headers["content-type"].split(";")[0]) == (200, kind), path
    # no directory listings, nothing outside the folder
    assert fetch(server, "/chat/js/")[0] == 404
    assert fetch(server, "/chat/../chatgate.sqlite")[0] == 404
    assert fetch(server, "/chat/%2e%2e/tap-config.ini")[0] == 404
    # /chat without the slash goes to /chat/
    status, headers, _ = fetch(server, "/chat")
    assert status in (200, 301, 302)


def test_the_pane_config(server):
    status, headers, body = fetch(server, "/chat/config.json")
    assert status == 200
    assert as_json(body) == {"bosh": "/http-bind", "history": "/history", "tokens": True, "token_lifetime": 300.0}
    assert "no-store" in headers["cache-control"]


def test_token_renewal(server):
    # a password buys a token...
    status, _, body = fetch(server, "/chat/token", "POST", basic("alice@example.com", PASSWORD))
    assert status == 200, body
    token = as_json(body)["token"]
    assert token.startswith("cg2.")
    # ...a valid token buys the next one...
    status, _, body = fetch(server, "/chat/token", "POST", basic("alice@example.com", token))
    assert status == 200
    # ...for the same user only, and an expired or wrong one buys nothing
    assert fetch(server, "/chat/token", "POST", basic("bob@example.com", token))[0] == 401
    old, _ = mint(SECRET.encode(), "alice@example.com", -10)
    assert fetch(server, "/chat/token", "POST", basic("alice@example.com", old))[0] == 401
    assert fetch(server, "/chat/token", "POST", basic("alice@example.com", "wrong password"))[0] == 401
    assert fetch(server, "/chat/token", "POST")[0] == 401
    assert fetch(server, "/chat/token", "POST", basic("erin@closed.net", PASSWORD))[0] == 403
    assert fetch(server, "/chat/token", "GET", basic("alice@example.com", PASSWORD))[0] == 405
    assert token not in server.log_text()


@async_test()
async def test_a_renewed_token_signs_in(server):
    status, _, body = fetch(server, "/chat/token", "POST", basic("bob@example.com", PASSWORD))
    bob = await login(server, "bob@example.com/webmail", as_json(body)["token"], mechanism="PLAIN")
    await logout(bob)


def test_renewal_needs_tokens_turned_on(tmp_path):
    srv = Server(tmp_path)
    provision(srv)
    srv.start()
    try:
        status, _, body = fetch(srv, "/chat/token", "POST", basic("alice@example.com", PASSWORD))
        assert status == 409 and "token_secret" in as_json(body)["error"]
        assert fetch(srv, "/chat/token", "POST", basic("alice@example.com", "nope"))[0] == 401
        assert as_json(fetch(srv, "/chat/config.json")[2])["tokens"] is False
    finally:
        srv.stop()


def test_the_public_chat_link_answer(server):
    def ask(host: str, user: str | None, origin: str | None = WEBMAIL) -> tuple[int, dict[str, str], Any]:
        query = f"?user={user}" if user is not None else ""
        headers = {"Origin": origin} if origin else {}
        status, headers, body = fetch(server, f"/api/sites/{host}/chat{query}", headers=headers)
        return status, headers, as_json(body)

    status, headers, body = ask("mail.example.com", "alice@example.com")
    assert (status, body) == (200, {"show": True})
    assert headers["access-control-allow-origin"] == WEBMAIL
    assert "no-store" in headers["cache-control"]
    assert ask("private.example.net", "alice@example.com")[2] == {"show": False}
    # no reason given: a disabled domain and an unknown user look the same to strangers
    assert ask("mail.example.com", "erin@closed.net")[2] == {"show": False}
    assert ask("mail.example.com", "nobody@example.com")[2] == {"show": False}
    # the same errors as the admin API's
    assert ask("unknown.example.org", "alice@example.com")[:3:2] == (404, {"error": "unknown site: unknown.example.org",
                                                                          "field": "site"})
    assert ask("mail.example.com", None)[::2] == (400, {"error": "missing field 'user'", "field": "user"})
    assert ask("mail.example.com", "not-an-address")[0] == 400
    # another origin gets no CORS grant; the preflight is answered
    status, headers, _ = ask("mail.example.com", "alice@example.com", origin="https://evil.example")
    assert status == 200 and "access-control-allow-origin" not in headers
    status, headers, _ = fetch(server, "/api/sites/mail.example.com/chat", "OPTIONS", {"Origin": WEBMAIL})
    assert status == 204 and headers["access-control-allow-origin"] == WEBMAIL
    # nothing else lives there
    assert fetch(server, "/api/sites/mail.example.com")[0] == 404
    assert fetch(server, "/api/sites")[0] == 404
    assert fetch(server, "/api/sites/mail.example.com/chat/more?user=alice@example.com")[0] == 404
    assert fetch(server, "/api/sites/mail.example.com/chat?user=alice@example.com", "POST")[0] == 405


def test_the_chat_link_follows_the_site(server):
    def show() -> bool:
        return as_json(fetch(server, "/api/sites/mail.example.com/chat?user=bob@example.com")[2])["show"]

    assert show()
    server.admin("site", "hide", "mail.example.com")
    try:
        assert not show()
    finally:
        server.admin("site", "show", "mail.example.com")
    assert show()
