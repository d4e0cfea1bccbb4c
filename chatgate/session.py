"""Session: one connected, bound resource, whatever its transport.

A transport (c2s, BOSH) authenticates and binds, then hands the router a
Session. From there on the router and the features use only what is here:
``jid``, ``send``, ``close``, ``presence``, ``priority``, ``hold``.
Transports subclass it and implement :meth:`_write` and :meth:`_end`; they
serialize at once, so the router may change an element after sending it.

``hold(d)`` keeps everything sent to the session from going out until *d*
fires: the archive holds both parties' sessions until a message is on disk,
so no client ever sees a message that a crash could take out of history.
Holds are released in the order they were taken; output keeps its order.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet.defer import Deferred
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.xml import copy_element


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
        #: holds not yet released, oldest first: [released?]
        self._holds: deque[list[bool]] = deque()
        #: (the hold it waits for, a copy of the element), while holds are pending
        self._held: deque[tuple[list[bool], domish.Element]] = deque()

    @property
    def available(self) -> bool:
        """True once the resource sent initial presence, until unavailable."""
        return self.presence is not None

    def send(self, element: domish.Element) -> None:
        """Deliver one stanza to the client; a no-op once closed."""
        if self.closed:
            return
        if self._holds:
            self._held.append((self._holds[-1], copy_element(element)))
        else:
            self._write(element)

    def hold(self, until: Deferred[Any]) -> None:
        """Keep what is sent from now on until *until* has fired (either way)."""
        hold = [False]
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
                element = self._held.popleft()[1]
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
