"""Mutated and random streams against a running chatgate: every one ends in a
stream error or is still being waited for, nothing escapes as an internal
error, and bystanders keep chatting. (The long in-process campaign is
fuzz/parsers.py; its figures are in bench/RESULTS.md.)"""

from __future__ import annotations

import asyncio
import re

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.conftest import PASSWORD
from tests.integration.harness import RawClient, async_test, login, logout

HEADER = (
    b"<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client'"
    b" xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)
STANZAS = [
    b"<message to='bob@example.com' type='chat' id='m1'><body>hi &amp; bye</body></message>",
    b"<iq type='get' id='i1'><query xmlns='jabber:iq:roster'/></iq>",
    b"<presence><show>dnd</show><status xml:lang='en'>busy</status><priority>5</priority></presence>",
    b"<iq type='set' id='v1'><vCard xmlns='vcard-temp'><FN>X</FN></vCard></iq>",
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


@given(payload=st.one_of(mutated(), st.binary(max_size=300)))
@settings(max_examples=80, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_fuzzed_stream_before_auth(server, payload):
    check_answer(asyncio.run(send_and_watch(server.port, payload, login_first=False)))


@given(payload=mutated())
@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_fuzzed_stanzas_after_auth(server, payload):
    check_answer(asyncio.run(send_and_watch(server.port, payload, login_first=True)))


@async_test()
async def test_after_fuzzing_nothing_escaped_and_others_chat(server):
    log = server.log_text()
    assert "Traceback" not in log and "internal-server-error" not in log
    alice = await login(server, "alice@example.com/after", PASSWORD)
    bob = await login(server, "bob@example.com/after", PASSWORD)
    alice.send_message(mto="bob@example.com", mbody="fine", mtype="chat")
    assert (await bob.next_message())["body"] == "fine"
    await logout(alice, bob)
