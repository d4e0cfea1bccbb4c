"""Blocking (XEP-0191) seen from real clients: slixmpp over c2s, and the BOSH test client."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest

from tests.integration.bosh_client import CLIENT, BOSHClient, is_message, is_presence
from tests.integration.conftest import PASSWORD
from tests.integration.harness import async_test, login, logout

NS = "urn:xmpp:blocking"
BLOCKED = "{urn:xmpp:blocking:errors}blocked"


async def blocking_login(server, jid):
    client = await login(server, jid, PASSWORD, presence=False)
    client.register_plugin("xep_0191")
    client.pushes = asyncio.Queue()
    client.add_event_handler("blocked", client.pushes.put_nowait)
    client.add_event_handler("unblocked", client.pushes.put_nowait)
    await client.plugin["xep_0191"].get_blocked()  # a client that asked gets pushes
    client.send_presence()
    return client


async def silent(client, timeout: float = 1.0) -> None:
    with pytest.raises(asyncio.TimeoutError):
        got = await client.next_message(timeout=timeout)
        raise AssertionError(f"unexpected {got}")


@async_test(90)
async def test_conversations_like_block_and_unblock(server):
    desk = await blocking_login(server, "alice@example.com/desk")
    phone = await blocking_login(server, "alice@example.com/phone")
    bob = await login(server, "bob@example.com/x", PASSWORD)
    await desk.wait_presence(lambda p: p["from"] == "bob@example.com/x" and p["type"] == "available")
    info = await desk.plugin["xep_0030"].get_info(jid="example.com")
    assert NS in info["disco_info"]["features"]

    await desk.plugin["xep_0191"].block(["bob@example.com"])
    for client in (desk, phone):
        push = await asyncio.wait_for(client.pushes.get(), 10)
        assert [str(i["jid"]) for i in push["block"]["items"]] == ["bob@example.com"]
    assert [str(j) for j in await phone.plugin["xep_0191"].get_blocked_jids()] == ["bob@example.com"]
    for client in (desk, phone):  # bob is offline to every client of alice's, and alice to bob
        await client.wait_presence(lambda p: p["from"] == "bob@example.com/x" and p["type"] == "unavailable")
    await bob.wait_presence(lambda p: p["from"] == "alice@example.com/desk" and p["type"] == "unavailable")
    desk.presences.clear(), phone.presences.clear()

    bob.send_message(mto="alice@example.com", mbody="let me in", mtype="chat")
    error = await bob.next_message()
    assert error["type"] == "error" and error["error"]["condition"] == "service-unavailable"
    bob.send_message(mto="alice@example.com/phone", mbody="psst", mtype="chat")
    await bob.next_message()
    composing = bob.make_message(mto="alice@example.com", mtype="chat")
    composing.xml.append(ET.Element("{http://jabber.org/protocol/chatstates}composing"))
    composing.send()
    bob.send_presence(pshow="dnd")
    await silent(desk), await silent(phone, 0.1)
    assert not [p for p in desk.presences + phone.presences if p["from"].bare == "bob@example.com"]

    desk.send_message(mto="bob@example.com", mbody="go away", mtype="chat")
    refused = await desk.next_message()
    assert refused["type"] == "error" and refused["error"]["condition"] == "not-acceptable"
    assert refused.xml.find(f"{{jabber:client}}error/{BLOCKED}") is not None
    await silent(bob)

    await phone.plugin["xep_0191"].unblock(["bob@example.com"])
    for client in (desk, phone):
        push = await asyncio.wait_for(client.pushes.get(), 10)
        assert [str(i["jid"]) for i in push["unblock"]["items"]] == ["bob@example.com"]
        seen = await client.wait_presence(lambda p: p["from"] == "bob@example.com/x" and p["type"] == "dnd")
        assert seen["show"] == "dnd"
    bob.send_message(mto="alice@example.com", mbody="friends again", mtype="chat")
    assert (await desk.next_message())["body"] == "friends again"
    assert (await phone.next_message())["body"] == "friends again"
    await logout(desk, phone, bob)


@async_test(60)
async def test_bosh_blocker_sees_nothing_of_the_blocked_contact(server):
    bosh = BOSHClient(server.http_port)
    carol = await login(server, "carol@example.com/x", PASSWORD)
    try:
        await asyncio.to_thread(bosh.login, "alice", PASSWORD, resource="pane")
        await carol.wait_presence(lambda p: p["from"] == "alice@example.com/pane" and p["type"] == "available")
        bosh.send(f"<iq xmlns='{CLIENT}' type='set' id='b1'><block xmlns='{NS}'><item jid='carol@example.com'/>"
                  "</block></iq>")
        await asyncio.to_thread(bosh.wait_for, lambda s: s.get("id") == "b1" and s.get("type") == "result")
        await carol.wait_presence(lambda p: p["from"] == "alice@example.com/pane" and p["type"] == "unavailable")
        carol.send_message(mto="alice@example.com", mbody="hello?", mtype="chat")
        assert (await carol.next_message())["error"]["condition"] == "service-unavailable"
        bosh.send(f"<message xmlns='{CLIENT}' to='carol@example.com' type='chat'><body>no</body></message>")
        await asyncio.to_thread(bosh.wait_for, lambda s: s.get("type") == "error" and s.find(
            f"{{{CLIENT}}}error/{BLOCKED}") is not None)
        with bosh._cond:
            bosh.stanzas.clear()
        bosh.send(f"<iq xmlns='{CLIENT}' type='set' id='u1'><unblock xmlns='{NS}'/></iq>")
        await asyncio.to_thread(bosh.wait_for, is_presence("carol@example.com/x"))
        carol.send_message(mto="alice@example.com", mbody="back", mtype="chat")
        await asyncio.to_thread(bosh.wait_for, is_message("back", "carol@example.com/x"))
    finally:
        await asyncio.to_thread(bosh.close)
        await logout(carol)

