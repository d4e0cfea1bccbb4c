"""The chat pane's HTTP side, with a plain HTTP client: static files at /chat/
(package data, no listings, a strict CSP), its config, token renewal at
/chat/token, and the public chat-link answer /api/sites/<host>/chat that the
loader asks, with CORS for the configured webmail origins."""

from __future__ import annotations

import base64
import http.client
import json
import urllib.error
import urllib.parse
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
    assert as_json(body) == {"bosh": "/http-bind", "websocket": "/xmpp-websocket", "history": "/history",
                             "tokens": True, "token_lifetime": 300.0,
                             "upload": {"path": "/upload", "base": f"http://127.0.0.1:{server.http_port}/upload"}}
    assert "no-store" in headers["cache-control"]


def test_the_pane_config_without_websocket(tmp_path):
    """[http] websocket_path empty: config.json says so, and the pane goes to BOSH without trying."""
    srv = Server(tmp_path, http={"websocket_path": ""})
    srv.start()
    try:
        config = as_json(fetch(srv, "/chat/config.json")[2])
        assert (config["bosh"], config["websocket"]) == ("/http-bind", None)
    finally:
        srv.stop()


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


def ask_link(server: Server, host: str, user: str | None, origin: str | None = WEBMAIL,
             credentials: dict[str, str] | None = None) -> tuple[int, dict[str, str], Any]:
    """GET /api/sites/<host>/chat?user=<user>: status, headers, JSON body."""
    query = f"?user={user}" if user is not None else ""
    headers = {"Origin": origin} if origin else {}
    status, headers, body = fetch(server, f"/api/sites/{host}/chat{query}", headers={**headers, **(credentials or {})})
    return status, headers, as_json(body)


def test_the_public_chat_link_answer(server):
    status, headers, body = ask_link(server, "mail.example.com", "alice@example.com")
    assert (status, body) == (200, {"show": True})
    assert headers["access-control-allow-origin"] == WEBMAIL
    assert "no-store" in headers["cache-control"]
    assert ask_link(server, "private.example.net", "alice@example.com")[2] == {"show": False}
    # to a stranger, the site's setting alone: a disabled domain and an unknown user get it too
    assert ask_link(server, "mail.example.com", "erin@closed.net")[2] == {"show": True}
    assert ask_link(server, "mail.example.com", "nobody@example.com")[2] == {"show": True}
    assert ask_link(server, "private.example.net", "nobody@example.com")[2] == {"show": False}
    # the same errors as the admin API's
    assert ask_link(server, "unknown.example.org", "alice@example.com")[::2] == (
        404, {"error": "unknown site: unknown.example.org", "field": "site"})
    assert ask_link(server, "mail.example.com", None)[::2] == (400, {"error": "missing field 'user'", "field": "user"})
    assert ask_link(server, "mail.example.com", "not-an-address")[0] == 400
    # another origin gets no CORS grant; the preflight is answered, and allows credentials
    status, headers, _ = ask_link(server, "mail.example.com", "alice@example.com", origin="https://evil.example")
    assert status == 200 and "access-control-allow-origin" not in headers
    status, headers, _ = fetch(server, "/api/sites/mail.example.com/chat", "OPTIONS",
                               {"Origin": WEBMAIL, "Access-Control-Request-Headers": "authorization"})
    assert status == 204 and headers["access-control-allow-origin"] == WEBMAIL
    assert "Authorization" in headers["access-control-allow-headers"]
    # nothing else lives there
    assert fetch(server, "/api/sites/mail.example.com")[0] == 404
    assert fetch(server, "/api/sites")[0] == 404
    assert fetch(server, "/api/sites/mail.example.com/chat/more?user=alice@example.com")[0] == 404
    assert fetch(server, "/api/sites/mail.example.com/chat?user=alice@example.com", "POST")[0] == 405


#: a chat user, an unknown address of a chat domain, an address of a domain without
#: chat, of a domain chatgate does not host, and the same chat user spelt otherwise
ADDRESSES = ["alice@example.com", "nobody@example.com", "erin@closed.net", "someone@unhosted.example",
             "ALICE@Example.COM"]


def raw_answer(server: Server, path: str, headers: dict[str, str]) -> tuple[int, list[tuple[str, str]], bytes]:
    """One GET over a fresh connection: status, every header line but Date (in order), body."""
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=10)
    try:
        connection.request("GET", path, headers=headers)
        response = connection.getresponse()
        return (response.status, [(k.lower(), v) for k, v in response.getheaders() if k.lower() != "date"],
                response.read())
    finally:
        connection.close()


@pytest.mark.parametrize("host", ["mail.example.com", "private.example.net"])
@pytest.mark.parametrize("origin", [WEBMAIL, None])
def test_a_stranger_cannot_tell_chat_users_from_other_addresses(server, host, origin):
    headers = {"Origin": origin} if origin else {}
    answers = {user: raw_answer(server, f"/api/sites/{host}/chat?user={urllib.parse.quote(user)}", headers)
               for user in ADDRESSES}
    first = answers[ADDRESSES[0]]
    assert first[0] == 200 and as_json(first[2]) == {"show": host == "mail.example.com"}
    for user, answer in answers.items():
        assert answer == first, user  # status, every header but Date, body: byte for byte


def test_a_forged_token_tells_a_stranger_nothing_either(server):
    forged = mint(b"not the webmail's secret, though long enough", "x@example.com", 300)[0]
    answers = {user: raw_answer(server, f"/api/sites/mail.example.com/chat?user={user}", basic(user, forged))
               for user in ADDRESSES[:3]}
    for user, answer in answers.items():
        assert answer == answers[ADDRESSES[0]], user
    assert answers[ADDRESSES[0]][::2] == (401, b'{"error": "wrong address or password"}')


def test_the_user_s_own_token_gets_the_per_user_answer(server):
    def token(user: str) -> dict[str, str]:
        return basic(user, mint(SECRET.encode(), user, 300)[0])

    # a chat user: the admin API's decision for them, per site
    assert ask_link(server, "mail.example.com", "alice@example.com", credentials=token("alice@example.com"))[::2] == (
        200, {"show": True})
    assert ask_link(server, "private.example.net", "bob@example.com", credentials=token("bob@example.com"))[::2] == (
        200, {"show": False})
    # a user whose domain has chat off, or an address that is no chat user: the sign-in is refused, no link
    status, _, body = ask_link(server, "mail.example.com", "erin@closed.net", credentials=token("erin@closed.net"))
    assert status == 403 and "disabled" in body["error"]
    assert ask_link(server, "mail.example.com", "nobody@example.com",
                    credentials=token("nobody@example.com"))[0] == 401
    # a token is for its own user only, and a stale one is refused
    bobs = mint(SECRET.encode(), "bob@example.com", 300)[0]
    assert ask_link(server, "mail.example.com", "alice@example.com",
                    credentials=basic("alice@example.com", bobs))[0] == 401
    status, _, body = ask_link(server, "mail.example.com", "alice@example.com",
                               credentials=basic("bob@example.com", bobs))
    assert (status, body["field"]) == (403, "user")
    stale = basic("alice@example.com", mint(SECRET.encode(), "alice@example.com", -10)[0])
    assert ask_link(server, "mail.example.com", "alice@example.com", credentials=stale)[0] == 401
    assert "cg2." not in server.log_text()


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
