"""Credentials change, access ends: a new password or a removed account, made
with chatgate-admin while the service runs, closes the user's c2s and BOSH
sessions and refuses every login token from an earlier sign-in, on every
process sharing the store; a renewed token stops at [webmail] token_max_age."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from chatgate.auth.tokens import verify
from tests.integration.bosh_client import BOSHClient
from tests.integration.conftest import PASSWORD
from tests.integration.harness import Client, LoginFailed, RawClient, Server, async_test, login, logout
from tests.integration.test_pane_http import as_json, basic, fetch

SECRET = "a-webmail-secret-of-at-least-32-characters"
#: refused logins are not locked out (each failure of a user from this address still slows the next)
LENIENT = {"failures_per_account": 1000, "failures_per_address": 100000}
NEW_PASSWORD = "battery staple 43"
DOMAIN = "revoke.example"


def provision(server: Server, *users: str) -> None:
    server.admin("domain", "add", DOMAIN)
    for user in users:
        server.admin("user", "add", f"{user}@{DOMAIN}", "--password-stdin", stdin=PASSWORD + "\n")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("revocation"), webmail={"token_secret": SECRET}, auth=LENIENT)
    provision(srv, "pat", "quinn", "rory")
    srv.start()
    yield srv
    srv.stop()


def admin_token(server: Server, user: str) -> str:
    return server.admin("token", f"{user}@{DOMAIN}").stdout.strip()


def pane_token(server: Server, user: str, secret: str) -> tuple[int, str]:
    """What the pane gets from POST /chat/token for these credentials: (status, token or error)."""
    status, _, body = fetch(server, "/chat/token", "POST", basic(f"{user}@{DOMAIN}", secret))
    answer = as_json(body)
    return status, answer.get("token") or answer.get("error", "")


def bosh(server: Server) -> BOSHClient:
    return BOSHClient(server.http_port, domain=DOMAIN, wait=5)


async def bosh_login(server: Server, user: str, secret: str, resource: str = "webmail") -> BOSHClient:
    web = bosh(server)
    await asyncio.to_thread(web.login, user, secret, resource=resource)
    return web


@dataclass
class Scene:
    """pat signed in at the desk (c2s, password) and in the pane (BOSH, a pane
    token), and quinn, the bystander, at both too."""

    token: str
    desk: Client
    web: BOSHClient
    bystander: Client
    bystander_web: BOSHClient


async def scene(token_from: Server, server: Server) -> Scene:
    """The :class:`Scene` on *server*, pat's pane token bought from *token_from*."""
    status, token = pane_token(token_from, "pat", PASSWORD)
    assert status == 200, token
    return Scene(token, await login(server, f"pat@{DOMAIN}/desk", PASSWORD), await bosh_login(server, "pat", token),
                 await login(server, f"quinn@{DOMAIN}/desk", PASSWORD), await bosh_login(server, "quinn", PASSWORD))


async def new_password(admin: Server, seen: Scene) -> None:
    """chatgate-admin gives pat a new password: both of pat's sessions end with <reset/>."""
    started = time.monotonic()
    await asyncio.to_thread(admin.admin, "user", "passwd", f"pat@{DOMAIN}", "--password-stdin",
                            stdin=NEW_PASSWORD + "\n")
    await assert_ended(seen.desk, seen.web, "reset", started)


async def assert_ended(client: Client, web: BOSHClient, condition: str, started: float) -> None:
    """The c2s *client* and the BOSH session *web* both ended with the stream error *condition*."""
    await client.wait_closed()
    ended = await asyncio.to_thread(web.wait_ended)
    elapsed = time.monotonic() - started
    assert client.stream_errors == [condition]
    assert (ended.condition, ended.stream_error()) == ("remote-stream-error", condition), ended.raw
    assert elapsed < 5, elapsed  # the feed is polled every 0.2 s here (every 0.5 s by default)


