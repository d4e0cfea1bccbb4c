"""Hostile and broken input gets its stream error; everyone else keeps chatting."""

from __future__ import annotations

import asyncio
import time

import pytest

from tests.integration.conftest import PASSWORD
from tests.integration.harness import async_test, login, logout

HEADER = (
    "<?xml version='1.0'?><stream:stream to='example.com' xmlns='jabber:client'"
    " xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
)

BILLION_LAUGHS = (
    "<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol 'lol'>"
    + "".join(f"<!ENTITY lol{i} '{('&lol' + (str(i - 1) if i > 1 else '') + ';') * 10}'>" for i in range(1, 10))
    + "]><stream:stream to='example.com' xmlns='jabber:client'"
    " xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>&lol9;"
)


async def raw_exchange(port: int, payload: bytes, timeout: float = 10) -> bytes:
    """Send *payload* on a fresh connection; everything the server says until it closes."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(payload)
    await writer.drain()
    received = b""
    try:
        while chunk := await asyncio.wait_for(reader.read(65536), timeout):
            received += chunk
    finally:
        writer.close()
    return received


async def chat_round(alice, bob, text: str) -> float:
    start = time.monotonic()
    alice.send_message(mto="bob@example.com", mbody=text, mtype="chat")
    msg = await bob.next_message()
    assert msg["body"] == text
    return time.monotonic() - start


@pytest.mark.parametrize(
    "name, payload, condition",
    [
        ("billion laughs", BILLION_LAUGHS.encode(), "restricted-xml"),
        ("doctype", b"<?xml version='1.0'?><!DOCTYPE stream>" + HEADER.encode(), "restricted-xml"),
        ("comment", HEADER.encode() + b"<!-- hi -->", "restricted-xml"),
        ("processing instruction", HEADER.encode() + b"<?evil x?>", "restricted-xml"),
        ("oversized before auth", HEADER.encode() + b"<message><body>" + b"x" * 20000, "policy-violation"),
        ("malformed", HEADER.encode() + b"<message><body></message>", "not-well-formed"),
        ("invalid utf-8", HEADER.encode() + b"<message>\xff\xfe</message>", "not-well-formed"),
        ("unknown host", HEADER.replace("example.com", "nowhere.test").encode(), "host-unknown"),
        ("wrong namespace", HEADER.replace("jabber:client", "jabber:server").encode(), "invalid-namespace"),
        ("stanza before auth", HEADER.encode() + b"<message to='bob@example.com'><body>hi</body></message>",
         "not-authorized"),
    ],
)
@async_test()
async def test_bad_stream_gets_its_error_while_others_chat(server, name, payload, condition):
    alice = await login(server, "alice@example.com/bystander", PASSWORD)
    bob = await login(server, "bob@example.com/bystander", PASSWORD)
    await chat_round(alice, bob, "before")
    started = time.monotonic()
    answer = await raw_exchange(server.port, payload)
    assert f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'".encode() in answer, answer
    assert answer.endswith(b"</stream:stream>")
    assert time.monotonic() - started < 5, f"{name} took too long"
    await chat_round(alice, bob, "after")
    assert server.alive()
    await logout(alice, bob)


@async_test()
async def test_oversized_stanza_after_auth_closes_only_that_stream(server):
    alice = await login(server, "alice@example.com/big", PASSWORD)
    bob = await login(server, "bob@example.com/big", PASSWORD)
    carol = await login(server, "carol@example.com/big", PASSWORD)
    carol.send_raw("<message to='bob@example.com' type='chat'><body>" + "x" * 300_000 + "</body></message>")
    await carol.wait_closed()
    assert "policy-violation" in carol.stream_errors
    await chat_round(alice, bob, "still fine")
    # just under the limit is delivered whole
    text = "y" * 200_000
    alice.send_message(mto="bob@example.com", mbody=text, mtype="chat")
    assert (await bob.next_message())["body"] == text
    await logout(alice, bob)


@async_test()
async def test_doctype_mid_stream_after_auth(server):
    alice = await login(server, "alice@example.com/mid", PASSWORD)
    bob = await login(server, "bob@example.com/mid", PASSWORD)
    carol = await login(server, "carol@example.com/mid", PASSWORD)
    carol.send_raw("<!DOCTYPE x [<!ENTITY a 'b'>]>")
    await carol.wait_closed()
    assert carol.stream_errors and carol.stream_errors[0] in ("restricted-xml", "not-well-formed")
    await chat_round(alice, bob, "unharmed")
    await logout(alice, bob)
