"""XMPP over WebSocket (RFC 7395), for the pane and web clients (Converse.js).

Served on the ``[http]`` listener at ``[http] websocket_path``, through
autobahn's Twisted server (it negotiates the subprotocol and bounds frames and
messages). Implements:

- §3.1 the handshake: the client must offer the ``xmpp`` subprotocol, which
  is echoed; otherwise the upgrade is refused (HTTP 400). A browser's
  ``Origin`` must be this listener's own (its ``Host``) or one of
  ``[http] cors_origins`` (``*``: any); clients that send none (not a
  browser) are not asked. The credentials are SASL's inside the stream, not
  cookies, so the check keeps other sites' pages from using a visitor's
  network position, not from stealing a session.
- §3.3 framing: ``<open/>`` and ``<close/>`` of
  ``urn:ietf:params:xml:ns:xmpp-framing`` instead of the stream header;
  every WebSocket text message is one whole element, parsed by the same
  restricted parser as c2s (RFC 6120 §11, ``[limits]`` sizes and depth:
  ``max_stanza_size_preauth`` until SASL succeeds); stanzas are written with
  their ``jabber:client`` namespace, stream-level elements with the
  ``stream`` prefix declared on each (§3.3.3). §3.3.2: after SASL the client
  opens again. Binary messages, more than one element in a message, bad XML:
  the stream error of RFC 6120 §4.9, ``<close/>``, then the WebSocket close.
- §3.6 closing: the client's ``<close/>`` is answered with ``<close/>`` and
  ends the session; a connection that drops without it leaves a session with
  stream management (XEP-0198) waiting to be resumed, as on c2s;
  :meth:`WebSocketConnection.see_other` closes with ``see-other-uri``
  (§3.6.1) for a node that drains.
- §3.7 TLS is the listener's (wss through a proxy that ends TLS, or
  ``[http] tls``): never STARTTLS. A connection counts as encrypted exactly
  as a BOSH request does (``peer_of``).

Everything the stream means is :class:`~chatgate.transports.stream.XMPPStream`,
shared with c2s and BOSH; limits are c2s's: the same token buckets for bytes
and stanzas (a fast sender is read more slowly), ``max_output_buffer`` for a
client that stops reading, ``auth_timeout`` and the per-address count of
unauthenticated connections shared with c2s and BOSH.
"""

from __future__ import annotations

import secrets
from collections import deque
from typing import Any
from urllib.parse import urlsplit

from autobahn.twisted.resource import WebSocketResource
from autobahn.twisted.websocket import WebSocketServerFactory, WebSocketServerProtocol
from autobahn.websocket.types import ConnectionDeny, ConnectionRequest
from autobahn.websocket.xormasker import create_xor_masker
from twisted.logger import Logger
from twisted.web import server
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.auth.sasl import Authenticator
from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.transports.bosh import Peer, peer_of
from chatgate.transports.ratelimit import Backlog, TokenBucket
from chatgate.transports.sm import Resumption
from chatgate.transports.stream import (
    STREAMS_NS,
    ConnectionSession,
    StreamTransport,
    XMPPStream,
    stream_error,
)
from chatgate.xml import StreamError, StreamParser, escape_attribute
from chatgate.xml import serialize as serialize_xml

FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"
SUBPROTOCOL = "xmpp"
#: seconds a closed stream's connection may take to flush before it is cut
CLOSE_GRACE = 10.0
#: what the WebSocket layer lets through beyond the largest stanza (the framing's own bytes)
_SLACK = 1024
_STREAM_PREFIX = {STREAMS_NS: "stream"}
_OPEN = WebSocketServerProtocol.STATE_OPEN
#: client frames up to this size are unmasked in Python, larger ones by autobahn's masker
_SMALL_FRAME = 2048

log = Logger()


def serialize(element: domish.Element) -> bytes:
    """One element as a WebSocket message: a document of its own (§3.3.3)."""
    text = serialize_xml(element, "", _STREAM_PREFIX)
    if element.uri == STREAMS_NS:  # <stream:features/>, <stream:error/>: the prefix declared on each
        name = f"<stream:{element.name}"
        text = f"{name} xmlns:stream='{STREAMS_NS}'" + text[len(name):]
    return text.encode("utf-8")


