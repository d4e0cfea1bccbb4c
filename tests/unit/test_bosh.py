"""The BOSH connection manager on a fake clock: timers, holding, ordering,
caching, and that nothing is left scheduled once a session ends.

Authentication and everything after it are covered against a real server in
tests/integration/test_bosh_http.py; here sessions stay before SASL, where the
stream answers from the features alone.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import xml.etree.ElementTree as ET

import pytest
from twisted.internet.task import Clock
from twisted.web.http_headers import Headers
from twisted.words.xish import domish

from chatgate.config import HTTPSettings, Settings, XMPPSettings
from chatgate.mirror import DirectoryMirror
from chatgate.router import Router
from chatgate.stanza import CLIENT_NS
from chatgate.storage.memory import MemoryDirectory
from chatgate.transports.bosh import (
    BOSH_NS,
    MAX_HOPS,
    ConnectionManager,
    Peer,
    _acceptable,
    client_address,
    peer_of,
    wrap,
)

LOCAL = Peer("127.0.0.1", "127.0.0.1:5000", True)


class Mechanisms:
    """The one thing a stream asks its authenticator before SASL starts."""

    def mechanisms(self, secure: bool, allow_plain_insecure: bool) -> list[str]:
        return ["SCRAM-SHA-256"]


def body(payload: str = "", **attributes: object) -> bytes:
    attrs = " ".join(f"{k}='{v}'" for k, v in attributes.items())
    return f"<body xmlns='{BOSH_NS}' {attrs}>{payload}</body>".encode()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def manager(clock: Clock) -> ConnectionManager:
    directory = MemoryDirectory()
    directory.add_domain("example.com")
    domains = DirectoryMirror(directory)
    domains.load()
    # a long auth_timeout, so that only the test's own timers matter
    settings = Settings(xmpp=XMPPSettings(auth_timeout=1000), http=HTTPSettings(bosh_polling=0))
    return ConnectionManager(Router(domains, clock=clock), Mechanisms(), settings, clock=clock)


def answer_of(d) -> ET.Element:
    results: list[bytes] = []
    d.addCallback(results.append)
    assert results, "not answered yet"
    return ET.fromstring(results[0])


def pending(d) -> bool:
    results: list[bytes] = []
    d.addBoth(lambda r: results.append(r) or r)
    return not results


def create(manager: ConnectionManager, rid: int = 100, **attributes: object) -> str:
    attrs = {"rid": rid, "to": "example.com", "wait": 30, "hold": 1}
    attrs.update(attributes)
    answer = answer_of(manager.handle(body(**attrs), LOCAL))
    return answer.get("sid")


def test_creation_schedules_only_the_idle_and_auth_timers(manager, clock):
    sid = create(manager)
    assert sid in manager.connections
    assert sorted(c.getTime() for c in clock.getDelayedCalls()) == [60.0, 1000.0]  # inactivity, auth_timeout


def test_held_request_costs_one_timer_and_is_answered_at_wait(manager, clock):
    sid = create(manager)
    d = manager.handle(body(rid=101, sid=sid), LOCAL)
    assert pending(d)
    # the idle timer is off while a request is held; its wait timer and the auth timer remain
    assert sorted(c.getTime() for c in clock.getDelayedCalls()) == [30.0, 1000.0]
    clock.advance(29.9)
    assert pending(d)
    clock.advance(0.1)
    answer = answer_of(d)
    assert answer.get("type") is None and len(answer) == 0


def test_newer_request_releases_the_held_one_with_an_ack(manager, clock):
    sid = create(manager)
    first = manager.handle(body(rid=101, sid=sid), LOCAL)
    second = manager.handle(body(rid=102, sid=sid, pause=5), LOCAL)
    assert answer_of(first).get("ack") == "102"
    assert answer_of(second).get("type") is None  # a pause is answered at once


def test_out_of_order_request_waits_for_the_gap(manager, clock):
    sid = create(manager)
    later = manager.handle(body(rid=102, sid=sid), LOCAL)
    assert pending(later)
    assert manager.connections[sid].rid == 100  # not processed
    earlier = manager.handle(body(rid=101, sid=sid), LOCAL)
    assert manager.connections[sid].rid == 102
    assert answer_of(earlier).get("ack") == "102"  # released by 102, in rid order
    assert pending(later)


def test_a_fast_sender_waits_at_the_rate_limits(manager, clock):
    manager.settings = dataclasses.replace(
        manager.settings, limits=dataclasses.replace(manager.settings.limits, read_rate=1000, read_burst=1000))
    sid = create(manager)
    connection = manager.connections[sid]
    request = body(rid=101, sid=sid, padding="x" * 1500)  # about 600 bytes over the burst
    first = manager.handle(request, LOCAL)
    second = manager.handle(body(rid=102, sid=sid), LOCAL)
    assert connection.rid == 101 and pending(first)  # 102 waits, unprocessed
    clock.advance((len(request) - 1000) / 1000 - 0.01)
    assert connection.rid == 101
    clock.advance(0.2)
    assert connection.rid == 102
    assert answer_of(first).get("ack") == "102"
    assert pending(second)


def test_stanzas_of_one_reactor_turn_share_one_answer(manager, clock):
    sid = create(manager)
    connection = manager.connections[sid]
    d = manager.handle(body(rid=101, sid=sid), LOCAL)
    for n in range(3):
        message = domish.Element((CLIENT_NS, "message"))
        message.addElement("body", content=f"m{n}")
        connection.send(message)
    assert pending(d)
    clock.advance(0)
    answer = answer_of(d)
    assert [m.findtext(f"{{{CLIENT_NS}}}body") for m in answer] == ["m0", "m1", "m2"]


def test_dropped_http_request_is_answered_and_its_answer_cached(manager, clock):
    sid = create(manager)
    d = manager.handle(body(rid=101, sid=sid), LOCAL)
    d.addErrback(lambda f: None)
    d.cancel()  # the browser closed the connection
    assert not manager.connections[sid]._held
    again = manager.handle(body(rid=101, sid=sid), LOCAL)
    assert answer_of(again).tag == f"{{{BOSH_NS}}}body"
    assert manager.connections[sid].rid == 101


def test_repeated_rid_joins_the_held_request(manager, clock):
    sid = create(manager)
    first = manager.handle(body(rid=101, sid=sid), LOCAL)
    second = manager.handle(body(rid=101, sid=sid), LOCAL)
    clock.advance(30)
    assert ET.tostring(answer_of(first)) == ET.tostring(answer_of(second))


def test_terminate_leaves_nothing_scheduled(manager, clock):
    sid = create(manager)
    held = manager.handle(body(rid=101, sid=sid), LOCAL)
    ended = manager.handle(body(rid=102, sid=sid, type="terminate"), LOCAL)
    assert answer_of(ended).get("type") == "terminate"
    assert answer_of(held).get("type") is None
    assert sid not in manager.connections
    assert clock.getDelayedCalls() == []


def test_inactivity_ends_the_session_silently(manager, clock):
    sid = create(manager)
    clock.advance(59)
    assert sid in manager.connections
    clock.advance(1)
    assert sid not in manager.connections
    assert clock.getDelayedCalls() == []
    assert answer_of(manager.handle(body(rid=101, sid=sid), LOCAL)).get("condition") == "item-not-found"


def test_pause_replaces_inactivity_once(manager, clock):
    sid = create(manager)
    answer_of(manager.handle(body(rid=101, sid=sid, pause=100), LOCAL))
    clock.advance(99)
    assert sid in manager.connections
    d = manager.handle(body(rid=102, sid=sid), LOCAL)
    clock.advance(30)  # wait, then inactivity is 60 again
    answer_of(d)
    clock.advance(60)
    assert sid not in manager.connections


def test_stream_error_without_an_open_request_is_kept_for_the_next(manager, clock):
    sid = create(manager)
    manager.connections[sid].fail("conflict", "Replaced by a new login")  # as the router would
    assert sid not in manager.connections
    answer = answer_of(manager.handle(body(rid=101, sid=sid), LOCAL))
    assert answer.get("condition") == "remote-stream-error"
    assert answer.find("{http://etherx.jabber.org/streams}error/"
                       "{urn:ietf:params:xml:ns:xmpp-streams}conflict") is not None
    clock.advance(60)
    assert clock.getDelayedCalls() == []
    assert answer_of(manager.handle(body(rid=101, sid=sid), LOCAL)).get("condition") == "item-not-found"


def test_output_is_bounded(manager, clock):
    sid = create(manager)
    connection = manager.connections[sid]
    big = domish.Element((CLIENT_NS, "message"))
    big.addElement("body", content="x" * 100_000)
    for _ in range(11):
        connection.send(big)
    assert sid not in manager.connections
    answer = answer_of(manager.handle(body(rid=101, sid=sid), LOCAL))
    assert answer.find(".//{urn:ietf:params:xml:ns:xmpp-streams}policy-violation") is not None


def test_stop_ends_every_session(manager, clock):
    sids = [create(manager, rid=100 + n * 10) for n in range(3)]
    held = manager.handle(body(rid=101, sid=sids[0]), LOCAL)
    manager.startService()
    manager.stopService()  # the service tree stops it
    assert not manager.running
    assert manager.connections == {}
    assert answer_of(held).find(".//{urn:ietf:params:xml:ns:xmpp-streams}system-shutdown") is not None


def test_unauthenticated_sessions_per_address_are_limited(manager, clock):
    limit = manager.settings.limits.max_preauth_per_address
    for n in range(limit):
        assert create(manager, rid=100 + n)
    refused = answer_of(manager.handle(body(rid=1, to="example.com"), LOCAL))
    assert refused.get("condition") == "remote-stream-error"
    other = Peer("192.0.2.1", "192.0.2.1:1", True)
    assert answer_of(manager.handle(body(rid=1, to="example.com"), other)).get("sid")


def test_require_encryption_refuses_an_unencrypted_session(manager, clock):
    plain = Peer("192.0.2.1", "192.0.2.1:1", False)
    refused = answer_of(manager.handle(body(rid=1, to="example.com"), plain))
    assert refused.get("condition") == "remote-stream-error"
    manager.settings = dataclasses.replace(manager.settings, xmpp=dataclasses.replace(
        manager.settings.xmpp, require_encryption=False))
    assert answer_of(manager.handle(body(rid=1, to="example.com"), plain)).get("sid")


@pytest.mark.parametrize(
    "value, ok",
    [(None, True), (b"text/xml; charset=utf-8", True), (b"TEXT/XML", True), (b"application/xml", True),
     (b"text/plain; charset=UTF-8", True), (b"text/xml; charset=iso-8859-1", False), (b"application/json", False)],
)
def test_acceptable_content_types(value, ok):
    assert _acceptable(value) is ok


class FakeRequest:
    def __init__(self, host: str, secure: bool = False, **headers: bytes | list[bytes]) -> None:
        self.host = host
        self.secure = secure
        self.requestHeaders = Headers()
        for name, value in headers.items():
            self.requestHeaders.setRawHeaders(name.replace("_", "-"), value if isinstance(value, list) else [value])

    def getClientAddress(self):
        return type("Address", (), {"host": self.host, "port": 4711})()

    def isSecure(self) -> bool:
        return self.secure

    def getHeader(self, name: bytes) -> bytes | None:
        values = self.requestHeaders.getRawHeaders(name)
        return values[-1] if values else None


LOOPBACK = (ipaddress.ip_network("127.0.0.1"), ipaddress.ip_network("::1"))
PROXIES = (*LOOPBACK, ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("2001:db8:a::/48"))


@pytest.mark.parametrize(
    "request_, proxies, address, secure",
    [
        (FakeRequest("203.0.113.5"), (), "203.0.113.5", False),
        (FakeRequest("203.0.113.5", secure=True), (), "203.0.113.5", True),
        (FakeRequest("203.0.113.5", x_forwarded_for=b"198.51.100.1"), PROXIES, "203.0.113.5", False),
        (FakeRequest("127.0.0.1"), (), "127.0.0.1", True),
        (FakeRequest("::1"), (), "::1", True),
        # no trusted proxies: the header changes nothing, even from loopback
        (FakeRequest("127.0.0.1", x_forwarded_for=b"198.51.100.1"), (), "127.0.0.1", True),
        (FakeRequest("127.0.0.1", x_forwarded_proto=b"https", x_forwarded_for=b"10.0.0.1, 198.51.100.1"),
         LOOPBACK, "198.51.100.1", True),
        (FakeRequest("127.0.0.1", x_forwarded_proto=b"http"), LOOPBACK, "127.0.0.1", False),
        (FakeRequest("127.0.0.1", x_forwarded_for=b"not an address"), LOOPBACK, "127.0.0.1", True),
        # several header lines are one list, in order
        (FakeRequest("127.0.0.1", x_forwarded_for=[b"198.51.100.1", b"203.0.113.9"]), LOOPBACK, "203.0.113.9", True),
        # a trusted proxy elsewhere: its client's address, but plain HTTP over a network is not encrypted
        (FakeRequest("10.1.2.3", x_forwarded_for=b"198.51.100.1"), PROXIES, "198.51.100.1", False),
        (FakeRequest("::ffff:127.0.0.1", x_forwarded_for=b"198.51.100.1"), LOOPBACK, "198.51.100.1", True),
    ],
)
def test_peer_of(request_, proxies, address, secure):
    peer = peer_of(request_, proxies)
    assert (peer.address, peer.secure) == (address, secure)


@pytest.mark.parametrize(
    "host, forwarded, address",
    [
        # the right-most address that is no trusted proxy
        ("127.0.0.1", ["203.0.113.7"], "203.0.113.7"),
        ("127.0.0.1", ["192.0.2.66", "203.0.113.7"], "203.0.113.7"),  # what the client wrote itself is ignored
        ("127.0.0.1", ["192.0.2.66", "203.0.113.7", "10.0.0.2"], "203.0.113.7"),  # through two proxies
        ("10.0.0.3", ["192.0.2.66", "2001:db8:b::1", "2001:db8:a::5"], "2001:db8:b::1"),
        # entry forms: brackets, ports, spaces, an IPv4-mapped address
        ("127.0.0.1", [" [2001:db8:b::1]:4433 "], "2001:db8:b::1"),
        ("127.0.0.1", ["203.0.113.7:51234"], "203.0.113.7"),
        ("127.0.0.1", ["::ffff:203.0.113.7"], "203.0.113.7"),
        # not an address: the last trusted hop is the client known
        ("127.0.0.1", ["unknown"], "127.0.0.1"),
        ("127.0.0.1", ["203.0.113.7", "junk", "10.0.0.2"], "10.0.0.2"),
        ("127.0.0.1", [], "127.0.0.1"),
        # every hop trusted: the left-most
        ("127.0.0.1", ["10.0.0.9", "10.0.0.2"], "10.0.0.9"),
        # an untrusted peer's header is never read
        ("198.51.100.9", ["10.0.0.2"], "198.51.100.9"),
        ("not an address", ["203.0.113.7"], "not an address"),
        # a chain longer than MAX_HOPS of trusted proxies is not followed to its end
        ("127.0.0.1", ["203.0.113.7"] + ["10.0.0.2"] * (MAX_HOPS + 1), "10.0.0.2"),
    ],
)
def test_client_address(host, forwarded, address):
    assert client_address(host, forwarded, PROXIES) == address
    assert client_address(host, forwarded, ()) == host


def test_wrap_escapes_attributes_and_declares_stream_prefix():
    assert wrap() == f"<body xmlns='{BOSH_NS}'/>".encode()
    wrapped = wrap([b"<stream:features/>"], {"from": "a<'\"&"})
    assert ET.fromstring(wrapped).get("from") == "a<'\"&"