async def assert_up(client: Client, web: BOSHClient, peer: Client) -> None:
    """A bystander's c2s and BOSH sessions still carry messages."""
    assert not client.gone.is_set() and client.stream_errors == []
    assert web.ended is None
    peer.send_message(mto=client.boundjid.bare, mbody="still here?", mtype="chat")
    assert (await client.next_message())["body"] == "still here?"
    await asyncio.to_thread(web.wait_for, lambda s: s.findtext("{jabber:client}body") == "still here?")


def refused_by_bosh(server: Server, user: str, secret: str) -> None:
    with pytest.raises(AssertionError, match="not-authorized"):
        bosh(server).login(user, secret)


@async_test(timeout=120)
async def test_new_password_closes_sessions_and_refuses_earlier_tokens(server):
    old_admin_token = admin_token(server, "pat")
    seen = await scene(server, server)
    old_pane_token = seen.token
    await new_password(server, seen)

    with pytest.raises(LoginFailed):
        await login(server, f"pat@{DOMAIN}/again", old_admin_token, mechanism="PLAIN")
    await asyncio.to_thread(refused_by_bosh, server, "pat", old_pane_token)
    assert pane_token(server, "pat", old_pane_token)[0] == 401  # no renewal either
    assert fetch(server, "/history/contacts", headers=basic(f"pat@{DOMAIN}", old_pane_token))[0] == 401
    with pytest.raises(LoginFailed):
        await login(server, f"pat@{DOMAIN}/again", PASSWORD, mechanism="SCRAM-SHA-256")

    back = await login(server, f"pat@{DOMAIN}/back", NEW_PASSWORD)
    status, new_token = pane_token(server, "pat", NEW_PASSWORD)
    assert status == 200, new_token
    web = await bosh_login(server, "pat", new_token)
    await assert_up(seen.bystander, seen.bystander_web, back)
    await asyncio.to_thread(web.close)
    await asyncio.to_thread(seen.bystander_web.close)
    await logout(back, seen.bystander)


@async_test(timeout=120)
async def test_removal_closes_sessions_and_refuses_tokens_also_for_a_new_account_at_the_address(server):
    old_token = admin_token(server, "rory")
    desk = await login(server, f"rory@{DOMAIN}/desk", PASSWORD)
    web = await bosh_login(server, "rory", old_token)
    bystander = await login(server, f"quinn@{DOMAIN}/desk", PASSWORD)
    bystander_web = await bosh_login(server, "quinn", PASSWORD)

    started = time.monotonic()
    await asyncio.to_thread(server.admin, "user", "remove", f"rory@{DOMAIN}")
    await assert_ended(desk, web, "not-authorized", started)
    with pytest.raises(LoginFailed):
        await login(server, f"rory@{DOMAIN}/again", old_token, mechanism="PLAIN")
    await asyncio.to_thread(refused_by_bosh, server, "rory", old_token)

    # someone new gets the address: the old account's token does not open it
    await asyncio.to_thread(server.admin, "user", "add", f"rory@{DOMAIN}", "--password-stdin",
                            stdin=PASSWORD + "\n")
    await asyncio.sleep(0.5)  # the feed tells the service of the new user
    with pytest.raises(LoginFailed):
        await login(server, f"rory@{DOMAIN}/again", old_token, mechanism="PLAIN")
    await asyncio.to_thread(refused_by_bosh, server, "rory", old_token)
    new = await login(server, f"rory@{DOMAIN}/new", admin_token(server, "rory"), mechanism="PLAIN")
    await assert_up(bystander, bystander_web, new)
    await asyncio.to_thread(bystander_web.close)
    await logout(new, bystander)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, Server]]:
    """Two chatgate processes on one SQLite file (the directory, history and offline messages)."""
    first_folder: Path = tmp_path_factory.mktemp("first")
    first = Server(first_folder, webmail={"token_secret": SECRET}, auth=LENIENT)
    second = Server(tmp_path_factory.mktemp("second"), webmail={"token_secret": SECRET}, auth=LENIENT,
                    storage={"path": str(first_folder / "chatgate.sqlite")})
    provision(first, "pat", "quinn")
    first.start()
    second.start()
    yield first, second
    second.stop()
    first.stop()


