"""A team room's history in the pane (Chromium), with slixmpp (xep_0045) on
the other side: a click on a room's row shows the room in the preview pane
without entering it (its past conversations, each with its newest messages
under the senders' nicknames); a double click enters it, and what the pane
says there, and what bob says meanwhile, comes into the preview (alice's
under her own nickname); a conversation's own page is titled with the
room's name and names every sender by nickname. A member taken off an alias sees, in place of the alias
room's conversations, that they are not a member, in the preview and on the
conversation's page."""

from __future__ import annotations

import asyncio

from tests.integration import test_pane
from tests.integration.harness import async_test, logout
from tests.integration.test_pane import WAIT, pane
from tests.integration.test_pane_rooms import occupant

# the same Chromium setup and server as the pane's own tests
webmail, server = test_pane.webmail, test_pane.server

EVERYONE = "everyone@conference.example.com"
SALES = "salesteam@conference.example.com"

#: [nickname, text] of each message line of the preview's conversations, newest conversation first
LINES = ("Array.from(document.querySelectorAll('#content .conversation .conversation-line'), l =>"
         " [l.querySelector('.conversation-nick').textContent, l.querySelector('.conversation-text').textContent])")
NOTE = "document.querySelector('#content .conversation-list .empty-note')?.textContent || ''"


def row(room: str) -> str:
    return f".contact.room[data-jid='{room}']"


async def say(client, room: str, text: str) -> None:
    """*text* said in *room*, and back from the room (so archived)."""
    client.send_message(mto=room, mbody=text, mtype="groupchat")
    assert (await asyncio.wait_for(client.said.get(), 10))["body"] == text


@async_test(timeout=120)
async def test_a_rooms_history_in_the_preview_and_on_its_page(server):
    bob = await occupant(server, "bob@example.com/desk")
    await bob.plugin["xep_0045"].join_muc_wait(EVERYONE, "bob", timeout=10)
    lines = ["The release is on Thursday", "Please try the build before"]
    for line in lines:
        await say(bob, EVERYONE, line)

    async with pane(server, "room-history") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        await view.wait(f"document.querySelector(\"{row(EVERYONE)}\")")
        # a click: the room in the preview, its conversation with bob's nickname; the room not entered
        await page.click(row(EVERYONE))
        await view.wait("document.querySelector('#details-name')?.textContent === 'Everyone at example.com'")
        await view.wait(f"arg => JSON.stringify({LINES}) === JSON.stringify(arg)", [["bob", line] for line in lines])
        assert (await page.inner_text("#content .conversation .conversation-meta")).startswith("2 messages")
        assert await page.get_attribute(row(EVERYONE), "aria-selected") == "true"
        assert await page.evaluate("jid => !chatgate.model.room(jid).joined && !chatgate.chats.views.has(jid)",
                                   EVERYONE)
        await view.shot("room-history")

        # a double click enters the room as today; what alice says there comes into the preview as alice's
        await page.dblclick(row(EVERYONE))
        await view.wait("jid => chatgate.chats.active === jid && chatgate.model.room(jid)?.settled", EVERYONE)
        await view.send("I will try it tonight")
        got = await asyncio.wait_for(bob.said.get(), 10)
        assert str(got["from"]) == f"{EVERYONE}/alice" and got["body"] == "I will try it tonight"
        expected = [["bob", line] for line in lines] + [["alice", "I will try it tonight"]]
        await view.wait(f"arg => JSON.stringify({LINES}) === JSON.stringify(arg)", expected)
        assert await page.evaluate("Array.from(document.querySelectorAll('#content .conversation-line'),"
                                   " l => l.classList.contains('out'))") == [False, False, True]
        # what bob says now comes into the preview too, while the pane is in the room
        await say(bob, EVERYONE, "Thanks!")
        await view.wait(f"arg => JSON.stringify({LINES}) === JSON.stringify(arg)", expected + [["bob", "Thanks!"]])

        # the conversation's own page: the room's name as its title, every sender by nickname
        async with page.expect_popup(timeout=WAIT) as popup_info:
            await page.click("#content .conversation a[data-action=open-conversation]")
        popup = await popup_info.value
        await popup.wait_for_selector("#transcript .msg", timeout=WAIT)
        assert f"room={EVERYONE.replace('@', '%40')}" in popup.url
        assert await popup.inner_text("#transcript-title") == "Conversation in Everyone at example.com"
        assert (await popup.title()).startswith("Everyone at example.com, ")
        shown = await popup.evaluate("Array.from(document.querySelectorAll('#transcript .msg'), m =>"
                                     " [m.querySelector('.bubble > .visually-hidden').textContent,"
                                     " m.querySelector('.msg-body').textContent, m.classList.contains('out')])")
        assert shown == [["bob: ", lines[0], False], ["bob: ", lines[1], False],
                         ["alice: ", "I will try it tonight", True], ["bob: ", "Thanks!", False]]
        assert await popup.evaluate("Array.from(document.querySelectorAll('#transcript .msg-sender'),"
                                    " e => e.textContent)") == ["bob", "alice", "bob"]
        assert "4 messages" in await popup.inner_text("#transcript-when")
        await popup.screenshot(path=str(test_pane.ARTIFACTS / "pane-room-conversation-page.png"))
        await popup.close()

    # dave, put on the sales team's alias, reads its room; taken off it, he is told he is not a member
    await bob.plugin["xep_0045"].join_muc_wait(SALES, "bob", timeout=10)
    await say(bob, SALES, "The figures are in")
    await asyncio.to_thread(server.admin, "alias", "add", "salesteam@example.com", "dave@example.com")
    async with pane(server, "room-history-removed") as view:  # a browser of its own: its own pane's credentials
        page = view.page
        await view.sign_in_with_token("dave@example.com")
        await view.wait(f"document.querySelector(\"{row(SALES)}\")")
        await page.click(row(SALES))
        await view.wait(f"arg => JSON.stringify({LINES}) === JSON.stringify(arg)", [["bob", "The figures are in"]])
        address = await page.get_attribute("#content .conversation a[data-action=open-conversation]", "href")
        await asyncio.to_thread(server.admin, "alias", "remove", "salesteam@example.com", "dave@example.com")
        await view.wait(f"!document.querySelector(\"{row(SALES)}\")")
        await view.wait(f"({NOTE}).includes('You are not a member of this room')")
        assert await page.evaluate("document.querySelectorAll('#content .conversation').length") == 0
        assert await page.inner_text("#details-name") == "Sales team"  # still the room shown, not a blank
        assert await page.is_disabled("#content button[data-action=open-room]")
        await view.shot("room-history-not-member")
        # the conversation's page, opened again, says so too
        other = await page.context.new_page()
        await other.goto(address)
        await other.wait_for_selector(".transcript-error", timeout=WAIT)
        assert "You are not a member of this room" in await other.inner_text(".transcript-error")
        await other.close()
    await logout(bob)
