"""RemoteSession: a session bound on another node, as this node's router sees it.

The router keeps one for every session of another node in a domain that has
users online here (the node's mirror, fed by the cluster bus), beside its own
sessions: ``Router.resources`` shows both, so a feature addresses a user
wherever their clients are. What is sent to a RemoteSession goes, in the
plain form of :func:`chatgate.xml.serialize`, to its node, whose router
delivers it to the real session (or keeps it offline when that is gone). Its
``presence``, ``priority`` and the :data:`chatgate.session.SHARED_STATE` part
of ``state`` are the mirror's copy of the real session's, kept current by the
bus; holds (write-ahead) work as for any session, so nothing is forwarded
before the archive has it.
"""

from __future__ import annotations

from typing import Protocol

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.session import Addressed, Session
from chatgate.xml import serialize

_NONE: frozenset[str] = frozenset()


class Forwarder(Protocol):
    """What a RemoteSession needs of the bus: hand bytes to the session's node."""

    def forward(self, node: str, full: str, data: bytes) -> None: ...


class RemoteSession(Session):
    """A resource bound on node *node*; what is sent to it is forwarded there."""

    transport_name = "remote"

    def __init__(self, jid: JID, node: str, forwarder: Forwarder, seq: int = 0) -> None:
        super().__init__(jid)
        self.directed = _NONE  # type: ignore[assignment]  # kept by the node holding the session
        self.node = node
        #: the cluster's bind order: of two sessions of one full JID, the higher wins
        self.seq = seq
        self._forwarder = forwarder
        #: its current presence ready to be addressed to anyone (None while unavailable)
        self.addressed: Addressed | None = None
        #: that presence as the bus carried it ("" while unavailable): a change of shared
        #: state alone is told as such, not as a new presence for everyone
        self.presence_text = ""

    def set_presence(self, presence: domish.Element | None, priority: int) -> None:
        self.presence = presence
        self.priority = priority
        self.addressed = Addressed(presence) if presence is not None else None

    def serialize(self, element: domish.Element) -> bytes:
        return serialize(element).encode("utf-8")

    def from_text(self, text: str) -> bytes:
        return text.encode("utf-8")

    def _write(self, data: bytes) -> None:
        self._forwarder.forward(self.node, self.full, data)

    def _end(self, condition: str | None, text: str | None) -> None:
        """Sessions are closed by the node holding them (every node reads the
        directory's changes); a mirror entry only goes away."""
