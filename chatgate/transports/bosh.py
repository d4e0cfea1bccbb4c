"""BOSH: XMPP over long-polled HTTP for the webmail (XEP-0124, XEP-0206).

A BOSH session is an XMPP stream whose bytes travel in HTTP requests: each
request carries a ``<body/>`` wrapper with a request id (``rid``) and zero or
more first-level elements; each answer carries what the server has for the
client. Everything the stream means (SASL, binding, routing) is the shared
:class:`~chatgate.transports.stream.XMPPStream`; this module only moves
elements between HTTP and that stream, and hands the router a
:class:`BOSHSession` that it cannot tell from a c2s one.

The connection manager (XEP-0124 §3):

- Session creation (§7): ``wait``, ``hold``, ``requests``, ``polling``,
  ``inactivity``, ``maxpause``, ``ver`` and request acknowledgements (§9.1)
  are announced; the stream features come in the same answer (XEP-0206 §6).
- Requests are processed and answered strictly in ``rid`` order (§14.2): one
  that arrives ahead of a gap waits, unprocessed, until the gap is filled.
  They are processed at the rates ``[limits]`` sets for every session (bytes
  and stanzas per second): a client sending faster waits, as a c2s client
  whose socket is read more slowly. A
  ``rid`` beyond the window (``requests`` past the last one processed) ends the
  session with ``item-not-found``. A repeated ``rid`` gets its cached answer
  again (§14.3), or joins the request still held for it.
- Up to ``hold`` requests are held (§8): each is one Deferred, fired when
  stanzas arrive or when its ``wait`` expires, and a newer request releases the
  oldest. Stanzas produced in one reactor turn travel in one answer. A held
  request costs a Deferred and one timer: nothing polls.
- ``pause`` (§10), ``type='terminate'`` (§13), ``xmpp:restart`` after SASL
  (XEP-0206 §5); inactivity (§10) ends the session as a dropped TCP
  connection would, so its presence goes unavailable. Every timer of a session
  is cancelled when it ends.
- Errors (§17.2) are terminal ``<body type='terminate' condition='...'/>``
  answers with HTTP 200: ``item-not-found`` for an unknown ``sid`` or a bad
  ``rid``, ``bad-request`` for a malformed or oversized body (restricted XML,
  RFC 6120 §11, as on c2s), ``policy-violation`` for too many simultaneous or
  too frequent requests (§11, §12), and ``remote-stream-error`` carrying the
  ``<stream:error/>`` when the XMPP stream fails (XEP-0206 §7).

In a cluster a sid names the node holding its session (``<random>.<node>``):
a request reaching another node (a load balancer with no sticky sessions) is
handed to that node over the cluster bus and its answer comes back the same
way; a node that does not answer makes it ``item-not-found`` (the client
starts a new session).

What counts as an encrypted request is decided by :func:`peer_of` and
documented under ``[http]`` in tap-config.ini.
"""

from __future__ import annotations

import ipaddress
import re
import secrets
from collections import OrderedDict, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from twisted.application import service
from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.web import resource, server
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.auth.sasl import Authenticator
from chatgate.cluster import NodeUnreachable
from chatgate.config import Network, Settings
from chatgate.router import Router
from chatgate.session import Session, is_qualified_message
from chatgate.stanza import CLIENT_NS
from chatgate.transports.ratelimit import PerAddress, TokenBucket
from chatgate.transports.stream import STREAMS_NS, StreamTransport, XMPPStream, stream_error
from chatgate.xml import StreamError, escape_attribute, parse_document
from chatgate.xml import serialize as serialize_xml

BOSH_NS = "http://jabber.org/protocol/httpbind"
XBOSH_NS = "urn:xmpp:xbosh"

#: the XEP-0124 version implemented; a client asking for less gets its own
VERSION = (1, 11)
#: rids stay below 2**53 so that JavaScript clients can count them (§14.1)
MAX_RID = 2**53 - 1

_NUMBER = re.compile(r"[0-9]{1,16}")
_VERSION = re.compile(r"([0-9]{1,4})\.([0-9]{1,4})")
#: stream errors that are part of normal life, not worth a log line
_ORDINARY = ("conflict", "system-shutdown", "connection-timeout", "policy-violation")
#: seconds a stop waits for clients between two requests to fetch their system-shutdown
STOP_GRACE = 2.0

log = Logger()
#: prefixes the <body/> wrapper declares around its payloads (see wrap)
_PREFIXES = {STREAMS_NS: "stream"}


# -- the <body/> wrapper


