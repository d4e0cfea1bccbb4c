"""Two chatgate nodes sharing Redis, seen from users spread over them
(slixmpp over c2s, the BOSH test client for a webmail user): they must not be
able to tell they are on different nodes. Presence both ways and once per node
on the bus, chat, bare and full JIDs, carbons, aliases, offline messages and
MAM from the shared stores, a resource conflict across nodes, a domain switch,
a new password and a removal closing sessions on every node; then the failures:
``kill -9`` of a node (its users shown unavailable within ``dead_after``, no
message to them lost) and a Redis restart (same-node chat goes on, every
cross-node message is delivered or bounced, never silently dropped).

Each test of the shared cluster has its own domain, so that presence, rosters
and offline messages of one never reach another; the kill, the Redis restart
and the domain switch get a cluster of their own (tests/integration/cluster.py).
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import slixmpp

from tests.integration.bosh_client import CLIENT, BOSHClient, is_message, is_presence, message
from tests.integration.cluster import DEAD_AFTER, Cluster, RedisMonitor
from tests.integration.conftest import PASSWORD
from tests.integration.harness import Client, LoginFailed, Server, async_test, login, logout
from tests.integration.test_aliases import ofrom
from tests.integration.test_forgery import (
    Watched,
    assert_refused,
    assert_unforged,
    attack,
    attacker,
    check_hostile,
    hostile_message,
    namespace_attack,
    prefix_attack,
    presence_attack,
)
from tests.integration.test_history import (
    CARBONS,
    DELAY,
    FORWARD,
    body,
    connect,
    inner,
    mam,
    page_rsm,
    until_quiet,
)

#: seconds a stanza crossing nodes may take before the test calls it lost (milliseconds expected)
ARRIVES = 5
NEW_PASSWORD = "battery staple 43"
_ids = itertools.count()

#: every account of the shared cluster, one domain per test
USERS = [
    *(f"{u}@presence.example" for u in ("alice", "bob", "carol")),
    "alice@fanout.example", *(f"w{n}@fanout.example" for n in range(1, 6)),
    *(f"{u}@chat.example" for u in ("alice", "bob", "carol")),
    *(f"{u}@race.example" for u in ("alice", "bob")),
    *(f"{u}@bare.example" for u in ("alice", "bob", "carol")),
    *(f"{u}@full.example" for u in ("alice", "bob", "carol")),
    *(f"{u}@carbons.example" for u in ("alice", "bob")),
    *(f"{u}@alias.example" for u in ("alice", "bob", "carol", "dave")),
    *(f"{u}@offline.example" for u in ("alice", "bob")),
    *(f"{u}@mam.example" for u in ("alice", "bob")),
    *(f"{u}@conflict.example" for u in ("alice", "bob")),
    *(f"{u}@revoke.example" for u in ("pat", "quinn", "rory")),
    *(f"{u}@forge.example" for u in ("alice", "bob", "carol")),
]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The shared cluster: two nodes, for the tests that leave it as they found it."""
    shared = Cluster(tmp_path_factory.mktemp("cluster"))
    shared.add_users(PASSWORD, *USERS)
    shared.admin("alias", "add", "sales@alias.example", "alice@alias.example", "bob@alias.example",
                 "carol@alias.example", "--name", "Sales Team")
    shared.start()
    yield shared
    shared.stop()


def own_cluster(folder: Path, *users: str, **sections: dict) -> Cluster:
    """A cluster for one destructive test, its users made, started."""
    one = Cluster(folder, **sections)
    one.add_users(PASSWORD, *users)
    return one.start()


def available(jid: str, show: str | None = None):
    """A presence predicate: *jid* (full) available, with *show* if given."""
    def match(p: slixmpp.Presence) -> bool:
        return p["from"] == jid and p["type"] != "unavailable" and (show is None or p["show"] == show)
    return match


def unavailable(jid: str):
    return lambda p: p["from"] == jid and p["type"] == "unavailable"


async def received(client: Client, text: str, sender: str | None = None, timeout: float = ARRIVES) -> slixmpp.Message:
    """The next message *client* gets: it must be *text* (from *sender* if given), not an error."""
    try:
        got = await client.next_message(timeout)
    except TimeoutError:
        raise AssertionError(f"{client.boundjid} did not get {text!r} in {timeout}s") from None
    assert got["type"] != "error", f"{client.boundjid} got an error instead of {text!r}: {got}"
    assert got["body"] == text, f"{client.boundjid} expected {text!r}, got {got}"
    if sender is not None:
        assert got["from"] == sender, got
    return got


