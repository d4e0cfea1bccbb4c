"""Running a node like a service: a graceful drain and a live reload.

``chatgate-admin drain`` (the admin API's POST /api/drain, what SIGTERM does
too) sends every client to ``[service] see_other_host`` with the stream error
RFC 6120 §4.9.3.19 names, the process exits within ``drain_timeout``, and a
message sent the moment before is in the history after the restart. SIGHUP
applies a new ``[limits]`` to the next connection, names what needs a restart,
and a broken file changes nothing."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import RawClient, Server, async_test, free_port, login, logout
from tests.integration.test_history import mam

ELSEWHERE = "chat2.example.com:5222"
KEY = "drain-test-key-0123456789abcdef0123"


@pytest.fixture
def server(tmp_path) -> Iterator[Server]:
    srv = Server(tmp_path, service={"see_other_host": ELSEWHERE, "drain_timeout": 20},
                 admin={"api_key": KEY, "port": free_port()})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


def wait_exit(server: Server, timeout: float = 25) -> int:
    assert server.process is not None
    try:
        return server.process.wait(timeout)
    except subprocess.TimeoutExpired:
        tail = server.log_text()[-2000:]
        raise AssertionError(f"chatgate still running {timeout} s after the drain:\n{tail}") from None


@async_test(timeout=120)
async def test_drain_sends_clients_elsewhere_and_loses_nothing(server):
    alice = await login(server, "alice@example.com/desk", PASSWORD)
    bob = await login(server, "bob@example.com/phone", PASSWORD)
    raw = await RawClient.connect(server.port)
    await raw.login("carol", PASSWORD, "raw")
    alice.send_message(mto="bob@example.com", mbody="last words before the drain", mtype="chat")
    received = await bob.next_message()
    assert received["body"] == "last words before the drain"

    result = server.admin("drain")
    assert "draining" in result.stdout
    got = await raw.read_until(lambda data: b"</stream:stream>" in data or b"see-other-host" in data, timeout=20)
    assert f">{ELSEWHERE}</see-other-host>".encode() in got, got
    assert wait_exit(server) == 0
    for client in (alice, bob):
        await client.wait_closed(10)
    assert "see-other-host" in alice.stream_errors
    log = server.log_text()
    assert "chatgate stopping" in log and "drain asked through the admin API" in log
    assert "drain_timeout" not in log  # it finished in time

    server.start()
    bob = await login(server, "bob@example.com/phone", PASSWORD)
    page = await mam(bob, with_jid="alice@example.com")
    bodies = [m.xml.findtext(".//{jabber:client}body") for m in page.results]
    assert "last words before the drain" in bodies
    await logout(bob)
    raw.close()


@async_test(timeout=120)
async def test_sighup_changes_a_limit_for_the_next_connection(server):
    big = "x" * 10000
    first = await RawClient.connect(server.port)
    await first.login("alice", PASSWORD, "before")
    first.send(f"<message to='bob@example.com' type='chat'><body>{big}</body></message>"
               "<iq type='get' id='p1' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
    await first.expect("id='p1'")  # 10 KB passes under the default 256 KB limit

    text = server.config.read_text()
    server.config.write_text(text + "[limits]\nmax_stanza_size = 8192\n")
    assert server.process is not None
    server.process.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 10
    while "configuration reloaded" not in server.log_text():
        assert time.monotonic() < deadline, server.log_text()[-2000:]
        await asyncio.sleep(0.1)
    assert "[limits]" in server.log_text().split("configuration reloaded")[-1].splitlines()[0]

    second = await RawClient.connect(server.port)
    await second.login("bob", PASSWORD, "after")
    second.send(f"<message to='alice@example.com' type='chat'><body>{big}</body></message>")
    got = await second.read_until(lambda data: b"policy-violation" in data or b"</stream:stream>" in data)
    assert b"policy-violation" in got

    # a change that needs a restart is named; a broken file changes nothing
    server.config.write_text(text + "[limits]\nmax_stanza_size = 8192\n[muc]\nhistory = 5\n")
    server.process.send_signal(signal.SIGHUP)
    while "applied only at the next start: [muc]" not in server.log_text():
        assert time.monotonic() < deadline + 10, server.log_text()[-2000:]
        await asyncio.sleep(0.1)
    server.config.write_text(text + "[limits]\nmax_stanza_size = lots\n")
    server.process.send_signal(signal.SIGHUP)
    while "configuration not reloaded" not in server.log_text():
        assert time.monotonic() < deadline + 20, server.log_text()[-2000:]
        await asyncio.sleep(0.1)
    third = await RawClient.connect(server.port)
    await third.login("carol", PASSWORD, "still")
    third.send(f"<message to='alice@example.com' type='chat'><body>{big}</body></message>")
    got = await third.read_until(lambda data: b"policy-violation" in data or b"</stream:stream>" in data)
    assert b"policy-violation" in got  # the 8192 limit stays
    for client in (first, second, third):
        client.close()
