"""The admin HTTP API, called as a control panel would: plain HTTP with JSON."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import LoginFailed, Server, async_test, free_port, login, logout

KEY = "an-admin-key-that-is-long-enough-0123456789"
SECRET = "a-webmail-secret-of-at-least-32-characters"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    admin_port = free_port()
    srv = Server(tmp_path_factory.mktemp("adminapi"), admin={"port": admin_port, "api_key": KEY},
                 webmail={"token_secret": SECRET})
    srv.admin_port = admin_port
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


def call(server: Server, method: str, path: str, body: object = None, key: str | None = KEY,
         content_type: str = "application/json") -> tuple[int, object]:
    data = None if body is None else (body if isinstance(body, bytes) else json.dumps(body).encode())
    request = urllib.request.Request(f"http://127.0.0.1:{server.admin_port}{path}", data=data, method=method)
    if data is not None:
        request.add_header("Content-Type", content_type)
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            text = response.read()
            return response.status, json.loads(text) if text else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_calls_without_the_key_are_refused(server):
    assert call(server, "GET", "/api/domains", key=None)[0] == 401
    status, error = call(server, "GET", "/api/domains", key="wrong")
    assert status == 401 and "admin key" in error["error"]


def test_domains(server):
    status, domains = call(server, "GET", "/api/domains")
    assert status == 200 and {"name": "closed.net", "chat_enabled": False} in domains
    assert call(server, "POST", "/api/domains", {"name": "New.Example"}) == (
        201, {"name": "new.example", "chat_enabled": True})
    assert call(server, "POST", "/api/domains", {"name": "new.example"})[0] == 409
    status, error = call(server, "POST", "/api/domains", {"name": "localhost"})
    assert status == 400 and error["field"] == "domain" and "dot" in error["error"]
    assert call(server, "POST", "/api/domains", {})[1] == {"error": "missing field 'name'", "field": "name"}
    assert call(server, "PATCH", "/api/domains/new.example", {"chat_enabled": False})[0] == 200
    assert call(server, "PATCH", "/api/domains/new.example", {"chat_enabled": "no"})[1]["field"] == "chat_enabled"
    assert call(server, "PATCH", "/api/domains/nowhere.example", {"chat_enabled": True})[0] == 404


@async_test()
async def test_users_and_passwords(server):
    status, user = call(server, "POST", "/api/users", {"jid": "gina@example.com", "password": "first pw",
                                                       "name": "Gina Gold", "department": "Sales"})
    assert status == 201 and user["name"] == "Gina Gold"
    assert call(server, "POST", "/api/users", {"jid": "gina@example.com", "password": "x"})[0] == 409
    status, error = call(server, "POST", "/api/users", {"jid": "not an address", "password": "x"})
    assert status == 400 and error["field"] == "jid"
    assert call(server, "POST", "/api/users", {"jid": "h@example.com", "password": ""})[1]["field"] == "password"
    assert call(server, "POST", "/api/users", {"jid": "h@nowhere.example", "password": "x"})[0] == 404
    status, error = call(server, "POST", "/api/users", {"jid": "h@example.com", "password": "x", "name": "H\u0001"})
    assert (status, error["field"]) == (400, "name")
    status, users = call(server, "GET", "/api/domains/example.com/users")
    assert any(u["jid"] == "gina@example.com" and u["department"] == "Sales" for u in users)
    desk = await login(server, "gina@example.com/desk", "first pw")
    token = call(server, "POST", "/api/tokens", {"user": "gina@example.com"})[1]["token"]
    assert call(server, "PUT", "/api/users/gina@example.com/password", {"password": "second pw"})[0] == 204
    await desk.wait_closed()  # a new password ends the sessions (features/revocation.py)
    assert desk.stream_errors == ["reset"]
    gina = await login(server, "gina@example.com/api", "second pw")
    with pytest.raises(LoginFailed):
        await login(server, "gina@example.com/api", "first pw")
    with pytest.raises(LoginFailed):  # nor a token from before
        await login(server, "gina@example.com/pane", token, mechanism="PLAIN")
    assert call(server, "DELETE", "/api/users/gina@example.com")[0] == 204
    await gina.wait_closed()
    assert gina.stream_errors == ["not-authorized"]
    assert call(server, "DELETE", "/api/users/gina@example.com")[0] == 404


def test_aliases(server):
    status, alias = call(server, "POST", "/api/aliases/team@example.com/members",
                         {"members": ["alice@example.com", "bob@example.com"], "name": "The Team"})
    assert status == 200 and alias == {"jid": "team@example.com", "name": "The Team",
                                       "members": ["alice@example.com", "bob@example.com"]}
    assert call(server, "DELETE", "/api/aliases/team@example.com/members", {"members": ["bob@example.com"]})[1][
        "members"] == ["alice@example.com"]
    assert call(server, "GET", "/api/domains/example.com/aliases")[1][0]["jid"] == "team@example.com"
    status, error = call(server, "POST", "/api/aliases/team@example.com/members", {"members": ["dave@other.org"]})
    assert status == 400 and error["field"] == "members"
    assert call(server, "DELETE", "/api/aliases/team@example.com")[0] == 204
    assert call(server, "GET", "/api/aliases/team@example.com")[0] == 404


def test_chat_link_for_every_combination(server):
    assert call(server, "PUT", "/api/sites/mail.reseller.net", {"owner": "Reseller"})[1] == {
        "host": "mail.reseller.net", "owner": "Reseller", "show_chat_link": True}

    def link(user: str) -> tuple[int, object]:
        return call(server, "GET", f"/api/sites/mail.reseller.net/chat?user={user}")

    assert link("alice@example.com") == (200, {"show": True, "reason": "chat is available"})
    assert link("erin@closed.net") == (200, {"show": False, "reason": "chat is disabled for closed.net"})
    assert link("nobody@example.com")[1]["show"] is False
    call(server, "PUT", "/api/sites/mail.reseller.net", {"show_chat_link": False})
    assert link("alice@example.com") == (200, {"show": False, "reason": "the site hides the chat link"})
    assert link("erin@closed.net")[1]["show"] is False
    assert call(server, "GET", "/api/sites/unknown.example/chat?user=alice@example.com")[0] == 404
    assert call(server, "GET", "/api/sites/mail.reseller.net/chat")[1]["field"] == "user"
    assert call(server, "GET", "/api/sites")[1][0]["show_chat_link"] is False
    assert call(server, "DELETE", "/api/sites/mail.reseller.net")[0] == 204


@async_test()
async def test_tokens_sign_users_in(server):
    status, minted = call(server, "POST", "/api/tokens", {"user": "bob@example.com"})
    assert status == 201 and minted["token"].startswith("cg2.") and minted["expires"] > 0
    bob = await login(server, "bob@example.com/pane", minted["token"], mechanism="PLAIN")
    await logout(bob)
    assert call(server, "POST", "/api/tokens", {"user": "nobody@example.com"})[0] == 404
    assert call(server, "POST", "/api/tokens", {"user": "bob@example.com", "lifetime": "1"})[1]["field"] == "lifetime"
    status, error = call(server, "POST", "/api/tokens", {"user": "bob@example.com", "lifetime": 86400})
    assert (status, error["field"]) == (400, "lifetime") and "token_max_age" in error["error"]
    assert minted["token"] not in server.log_text() and PASSWORD not in server.log_text()


def test_bad_requests(server):
    assert call(server, "POST", "/api/domains", b"{not json")[0] == 400
    assert call(server, "POST", "/api/domains", b"[]")[1]["error"] == "the body must be a JSON object"
    assert call(server, "POST", "/api/domains", {"name": "x.example"}, content_type="text/plain")[0] == 415
    assert call(server, "GET", "/api/nothing")[0] == 404
    assert call(server, "DELETE", "/api/domains")[0] == 405
    assert call(server, "POST", "/api/domains", b"{" + b" " * 70000 + b"}")[0] == 413
