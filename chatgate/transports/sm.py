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
stops), the IQ requests among them are answered with ``service-unavailable``
and the messages go to offline storage
(:meth:`~chatgate.router.Router.unacknowledged`): archived once already, they
are not archived again; copies the server made for the user (carbons, MAM
results) are not kept, MAM has them.

On any node (§5 with a cluster): a resumption id names the node that
enabled it (``<random>.<node>``), which keeps, for its ids, which node
holds each session now. A node asked to resume a session it does not hold
asks that home node, which hands the session over (or has its holder do it):
the holder detaches it, answers with its state (presence, priority, shared
state, counters, the unacknowledged queue), and keeps it bound, marked
``moving``, until the new node's bind of the same full JID replaces it; then
it ends there without telling anyone (``Session.moved``: its contacts never
see it go) and what reached it meanwhile is delivered again, to the new node.
The new node binds a session with that state and presence, and the other
nodes' mirrors switch to it. A home node that is gone makes the id unknown:
the client binds a new session, and the old one's messages go offline when
it times out.

The queue is bounded by ``[limits] max_output_buffer`` bytes: a detached
session whose queue outgrows it ends at once; an attached client still over
it ``[xmpp] ping_timeout`` seconds later has its stream closed
(``policy-violation``): a login's burst of presence in a large domain goes
over for a moment, and is acknowledged as the client reads it.
"""

from __future__ import annotations

import json
import secrets
from collections import deque
from typing import TYPE_CHECKING, Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.cluster import Cluster, NodeUnreachable
from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import STANZAS_NS
from chatgate.xml import Element, StreamError, parse_document, serialize

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

    __slots__ = ("session", "registry", "stream", "transport", "resumable", "id", "timeout", "handled", "sent",
                 "acked", "queue", "queued_bytes", "_asked", "_ask", "_expiry", "_overflow", "moving", "_handed")

    def __init__(self, session: Session, stream: XMPPStream, registry: Resumption, resumable: bool,
                 timeout: float = 0.0) -> None:
        self.session = session
        self.registry = registry
        self.stream: XMPPStream | None = stream
        self.transport: StreamTransport | None = stream.transport
        self.resumable = resumable
        #: the resumption id (§5), the node's name after the dot
        self.id = f"{secrets.token_urlsafe(18)}.{registry.node}" if resumable else ""
        #: seconds a detached session waits to be resumed
        self.timeout = timeout or registry.timeout
        #: stanzas received from the client and handled (the h we report)
        self.handled = 0
        #: stanzas written to the client, and the last h it acknowledged
        self.sent = 0
        self.acked = 0
        #: (serialized stanza, the element if a message or IQ request) written and not acknowledged, oldest first
        self.queue: deque[tuple[bytes, domish.Element | None]] = deque()
        self.queued_bytes = 0
        self._asked = 0  # self.sent when the server last sent <r/>
        self._ask: Any = None  # the pending <r/>
        self._expiry: Any = None
        self._overflow: Any = None  # the check of a client that does not acknowledge enough
        #: handed over to another node, which has not bound it yet
        self.moving = False
        self._handed = 0  # len(self.queue) when handed over: what came after is delivered again

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
                log.info("{jid}: too much waiting for a client to resume; the session ends", jid=self.session.full,
                         event="logout")
                self.end()
            return
        self.session._write(data)
        if self.queued_bytes > self.registry.max_queue and self._overflow is None:
            # a burst (a login's presence in a large domain) is acknowledged as the client reads it
            self._overflow = self.registry.clock.callLater(self.registry.ack_grace, self._check_overflow)
        if self._ask is None:
            unasked = (self.sent - self._asked) % MODULO
            delay = 0 if unasked >= self.registry.ack_every else ACK_DELAY
            self._ask = self.registry.clock.callLater(delay, self._request_ack)

    def _check_overflow(self) -> None:
        self._overflow = None
        if self.queued_bytes > self.registry.max_queue:
            self._fail("policy-violation", "Too many stanzas not acknowledged")

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
            else:
                self.acknowledge(h)
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
        self._cancel_timers()
        if self.queued_bytes > self.registry.max_queue:
            self.end()
            return
        self._expiry = self.registry.clock.callLater(self.timeout, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        log.info("{jid} was not resumed in time; the session ends", jid=self.session.full, event="logout")
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

    # -- moving to another node

    def hand_over(self) -> dict[str, Any]:
        """Another node resumes this session: it stops here (still bound,
        ``moving``, until that node's bind replaces it) and its state goes there."""
        session = self.session
        old = self.stream
        if old is not None:
            old.session = None
            assert self.transport is not None
            self.transport.fail("conflict", "The session was resumed on another connection")
        self.stream = self.transport = None
        self.moving = session.moved = True
        self.forget()
        self._handed = len(self.queue)
        # the new node's bind normally replaces it within milliseconds
        self._expiry = self.registry.clock.callLater(self.registry.handover_timeout, self._not_taken)
        state = {}
        for key, value in session.state.items():
            try:
                state[key] = json.loads(json.dumps(value))
            except (TypeError, ValueError):
                continue  # per-connection state (client state indication's queue) stays behind
        return {
            "full": session.full,
            "transport": session.transport_name,
            "presence": serialize(session.presence) if session.presence is not None else "",
            "priority": session.priority,
            "directed": sorted(session.directed),
            "state": state,
            "handled": self.handled, "sent": self.sent, "acked": self.acked, "timeout": self.timeout,
            "queue": [[data.decode("utf-8"), serialize(message) if message is not None else ""]
                      for data, message in self.queue],
        }

    def _not_taken(self) -> None:
        """The node the session was handed to never bound it: it ends here, as if not resumed."""
        self._expiry = None
        if self.moving and not self.session.closed:
            log.warn("{jid} was handed to another node, which did not take it; the session ends",
                     jid=self.session.full)
            self.moving = self.session.moved = False
            self.end()

    def moved_away(self) -> None:
        """The node this session was handed to bound it: it ends here quietly;
        what reached it after the hand-over goes there."""
        self.forget()
        self.moving = False
        session = self.session
        session.closed = True
        late = [m for _, m in list(self.queue)[self._handed:] if m is not None] + session.held_messages()
        self.queue.clear()
        self.queued_bytes = 0
        router = self.registry.router
        for stanza in late:
            if stanza.name == "iq":  # a request in the moment of the move: its sender may ask again
                router.bounce_to_origin(stanza, "service-unavailable")
            else:  # after the new session is mirrored here (the same turn of the cluster's events)
                self.registry.clock.callLater(0, router.redeliver, stanza)

    def forget(self) -> None:
        """No resumption from now on (the session is ending)."""
        self.registry.forget(self)
        self._cancel_timers()

    def _cancel_timers(self) -> None:
        for timer in (self._ask, self._expiry, self._overflow):
            if timer is not None and timer.active():
                timer.cancel()
        self._ask = self._expiry = self._overflow = None

    def keep_unacknowledged(self) -> None:
        """Messages (and IQ requests) the client was sent and never acknowledged,
        including those still held for the archive, to offline storage (answered)."""
        messages = [m for _, m in self.queue if m is not None] + self.session.held_messages()
        self.queue.clear()
        self.queued_bytes = 0
        if messages:
            self.registry.router.unacknowledged(self.session, messages)


def _home(previd: str) -> str:
    """The node that made a resumption id."""
    return previd.rpartition(".")[2]


class Resumption:
    """The sessions of this node that stream management may resume, by id;
    one for every transport that offers XEP-0198."""

    def __init__(self, router: Router, settings: Settings, cluster: Cluster, clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.router = router
        self.clock = clock
        self.cluster = cluster
        self.node = cluster.node_id
        self.timeout = settings.sm.resume_timeout
        self.ack_every = settings.sm.ack_every
        self.max_queue = settings.limits.max_output_buffer
        #: seconds a client may stay over max_queue before its stream is closed
        self.ack_grace = settings.xmpp.ping_timeout
        self.max_stanza = settings.limits.max_stanza_size + 4096
        #: how long a request to another node, and a hand-over, may take
        self.handover_timeout = settings.cluster.forward_timeout
        self._sessions: dict[str, StreamManagement] = {}
        #: for the ids this node made whose sessions moved to another node: that node
        self._moved: dict[str, str] = {}
        cluster.answer("sm-resume", self._asked_to_resume)
        cluster.answer("sm-ended", self._ended_elsewhere)

    def enable(self, session: Session, stream: XMPPStream, request: domish.Element) -> domish.Element:
        """Stream management for *session* (§3): the ``<enabled/>`` to send."""
        wanted = request.getAttribute("resume", "false") in ("true", "1")
        resumable = wanted and self.timeout > 0
        timeout = self.timeout
        asked = request.getAttribute("max", "")
        if asked.isdigit() and 0 < int(asked) < timeout:
            timeout = float(asked)  # the client's preferred maximum (§3)
        sm = session.sm = StreamManagement(session, stream, self, resumable, timeout)
        if not resumable:
            return _element("enabled")
        self._sessions[sm.id] = sm
        return _element("enabled", id=sm.id, resume="true", max=str(int(timeout)))

    def find(self, previd: str, bare: str) -> StreamManagement | None:
        """The session *previd* names, if it is *bare*'s and can still be resumed."""
        sm = self._sessions.get(previd)
        if sm is None or sm.session.bare != bare or sm.session.closed:
            return None
        return sm

    def forget(self, sm: StreamManagement) -> None:
        if self._sessions.get(sm.id) is sm:
            del self._sessions[sm.id]
            home = _home(sm.id)
            if home != self.node and not sm.moving and self.cluster.clustered:
                # the node that made the id stops sending resumptions of it here
                d = self.cluster.request(home, "sm-ended", {"id": sm.id, "node": self.node},
                                         self.handover_timeout)
                d.addErrback(lambda _: None)

    # -- across nodes

    def elsewhere(self, previd: str) -> str | None:
        """The node to ask for *previd*'s session when this node does not hold it, if any."""
        if not self.cluster.clustered:
            return None
        home = _home(previd)
        holder = self._moved.get(previd) if home == self.node else home
        return holder if holder and holder != self.node else None

    def fetch(self, previd: str, bare: str, transport: str) -> defer.Deferred[dict[str, Any] | None]:
        """The state of *previd*'s session, handed over by the node holding it; None if none does."""
        node = self.elsewhere(previd)
        if node is None:
            return defer.succeed(None)
        payload = {"id": previd, "bare": bare, "transport": transport, "to": self.node}
        d = self.cluster.request(node, "sm-resume", payload, self.handover_timeout)

        def answered(answer: dict[str, Any]) -> dict[str, Any] | None:
            state = answer.get("state")
            if state is not None and _home(previd) == self.node:
                self._moved.pop(previd, None)  # back home
            return state

        def unreachable(failure: Failure) -> None:
            failure.trap(NodeUnreachable)
            log.info("cannot resume {id}: {why}", id=previd, why=failure.getErrorMessage())
            return None

        return d.addCallbacks(answered, unreachable)

    def adopt(self, stream: XMPPStream, state: dict[str, Any], previd: str) -> StreamManagement:
        """Bind here, on *stream*'s connection, the session another node handed over."""
        session = stream.transport.make_session(JID(state["full"]))
        if state.get("presence"):
            session.presence = self._parse(state["presence"])
        session.priority = int(state.get("priority", 0))
        session.directed = set(state.get("directed") or ())
        session.state.update(state.get("state") or {})
        sm = StreamManagement(session, stream, self, resumable=True, timeout=float(state.get("timeout", 0)))
        sm.id = previd
        sm.handled, sm.sent, sm.acked = int(state["handled"]), int(state["sent"]), int(state["acked"])
        for text, message in state.get("queue") or ():
            data = text.encode("utf-8")
            sm.queue.append((data, self._parse(message) if message else None))
            sm.queued_bytes += len(data)
        session.sm = sm
        self._sessions[previd] = sm
        self.router.bind(session)
        return sm

    def _parse(self, text: str) -> domish.Element | None:
        try:
            return parse_document(text.encode("utf-8"), self.max_stanza)
        except StreamError:
            return None

    def _asked_to_resume(self, payload: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        """Another node's client resumes a session this node holds, or whose id it made (§5)."""
        previd, to = str(payload.get("id", "")), str(payload.get("to", ""))
        sm = self.find(previd, str(payload.get("bare", "")))
        if sm is not None:
            if sm.session.transport_name != payload.get("transport"):
                return defer.succeed({"error": "item-not-found"})
            if _home(previd) == self.node:
                self._moved[previd] = to
            log.info("{jid} is resumed on node {node}", jid=sm.session.full, node=to)
            return defer.succeed({"state": sm.hand_over()})
        holder = self._moved.get(previd) if _home(previd) == self.node else None
        if holder is None or holder == to:
            return defer.succeed({"error": "item-not-found"})
        d = self.cluster.request(holder, "sm-resume", payload, self.handover_timeout)

        def answered(answer: dict[str, Any]) -> dict[str, Any]:
            if "state" in answer:
                self._moved[previd] = to
            return answer

        return d.addCallbacks(answered, lambda _: {"error": "item-not-found"})

    def _ended_elsewhere(self, payload: dict[str, Any]) -> defer.Deferred[dict[str, Any]]:
        previd = str(payload.get("id", ""))
        if self._moved.get(previd) == payload.get("node"):
            del self._moved[previd]
        return defer.succeed({})

    def __len__(self) -> int:
        return len(self._sessions)
