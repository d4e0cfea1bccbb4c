"""Structured logs: with ``[log] format = json`` every line twistd writes is one JSON
object, the events a collector alerts on carry their stable names and fields,
and no password or token appears anywhere; SIGHUP raises the level live."""

from __future__ import annotations

import json
import signal
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import LoginFailed, Server, async_test, free_port, login, logout

WRONG = "not-the-password-4711"
TOKEN_SECRET = "json-logs-token-secret-0123456789abcdef"
API_KEY = "json-logs-admin-key-0123456789abcdef"


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    admin_port = free_port()
    srv = Server(tmp_path, log={"format": "json", "level": "info"}, webmail={"token_secret": TOKEN_SECRET},
                 admin={"api_key": API_KEY, "port": admin_port})
    srv.admin_port = admin_port
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


def records(server: Server) -> list[dict]:
    lines = [line for line in server.log_text().splitlines() if line.strip()]
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except ValueError:
            raise AssertionError(f"not a JSON line: {line!r}") from None
    return parsed


def wait_for(server: Server, found, timeout: float = 10) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        got = records(server)
        if found(got):
            return got
        assert time.monotonic() < deadline, json.dumps(got[-10:], indent=1)
        time.sleep(0.1)


@async_test(timeout=90)
async def test_every_line_is_json_with_the_events_and_no_secret(server):
    with pytest.raises(LoginFailed):
        await login(server, "carol@example.com", WRONG, mechanism="PLAIN")
    alice = await login(server, "alice@example.com/desk", PASSWORD)
    bob = await login(server, "bob@example.com/desk", PASSWORD)
    alice.send_message(mto="bob@example.com", mbody="hello", mtype="chat")
    await bob.next_message()
    await logout(alice, bob)
    server.admin("domain", "disable", "example.com")
    server.admin("domain", "enable", "example.com")
    token = server.admin("token", "bob@example.com").stdout.strip()
    assert len(token) > 20
    with_token = await login(server, "bob@example.com/token", token, mechanism="PLAIN")  # a token is a password
    await logout(with_token)
    admin = f"http://127.0.0.1:{server.admin_port}/api/domains/example.com"
    for key in ("a-wrong-admin-key", API_KEY):
        request = urllib.request.Request(admin, method="PATCH", data=b'{"chat_enabled": true}', headers={
            "Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        try:
            urllib.request.urlopen(request, timeout=10).close()
        except urllib.error.HTTPError as e:
            assert e.code == 401

    got = wait_for(server, lambda rs: sum(r.get("event") == "domain-switch" for r in rs) >= 2
                   and sum(r.get("event") == "logout" for r in rs) >= 3
                   and any(r.get("via") == "api" for r in rs))
    assert all({"time", "level", "system", "message"} <= r.keys() for r in got)
    logins = [r for r in got if r.get("event") == "login"]
    assert {r["jid"] for r in logins} >= {"alice@example.com", "bob@example.com"}
    assert all(r["transport"] == "c2s" and r["peer"] for r in logins)
    refused = [r for r in got if r.get("event") == "login-refused"]
    assert refused and refused[0]["condition"] == "not-authorized" and refused[0]["mechanism"] == "PLAIN"
    assert refused[0]["domain"] == "example.com"
    assert {r["jid"].split("/")[0] for r in got if r.get("event") == "logout"} >= {"alice@example.com",
                                                                                   "bob@example.com"}
    assert [r["via"] for r in got if r.get("event") == "admin-change"][-1] == "api"
    assert "bob@example.com/token" in {r.get("jid") for r in got if r.get("event") == "logout"}
    switches = [r for r in got if r.get("event") == "domain-switch"]
    assert [r["state"] for r in switches[-2:]] == ["disabled", "enabled"]
    text = server.log_text()
    for secret in (PASSWORD, WRONG, token, TOKEN_SECRET, API_KEY, "a-wrong-admin-key"):
        assert secret not in text


@async_test(timeout=60)
async def test_sighup_changes_the_level_and_json_stays(server):
    text = server.config.read_text()
    server.config.write_text(text.replace("level = info", "level = warn"))
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)
    time.sleep(1.0)  # the reload's own line is at info: left out now
    before = len(records(server))
    client = await login(server, "alice@example.com/quiet", PASSWORD)
    await logout(client)
    time.sleep(0.5)
    after = records(server)
    assert not [r for r in after[before:] if r.get("event") in ("login", "logout")]
    assert all(r["level"] in ("warn", "error", "critical") for r in after[before:])


@async_test(timeout=60)
async def test_the_level_filters_text_lines_too(tmp_path):
    """At the default format (text), [log] level leaves lines out as well, and SIGHUP changes it."""
    srv = Server(tmp_path)
    provision(srv)
    srv.start()
    try:
        client = await login(srv, "alice@example.com/loud", PASSWORD)
        await logout(client)
        deadline = time.monotonic() + 10
        while "logout alice@example.com/loud" not in srv.log_text():
            assert time.monotonic() < deadline, srv.log_text()[-2000:]
            time.sleep(0.1)
        srv.config.write_text(srv.config.read_text() + "[log]\nlevel = warn\n")
        assert srv.process is not None
        srv.process.send_signal(signal.SIGHUP)
        time.sleep(1.0)
        client = await login(srv, "alice@example.com/quiet", PASSWORD)
        await logout(client)
        time.sleep(0.5)
        text = srv.log_text()
        assert "login alice@example.com" in text and "alice@example.com/quiet" not in text
        assert not text.lstrip().startswith("{")  # text lines, as twistd writes them
    finally:
        srv.stop()
