"""Team rooms (XEP-0045) in the pane (Chromium), with slixmpp (xep_0045) on
the other side: the rooms a user may enter listed under "Rooms" (an alias's
room only for the alias's members), the pane entering the domain room (a
double click on its row: a click shows its history) as "alice" and showing
what bob said before (the history of entering) and live, with his nickname;
the pane's message reaching bob from everyone@conference.example.com/alice
and shown once; bob's private message
through the room in the chat with bob; who is here (also at
a phone's width: test-artifacts/pane-room*.png); a nickname in use taken
with a digit; a room the user is removed from (321) saying so in its window
and leaving the list, listed again when the user is back on the alias; a
destroyed room saying so; the pane's status reaching the room; after a lost
connection the pane back in the room with nothing shown twice; closing the
window leaves the room. In a large room (where only the owners' comings and
goings are told) the count and the list come from the room's disco."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration import test_pane
from tests.integration.conftest import PASSWORD
from tests.integration.harness import Server, async_test, logout
from tests.integration.test_pane import SECRET, Pane, Webmail, pane, user

# the same Chromium setup and server as the pane's own tests
webmail, server = test_pane.webmail, test_pane.server

EVERYONE = "everyone@conference.example.com"
DESIGN = "design@conference.example.com"
SALES = "salesteam@conference.example.com"
DELAY = "urn:xmpp:delay"


async def occupant(server, jid: str):
    """A slixmpp user with the MUC plugin; its live groupchat messages in a queue."""
    client = await user(server, jid)
    client.register_plugin("xep_0045")
    client.said = asyncio.Queue()  # type: ignore[attr-defined]
    client.add_event_handler("groupchat_presence", client._presence)  # into client.presences
    client.add_event_handler("groupchat_message",
                             lambda m: None if m.xml.find(f"{{{DELAY}}}delay") is not None or not m["body"]
                             else client.said.put_nowait(m))
    return client


def rooms_listed(jid: str) -> str:
    return "Array.from(document.querySelectorAll('.contact.room'), e => e.dataset.jid).sort().join(' ')"


def senders(room: str) -> str:
    """The JS expression for [nickname, text] of each incoming message in *room*'s window (the
    nickname shown above the first of a sender's messages in a row)."""
    return (f"Array.from(document.querySelectorAll(\".chat-panel[data-jid='{room}'] .msg.in\"), "
            "m => [m.dataset.nick, m.querySelector('.msg-body').textContent])")