class MessageParser:
    """The one element of each WebSocket message (§3.3.1), parsed as c2s parses a
    stanza (restricted XML, size and depth).

    One restricted parser serves every connection of a listener (a parser for
    each message cost as much as parsing it, and one kept by each connection
    would weigh on every idle session): the messages are parsed one after
    the other as children of a wrapper of ours, as stanzas are inside a
    stream, so a second element or text around the one shows as it would on
    c2s. After each message's bytes the parser is given an empty element
    whose name is a secret of the parser's: only if that mark comes out as
    the next element after exactly one of the client's did the message hold
    one whole element and leave nothing open (a tag, a comment, a CDATA
    section) that would run into the next message. A message that fails
    leaves the parser behind, and a new one is made; so is one after
    :data:`RENEW_AFTER` bytes, so that what expat remembers of the names it
    saw stays bounded."""

    #: bytes one parser is given before it is replaced
    RENEW_AFTER = 1 << 24

    __slots__ = ("max_depth", "_found", "_mark", "_mark_name", "_parser", "_fed")

    def __init__(self, max_depth: int) -> None:
        self.max_depth = max_depth
        self._found: list[domish.Element] = []
        self._parser: StreamParser | None = None
        self._mark = b""
        self._mark_name = ""
        self._fed = 0

    def _new(self) -> StreamParser:
        self._found.clear()
        self._mark_name = "m" + secrets.token_hex(8)
        self._mark = f"<{self._mark_name}/>".encode()
        self._fed = 0
        parser = StreamParser(lambda root: None, self._found.append, self._ended, 64, self.max_depth + 1)
        parser.feed(b"<m>")
        self._parser = parser
        return parser

    def parse(self, payload: bytes, max_size: int) -> domish.Element:
        """The element *payload* holds; raises StreamError."""
        if len(payload) > max_size:
            raise StreamError("policy-violation", f"stanza larger than {max_size} bytes")
        parser = self._parser
        if parser is None or self._fed > self.RENEW_AFTER:
            parser = self._new()
        self._fed += len(payload)
        parser.max_stanza_size = max_size + 64 + len(self._mark)
        found = self._found
        try:
            parser.feed(payload + self._mark)
        except BaseException:  # the parser closed itself
            self._parser = None
            raise
        if len(found) != 2 or found[1].name != self._mark_name or found[1].uri:
            self._parser = None
            parser.close()
            raise StreamError("not-well-formed", "one element per WebSocket message (RFC 7395 §3.3.1)")
        element = found[0]
        found.clear()
        return element

    @staticmethod
    def _ended() -> None:
        raise StreamError("not-well-formed", "one element per WebSocket message (RFC 7395 §3.3.1)")


def parse_message(payload: bytes, max_size: int, max_depth: int) -> domish.Element:
    """The one element a WebSocket message holds (§3.3.1), parsed as c2s parses a
    stanza (restricted XML, size and depth); raises StreamError."""
    return MessageParser(max_depth).parse(payload, max_size)


class WebSocketSession(ConnectionSession):
    transport_name = "websocket"

    def serialize(self, element: domish.Element) -> bytes:
        return serialize(element)

    def from_text(self, text: str) -> bytes | None:
        return text.encode("utf-8")  # the plain serialization is a document already

    def redirect(self, host: str, uri: str) -> None:
        """§3.6.1: a WebSocket client is sent to a URI (a resumable session may be resumed there)."""
        if uri and not self.closed and not self.detached:
            self.closed = True
            self.connection.see_other(uri)  # type: ignore[attr-defined]
        else:
            super().redirect(host, uri)


