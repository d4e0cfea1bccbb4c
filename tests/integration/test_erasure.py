"""A removed mailbox takes its chat history with it, unless a legal hold keeps it.

Removing a user erases their archive (MAM), offline messages and uploads, so
a new person given the same address (``sales1@…``) starts empty, while the
other party keeps their own copy. A legal hold on the user (or the domain)
keeps everything through the removal, refuses to give the address to someone
else, and lifting it erases what it kept. chatgate-admin and the admin API
alike, against a running server, over real sockets."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, free_port, login, logout
from tests.integration.test_history import mam

KEY = "erasure-test-admin-key-0123456789abcdef"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    admin_port = free_port()
    srv = Server(tmp_path_factory.mktemp("erasure"), admin={"port": admin_port, "api_key": KEY})
    srv.admin_port = admin_port
    provision(srv)
    for name in ("dave", "erin", "frank"):
        srv.admin("user", "add", f"{name}@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    srv.start()
    yield srv
    srv.stop()


def api(server: Server, method: str, path: str, body: dict | None = None) -> tuple[int, object]:
    request = urllib.request.Request(f"http://127.0.0.1:{server.admin_port}{path}", method=method,
                                     data=None if body is None else json.dumps(body).encode())
    request.add_header("Authorization", f"Bearer {KEY}")
    request.add_header("Content-Type", "application/json")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            data = answer.read()
            return answer.status, json.loads(data) if data else None
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null")


async def chat(server: Server, one: str, other: str) -> None:
    """A message each way between two users, both archived before the clients leave."""
    a = await login(server, f"{one}/desk", PASSWORD)
    b = await login(server, f"{other}/desk", PASSWORD)
    a.send_message(mto=other, mbody=f"from {one}", mtype="chat")
    await b.next_message()
    b.send_message(mto=one, mbody=f"from {other}", mtype="chat")
    await a.next_message()
    await logout(a, b)


async def bodies(server: Server, owner: str, contact: str) -> list[str]:
    client = await login(server, f"{owner}/reader", PASSWORD)
    page = await mam(client, with_jid=contact)
    await logout(client)
    return [m.xml.findtext(".//{jabber:client}body") for m in page.results]


@async_test(timeout=120)
async def test_a_removed_user_s_history_goes_and_a_new_user_of_the_address_starts_empty(server):
    await chat(server, "alice@example.com", "dave@example.com")
    assert await bodies(server, "dave@example.com", "alice@example.com") == ["from alice@example.com",
                                                                              "from dave@example.com"]
    removed = server.admin("user", "remove", "dave@example.com")
    assert "erased 2 archived messages" in removed.stdout
    server.admin("user", "add", "dave@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    assert await bodies(server, "dave@example.com", "alice@example.com") == []
    # alice's copy is hers
    assert await bodies(server, "alice@example.com", "dave@example.com") == ["from alice@example.com",
                                                                              "from dave@example.com"]

    # the same through the admin API
    await chat(server, "bob@example.com", "frank@example.com")
    assert api(server, "DELETE", "/api/users/frank@example.com")[0] == 204
    assert api(server, "POST", "/api/users", {"jid": "frank@example.com", "password": PASSWORD})[0] == 201
    assert await bodies(server, "frank@example.com", "bob@example.com") == []
    assert len(await bodies(server, "bob@example.com", "frank@example.com")) == 2


@async_test(timeout=120)
async def test_a_legal_hold_keeps_history_through_removal_until_it_is_lifted(server):
    await chat(server, "carol@example.com", "erin@example.com")
    held = server.admin("hold", "add", "erin@example.com", "--reason", "case 2026-17")
    assert "legal hold on erin@example.com" in held.stdout
    listing = server.admin("hold", "list", "example.com").stdout.splitlines()
    assert [line.split("\t")[0] for line in listing] == ["erin@example.com"]
    assert listing[0].split("\t")[3] == "case 2026-17"

    removed = server.admin("user", "remove", "erin@example.com")
    assert "history kept: legal hold on erin@example.com" in removed.stdout
    # the address cannot go to someone else while its history is held
    refused = server.admin("user", "add", "erin@example.com", "--password-stdin", stdin=PASSWORD + "\n",
                           check=False)
    assert refused.returncode == 1 and "legal hold" in refused.stderr
    status, answer = api(server, "POST", "/api/users", {"jid": "erin@example.com", "password": PASSWORD})
    assert status == 409 and "legal hold" in answer["error"]

    lifted = server.admin("hold", "remove", "erin@example.com")
    assert "erased 2 archived messages" in lifted.stdout
    server.admin("user", "add", "erin@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    assert await bodies(server, "erin@example.com", "carol@example.com") == []
    assert len(await bodies(server, "carol@example.com", "erin@example.com")) == 2

    # holds and retention through the API: a whole domain, recorded with who and why
    status, hold = api(server, "PUT", "/api/holds/example.com", {"reason": "audit", "by": "counsel@example.com"})
    assert status == 200 and hold["target"] == "example.com" and hold["by"] == "counsel@example.com"
    assert [h["target"] for h in api(server, "GET", "/api/domains/example.com/holds")[1]] == ["example.com"]
    assert api(server, "DELETE", "/api/holds/example.com")[0] == 204
    assert api(server, "DELETE", "/api/holds/example.com")[0] == 404
    assert api(server, "PATCH", "/api/domains/example.com", {"retention_days": 365})[1] == {
        "name": "example.com", "retention_days": 365}
    assert api(server, "PATCH", "/api/domains/example.com", {"retention_days": -1})[0] == 400
    assert "kept 30 days" in server.admin("domain", "set", "example.com", "--retention-days", "30").stdout
    assert "the server's retention" in server.admin("domain", "set", "example.com", "--retention-days",
                                                    "default").stdout
    bad = server.admin("domain", "set", "example.com", "--retention-days", "forever", check=False)
    assert bad.returncode == 1 and "whole number" in bad.stderr