@async_test(timeout=120)
async def test_a_change_made_beside_one_process_closes_sessions_on_the_other(two_processes):
    first, second = two_processes
    seen = await scene(first, second)  # signed in to the pane through the first, connected to the second
    await new_password(first, seen)
    for server in (first, second):
        with pytest.raises(LoginFailed):
            await login(server, f"pat@{DOMAIN}/again", seen.token, mechanism="PLAIN")
        assert pane_token(server, "pat", seen.token)[0] == 401

    status, new_token = pane_token(second, "pat", NEW_PASSWORD)
    assert status == 200, new_token
    back = await login(first, f"pat@{DOMAIN}/back", new_token, mechanism="PLAIN")
    await logout(back)
    back = await login(second, f"pat@{DOMAIN}/back", NEW_PASSWORD)
    await assert_up(seen.bystander, seen.bystander_web, back)
    await asyncio.to_thread(seen.bystander_web.close)
    await logout(back, seen.bystander)


def test_renewal_keeps_the_sign_in_time_and_stops_at_token_max_age(tmp_path):
    srv = Server(tmp_path, webmail={"token_secret": SECRET, "token_lifetime": 2, "token_max_age": 4})
    provision(srv, "pat")
    srv.start()
    try:
        status, token = pane_token(srv, "pat", PASSWORD)
        assert status == 200, token
        signed_in = verify(SECRET.encode(), token, f"pat@{DOMAIN}").signed_in
        renewals = 0
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            time.sleep(0.5)  # a token lives 1 to 2 s (whole-second expiry): renewed well inside it
            status, renewed = pane_token(srv, "pat", token)
            if status != 200:
                break
            claims = verify(SECRET.encode(), renewed, f"pat@{DOMAIN}")
            assert claims.signed_in == signed_in and claims.expiry <= signed_in + 4
            token, renewals = renewed, renewals + 1
        assert status == 401, renewed
        assert time.time() >= signed_in + 4 - 1.5, "refused before token_max_age"
        assert renewals >= 3
        with pytest.raises(LoginFailed):  # nor does the last one sign in
            asyncio.run(login(srv, f"pat@{DOMAIN}/late", token, mechanism="PLAIN"))
        assert pane_token(srv, "pat", PASSWORD)[0] == 200  # signing in again starts anew
    finally:
        srv.stop()


@async_test(timeout=60)
async def test_a_stream_signed_in_before_a_new_password_is_reset_when_it_binds(server):
    """SASL succeeded with the old password, the resource is bound after the
    change reached the server: the session is reset right after binding."""
    await asyncio.to_thread(server.admin, "user", "add", f"sam@{DOMAIN}", "--password-stdin",
                            stdin=PASSWORD + "\n")
    raw = await RawClient.connect(server.port, domain=DOMAIN)
    await raw.starttls()
    name, _ = await raw.plain("sam", PASSWORD)
    assert name == "success"
    await raw.open()
    await asyncio.to_thread(server.admin, "user", "passwd", f"sam@{DOMAIN}", "--password-stdin",
                            stdin=NEW_PASSWORD + "\n")
    await asyncio.sleep(1.0)  # two poll intervals: this process has learnt of the change
    raw.send("<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'/></iq>")
    answer = await raw.read_to_end(timeout=10)
    assert b"<reset xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in answer, answer
    raw.close()
    # the new password binds and stays
    fresh = await login(server, f"sam@{DOMAIN}/desk", NEW_PASSWORD)
    await asyncio.sleep(0.5)
    assert not fresh.stream_errors
    await logout(fresh)