def serialize(element: domish.Element) -> bytes:
    """One first-level element as it goes inside a BOSH <body/>: it names its
    own namespace (XEP-0206 §6: stanzas are qualified by jabber:client)."""
    return serialize_xml(element, BOSH_NS, _PREFIXES).encode("utf-8")


def wrap(payloads: Sequence[bytes] = (), attributes: dict[str, str] | None = None) -> bytes:
    """A <body/> answer holding the serialized *payloads* (XEP-0124 §6)."""
    head = [b"<body xmlns='", BOSH_NS.encode(), b"'"]
    if payloads:
        head.append(b" xmlns:stream='" + STREAMS_NS.encode() + b"'")
    for name, value in (attributes or {}).items():
        head.append(f' {name}="{escape_attribute(value)}"'.encode())
    if not payloads:
        return b"".join(head) + b"/>"
    return b"".join(head) + b">" + b"".join(payloads) + b"</body>"


def terminal(condition: str | None = None, payloads: Sequence[bytes] = ()) -> bytes:
    """A terminal answer (XEP-0124 §13, §17.2): the session is over."""
    attributes = {"type": "terminate"}
    if condition is not None:
        attributes["condition"] = condition
    return wrap(payloads, attributes)


def _number(body: domish.Element, name: str | tuple[str, str], default: int | None = None) -> int:
    """A non-negative whole-number attribute; ValueError when absent (without
    *default*) or not a number."""
    raw = body.getAttribute(name)
    if raw is None:
        if default is None:
            raise ValueError(f"no {name}")
        return default
    if not _NUMBER.fullmatch(raw):
        raise ValueError(f"{name} is not a number")
    return int(raw)


def _qualify(element: domish.Element) -> None:
    """A stanza sent without xmlns inherits the wrapper's namespace; it is
    meant as jabber:client (XEP-0206 §6), so say so, down the tree."""
    if element.uri == BOSH_NS:
        element.uri = CLIENT_NS
    if element.defaultUri == BOSH_NS:
        element.defaultUri = CLIENT_NS
    for child in element.elements():
        _qualify(child)


# -- who is asking


@dataclass(frozen=True)
class Peer:
    """Where a request comes from: ``address`` (the client's IP, for
    per-address limits), ``label`` (for logs) and whether the way from the
    client was encrypted."""

    address: str
    label: str
    secure: bool


#: seconds a request forwarded to another node may take beyond the longest BOSH wait
FORWARD_SLACK = 10

#: X-Forwarded-For entries looked at, from the right; a longer chain of trusted proxies is not followed
MAX_HOPS = 16

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _ip(text: str) -> IPAddress | None:
    """The address in *text* (``192.0.2.1``, ``2001:db8::1``, ``[2001:db8::1]:443``,
    ``192.0.2.1:443``), an IPv4-mapped IPv6 address as its IPv4 one; None when none."""
    text = text.strip()
    if text.startswith("["):
        text = text[1:].partition("]")[0]
    elif text.count(":") == 1:
        text = text.partition(":")[0]
    try:
        ip = ipaddress.ip_address(text)
    except ValueError:
        return None
    return getattr(ip, "ipv4_mapped", None) or ip


def _trusted(ip: IPAddress, proxies: Sequence[Network]) -> bool:
    return any(ip in network for network in proxies)


def client_address(host: str, forwarded: Sequence[str], proxies: Sequence[Network]) -> str:
    """The client of a request that came from *host* with the X-Forwarded-For
    entries *forwarded* (the client's first, each proxy appending the one it
    saw): *host* itself unless it is one of the trusted *proxies*; then the
    right-most entry that is not a trusted proxy (the last trusted one when
    all are, or when the next entry to the left is no address)."""
    ip = _ip(host)
    if ip is None or not _trusted(ip, proxies):
        return host
    for entry in reversed(forwarded[-MAX_HOPS:]):
        hop = _ip(entry)
        if hop is None:
            break
        ip = hop
        if not _trusted(ip, proxies):
            break
    return str(ip)


def _loopback(host: str) -> bool:
    ip = _ip(host)
    return ip is not None and ip.is_loopback


