"""The pure parts of XMPP over WebSocket (RFC 7395): one element per message,
what a message we send looks like, the Origin check, and the close that sends
a client to another node (§3.6.1)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest
from twisted.internet.task import Clock
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.transports.bosh import Peer
from chatgate.transports.websocket import (
    CLOSE_GRACE,
    FRAMING_NS,
    WebSocketConnection,
    WebSocketFactory,
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

    def sendMessage(self, data: bytes, isBinary: bool = False) -> None:
        assert not isBinary
        self.sent.append(data)

    def sendClose(self, code: int) -> None:
        self.closed.append(code)


def test_see_other_closes_with_the_uri_and_leaves_the_session_resumable() -> None:
    clock = Clock()
    factory = SimpleNamespace(settings=Settings(), clock=clock, router=None, authenticator=None,
                              resumption=None, preauth={})
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
