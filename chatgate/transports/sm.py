"""Stream management (XEP-0198): acknowledgements and resumption.

Implements, for the streams that offer it (c2s and WebSocket):

- §3 enabling after resource binding (``<enable resume='true'/>`` →
  ``<enabled id resume max/>``; before binding, or twice: ``<failed>``
  ``<unexpected-request/>``);
- §4 acks: the client's ``<r/>`` answered with ``<a h/>`` (the stanzas this
  server handled), the server's ``<r/>`` after ``[sm] ack_every`` stanzas the
  client has not acknowledged, or :data:`ACK_DELAY` seconds after the first of
  them; an ``<a h/>`` acknowledging more than was sent ends the stream with
  ``<undefined-condition/>`` and ``<handled-count-too-high/>``;
- §5 resumption: a session whose connection drops without a clean close (or
  that stops answering pings) is *detached*: it stays bound, its presence
  unchanged, and what it is sent is kept, for ``[sm] resume_timeout`` seconds.
  ``<resume previd h/>`` after SASL, by the same user, moves it to the new
  connection: ``<resumed previd h/>``, then every stanza the client had not
  acknowledged, again, in order. Its contacts never see it go (no presence
  flaps). An unknown, expired or another user's ``previd`` gets ``<failed>``
  ``<item-not-found/>`` and the client binds a new resource.

Counting (§4): ``h`` counts stanzas (message, presence, iq) as the session
writes them to the wire, after the archive's write-ahead holds, so what a
client acknowledges is exactly what it was sent, and the unacknowledged queue
is the tail of that sequence; both counters wrap at 2**32.

Nothing is lost: when a session ends with stanzas the client never
acknowledged (the resume timeout passed, the client closed its stream
without acking, the queue outgrew ``[limits] max_output_buffer``, the service
stops), the messages among them go to offline storage
(:meth:`~chatgate.router.Router.unacknowledged`): archived once already, they
are not archived again; copies the server made for the user (carbons, MAM
results) are not kept, MAM has them.

The queue is bounded by ``[limits] max_output_buffer`` bytes: a detached
session whose queue outgrows it ends at once; an attached client that has
not acknowledged that much by its next ``<a/>`` has its stream closed
(``policy-violation``). A login's burst of presence is acknowledged before
that, as the client reads.
"""

from __future__ import annotations

import secrets
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.logger import Logger
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import STANZAS_NS
from chatgate.xml import Element

if TYPE_CHECKING:
    from chatgate.transports.stream import StreamTransport, XMPPStream

NS = "urn:xmpp:sm:3"
#: h and the counters wrap here (§4)
MODULO = 2**32
#: seconds after the first stanza not asked about before the server asks for an ack
ACK_DELAY = 3.0

log = Logger()


def _element(name: str, **attributes: str) -> domish.Element:
    element = Element((NS, name))
    for key, value in attributes.items():
        element[key] = value
    return element


def failed(condition: str, h: int | None = None) -> domish.Element:
    """``<failed/>`` with a stanza error *condition* (§3, §5)."""
    element = _element("failed")
    if h is not None:
        element["h"] = str(h)
    element.addElement((STANZAS_NS, condition))
    return element


def too_high(h: int, sent: int) -> domish.Element:
    """The application condition of a stream error for an ack of more than was sent (§4)."""
    return _element("handled-count-too-high", h=str(h), **{"send-count": str(sent)})


def parse_h(element: domish.Element) -> int | None:
    """The ``h`` attribute of an ``<a/>`` or ``<resume/>``, or None when it is not an unsigned 32-bit integer."""
    raw = element.getAttribute("h", "")
    if not raw.isdigit() or len(raw) > 10:
        return None
    h = int(raw)
    return h if h < MODULO else None