class WebSocketConnection(StreamTransport):
    """One client's XMPP stream over one WebSocket (its autobahn protocol is
    :class:`XMPPWebSocketProtocol`, which hands over messages and events)."""

    name = "websocket"
    can_starttls = False

    def __init__(self, factory: WebSocketFactory, protocol: XMPPWebSocketProtocol, peer: Peer) -> None:
        self.factory = factory
        self.protocol = protocol
        self.settings = factory.settings
        self.clock = factory.clock
        self.peer, self.address, self.secure = peer.label, peer.address, peer.secure
        self.stream = XMPPStream(factory.router, factory.authenticator, factory.settings, self, factory.resumption)
        limits = self.settings.limits
        self._max_size = limits.max_stanza_size_preauth
        self._parser: MessageParser = factory.parser
        self._bytes = TokenBucket(limits.read_rate, limits.read_burst, self.clock)
        self._stanzas = TokenBucket(limits.stanza_rate, limits.stanza_burst, self.clock)
        self._inbox: deque[bytes] = deque()  # messages received, not handled yet (while slowed down)
        self._reading_paused = False
        self._opened = False  # the client's <open/> of the current stream came
        self._closing = False
        self._lost = False
        self._preauth = False
        self._backlog = Backlog(self.settings.limits.max_output_buffer, self.clock)
        self._auth_timer: Any = None
        self._abort_timer: Any = None

    def backlog(self) -> int:
        """Bytes waiting beyond the transport's buffer (Session.backlog)."""
        return self._backlog.waiting

    # -- from the protocol

    def opened(self) -> None:
        """The WebSocket is open (after the handshake)."""
        transport = self.protocol.transport
        if getattr(transport, "producer", None) is not None:
            transport.unregisterProducer()  # the HTTP channel's, which handed this connection over
        transport.registerProducer(self._backlog, True)
        self._auth_timer = self.clock.callLater(self.settings.xmpp.auth_timeout, self.fail,
                                                "connection-timeout", "Not authenticated in time")
        preauth = self.factory.preauth
        if preauth.get(self.address, 0) >= self.settings.limits.max_preauth_per_address:
            self.fail("policy-violation", "Too many unauthenticated connections from your address")
            return
        preauth[self.address] = preauth.get(self.address, 0) + 1
        self._preauth = True

    def received(self, payload: bytes, binary: bool) -> None:
        if self._closing:
            return
        if binary:
            self.fail("unsupported-encoding", "XMPP over WebSocket is text (RFC 7395 §3.2)")
            return
        if self.stream.session is not None:
            self.stream.session.last_active = self.clock.seconds()
        self._inbox.append(payload)
        self._handle()

    def _handle(self) -> None:
        """Handle what was received, a message at a time, until the rate limits say wait."""
        while self._inbox and not self._reading_paused and not self._closing:
            payload = self._inbox.popleft()
            self._slow_down(max(self._bytes.take(len(payload)), self._stanzas.take(1)))
            try:
                element = self._parser.parse(payload, self._max_size)
            except StreamError as error:
                self.fail(error.condition, error.text)
                return
            try:
                self._element(element)
            except Exception:
                log.failure("websocket input from {peer}", peer=self.peer)
                self.fail("internal-server-error")

    def _element(self, element: domish.Element) -> None:
        if element.uri == FRAMING_NS and element.name == "open":
            self._open(element)
        elif element.uri == FRAMING_NS and element.name == "close":
            self._client_closed()
        elif not self._opened:
            self.fail("not-authorized", "Open the stream first (RFC 7395 §3.4)")
        elif not element.uri:
            self.fail("invalid-namespace", "Stanzas are qualified by jabber:client (RFC 7395 §3.3.3)")
        else:
            self.stream.receive(element)

    def _open(self, header: domish.Element) -> None:
        condition = self._check_open(header)
        if condition is not None:
            self.fail(condition)
            return
        self.stream.domain = header["to"].lower()
        self._send_open()
        self.send(self.stream.features())

    def _check_open(self, header: domish.Element) -> str | None:
        """RFC 6120 §4.7 and RFC 7395 §3.4: the stream error for a bad <open/>, or None."""
        if self._opened:
            return "not-authorized"  # a second <open/> comes only after a restart
        to = header.getAttribute("to", "").lower()
        if not self.factory.router.domains.is_hosted(to):
            return "host-unknown"
        if self.stream.domain and to != self.stream.domain:
            return "host-unknown"
        version = header.getAttribute("version", "").split(".")
        if not version[0].isdigit() or int(version[0]) < 1:
            return "unsupported-version"
        return None

    def _send_open(self) -> None:
        self._opened = True
        domain = self.stream.domain
        from_attr = f" from='{escape_attribute(domain)}'" if domain else ""
        self._message(f"<open xmlns='{FRAMING_NS}' id='{secrets.token_hex(8)}'{from_attr} version='1.0'"
                      f" xml:lang='en'/>".encode())

    def _client_closed(self) -> None:
        """§3.6: the client closes the stream: answered, and the session ends."""
        if self._closing:
            return
        self._closing = True
        self._message(f"<close xmlns='{FRAMING_NS}'/>".encode())
        self.protocol.sendClose(1000)
        self._ended(lost=False)

    def connection_lost(self) -> None:
        """The WebSocket or its TCP connection is gone."""
        self._cancel(self._auth_timer)
        self._cancel(self._abort_timer)
        self._leave_preauth()
        self._inbox.clear()
        self._closing = True
        self.stream.ended(lost=True)  # no-op when the stream ended already

    # -- flow control (as c2s)

    def _slow_down(self, seconds: float) -> None:
        if seconds > 0 and not self._reading_paused and not self._closing:
            self._reading_paused = True
            self.protocol.transport.pauseProducing()
            self.clock.callLater(seconds, self._resume_reading)

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if not self._closing:
            self.protocol.transport.resumeProducing()
            self._handle()

    def write(self, data: bytes) -> None:
        """Send one element as a message, closing the stream if the client stopped reading."""
        if self._closing:
            return
        if self._backlog.over(len(data)):
            self.fail("policy-violation", "Too much data waiting; the client does not read")
            self.protocol.transport.abortConnection()
            return
        self._message(data)

    def _message(self, data: bytes) -> None:
        self.protocol.send_text(data)

    # -- StreamTransport

    def send(self, element: domish.Element) -> None:
        self.write(serialize(element))

    def fail(self, condition: str, text: str | None = None, application: domish.Element | None = None) -> None:
        """A stream error, ``<close/>``, and the WebSocket closed (RFC 7395 §3.6)."""
        if self._closing:
            return
        if not self._opened:
            self._send_open()
        self._lost = condition == "connection-timeout"
        self._message(serialize(stream_error(condition, text, application)))
        if condition != "system-shutdown":
            log.info("stream error {condition} for {peer} (websocket)", condition=condition, peer=self.peer)
        self._close_with(f"<close xmlns='{FRAMING_NS}'/>")

    def too_large(self, limit: int) -> None:
        """A message over the WebSocket's limit: the stream error; autobahn closes (1009)."""
        if not self._closing:
            self._message(serialize(stream_error("policy-violation", f"stanza larger than {limit} bytes")))
            self._message(f"<close xmlns='{FRAMING_NS}'/>".encode())
            self._closing = True
            self._ended(lost=False)

    def close(self) -> None:
        """Close the stream and the WebSocket without an error."""
        if not self._closing:
            self._close_with(f"<close xmlns='{FRAMING_NS}'/>")

    def see_other(self, uri: str) -> None:
        """Send the client to another endpoint (§3.6.1): a node that drains.
        A session with stream management may be resumed there."""
        if not self._closing:
            self._lost = True
            self._close_with(f"<close xmlns='{FRAMING_NS}' see-other-uri='{escape_attribute(uri)}'/>")

    def _close_with(self, close: str) -> None:
        self._message(close.encode())
        self._closing = True
        self.protocol.sendClose(1000)
        self._ended(lost=self._lost)
        # a peer that never answers the closing handshake would keep the connection forever
        self._abort_timer = self.clock.callLater(CLOSE_GRACE, self._abort)

    def _abort(self) -> None:
        transport = self.protocol.transport
        if transport is not None:
            transport.abortConnection()

    def _ended(self, lost: bool) -> None:
        self._cancel(self._auth_timer)
        self._leave_preauth()
        self.stream.ended(lost=lost)

    def start_tls(self) -> None:
        raise NotImplementedError("XMPP over WebSocket has no STARTTLS: TLS is the listener's (RFC 7395 §3.7)")

    def restart(self, authenticated: bool) -> None:
        """§3.3.2: after SASL the client sends <open/> again."""
        self._opened = False
        if authenticated:
            self._cancel(self._auth_timer)
            self._leave_preauth()
            self._max_size = self.settings.limits.max_stanza_size

    def make_session(self, jid: JID) -> Session:
        session = WebSocketSession(jid, self)
        session.last_active = self.clock.seconds()
        return session

    # -- helpers

    def _leave_preauth(self) -> None:
        if self._preauth:
            self._preauth = False
            count = self.factory.preauth[self.address] - 1
            if count:
                self.factory.preauth[self.address] = count
            else:
                del self.factory.preauth[self.address]

    @staticmethod
    def _cancel(timer: Any) -> None:
        if timer is not None and timer.active():
            timer.cancel()


