"""Private XML storage (XEP-0049) from real slixmpp clients: bookmarks of team
rooms (XEP-0048, as Pidgin, Psi, Gajim and mcabber keep them) set from one
client are on the user's other client, and autojoin enters the room; nobody
else reads them; protocol namespaces, empty queries and too many kinds are
refused; a removed user's storage goes with them."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0048.stanza import Bookmarks

from tests.integration.conftest import PASSWORD
from tests.integration.harness import Client, Server, async_test, login, logout

PRIVATE = "jabber:iq:private"
ROOM = "everyone@conference.example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("private"))
    srv.admin("domain", "add", "example.com")
    for name in ("alice", "bob"):
        srv.admin("user", "add", f"{name}@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    srv.start()
    yield srv
    srv.stop()


async def client(server: Server, jid: str) -> Client:
    connected = await login(server, jid, PASSWORD)
    for plugin in ("xep_0049", "xep_0045", "xep_0048"):
        connected.register_plugin(plugin)
    return connected


async def private_get(client: Client, payload: str, to: str | None = None):
    iq = client.make_iq_get(ito=to)
    iq.xml.append(ET.fromstring(f"<query xmlns='{PRIVATE}'>{payload}</query>"))
    return await iq.send(timeout=10)


async def private_set(client: Client, payload: str, to: str | None = None):
    iq = client.make_iq_set(ito=to)
    iq.xml.append(ET.fromstring(f"<query xmlns='{PRIVATE}'>{payload}</query>"))
    return await iq.send(timeout=10)


@async_test(timeout=60)
async def test_bookmarks_follow_the_user_to_another_client(server):
    desk = await client(server, "alice@example.com/desk")
    info = await desk.plugin["xep_0030"].get_info(jid="alice@example.com", timeout=10)
    assert PRIVATE in info["disco_info"]["features"]
    # nothing kept yet: the element comes back empty
    answer = await desk.plugin["xep_0048"].get_bookmarks(timeout=10)
    assert list(answer["private"]["bookmarks"]["conferences"]) == []

    marks = Bookmarks()
    marks.add_conference(ROOM, "alice", name="Everyone", autojoin=True)
    await desk.plugin["xep_0048"].set_bookmarks(marks, timeout=10)

    # the user's laptop reads the same bookmarks and enters the bookmarked room as its client would
    laptop = await client(server, "alice@example.com/laptop")
    answer = await laptop.plugin["xep_0048"].get_bookmarks(timeout=10)
    conference = list(answer["private"]["bookmarks"]["conferences"])[0]
    assert (str(conference["jid"]), conference["nick"], conference["autojoin"]) == (ROOM, "alice", True)
    presence, _, _, _ = await laptop.plugin["xep_0045"].join_muc_wait(conference["jid"], conference["nick"],
                                                                      timeout=10)
    assert str(presence["from"]) == f"{ROOM}/alice"

    # a second set replaces the first
    marks = Bookmarks()
    await desk.plugin["xep_0048"].set_bookmarks(marks, timeout=10)
    answer = await laptop.plugin["xep_0048"].get_bookmarks(timeout=10)
    assert list(answer["private"]["bookmarks"]["conferences"]) == []
    await logout(desk, laptop)


@async_test(timeout=60)
async def test_nobody_else_reads_it_and_bad_requests_are_refused(server):
    alice = await client(server, "alice@example.com/secret")
    bob = await client(server, "bob@example.com/nosy")
    await private_set(alice, "<notes xmlns='storage:rosternotes'><note jid='bob@example.com'>owes lunch</note>"
                             "</notes>")
    for attempt in (private_get, private_set):
        with pytest.raises(IqError) as refused:
            await attempt(bob, "<notes xmlns='storage:rosternotes'/>", to="alice@example.com")
        assert refused.value.condition == "forbidden"
    answer = await private_get(bob, "<notes xmlns='storage:rosternotes'/>")
    assert answer.xml.find(f"{{{PRIVATE}}}query/{{storage:rosternotes}}notes").findall("*") == []
    answer = await private_get(alice, "<notes xmlns='storage:rosternotes'/>")
    note = answer.xml.find(f"{{{PRIVATE}}}query/{{storage:rosternotes}}notes/{{storage:rosternotes}}note")
    assert note.text == "owes lunch"

    for payload in ("", "<query xmlns='jabber:iq:roster'/>", "<x xmlns='jabber:client'/>"):
        with pytest.raises(IqError) as refused:
            await private_set(alice, payload)
        assert refused.value.condition == "not-acceptable"
    # at most 64 kinds per user (bookmarks and notes are two): the next new one is refused, replacing
    # one is not
    await private_set(alice, "".join(f"<p{n} xmlns='test:many'/>" for n in range(62)))
    with pytest.raises(IqError) as full:
        await private_set(alice, "<one-more xmlns='test:many'/>")
    assert full.value.condition == "resource-constraint"
    await private_set(alice, "<notes xmlns='storage:rosternotes'><note jid='bob@example.com'>x</note></notes>")
    await logout(alice, bob)

    # a removed user's storage goes: the address made again starts empty
    await asyncio.to_thread(server.admin, "user", "remove", "alice@example.com")
    await asyncio.to_thread(server.admin, "user", "add", "alice@example.com", "--password-stdin",
                            stdin=PASSWORD + "\n")
    await asyncio.sleep(0.8)
    again = await client(server, "alice@example.com/new")
    answer = await private_get(again, "<notes xmlns='storage:rosternotes'/>")
    assert answer.xml.find(f"{{{PRIVATE}}}query/{{storage:rosternotes}}notes").findall("*") == []
    await private_set(again, "<one-more xmlns='test:many'/>")  # room for new kinds: nothing was kept
    await logout(again)
