"""Session: one connected, bound resource, whatever its transport.

A transport (c2s, BOSH) authenticates and binds, then hands the router a
Session. From there on the router and the features use only what is here:
``jid``, ``send``, ``close``, ``presence``, ``priority``. Transports subclass
it and implement :meth:`_write` and :meth:`_end`.
"""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish


class Session:
    """One resource of one user, bound and known to the router."""

    #: name of the transport, for logs only ("c2s", "bosh")
    transport_name = "?"

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
        #: per-feature state, keyed by feature name (carbons, csi, ...)
        self.state: dict[str, object] = {}
        self.closed = False

    @property
    def available(self) -> bool:
        """True once the resource sent initial presence, until unavailable."""
        return self.presence is not None

    def send(self, element: domish.Element) -> None:
        """Deliver one stanza to the client; a no-op once closed."""
        if not self.closed:
            self._write(element)

    def close(self, condition: str | None = None, text: str | None = None) -> None:
        """End the session, with a stream error *condition* if given (RFC 6120 §4.9)."""
        if not self.closed:
            self.closed = True
            self._end(condition, text)

    def _write(self, element: domish.Element) -> None:
        raise NotImplementedError

    def _end(self, condition: str | None, text: str | None) -> None:
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.full} {self.transport_name}>"