async def web_login(node: Server, user: str, domain: str, resource: str = "web") -> BOSHClient:
    web = BOSHClient(node.http_port, domain=domain, wait=5)
    await asyncio.to_thread(web.login, user, PASSWORD, resource=resource)
    return web


async def web_sees(web: BOSHClient, predicate, timeout: float = ARRIVES) -> None:
    await asyncio.to_thread(web.wait_for, predicate, timeout)


def drain(client: Client) -> list[slixmpp.Message]:
    """What *client* has received and not read yet, without waiting."""
    got = []
    while not client.messages.empty():
        got.append(client.messages.get_nowait())
    return got


# -- hostile input crossing nodes


@async_test(timeout=90)
async def test_nothing_a_client_sends_on_one_node_is_forged_on_another(cluster):
    """The forgery attacks of test_forgery.py, sent on node1 by alice, watched on node2
    by bob (two resources, carbons), carol (a bystander) and alice's own other client:
    the bus carries chatgate's serialization, and every node reads it back through the
    restricted parser, so what they get is exactly what a single node would give."""
    d = "forge.example"
    node1, node2 = cluster.nodes
    desk = await connect(node2, f"bob@{d}/desk", carbons=True)
    phone = await connect(node2, f"bob@{d}/phone", carbons=True)
    bystander = await connect(node2, f"carol@{d}/desk")
    mirror = await connect(node2, f"alice@{d}/desk", carbons=True)
    watched = [Watched(c) for c in (desk, phone, bystander, mirror)]
    attackers, answers = set(), []
    for payload in (namespace_attack(f"bob@{d}"), namespace_attack(f"bob@{d}/desk"), presence_attack(),
                    prefix_attack(f"bob@{d}")):
        raw, full = await attacker(node1, "alice", f"evil{len(attackers)}", d)
        attackers.add(full)
        answers.append(await attack(raw, payload))
    raw, full = await attacker(node1, "alice", "hostile", d)
    attackers.add(full)
    raw.send(hostile_message(f"bob@{d}"))
    got = {client: await until_quiet(client) for client in (desk, phone, mirror)}
    raw.close()
    allowed = attackers | {f"alice@{d}", f"bob@{d}", f"carol@{d}", f"bob@{d}/desk", f"bob@{d}/phone",
                           f"carol@{d}/desk", f"alice@{d}/desk", None}
    for record in watched:
        assert_unforged(record.stanzas, allowed, d)
    assert_refused(answers)
    for client in (desk, phone):
        assert len(got[client]) == 1, got[client]
        check_hostile(got[client][0].xml, full)
    assert len(got[mirror]) == 1, got[mirror]
    check_hostile(inner(got[mirror][0], f"{{{CARBONS}}}sent", f"{{{FORWARD}}}forwarded", f"{{{CLIENT}}}message"),
                  full)
    assert await until_quiet(bystander, 0.2) == []
    bystander.send_message(mto=f"bob@{d}", mbody="still here", mtype="chat")
    await received(desk, "still here", f"carol@{d}/desk")
    await logout(desk, phone, bystander, mirror)


# -- presence


@async_test(timeout=60)
async def test_roster_presence_crosses_nodes_both_ways(cluster):
    node1, node2 = cluster.nodes
    d = "presence.example"
    alice = await login(node1, f"alice@{d}/desk", PASSWORD)
    bob = await login(node2, f"bob@{d}/laptop", PASSWORD)
    # bob comes online on node2: alice (node1) sees it; bob sees alice, who was there before him
    await alice.wait_presence(available(f"bob@{d}/laptop"), ARRIVES)
    await bob.wait_presence(available(f"alice@{d}/desk"), ARRIVES)
    # a webmail user on node2 (BOSH) and alice see each other too
    web = await web_login(node2, "carol", d)
    await alice.wait_presence(available(f"carol@{d}/web"), ARRIVES)
    await web_sees(web, is_presence(f"alice@{d}/desk"))
    # changes, each way
    bob.send_presence(pshow="away", pstatus="lunch")
    seen = await alice.wait_presence(available(f"bob@{d}/laptop", show="away"), ARRIVES)
    assert seen["status"] == "lunch"
    alice.send_presence(pshow="dnd", pstatus="in a meeting")
    await bob.wait_presence(available(f"alice@{d}/desk", show="dnd"), ARRIVES)
    await web_sees(web, is_presence(f"alice@{d}/desk", show="dnd"))
    # going offline, each way
    await logout(bob)
    await alice.wait_presence(unavailable(f"bob@{d}/laptop"), ARRIVES)
    await asyncio.to_thread(web.close)
    await alice.wait_presence(unavailable(f"carol@{d}/web"), ARRIVES)
    bob = await login(node2, f"bob@{d}/again", PASSWORD)
    await bob.wait_presence(available(f"alice@{d}/desk", show="dnd"), ARRIVES)
    await logout(alice)
    await bob.wait_presence(unavailable(f"alice@{d}/desk"), ARRIVES)
    await logout(bob)


