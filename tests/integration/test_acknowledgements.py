"""Receipts (XEP-0184), chat markers (XEP-0333) and corrections (XEP-0308)
between two real slixmpp clients over c2s: routed to the full JID with a
carbon to the other resources, returned by MAM after the fact, and shown by
the history JSON as delivered/read state and corrected text; a forged
correction changes nobody's view of a message its sender did not send."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from tests.integration import test_conversation_pages
from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Client, Server, async_test, logout
from tests.integration.test_history import connect, forwarded, http_get, mam, new_users
from tests.integration.test_pane import WAIT, browser_context

browser = test_conversation_pages.browser  # skips (fails on CI) without Chromium

RECEIPTS = "urn:xmpp:receipts"
MARKERS = "urn:xmpp:chat-markers:0"
CORRECT = "urn:xmpp:message-correct:0"
CARBONS = "urn:xmpp:carbons:2"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("acknowledgements"))
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


def events(client: Client, *names: str) -> asyncio.Queue:
    """A queue of the stanzas of slixmpp's events *names* (receipts and markers have no body,
    so slixmpp never tells them as messages)."""
    queue: asyncio.Queue = asyncio.Queue()
    for name in names:
        client.add_event_handler(name, lambda stanza, name=name: queue.put_nowait((name, stanza)))
    return queue


async def plugins(client: Client) -> None:
    for plugin in ("xep_0184", "xep_0333", "xep_0308"):
        client.register_plugin(plugin)
    client.plugin["xep_0184"].auto_ack = False  # the tests say when a receipt goes


@async_test(timeout=90)
async def test_receipts_markers_corrections_routed_archived_and_shown(server):
    alice, bob = await new_users(server, "alice", "bob")
    desk = await connect(server, f"{alice}/desk")
    phone = await connect(server, f"{bob}/phone", carbons=True)
    laptop = await connect(server, f"{bob}/laptop", carbons=True)
    for client in (desk, phone, laptop):
        await plugins(client)
    at_desk = events(desk, "receipt_received", "marker_displayed", "message_correction")
    carbons = events(laptop, "carbon_sent")

    message = desk.make_message(mto=bob, mbody="see you at 9", mtype="chat")
    message["id"] = "m-1"
    message["request_receipt"] = True
    message.xml.append(ET.Element(f"{{{MARKERS}}}markable"))
    message.send()
    got = await phone.next_message()
    assert got["body"] == "see you at 9" and got["id"] == "m-1"
    await laptop.next_message()  # bob's laptop has it too (bare JID: every available resource)

    # bob's phone answers as slixmpp does: to alice's full JID, a receipt then a displayed marker
    phone.plugin["xep_0184"].ack(got)
    name, receipt = await asyncio.wait_for(at_desk.get(), 10)
    assert name == "receipt_received" and receipt["receipt"] == "m-1" and receipt["from"] == f"{bob}/phone"
    phone.plugin["xep_0333"].send_marker(got["from"], "m-1", "displayed", mtype="chat")
    name, marker = await asyncio.wait_for(at_desk.get(), 10)
    assert name == "marker_displayed" and marker["displayed"]["id"] == "m-1"
    # bob's laptop learns from carbons that the phone acknowledged and read it
    copies = [await asyncio.wait_for(carbons.get(), 10) for _ in range(2)]
    inside = [c[1].xml.find(f"{{{CARBONS}}}sent/{{urn:xmpp:forward:0}}forwarded/{{jabber:client}}message")
              for c in copies]
    assert inside[0].find(f"{{{RECEIPTS}}}received").get("id") == "m-1"
    assert inside[1].find(f"{{{MARKERS}}}displayed").get("id") == "m-1"

    # alice corrects her message; bob's phone is told it replaces m-1
    correction = desk.plugin["xep_0308"].build_correction("m-1", bob, mbody="see you at 10")
    correction["id"] = "m-2"
    correction.send()
    fixed = await phone.next_message()
    assert fixed["body"] == "see you at 10" and fixed["replace"]["id"] == "m-1"
    await laptop.next_message()
    phone.plugin["xep_0184"].ack(fixed)  # the new text is delivered (not read yet)
    name, receipt = await asyncio.wait_for(at_desk.get(), 10)
    assert name == "receipt_received" and receipt["receipt"] == "m-2"

    # bob forges a correction of alice's message: nobody's view of m-1 may change
    forged = phone.plugin["xep_0308"].build_correction("m-1", alice, mbody="cancelled!")
    forged.send()
    await desk.next_message()

    # MAM, after the fact: every client rebuilds the same view from the same entries, in order
    for client, peer in ((desk, bob), (laptop, alice)):
        page = await mam(client, peer)
        kinds = []
        for result in page.results:
            stanza = forwarded(result)
            if stanza.find(f"{{{RECEIPTS}}}received") is not None:
                kinds.append("receipt")
            elif stanza.find(f"{{{MARKERS}}}displayed") is not None:
                kinds.append("displayed")
            else:
                replace = stanza.find(f"{{{CORRECT}}}replace")
                kinds.append(stanza.findtext("{jabber:client}body") + (" (replaces m-1)" if replace is not None
                                                                       else ""))
        assert kinds == ["see you at 9", "receipt", "displayed", "see you at 10 (replaces m-1)", "receipt",
                         "cancelled! (replaces m-1)"]

    # the webmail: one message each way, alice's edited and its new text delivered (the old one was read);
    # bob's forgery is his own message
    for owner, peer in ((alice, bob), (bob, alice)):
        status, conversations, _ = await asyncio.to_thread(http_get, server, f"/history/conversations?with={peer}",
                                                           owner)
        assert status == 200
        [conversation] = conversations["conversations"]
        # two messages: the correction is none of its own, the preview has the latest text
        assert (conversation["count"], conversation["preview"]) == (2, "see you at 10")
        path = f"/history/conversation?id={conversation['id']}"
        _, page, _ = await asyncio.to_thread(http_get, server, path, owner)
        shown = [(m["from"], m["body"], m["edited"], m.get("state")) for m in page["messages"]]
        mine = owner == alice
        assert shown == [(alice, "see you at 10", True, "delivered" if mine else None),
                         (bob, "cancelled!", False, None if mine else "sent")]
        assert page["count"] == 2
        # pages of two entries, newest first, by their "first" cursors: the correction is on the page
        # before the newest, the message it corrects three entries before it (receipt and marker between,
        # a page listing none): every message once, with its latest text
        pages, cursor = [], ""
        while cursor is not None:
            _, got, _ = await asyncio.to_thread(http_get, server, path + f"&limit=2&before={cursor}" if cursor
                                                else path + "&limit=2", owner)
            pages.insert(0, [(m["body"], m["edited"]) for m in got["messages"]])
            cursor = got["first"] if got["earlier"] else None
        assert pages == [[("see you at 10", True)], [], [("cancelled!", False)]]
    await logout(desk, phone, laptop)


@async_test(timeout=120)
async def test_the_conversation_page_shows_read_and_edited(server, browser):
    alice, bob = await new_users(server, "alice", "bob")
    desk, phone = await connect(server, f"{alice}/desk"), await connect(server, f"{bob}/phone")
    for client in (desk, phone):
        await plugins(client)
    message = desk.make_message(mto=bob, mbody="draft", mtype="chat")
    message["id"] = "c-1"
    message.send()
    await phone.next_message()
    correction = desk.plugin["xep_0308"].build_correction("c-1", bob, mbody="final")
    correction["id"] = "c-2"
    correction.send()
    got = await phone.next_message()
    phone.plugin["xep_0333"].send_marker(got["from"], "c-2", "displayed", mtype="chat")  # the new text read
    phone.send_message(mto=alice, mbody="ok", mtype="chat")
    await desk.next_message()
    _, listing, _ = await asyncio.to_thread(http_get, server, f"/history/conversations?with={bob}", alice)
    conversation_id = listing["conversations"][0]["id"]
    async with browser_context() as context:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(f"http://127.0.0.1:{server.http_port}/chat/conversation.html?id={conversation_id}")
        await page.wait_for_selector("#signin-form", state="visible", timeout=WAIT)
        await page.fill("#signin-jid", alice)
        await page.fill("#signin-password", PASSWORD)
        await page.click("#signin-submit")
        await page.wait_for_selector("#transcript .msg", timeout=WAIT)
        texts = await page.evaluate(
            "Array.from(document.querySelectorAll('#transcript .msg-body'), e => e.textContent)")
        assert texts == ["final", "ok"]  # no receipt or marker shown as a message, the corrected text
        meta = await page.inner_text("#transcript .msg.out .msg-meta")
        assert "edited" in meta and "Read" in meta
        assert await page.get_attribute("#transcript .msg.out .msg-ticks", "data-status") == "read"
        assert not errors, errors
    await logout(desk, phone)
