"""The pane (Chromium) and slixmpp (xep_0184, xep_0333, xep_0308) on either
side: ticks go sent → delivered → read as slixmpp answers with a receipt and a
displayed marker, with words beside the ticks; the pane answers slixmpp's
message with a receipt and, the chat being seen, a displayed marker; Up arrow
in the empty composer corrects the last message (XEP-0308 at slixmpp); a
correction from slixmpp shows its text and "edited", a forged one (naming
the pane's message) shows as slixmpp's own message and changes nothing; a
marker reads every message up to the one it names."""

from __future__ import annotations

import asyncio

from tests.integration import test_pane
from tests.integration.harness import async_test, logout
from tests.integration.test_pane import pane, user

# the same Chromium setup and server as the pane's own tests
webmail, server = test_pane.webmail, test_pane.server

MARKERS = "urn:xmpp:chat-markers:0"


def status_of(text: str) -> str:
    """The JS expression for the tick status of the outgoing message showing *text*."""
    return ("Array.from(document.querySelectorAll('.chat-panel:not([hidden]) .msg.out')).find("
            f"m => m.querySelector('.msg-body').textContent === {text!r})?.querySelector('.msg-ticks')?.dataset.status")


@async_test(timeout=120)
async def test_ticks_receipts_markers_and_corrections_with_slixmpp(server):
    bob = await user(server, "bob@example.com/desk")
    for plugin in ("xep_0184", "xep_0333", "xep_0308"):
        bob.register_plugin(plugin)
    bob.plugin["xep_0184"].auto_ack = False  # the test says when bob's receipt goes
    told: asyncio.Queue = asyncio.Queue()
    for name in ("receipt_received", "marker_displayed"):
        bob.add_event_handler(name, lambda m, name=name: told.put_nowait((name, m)))
    async with pane(server, "acknowledgements") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        await view.open_chat("bob@example.com")
        await view.send("Lunch at noon?")
        got = await next_message(bob)
        assert got["body"] == "Lunch at noon?" and got["request_receipt"]
        assert got.xml.find(f"{{{MARKERS}}}markable") is not None
        assert await view.wait(f"{status_of('Lunch at noon?')} === 'sent'")
        bob.plugin["xep_0184"].ack(got)
        await view.wait(f"{status_of('Lunch at noon?')} === 'delivered'")
        bob.plugin["xep_0333"].send_marker(got["from"], got["id"], "displayed", mtype="chat")
        await view.wait(f"{status_of('Lunch at noon?')} === 'read'")
        words = await page.inner_text(".chat-panel:not([hidden]) .msg.out .msg-ticks .visually-hidden")
        assert words.strip() == "Read"  # not the colour alone
        await view.shot("read")

        # the pane corrects its last message: Up arrow in the empty composer, new text, Enter
        composer = page.locator(".chat-panel:not([hidden]) textarea")
        await composer.press("ArrowUp")
        assert await composer.input_value() == "Lunch at noon?"
        await composer.fill("Lunch at one?")
        await composer.press("Enter")
        fixed = await next_message(bob)
        assert fixed["body"] == "Lunch at one?" and fixed["replace"]["id"] == got["id"]
        await view.wait_body("bob@example.com", "Lunch at one?", outgoing=True)
        assert await view.bodies("bob@example.com") == ["Lunch at one?"]

        # bob writes, asking for a receipt: the pane, its chat seen, answers with a receipt and a marker
        message = bob.make_message(mto="alice@example.com", mbody="Sure, see you", mtype="chat")
        message["id"] = "bob-1"
        message["request_receipt"] = True
        message["markable"]  # noqa: B018 (slixmpp adds <markable/> on access)
        message.send()
        answers = {}
        for _ in range(2):
            name, answer = await asyncio.wait_for(told.get(), 10)
            answers[name] = answer
            assert str(answer["to"]).startswith("bob@example.com/desk")
        assert answers["receipt_received"]["receipt"] == "bob-1"
        assert answers["marker_displayed"]["displayed"]["id"] == "bob-1"

        # bob corrects it: the pane shows the new text, "edited"
        correction = bob.plugin["xep_0308"].build_correction("bob-1", "alice@example.com",
                                                             mbody="Sure, see you there")
        correction["id"] = "bob-2"
        correction.send()
        await view.wait_body("bob@example.com", "Sure, see you there", outgoing=False)
        # its new text is seen: the pane marks the correction, the stanza bob's client knows it by, displayed
        name, answer = await asyncio.wait_for(told.get(), 10)
        assert name == "marker_displayed" and answer["displayed"]["id"] == "bob-2"
        assert "edited" in await page.inner_text(".chat-panel:not([hidden]) .msg.in .msg-meta")
        assert await view.bodies("bob@example.com") == ["Lunch at one?", "Sure, see you there"]
        await view.shot("edited")

        # bob forges a correction of alice's message: it is his own message, hers keeps its text
        bob.plugin["xep_0308"].build_correction(got["id"], "alice@example.com", mbody="Cancelled!").send()
        await view.wait_body("bob@example.com", "Cancelled!", outgoing=False)
        assert await view.bodies("bob@example.com") == ["Lunch at one?", "Sure, see you there", "Cancelled!"]

        # XEP-0333 §6: bob's displayed marker for the pane's second message reads the first one too
        await view.send("One more thing")
        await view.send("And another")
        await next_message(bob)
        last = await next_message(bob)
        assert last["body"] == "And another"
        bob.plugin["xep_0333"].send_marker(last["from"], last["id"], "displayed", mtype="chat")
        await view.wait(f"{status_of('And another')} === 'read'")
        assert await page.evaluate(status_of("One more thing")) == "read"
    await logout(bob)


async def next_message(client, timeout: float = 10):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = await client.next_message(max(0.1, deadline - asyncio.get_running_loop().time()))
        if message["body"]:
            return message
