"""The router's side of the cluster: other nodes' sessions mirrored as RemoteSession.

The bus itself (Redis) is proved by tests/integration/test_cluster.py with
real nodes; here one router is given what the bus would tell it and what it
hands the bus is recorded.
"""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.cluster import Cluster
from chatgate.cluster.remote import RemoteSession
from chatgate.stanza import CLIENT_NS
from chatgate.xml import serialize
from tests.unit.test_router import message, online, world  # noqa: F401  (the fixture)


class Recording(Cluster):
    """The bus as the router sees it: what it was told and what it forwarded."""

    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []
        self.forwarded: list[tuple[str, str, str]] = []

    def bound(self, session, joined):
        self.told.append(("bound", session.full))

    def changed(self, session):
        self.told.append(("changed", session.full))

    def unbound(self, session, left):
        self.told.append(("unbound", session.full))

    def forward(self, node, full, data):
        self.forwarded.append((node, full, data.decode()))


def remote(router, cluster, full: str, node: str = "node2", available: bool = True) -> RemoteSession:
    session = RemoteSession(JID(full), node, cluster, seq=1)
    router.remote_bound(session)
    if available:
        presence = domish.Element((CLIENT_NS, "presence"))
        presence["from"] = full
        router.remote_presence(session, presence, 0)
    return session


def attached(world):  # noqa: F811
    router, clock = world
    cluster = Recording()
    router.attach_cluster(cluster)
    return router, cluster


def test_resources_show_both_nodes_and_local_resources_this_one(world):  # noqa: F811
    router, cluster = attached(world)
    here = online(router, "bob@example.com/desk")
    there = remote(router, cluster, "bob@example.com/phone")
    assert dict(router.resources("bob@example.com")) == {"desk": here, "phone": there}
    assert dict(router.local_resources("bob@example.com")) == {"desk": here}
    assert router.domain_sessions("example.com") == [here]


def test_a_message_to_the_bare_jid_reaches_the_other_nodes_resource(world):  # noqa: F811
    router, cluster = attached(world)
    alice = online(router, "alice@example.com/a")
    here = online(router, "bob@example.com/desk")
    remote(router, cluster, "bob@example.com/phone")
    router.route(message("bob@example.com", body="both"), alice)
    assert len(here.messages) == 1 and "both" in here.messages[0]
    [(node, full, text)] = cluster.forwarded
    assert (node, full) == ("node2", "bob@example.com/phone")
    assert "both" in text and "alice@example.com/a" in text


def test_binding_here_takes_the_full_jid_from_the_mirror(world):  # noqa: F811
    router, cluster = attached(world)
    remote(router, cluster, "bob@example.com/phone")
    online(router, "bob@example.com/phone")
    assert router.remote_session("bob@example.com/phone") is None
    assert ("bound", "bob@example.com/phone") in cluster.told


def test_remote_presence_reaches_this_nodes_users_once_and_newcomers_learn_it(world):  # noqa: F811
    router, cluster = attached(world)
    alice = online(router, "alice@example.com/a")
    remote(router, cluster, "bob@example.com/phone")
    assert [x for x in alice.got if "bob@example.com/phone" in x and x.startswith("<presence")]
    newcomer = online(router, "alice@example.com/b", priority=None)
    presence = domish.Element((CLIENT_NS, "presence"))
    router.route(presence, newcomer)
    assert any("bob@example.com/phone" in x for x in newcomer.got)
    assert ("changed", "alice@example.com/b") in cluster.told


def test_a_session_gone_from_another_node_is_unavailable_here(world):  # noqa: F811
    router, cluster = attached(world)
    alice = online(router, "alice@example.com/a")
    remote(router, cluster, "bob@example.com/phone")
    alice.got.clear()
    router.remote_gone("bob@example.com/phone", "other-node")  # not its node: nothing
    assert router.remote_session("bob@example.com/phone") is not None
    router.remote_gone("bob@example.com/phone", "node2")
    assert router.remote_session("bob@example.com/phone") is None
    assert [x for x in alice.got if "unavailable" in x and "bob@example.com/phone" in x]


def test_a_relayed_message_reaches_its_session_without_being_archived_again(world):  # noqa: F811
    router, cluster = attached(world)
    bob = online(router, "bob@example.com/desk")
    stanza = message("bob@example.com/desk", body="relayed")
    stanza["from"] = "alice@example.com/a"
    router.relayed("bob@example.com/desk", serialize(stanza))
    assert len(bob.messages) == 1 and "relayed" in bob.messages[0]
    assert "stanza-id" not in bob.messages[0]  # the sender's node archived it


def test_a_relayed_message_whose_session_ended_goes_to_another_resource_or_offline(world):  # noqa: F811
    router, cluster = attached(world)
    laptop = online(router, "bob@example.com/laptop")
    stanza = message("bob@example.com/desk", body="late")
    stanza["from"] = "alice@example.com/a"
    router.relayed("bob@example.com/desk", serialize(stanza))
    assert len(laptop.messages) == 1 and "late" in laptop.messages[0]
    router.unbind(laptop)
    kept = []
    router.listen("message-undeliverable", lambda delivery: kept.append((delivery.bare, delivery.relayed)))
    router.relayed("bob@example.com/desk", serialize(stanza))
    assert kept == [("bob@example.com", True)]


def test_a_carbon_for_a_session_that_ended_is_not_delivered_again(world):  # noqa: F811
    router, cluster = attached(world)
    laptop = online(router, "bob@example.com/laptop")
    carbon = message("bob@example.com/desk", body="copy")
    carbon["from"] = "bob@example.com"
    router.relayed("bob@example.com/desk", serialize(carbon))
    assert laptop.messages == []
