"""Ports, TLS modes and liveness: extra ports, direct TLS (XEP-0368), the
dead-peer ping (XEP-0199) and the pre-authentication timeout."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Client, RawClient, Server, async_test, free_port, login, logout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    extra, direct = free_port(), free_port()
    srv = Server(
        tmp_path_factory.mktemp("liveness"),
        xmpp={"extra_ports": extra, "direct_tls_port": direct, "ping_interval": 2, "ping_timeout": 1,
              "auth_timeout": 2},
    )
    srv.extra_port, srv.direct_port = extra, direct
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


@async_test()
async def test_silent_client_is_pinged_then_dropped_and_goes_unavailable(server):
    bob = await login(server, "bob@example.com/watch", PASSWORD)
    raw = await RawClient.connect(server.port)
    assert await raw.login("carol", PASSWORD, "silent") == "carol@example.com/silent"
    raw.send("<presence/>")
    await bob.wait_presence(lambda p: p["from"] == "carol@example.com/silent")
    # carol never answers: the server pings her, then closes the stream
    answer = await raw.read_to_end(timeout=15)
    assert b"urn:xmpp:ping" in answer
    assert b"<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'" in answer
    await bob.wait_presence(lambda p: p["from"] == "carol@example.com/silent" and p["type"] == "unavailable")
    # bob's client answers pings and is still connected after several intervals
    await asyncio.sleep(5)
    bob.send_message(mto="bob@example.com/watch", mbody="alive", mtype="chat")
    assert (await bob.next_message())["body"] == "alive"
    await logout(bob)


@async_test()
async def test_unauthenticated_connection_times_out(server):
    raw = await RawClient.connect(server.port)
    await raw.open()
    answer = await raw.read_to_end(timeout=10)
    assert b"<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'" in answer


@async_test()
async def test_extra_port_and_direct_tls_port(server):
    alice = Client("alice@example.com/extra", PASSWORD)
    alice.enable_direct_tls = False
    started = asyncio.get_running_loop().create_future()
    alice.add_event_handler("session_start", lambda _: started.set_result(True))
    alice.connect("127.0.0.1", server.extra_port)
    await asyncio.wait_for(started, 20)

    bob = Client("bob@example.com/direct", PASSWORD)
    bob.enable_direct_tls, bob.enable_starttls = True, False
    started = asyncio.get_running_loop().create_future()
    bob.add_event_handler("session_start", lambda _: started.set_result(True))
    bob.connect("127.0.0.1", server.direct_port)
    await asyncio.wait_for(started, 20)
    assert bob.transport.get_extra_info("ssl_object") is not None
    assert f"XMPP (c2s, direct TLS) on 127.0.0.1 port {server.direct_port}" in server.log_text()

    alice.send_message(mto="bob@example.com/direct", mbody="over direct TLS", mtype="chat")
    assert (await bob.next_message())["body"] == "over direct TLS"
    await logout(alice, bob)


@async_test()
async def test_trickling_unauthenticated_connection_still_times_out(server):
    raw = await RawClient.connect(server.port)
    await raw.open()

    async def trickle() -> None:
        for _ in range(40):  # a byte of whitespace every quarter second, never authenticating
            raw.send(b" ")
            await asyncio.sleep(0.25)

    trickling = asyncio.create_task(trickle())
    answer = await raw.read_to_end(timeout=10)  # the server closes after auth_timeout (2 s here)
    trickling.cancel()
    assert b"<connection-timeout xmlns='urn:ietf:params:xml:ns:xmpp-streams'" in answer
