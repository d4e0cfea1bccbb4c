"""Session output: holds keep order, Addressed copies equal a per-recipient serialization."""

from __future__ import annotations

from twisted.internet.defer import Deferred
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.session import Addressed, Session
from chatgate.stanza import CLIENT_NS
from chatgate.transports import bosh, c2s
from chatgate.transports.bosh import BOSHSession
from chatgate.transports.c2s import C2SSession
from chatgate.xml import parse_document


class Wire(Session):
    """A session with a real transport's serializer, recording the bytes written."""

    def __init__(self, jid: str, serializer=c2s.serialize) -> None:
        super().__init__(JID(jid))
        self._serializer = serializer
        self.out: list[bytes] = []

    def serialize(self, element: domish.Element) -> bytes:
        return self._serializer(element)

    def _write(self, data: bytes) -> None:
        self.out.append(data)

    def _end(self, condition: str | None, text: str | None) -> None:
        pass


class BOSHWire(Wire):
    # Addressed keys its forms by the class's serialize, as transports define it
    def __init__(self, jid: str) -> None:
        super().__init__(jid, bosh.serialize)

    def serialize(self, element: domish.Element) -> bytes:
        return bosh.serialize(element)


def presence() -> domish.Element:
    element = domish.Element((CLIENT_NS, "presence"))
    element["from"] = "alice@example.com/desk"
    element.addElement("show", content="away")
    element.addElement("status", content="at <lunch> & 'back' soon")
    return element


def expected(session: Wire, element: domish.Element) -> bytes:
    element["to"] = session.full
    try:
        return session.serialize(element)
    finally:
        del element["to"]


def test_addressed_copy_is_the_serialization_addressed_to_each_session():
    element = presence()
    sessions = [Wire("bob@example.com/phone"), Wire("carol@example.com/a'b&<c>\"d"),
                BOSHWire("dave@example.com/pane"), BOSHWire("erin@example.com/x&y")]
    addressed = Addressed(element)
    for session in sessions:
        addressed.send(session)
    for session in sessions:
        assert session.out == [expected(session, element)]
    assert b"to='carol@example.com/a&apos;b&amp;&lt;c&gt;&quot;d'" in sessions[1].out[0]
    assert b"xmlns='jabber:client'" in sessions[2].out[0]  # BOSH's own form, not c2s's
    assert b"xmlns=" not in sessions[0].out[0]


def test_addressed_leaves_the_elements_to_as_it_was():
    element = presence()
    Addressed(element).send(Wire("bob@example.com/phone"))
    assert element.getAttribute("to") is None
    element["to"] = "alice@example.com"
    Addressed(element).send(Wire("bob@example.com/phone"))
    assert element["to"] == "alice@example.com"


def test_held_output_keeps_its_order_and_the_content_at_send_time():
    session = Wire("bob@example.com/phone")
    first, second = Deferred(), Deferred()
    element = presence()
    session.send(element)  # not held: out at once
    session.hold(first)
    element["to"] = "bob@example.com/phone"
    session.send(element)
    del element.children[:]  # changed after sending: the held copy is what was sent
    session.hold(second)
    Addressed(presence()).send(session)
    assert len(session.out) == 1
    second.callback(None)  # released out of order: waits for the first
    assert len(session.out) == 1
    first.callback(None)
    assert len(session.out) == 3
    assert b"<show>away</show>" in session.out[1]
    assert session.out[2] == expected(session, presence())


def test_closed_session_writes_nothing():
    session = Wire("bob@example.com/phone")
    session.closed = True
    session.send(presence())
    Addressed(presence()).send(session)
    assert session.out == []


def test_a_noted_text_becomes_each_transports_own_form():
    """What C2S and BOSH sessions make of a message's toXml() is what they would serialize."""
    messages = [
        "<message xmlns='jabber:client' to='a@example.com/x' type='chat' id='1'><body>hi &amp; &lt;é&gt;</body>"
        "<active xmlns='http://jabber.org/protocol/chatstates'/></message>",
        "<message xmlns='jabber:client' xmlns:foo='urn:foo' to='a@example.com'><foo:x foo:a='1'/>"
        "<body xml:lang='fr'>salut</body></message>",
        "<message xmlns='jabber:client' to='a@example.com'/>",
    ]
    for xml in messages:
        element = parse_document(xml.encode(), 1 << 16)
        text = element.toXml()
        assert C2SSession.from_text(None, text) == c2s.serialize(element)  # type: ignore[arg-type]
        assert BOSHSession.from_text(None, text) == bosh.serialize(element)  # type: ignore[arg-type]
    presence = domish.Element((CLIENT_NS, "presence")).toXml()
    assert C2SSession.from_text(None, presence) is None  # type: ignore[arg-type]
    assert BOSHSession.from_text(None, presence) is None  # type: ignore[arg-type]
    assert C2SSession.from_text(None, "<message xmlns='jabber:clientx'/>") is None  # type: ignore[arg-type]
