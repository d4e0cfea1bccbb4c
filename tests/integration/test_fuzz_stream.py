"""Mutated and random streams against a running chatgate: every one ends in a
stream error or is still being waited for, nothing escapes as an internal
error, and bystanders keep chatting. A bystander (bob, on a raw socket) is
signed in for the whole campaign: everything it received must read as
well-formed XML in a parser chatgate does not own, and every stanza in it must
come from the real sender's full JID, whatever the mutated input held (hostile
namespace values and attribute values among the seeds). (The long in-process
campaign is fuzz/parsers.py; its figures are in bench/RESULTS.md.)"""

from __future__ import annotations

import asyncio
import re
import threading
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import PASSWORD
from tests.integration.harness import RawClient, Server, async_test, login, logout

HEADER = (
    b"<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)
STANZAS = [
    b"<message to='bob@example.com' type='chat' id='m1'><body>hi &amp; bye</body></message>",
    b"<iq type='get' id='i1'><query xmlns='jabber:iq:roster'/></iq>",
    b"<presence><show>dnd</show><status xml:lang='en'>busy</status><priority>5</priority></presence>",
    b"<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>X</FN></vCard></iq>",
    # hostile seeds: a namespace value closing its quotes (refused), markup in legal values (delivered intact)
    b"<message to='bob@example.com' type='chat'><body>hi</body><x xmlns=\"urn:a'/>&lt;/message>&lt;message"
    b" from='boss@othercorp.org/x' type='chat'>&lt;body>FORGED&lt;/body>&lt;/message>&lt;message>&lt;x b='\"/>"
    b"</message>",
    b"<message to='bob@example.com' type='chat' id='&apos;/>&lt;message from=&apos;boss@othercorp.org&apos;>'>"
    b"<body>&lt;/body>&lt;/message>&lt;message from='boss@othercorp.org/x'>FAKE</body>"
    b"<x xmlns='urn:example:x' xmlns:ns0='urn:xmpp:sid:0' a=\"'&quot;\"><ns0:stanza-id by='bob@example.com'"
    b" id='1'/></x></message>",
]


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(st.sampled_from(STANZAS)) * draw(st.integers(1, 3)))
    for _ in range(draw(st.integers(0, 8))):
        op = draw(st.sampled_from(["flip", "insert", "delete", "truncate"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] = draw(st.integers(0, 255))
        elif op == "insert":
            data[pos:pos] = draw(st.sampled_from([b"<", b">", b"&", b"'", b"\x00", b"\xff", b"<a>" * 70, b"]]>",
                                                   b"<!DOCTYPE x>", b"<?pi?>", b"<!--", b"&x;", b"&#0;"]))
        elif op == "delete" and data:
            del data[pos]
        elif op == "truncate":
            del data[pos:]
    return bytes(data)


STREAM_END = re.compile(rb"<stream:error>.*</stream:error></stream:stream>$", re.S)


async def send_and_watch(port: int, payload: bytes, *, login_first: bool) -> bytes:
    raw = await RawClient.connect(port)
    try:
        if login_first:
            await raw.login("carol", PASSWORD, "fuzz")
            raw.received = b""
            raw.send(payload)
        else:
            raw.send(HEADER + payload)
        try:
            return await raw.read_to_end(timeout=0.5)
        except TimeoutError:
            return b""  # incomplete input: the server is waiting for more, as it should
    finally:
        raw.close()


def check_answer(answer: bytes) -> None:
    """The server closed the stream only with a stream error, never an internal one."""
    if answer.endswith(b"</stream:stream>"):
        assert STREAM_END.search(answer), answer[-300:]
    assert b"internal-server-error" not in answer


class Bystander:
    """bob/watch, signed in on a raw socket for a whole module, keeping every byte it gets."""

    ALLOWED = {None, "example.com", "bob@example.com", "bob@example.com/watch", "carol@example.com/fuzz",
               "alice@example.com/after",
               "bob@example.com/after"}

    def __init__(self, server: Server) -> None:
        self.data = b""
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.raw = asyncio.run_coroutine_threadsafe(self._login(server.port), self.loop).result(30)
        self.reading = asyncio.run_coroutine_threadsafe(self._read(), self.loop)

    async def _login(self, port: int) -> RawClient:
        raw = await RawClient.connect(port)
        await raw.login("bob", PASSWORD, "watch")
        self.data = raw.received.split(b"</iq>", 1)[1]  # anything read past the answer to its bind
        raw.send("<presence/>")
        return raw

    async def _read(self) -> None:
        while chunk := await self.raw.reader.read(65536):
            self.data += chunk

    def stanzas(self) -> list[ET.Element]:
        """What it received so far, read by ElementTree (raises if not well-formed)."""
        return list(ET.fromstring(b"<s xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'>"
                                  + self.data + b"</s>"))

    def close(self) -> None:
        self.reading.cancel()

        async def finish() -> None:
            self.raw.close()

        asyncio.run_coroutine_threadsafe(finish(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


@pytest.fixture(scope="module")
def bystander(server: Server) -> Iterator[Bystander]:
    watcher = Bystander(server)
    yield watcher
    watcher.close()


@given(payload=st.one_of(mutated(), st.binary(max_size=300)))
@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_fuzzed_stream_before_auth(server, bystander, payload):
    check_answer(asyncio.run(send_and_watch(server.port, payload, login_first=False)))


@given(payload=mutated())
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_fuzzed_stanzas_after_auth(server, bystander, payload):
    check_answer(asyncio.run(send_and_watch(server.port, payload, login_first=True)))


@async_test()
async def test_after_fuzzing_nothing_escaped_and_others_chat(server, bystander):
    log = server.log_text()
    assert "Traceback" not in log and "internal-server-error" not in log
    alice = await login(server, "alice@example.com/after", PASSWORD)
    bob = await login(server, "bob@example.com/after", PASSWORD)
    alice.send_message(mto="bob@example.com", mbody="fine", mtype="chat")
    assert (await bob.next_message())["body"] == "fine"
    await logout(alice, bob)

    # the bystander read the whole campaign as well-formed stanzas from their real senders only
    await asyncio.sleep(0.5)
    stanzas = bystander.stanzas()
    bodies = [s.findtext("{jabber:client}body") for s in stanzas if s.tag == "{jabber:client}message"]
    assert "fine" in bodies and len(bodies) > 1  # the campaign's messages reached it too
    for stanza in stanzas:
        for element in stanza.iter():
            assert element.get("from") in Bystander.ALLOWED, ET.tostring(stanza)
        assert "FORGED" not in "".join(stanza.itertext()), ET.tostring(stanza)
