"""The c2s transport: XMPP over TCP for third-party clients (RFC 6120).

Owns the bytes: the restricted XML parser (§11), the stream header and stream
errors (§4.7, §4.9), STARTTLS (§5) or direct TLS (XEP-0368), whitespace
keepalives (§4.6.1). Everything the stream means is in
:mod:`chatgate.transports.stream`, shared with BOSH.

It also keeps one client from hurting others (RFC 6120 §13.12): a client
sending too fast is read more slowly (token buckets for bytes and stanzas,
the transport paused meanwhile); one that stops reading is closed once
``max_output_buffer`` bytes wait for it (the connection is registered as the
transport's producer, so Twisted says when its buffer is full; what is written
in the reactor turn the buffer filled is one burst and not counted, since
nothing was sent yet: a login in a large domain gets its roster and everyone's
presence at once); and each address may hold only a few unauthenticated
connections.
"""

from __future__ import annotations

import secrets
from typing import Any

from twisted.internet import protocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.auth.sasl import Authenticator
from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import QUALIFIED_MESSAGE, Session, is_qualified_message
from chatgate.stanza import CLIENT_NS
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

XML_NS = "http://www.w3.org/XML/1998/namespace"
_PREFIXES = {STREAMS_NS: "stream"}
#: seconds a closed stream's connection may take to flush before it is cut
CLOSE_GRACE = 10.0
#: bytes parsed between two looks at the rate limits
PARSE_SLICE = 4096
#: XMPPStream.features_state() -> the features serialized; a handful of states
#: at most (stage, STARTTLS offered/required, mechanisms), so never pruned
_FEATURES: dict[tuple[object, ...], bytes] = {}

log = Logger()


def serialize(element: domish.Element) -> bytes:
    """One first-level element as it goes on a jabber:client stream."""
    return serialize_xml(element, CLIENT_NS, _PREFIXES).encode("utf-8")


class C2SSession(ConnectionSession):
    transport_name = "c2s"

    def serialize(self, element: domish.Element) -> bytes:
        return serialize(element)

    def from_text(self, text: str) -> bytes | None:
        # serialize() with no default namespace names the root's namespace; on the stream it is the default one
        if not is_qualified_message(text):
            return None
        return ("<message" + text[len(QUALIFIED_MESSAGE):]).encode("utf-8")


