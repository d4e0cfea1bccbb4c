"""Session: one connected, bound resource, whatever its transport.

A transport (c2s, BOSH) authenticates and binds, then hands the router a
Session. From there on the router and the features use only what is here:
``jid``, ``send``, ``close``, ``presence``, ``priority``, ``hold``. With
stream management (XEP-0198) a session may outlive its connection for a
while (``detached``) and move to a new one (``move_to``).
Transports subclass it and implement :meth:`serialize` (the stanza as it goes
on their wire), :meth:`_write` (bytes out) and :meth:`_end`. ``send``
serializes at once, so the router may change an element after sending it.

:class:`Addressed` sends one stanza to many sessions, each copy addressed to
its session (presence broadcast, RFC 6121 §4.2.2): it is serialized once per
transport and each copy only splices in its ``to``, so a login in a domain of
N users costs N copies of bytes, not N serializations.

``hold(d)`` keeps everything sent to the session from going out until *d*
fires: the archive holds both parties' sessions until a message is on disk,
so no client ever sees a message that a crash could take out of history.
Holds are released in the order they were taken; output keeps its order.

``send(element, text)`` takes the element's plain serialization when one was
made already (a :class:`~chatgate.delivery.Delivery`'s text, which the archive
made): a transport turns it into its own form (:meth:`Session.from_text`) or
serializes the element as usual.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.xml import CLIENT_NS, escape_attribute

#: the keys of :attr:`Session.state` other nodes of a cluster mirror (a feature
#: that reads another session's state, as carbons does, names its key here)
SHARED_STATE = ("carbons", "muc", "pep")


#: what a session that never held anything has for its holds: empty, shared, never changed
_NO_HOLDS: deque[Any] = deque(maxlen=0)


class Session:
    """One resource of one user, bound and known to the router."""

    #: name of the transport, for logs only ("c2s", "bosh")
    transport_name = "?"
    #: stream management (XEP-0198, chatgate.transports.sm), once the client enabled it:
    #: every stanza written goes through it (counted, kept until acknowledged)
    sm: Any = None
    #: set while the session moves to another node (XEP-0198 resumption there):
    #: when it ends here, nobody is told, since it lives on
    moved = False

    def __init__(self, jid: JID, peer: str = "") -> None:
        self.jid = jid
        self.bare = jid.userhost()
        self.full = jid.full()
        self.domain = jid.host
        self.peer = peer
        #: the last available presence the resource sent, None while not available
        self.presence: domish.Element | None = None
        self.priority = 0
        #: full JIDs this resource sent directed presence to (RFC 6121 §4.6)
        self.directed: set[str] = set()
        #: when the transport last received anything, on the reactor's clock
        self.last_active = 0.0
        #: when its stream authenticated (SASL success), on the reactor's clock
        self.signed_in_at = 0.0
        #: per-feature state, keyed by feature name (carbons, csi, ...)
        self.state: dict[str, object] = {}
        self.closed = False
        #: the full JID as a serialized attribute value
        self.full_xml = escape_attribute(self.full).encode("utf-8")
        #: holds not yet released, oldest first: [released?] (made at the first hold: an
        #: empty deque is 600 bytes, and most sessions of a large domain never hold)
        self._holds: deque[list[bool]] = _NO_HOLDS
        #: (the hold it waits for, the serialized stanza, the element if a message or an IQ request),
        #: while holds are pending
        self._held: deque[tuple[list[bool], bytes, domish.Element | None]] = _NO_HOLDS

    @property
    def available(self) -> bool:
        """True once the resource sent initial presence, until unavailable."""
        return self.presence is not None

    def send(self, element: domish.Element, text: str | None = None) -> None:
        """Deliver one stanza to the client; a no-op once closed. *text*, if
        given, is ``serialize(element)`` (see the module docstring)."""
        if self.closed:
            return
        data = None if text is None else self.from_text(text)
        if data is None:
            data = self.serialize(element)
        # what stream management gives back if the client never acknowledges it: messages, requests
        self.send_serialized(data, element if element.name == "message" or (
            element.name == "iq" and element.getAttribute("type") in ("get", "set")) else None)

    def send_serialized(self, data: bytes, element: domish.Element | None = None) -> None:
        """Deliver one stanza already serialized by :meth:`serialize`; *element*: the
        stanza itself if a message or an IQ request (what stream management gives back
        when the client never acknowledges it)."""
        if self.closed:
            return
        if self._holds:
            self._held.append((self._holds[-1], data, element))
        elif self.sm is None:
            self._write(data)
        else:
            self.sm.write(data, element)

    def hold(self, until: Deferred[Any]) -> None:
        """Keep what is sent from now on until *until* has fired (either way)."""
        hold = [False]
        if self._holds is _NO_HOLDS:
            self._holds, self._held = deque(), deque()
        self._holds.append(hold)

        def release(result: Any) -> Any:
            hold[0] = True
            self._release()
            return result

        until.addBoth(release)

    def _release(self) -> None:
        while self._holds and self._holds[0][0]:
            done = self._holds.popleft()
            while self._held and self._held[0][0] is done:
                _, data, message = self._held.popleft()
                if self.closed:
                    continue
                if self.sm is None:
                    self._write(data)
                else:
                    self.sm.write(data, message)

    def held_messages(self) -> list[domish.Element]:
        """The messages and IQ requests sent to this session and still held (write-ahead)."""
        return [message for _, _, message in self._held if message is not None]

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """End the session, with a stream error *condition* if given (RFC 6120 §4.9)."""
        if self.closed:
            return
        sm = self.sm
        if sm is not None:
            # stream management (XEP-0198 §5): a connection that timed out may be resumed
            if sm.detached:
                if sm.moving:
                    sm.moved_away()
                elif condition != "connection-timeout":
                    sm.end()
                return
            if condition == "connection-timeout" and sm.resumable:
                self._end(condition, text)  # the connection goes; the session waits for its client
                return
        self.closed = True
        self._end(condition, text)

    def backlog(self) -> int:
        """Bytes written to this session that its client has not taken yet, beyond what the
        connection buffers (the output limit, ``[limits] max_output_buffer``, applies to them)."""
        return 0

    def redirect(self, host: str, uri: str) -> None:
        """Send the client elsewhere, this node stopping: ``<see-other-host/>`` naming *host*
        (RFC 6120 §4.9.3.19), or ``<system-shutdown/>`` when there is none. *uri* is for
        transports that name a URI instead (WebSocket)."""
        if host:
            self.close("see-other-host", host)
        else:
            self.close("system-shutdown", "The server is stopping")

    @property
    def detached(self) -> bool:
        """True while the session has no connection and waits to be resumed (XEP-0198)."""
        return self.sm is not None and self.sm.detached

    def move_to(self, transport: Any) -> None:
        """Write from now on to *transport*'s connection (stream management resumed the session there)."""
        raise NotImplementedError

    def serialize(self, element: domish.Element) -> bytes:
        """*element* as this transport puts a first-level stanza on its wire."""
        raise NotImplementedError

    def from_text(self, text: str) -> bytes | None:
        """A stanza's plain ``serialize(element)`` (chatgate.xml) as :meth:`serialize` would write it, or None
        when this transport cannot tell (the element is serialized then)."""
        return None

    def _write(self, data: bytes) -> None:
        raise NotImplementedError

    def _end(self, condition: str | None, text: str | None) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.full} {self.transport_name}>"


