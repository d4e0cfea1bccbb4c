"""The per-domain chat switch, flipped by the admin command while the service runs:
open c2s and BOSH sessions end, logins are refused, and enabling restores."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator

import pytest

from tests.integration.bosh_client import BOSHClient
from tests.integration.conftest import PASSWORD
from tests.integration.harness import LoginFailed, Server, async_test, login, logout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("switch"))
    srv.admin("domain", "add", "switch.example")
    for user in ("sam", "tess"):
        srv.admin("user", "add", f"{user}@switch.example", "--password-stdin", stdin=PASSWORD + "\n")
    srv.start()
    yield srv
    srv.stop()


@async_test(timeout=90)
async def test_disable_closes_c2s_and_bosh_sessions_and_refuses_logins(server):
    sam = await login(server, "sam@switch.example/desk", PASSWORD)
    web = BOSHClient(server.http_port, domain="switch.example", wait=5)
    await asyncio.to_thread(web.login, "tess", PASSWORD, resource="webmail")

    started = time.monotonic()
    await asyncio.to_thread(server.admin, "domain", "disable", "switch.example")
    await sam.wait_closed()
    ended = await asyncio.to_thread(web.wait_ended)
    elapsed = time.monotonic() - started
    assert sam.stream_errors == ["policy-violation"]
    assert (ended.condition, ended.stream_error()) == ("remote-stream-error", "policy-violation")
    assert b"Chat is disabled for switch.example" in ended.raw
    assert elapsed < 5, elapsed  # the feed is polled every 0.2 s here (every 0.5 s by default)

    with pytest.raises(LoginFailed):
        await login(server, "sam@switch.example/again", PASSWORD)
    refused = BOSHClient(server.http_port, domain="switch.example", wait=5)
    with pytest.raises(AssertionError, match="account-disabled"):
        await asyncio.to_thread(refused.login, "tess", PASSWORD)

    await asyncio.to_thread(server.admin, "domain", "enable", "switch.example")
    await asyncio.sleep(1)
    sam = await login(server, "sam@switch.example/back", PASSWORD)
    back = BOSHClient(server.http_port, domain="switch.example", wait=5)
    assert await asyncio.to_thread(back.login, "tess", PASSWORD) == "tess@switch.example/web"
    back.send("<message xmlns='jabber:client' to='sam@switch.example' type='chat'><body>back</body></message>")
    assert (await sam.next_message())["body"] == "back"
    await asyncio.to_thread(back.close)
    await logout(sam)