@async_test(timeout=60)
async def test_a_presence_change_crosses_the_bus_once_per_node_not_once_per_contact(cluster):
    node1, node2 = cluster.nodes
    d = "fanout.example"
    watchers = [await login(node2, f"w{n}@{d}/desk", PASSWORD) for n in range(1, 6)]
    alice = await login(node1, f"alice@{d}/desk", PASSWORD)
    for watcher in watchers:
        await watcher.wait_presence(available(f"alice@{d}/desk"), ARRIVES)
    marker = f"fanout-marker-{next(_ids)}"
    with RedisMonitor(cluster.redis.port) as monitor:
        alice.send_presence(pshow="away", pstatus=marker)
        for watcher in watchers:
            await watcher.wait_presence(lambda p: p["from"] == f"alice@{d}/desk" and p["status"] == marker,
                                        ARRIVES)
        await asyncio.sleep(0.3)
    sends = monitor.commands("XADD", "PUBLISH", containing=marker)
    # five contacts on node2, one other node: one bus message
    assert len(sends) == 1, sends
    await logout(alice, *watchers)


# -- messages


@async_test(timeout=60)
async def test_chat_both_ways_between_nodes_and_with_a_webmail_user(cluster):
    node1, node2 = cluster.nodes
    d = "chat.example"
    alice = await login(node1, f"alice@{d}/desk", PASSWORD)
    bob = await login(node2, f"bob@{d}/laptop", PASSWORD)
    await alice.wait_presence(available(f"bob@{d}/laptop"), ARRIVES)  # (a message at once: the race test)
    alice.send_message(mto=f"bob@{d}", mbody="hello from node1", mtype="chat")
    await received(bob, "hello from node1", f"alice@{d}/desk")
    bob.send_message(mto=f"alice@{d}", mbody="hello from node2", mtype="chat")
    await received(alice, "hello from node2", f"bob@{d}/laptop")
    for n in range(5):  # a conversation keeps its order
        alice.send_message(mto=f"bob@{d}", mbody=f"line {n}", mtype="normal")
    for n in range(5):
        await received(bob, f"line {n}")
    # the webmail user (BOSH on node2) and alice (node1)
    web = await web_login(node2, "carol", d)
    await alice.wait_presence(available(f"carol@{d}/web"), ARRIVES)
    web.send(message(f"alice@{d}", "from the webmail"))
    await received(alice, "from the webmail", f"carol@{d}/web")
    alice.send_message(mto=f"carol@{d}", mbody="to the webmail", mtype="chat")
    await web_sees(web, is_message("to the webmail", f"alice@{d}/desk"))
    assert await until_quiet(alice, 0.5) == [] and await until_quiet(bob, 0.5) == []
    await asyncio.to_thread(web.close)
    await logout(alice, bob)


@async_test(timeout=60)
async def test_a_message_sent_as_soon_as_the_recipient_is_logged_in_on_the_other_node_reaches_them(cluster):
    # one node: a session is there once bound. Two: node1 must not take bob for offline (and keep
    # the message in offline storage while he is online) because it has not heard of his login yet.
    node1, node2 = cluster.nodes
    d = "race.example"
    alice = await login(node1, f"alice@{d}/desk", PASSWORD)
    for n in range(3):
        bob = await login(node2, f"bob@{d}/r{n}", PASSWORD)
        alice.send_message(mto=f"bob@{d}", mbody=f"right away {n}", mtype="chat")
        await received(bob, f"right away {n}", f"alice@{d}/desk")
        await logout(bob)
        await alice.wait_presence(unavailable(f"bob@{d}/r{n}"), ARRIVES)
    await logout(alice)


@async_test(timeout=60)
async def test_a_message_to_a_bare_jid_reaches_resources_on_both_nodes(cluster):
    node1, node2 = cluster.nodes
    d = "bare.example"
    desk = await login(node1, f"bob@{d}/desk", PASSWORD)
    phone = await login(node2, f"bob@{d}/phone", PASSWORD)
    alice = await login(node1, f"alice@{d}/desk", PASSWORD)
    carol = await login(node2, f"carol@{d}/desk", PASSWORD)
    await alice.wait_presence(available(f"bob@{d}/phone"), ARRIVES)
    await carol.wait_presence(available(f"bob@{d}/desk"), ARRIVES)
    alice.send_message(mto=f"bob@{d}", mbody="from node1 to both", mtype="chat")
    carol.send_message(mto=f"bob@{d}", mbody="from node2 to both", mtype="chat")
    for resource in (desk, phone):
        got = sorted(m["body"] for m in await until_quiet(resource, 1.5))
        assert got == ["from node1 to both", "from node2 to both"], (resource.boundjid, got)
    await logout(desk, phone, alice, carol)


