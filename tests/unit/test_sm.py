"""Stream management's counters and bounds (XEP-0198 §4, §5), on a router with recording sessions."""

from __future__ import annotations

import dataclasses

import pytest
from twisted.internet import defer
from twisted.words.xish import domish

from chatgate import events
from chatgate.cluster import Cluster
from chatgate.config import Settings
from chatgate.stanza import CLIENT_NS
from chatgate.transports import sm
from chatgate.transports.stream import StreamTransport, XMPPStream
from chatgate.xml import Element
from tests.unit.test_router import RecordingSession, message, online, world  # noqa: F401


class Transport(StreamTransport):
    name = "test"

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.failed: list[tuple[str, domish.Element | None]] = []

    def send(self, element: domish.Element) -> None:
        self.sent.append(element.toXml())

    def fail(self, condition: str, text: str | None = None, application: domish.Element | None = None) -> None:
        self.failed.append((condition, application))


@pytest.fixture
def managed(world):  # noqa: F811
    router, clock = world
    settings = Settings()
    settings = dataclasses.replace(settings, limits=dataclasses.replace(settings.limits, max_output_buffer=2000))
    registry = sm.Resumption(router, settings, Cluster(), clock)
    transport = Transport()
    stream = XMPPStream(router, None, settings, transport, registry)
    alice = online(router, "alice@example.com/phone")
    stream.session = alice
    enable = Element((sm.NS, "enable"))
    enable["resume"] = "true"
    enabled = registry.enable(alice, stream, enable)
    assert enabled["resume"] == "true" and enabled["id"].endswith(".local")
    kept: list[domish.Element] = []
    router.listen(events.MESSAGE_UNDELIVERABLE, lambda d: kept.append(d.stanza) or True, priority=1000)
    return router, clock, alice, transport, stream, kept


def from_bob(body: str) -> domish.Element:
    m = message("alice@example.com/phone", body=body)
    m["from"] = "bob@example.com/desk"
    return m


def ack(h: int) -> domish.Element:
    a = Element((sm.NS, "a"))
    a["h"] = str(h)
    return a


def test_counters_wrap_at_two_to_the_32(managed):
    router, _, alice, transport, _, _ = managed
    manager = alice.sm
    manager.sent = manager.acked = sm.MODULO - 1
    router.deliver_message(message("alice@example.com/phone", body="one"), None, alice.jid)
    router.deliver_message(message("alice@example.com/phone", body="two"), None, alice.jid)
    assert manager.sent == 1 and len(manager.queue) == 2
    manager.received(ack(0))
    assert len(manager.queue) == 1 and manager.acked == 0
    manager.received(ack(1))
    assert not manager.queue and manager.queued_bytes == 0 and transport.failed == []


def test_an_ack_of_more_than_was_sent_is_a_stream_error(managed):
    router, _, alice, transport, _, _ = managed
    router.deliver_message(message("alice@example.com/phone"), None, alice.jid)
    alice.sm.received(ack(2))
    condition, application = transport.failed[0]
    assert condition == "undefined-condition"
    assert (application.uri, application.name, application["h"], application["send-count"]) == (
        sm.NS, "handled-count-too-high", "2", "1")


def test_a_detached_session_ends_after_its_timeout_and_its_unacked_messages_are_kept(managed):
    router, clock, alice, _, stream, kept = managed
    bob = online(router, "bob@example.com/desk")
    router.deliver_message(from_bob("before"), None, alice.jid)
    stream.ended(lost=True)
    assert alice.detached and not alice.closed
    held = defer.Deferred()
    alice.hold(held)  # a message still waiting for the archive when the session ends
    router.deliver_message(from_bob("held"), None, alice.jid)
    assert router.local_resources("alice@example.com")["phone"] is alice
    assert not [x for x in bob.got if "unavailable" in x]
    clock.advance(alice.sm.timeout + 1)
    assert alice.closed and "phone" not in router.local_resources("alice@example.com")
    assert [str(m.body) for m in kept] == ["before", "held"]
    assert [x for x in bob.got if "unavailable" in x]


def test_a_detached_queue_over_the_limit_ends_the_session_at_once(managed):
    router, _, alice, _, stream, kept = managed
    stream.ended(lost=True)
    bodies = ["x" * 100 + str(n) for n in range(30)]
    for body in bodies:
        router.deliver_message(from_bob(body), None, alice.jid)
    # it ended when its queue went over 2,000 bytes; those went to offline storage, as did the rest
    assert alice.closed and [str(m.body) for m in kept] == bodies


def test_an_attached_client_over_the_limit_has_ping_timeout_to_acknowledge(managed):
    router, clock, alice, transport, _, _ = managed
    for n in range(30):
        router.deliver_message(message("alice@example.com/phone", body="x" * 100 + str(n)), None, alice.jid)
    alice.sm.received(ack(25))  # it reads, it acknowledges: back under the limit in time
    clock.advance(Settings().xmpp.ping_timeout + 1)
    assert transport.failed == []
    for n in range(30):
        router.deliver_message(message("alice@example.com/phone", body="y" * 100 + str(n)), None, alice.jid)
    clock.advance(Settings().xmpp.ping_timeout + 1)
    assert transport.failed == [("policy-violation", None)]


def test_an_iq_request_never_acknowledged_gets_its_sender_an_error(managed):
    router, clock, alice, _, stream, _ = managed
    bob = online(router, "bob@example.com/desk")
    iq = Element((CLIENT_NS, "iq"))
    iq["type"], iq["id"], iq["to"] = "get", "v1", "alice@example.com/phone"
    iq.addElement(("jabber:iq:version", "query"))
    stream.ended(lost=True)
    router.route(iq, bob)
    assert not [x for x in bob.got if "type='error'" in x or 'type="error"' in x]
    clock.advance(alice.sm.timeout + 1)
    errors = [x for x in bob.got if "v1" in x and "service-unavailable" in x]
    assert len(errors) == 1