class StreamManagement:
    """The XEP-0198 state of one session: counters, the unacknowledged queue,
    and which connection (transport and stream) it is on, if any."""

    def __init__(self, session: Session, stream: XMPPStream, registry: Resumption, resumable: bool) -> None:
        self.session = session
        self.registry = registry
        self.stream: XMPPStream | None = stream
        self.transport: StreamTransport | None = stream.transport
        self.resumable = resumable
        #: the resumption id (§5), the node's name after the dot
        self.id = f"{secrets.token_urlsafe(18)}.{registry.node}" if resumable else ""
        #: stanzas received from the client and handled (the h we report)
        self.handled = 0
        #: stanzas written to the client, and the last h it acknowledged
        self.sent = 0
        self.acked = 0
        #: (serialized stanza, the message element or None) written and not acknowledged, oldest first
        self.queue: deque[tuple[bytes, domish.Element | None]] = deque()
        self.queued_bytes = 0
        self._asked = 0  # self.sent when the server last sent <r/>
        self._ask: Any = None  # the pending <r/>
        self._expiry: Any = None

    @property
    def detached(self) -> bool:
        """True while the session waits for its client to resume it."""
        return self.transport is None

    # -- what the session writes

    def write(self, data: bytes, message: domish.Element | None) -> None:
        """A stanza the session sends: counted, kept until acknowledged, and
        written when the session has a connection."""
        self.queue.append((data, message))
        self.queued_bytes += len(data)
        self.sent = (self.sent + 1) % MODULO
        if self.transport is None:
            if self.queued_bytes > self.registry.max_queue:
                log.info("{jid}: too much waiting for a client to resume; the session ends", jid=self.session.full)
                self.end()
            return
        self.session._write(data)
        if self._ask is None:
            unasked = (self.sent - self._asked) % MODULO
            delay = 0 if unasked >= self.registry.ack_every else ACK_DELAY
            self._ask = self.registry.clock.callLater(delay, self._request_ack)

    def _request_ack(self) -> None:
        self._ask = None
        if self.transport is not None and self.sent != self.acked:
            self._asked = self.sent
            self.transport.send(_element("r"))

    # -- what the client sends

    def received(self, element: domish.Element) -> None:
        """A stream management nonza from the client, once enabled."""
        if element.name == "r":
            assert self.transport is not None
            self.transport.send(_element("a", h=str(self.handled)))
        elif element.name == "a":
            h = parse_h(element)
            if h is None:
                self._fail("bad-format", "The h of <a/> must be an unsigned 32-bit integer")
            elif self.acknowledge(h) and self.queued_bytes > self.registry.max_queue:
                self._fail("policy-violation", "Too many stanzas not acknowledged")
        elif element.name in ("enable", "resume"):
            assert self.transport is not None
            self.transport.send(failed("unexpected-request"))
        else:
            self._fail("unsupported-stanza-type")

    def acknowledge(self, h: int) -> bool:
        """Drop what the client acknowledged with *h*; False (and the stream
        closed) when it acknowledged more than it was sent (§4)."""
        count = (h - self.acked) % MODULO
        if count > len(self.queue):
            if self.transport is not None:
                self.transport.fail("undefined-condition", None, too_high(h, self.sent))
            return False
        for _ in range(count):
            self.queued_bytes -= len(self.queue.popleft()[0])
        self.acked = h
        return True

    def _fail(self, condition: str, text: str | None = None) -> None:
        if self.transport is not None:
            self.transport.fail(condition, text)

    # -- detaching, resuming, ending

    def detach(self) -> None:
        """The connection is gone, the session waits (§5)."""
        self.stream = self.transport = None
        if self._ask is not None:
            self._ask.cancel()
            self._ask = None
        if self.queued_bytes > self.registry.max_queue:
            self.end()
            return
        self._expiry = self.registry.clock.callLater(self.registry.timeout, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        log.info("{jid} was not resumed in time; the session ends", jid=self.session.full)
        self.end()

    def attach(self, stream: XMPPStream) -> None:
        """Move the session to *stream*'s connection (resumption)."""
        old = self.stream
        if old is not None:
            # the client left a connection the server had not seen drop yet: it goes, the session stays
            old.session = None
            assert self.transport is not None
            self.transport.fail("conflict", "The session was resumed on another connection")
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        self.stream, self.transport = stream, stream.transport
        self.session.move_to(stream.transport)

    def resend(self) -> None:
        """Write again what the client has not acknowledged, in order (§5)."""
        for data, _ in self.queue:
            self.session._write(data)
        if self.queue and self._ask is None:
            self._ask = self.registry.clock.callLater(0, self._request_ack)

    def end(self) -> None:
        """A detached session ends now: it leaves the router (its contacts see
        it unavailable) and what its client did not acknowledge goes to offline
        storage."""
        assert self.transport is None, "an attached session ends through its stream"
        self.forget()
        self.session.closed = True
        self.registry.router.unbind(self.session)
        self.keep_unacknowledged()

    def forget(self) -> None:
        """No resumption from now on (the session is ending)."""
        self.registry.forget(self)
        for timer in (self._ask, self._expiry):
            if timer is not None and timer.active():
                timer.cancel()
        self._ask = self._expiry = None

    def keep_unacknowledged(self) -> None:
        """Messages the client was sent and never acknowledged, including those
        still held for the archive, to offline storage."""
        messages = [m for _, m in self.queue if m is not None] + self.session.held_messages()
        self.queue.clear()
        self.queued_bytes = 0
        if messages:
            self.registry.router.unacknowledged(self.session, messages)


class Resumption:
    """The sessions of this node that stream management may resume, by id;
    one for every transport that offers XEP-0198."""

    def __init__(self, router: Router, settings: Settings, node: str, clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.router = router
        self.clock = clock
        self.node = node
        self.timeout = settings.sm.resume_timeout
        self.ack_every = settings.sm.ack_every
        self.max_queue = settings.limits.max_output_buffer
        self._sessions: dict[str, StreamManagement] = {}

    def enable(self, session: Session, stream: XMPPStream, request: domish.Element) -> domish.Element:
        """Stream management for *session* (§3): the ``<enabled/>`` to send."""
        wanted = request.getAttribute("resume", "false") in ("true", "1")
        resumable = wanted and self.timeout > 0
        sm = session.sm = StreamManagement(session, stream, self, resumable)
        if not resumable:
            return _element("enabled")
        self._sessions[sm.id] = sm
        return _element("enabled", id=sm.id, resume="true", max=str(int(self.timeout)))

    def find(self, previd: str, bare: str) -> StreamManagement | None:
        """The session *previd* names, if it is *bare*'s and can still be resumed."""
        sm = self._sessions.get(previd)
        if sm is None or sm.session.bare != bare or sm.session.closed:
            return None
        return sm

    def forget(self, sm: StreamManagement) -> None:
        if self._sessions.get(sm.id) is sm:
            del self._sessions[sm.id]

    def __len__(self) -> int:
        return len(self._sessions)