def peer_of(request: server.Request, proxies: Sequence[Network]) -> Peer:
    """The :class:`Peer` of an HTTP request: the one place the web listener
    (BOSH, the history API, the pane) learns who is asking.

    The client's address is :func:`client_address`: ``X-Forwarded-For`` is
    believed only from the trusted *proxies* (``[http] trusted_proxies``).
    Encrypted means HTTPS to this listener, or plain HTTP from a loopback
    address (a reverse proxy on this host that ended the browser's HTTPS, or a
    browser on this host: nothing crossed a network); from loopback, an
    ``X-Forwarded-Proto`` header tells what the proxy's client used.
    """
    client = request.getClientAddress()
    host = str(getattr(client, "host", "?"))
    label = f"{host}:{getattr(client, 'port', '?')}"
    address = host
    if proxies:  # with none trusted (the default) the header is never read
        lines = request.requestHeaders.getRawHeaders(b"x-forwarded-for", [])
        address = client_address(host, [e.decode("latin-1") for line in lines for e in line.split(b",")], proxies)
        if address != host:
            label = f"{address} via {label}"
    secure = request.isSecure()
    if _loopback(host):
        proto = request.getHeader(b"x-forwarded-proto")
        secure = True if proto is None else proto.split(b",")[0].strip().lower() == b"https"
    return Peer(address, label, secure)


# -- one BOSH session


class BOSHSession(Session):
    """The router's view of a BOSH client. send() serializes at once: the
    router may change and reuse an element after handing it over."""

    transport_name = "bosh"

    def __init__(self, jid: JID, connection: BOSHConnection) -> None:
        super().__init__(jid, connection.peer)
        self.connection = connection

    def serialize(self, element: domish.Element) -> bytes:
        return serialize(element)

    def backlog(self) -> int:
        """What waits for the client's next request (the outbox: its limit is the output limit)."""
        return self.connection._outbox_size

    def from_text(self, text: str) -> bytes | None:
        # a jabber:client stanza names its namespace inside <body/>, as serialize() writes it
        return text.encode("utf-8") if is_qualified_message(text) else None

    def _write(self, data: bytes) -> None:
        self.connection.send_serialized(data)

    def _end(self, condition: str | None, text: str | None) -> None:
        self.connection.fail(condition, text) if condition else self.connection.close()


class _Request:
    """One rid: its body, the HTTP requests waiting for its answer (a repeated
    rid adds one), and its wait timer while held."""

    __slots__ = ("rid", "body", "size", "waiters", "timer", "empty", "last_word")

    def __init__(self, rid: int, body: domish.Element, size: int) -> None:
        self.rid = rid
        self.body: domish.Element | None = body
        self.size = size
        self.waiters: list[defer.Deferred[bytes]] = []
        self.timer: Any = None
        #: no payload and nothing to do: a poll
        self.empty = next(body.elements(), None) is None and not (
            body.hasAttribute("type") or body.hasAttribute("pause") or body.hasAttribute((XBOSH_NS, "restart"))
        )
        #: one more request is allowed to pause or terminate (§11)
        self.last_word = body.getAttribute("type") == "terminate" or body.hasAttribute("pause")

    def answer(self, response: bytes) -> None:
        if self.timer is not None:
            if self.timer.active():
                self.timer.cancel()
            self.timer = None
        waiters, self.waiters = self.waiters, []
        for d in waiters:
            d.callback(response)


