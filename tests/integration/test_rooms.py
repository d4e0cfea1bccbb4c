"""Team rooms (XEP-0045) seen from real slixmpp clients: the domain room and a
mail alias's room, messages and history, membership following the
directory, and the seal between domains (what another domain's user and a
non-member receive)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from slixmpp.exceptions import IqError, PresenceError

from tests.integration.conftest import PASSWORD
from tests.integration.harness import Client, Server, async_test, free_port, login, logout
from tests.integration.test_admin_api import KEY, call
from tests.integration.test_history import http_get, mam

MUC_USER = "http://jabber.org/protocol/muc#user"
SID = "urn:xmpp:sid:0"
DELAY = "urn:xmpp:delay"
CLIENT = "jabber:client"
EVERYONE = "everyone@conference.example.com"
TEAM = "team@conference.example.com"
USERS = ("alice", "bob", "carol", "dan")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    admin_port = free_port()
    srv = Server(tmp_path_factory.mktemp("rooms"), admin={"port": admin_port, "api_key": KEY})
    srv.admin_port = admin_port
    for domain in ("example.com", "other.org"):
        srv.admin("domain", "add", domain)
    for jid in [f"{name}@example.com" for name in USERS] + ["mallory@other.org"]:
        srv.admin("user", "add", jid, "--password-stdin", stdin=PASSWORD + "\n")
    srv.admin("alias", "add", "team@example.com", "alice@example.com", "bob@example.com", "--name", "The Team")
    srv.start()
    yield srv
    srv.stop()


class Member:
    """A slixmpp client with the MUC plugin, its groupchat messages and room presences in queues."""

    def __init__(self, client: Client) -> None:
        self.client = client
        client.register_plugin("xep_0045")
        self.muc = client.plugin["xep_0045"]
        self.said: asyncio.Queue = asyncio.Queue()
        self.seen: asyncio.Queue = asyncio.Queue()
        self.errors: asyncio.Queue = asyncio.Queue()
        self.subjects: asyncio.Queue = asyncio.Queue()
        self.refusals: asyncio.Queue = asyncio.Queue()
        for room in (EVERYONE, TEAM):  # slixmpp tells a room's refusals by the room's name
            client.add_event_handler(f"muc::{room}::presence-error", self.refusals.put_nowait)
        client.add_event_handler("groupchat_subject", self.subjects.put_nowait)
        # live messages only: the history shown on entering comes back from join_muc_wait
        client.add_event_handler("groupchat_message",
                                 lambda m: None if m.xml.find(f"{{{DELAY}}}delay") is not None
                                 else self.said.put_nowait(m))
        client.add_event_handler("groupchat_presence", self.seen.put_nowait)
        client.add_event_handler("message_error", self.errors.put_nowait)

    async def next_said(self, timeout: float = 10):
        return await asyncio.wait_for(self.said.get(), timeout)

    async def presence_of(self, occupant: str, kind: str = "available", timeout: float = 10):
        """The next presence of room/nick *occupant* of type *kind*."""
        while True:
            presence = await asyncio.wait_for(self.seen.get(), timeout)
            if presence["from"] == occupant and presence["type"] == kind:
                return presence

    async def quiet(self, seconds: float = 0.5) -> list:
        """What groupchat messages arrive within *seconds* (for what must not)."""
        await asyncio.sleep(seconds)
        got = []
        while not self.said.empty():
            got.append(self.said.get_nowait())
        return got


async def member(server: Server, jid: str) -> Member:
    return Member(await login(server, jid, PASSWORD))


def others(occupants: list, nick: str) -> list:
    """The occupants' presences a join brought, without one's own (slixmpp lists it too)."""
    return [p for p in occupants if p["from"].resource != nick]


def codes(presence) -> set[str]:
    x = presence.xml.find(f"{{{MUC_USER}}}x")
    return {s.get("code") for s in x.findall(f"{{{MUC_USER}}}status")} if x is not None else set()


@async_test(timeout=90)
async def test_domain_room_chat_history_subject_and_mam(server):
    alice = await member(server, "alice@example.com/desk")
    bob = await member(server, "bob@example.com/phone")
    own, subject, occupants, history = await alice.muc.join_muc_wait(EVERYONE, "Alice", timeout=10)
    assert {"110", "100", "170"} <= codes(own)
    assert others(occupants, "Alice") == [] and history == [] and not subject["subject"]
    own, _, occupants, _ = await bob.muc.join_muc_wait(EVERYONE, "Bob", timeout=10)
    occupants = others(occupants, "Bob")
    assert [str(p["from"]) for p in occupants] == [f"{EVERYONE}/Alice"]
    # non-anonymous: the real JID is in the item
    assert occupants[0].xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item").get("jid") == "alice@example.com/desk"
    await alice.presence_of(f"{EVERYONE}/Bob")

    alice.client.send_message(mto=EVERYONE, mbody="Good morning, team", mtype="groupchat")
    for reader in (bob, alice):  # alice gets her own message back (§7.4)
        got = await reader.next_said()
        assert str(got["from"]) == f"{EVERYONE}/Alice" and got["body"] == "Good morning, team"
        sid = got.xml.find(f"{{{SID}}}stanza-id")
        assert sid is not None and sid.get("by") == EVERYONE
    bob.muc.set_subject(EVERYONE, "Quarterly planning")
    for reader in (alice, bob):
        while (got := await asyncio.wait_for(reader.subjects.get(), 10))["subject"] != "Quarterly planning":
            pass  # the empty subject of entering
        assert got["from"] == f"{EVERYONE}/Bob"

    # carol comes later: history with its delay, then the subject
    carol = await member(server, "carol@example.com/laptop")
    _, subject, occupants, history = await carol.muc.join_muc_wait(EVERYONE, "Carol", maxstanzas=5, timeout=10)
    assert sorted(str(p["from"].resource) for p in others(occupants, "Carol")) == ["Alice", "Bob"]
    assert [(m["from"].resource, m["body"]) for m in history] == [("Alice", "Good morning, team")]
    assert history[0].xml.find(f"{{{DELAY}}}delay").get("from") == EVERYONE
    assert subject["subject"] == "Quarterly planning" and subject["from"].resource == "Bob"

    # the room's archive by MAM, for a member (XEP-0313 §5.1.2)
    page = await mam(carol.client, to=EVERYONE)
    bodies = [r.xml.find(".//{jabber:client}message").findtext(f"{{{CLIENT}}}body") for r in page.results]
    assert bodies[0] == "Good morning, team"
    assert page.results[0].xml.find(".//{jabber:client}message").get("from") == f"{EVERYONE}/Alice"

    # the webmail's history of the room, for a member: who wrote each message, and which were one's own
    status, listing, _ = await asyncio.to_thread(http_get, server, f"/history/conversations?room={EVERYONE}",
                                                 "alice@example.com")
    assert status == 200 and listing["with"] == EVERYONE and listing["conversations"]
    conversation = listing["conversations"][-1]["id"]
    for reader, mine in (("alice@example.com", True), ("carol@example.com", False)):
        status, page, _ = await asyncio.to_thread(
            http_get, server, f"/history/conversation?room={EVERYONE}&id={conversation}", reader)
        first = page["messages"][0]
        assert (first["from"], first["nick"], first["body"], first["outgoing"]) == (
            f"{EVERYONE}/Alice", "Alice", "Good morning, team", mine)
    # a client's claim of who wrote a message is replaced by the room's
    forged = alice.client.make_message(mto=EVERYONE, mbody="signed: bob", mtype="groupchat")
    forged.xml.append(ET.fromstring(f"<x xmlns='{MUC_USER}'><item jid='bob@example.com'/></x>"))
    forged.send()
    got = await bob.next_said()
    assert [i.get("jid") for i in got.xml.iter(f"{{{MUC_USER}}}item")] == ["alice@example.com"]
    await alice.next_said()

    # a nickname in use by someone else: conflict; the same user's second resource shares it
    with pytest.raises(PresenceError) as refused:
        await carol.muc.join_muc_wait(EVERYONE, "Alice", timeout=10)
    assert refused.value.condition == "conflict"
    laptop = await member(server, "alice@example.com/laptop")
    await laptop.muc.join_muc_wait(EVERYONE, "Alice", timeout=10)
    # leaving by disconnecting: the others see bob go
    await logout(bob.client)
    gone = await alice.presence_of(f"{EVERYONE}/Bob", "unavailable")
    assert gone.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item").get("role") == "none"
    # one of alice's two resources leaves: nobody sees Alice go
    laptop.muc.leave_muc(EVERYONE, "Alice")
    assert await laptop.presence_of(f"{EVERYONE}/Alice", "unavailable")
    carol.client.send_message(mto=EVERYONE, mbody="still here?", mtype="groupchat")
    assert (await alice.next_said())["body"] == "still here?"
    assert await laptop.quiet() == []
    await logout(alice.client, carol.client, laptop.client)


@async_test(timeout=90)
async def test_alias_room_follows_the_directory(server):
    alice = await member(server, "alice@example.com/desk")
    bob = await member(server, "bob@example.com/desk")
    dan = await member(server, "dan@example.com/desk")
    items = await alice.client.plugin["xep_0030"].get_items(jid="conference.example.com", timeout=10)
    assert {(i[0], i[2]) for i in items["disco_items"]["items"]} == {
        (EVERYONE, "Everyone at example.com"), (TEAM, "The Team")}
    server_items = await alice.client.plugin["xep_0030"].get_items(jid="example.com", timeout=10)
    assert "conference.example.com" in {i[0] for i in server_items["disco_items"]["items"]}
    info = await alice.client.plugin["xep_0030"].get_info(jid=TEAM, timeout=10)
    assert "muc_membersonly" in info["disco_info"]["features"]

    await alice.muc.join_muc_wait(TEAM, "alice", timeout=10)
    await bob.muc.join_muc_wait(TEAM, "bob", timeout=10)
    # dan is not on the alias: refused, and nothing of the room reaches him
    with pytest.raises(PresenceError) as refused:
        await dan.muc.join_muc_wait(TEAM, "dan", timeout=10)
    assert refused.value.condition == "registration-required"
    with pytest.raises(IqError) as forbidden:
        await mam(dan.client, to=TEAM)
    assert forbidden.value.condition == "forbidden"
    status, _, _ = await asyncio.to_thread(http_get, server, f"/history/conversations?room={TEAM}",
                                           "dan@example.com")
    assert status == 403
    dan.client.send_message(mto=TEAM, mbody="let me in", mtype="groupchat")
    error = await asyncio.wait_for(dan.errors.get(), 10)
    assert error["error"]["condition"] == "registration-required"
    alice.client.send_message(mto=TEAM, mbody="team only", mtype="groupchat")
    assert (await bob.next_said())["body"] == "team only"
    assert await dan.quiet() == []

    # the admin adds dan to the alias: he may enter at once
    await asyncio.to_thread(server.admin, "alias", "add", "team@example.com", "dan@example.com")
    await asyncio.sleep(0.8)  # the service follows the store's change feed
    _, _, _, history = await dan.muc.join_muc_wait(TEAM, "dan", timeout=10)
    assert [m["body"] for m in history] == ["team only"]
    # bob is taken off the alias: he leaves the room with status 321, the others see it
    await asyncio.to_thread(server.admin, "alias", "remove", "team@example.com", "bob@example.com")
    out = await bob.presence_of(f"{TEAM}/bob", "unavailable")
    assert {"321", "110"} <= codes(out)
    assert "321" in codes(await alice.presence_of(f"{TEAM}/bob", "unavailable"))
    alice.client.send_message(mto=TEAM, mbody="after bob", mtype="groupchat")
    assert (await dan.next_said())["body"] == "after bob"
    assert await bob.quiet() == []
    # the alias is removed: the room is destroyed for everyone in it
    await asyncio.to_thread(server.admin, "alias", "remove", "team@example.com")
    destroyed = await alice.presence_of(f"{TEAM}/alice", "unavailable")
    assert destroyed.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy") is not None
    await logout(alice.client, bob.client, dan.client)


@async_test(timeout=60)
async def test_another_domains_user_reaches_no_room(server):
    alice = await member(server, "alice@example.com/seal")
    mallory = await member(server, "mallory@other.org/x")
    await alice.muc.join_muc_wait(EVERYONE, "alice-seal", timeout=10)
    # mallory cannot enter example.com's rooms, ask their service, or write to them
    mallory.muc.make_join_stanza(EVERYONE, "mallory").send()
    refused = await mallory.client.wait_presence(lambda p: p["from"] == f"{EVERYONE}/mallory")
    assert refused["type"] == "error" and refused["error"]["condition"] == "service-unavailable"
    with pytest.raises(IqError) as unknown:
        await mallory.client.plugin["xep_0030"].get_items(jid="conference.example.com", timeout=10)
    assert unknown.value.condition == "service-unavailable"
    mallory.client.send_message(mto=EVERYONE, mbody="forged hello", mtype="groupchat")
    mallory.client.send_message(mto=f"{EVERYONE}/alice-seal", mbody="psst", mtype="chat")
    # her own domain's room is hers alone
    _, _, occupants, history = await mallory.muc.join_muc_wait("everyone@conference.other.org", "mallory",
                                                               timeout=10)
    assert others(occupants, "mallory") == [] and history == []
    # a user of the domain who has not entered the room cannot write to it
    carol = await member(server, "carol@example.com/outside")
    carol.client.send_message(mto=EVERYONE, mbody="not entered", mtype="groupchat")
    error = await asyncio.wait_for(carol.errors.get(), 10)
    assert error["error"]["condition"] == "not-acceptable"
    assert await alice.quiet(1.0) == []
    received = []
    while not alice.client.messages.empty():
        received.append(alice.client.messages.get_nowait()["body"])
    assert not {"forged hello", "psst", "not entered"} & set(received), received
    await logout(alice.client, mallory.client, carol.client)


@async_test(timeout=90)
async def test_private_messages_nickname_change_self_ping_and_bad_input(server):
    alice = await member(server, "alice@example.com/pm")
    bob = await member(server, "bob@example.com/pm")
    await alice.muc.join_muc_wait(EVERYONE, "al", timeout=10)
    await bob.muc.join_muc_wait(EVERYONE, "bo", timeout=10)
    await alice.presence_of(f"{EVERYONE}/bo")

    # a private message (§7.5): to bob's resource, from alice's nickname, never as bob's contact alice
    alice.client.send_message(mto=f"{EVERYONE}/bo", mbody="just between us", mtype="chat")
    got = await asyncio.wait_for(bob.client.messages.get(), 10)
    while got["type"] == "groupchat":
        got = await asyncio.wait_for(bob.client.messages.get(), 10)
    assert (str(got["from"]), got["body"]) == (f"{EVERYONE}/al", "just between us")
    assert got.xml.find(f"{{{MUC_USER}}}x") is not None
    assert await alice.quiet() == []  # not a groupchat message

    # XEP-0410: a ping to one's own occupant JID says whether one is in
    answer = await alice.client.plugin["xep_0199"].send_ping(f"{EVERYONE}/al", timeout=10)
    assert answer is not None
    with pytest.raises(IqError) as outside:
        await alice.client.plugin["xep_0199"].send_ping(f"{EVERYONE}/nobody", timeout=10)
    assert outside.value.condition == "not-acceptable"

    # a nickname change (§7.6): 303 with the new nickname, then the new one available
    await alice.muc.set_self_nick(EVERYONE, "alice2", timeout=10)
    old = await bob.presence_of(f"{EVERYONE}/al", "unavailable")
    assert "303" in codes(old)
    assert old.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item").get("nick") == "alice2"
    await bob.presence_of(f"{EVERYONE}/alice2")
    alice.client.send_message(mto=EVERYONE, mbody="renamed", mtype="groupchat")
    assert str((await bob.next_said())["from"]) == f"{EVERYONE}/alice2"
    # taking bob's nickname: conflict, alice keeps hers
    alice.client.make_presence(pto=f"{EVERYONE}/bo").send()
    taken = await asyncio.wait_for(alice.refusals.get(), 10)
    assert (str(taken["from"]), taken["error"]["condition"]) == (f"{EVERYONE}/bo", "conflict")

    # an oversized subject is refused and changes nothing; an oversized nickname too
    alice.muc.set_subject(EVERYONE, "x" * 2000)
    error = await asyncio.wait_for(alice.errors.get(), 10)
    assert error["error"]["condition"] == "not-acceptable"
    with pytest.raises(PresenceError) as long_nick:
        await (await member(server, "carol@example.com/long")).muc.join_muc_wait(EVERYONE, "n" * 100, timeout=10)
    assert long_nick.value.condition == "not-acceptable"

    # a burst of entering and leaving by one client: everyone else's room goes on
    flood = await member(server, "dan@example.com/flood")
    for round_ in range(30):
        flood.muc.make_join_stanza(EVERYONE, f"f{round_}").send()
        flood.client.make_presence(pto=f"{EVERYONE}/f{round_}", ptype="unavailable").send()
    await flood.client.plugin["xep_0199"].send_ping("example.com", timeout=10)  # all of it handled
    bob.client.send_message(mto=EVERYONE, mbody="still fine", mtype="groupchat")
    while (got := await alice.next_said())["body"] != "still fine":
        pass
    info = await bob.client.plugin["xep_0030"].get_info(jid=EVERYONE, timeout=10)
    fields = info["disco_info"]["form"].get_values()
    assert fields["muc#roominfo_subject"] != "x" * 2000
    # the flood's 30 nicknames all left again: alice and bob are the room
    assert fields["muc#roominfo_occupants"] == "2"
    await logout(alice.client, bob.client, flood.client)


@async_test(timeout=90)
async def test_an_administrator_closes_names_and_reopens_a_room(server):
    alice = await member(server, "alice@example.com/admin")
    bob = await member(server, "bob@example.com/admin")
    await alice.muc.join_muc_wait(EVERYONE, "alice-a", timeout=10)
    listing = await asyncio.to_thread(server.admin, "room", "list", "example.com")
    assert f"{EVERYONE}\tdomain\topen\t" in listing.stdout.splitlines()

    # closed with chatgate-admin: the occupant is told the room is gone, nobody can enter (or make it
    # again), it is not listed
    await asyncio.to_thread(server.admin, "room", "disable", "everyone@example.com")
    destroyed = await alice.presence_of(f"{EVERYONE}/alice-a", "unavailable")
    assert destroyed.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy") is not None
    with pytest.raises(PresenceError) as refused:
        await bob.muc.join_muc_wait(EVERYONE, "bob-a", timeout=10)
    assert refused.value.condition == "not-allowed"  # closed, and not to be made again by a user
    items = await bob.client.plugin["xep_0030"].get_items(jid="conference.example.com", timeout=10)
    assert EVERYONE not in {i[0] for i in items["disco_items"]["items"]}
    refusal = await asyncio.to_thread(server.admin, "room", "disable", "nosuch@example.com", check=False)
    assert refusal.returncode != 0 and "no room nosuch at example.com" in refusal.stderr

    # named and opened again through the admin API: listed with its new name, entered
    status, room = await asyncio.to_thread(call, server, "PATCH", "/api/rooms/everyone@example.com",
                                           {"enabled": True, "name": "All hands"})
    assert status == 200 and room == {"jid": EVERYONE, "kind": "domain", "enabled": True, "name": "All hands"}
    status, rooms = await asyncio.to_thread(call, server, "GET", "/api/domains/example.com/rooms")
    assert status == 200 and {"jid": EVERYONE, "kind": "domain", "enabled": True, "name": "All hands"} in rooms
    await asyncio.sleep(0.8)  # the service follows the store's change feed
    items = await bob.client.plugin["xep_0030"].get_items(jid="conference.example.com", timeout=10)
    assert (EVERYONE, "All hands") in {(i[0], i[2]) for i in items["disco_items"]["items"]}
    await bob.muc.join_muc_wait(EVERYONE, "bob-a", timeout=10)
    await logout(alice.client, bob.client)


LUNCH = "lunch@conference.example.com"


@async_test(timeout=90)
async def test_a_user_makes_a_room_invites_configures_and_destroys_it(server):
    alice = await member(server, "alice@example.com/maker")
    bob = await member(server, "bob@example.com/maker")
    dan = await member(server, "dan@example.com/maker")

    # entering a room nobody made makes it: alice is its owner and moderator (status 201)
    own, _, _, _ = await alice.muc.join_muc_wait(LUNCH, "alice", timeout=10)
    item = own.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item")
    assert {"201", "110"} <= codes(own) and (item.get("affiliation"), item.get("role")) == ("owner", "moderator")
    # members only: bob may not enter, nor see it listed, until invited
    with pytest.raises(PresenceError) as refused:
        await bob.muc.join_muc_wait(LUNCH, "bob", timeout=10)
    assert refused.value.condition == "registration-required"
    items = await bob.client.plugin["xep_0030"].get_items(jid="conference.example.com", timeout=10)
    assert LUNCH not in {i[0] for i in items["disco_items"]["items"]}
    alice.muc.invite(LUNCH, "bob@example.com", reason="noon?")
    # (slixmpp tells no groupchat_invite for a room it tried to enter: the message itself)
    invitation = await asyncio.wait_for(bob.client.messages.get(), 10)
    invite = invitation.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}invite")
    assert str(invitation["from"]) == LUNCH and invite.get("from") == "alice@example.com/maker"
    assert invite.findtext(f"{{{MUC_USER}}}reason") == "noon?"
    await bob.muc.join_muc_wait(LUNCH, "bob", timeout=10)
    alice.client.send_message(mto=LUNCH, mbody="noon at the usual place", mtype="groupchat")
    assert (await bob.next_said())["body"] == "noon at the usual place"
    # another domain's user cannot be invited; a plain member cannot change the room
    with pytest.raises(IqError) as not_owner:
        await bob.muc.set_affiliation(LUNCH, "member", jid="dan@example.com", timeout=10)
    assert not_owner.value.condition == "forbidden"

    # the owner names it: listed under its name; its members listed to a member
    form = await alice.muc.get_room_config(LUNCH, timeout=10)
    form["type"] = "submit"
    form.set_values({"FORM_TYPE": "http://jabber.org/protocol/muc#roomconfig",
                     "muc#roomconfig_roomname": "Lunch crew"})
    await alice.muc.set_room_config(LUNCH, form, timeout=10)
    items = await bob.client.plugin["xep_0030"].get_items(jid="conference.example.com", timeout=10)
    assert (LUNCH, "Lunch crew") in {(i[0], i[2]) for i in items["disco_items"]["items"]}
    members = await bob.muc.get_affiliation_list(LUNCH, "member", timeout=10)
    assert [str(j) for j in members] == ["bob@example.com"]

    # dan is made a member, enters, is kicked (307), then taken off (he cannot enter again)
    await alice.muc.set_affiliation(LUNCH, "member", jid="dan@example.com", timeout=10)
    await dan.muc.join_muc_wait(LUNCH, "dan", timeout=10)
    await alice.muc.set_role(LUNCH, "dan", "none", timeout=10)
    assert "307" in codes(await dan.presence_of(f"{LUNCH}/dan", "unavailable"))
    await alice.muc.set_affiliation(LUNCH, "none", jid="dan@example.com", timeout=10)
    with pytest.raises(PresenceError) as out:
        await dan.muc.join_muc_wait(LUNCH, "dan", timeout=10)
    assert out.value.condition == "registration-required"
    # bob is taken off while inside: he leaves with 321
    await alice.muc.set_affiliation(LUNCH, "none", jid="bob@example.com", timeout=10)
    assert "321" in codes(await bob.presence_of(f"{LUNCH}/bob", "unavailable"))
    with pytest.raises(IqError) as last_owner:
        await alice.muc.set_affiliation(LUNCH, "none", jid="alice@example.com", timeout=10)
    assert last_owner.value.condition == "conflict"

    # the owner destroys it: everyone in it is told, the name is free again, the history stays
    await alice.muc.destroy(LUNCH, "lunch is over", timeout=10)
    gone = await alice.presence_of(f"{LUNCH}/alice", "unavailable")
    assert gone.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}destroy") is not None
    own, _, _, history = await dan.muc.join_muc_wait(LUNCH, "dan", maxstanzas=5, timeout=10)
    assert "201" in codes(own) and history == []

    # a removed user is taken off the rooms users made: the address made again is a stranger there
    await dan.muc.set_affiliation(LUNCH, "member", jid="carol@example.com", timeout=10)
    await asyncio.to_thread(server.admin, "user", "remove", "carol@example.com")
    await asyncio.to_thread(server.admin, "user", "add", "carol@example.com", "--password-stdin",
                            stdin=PASSWORD + "\n")
    await asyncio.sleep(0.8)  # the service follows the store's change feed
    assert await dan.muc.get_affiliation_list(LUNCH, "member", timeout=10) == []
    listing = await asyncio.to_thread(server.admin, "room", "list", "example.com")
    assert f"{LUNCH}\tmade\topen\t" in listing.stdout.splitlines()
    await logout(alice.client, bob.client, dan.client)


@pytest.fixture(scope="module")
def large(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose rooms count as large beyond two occupants."""
    srv = Server(tmp_path_factory.mktemp("large-rooms"), muc={"large_room": 2})
    srv.admin("domain", "add", "example.com")
    for name in USERS:
        srv.admin("user", "add", f"{name}@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    srv.start()
    yield srv
    srv.stop()


@async_test(timeout=60)
async def test_a_large_room_tells_nobody_of_each_participant_coming_and_going(large):
    made = await member(large, "alice@example.com/owner")
    await made.muc.join_muc_wait(LUNCH, "alice", timeout=10)  # alice makes it: its owner
    for name in ("bob", "carol"):
        await made.muc.set_affiliation(LUNCH, "member", jid=f"{name}@example.com", timeout=10)
    bob = await member(large, "bob@example.com/in")
    await bob.muc.join_muc_wait(LUNCH, "bob", timeout=10)
    await made.presence_of(f"{LUNCH}/bob")  # two occupants: a small room, everyone told

    # the third makes it large: carol is shown the owner only, and nobody is told of her
    carol = await member(large, "carol@example.com/in")
    _, _, occupants, _ = await carol.muc.join_muc_wait(LUNCH, "carol", timeout=10)
    assert [p["from"].resource for p in others(occupants, "carol")] == ["alice"]
    # ... yet she is in: her message reaches both, and the room lists her to whoever asks
    carol.client.send_message(mto=LUNCH, mbody="hello, large room", mtype="groupchat")
    for reader in (made, bob):
        assert (await reader.next_said())["body"] == "hello, large room"
    items = await bob.client.plugin["xep_0030"].get_items(jid=LUNCH, timeout=10)
    assert sorted(i[2] for i in items["disco_items"]["items"]) == ["alice", "bob", "carol"]
    await logout(carol.client)
    await asyncio.sleep(0.5)
    seen = [str(p["from"]) for p in list(made.seen._queue) + list(bob.seen._queue)]
    assert f"{LUNCH}/carol" not in seen
    await logout(made.client, bob.client)


@async_test(timeout=60)
async def test_a_large_domain_room_shows_a_newcomer_nobody_but_itself(large):
    # the domain's room has no owners: once large, a newcomer is told of no one, and nobody of it
    joined = []
    for name in ("alice", "bob"):
        joined.append(await member(large, f"{name}@example.com/everyone"))
        await joined[-1].muc.join_muc_wait(EVERYONE, name, timeout=10)
    carol = await member(large, "carol@example.com/everyone")
    _, _, occupants, _ = await carol.muc.join_muc_wait(EVERYONE, "carol", timeout=10)
    assert others(occupants, "carol") == []
    carol.client.send_message(mto=EVERYONE, mbody="hello, everyone", mtype="groupchat")
    for reader in joined:
        assert (await reader.next_said())["body"] == "hello, everyone"
    seen = [str(p["from"]) for reader in joined for p in list(reader.seen._queue)]
    assert f"{EVERYONE}/carol" not in seen
    await logout(carol.client, *(m.client for m in joined))