@async_test(timeout=90)
async def test_rooms_in_the_pane_with_slixmpp(server):
    # an alias of alice and bob, not dave: its room is theirs only
    await asyncio.to_thread(server.admin, "alias", "add", "design@example.com", "alice@example.com",
                            "bob@example.com", "--name", "Design team")
    bob = await occupant(server, "bob@example.com/desk")
    await bob.plugin["xep_0045"].join_muc_wait(EVERYONE, "bob", timeout=10)
    bob.send_message(mto=EVERYONE, mbody="Said before alice came", mtype="groupchat")
    assert (await asyncio.wait_for(bob.said.get(), 10))["body"] == "Said before alice came"
    # carol takes the nickname "alice" in the sales team's room
    carol = await occupant(server, "carol@example.com/desk")
    await carol.plugin["xep_0045"].join_muc_wait(SALES, "alice", timeout=10)

    async with pane(server, "rooms") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        # the rooms alice may enter, under their own heading
        await view.wait("document.querySelectorAll('#group-rooms ~ .contact.room').length === 3")
        assert await page.evaluate(rooms_listed("alice")) == f"{DESIGN} {EVERYONE} {SALES}"
        names = await page.evaluate("Array.from(document.querySelectorAll('.contact.room .contact-name'),"
                                    " e => e.textContent)")
        assert names == ["Design team", "Everyone at example.com", "Sales team"]

        # dave, in another tab, is on no alias: the domain room only
        dave = Pane(server, await page.context.new_page(), view.errors)
        await dave.sign_in_with_token("dave@example.com")
        await dave.wait(f"document.querySelector(\".contact.room[data-jid='{EVERYONE}']\")")
        assert await dave.page.evaluate(rooms_listed("dave")) == EVERYONE
        await dave.page.close()

        # the domain room: entering shows what bob said before, with his nickname, and who is here
        await page.dblclick(f".contact.room[data-jid='{EVERYONE}']")
        await view.wait("jid => chatgate.chats.active === jid", EVERYONE)
        await view.wait(f"JSON.stringify({senders(EVERYONE)}) === JSON.stringify([['bob', 'Said before alice came']])")
        await view.wait(f"document.querySelector(\".chat-panel[data-jid='{EVERYONE}'] .people-count\")"
                        "?.textContent === '2'")
        assert "2 people here" in await page.inner_text(f".contact.room[data-jid='{EVERYONE}'] .room-count")
        await page.click(f".chat-panel[data-jid='{EVERYONE}'] button[data-action=occupants]")
        nicks = await page.evaluate(f"Array.from(document.querySelectorAll(\".chat-panel[data-jid='{EVERYONE}']"
                                    " .occupant-nick\"), e => e.textContent)")
        assert nicks == ["alice", "bob"]

        # live both ways: bob's message with his nickname; the pane's from room/alice, shown once
        bob.send_message(mto=EVERYONE, mbody="Welcome, alice", mtype="groupchat")
        assert (await asyncio.wait_for(bob.said.get(), 10))["body"] == "Welcome, alice"  # his own, back
        await view.wait_body(EVERYONE, "Welcome, alice", outgoing=False)
        await view.send("Thanks, bob")
        got = await asyncio.wait_for(bob.said.get(), 10)
        assert str(got["from"]) == f"{EVERYONE}/alice" and got["body"] == "Thanks, bob"
        await view.wait(f"document.querySelector(\".chat-panel[data-jid='{EVERYONE}'] .msg.out .msg-ticks\")"
                        "?.dataset.status === 'delivered'")  # the room's copy came back
        assert await view.bodies(EVERYONE) == ["Said before alice came", "Welcome, alice", "Thanks, bob"]
        assert await page.inner_text(f".chat-panel[data-jid='{EVERYONE}'] .msg.in .msg-sender") == "bob"
        assert await page.evaluate(senders(EVERYONE)) == [["bob", "Said before alice came"], ["bob", "Welcome, alice"]]
        # bob writes to alice privately through the room: it shows in the chat with bob, saying where from
        bob.send_message(mto=f"{EVERYONE}/alice", mbody="Just between us", mtype="chat")
        await view.wait_body("bob@example.com", "Just between us", outgoing=False)
        assert await page.inner_text(".chat-panel[data-jid='bob@example.com'] .msg-private") \
            == "privately, in Everyone at example.com"

        # the subject, in the window's header
        bob.plugin["xep_0045"].set_subject(EVERYONE, "Quarterly planning")
        await view.wait(f"document.querySelector(\".chat-panel[data-jid='{EVERYONE}'] .room-subject\")"
                        "?.textContent === 'Quarterly planning'")
        await view.shot("room")
        await page.set_viewport_size({"width": 390, "height": 760})  # a phone: the window alone, people listed
        await view.wait(f"document.querySelector(\".chat-panel[data-jid='{EVERYONE}'] .occupants\")"
                        "?.getBoundingClientRect().width > 300")
        await view.shot("room-phone")
        await page.set_viewport_size({"width": 1360, "height": 840})

        # the sales team's room: "alice" is carol's there, so the pane is alice2
        await page.dblclick(f".contact.room[data-jid='{SALES}']")
        await view.wait("jid => chatgate.rooms.model.room(jid)?.joined", SALES)
        assert await page.evaluate("jid => chatgate.model.room(jid).nick", SALES) == "alice2"
        # bob speaks in the domain room meanwhile: its row and tab count it unread
        bob.send_message(mto=EVERYONE, mbody="Are you there?", mtype="groupchat")
        await view.wait(f"document.querySelector(\".contact.room[data-jid='{EVERYONE}'] .badge\")?.textContent === '1'")

        # the design room: alice is taken off the alias, the window says so and the room leaves the list
        await page.dblclick(f".contact.room[data-jid='{DESIGN}']")
        await view.wait("jid => chatgate.model.room(jid)?.joined", DESIGN)
        await asyncio.to_thread(server.admin, "alias", "remove", "design@example.com", "alice@example.com")
        await view.wait(f"document.querySelector(\".chat-panel[data-jid='{DESIGN}'] .room-notice:not([hidden])\")"
                        "?.textContent.includes('removed')")
        await view.wait(f"!document.querySelector(\".contact.room[data-jid='{DESIGN}']\")")
        await view.shot("room-removed")
        # back on the alias: the room is listed again (the roster's push of the alias brings the list again)
        await asyncio.to_thread(server.admin, "alias", "add", "design@example.com", "alice@example.com")
        await view.wait(f"document.querySelector(\".contact.room[data-jid='{DESIGN}']\")")

        # the sales team's alias is removed: its room is destroyed, the window says so
        await asyncio.to_thread(server.admin, "alias", "remove", "salesteam@example.com")
        await view.wait(f"document.querySelector(\".chat-panel[data-jid='{SALES}'] .room-notice:not([hidden])\")"
                        "?.textContent.startsWith('This room was closed')")
        await view.wait(f"!document.querySelector(\".contact.room[data-jid='{SALES}']\")")

        # the pane's status reaches the room; a lost connection: back in the room when the pane is back
        await view.choose_status("away")
        await page.keyboard.press("Escape")  # the menu closes
        await bob.wait_presence(lambda p: str(p["from"]) == f"{EVERYONE}/alice" and p["show"] == "away")
        start = len(bob.presences)
        await page.evaluate("chatgate.client.connection._proto.socket.close()")
        await bob.wait_presence(lambda p: str(p["from"]) == f"{EVERYONE}/alice" and p["type"] == "unavailable")
        await bob.wait_presence(lambda p: p in bob.presences[start:] and str(p["from"]) == f"{EVERYONE}/alice"
                                and p["type"] != "unavailable", timeout=15)
        # the history of entering again has come (the subject follows it): nothing of it is shown twice
        await view.wait("jid => chatgate.model.room(jid)?.settled", EVERYONE)
        assert await view.bodies(EVERYONE) == ["Said before alice came", "Welcome, alice", "Thanks, bob",
                                               "Are you there?"]
        assert await view.bodies("bob@example.com") == ["Just between us"]

        # closing the domain room's window leaves the room
        await page.click(f"#tab-{EVERYONE.replace('@', '_').replace('.', '_')}")
        await view.wait(f"!document.querySelector(\".contact.room[data-jid='{EVERYONE}'] .badge\")")  # read now
        await page.click(f".chat-panel[data-jid='{EVERYONE}'] button[data-action=close-chat]")
        await bob.wait_presence(lambda p: str(p["from"]) == f"{EVERYONE}/alice" and p["type"] == "unavailable")
        await view.wait(f"document.querySelector(\".contact.room[data-jid='{EVERYONE}'] .room-count\")"
                        "?.textContent === 'Team room'")
    await logout(bob, carol)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory, webmail: Webmail) -> Iterator[Server]:
    """A server whose rooms count as large beyond two occupants."""
    srv = Server(tmp_path_factory.mktemp("pane-large-rooms"), webmail={"token_secret": SECRET},
                 muc={"large_room": 2})
    srv.admin("domain", "add", "example.com")
    for name in ("alice", "bob", "carol"):
        srv.admin("user", "add", f"{name}@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    srv.start()
    yield srv
    srv.stop()


@async_test(timeout=60)
async def test_a_large_room_counted_and_listed_by_asking_it(large):
    bob = await occupant(large, "bob@example.com/desk")
    carol = await occupant(large, "carol@example.com/desk")
    for client, nick in ((bob, "bob"), (carol, "carol")):
        await client.plugin["xep_0045"].join_muc_wait(EVERYONE, nick, timeout=10)
    async with pane(large, "large-room") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        await view.wait(f"document.querySelector(\".contact.room[data-jid='{EVERYONE}']\")")
        await page.dblclick(f".contact.room[data-jid='{EVERYONE}']")
        # the pane comes in third, quietly, and is told of nobody: the room says how many are here
        await view.wait(f"document.querySelector(\".chat-panel[data-jid='{EVERYONE}'] .people-count\")"
                        "?.textContent === '3'")
        assert await page.evaluate("jid => chatgate.model.room(jid).occupants.size", EVERYONE) == 1
        await page.click(f".chat-panel[data-jid='{EVERYONE}'] button[data-action=occupants]")
        await view.wait(f"Array.from(document.querySelectorAll(\".chat-panel[data-jid='{EVERYONE}'] .occupant-nick\"),"
                        " e => e.textContent).join() === 'alice,bob,carol'")
        # what is said reaches the pane all the same
        carol.send_message(mto=EVERYONE, mbody="Hello, large room", mtype="groupchat")
        await view.wait_body(EVERYONE, "Hello, large room", outgoing=False)
    await logout(bob, carol)