class BOSHConnection(StreamTransport):
    """One BOSH session (one ``sid``): the transport of one XMPPStream, made
    of the HTTP requests the client keeps sending."""

    name = "bosh"
    can_starttls = False

    def __init__(self, manager: ConnectionManager, sid: str, rid: int, wait: int, hold: int,
                 peer: Peer) -> None:
        http = manager.settings.http
        self.manager = manager
        self.clock = manager.clock
        self.sid = sid
        #: the last rid processed; every lower one was processed too
        self.rid = rid
        self.wait = wait
        self.hold = hold
        self.requests = http.bosh_requests
        self.polling = http.bosh_polling
        self.inactivity = http.bosh_inactivity
        self.max_pause = http.bosh_max_pause
        self.address = peer.address
        self.peer = peer.label
        self.secure = peer.secure
        self.authenticated = False
        self.ended = False
        self.stream = XMPPStream(manager.router, manager.authenticator, manager.settings, self)
        self._held: deque[_Request] = deque()
        #: requests that arrived ahead of a missing rid, unprocessed
        self._early: dict[int, _Request] = {}
        self._outbox: list[bytes] = []
        self._outbox_size = 0
        #: rid -> answer, the most recent ones, for a client that repeats a request (§14.3)
        self._answers: OrderedDict[int, bytes] = OrderedDict()
        self._pause: int | None = None
        self._last_arrival = self.clock.seconds()
        self._quiet_poll = False  # the last request was empty and so was its answer
        self._idle_timer: Any = None
        self._flush_call: Any = None
        self._resume_call: Any = None  # processing waits out the rate limits
        limits = manager.settings.limits
        self._bytes = TokenBucket(limits.read_rate, limits.read_burst, self.clock)
        self._stanzas = TokenBucket(limits.stanza_rate, limits.stanza_burst, self.clock)
        self._auth_timer: Any = self.clock.callLater(
            manager.settings.xmpp.auth_timeout, self.fail, "connection-timeout", "Not authenticated in time"
        )

    # -- session creation (XEP-0124 §7.2, XEP-0206 §6)

    def created(self, domain: str, version: tuple[int, int]) -> bytes:
        """The session creation answer, with the first stream features."""
        self.stream.domain = domain
        attributes = {
            "sid": self.sid,
            "wait": str(self.wait),
            "hold": str(self.hold),
            "requests": str(self.requests),
            "inactivity": str(self.inactivity),
            "ver": f"{version[0]}.{version[1]}",
            "from": domain,
            "ack": str(self.rid),
            "xmlns:xmpp": XBOSH_NS,
            "xmpp:version": "1.0",
            "xmpp:restartlogic": "true",
        }
        if self.polling:
            attributes["polling"] = str(self.polling)
        if self.max_pause:
            attributes["maxpause"] = str(self.max_pause)
        answer = wrap([serialize(self.stream.features())], attributes)
        self._remember(self.rid, answer)
        self._start_idle()
        return answer

    # -- requests

    def receive(self, rid: int, body: domish.Element, size: int) -> defer.Deferred[bytes]:
        """Take one request of this session; the Deferred fires with its answer."""
        if not self.authenticated and size > self.manager.settings.limits.max_stanza_size_preauth:
            return self.refuse("bad-request", "body too large before authentication")
        if rid <= self.rid:
            return self._repeated(rid)
        request = _Request(rid, body, size)
        extra = 1 if request.last_word or any(r.last_word for r in self._early.values()) else 0
        if rid > self.rid + self.requests + extra:
            return self.refuse("item-not-found", f"rid {rid} is outside the window after {self.rid}")
        early = self._early.get(rid)
        if early is not None:
            return self._waiter(early)
        if len(self._held) + len(self._early) + 1 > self.requests + extra:
            return self.refuse("policy-violation", "too many simultaneous requests")
        now = self.clock.seconds()
        if self._too_frequent(request, now):
            return self.refuse("policy-violation", "empty requests more often than the polling interval")
        self._last_arrival = now
        d = self._waiter(request)
        self._early[rid] = request
        self._drain()
        return d

    def _drain(self) -> None:
        """Process the requests that are next in rid order, at the rate
        ``[limits]`` allows a session: a fast sender waits, nothing is dropped."""
        while not self.ended and self._resume_call is None and self.rid + 1 in self._early:
            request = self._early.pop(self.rid + 1)
            stanzas = sum(1 for _ in request.body.elements())
            self._process(request)
            delay = max(self._bytes.take(request.size), self._stanzas.take(stanzas))
            if delay > 0 and not self.ended:
                self._resume_call = self.clock.callLater(delay, self._resume)

    def _resume(self) -> None:
        self._resume_call = None
        self._drain()

    def _waiter(self, request: _Request) -> defer.Deferred[bytes]:
        d: defer.Deferred[bytes] = defer.Deferred(lambda d: self._dropped(request, d))
        request.waiters.append(d)
        return d

    def _dropped(self, request: _Request, d: defer.Deferred[bytes]) -> None:
        """The HTTP request waiting on *d* is gone (the client closed it)."""
        if d in request.waiters:
            request.waiters.remove(d)
        if not request.waiters and request in self._held:
            self._release_through(request)  # answered (and cached) now, in order

    def _repeated(self, rid: int) -> defer.Deferred[bytes]:
        """A rid processed already: the client lost the answer (§14.3)."""
        for request in self._held:
            if request.rid == rid:
                return self._waiter(request)
        answer = self._answers.get(rid)
        if answer is None:
            return self.refuse("item-not-found", f"rid {rid} was answered already and is no longer cached")
        if not self._held:
            self._start_idle()
        return defer.succeed(answer)

    def _too_frequent(self, request: _Request, now: float) -> bool:
        """XEP-0124 §11 (the newest request is empty, every open one is
        unanswered, and it came sooner than 'polling' after the one before) and
        §12 (a polling session polls again sooner than 'polling' after an empty
        answer)."""
        if not self.polling or not request.empty or now - self._last_arrival >= self.polling:
            return False
        if request.rid < max(self._early, default=self.rid):
            return False  # overtaken by a newer request: not the last of the sequence
        if self.hold == 0:
            return self._quiet_poll
        return len(self._held) + len(self._early) + 1 >= self.requests

    def _process(self, request: _Request) -> None:
        """Process the next request in rid order and hold it (§8)."""
        body = request.body
        request.body = None  # a held request keeps nothing it no longer needs
        self.rid = request.rid
        self._cancel_idle()
        self._pause = None
        if self.stream.session is not None:
            self.stream.session.last_active = self.clock.seconds()
        self._acknowledged(body.getAttribute("ack"))
        self._held.append(request)
        request.timer = self.clock.callLater(self.wait, self._release_through, request)
        children = list(body.elements())
        if body.getAttribute((XBOSH_NS, "restart")) == "true":
            if children:
                self.refuse("bad-request", "a stream restart carries no payload")
                return
            # XEP-0206 §5: the restarted stream begins with its features
            self.send(self.stream.features())
        for child in children:
            if self.ended:
                return
            _qualify(child)
            try:
                self.stream.receive(child)
            except Exception:
                log.failure("BOSH input from {peer}", peer=self.peer)
                self.fail("internal-server-error")
        if self.ended:
            return
        if body.getAttribute("type") == "terminate":
            self._end(None, reason="terminated by the client")
            return
        if body.hasAttribute("pause") and self.max_pause:
            try:
                seconds = min(_number(body, "pause"), self.max_pause)
            except ValueError:
                self.refuse("bad-request", "pause is not a number")
                return
            self._paused(request, seconds)
            return
        if not request.waiters:
            self._release_through(request)
            return
        while len(self._held) > self.hold:
            self._respond(self._held.popleft())
        if self._outbox:
            self._schedule_flush()

    def _paused(self, request: _Request, seconds: int) -> None:
        """§10: answer every held request now, the pause request with no
        payload, and allow *seconds* of inactivity once."""
        while self._held[0] is not request:
            self._respond(self._held.popleft())
        self._held.popleft()
        request.answer(wrap())  # not cached: a pause request is never replayed
        self._pause = seconds
        self._start_idle()

    def _acknowledged(self, ack: str | None) -> None:
        """§9.2: the client has every answer up to *ack*; forget them."""
        if ack is not None and _NUMBER.fullmatch(ack):
            for rid in [rid for rid in self._answers if rid <= int(ack)]:
                del self._answers[rid]

    # -- answers

    def _release_through(self, request: _Request) -> None:
        """Answer held requests, oldest first, up to and including *request*."""
        while request in self._held:
            self._respond(self._held.popleft())

    def _respond(self, request: _Request) -> None:
        """Answer one request (no longer held) with everything queued."""
        payloads, self._outbox, self._outbox_size = self._outbox, [], 0
        attributes = {"ack": str(self.rid)} if self.rid != request.rid else None
        answer = wrap(payloads, attributes)
        self._remember(request.rid, answer)
        self._quiet_poll = request.empty and not payloads
        request.answer(answer)
        if not self._held and not self.ended:
            self._start_idle()

    def _remember(self, rid: int, answer: bytes) -> None:
        self._answers[rid] = answer
        while len(self._answers) > self.requests:
            self._answers.popitem(last=False)

    def _schedule_flush(self) -> None:
        # Everything queued in this reactor turn goes out in one answer.
        if self._flush_call is None and not self.ended:
            self._flush_call = self.clock.callLater(0, self._flush)

    def _flush(self) -> None:
        self._flush_call = None
        if self._outbox and self._held:
            self._respond(self._held.popleft())

    # -- inactivity (§10)

    def _start_idle(self) -> None:
        self._cancel_idle()
        seconds = self._pause if self._pause is not None else self.inactivity
        self._idle_timer = self.clock.callLater(seconds, self._inactive)

    def _cancel_idle(self) -> None:
        if self._idle_timer is not None and self._idle_timer.active():
            self._idle_timer.cancel()
        self._idle_timer = None

    def _inactive(self) -> None:
        self._idle_timer = None
        self._end(None, reason="inactive", tell=False)

    # -- StreamTransport

    def send(self, element: domish.Element) -> None:
        """Queue one element for the client, serialized now."""
        if not self.ended:
            self.send_serialized(serialize(element))

    def send_serialized(self, data: bytes) -> None:
        """Queue one element serialized by :func:`serialize`."""
        if self.ended:
            return
        self._outbox.append(data)
        self._outbox_size += len(data)
        # With a request held the outbox goes out at the end of this turn (a
        # login's roster and everyone's presence are one answer); without,
        # it waits for a client that may have stopped asking.
        if not self._held and self._outbox_size > self.manager.settings.limits.max_output_buffer:
            self._outbox, self._outbox_size = [], 0  # not worth sending to a client that does not read
            self.fail("policy-violation", "Too much data waiting; the client does not read")
            return
        self._schedule_flush()

    def fail(self, condition: str, text: str | None = None, application: domish.Element | None = None) -> None:
        """End the session with a stream error, carried by remote-stream-error
        (XEP-0206 §7); kept for the next request if none is open."""
        if self.ended:
            return
        if condition not in _ORDINARY:
            log.info("stream error {condition} for {peer} (bosh)", condition=condition, peer=self.peer)
        self._end("remote-stream-error", stream_error(condition, text, application), reason=condition)

    def close(self) -> None:
        """End the session without an error."""
        if not self.ended:
            self._end(None, reason="closed by the server")

    def start_tls(self) -> None:
        raise NotImplementedError("BOSH has no STARTTLS: TLS is HTTPS's business")

    def restart(self, authenticated: bool) -> None:
        """After SASL success the client restarts with xmpp:restart (XEP-0206 §5)."""
        if authenticated and not self.authenticated:
            self.authenticated = True
            self._cancel_auth_timer()
            self.manager.authenticated(self)

    def make_session(self, jid: JID) -> Session:
        session = BOSHSession(jid, self)
        session.last_active = self.clock.seconds()
        return session

    # -- the end

    def refuse(self, condition: str, why: str) -> defer.Deferred[bytes]:
        """End the session for a client error; the terminal answer for the request at hand."""
        log.info("BOSH session {sid} from {peer} ended with {condition}: {why}",
                 sid=self.sid, peer=self.peer, condition=condition, why=why)
        if self.ended:
            return defer.succeed(terminal(condition))
        return defer.succeed(self._end(condition, reason=why, tell=False))

    def _end(self, condition: str | None, error: domish.Element | None = None, *, reason: str,
             tell: bool = True) -> bytes:
        """End the session: leave the router, cancel every timer, answer every
        open request (the older ones with what is queued, the newest with the
        terminal body). With *tell* and no request open, the terminal body is
        kept for the session's next request. Returns the terminal body."""
        self.ended = True
        self.manager.forget(self)
        self._cancel_idle()
        self._cancel_auth_timer()
        for call in (self._flush_call, self._resume_call):
            if call is not None and call.active():
                call.cancel()
        self._flush_call = self._resume_call = None
        self.stream.ended()
        if self.stream.session is None:
            log.debug("BOSH session {sid} from {peer} ended: {reason}", sid=self.sid, peer=self.peer, reason=reason)
        held = list(self._held)
        # requests never processed get the terminal body, or else the newest held one
        told = [self._early[rid] for rid in sorted(self._early)] or held[-1:]
        self._held.clear()
        self._early.clear()
        for request in held:
            if request not in told:
                self._respond(request)
        payloads = self._outbox + ([serialize(error)] if error is not None else [])
        self._outbox, self._outbox_size = [], 0
        final = terminal(condition, payloads)
        for request in told:
            request.answer(final if request is told[0] else terminal(condition))
        if not told and tell:
            self.manager.bury(self.sid, final)
        return final

    def _cancel_auth_timer(self) -> None:
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None