def _unmask(mask: bytes, payload: bytes) -> bytes:
    """A client frame's payload unmasked (RFC 6455 §5.3)."""
    size = len(payload)
    if size > _SMALL_FRAME:  # autobahn's masker (C) is quicker on large payloads
        return create_xor_masker(mask, size).process(payload)
    key = (mask * ((size >> 2) + 1))[:size]
    return (int.from_bytes(payload, "little") ^ int.from_bytes(key, "little")).to_bytes(size, "little")


class XMPPWebSocketProtocol(WebSocketServerProtocol):
    """autobahn's side of one WebSocket: the handshake checks, then every
    event handed to its :class:`WebSocketConnection`.

    autobahn reads and writes every frame through several layers of Python
    (a frame header object, a masker made per frame, message assembly, the
    event hooks, debug log calls that format their arguments); for a chat
    message that was about as much work as the stanza's own. The frames of
    the common case take a shorter path here, with the same checks:
    :meth:`processData` reads a whole, unfragmented, masked text frame (what
    browsers send for a stanza) at the front of the buffer itself, and
    :meth:`send_text` writes one unfragmented text frame. Everything else
    (control frames, fragments, frames not arrived whole, binary, oversized
    or invalid frames, a closing connection) goes through autobahn as before.
    autobahn's traffic counters are not kept on the short path (chatgate does
    not enable or read them)."""

    connection: WebSocketConnection | None = None
    #: who asked for the upgrade (set by the factory from the HTTP request)
    client = Peer("?", "?", False)

    def dataReceived(self, data: bytes) -> None:
        self._dataReceived(data)  # autobahn's, without its debug line formatted for every read

    def processData(self) -> bool:
        if (self.current_frame is not None or self.inside_message or self.state != _OPEN or self.failedByMe
                or self._perMessageCompress is not None or self.logFrames or self.trackedTimings
                or not self.requireMaskedClientFrames or not self.applyMask):
            return super().processData()
        data = self.data
        buffered = len(data)
        # FIN, no RSV bits, text; masked: anything else is autobahn's to judge
        if buffered < 6 or data[0] != 0x81 or data[1] < 0x80:
            return super().processData()
        size = data[1] & 0x7F
        if size < 126:
            start = 6
        elif size == 126 and buffered >= 8:
            size = (data[2] << 8) | data[3]
            start = 8
            if size < 126:  # not the minimal length encoding
                return super().processData()
        else:
            return super().processData()
        end = start + size
        limit = self.maxFramePayloadSize
        if end > buffered or (0 < limit < size) or (0 < self.maxMessagePayloadSize < size):
            return super().processData()
        payload = _unmask(data[start - 4:start], data[start:end])
        self.data = data[end:]
        if self.utf8validateIncoming:
            try:
                payload.decode("utf-8")
            except UnicodeDecodeError as error:
                if self._invalid_payload(f"encountered invalid UTF-8 while processing text message "
                                         f"at payload octet index {error.start}"):
                    return False
                return len(self.data) > 0
        if self.autoPingTimeoutCall and self.autoPingRestartOnAnyTraffic:
            self._cancelAutoPingTimeoutCall()
        self.onMessage(payload, False)
        return len(self.data) > 0

    def send_text(self, data: bytes) -> None:
        """*data* as one text message (one frame)."""
        size = len(data)
        if (self.state != _OPEN or self.send_queue or self._perMessageCompress is not None or self.logFrames
                or self.logOctets or self.trackedTimings or self.maskServerFrames
                or 0 < self.maxMessagePayloadSize < size or 0 < self.autoFragmentSize < size):
            self.sendMessage(data, isBinary=False)
            return
        if size < 126:
            head = bytes((0x81, size))
        elif size < 0x10000:
            head = bytes((0x81, 126, size >> 8, size & 0xFF))
        else:
            head = b"\x81\x7f" + size.to_bytes(8, "big")
        self.transport.write(head + data)

    def onConnect(self, request: ConnectionRequest) -> str:
        if SUBPROTOCOL not in request.protocols:
            raise ConnectionDeny(400, "XMPP over WebSocket needs the subprotocol 'xmpp' (RFC 7395 §3.1)")
        if not self.factory.origin_allowed(request.origin, request.headers.get("host", "")):
            raise ConnectionDeny(403, "This origin may not use this service")
        return SUBPROTOCOL

    def onOpen(self) -> None:
        self.connection = WebSocketConnection(self.factory, self, self.client)
        self.peer = self.connection.peer
        try:
            self.connection.opened()
        except Exception:  # autobahn would keep it to itself
            log.failure("opening a WebSocket stream for {peer}", peer=self.peer)
            self.dropConnection(abort=True)

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        if self.connection is not None:
            self.connection.received(payload, isBinary)

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        if self.connection is not None:
            self.connection.connection_lost()

    def _max_message_size_exceeded(self, msg_size: int, max_msg_size: int, reason: str) -> None:
        # the XMPP stream error first (as on c2s), then autobahn's own close (1009)
        if self.connection is not None:
            self.connection.too_large(max_msg_size - _SLACK)
        super()._max_message_size_exceeded(msg_size, max_msg_size, reason)


