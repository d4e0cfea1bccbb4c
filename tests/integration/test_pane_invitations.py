"""Invitations to team rooms in the pane (Chromium), from slixmpp users
(xep_0045, xep_0249): a mediated invitation (XEP-0045 §7.8.2) to a
members-only room alice made shows a card above the contact list naming
alice, the room and her reason, as text (markup in the reason stays
letters); "Enter" puts bob in the room, where alice sees him, and takes the
card away. A direct invitation (XEP-0249) from a user of the domain shows a
card too: to a room bob was made a member of, "Enter" enters; to one he is
not a member of, the card says so and stays; "Dismiss" takes a card away. A
direct invitation to another server's room is no card (the pane follows
only its own domain's rooms). An invitation kept for bob while he was away
is a card when he signs in, not a chat message from the room."""

from __future__ import annotations

import asyncio

from tests.integration import test_pane
from tests.integration.harness import async_test, logout
from tests.integration.test_pane import pane
from tests.integration.test_pane_rooms import occupant

# the same Chromium setup and server as the pane's own tests
webmail, server = test_pane.webmail, test_pane.server

LUNCH = "lunch@conference.example.com"
PLANS = "plans@conference.example.com"
SECRET_ROOM = "secret@conference.example.com"
ELSEWHERE = "lounge@conference.elsewhere.example"
LATER = "later@conference.example.com"
MUC_USER = "http://jabber.org/protocol/muc#user"


def card(room: str) -> str:
    return f"#invitations .invitation[data-room='{room}']"


def shown(room: str) -> str:
    """The JS expression for whether *room*'s card is there."""
    return f"Boolean(document.querySelector(\"{card(room)}\"))"


@async_test(timeout=120)
async def test_invitations_in_the_pane(server):
    alice = await occupant(server, "alice@example.com/desk")
    alice.register_plugin("xep_0249")
    muc = alice.plugin["xep_0045"]
    for room in (LUNCH, PLANS, SECRET_ROOM):
        await muc.join_muc_wait(room, "alice", timeout=10)  # made by entering: members only, alice owns it
    joined: asyncio.Queue = asyncio.Queue()
    alice.add_event_handler("groupchat_presence",
                            lambda p: p["type"] != "unavailable" and p["from"].resource == "bob"
                            and joined.put_nowait(p["from"].bare))

    async with pane(server, "invitations") as view:
        page = view.page
        await view.sign_in_with_token("bob@example.com")
        assert await page.is_hidden("#invitations")
        alice_name = await page.evaluate("chatgate.model.nameOf('alice@example.com')")
        assert alice_name != "alice@example.com"  # a contact's name from the roster

        # a mediated invitation: a card with who, where and why, the reason as letters
        muc.invite(LUNCH, "bob@example.com", reason="<b>noon</b>? at the usual place")
        await view.wait(shown(LUNCH))
        assert await page.inner_text(f"{card(LUNCH)} .invitation-text") == f"{alice_name} invites you to lunch"
        assert await page.text_content(f"{card(LUNCH)} .invitation-reason") == "<b>noon</b>? at the usual place"
        assert await page.evaluate(f"document.querySelectorAll(\"{card(LUNCH)} b\").length") == 0
        assert await page.is_visible("#invitations")
        await view.shot("invitation")
        # Enter: bob is in the room (alice sees him come), its window is open, the card is gone
        await page.click(f"{card(LUNCH)} button[data-action=enter]")
        assert await asyncio.wait_for(joined.get(), 10) == LUNCH
        await view.wait("jid => chatgate.chats.active === jid && chatgate.model.room(jid)?.joined", LUNCH)
        await view.wait(f"!{shown(LUNCH)}")
        alice.send_message(mto=LUNCH, mbody="See you at noon", mtype="groupchat")
        await view.wait_body(LUNCH, "See you at noon", outgoing=False)

        # a direct invitation to a room bob was made a member of: Enter enters
        await muc.set_affiliation(PLANS, "member", jid="bob@example.com", timeout=10)
        alice.plugin["xep_0249"].send_invitation("bob@example.com", PLANS, reason="Plans for Q3")
        await view.wait(shown(PLANS))
        assert await page.text_content(f"{card(PLANS)} .invitation-reason") == "Plans for Q3"
        # a direct invitation to one he is not a member of: the card says so and stays
        alice.plugin["xep_0249"].send_invitation("bob@example.com", SECRET_ROOM)
        await view.wait(shown(SECRET_ROOM))
        assert await page.evaluate(f"document.querySelectorAll(\"{card(SECRET_ROOM)} .invitation-reason\").length") == 0
        await page.click(f"{card(SECRET_ROOM)} button[data-action=enter]")
        await view.wait(f"document.querySelector(\"{card(SECRET_ROOM)} .invitation-problem\")?.hidden === false")
        assert "You are not a member of this room" in await page.inner_text(f"{card(SECRET_ROOM)} .invitation-problem")
        assert await page.evaluate("jid => !chatgate.model.room(jid) && !chatgate.chats.views.has(jid)", SECRET_ROOM)
        await view.shot("invitation-not-member")
        await page.click(f"{card(SECRET_ROOM)} button[data-action=dismiss]")
        await view.wait(f"!{shown(SECRET_ROOM)}")
        await page.click(f"{card(PLANS)} button[data-action=enter]")
        assert await asyncio.wait_for(joined.get(), 10) == PLANS
        await view.wait(f"!{shown(PLANS)} && document.querySelector('#invitations').hidden")

        # another server's room is no invitation the pane follows: no card (a chat message after it comes)
        alice.plugin["xep_0249"].send_invitation("bob@example.com", ELSEWHERE, reason="Come over")
        alice.send_message(mto="bob@example.com", mbody="That was the last one", mtype="chat")
        await view.wait_body("alice@example.com", "That was the last one", outgoing=False)
        assert not await page.evaluate(shown(ELSEWHERE))
        assert await page.is_hidden("#invitations")

    # an invitation kept while bob is away: a card when he signs in, not a chat with the room
    await muc.join_muc_wait(LATER, "alice", timeout=10)
    for _ in range(100):  # bob's pane has gone: the invitation is kept for him
        if not alice.client_roster["bob@example.com"].resources:
            break
        await asyncio.sleep(0.1)
    muc.invite(LATER, "bob@example.com", reason="When you are back")
    async with pane(server, "invitation-kept") as view:
        page = view.page
        await view.sign_in_with_token("bob@example.com")
        await view.wait(shown(LATER))
        assert await page.text_content(f"{card(LATER)} .invitation-reason") == "When you are back"
        assert await page.evaluate("jid => !chatgate.chats.views.has(jid)", LATER)
        await page.click(f"{card(LATER)} button[data-action=enter]")
        assert await asyncio.wait_for(joined.get(), 10) == LATER
    await logout(alice)