# -- the connection manager


class ConnectionManager(service.Service):
    """The BOSH connection manager (XEP-0124): sessions by ``sid``.

    A child of the chatgate service tree (named ``bosh``): stopping it ends
    every session with ``system-shutdown`` (XEP-0124 §17.2, XEP-0206 §7).
    """

    name = "bosh"

    def __init__(self, router: Router, authenticator: Authenticator, settings: Settings,
                 clock: Any = None, preauth: dict[str, int] | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.router = router
        self.authenticator = authenticator
        self.settings = settings
        self.clock = clock
        self.connections: dict[str, BOSHConnection] = {}
        #: address -> its sessions not authenticated yet (shared with c2s when given)
        self.preauth: dict[str, int] = preauth if preauth is not None else {}
        self._preauth: set[str] = set()  # sids counted in preauth
        #: sid -> terminal body of a session the server ended while no request was open
        self._buried: dict[str, bytes] = {}
        #: while stopping: the sids whose client has yet to take its terminal body
        self._told_at_stop: set[str] | None = None
        self._stopped: defer.Deferred[None] = defer.succeed(None)
        limits = settings.limits
        self._creations = PerAddress(limits.session_rate, limits.session_burst, self.clock)
        router.cluster.answer("bosh", self._forwarded)

    def _forwarded(self, request: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        """A request another node took for a session of this node (a load
        balancer without sticky sessions): answered here, sent back there."""
        peer = Peer(str(request.get("a", "")), f"{request.get('l', '')} via another node", bool(request.get("s")))
        d = self.handle(str(request.get("b", "")).encode("utf-8"), peer, forwarded=True)
        return d.addCallback(lambda answer: {"b": answer.decode("utf-8")})

    def _forward(self, node: str, data: bytes, peer: Peer) -> defer.Deferred[bytes]:
        """Hand a request for a session *node* holds to that node, and its answer back."""
        request = {"b": data.decode("utf-8", "replace"), "a": peer.address, "l": peer.label, "s": peer.secure}
        d = self.router.cluster.request(node, "bosh", request, self.settings.http.bosh_max_wait + FORWARD_SLACK)

        def answered(answer: dict[str, Any]) -> bytes:
            if "b" not in answer:
                return terminal("item-not-found")
            return str(answer["b"]).encode("utf-8")

        def unanswered(failure: Failure) -> bytes:
            failure.trap(NodeUnreachable)
            log.info("BOSH request from {peer} for a session of node {node}, which did not answer: {why}",
                     peer=peer.label, node=node, why=failure.getErrorMessage())
            return terminal("item-not-found")

        return d.addCallbacks(answered, unanswered)

    def handle(self, data: bytes, peer: Peer, forwarded: bool = False) -> defer.Deferred[bytes]:
        """Take the body of one POST; the Deferred fires with the answer. In a
        cluster, a request for a session another node holds goes to that node
        (*forwarded*: it came from another node, it goes no further)."""
        limits = self.settings.limits
        try:
            body = parse_document(data, self.settings.http.bosh_max_body_size, limits.max_depth)
        except StreamError as e:
            log.info("bad BOSH body from {peer}: {error}", peer=peer.label, error=e)
            return defer.succeed(terminal("bad-request"))
        if (body.uri, body.name) != (BOSH_NS, "body"):
            log.info("bad BOSH body from {peer}: not a {ns} body", peer=peer.label, ns=BOSH_NS)
            return defer.succeed(terminal("bad-request"))
        sid = body.getAttribute("sid")
        connection = self.connections.get(sid) if sid is not None else None
        if sid is not None and connection is None:
            owner = sid.partition(".")[2]
            if owner and owner != self.router.cluster.node_id and not forwarded:
                return self._forward(owner, data, peer)
            final = self._buried.get(sid)
            if final is not None and self._told_at_stop is not None:
                self._told_at_stop.discard(sid)
                if not self._told_at_stop and not self._stopped.called:
                    self._stopped.callback(None)
            return defer.succeed(final or terminal("item-not-found"))
        try:
            rid = _number(body, "rid")
            if not 0 < rid <= MAX_RID:
                raise ValueError("rid out of range")
        except ValueError as e:
            if connection is not None:
                return connection.refuse("bad-request", str(e))
            log.info("bad BOSH body from {peer}: {error}", peer=peer.label, error=e)
            return defer.succeed(terminal("bad-request"))
        if connection is not None:
            return connection.receive(rid, body, len(data))
        return defer.succeed(self._create(body, rid, peer, len(data)))

    def _create(self, body: domish.Element, rid: int, peer: Peer, size: int) -> bytes:
        """A session creation request (XEP-0124 §7.1, XEP-0206 §4)."""
        settings = self.settings
        http = settings.http
        if size > settings.limits.max_stanza_size_preauth:
            return terminal("bad-request")
        domain = body.getAttribute("to", "").lower()
        if not self.router.domains.is_hosted(domain):
            log.info("BOSH session for unknown host {host!r} from {peer}", host=domain, peer=peer.label)
            return terminal("host-unknown")
        try:
            wait = min(_number(body, "wait", http.bosh_max_wait), http.bosh_max_wait)
            hold = min(_number(body, "hold", 1), http.bosh_hold)
        except ValueError as e:
            log.info("bad BOSH session request from {peer}: {error}", peer=peer.label, error=e)
            return terminal("bad-request")
        version = VERSION
        asked = _VERSION.fullmatch(body.getAttribute("ver", ""))
        if asked:
            version = min(VERSION, (int(asked.group(1)), int(asked.group(2))))
        if settings.xmpp.require_encryption and not peer.secure:
            log.info("refused unencrypted BOSH session from {peer}", peer=peer.label)
            error = stream_error("policy-violation", "Encryption is required: use HTTPS")
            return terminal("remote-stream-error", [serialize(error)])
        if self.preauth.get(peer.address, 0) >= settings.limits.max_preauth_per_address:
            error = stream_error("policy-violation", "Too many unauthenticated connections from your address")
            return terminal("remote-stream-error", [serialize(error)])
        if not self._creations.allow(peer.address):
            log.info("BOSH sessions from {peer} come too fast", peer=peer.label)
            error = stream_error("policy-violation", "Too many new sessions from your address; try again later")
            return terminal("remote-stream-error", [serialize(error)])
        sid = secrets.token_hex(16)
        if self.router.cluster.clustered:
            sid = f"{sid}.{self.router.cluster.node_id}"  # any node can tell where it lives
        connection = BOSHConnection(self, sid, rid, wait, hold, peer)
        self.connections[sid] = connection
        self.preauth[peer.address] = self.preauth.get(peer.address, 0) + 1
        self._preauth.add(sid)
        return connection.created(domain, version)

    def authenticated(self, connection: BOSHConnection) -> None:
        self._leave_preauth(connection)

    def forget(self, connection: BOSHConnection) -> None:
        """*connection* ended: its sid is unknown from now on."""
        self.connections.pop(connection.sid, None)
        self._leave_preauth(connection)

    def bury(self, sid: str, final: bytes) -> None:
        """Keep the terminal body of a session the server ended, for its next
        request, as long as the client may take to send one."""
        self._buried[sid] = final
        self.clock.callLater(self.settings.http.bosh_inactivity, self._buried.pop, sid, None)

    def _leave_preauth(self, connection: BOSHConnection) -> None:
        if connection.sid in self._preauth:
            self._preauth.discard(connection.sid)
            count = self.preauth.get(connection.address, 0) - 1
            if count > 0:
                self.preauth[connection.address] = count
            else:
                self.preauth.pop(connection.address, None)

    def stopService(self) -> defer.Deferred[None]:
        """The service stops: every session ends with system-shutdown, a held
        request answered with it. A client between two requests gets it with
        its next one: the stop waits for those (at most :data:`STOP_GRACE`
        seconds), so the web listener, which stops after, is still there to
        take them."""
        super().stopService()
        self._told_at_stop = set()
        for connection in list(self.connections.values()):
            connection.fail("system-shutdown", "The server is stopping")
            if connection.sid in self._buried:
                self._told_at_stop.add(connection.sid)
        if not self._told_at_stop:
            return defer.succeed(None)
        self._stopped = defer.Deferred()
        timer = self.clock.callLater(STOP_GRACE, lambda: self._stopped.called or self._stopped.callback(None))
        self._stopped.addBoth(lambda result: timer.cancel() if timer.active() else None)
        return self._stopped


# -- the HTTP face


def _acceptable(content_type: bytes | None) -> bool:
    """XML in UTF-8: text/xml (what clients send), application/xml, or
    text/plain (which spares a browser the CORS preflight); no type is fine."""
    if content_type is None:
        return True
    media, *parameters = content_type.decode("latin-1").split(";")
    if media.strip().lower() not in ("text/xml", "application/xml", "text/plain"):
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() not in ("utf-8", "utf8"):
            return False
    return True


class BOSHResource(resource.Resource):
    """The BOSH endpoint: POST a <body/>, get a <body/> back (XEP-0124 §5)."""

    isLeaf = True
    allowedMethods = (b"POST",)

    def __init__(self, manager: ConnectionManager) -> None:
        super().__init__()
        self.manager = manager

    def render(self, request: server.Request) -> bytes | int:
        request.setHeader(b"content-type", b"text/xml; charset=utf-8")
        if request.method != b"POST":
            request.setResponseCode(405)
            request.setHeader(b"allow", b"POST, OPTIONS")
            return terminal("bad-request")
        if not _acceptable(request.getHeader(b"content-type")):
            request.setResponseCode(415)
            return terminal("bad-request")
        peer = peer_of(request, self.manager.settings.http.trusted_proxies)
        if getattr(request, "oversized", False):
            log.info("BOSH body over {limit} bytes from {peer}", limit=self.manager.settings.http.bosh_max_body_size,
                     peer=peer.label)
            return terminal("bad-request")
        data = request.content.read()
        answered = defer.maybeDeferred(self.manager.handle, data, peer)
        gone: list[bool] = []

        def disconnected(_: Failure) -> None:
            gone.append(True)
            answered.cancel()

        def respond(answer: bytes) -> None:
            if not gone:
                request.setHeader(b"content-length", b"%d" % len(answer))
                request.write(answer)
                request.finish()

        def failed(failure: Failure) -> None:
            if failure.check(defer.CancelledError):
                return
            log.failure("BOSH request failed", failure)
            respond(terminal("internal-server-error"))

        request.notifyFinish().addErrback(disconnected)
        answered.addCallbacks(respond, failed)
        return server.NOT_DONE_YET