@async_test(timeout=60)
async def test_a_message_to_a_full_jid_reaches_that_resource_on_the_other_node_only(cluster):
    node1, node2 = cluster.nodes
    d = "full.example"
    desk = await login(node1, f"bob@{d}/desk", PASSWORD)
    phone = await login(node2, f"bob@{d}/phone", PASSWORD)
    alice = await login(node1, f"alice@{d}/desk", PASSWORD)
    carol = await login(node2, f"carol@{d}/desk", PASSWORD)
    await alice.wait_presence(available(f"bob@{d}/phone"), ARRIVES)
    await carol.wait_presence(available(f"bob@{d}/desk"), ARRIVES)
    alice.send_message(mto=f"bob@{d}/phone", mbody="to the phone", mtype="chat")
    await received(phone, "to the phone", f"alice@{d}/desk")
    carol.send_message(mto=f"bob@{d}/desk", mbody="to the desk", mtype="chat")
    await received(desk, "to the desk", f"carol@{d}/desk")
    phone.send_message(mto=f"alice@{d}/desk", mbody="answer from the phone", mtype="chat")
    await received(alice, "answer from the phone", f"bob@{d}/phone")
    assert await until_quiet(desk, 0.5) == [] and await until_quiet(phone, 0.5) == []
    await logout(desk, phone, alice, carol)


@async_test(timeout=60)
async def test_carbons_reach_the_senders_resource_on_the_other_node(cluster):
    node1, node2 = cluster.nodes
    d = "carbons.example"
    alice = f"alice@{d}"
    desk = await connect(node1, f"{alice}/desk", carbons=True)
    phone = await connect(node2, f"{alice}/phone", carbons=True)
    bob = await connect(node1, f"bob@{d}/laptop")
    await bob.wait_presence(available(f"{alice}/phone"), ARRIVES)
    await phone.wait_presence(available(f"bob@{d}/laptop"), ARRIVES)

    async def carbon(client: Client, kind: str):
        try:
            copy = await client.next_message(ARRIVES)
        except TimeoutError:
            raise AssertionError(f"{client.boundjid} got no {kind} carbon in {ARRIVES}s") from None
        assert copy["from"] == alice, copy
        return inner(copy, f"{{{CARBONS}}}{kind}", f"{{{FORWARD}}}forwarded", f"{{{CLIENT}}}message")

    # received: bob writes to the desk (node1), the phone (node2) gets a copy
    bob.send_message(mto=f"{alice}/desk", mbody="to your desk", mtype="chat")
    await received(desk, "to your desk")
    copy = await carbon(phone, "received")
    assert (body(copy), copy.get("from")) == ("to your desk", f"bob@{d}/laptop")
    # sent: alice answers from the desk, the phone sees it
    desk.send_message(mto=f"bob@{d}", mbody="from the desk", mtype="chat")
    await received(bob, "from the desk")
    copy = await carbon(phone, "sent")
    assert (body(copy), copy.get("from")) == ("from the desk", f"{alice}/desk")
    # and the other way: alice writes from the phone (node2), the desk (node1) sees it
    phone.send_message(mto=f"bob@{d}", mbody="from the phone", mtype="chat")
    await received(bob, "from the phone", f"{alice}/phone")
    copy = await carbon(desk, "sent")
    assert (body(copy), copy.get("from")) == ("from the phone", f"{alice}/phone")
    bob.send_message(mto=f"{alice}/phone", mbody="to your phone", mtype="chat")
    await received(phone, "to your phone")
    copy = await carbon(desk, "received")
    assert body(copy) == "to your phone"
    assert await until_quiet(desk, 0.5) == [] and await until_quiet(phone, 0.5) == []
    await logout(desk, phone, bob)