class WebSocketFactory(WebSocketServerFactory):
    """Makes the protocol of each WebSocket; one for the listener."""

    protocol = XMPPWebSocketProtocol

    def __init__(self, router: Router, authenticator: Authenticator, settings: Settings, clock: Any = None,
                 preauth: dict[str, int] | None = None, resumption: Resumption | None = None) -> None:
        super().__init__()
        if clock is None:
            from twisted.internet import reactor as clock
        self.router = router
        self.authenticator = authenticator
        self.settings = settings
        self.clock = clock
        self.preauth: dict[str, int] = preauth if preauth is not None else {}
        self.resumption = resumption
        #: the parser of every connection's messages
        self.parser = MessageParser(settings.limits.max_depth)
        self.origins = frozenset(o.lower() for o in settings.http.cors_origins)
        self._next_peer: Peer | None = None
        limit = settings.limits.max_stanza_size + _SLACK
        # per message and per frame; autoFragmentSize: our messages go out whole (one stanza each)
        self.setProtocolOptions(maxMessagePayloadSize=limit, maxFramePayloadSize=limit,
                                openHandshakeTimeout=settings.xmpp.auth_timeout, closeHandshakeTimeout=5,
                                failByDrop=False)

    def origin_allowed(self, origin: str | None, host: str) -> bool:
        """Whether a page of *origin* may open a WebSocket here (*host*: the Host header)."""
        if not origin:
            return True  # not a browser
        if "*" in self.origins or origin.lower() in self.origins:
            return True
        return urlsplit(origin).netloc.lower() == (host or "").lower()

    def peer_is(self, peer: Peer) -> None:
        """Who the next connection comes from (the HTTP request that upgrades, read just before)."""
        self._next_peer = peer

    def buildProtocol(self, addr: Any) -> XMPPWebSocketProtocol:
        protocol = super().buildProtocol(addr)
        if self._next_peer is not None:
            protocol.client, self._next_peer = self._next_peer, None
        return protocol


class WebSocketEndpoint(WebSocketResource):
    """The ``[http] websocket_path`` resource: the upgrade's client address
    and encryption are read as for BOSH (``[http] trusted_proxies``)."""

    def __init__(self, factory: WebSocketFactory) -> None:
        super().__init__(factory)
        self.factory = factory

    def render(self, request: server.Request) -> Any:
        self.factory.peer_is(peer_of(request, self.factory.settings.http.trusted_proxies))
        return super().render(request)
