"""Personal eventing (XEP-0163) across the nodes of a cluster, with real slixmpp
clients: what alice publishes on one node reaches the clients on the other
that asked for it (+notify), live; a client coming later on the other node gets
the last item; a whitelist node (bookmarks) reaches the owner's clients on
both nodes and nobody else; and items read on the other node are what was
published, the directory's change feed dropping that node's cache. Once with
the directory on SQLite (a file both nodes share, its feed polled) and once on
Redis (its feed pushed)."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0402.stanza import Conference

from tests.integration.cluster import Cluster
from tests.integration.conftest import PASSWORD
from tests.integration.harness import Client, Server, async_test, logout
from tests.integration.test_cluster import ARRIVES, available
from tests.integration.test_pep import (
    BOOKMARKS,
    NICK,
    Events,
    nick_of,
    nick_of_item,
    options,
    publish_nick,
    pubsub_error,
)
from tests.integration.test_pep import pep_client as single_node_client

DOMAIN = "pep.example"
ROOM = f"everyone@conference.{DOMAIN}"
SALES = f"sales@conference.{DOMAIN}"
INFO = "http://jabber.org/protocol/disco#info"
DELAY = "{urn:xmpp:delay}delay"
_ids = itertools.count()


@pytest.fixture(scope="module", params=["sqlite", "redis"])
def cluster(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    one = Cluster(tmp_path_factory.mktemp(f"cluster-pep-{request.param}"), directory=request.param)
    try:
        one.start_redis()  # before the accounts: the Redis directory lives there
        one.add_users(PASSWORD, *(f"{name}@{DOMAIN}" for name in ("alice", "bob", "carol")))
        one.start()
    except BaseException:
        one.stop()
        raise
    yield one
    one.stop()


async def pep_client(node: Server, jid: str, interests: tuple[str, ...] = ()) -> tuple[Client, Events]:
    """test_pep's client, returned once it has answered its node's capabilities query (so that node
    knows what it wants). Each asks for a node of its own too: a ``ver`` of its own, asked of it,
    never answered from another client's."""
    client, events = await single_node_client(node, jid, (*interests, f"urn:example:client:{jid}"))
    answered: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def watch(stanza):
        # sync 'out' filters run just before the stanza is written: anything sent later follows it
        query = stanza.xml.find(f"{{{INFO}}}query")
        if (stanza.name == "iq" and stanza["type"] == "result" and query is not None
                and "#" in query.get("node", "") and not answered.done()):
            answered.set_result(None)
        return stanza

    # in place before the presence just queued is written, so before the server can ask
    client.add_filter("out", watch)
    try:
        await asyncio.wait_for(answered, 10)
    except TimeoutError:
        raise AssertionError(f"{jid}: its node never asked its capabilities") from None
    return client, events


async def relayed(sender: Client, to: Client) -> None:
    """A chat message from *sender* reaches *to*'s full JID on the other node: what *sender*'s node
    put on the bus before it (its session's shared state, the PEP interests) has reached that node."""
    text = f"sync {next(_ids)}"
    sender.send_message(mto=to.boundjid.full, mbody=text, mtype="chat")
    while True:
        got = await asyncio.wait_for(to.messages.get(), ARRIVES)
        if got["body"] == text:
            return