@async_test(timeout=60)
async def test_alias_fan_out_reaches_members_on_both_nodes(cluster):
    node1, node2 = cluster.nodes
    d = "alias.example"
    alice = await login(node1, f"alice@{d}/desk", PASSWORD)
    bob = await login(node2, f"bob@{d}/desk", PASSWORD)
    carol = await login(node1, f"carol@{d}/desk", PASSWORD)
    dave = await login(node2, f"dave@{d}/desk", PASSWORD)  # not a member
    seen = await dave.wait_presence(
        lambda p: p["from"] == f"sales@{d}" and p["status"] == "3 of 3 members online", ARRIVES)
    assert seen["type"] != "unavailable"
    dave.send_message(mto=f"sales@{d}", mbody="who can help?", mtype="chat")
    for member in (alice, bob, carol):
        got = await received(member, "who can help?", f"sales@{d}/dave")
        assert ofrom(got) == f"dave@{d}"
    alice.send_message(mto=f"sales@{d}/dave", mbody="I can", mtype="chat")  # node1 -> dave on node2
    reply = await received(dave, "I can", f"sales@{d}/alice")
    assert ofrom(reply) == f"alice@{d}"
    bob.send_message(mto=f"sales@{d}", mbody="thanks alice", mtype="chat")  # a member on node2
    await received(alice, "thanks alice", f"sales@{d}/bob")
    await received(carol, "thanks alice", f"sales@{d}/bob")
    assert await until_quiet(bob, 0.5) == []
    await logout(alice, bob, carol, dave)


@async_test(timeout=60)
async def test_offline_message_sent_on_one_node_arrives_at_login_on_the_other(cluster):
    node1, node2 = cluster.nodes
    d = "offline.example"
    alice = await login(node1, f"alice@{d}/desk", PASSWORD)
    for n in range(3):
        alice.send_message(mto=f"bob@{d}", mbody=f"while you were out {n}", mtype="chat")
    assert await until_quiet(alice, 0.5) == []  # kept, not bounced
    bob = await login(node2, f"bob@{d}/laptop", PASSWORD)
    got = await until_quiet(bob, 1.5)
    assert all(m["from"] == f"alice@{d}/desk" and m.xml.find(f"{{{DELAY}}}delay") is not None for m in got), got
    bodies = [m["body"] for m in got]
    assert sorted(bodies) == [f"while you were out {n}" for n in range(3)], bodies
    # (out of order here also happens on one node with [archive] offline_backend = redis)
    assert bodies == [f"while you were out {n}" for n in range(3)], f"offline messages out of order: {bodies}"
    await logout(alice, bob)
    bob = await login(node1, f"bob@{d}/again", PASSWORD)
    assert await until_quiet(bob, 0.5) == []  # delivered once, not again on the other node
    await logout(bob)


@async_test(timeout=60)
async def test_a_message_sent_on_node1_is_in_the_archive_read_on_node2(cluster):
    node1, node2 = cluster.nodes
    d = "mam.example"
    alice = await login(node1, f"alice@{d}/desk", PASSWORD)
    bob = await login(node1, f"bob@{d}/desk", PASSWORD)
    alice.send_message(mto=f"bob@{d}/desk", mbody="archived on node1", mtype="chat")
    await received(bob, "archived on node1")
    bob.send_message(mto=f"alice@{d}/desk", mbody="and the answer", mtype="chat")
    await received(alice, "and the answer")
    await asyncio.sleep(0.3)
    for user, peer in (("bob", "alice"), ("alice", "bob")):
        reader = await login(node2, f"{user}@{d}/phone", PASSWORD)
        page = await mam(reader, with_jid=f"{peer}@{d}", rsm=page_rsm(10))
        assert page.bodies == ["archived on node1", "and the answer"], (user, page.bodies)
        await logout(reader)
    await logout(alice, bob)


@async_test(timeout=60)
async def test_the_same_full_jid_on_node2_replaces_the_session_on_node1(cluster):
    node1, node2 = cluster.nodes
    d = "conflict.example"
    first = await login(node1, f"alice@{d}/same", PASSWORD)
    bob = await login(node1, f"bob@{d}/desk", PASSWORD)
    mark = len(bob.presences)
    second = await login(node2, f"alice@{d}/same", PASSWORD)
    try:
        await first.wait_closed(ARRIVES)
    except TimeoutError:
        raise AssertionError("the session on node1 is still open after the same full JID bound on node2") from None
    assert first.stream_errors == ["conflict"]
    assert second.boundjid.full == f"alice@{d}/same"
    # bob (node1) sees the first session go and the second come
    def position(presence: slixmpp.Presence) -> int:
        return next(i for i, seen in enumerate(bob.presences) if seen is presence)

    after = max(mark - 1, position(await bob.wait_presence(unavailable(f"alice@{d}/same"), ARRIVES)))
    await bob.wait_presence(lambda p: position(p) > after and available(f"alice@{d}/same")(p), ARRIVES)
    bob.send_message(mto=f"alice@{d}/same", mbody="which one?", mtype="chat")
    await received(second, "which one?", f"bob@{d}/desk")
    second.send_message(mto=f"bob@{d}", mbody="the one on node2", mtype="chat")
    await received(bob, "the one on node2", f"alice@{d}/same")
    await logout(second, bob)


