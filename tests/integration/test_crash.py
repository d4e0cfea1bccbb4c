"""kill -9 in the middle of a conversation: every message a client received is
in both parties' history after the restart (write-ahead delivery, see
features/archive.py), and what was not delivered is not half-kept. A clean
stop (SIGTERM) loses nothing: what is queued for the archive is committed,
and BOSH sessions end with system-shutdown (the service tree's stop order,
chatgate/service.py)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.bosh_client import BOSHClient, is_message
from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, login, logout
from tests.integration.test_history import mam, page_rsm


@pytest.fixture
def server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def slow_commits(tmp_path: Path) -> Iterator[Server]:
    """A server whose archive commits at most once a second: a message read just
    after a commit waits in the queue for up to a second."""
    srv = Server(tmp_path, archive={"commit_interval": 1})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


async def everything(client, with_jid: str) -> list[str]:
    """The whole archive with *with_jid*, paged."""
    bodies, after = [], None
    while True:
        page = await mam(client, with_jid=with_jid, rsm=page_rsm(200, after=after))
        bodies += page.bodies
        if page.complete or not page.results:
            return bodies
        after = page.last


@async_test(timeout=120)
async def test_sigkill_while_chatting_loses_nothing_anyone_saw(server):
    alice = await login(server, "alice@example.com/desk", PASSWORD)
    bob = await login(server, "bob@example.com/desk", PASSWORD)
    received: list[str] = []
    bob.add_event_handler("message", lambda m: m["type"] == "chat" and received.append(m["body"]))

    async def chatter() -> None:
        for n in range(5000):  # bounded; the kill comes long before the end
            alice.send_message(mto="bob@example.com", mbody=f"m{n}", mtype="chat")
            await asyncio.sleep(0.002)

    sending = asyncio.create_task(chatter())
    while len(received) < 200:
        await asyncio.sleep(0.01)
    server.process.send_signal(signal.SIGKILL)  # mid-stream: messages are in flight
    await asyncio.to_thread(server.process.wait, 10)
    sending.cancel()
    seen = list(received)
    assert len(seen) >= 200

    await asyncio.to_thread(server.start)
    alice = await login(server, "alice@example.com/after", PASSWORD)
    bob = await login(server, "bob@example.com/after", PASSWORD)
    alices, bobs = await everything(alice, "bob@example.com"), await everything(bob, "alice@example.com")
    missing = [body for body in seen if body not in alices or body not in bobs]
    assert missing == [], f"{len(missing)} received messages are not in history: {missing[:10]}"
    # history is in order and holds no message twice
    assert bobs == sorted(set(bobs), key=lambda b: int(b[1:]))
    await logout(alice, bob)


@async_test(timeout=120)
async def test_sigterm_commits_what_is_queued_and_ends_bosh_sessions(slow_commits):
    server = slow_commits
    alice = await login(server, "alice@example.com/desk", PASSWORD)
    web = BOSHClient(server.http_port)
    await asyncio.to_thread(web.login, "bob@example.com", PASSWORD)  # keeps a request held
    alice.send_message(mto="bob@example.com", mbody="first", mtype="chat")
    await asyncio.to_thread(web.wait_for, is_message("first"))  # committed: the next batch waits ~1 s
    alice.send_message(mto="bob@example.com", mbody="queued", mtype="chat")
    # the server answers the ping after it has read (and queued) the message before it
    assert await alice.plugin["xep_0199"].ping("example.com", timeout=5) >= 0
    server.process.send_signal(signal.SIGTERM)
    # twistd ends by re-raising the signal once the reactor has stopped
    assert await asyncio.to_thread(server.process.wait, 15) == -signal.SIGTERM

    # ended whether a request was held or the client was between two (it takes
    # system-shutdown with its next one: the stop waits for it)
    ended = await asyncio.to_thread(web.wait_ended, 10)
    assert ended.get("type") == "terminate", ended.raw
    assert ended.body.find(".//{urn:ietf:params:xml:ns:xmpp-streams}system-shutdown") is not None, ended.raw
    await alice.wait_closed()
    assert "system-shutdown" in alice.stream_errors
    log = server.log_text()
    assert "Main loop terminated." in log, log
    assert "Traceback" not in log and "Unhandled" not in log, log

    await asyncio.to_thread(server.start)
    alice = await login(server, "alice@example.com/after", PASSWORD)
    bob = await login(server, "bob@example.com/after", PASSWORD)
    assert await everything(alice, "bob@example.com") == ["first", "queued"]
    assert await everything(bob, "alice@example.com") == ["first", "queued"]
    await logout(alice, bob)
    await asyncio.to_thread(web.stop_polling)
