"""Team rooms (XEP-0045) across the nodes of a cluster: occupants on two nodes
in one room see each other and each other's messages once, a newcomer on
either node reads the same history, and a room survives ``kill -9`` of a node:
the occupants on the other node stay in, see the dead node's occupants leave,
and go on talking."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.cluster import Cluster
from tests.integration.harness import async_test, login, logout
from tests.integration.test_cluster import PASSWORD, own_cluster
from tests.integration.test_history import mam
from tests.integration.test_rooms import MUC_USER, Member, codes

DOMAIN = "rooms.example"
ROOM = f"everyone@conference.{DOMAIN}"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    one = own_cluster(tmp_path_factory.mktemp("cluster-rooms"),
                      *(f"{name}@{DOMAIN}" for name in ("alice", "bob", "carol")))
    yield one
    one.stop()


async def member(node, jid: str) -> Member:
    return Member(await login(node, jid, PASSWORD))


@async_test(timeout=120)
async def test_a_room_spans_the_nodes_and_survives_one(cluster):
    node1, node2 = cluster.nodes
    bob = await member(node2, f"bob@{DOMAIN}/phone")
    alice = await member(node1, f"alice@{DOMAIN}/desk")
    await bob.client.wait_presence(lambda p: p["from"] == f"alice@{DOMAIN}/desk")
    await alice.muc.join_muc_wait(ROOM, "alice", timeout=10)
    await bob.muc.join_muc_wait(ROOM, "bob", timeout=10)
    # bob, on node2, finds alice of node1 in the room (in the list he is sent, or told a moment later
    # when node2 hears of her: the bus is milliseconds behind); alice sees him come
    found = await bob.presence_of(f"{ROOM}/alice")
    assert found.xml.find("{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item"
                          ).get("jid") == f"alice@{DOMAIN}/desk"
    seen = await alice.presence_of(f"{ROOM}/bob")
    assert seen.xml.find("{http://jabber.org/protocol/muc#user}x/{http://jabber.org/protocol/muc#user}item"
                         ).get("jid") == f"bob@{DOMAIN}/phone"

    # messages both ways, each once, to both nodes (the sender's own copy too)
    alice.client.send_message(mto=ROOM, mbody="from node1", mtype="groupchat")
    for reader in (bob, alice):
        got = await reader.next_said()
        assert (str(got["from"]), got["body"]) == (f"{ROOM}/alice", "from node1")
    bob.client.send_message(mto=ROOM, mbody="from node2", mtype="groupchat")
    for reader in (alice, bob):
        got = await reader.next_said()
        assert (str(got["from"]), got["body"]) == (f"{ROOM}/bob", "from node2")
    assert await alice.quiet() == [] and await bob.quiet() == []
    # a private message to an occupant of the other node, from the sender's nickname
    bob.client.send_message(mto=f"{ROOM}/alice", mbody="psst, node1", mtype="chat")
    private = await asyncio.wait_for(alice.client.messages.get(), 10)
    while private["type"] == "groupchat":
        private = await asyncio.wait_for(alice.client.messages.get(), 10)
    assert (str(private["from"]), private["body"]) == (f"{ROOM}/bob", "psst, node1")
    # entering a room is no news to the domain: alice's own presence reached bob once, at login
    assert [str(p["from"]) for p in bob.client.presences].count(f"alice@{DOMAIN}/desk") == 1

    # carol comes on node2: both occupants listed, the history of both nodes' messages
    carol = await member(node2, f"carol@{DOMAIN}/laptop")
    _, _, _, history = await carol.muc.join_muc_wait(ROOM, "carol", maxstanzas=10, timeout=10)
    seen_by_carol: set[str] = set()
    while seen_by_carol != {"alice", "bob", "carol"}:  # her list, or the bus's news a moment later
        presence = await asyncio.wait_for(carol.seen.get(), 10)
        if presence["type"] == "available":
            seen_by_carol.add(presence["from"].resource)
    assert [m["body"] for m in history] == ["from node1", "from node2"]
    await alice.presence_of(f"{ROOM}/carol")

    # a room alice makes on node1: bob, invited, enters it from node2 at once (whether or not node2 has
    # read its record from the directory yet) as a member, not as the maker of a new one
    made = f"adhoc@conference.{DOMAIN}"
    own, _, _, _ = await alice.muc.join_muc_wait(made, "alice", timeout=10)
    assert "201" in codes(own)
    alice.muc.invite(made, f"bob@{DOMAIN}")
    invitation = await asyncio.wait_for(bob.client.messages.get(), 10)
    while str(invitation["from"]) != made:
        invitation = await asyncio.wait_for(bob.client.messages.get(), 10)
    own, _, _, _ = await bob.muc.join_muc_wait(made, "bob", timeout=10)
    assert "201" not in codes(own)
    assert own.xml.find(f"{{{MUC_USER}}}x/{{{MUC_USER}}}item").get("affiliation") == "member"
    bob.client.send_message(mto=made, mbody="in the made room", mtype="groupchat")
    assert (await alice.next_said())["body"] == "in the made room"
    await bob.next_said()

    # node1 dies: the others see alice leave, stay in, and go on
    cluster.kill(node1)
    gone = await bob.presence_of(f"{ROOM}/alice", "unavailable", timeout=15)
    assert gone["type"] == "unavailable"
    await carol.presence_of(f"{ROOM}/alice", "unavailable", timeout=15)
    carol.client.send_message(mto=ROOM, mbody="after node1", mtype="groupchat")
    for reader in (bob, carol):
        assert (await reader.next_said())["body"] == "after node1"
    page = await mam(bob.client, to=ROOM)
    bodies = [r.xml.find(".//{jabber:client}body").text for r in page.results]
    assert bodies == ["from node1", "from node2", "after node1"]
    await logout(bob.client, carol.client)