@async_test(timeout=90)
async def test_new_password_and_removal_close_sessions_on_every_node(cluster):
    node1, node2 = cluster.nodes
    d = "revoke.example"
    quinn = await login(node1, f"quinn@{d}/desk", PASSWORD)
    pat1 = await login(node1, f"pat@{d}/desk", PASSWORD)
    pat2 = await login(node2, f"pat@{d}/laptop", PASSWORD)
    rory = await login(node2, f"rory@{d}/laptop", PASSWORD)
    rory_web = await web_login(node1, "rory", d)
    await quinn.wait_presence(available(f"pat@{d}/laptop"), ARRIVES)

    started = time.monotonic()
    await asyncio.to_thread(cluster.admin, "user", "passwd", f"pat@{d}", "--password-stdin",
                            stdin=NEW_PASSWORD + "\n")
    for client in (pat1, pat2):
        await client.wait_closed(ARRIVES)
        assert client.stream_errors == ["reset"], (client.boundjid, client.stream_errors)
    assert time.monotonic() - started < ARRIVES
    await quinn.wait_presence(unavailable(f"pat@{d}/laptop"), ARRIVES)  # node2's user, seen on node1
    for node in (node1, node2):
        with pytest.raises(LoginFailed):
            await login(node, f"pat@{d}/again", PASSWORD)
    await logout(await login(node2, f"pat@{d}/again", NEW_PASSWORD))

    await asyncio.to_thread(cluster.admin, "user", "remove", f"rory@{d}")
    await rory.wait_closed(ARRIVES)
    assert rory.stream_errors == ["not-authorized"]
    ended = await asyncio.to_thread(rory_web.wait_ended, ARRIVES)
    assert ended.stream_error() == "not-authorized", ended.raw
    assert not quinn.gone.is_set()
    await logout(quinn)


# -- a cluster of its own: domain switch, node death, Redis restart


@async_test(timeout=90)
async def test_disabling_a_domain_closes_its_sessions_on_both_nodes(tmp_path):
    d = "switch.example"
    cluster = await asyncio.to_thread(own_cluster, tmp_path, f"sam@{d}", f"tess@{d}", f"uma@{d}")
    try:
        node1, node2 = cluster.nodes
        sam = await login(node1, f"sam@{d}/desk", PASSWORD)
        tess = await login(node2, f"tess@{d}/desk", PASSWORD)
        web = await web_login(node2, "uma", d, resource="webmail")
        started = time.monotonic()
        await asyncio.to_thread(cluster.admin, "domain", "disable", d)
        for client in (sam, tess):
            await client.wait_closed(ARRIVES)
            assert client.stream_errors == ["policy-violation"], (client.boundjid, client.stream_errors)
        ended = await asyncio.to_thread(web.wait_ended, ARRIVES)
        assert (ended.condition, ended.stream_error()) == ("remote-stream-error", "policy-violation"), ended.raw
        assert time.monotonic() - started < ARRIVES
        for node in (node1, node2):
            with pytest.raises(LoginFailed):
                await login(node, f"sam@{d}/again", PASSWORD)

        await asyncio.to_thread(cluster.admin, "domain", "enable", d)
        await asyncio.sleep(0.5)
        sam = await login(node1, f"sam@{d}/back", PASSWORD)
        tess = await login(node2, f"tess@{d}/back", PASSWORD)
        await sam.wait_presence(available(f"tess@{d}/back"), ARRIVES)
        sam.send_message(mto=f"tess@{d}", mbody="back on", mtype="chat")
        await received(tess, "back on", f"sam@{d}/back")
        await logout(sam, tess)
    finally:
        await asyncio.to_thread(cluster.stop)


