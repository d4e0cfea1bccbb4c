"""The pure parts of XMPP over WebSocket (RFC 7395): one element per message,
what a message we send looks like, the Origin check, and the close that sends
a client to another node (§3.6.1)."""

from __future__ import annotations

import os
from dataclasses import replace
from types import SimpleNamespace

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.transports.bosh import Peer
from chatgate.transports.websocket import (
    CLOSE_GRACE,
    FRAMING_NS,
    MessageParser,
    WebSocketConnection,
    WebSocketFactory,
    XMPPWebSocketProtocol,
    parse_message,
    serialize,
)
from chatgate.xml import StreamError


def test_one_element_per_message() -> None:
    element = parse_message(b"<message xmlns='jabber:client' to='a@b'><body>hi</body></message>", 1000, 10)
    assert (element.uri, element.name, str(element.body)) == ("jabber:client", "message", "hi")


@pytest.mark.parametrize("payload, condition", [
    (b"<a xmlns='jabber:client'/><b xmlns='jabber:client'/>", "not-well-formed"),  # two elements
    (b"text <a xmlns='jabber:client'/>", "bad-format"),  # text outside the element, as on c2s
    (b"<a xmlns='jabber:client'/> text", "bad-format"),
    (b"<a xmlns='jabber:client'>", "not-well-formed"),  # not whole
    (b"", "not-well-formed"),
    (b"<a xmlns='jabber:client'>" + b"x" * 2000 + b"</a>", "policy-violation"),  # over the size
])
def test_what_is_not_one_element_is_a_stream_error(payload: bytes, condition: str) -> None:
    with pytest.raises(StreamError) as raised:
        parse_message(payload, 1000, 10)
    assert raised.value.condition == condition


def test_one_parser_takes_one_whole_element_per_message() -> None:
    parser = MessageParser(10)
    for n in range(3):  # one parser for all messages of all connections
        text = f"<message xmlns='jabber:client' id='{n}'><body>hi {n}</body></message>".encode()
        element = parser.parse(text, 1000)
        assert (element.uri, element["id"], str(element.body), element.parent) == ("jabber:client", str(n),
                                                                                     f"hi {n}", None)
    first = parser._parser
    assert parser.parse(b"<a xmlns='jabber:client'>" + b"x" * 2000 + b"</a>", 3000).name == "a"  # logged in
    with pytest.raises(StreamError):
        parser.parse(b"<a xmlns='jabber:client'>" + b"x" * 2000 + b"</a>", 1000)
    assert parser._parser is first  # refused before parsing
    with pytest.raises(StreamError):
        parser.parse(b"<a xmlns='jabber:client'>", 1000)
    assert parser.parse(b"<b xmlns='jabber:client'/>", 1000).name == "b"  # a new parser after a failure
    assert parser._parser is not first
    parser._fed = MessageParser.RENEW_AFTER + 1
    second = parser._parser
    assert parser.parse(b"<c xmlns='jabber:client'/>", 1000).name == "c"
    assert parser._parser is not second


@pytest.mark.parametrize("payload, condition", [
    # what would stay open into the next message, with or without an element of the client's own
    (b"<a xmlns='jabber:client'/><!--", "not-well-formed"),
    (b"<a xmlns='jabber:client'/><s/><!--", "not-well-formed"),
    (b"<a xmlns='jabber:client'/></m><!--", "not-well-formed"),
    (b"<a xmlns='jabber:client'/><b", "not-well-formed"),
    (b"<a xmlns='jabber:client'/><?x", "not-well-formed"),
    (b"<a xmlns='jabber:client'><![CDATA[", "not-well-formed"),
    (b"<a xmlns='jabber:client'/></m>", "not-well-formed"),
    (b"<a xmlns='jabber:client'><!-- x --></a>", "restricted-xml"),
    (b"<?xml version='1.0'?><a xmlns='jabber:client'/>", "not-well-formed"),
    (b"<a xmlns='jabber:client'>\xff</a>", "not-well-formed"),
    (b"<a xmlns='jabber:client'>" + b"<b>" * 10 + b"</b>" * 10 + b"</a>", "policy-violation"),  # depth
])
def test_nothing_runs_into_the_next_message(payload: bytes, condition: str) -> None:
    parser = MessageParser(10)
    parser.parse(b"<presence xmlns='jabber:client'/>", 1000)
    with pytest.raises(StreamError) as raised:
        parser.parse(payload, 1000)
    assert raised.value.condition == condition
    assert parser.parse(b"<presence xmlns='jabber:client'/>", 1000).name == "presence"  # the next connection's