class C2SConnection(protocol.Protocol, StreamTransport):
    """One TCP connection from a client."""

    name = "c2s"

    def __init__(self, factory: C2SFactory) -> None:
        self.factory = factory
        self.settings: Settings = factory.settings
        self.secure = factory.direct_tls
        self.can_starttls = not factory.direct_tls
        self.stream = XMPPStream(factory.router, factory.authenticator, factory.settings, self, factory.resumption)
        self.parser: StreamParser | None = None
        self._header_sent = False
        self._closing = False
        self._lost = False  # closed because the client stopped answering: its session may be resumed
        self._auth_timer: Any = None
        self._abort_timer: Any = None
        self._preauth = False  # counted among its address's unauthenticated connections
        self._backlog = Backlog(self.settings.limits.max_output_buffer, factory.clock)
        self._reading_paused = False
        self._inbox = bytearray()  # received, not parsed yet (only while slowed down)
        limits = self.settings.limits
        self._bytes = TokenBucket(limits.read_rate, limits.read_burst, factory.clock)
        self._stanzas = TokenBucket(limits.stanza_rate, limits.stanza_burst, factory.clock)

    def backlog(self) -> int:
        """Bytes waiting beyond the transport's buffer (Session.backlog)."""
        return self._backlog.waiting

    # -- Twisted protocol

    def connectionMade(self) -> None:
        address = self.transport.getPeer()
        self.address = getattr(address, "host", "?")
        self.peer = f"{self.address}:{getattr(address, 'port', '?')}"
        self.transport.registerProducer(self._backlog, True)
        self._new_parser(authenticated=False)
        self._auth_timer = self.factory.clock.callLater(
            self.settings.xmpp.auth_timeout, self.fail, "connection-timeout", "Not authenticated in time"
        )
        preauth = self.factory.preauth
        if preauth.get(self.address, 0) >= self.settings.limits.max_preauth_per_address:
            self.fail("policy-violation", "Too many unauthenticated connections from your address")
            return
        preauth[self.address] = preauth.get(self.address, 0) + 1
        self._preauth = True

    def dataReceived(self, data: bytes) -> None:
        if self.parser is None:
            return
        if self.stream.session is not None:
            self.stream.session.last_active = self.factory.clock.seconds()
        self._inbox += data
        self._parse()

    def _parse(self) -> None:
        """Parse what was received, a slice at a time, until the rate limits
        say wait: a burst read in one go is still handled at the allowed pace."""
        while self._inbox and self.parser is not None and not self._reading_paused:
            piece = bytes(self._inbox[:PARSE_SLICE])
            del self._inbox[:PARSE_SLICE]
            self._slow_down(self._bytes.take(len(piece)))
            try:
                self.parser.feed(piece)
            except StreamError as error:
                self.fail(error.condition, error.text)
            except Exception:
                log.failure("c2s input from {peer}", peer=self.peer)
                self.fail("internal-server-error")

    def connectionLost(self, reason: Failure = protocol.connectionDone) -> None:
        self._cancel_auth_timer()
        if self._abort_timer is not None and self._abort_timer.active():
            self._abort_timer.cancel()
        self._leave_preauth()
        if self.parser is not None:
            self.parser.close()
            self.parser = None
        self.stream.ended(lost=True)

    # -- parser callbacks

    def _on_start(self, header: domish.Element) -> None:
        condition = self._check_header(header)
        if condition is not None:
            self.fail(condition)
            return
        self.stream.domain = header["to"].lower()
        self._send_header(self._features())

    def _check_header(self, header: domish.Element) -> str | None:
        """RFC 6120 §4.7, §4.8: the stream error for a bad header, or None."""
        if header.uri != STREAMS_NS or header.name != "stream":
            return "invalid-namespace"
        if header.defaultUri != CLIENT_NS:
            return "invalid-namespace"
        to = header.getAttribute("to", "").lower()
        if not self.factory.router.domains.is_hosted(to):
            return "host-unknown"
        if self.stream.domain and to != self.stream.domain:
            return "host-unknown"  # a restarted stream must go to the same host
        version = header.getAttribute("version", "0.9").split(".")
        if not version[0].isdigit() or int(version[0]) < 1:
            return "unsupported-version"
        return None

    def _on_element(self, element: domish.Element) -> None:
        self._slow_down(self._stanzas.take(1))
        self.stream.receive(element)

    def _on_end(self) -> None:
        self.close()

    # -- flow control

    def _slow_down(self, seconds: float) -> None:
        """Stop reading for *seconds*: a fast sender is slowed, nothing dropped."""
        if seconds > 0 and not self._reading_paused and not self._closing:
            self._reading_paused = True
            self.transport.pauseProducing()
            self.factory.clock.callLater(seconds, self._resume_reading)

    def _resume_reading(self) -> None:
        self._reading_paused = False
        if not self._closing:
            self.transport.resumeProducing()
            self._parse()

    def write(self, data: bytes) -> None:
        """Write to the client, closing the stream if it stopped reading."""
        if self._closing:
            return
        if self._backlog.over(len(data)):
            self.fail("policy-violation", "Too much data waiting; the client does not read")
            self.transport.abortConnection()  # it would not read the rest either
            return
        self.transport.write(data)

    # -- StreamTransport

    def send(self, element: domish.Element) -> None:
        self.write(serialize(element))

    def fail(self, condition: str, text: str | None = None, application: domish.Element | None = None) -> None:
        """Send a stream error and close (RFC 6120 §4.9.1.1)."""
        if self._closing:
            return
        if not self._header_sent:
            self._send_header()
        self._lost = condition == "connection-timeout"
        self.transport.write(serialize(stream_error(condition, text, application)))
        if condition != "system-shutdown":
            log.info("stream error {condition} for {peer}", condition=condition, peer=self.peer)
        self.close()

    def close(self) -> None:
        """Close the stream and the connection (RFC 6120 §4.4)."""
        if self._closing:
            return
        self._closing = True
        if self.parser is not None:
            self.parser.close()
            self.parser = None
        self.transport.write(b"</stream:stream>")
        # TLS shuts down only once no producer is registered.
        self.transport.unregisterProducer()
        self.transport.loseConnection()
        self.stream.ended(lost=self._lost)
        # A peer that never reads would keep a half-closed connection forever.
        self._abort_timer = self.factory.clock.callLater(CLOSE_GRACE, self.transport.abortConnection)

    def start_tls(self) -> None:
        self.transport.startTLS(self.factory.tls_context)
        self.secure = True

    def restart(self, authenticated: bool) -> None:
        # Bytes sent after <starttls/> or the SASL exchange, before the restart,
        # are never read into the new stream (no command injection).
        self._inbox.clear()
        if authenticated:
            self._cancel_auth_timer()
            self._leave_preauth()
        self._new_parser(authenticated)

    def make_session(self, jid: JID) -> Session:
        session = C2SSession(jid, self)
        session.last_active = self.factory.clock.seconds()
        return session

    # -- helpers

    def _new_parser(self, authenticated: bool) -> None:
        if self.parser is not None:
            self.parser.close()
        limits = self.settings.limits
        self.parser = StreamParser(
            self._on_start,
            self._on_element,
            self._on_end,
            limits.max_stanza_size if authenticated else limits.max_stanza_size_preauth,
            limits.max_depth,
        )
        self._header_sent = False

    def _features(self) -> bytes:
        """The serialized <stream:features/>, made once per distinct state."""
        state = self.stream.features_state()
        data = _FEATURES.get(state)
        if data is None:
            data = _FEATURES[state] = serialize(self.stream.features())
        return data

    def _send_header(self, then: bytes = b"") -> None:
        """Send our stream header (RFC 6120 §4.7), and *then* with it."""
        self._header_sent = True
        domain = self.stream.domain
        from_attr = f" from='{escape_attribute(domain)}'" if domain else ""
        self.transport.write(
            (
                "<?xml version='1.0'?>"
                f"<stream:stream xmlns='{CLIENT_NS}' xmlns:stream='{STREAMS_NS}'"
                f" id='{secrets.token_hex(8)}'{from_attr} version='1.0' xml:lang='en'>"
            ).encode() + then
        )

    def _leave_preauth(self) -> None:
        if self._preauth:
            self._preauth = False
            count = self.factory.preauth[self.address] - 1
            if count:
                self.factory.preauth[self.address] = count
            else:
                del self.factory.preauth[self.address]

    def _cancel_auth_timer(self) -> None:
        if self._auth_timer is not None and self._auth_timer.active():
            self._auth_timer.cancel()
        self._auth_timer = None


class C2SFactory(protocol.ServerFactory):
    """Makes a C2SConnection per client; one factory per listening port."""

    def __init__(self, router: Router, authenticator: Authenticator, settings: Settings,
                 tls_context: Any, direct_tls: bool = False, clock: Any = None,
                 preauth: dict[str, int] | None = None, resumption: Resumption | None = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.router = router
        self.authenticator = authenticator
        self.settings = settings
        self.tls_context = tls_context
        self.direct_tls = direct_tls
        self.clock = clock
        #: address -> its connections not authenticated yet; shared by every port
        self.preauth: dict[str, int] = preauth if preauth is not None else {}
        #: stream management (XEP-0198), shared by every port and transport that offers it
        self.resumption = resumption

    def buildProtocol(self, addr: Any) -> C2SConnection:
        return C2SConnection(self)