@async_test(timeout=90)
async def test_kill_9_of_a_node_shows_its_users_offline_and_loses_no_message(tmp_path):
    d = "kill.example"
    cluster = await asyncio.to_thread(own_cluster, tmp_path, f"alice@{d}", f"bob@{d}", f"carol@{d}")
    try:
        node1, node2 = cluster.nodes
        alice = await login(node1, f"alice@{d}/desk", PASSWORD)
        bob = await login(node2, f"bob@{d}/laptop", PASSWORD)
        await alice.wait_presence(available(f"bob@{d}/laptop"), ARRIVES)
        alice.send_message(mto=f"bob@{d}", mbody="before the kill", mtype="chat")
        await received(bob, "before the kill")

        killed = time.monotonic()
        await asyncio.to_thread(cluster.kill, node2)
        sent: list[str] = []

        async def keep_writing() -> None:  # through the moment node2 is declared dead, and after
            for n in range(20):
                alice.send_message(mto=f"bob@{d}", mbody=f"after the kill {n}", mtype="chat")
                sent.append(f"after the kill {n}")
                await asyncio.sleep(0.1)

        writing = asyncio.create_task(keep_writing())
        try:
            await alice.wait_presence(unavailable(f"bob@{d}/laptop"), DEAD_AFTER + 2)
        except AssertionError:
            raise AssertionError(f"no unavailable presence for bob within {DEAD_AFTER + 2}s of the kill") from None
        shown_offline = time.monotonic() - killed
        await writing

        # bob logs in on node1 at once, same resource: everything alice sent is there
        bob = await login(node1, f"bob@{d}/laptop", PASSWORD)
        for n in range(3):
            alice.send_message(mto=f"bob@{d}", mbody=f"once he is back {n}", mtype="chat")
            sent.append(f"once he is back {n}")
        got: list[str] = []
        deadline = time.monotonic() + 10
        while len(got) < len(sent) and time.monotonic() < deadline:
            try:
                got.append((await bob.next_message(0.5))["body"])
            except TimeoutError:
                pass
        got += [m["body"] for m in await until_quiet(bob, 0.5)]
        lost = [text for text in sent if text not in got]
        assert lost == [], f"{len(lost)} of {len(sent)} messages lost: {lost}"
        assert sorted(got) == sorted(sent), f"duplicates: {sorted(got)}"
        errors = [m for m in drain(alice) if m["type"] == "error"]
        assert errors == [], errors
        assert shown_offline < DEAD_AFTER + 2, shown_offline

        # node2 comes back and takes users again
        await asyncio.to_thread(cluster.restart, node2)
        carol = await login(node2, f"carol@{d}/desk", PASSWORD)
        await carol.wait_presence(available(f"alice@{d}/desk"), ARRIVES)
        await alice.wait_presence(available(f"carol@{d}/desk"), ARRIVES)  # node1 knows of node2 again
        alice.send_message(mto=f"carol@{d}", mbody="welcome back node2", mtype="chat")
        await received(carol, "welcome back node2", f"alice@{d}/desk")
        await logout(alice, bob, carol)
    finally:
        await asyncio.to_thread(cluster.stop)


class Inbox:
    """Everything a client receives (messages and message errors), in order, kept for inspection."""

    def __init__(self, client: Client) -> None:
        self.got: list[slixmpp.Message] = []
        client.add_event_handler("message", self.got.append)
        client.add_event_handler("message_error", self.got.append)

    def count(self, text: str) -> int:
        return sum(1 for m in self.got if m["type"] != "error" and m["body"] == text)

    def bounced(self, stanza_id: str) -> bool:
        return any(m["type"] == "error" and m["id"] == stanza_id for m in self.got)

    def error_for(self, text: str) -> str | None:
        for m in self.got:
            if m["type"] == "error" and m["body"] == text:
                return m["error"]["condition"]
        return None