async def read_on(client: Client, owner: str, node: str, expected, timeout: float = 3.0) -> float:
    """Seconds until *client* reads *expected* from *owner*'s *node* (through its own node);
    *expected* is a function of the items answer. Fails with what it read last."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    while True:
        try:
            items = await client.plugin["xep_0060"].get_items(owner, node, timeout=10)
        except IqError as e:
            items = e.iq
        else:
            if expected(items):
                return loop.time() - started
        if loop.time() - started > timeout:
            raise AssertionError(f"{client.boundjid} still reads {items}")
        await asyncio.sleep(0.02)


def ids_of(items) -> set[str]:
    return {item["id"] for item in items["pubsub"]["items"]}


@async_test(timeout=120)
async def test_events_and_items_cross_the_nodes(cluster):
    node_a, node_b = cluster.nodes
    alice = f"alice@{DOMAIN}"
    desk, desk_events = await pep_client(node_a, f"{alice}/desk", (BOOKMARKS,))
    bob, bob_events = await pep_client(node_b, f"bob@{DOMAIN}/phone", (NICK, BOOKMARKS))
    await desk.wait_presence(available(f"bob@{DOMAIN}/phone"), ARRIVES)
    await bob.wait_presence(available(f"{alice}/desk"), ARRIVES)
    await relayed(bob, desk)  # node A knows what bob wants

    # alice publishes her nickname on A: bob, on B, is told at once (no delay: not a last item)
    await publish_nick(desk, "Alice A.")
    kind, msg = await bob_events.next(ARRIVES)
    assert (kind, str(msg["from"]), msg["type"], nick_of(msg)) == ("publish", alice, "headline", "Alice A.")
    assert msg.xml.find(DELAY) is None

    # bob reads it through B. B read alice's nodes (none then) when it learnt what bob wants, and
    # answers from that copy until its change feed tells it of her publishing (tens of milliseconds
    # after the event on SQLite, polled): within read_on's bound, not never. Once more with B's copy
    # holding the first nickname
    await read_on(bob, alice, NICK, lambda items: nick_of_item(items) == "Alice A.")
    await publish_nick(desk, "Alice")
    kind, msg = await bob_events.next(ARRIVES)
    assert (kind, nick_of(msg)) == ("publish", "Alice")
    await read_on(bob, alice, NICK, lambda items: nick_of_item(items) == "Alice")

    # carol comes later, on B: alice's last nickname, with the time it was published
    carol, carol_events = await pep_client(node_b, f"carol@{DOMAIN}/laptop", (NICK,))
    kind, msg = await carol_events.next(ARRIVES)
    assert (kind, str(msg["from"]), nick_of(msg)) == ("publish", alice, "Alice")
    delay = msg.xml.find(DELAY)
    assert delay is not None and delay.get("from") == alice and delay.get("stamp")
    await carol_events.none_within(carol, 0.3)  # once

    # alice's bookmarks (whitelist), published on A: her laptop on B is told, bob (who asked) is not
    laptop, laptop_events = await pep_client(node_b, f"{alice}/laptop", (BOOKMARKS,))
    await relayed(laptop, desk)  # node A knows what the laptop wants
    private = options(persist_items="true", max_items="max", send_last_published_item="never",
                      access_model="whitelist")
    conference = Conference()
    conference["name"], conference["autojoin"], conference["nick"] = "Everyone", True, "alice"
    await desk.plugin["xep_0163"].publish(conference, node=BOOKMARKS, id=ROOM, options=private, timeout=10)
    kind, msg = await laptop_events.next(ARRIVES)
    item = msg["pubsub_event"]["items"]["item"]
    assert (kind, item["id"], item["payload"].get("name")) == ("publish", ROOM, "Everyone")
    assert (await desk_events.next(ARRIVES))[1]["pubsub_event"]["items"]["item"]["id"] == ROOM

    # the laptop adds a bookmark on B as soon as it is told, before B's change feed has told B of the
    # first: both kept (B writes on what the store holds, not on its copy), the desk on A is told
    second = Conference()
    second["name"] = "Sales"
    await laptop.plugin["xep_0163"].publish(second, node=BOOKMARKS, id=SALES, options=private, timeout=10)
    kind, msg = await desk_events.next(ARRIVES)
    assert (kind, msg["pubsub_event"]["items"]["item"]["id"]) == ("publish", SALES)
    await laptop_events.next(ARRIVES)
    for client in (laptop, desk):
        await read_on(client, alice, BOOKMARKS, lambda items: ids_of(items) == {ROOM, SALES})

    # bob reads none of them, on B, and was told nothing
    assert await pubsub_error(bob.plugin["xep_0060"].get_items(alice, BOOKMARKS, timeout=10)) == (
        "not-allowed", ["closed-node"])
    await bob_events.none_within(bob)
    await logout(desk, laptop, bob, carol)