def test_stream_elements_declare_their_prefix() -> None:
    features = domish.Element(("http://etherx.jabber.org/streams", "features"))
    text = serialize(features).decode()
    assert text.startswith("<stream:features xmlns:stream='http://etherx.jabber.org/streams'"), text


def test_origin_is_the_listeners_own_or_allowed() -> None:
    defaults = Settings()
    settings = replace(defaults, http=replace(defaults.http, cors_origins=("https://mail.example.com",)))
    factory = WebSocketFactory(None, None, settings, Clock())
    assert factory.origin_allowed(None, "chat.example.com")  # not a browser
    assert factory.origin_allowed("https://chat.example.com", "chat.example.com")
    assert factory.origin_allowed("https://MAIL.example.com", "chat.example.com")
    assert not factory.origin_allowed("https://evil.example", "chat.example.com")


class Protocol:
    """What a WebSocketConnection uses of autobahn's protocol."""

    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed: list[int] = []
        self.transport = SimpleNamespace(aborted=False, producer=None, registerProducer=lambda *a: None)
        self.transport.abortConnection = lambda: setattr(self.transport, "aborted", True)

    def send_text(self, data: bytes) -> None:
        self.sent.append(data)

    def sendClose(self, code: int) -> None:
        self.closed.append(code)


def test_see_other_closes_with_the_uri_and_leaves_the_session_resumable() -> None:
    clock = Clock()
    factory = SimpleNamespace(settings=Settings(), clock=clock, router=None, authenticator=None,
                              resumption=None, preauth={}, parser=MessageParser(64))
    protocol = Protocol()
    connection = WebSocketConnection(factory, protocol, Peer("127.0.0.1:1", "127.0.0.1", True))
    ended: list[bool] = []
    connection.stream.ended = lambda lost: ended.append(lost)
    connection.see_other("wss://node2.example.com/xmpp-websocket?a=1&b='2'")
    assert protocol.sent == [f"<close xmlns='{FRAMING_NS}' see-other-uri="
                             "'wss://node2.example.com/xmpp-websocket?a=1&amp;b=&apos;2&apos;'/>".encode()]
    assert protocol.closed == [1000]
    assert ended == [True]  # as a dropped connection: stream management may resume it elsewhere
    connection.see_other("wss://elsewhere")  # once only
    connection.write(b"<message/>")  # nothing after the close
    assert len(protocol.sent) == 1
    clock.advance(CLOSE_GRACE + 1)  # a client that never completes the closing handshake is cut
    assert protocol.transport.aborted


class Recording(XMPPWebSocketProtocol):
    """The protocol, its messages recorded instead of handed to a stream."""

    def onOpen(self) -> None:
        self.got: list[tuple[bytes, bool]] = []

    def onMessage(self, payload: bytes, isBinary: bool) -> None:
        self.got.append((payload, isBinary))

    def onClose(self, wasClean: bool, code: int | None, reason: str | None) -> None:
        pass


def opened() -> tuple[Recording, StringTransport]:
    factory = WebSocketFactory(None, None, Settings(), Clock())
    factory.protocol = Recording
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    transport = StringTransport()
    protocol.makeConnection(transport)
    protocol.dataReceived(b"GET /xmpp-websocket HTTP/1.1\r\nHost: chat.example.com\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n")
    assert transport.value().startswith(b"HTTP/1.1 101 ")
    transport.clear()
    return protocol, transport