#: how serialize() starts a message of jabber:client (the root names its namespace)
QUALIFIED_MESSAGE = f"<message xmlns='{CLIENT_NS}'"
_AFTER = len(QUALIFIED_MESSAGE)


def is_qualified_message(text: str) -> bool:
    """Whether *text*, a plain ``serialize(element)`` (chatgate.xml), is a jabber:client message (it
    starts with :data:`QUALIFIED_MESSAGE`, then attributes or the tag's end)."""
    return text.startswith(QUALIFIED_MESSAGE) and text[_AFTER:_AFTER + 1] in (" ", "/", ">")


#: a stand-in, while a stanza is serialized, for what :func:`around_slot` splices
#: in: NUL never occurs in XML (RFC 6120 §11.1 Char), so it cannot collide with
#: content, and domish writes it unescaped
SLOT = "\x00slot\x00"
_SLOT_BYTES = SLOT.encode()


def around_slot(session: Session, element: domish.Element) -> tuple[bytes, bytes]:
    """*element*, holding :data:`SLOT` once (an attribute value or text), as
    *session*'s transport serializes it: the bytes before and after the slot."""
    head, found, tail = session.serialize(element).partition(_SLOT_BYTES)
    if not found:
        raise ValueError("the element holds no slot")
    return head, tail


class Addressed:
    """One stanza for many sessions, each copy with ``to`` = the session's full JID.

    Serialized once per transport (keyed by its :meth:`Session.serialize`);
    a copy is that form with the session's address spliced in. The element
    must not change while the Addressed is used; its ``to`` is left as it was.
    """

    __slots__ = ("element", "_forms")

    def __init__(self, element: domish.Element) -> None:
        self.element = element
        self._forms: dict[Any, tuple[bytes, bytes]] = {}

    def send(self, session: Session) -> None:
        session.send_serialized(self.serialized_for(session))

    def serialized_for(self, session: Session) -> bytes:
        """The copy for *session*, as its transport's :meth:`Session.serialize` writes it."""
        serializer = type(session).serialize
        form = self._forms.get(serializer)
        if form is None:
            attributes = self.element.attributes
            before = attributes.get("to")
            attributes["to"] = SLOT
            try:
                form = self._forms[serializer] = around_slot(session, self.element)
            finally:
                if before is None:
                    del attributes["to"]
                else:
                    attributes["to"] = before
        return form[0] + session.full_xml + form[1]
