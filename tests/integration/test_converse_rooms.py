"""Converse.js, unmodified, in a team room (XEP-0045): the domain room
``everyone@conference.example.com``, entered the way a user does it in Converse.js's own UI
(the groupchats list's "Add groupchat" menu item, its "Enter a new Groupchat" form with the
room's address and a nickname; no ``auto_join_rooms``), over WebSocket in headless Chromium as
in test_converse_browser.py (its page, fixtures and sign-in are imported from there).

What the user meets, checked in the page's DOM and at a slixmpp occupant (xep_0045):
a message said in the room before the Converse.js user came is shown on entering, once, under
its author's nickname; the occupant list shows the slixmpp occupant's nickname; what the slixmpp
occupant says appears in the room's view under its nickname; what is typed in the room's
textarea reaches the slixmpp occupant from ``everyone@conference.example.com/<nickname>``,
exactly once; and the server logs no error meanwhile.

Skipped without Chromium, playwright or the npm packages, failed in CI, as
test_converse_browser.py.
"""

from __future__ import annotations

import asyncio
from typing import Any

from tests.integration.harness import Server, async_test, logout
from tests.integration.test_converse_browser import (  # noqa: F401  (pages and server: the fixtures)
    WAIT,
    converse_signed_in,
    pages,
    server,
    wait_text,
)
from tests.integration.test_rooms import EVERYONE, Member, member

ROOM_VIEW = f"converse-muc[jid='{EVERYONE}']"


async def shown_messages(page: Any) -> list[tuple[str, str]]:
    """(author, text) of each message in the room's view, as a reader sees them: a message
    following one of the same author shows no heading, so its author is the last one shown."""
    return [tuple(pair) for pair in await page.evaluate(
        """view => {
            let author = "";
            return Array.from(document.querySelectorAll(`${view} .chat-msg`), m => {
                const heading = m.querySelector(".chat-msg__author");
                if (heading) author = heading.textContent.trim();
                const text = m.querySelector(".chat-msg__text");
                return [author, text ? text.textContent.trim() : ""];
            });
        }""", ROOM_VIEW)]


async def online_occupants(page: Any) -> list[str]:
    """The nicknames the room's occupant list shows with the online mark, sorted."""
    return sorted(await page.evaluate(
        """view => Array.from(document.querySelectorAll(`${view} .occupant`))
            .filter(o => o.querySelector(".chat-status")?.getAttribute("color") === "var(--chat-status-online)")
            .map(o => o.querySelector(".occupant-nick").textContent.trim())""", ROOM_VIEW))


async def bodies_from(occupant: Member, sender: str, seconds: float) -> list[str]:
    """The bodies of the groupchat messages from *sender* that *occupant* gets within *seconds*
    (Converse.js sends chat states to the room too: those have no body)."""
    got: list[str] = []
    deadline = asyncio.get_running_loop().time() + seconds
    while (left := deadline - asyncio.get_running_loop().time()) > 0:
        try:
            message = await asyncio.wait_for(occupant.said.get(), left)
        except TimeoutError:
            break
        if str(message["from"]) == sender and message["body"]:
            got.append(message["body"])
    return got


@async_test(timeout=150)
async def test_converse_enters_the_domain_room_sees_history_occupants_and_talks(server: Server, pages: str):  # noqa: F811
    bob = await member(server, "bob@example.com/desk")
    await bob.muc.join_muc_wait(EVERYONE, "Bob", timeout=10)
    bob.client.send_message(mto=EVERYONE, mbody="Minutes of Monday's meeting are up", mtype="groupchat")
    assert (await bob.next_said())["body"] == "Minutes of Monday's meeting are up"

    async with converse_signed_in(server, pages, "alice@example.com", "converse-room") as seen:
        page = seen.page
        # Converse.js's own way in: the groupchats list's menu, "Add groupchat", the address and a nickname
        menu = page.locator("converse-rooms-list converse-dropdown button")
        await menu.wait_for(state="visible", timeout=WAIT)
        await menu.click()
        await page.locator(".show-add-muc-modal").click(timeout=WAIT)
        form = page.locator("converse-add-muc-modal form.add-chatroom")
        await form.wait_for(state="visible", timeout=WAIT)
        await form.locator("input[name=chatroom]").fill(EVERYONE)
        await form.locator("input[name=nickname]").fill("Alice")
        await form.locator("input[name=join]").click()

        # entering: the room's view shows what was said before, under its author's nickname
        await wait_text(page, f"{ROOM_VIEW} .chat-msg__text", "Minutes of Monday's meeting are up")
        assert await shown_messages(page) == [("Bob", "Minutes of Monday's meeting are up")]
        # the occupant list: the slixmpp occupant and Converse.js's user, online (the domain's
        # other members are listed too, offline)
        await wait_text(page, f"{ROOM_VIEW} .occupant-nick", "Bob")
        await wait_text(page, f"{ROOM_VIEW} .occupant-nick", "Alice")
        assert await online_occupants(page) == ["Alice", "Bob"]
        await bob.presence_of(f"{EVERYONE}/Alice", timeout=15)

        # the slixmpp occupant speaks: Converse.js shows it under its nickname
        bob.client.send_message(mto=EVERYONE, mbody="Welcome, Alice", mtype="groupchat")
        await wait_text(page, f"{ROOM_VIEW} .chat-msg__text", "Welcome, Alice")

        # Converse.js's user speaks in the room's textarea: the occupant gets it once, from her nickname
        composer = page.locator(f"{ROOM_VIEW} .chat-textarea")
        await composer.wait_for(state="visible", timeout=WAIT)
        await composer.fill("Thanks, Bob, reading them now")
        await composer.press("Enter")
        assert await bodies_from(bob, f"{EVERYONE}/Alice", 3) == ["Thanks, Bob, reading them now"]
        await wait_text(page, f"{ROOM_VIEW} .chat-msg__text", "Thanks, Bob, reading them now")
        assert await shown_messages(page) == [
            ("Bob", "Minutes of Monday's meeting are up"),
            ("Bob", "Welcome, Alice"),
            ("Alice", "Thanks, Bob, reading them now"),
        ]
    await logout(bob.client)
    assert not seen.errors, seen.errors
    errors = [line for line in server.log_text().splitlines()
              if "#error]" in line or "#critical]" in line or "Traceback" in line or "Unhandled" in line]
    assert not errors, errors
    assert server.alive()
