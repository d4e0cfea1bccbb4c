"""Client State Indication (XEP-0352) seen from real clients: slixmpp over c2s, and the BOSH test client."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

from tests.integration.bosh_client import CLIENT, BOSHClient, is_message, is_presence
from tests.integration.conftest import PASSWORD
from tests.integration.harness import async_test, login, logout

NS = "urn:xmpp:csi:0"


async def seen_login(server, jid):
    """A client that also keeps everything it gets, in order, in ``seen``."""
    client = await login(server, jid, PASSWORD)
    client.seen = []
    client.add_event_handler("presence", lambda p: client.seen.append(("presence", str(p["from"]), p["show"])))
    client.add_event_handler("message", lambda m: client.seen.append(("message", str(m["from"]), m["body"])))
    client.register_plugin("xep_0085")  # slixmpp's own "message" event wants a body
    client.add_event_handler("chatstate", lambda m: client.seen.append(("chat state", str(m["from"]),
                                                                        m["chat_state"])))
    return client


def chat_state(client, to: str, state: str) -> None:
    m = client.make_message(mto=to, mtype="chat")
    m.xml.append(ET.Element(f"{{http://jabber.org/protocol/chatstates}}{state}"))
    m.send()


@async_test(60)
async def test_inactive_client_gets_chatter_only_with_a_message_or_when_active(server):
    phone = await seen_login(server, "alice@example.com/phone")
    bob = await login(server, "bob@example.com/x", PASSWORD)
    carol = await login(server, "carol@example.com/x", PASSWORD)
    await phone.wait_presence(lambda p: str(p["from"]) == "carol@example.com/x")
    phone.send_raw(f"<inactive xmlns='{NS}'/>")
    await asyncio.sleep(0.3)
    phone.seen.clear()
    for show in ("away", "xa", "dnd"):
        bob.send_presence(pshow=show)
    chat_state(bob, "alice@example.com", "composing")
    await asyncio.sleep(1)
    assert phone.seen == []
    carol.send_message(mto="alice@example.com", mbody="lunch?", mtype="chat")
    while (await phone.next_message())["body"] != "lunch?":
        pass
    assert [s for s in phone.seen if s[1] == "bob@example.com/x"] == [
        ("presence", "bob@example.com/x", "dnd"), ("chat state", "bob@example.com/x", "composing")]
    assert phone.seen[-1] == ("message", "carol@example.com/x", "lunch?")
    phone.seen.clear()
    bob.send_presence(pshow="chat")
    carol.send_presence(pshow="away")
    await asyncio.sleep(1)
    assert phone.seen == []
    phone.send_raw(f"<active xmlns='{NS}'/>")
    await phone.wait_presence(lambda p: str(p["from"]) == "carol@example.com/x" and p["show"] == "away")
    assert phone.seen == [("presence", "bob@example.com/x", "chat"), ("presence", "carol@example.com/x", "away")]
    await logout(phone, bob, carol)


@async_test(60)
async def test_bosh_client_offered_csi_and_held_back_while_inactive(server):
    pane = BOSHClient(server.http_port)
    bob = await login(server, "bob@example.com/x", PASSWORD)
    try:
        await asyncio.to_thread(pane.login, "alice", PASSWORD, resource="pane")
        await asyncio.to_thread(pane.wait_for, is_presence("bob@example.com/x"))
        pane.send(f"<inactive xmlns='{NS}'/>")
        await asyncio.sleep(0.5)
        with pane._cond:
            pane.stanzas.clear()
        bob.send_presence(pshow="away")
        bob.send_presence(pshow="dnd")
        await asyncio.sleep(1)
        assert pane.stanzas == []
        bob.send_message(mto="alice@example.com", mbody="ping", mtype="chat")
        await asyncio.to_thread(pane.wait_for, is_message("ping", "bob@example.com/x"))
        kinds = [(s.tag.split("}")[1], s.findtext(f"{{{CLIENT}}}show")) for s in pane.stanzas]
        assert kinds == [("presence", "dnd"), ("message", None)]
    finally:
        await asyncio.to_thread(pane.close)
        await logout(bob)

