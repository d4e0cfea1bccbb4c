"""The service tree (chatgate/service.py): children started in the documented
order, each after the one before; stopped in reverse, each after the one after
it; the timers (directory feed, ping, retention) on the injected clock."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.testing import MemoryReactorClock
from twisted.words.protocols.jabber.jid import JID

from chatgate.config import (
    ArchiveSettings,
    DemoSettings,
    ServiceSettings,
    Settings,
    StorageSettings,
    UploadSettings,
    XMPPSettings,
)
from chatgate.service import ChatService
from chatgate.session import Session
from chatgate.storage.interfaces import User
from chatgate.transports.bosh import BOSH_NS, Peer

ORDER = ["stores", "directory", "directory-feed", "ping", "retention", "sessions", "listeners", "bosh"]
LOCAL = Peer("127.0.0.1", "127.0.0.1:5000", True)


class EndedSession(Session):
    """A bound resource that keeps what it was sent and how it ended."""

    transport_name = "test"

    def __init__(self, jid: str) -> None:
        super().__init__(JID(jid))
        self.sent: list[bytes] = []
        self.ended: str | None = None

    def serialize(self, element: Any) -> bytes:
        return element.toXml().encode()

    def _write(self, data: bytes) -> None:
        self.sent.append(data)

    def _end(self, condition: str | None, text: str | None) -> None:
        self.ended = condition


@pytest.fixture
def reactor() -> MemoryReactorClock:
    clock = MemoryReactorClock()
    clock.advance(1_000_000)
    return clock


def make(reactor: MemoryReactorClock, service: ServiceSettings | None = None) -> ChatService:
    settings = Settings(
        service=service or ServiceSettings(),
        xmpp=XMPPSettings(ping_interval=60, ping_timeout=10),
        storage=StorageSettings(backend="memory", poll_interval=0.5),
        archive=ArchiveSettings(backend="memory", offline_backend="memory", retention_days=30),
        demo=DemoSettings(create=False),
        upload=UploadSettings(enabled=False),  # its folder store works in threads, not on this clock
    )
    chat = ChatService(settings, tls_context=None, reactor=reactor, process_wide=False)
    chat.directory.add_domain("example.com")
    for localpart in ("alice", "bob"):
        chat.directory.add_user(User(localpart, "example.com"), {})
    return chat


def record(chat: ChatService, calls: list[str]) -> None:
    """Note each child's start and stop in *calls*, in the order they are called."""
    def noting(child: Any, what: str) -> Any:
        original = getattr(child, what)

        def noted() -> Any:
            calls.append(f"{what[:-7]} {child.name}")
            return original()

        return noted

    for child in chat:
        for what in ("startService", "stopService"):
            setattr(child, what, noting(child, what))


def done(d: defer.Deferred[Any]) -> Any:
    """The result of a Deferred that must have fired already."""
    results: list[Any] = []
    d.addBoth(results.append)
    assert results, "not done"
    if isinstance(results[0], Exception) or hasattr(results[0], "raiseException"):
        results[0].raiseException()
    return results[0]


def test_children_are_in_the_documented_order(reactor):
    chat = make(reactor)
    assert [child.name for child in chat] == ORDER


def test_start_in_order_and_stop_in_reverse(reactor):
    chat = make(reactor)
    calls: list[str] = []
    record(chat, calls)
    chat.startService()
    done(chat._starting)
    assert calls == [f"start {name}" for name in ORDER]
    assert all(child.running for child in chat)
    assert chat.domains.is_hosted("example.com")  # the mirror is loaded before anything listens
    assert [port for port, *_ in reactor.tcpServers] == [5291, 5280]  # c2s, then the web listener

    calls.clear()
    done(chat.stopService())
    assert calls == [f"stop {name}" for name in reversed(ORDER)]
    assert not any(child.running for child in chat)
    assert not chat.running


def test_timers_run_on_the_injected_clock_and_stop_with_the_tree(reactor):
    chat = make(reactor)
    chat.startService()
    timers = {name: chat.getServiceNamed(name) for name in ("directory-feed", "ping", "retention")}
    assert {name: t.step for name, t in timers.items()} == {"directory-feed": 0.5, "ping": 5.0, "retention": 3600.0}
    for timer in timers.values():
        assert timer._loop.running and timer._loop.clock is reactor
    assert len(reactor.getDelayedCalls()) >= 3
    done(chat.stopService())
    for timer in timers.values():
        assert not timer._loop.running
    assert reactor.getDelayedCalls() == []  # nothing of the service is left on the clock