async def until(condition, timeout: float) -> bool:
    """Poll *condition* every 0.1 s for at most *timeout* seconds; whether it came true."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        await asyncio.sleep(0.1)
    return True


@async_test(timeout=120)
async def test_a_redis_restart_keeps_same_node_chat_and_drops_no_cross_node_message(tmp_path):
    d = "outage.example"
    forward_timeout = 3
    cluster = await asyncio.to_thread(own_cluster, tmp_path, f"alice@{d}", f"bob@{d}", f"carol@{d}",
                                      cluster={"forward_timeout": forward_timeout})
    try:
        node1, node2 = cluster.nodes
        alice = await login(node1, f"alice@{d}/desk", PASSWORD)
        carol = await login(node1, f"carol@{d}/desk", PASSWORD)
        bob = await login(node2, f"bob@{d}/laptop", PASSWORD)
        inbox = {client: Inbox(client) for client in (alice, carol, bob)}
        await alice.wait_presence(available(f"bob@{d}/laptop"), ARRIVES)
        alice.send_message(mto=f"bob@{d}", mbody="before the outage", mtype="chat")
        assert await until(lambda: inbox[bob].count("before the outage") == 1, ARRIVES)

        await asyncio.to_thread(cluster.stop_redis)
        problems: list[str] = []
        crossing: dict[str, str] = {}  # id -> body, alice (node1) to bob (node2)
        for n in range(5):
            stanza = alice.make_message(mto=f"bob@{d}", mbody=f"during the outage {n}", mtype="chat")
            stanza["id"] = f"outage-{n}"
            stanza.send()
            crossing[f"outage-{n}"] = f"during the outage {n}"
            await asyncio.sleep(0.2)
        # same node, Redis down: chat goes on
        same_node = [(alice, carol, "same node, redis down"), (carol, alice, "and back")]
        for sender, peer, text in same_node:
            sender.send_message(mto=peer.boundjid.bare, mbody=text, mtype="chat")
        await until(lambda: all(inbox[peer].count(text) for _, peer, text in same_node), 4)
        for sender, peer, text in same_node:
            if not inbox[peer].count(text):
                error = inbox[sender].error_for(text)
                problems.append(f"same-node {text!r} did not arrive while Redis was down"
                                + (f" (error {error})" if error else ""))
        assert cluster.redis.process is None  # still down while those were checked
        await asyncio.to_thread(cluster.start_redis)

        # every cross-node message: delivered to bob, or an error to alice; one of the two, exactly
        def settled() -> bool:
            return all(inbox[bob].count(text) or inbox[alice].bounced(id_) for id_, text in crossing.items())

        await until(settled, forward_timeout + 10)
        await asyncio.sleep(1)  # anything more (a copy of a bounced one, a second copy) shows now
        for id_, text in crossing.items():
            copies, bounced = inbox[bob].count(text), inbox[alice].bounced(id_)
            if not copies and not bounced:
                problems.append(f"{text!r}: neither delivered nor bounced (silently dropped)")
            elif copies and bounced:
                problems.append(f"{text!r}: delivered and bounced")
            elif copies > 1:
                problems.append(f"{text!r}: delivered {copies} times")
        await until(lambda: all(inbox[peer].count(text) for _, peer, text in same_node), 1)  # late, or never?
        for _, peer, text in same_node:
            if not inbox[peer].count(text):
                problems.append(f"same-node {text!r} never arrived, not even after Redis came back")

        # Redis is back: cross-node chat works again, both ways (once the nodes have reconnected)
        after = [(alice, bob, "after the outage"), (bob, alice, "after, back")]
        for sender, peer, text in after:
            sender.send_message(mto=peer.boundjid.bare, mbody=text, mtype="chat")
        await until(lambda: all(inbox[peer].count(text) for _, peer, text in after), 10)
        for sender, peer, text in after:
            if not inbox[peer].count(text):
                error = inbox[sender].error_for(text)
                problems.append(f"{text!r} did not cross nodes once Redis was back"
                                + (f" (error {error})" if error else ""))
        assert problems == [], "\n".join(problems)
        await logout(alice, bob, carol)
    finally:
        await asyncio.to_thread(cluster.stop)


@async_test(timeout=90)
async def test_a_node_paused_longer_than_dead_after_comes_back_without_losing_a_message(tmp_path):
    """A node stopped (SIGSTOP, a long pause) is taken for dead: its users look
    offline and messages to them go to offline storage. When it runs again its
    clients are still connected: it registers them again, everyone sees them
    back, and what waited offline reaches them without a new login."""
    d = "pause.example"
    cluster = await asyncio.to_thread(own_cluster, tmp_path, f"ann@{d}", f"ben@{d}")
    try:
        node1, node2 = cluster.nodes
        ann = await login(node1, f"ann@{d}/desk", PASSWORD)
        ben = await login(node2, f"ben@{d}/desk", PASSWORD)
        await ann.wait_presence(available(f"ben@{d}/desk"), ARRIVES)
        assert node2.process is not None
        node2.process.send_signal(signal.SIGSTOP)
        try:
            await ann.wait_presence(unavailable(f"ben@{d}/desk"), DEAD_AFTER + ARRIVES)
            ann.send_message(mto=f"ben@{d}", mbody="while you were away", mtype="chat")
            await asyncio.sleep(0.5)
            ann.presences.clear()
        finally:
            node2.process.send_signal(signal.SIGCONT)
        await ann.wait_presence(available(f"ben@{d}/desk"), ARRIVES)
        await received(ben, "while you were away", f"ann@{d}/desk")
        ann.send_message(mto=f"ben@{d}", mbody="welcome back", mtype="chat")
        await received(ben, "welcome back", f"ann@{d}/desk")
        ben.send_message(mto=f"ann@{d}", mbody="thanks", mtype="chat")
        await received(ann, "thanks", f"ben@{d}/desk")
        assert drain(ben) == []  # nothing twice
        await logout(ann, ben)
    finally:
        await asyncio.to_thread(cluster.stop)
