"""The Redis bus between nodes, with two nodes in one process on a real redis-server.

Each "node" is a Router with every feature on in-memory stores (shared
offline store: the nodes share their stores), and a RedisCluster on the same
Redis; sessions record what they receive. The whole service as separate
processes is tests/integration/test_cluster.py; here the bus's own rules are
checked quickly: mirroring, forwarding, conflicts between nodes, a dead node.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.cluster.redis_cluster import RedisCluster
from chatgate.config import ClusterSettings, Settings, StorageSettings
from chatgate.features import register_all
from chatgate.mirror import DirectoryMirror
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import CLIENT_NS
from chatgate.storage import Stores
from chatgate.storage.interfaces import User
from chatgate.storage.memory import MemoryDirectory
from chatgate.storage.memory_archive import MemoryArchive, MemoryOfflineStore
from tests.redis_server import RedisServer

_prefixes = itertools.count()


class Recording(Session):
    transport_name = "test"

    def __init__(self, jid: str) -> None:
        super().__init__(JID(jid))
        self.got: list[str] = []
        self.ended: str | None = None

    def serialize(self, element: domish.Element) -> bytes:
        return element.toXml().encode()

    def _write(self, data: bytes) -> None:
        self.got.append(data.decode())

    def _end(self, condition: str | None, text: str | None) -> None:
        self.ended = condition

    def bodies(self) -> list[str]:
        return [x.split("<body>")[1].split("</body>")[0] for x in self.got if "<body>" in x]


class Node:
    def __init__(self, settings: Settings, directory: MemoryDirectory, stores: Stores) -> None:
        domains = DirectoryMirror(directory)
        domains.load()
        self.router = Router(domains, clock=reactor)
        self.cluster = RedisCluster(settings, reactor)
        self.router.attach_cluster(self.cluster)
        register_all(self.router, settings, stores)

    def online(self, jid: str) -> Recording:
        session = Recording(jid)
        self.router.bind(session)
        self.router.route(domish.Element((CLIENT_NS, "presence")), session)
        return session

    def send(self, session: Session, to: str, body: str) -> None:
        message = domish.Element((CLIENT_NS, "message"))
        message["to"], message["type"] = to, "chat"
        message.addElement("body", content=body)
        self.router.route(message, session)


async def until(condition, timeout: float = 5.0, what: str = "") -> None:
    for _ in range(int(timeout / 0.02)):
        if condition():
            return
        await deferLater(reactor, 0.02, lambda: None)
    raise AssertionError(f"not within {timeout} s: {what}")


async def start_nodes(port: int, **cluster: float) -> tuple[list[Node], Stores]:
    directory = MemoryDirectory()
    directory.add_domain("example.com")
    for local in ("alice", "bob", "carol"):
        directory.add_user(User(local, "example.com"), {})
    stores = Stores(directory=directory, archive=MemoryArchive(), offline=MemoryOfflineStore())
    base = Settings(storage=StorageSettings(redis_port=port, redis_prefix=f"bus{next(_prefixes)}"))
    made = []
    for name in ("n1", "n2"):
        options = {"heartbeat": 0.1, "dead_after": 0.5, **cluster}
        settings = replace(base, cluster=ClusterSettings(backend="redis", node_id=name, **options))
        node = Node(settings, directory, stores)
        await node.cluster.start()
        made.append(node)
    return made, stores


async def stop_nodes(made: list[Node]) -> None:
    for node in made:
        if node.cluster._running:
            await node.cluster.stop()


@pytest_twisted.async_yield_fixture
async def nodes(redis_server):
    made, stores = await start_nodes(redis_server.port)
    yield made, stores
    await stop_nodes(made)


@pytest_twisted.ensureDeferred
async def test_a_session_on_one_node_is_mirrored_on_the_other_and_reached_there(nodes):
    (n1, n2), _ = nodes
    alice = n1.online("alice@example.com/a")
    bob = n2.online("bob@example.com/b")
    await until(lambda: n1.router.remote_session("bob@example.com/b") is not None, what="bob mirrored on n1")
    await until(lambda: any("bob@example.com/b" in x for x in alice.got), what="alice told bob's presence")
    n1.send(alice, "bob@example.com", "over the bus")
    await until(lambda: bob.bodies() == ["over the bus"], what="bob's message")
    n2.send(bob, "alice@example.com", "and back")
    await until(lambda: alice.bodies() == ["and back"], what="alice's message")


@pytest_twisted.ensureDeferred
async def test_the_same_full_jid_on_another_node_replaces_the_older_session(nodes):
    (n1, n2), _ = nodes
    n1.online("alice@example.com/a")  # so n1 follows the domain
    old = n1.online("bob@example.com/phone")
    n2.online("carol@example.com/c")  # so n2 follows the domain too
    await until(lambda: n2.router.remote_session("bob@example.com/phone") is not None, what="n2 mirrors bob")
    new = n2.online("bob@example.com/phone")
    await until(lambda: old.ended == "conflict", what="the older session closed with conflict")
    assert new.ended is None
    await until(lambda: (r := n1.router.remote_session("bob@example.com/phone")) is not None and r.node == "n2",
                what="n1 mirrors n2's session")


@pytest_twisted.ensureDeferred
async def test_a_dead_nodes_users_go_offline_and_its_undelivered_messages_are_kept(nodes):
    (n1, n2), stores = nodes
    alice = n1.online("alice@example.com/a")
    n2.online("bob@example.com/b")
    await until(lambda: n1.router.remote_session("bob@example.com/b") is not None, what="bob mirrored")
    # n2 dies: no heartbeat, no reading, nothing said
    n2.cluster._running = False
    n2.cluster._beat.stop()
    n2.cluster._stores[1]._redis.disconnect()
    await deferLater(reactor, 0.1, lambda: None)
    n1.send(alice, "bob@example.com", "to a dying node")  # into n2's inbox, never read
    await until(lambda: n1.router.remote_session("bob@example.com/b") is None, 3, "bob gone from n1's mirror")
    assert any("unavailable" in x and "bob@example.com/b" in x for x in alice.got)
    await until(lambda: stores.offline.count("bob@example.com").result == 1, 3, "the message kept offline")
    n1.send(alice, "bob@example.com", "after the death")
    await until(lambda: stores.offline.count("bob@example.com").result == 2, 3, "the next one kept offline")
    await n2.cluster._stores[0].stop()


@pytest_twisted.ensureDeferred
async def test_redis_unreachable_same_node_chat_goes_on_and_a_cross_node_message_is_refused_in_time(tmp_path):
    server = RedisServer(tmp_path).start()
    made, _ = await start_nodes(server.port, forward_timeout=0.6)
    try:
        n1, n2 = made
        alice, carol = n1.online("alice@example.com/a"), n1.online("carol@example.com/c")
        n2.online("bob@example.com/b")
        await until(lambda: n1.router.remote_session("bob@example.com/b") is not None, what="bob mirrored")
        server.stop()
        await until(lambda: not n1.cluster._connected(), 3, "n1 sees Redis gone")
        n1.send(alice, "carol@example.com", "same node")
        assert carol.bodies() == ["same node"]  # at once: nothing of it waits for Redis
        n1.send(alice, "bob@example.com", "cross node")
        await until(lambda: any("recipient-unavailable" in x for x in alice.got), 4,
                    "alice told the message did not reach bob's node")
    finally:
        await stop_nodes(made)
        server.stop()


@pytest_twisted.ensureDeferred
async def test_a_message_from_a_domains_first_session_on_a_node_waits_to_know_the_other_nodes(nodes):
    """The first session of a domain on a node sends at once: the node has not read
    the other nodes' sessions yet, and the message waits for it rather than taking
    the recipient for offline."""
    (n1, n2), _ = nodes
    bob = n2.online("bob@example.com/b")
    await deferLater(reactor, 0.2, lambda: None)
    alice = n1.online("alice@example.com/a")  # n1's first session of example.com
    n1.send(alice, "bob@example.com", "right away")
    await until(lambda: bob.bodies() == ["right away"], what="bob's message")
    [got] = [x for x in bob.got if "right away" in x]
    assert "urn:xmpp:delay" not in got  # delivered, not kept offline and replayed


@pytest_twisted.ensureDeferred
async def test_a_stanza_written_twice_across_an_outage_is_delivered_once(nodes):
    """The outbox writes again what was on the wire when Redis went; after a failover
    the first write may have survived too: the receiver knows the second copy."""
    (n1, n2), _ = nodes
    alice = n1.online("alice@example.com/a")
    bob = n2.online("bob@example.com/b")
    await until(lambda: n1.router.remote_session("bob@example.com/b") is not None, what="bob mirrored on n1")
    sent: list[dict] = []
    real_send = n1.cluster._send

    def twice(node, event, data=None):  # as if the connection broke after the first XADD went through
        if event.get("k") == "s":
            sent.append(event)
            real_send(node, dict(event), data)
        real_send(node, event, data)

    n1.cluster._send = twice
    n1.send(alice, "bob@example.com", "once only")
    await until(lambda: bob.bodies() == ["once only"], what="bob's message")
    await until(lambda: n2.cluster._seen.get(sent[0]["r"]) == sent[0]["n"], what="both copies read")
    n1.send(alice, "bob@example.com", "and the next")
    await until(lambda: bob.bodies() == ["once only", "and the next"], what="the next message")