def test_retention_sweeps_at_start_and_hourly(reactor):
    chat = make(reactor)
    cutoffs: list[float] = []
    chat.archive.expire = lambda cutoff, *scope: (cutoffs.append(cutoff), defer.succeed(0))[1]
    chat.startService()
    assert cutoffs == [reactor.seconds() - 30 * 86400]
    reactor.advance(3600)
    assert len(cutoffs) == 2
    done(chat.stopService())
    reactor.advance(3600)
    assert len(cutoffs) == 2


def test_a_sweep_under_way_holds_the_stores_open(reactor):
    """The stores close only after every child stopped; a timer stops once its call is done."""
    chat = make(reactor)
    sweeping: defer.Deferred[int] = defer.Deferred()
    chat.archive.expire = lambda cutoff, *scope: sweeping
    closed: list[str] = []
    stop_archive = chat.archive.stop
    chat.archive.stop = lambda: (closed.append("archive"), stop_archive())[1]
    chat.startService()
    stopping = chat.stopService()
    assert closed == [] and not stopping.called  # the retention sweep is still running
    assert not chat.getServiceNamed("bosh").running  # what comes after it has stopped
    sweeping.callback(0)
    assert closed == ["archive"]
    done(stopping)


def test_ping_pings_idle_sessions_and_closes_the_silent(reactor):
    chat = make(reactor)
    chat.startService()
    alice, bob = EndedSession("alice@example.com/desk"), EndedSession("bob@example.com/phone")
    for session in (alice, bob):
        session.last_active = reactor.seconds()
        chat.router.bind(session)
    reactor.advance(30)
    bob.last_active = reactor.seconds()  # bob spoke; alice stays silent
    reactor.advance(35)  # alice silent for 65 s (> ping_interval 60): pinged at the next sweep
    pings = [ET.fromstring(data) for data in alice.sent]
    assert [p.find("{urn:xmpp:ping}ping") is not None for p in pings] == [True]
    assert bob.sent == []
    reactor.advance(15)  # no answer within ping_timeout
    assert alice.ended == "connection-timeout" and bob.ended is None
    done(chat.stopService())


def test_stop_ends_bosh_sessions_and_closes_every_other(reactor):
    chat = make(reactor)
    chat.startService()
    desk = EndedSession("alice@example.com/desk")
    chat.router.bind(desk)
    created = ET.fromstring(done(chat.bosh.handle(
        f"<body xmlns='{BOSH_NS}' rid='100' to='example.com' wait='30' hold='1'/>".encode(), LOCAL)))
    sid = created.get("sid")
    held = chat.bosh.handle(f"<body xmlns='{BOSH_NS}' rid='101' sid='{sid}'/>".encode(), LOCAL)
    assert not held.called
    done(chat.stopService())
    answer = ET.fromstring(done(held))
    assert answer.get("type") == "terminate"
    assert answer.find(".//{urn:ietf:params:xml:ns:xmpp-streams}system-shutdown") is not None
    assert chat.bosh.connections == {}
    assert desk.ended == "system-shutdown"


def test_a_drain_sends_clients_elsewhere_says_it_is_draining_and_ends_in_time(reactor):
    """[service] see_other_host names where clients go; /health/ready says draining at once;
    a stop that cannot finish (a sweep that never ends) ends at drain_timeout all the same."""
    chat = make(reactor, ServiceSettings(drain_timeout=5, see_other_host="chat2.example.com:5222"))
    chat.archive.expire = lambda cutoff, *scope: defer.Deferred()  # a retention sweep that never ends
    chat.startService()
    desk = EndedSession("alice@example.com/desk")
    chat.router.bind(desk)
    stopping = chat.stopService()
    assert done(chat.readiness()) == "the node is draining"
    assert desk.ended == "see-other-host"
    assert not stopping.called
    reactor.advance(5)
    assert stopping.called


def test_a_stop_while_starting_starts_nothing_more(reactor):
    chat = make(reactor)
    opening: defer.Deferred[None] = defer.Deferred()
    chat.directory.start = lambda: opening  # the store takes its time to open
    chat.startService()
    assert chat.getServiceNamed("stores").running and not chat.getServiceNamed("directory").running
    done(chat.stopService())
    opening.callback(None)
    assert not any(child.running for child in chat)
    assert reactor.tcpServers == []