def frame(payload: bytes, opcode: int = 1, fin: bool = True, mask: bytes | None = None) -> bytes:
    """A client's frame (RFC 6455 §5.2), masked."""
    mask = os.urandom(4) if mask is None else mask
    size = len(payload)
    head = bytes((opcode | (0x80 if fin else 0),))
    if size < 126:
        head += bytes((0x80 | size,))
    elif size < 0x10000:
        head += bytes((0x80 | 126,)) + size.to_bytes(2, "big")
    else:
        head += bytes((0x80 | 127,)) + size.to_bytes(8, "big")
    return head + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload))


def server_frames(data: bytes) -> list[tuple[int, bytes]]:
    """The (opcode, payload) of each unmasked frame the server wrote."""
    frames = []
    while data:
        assert data[1] < 0x80  # never masked
        size, start = data[1] & 0x7F, 2
        if size == 126:
            size, start = int.from_bytes(data[2:4], "big"), 4
        elif size == 127:
            size, start = int.from_bytes(data[2:10], "big"), 10
        frames.append((data[0] & 0x0F, data[start:start + size]))
        data = data[start + size:]
    return frames


@pytest.mark.parametrize("chunk", [None, 1, 7])
def test_frames_are_read_whole_or_in_pieces(chunk: int | None) -> None:
    protocol, transport = opened()
    texts = [b"<presence/>", "<message><body>\u00e9t\u00e9 \U0001f600</body></message>".encode(), b"",
             b"x" * 125, b"y" * 126, b"z" * 3000, b"w" * 20000]
    data = b"".join(frame(text) for text in texts)
    data += frame(b"<message><bo", fin=False) + frame(b"ping", opcode=9) + frame(b"dy/></message>", opcode=0)
    data += frame(b"<iq/>", mask=b"\0\0\0\0")
    for at in range(0, len(data), chunk or len(data)):
        protocol.dataReceived(data[at:at + (chunk or len(data))])
    assert protocol.got == [(text, False) for text in texts] + [(b"<message><body/></message>", False),
                                                                 (b"<iq/>", False)]
    assert server_frames(transport.value()) == [(10, b"ping")]  # the pong


def test_a_text_frame_that_is_not_utf8_closes_the_websocket() -> None:
    protocol, transport = opened()
    protocol.dataReceived(frame(b"<presence/>") + frame(b"<message>\xff</message>") + frame(b"<iq/>"))
    assert protocol.got == [(b"<presence/>", False)]
    (opcode, payload), = server_frames(transport.value())
    assert (opcode, int.from_bytes(payload[:2], "big")) == (8, 1007)


def test_frames_autobahn_refuses_are_still_refused() -> None:
    for bad in (frame(b"<iq/>")[:1] + bytes((frame(b"<iq/>")[1] & 0x7F,)) + b"<iq/>",  # not masked
                bytes((0xC1,)) + frame(b"<iq/>")[1:],  # an RSV bit
                bytes((0x81, 0x80 | 126, 0, 5)) + b"\0\0\0\0<iq/>"):  # not the shortest length
        protocol, transport = opened()
        protocol.dataReceived(bad)
        assert protocol.got == []
        (opcode, payload), = server_frames(transport.value())
        assert (opcode, int.from_bytes(payload[:2], "big")) == (8, 1002)


@pytest.mark.parametrize("size", [0, 125, 126, 65535, 65536])
def test_send_text_writes_one_text_frame(size: int) -> None:
    protocol, transport = opened()
    protocol.maxMessagePayloadSize = 0
    text = b"a" * size
    protocol.send_text(text)
    written = transport.value()
    transport.clear()
    protocol.sendMessage(text, isBinary=False)  # autobahn's own, for comparison
    assert written == transport.value()
    assert server_frames(written) == [(1, text)]
