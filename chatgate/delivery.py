"""Delivery: one stanza on its way to its sessions, as every hook sees it.

The router makes a :class:`Delivery` for each message it delivers to a user
(RFC 6121 §8.5), each copy it sends elsewhere (carbons) and each presence it
fans out, and hands the same object to every listener of the delivery events
(:mod:`chatgate.events`), in their order. Whatever a feature learns or decides
about the stanza travels on it, not in a side table keyed by the stanza:

- :attr:`Delivery.targets`: the sessions it goes to; a filter may take some
  out (a blocked sender, a client that asked for less), and
  :meth:`Delivery.stop` ends the delivery altogether, optionally with an error
  for the sender.

- :meth:`Delivery.text`: the stanza serialized once (plain form,
  :func:`chatgate.xml.serialize`). A hook that serialized it already hands its
  text over with :meth:`Delivery.keep_text` (the archive, whose copy gains the
  stanza-id); a hook that changes the stanza afterwards calls
  :meth:`Delivery.changed` (carbons taking ``<private/>`` out) and the text is
  made again when asked. The transports send that text in their own form.
- :attr:`Delivery.copies`: owner's bare JID -> (archive id, the stanza as that
  owner's archive keeps it): each party's stanza-id (XEP-0359), and the view
  of the sender's own copy for sent carbons (:meth:`Delivery.view_for`).
- :meth:`Delivery.wait_for`: write-ahead. The router holds every session of
  both parties until the deferred fires, so no client sees a message (or a
  copy of it) that a crash could take out of the archive.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from twisted.internet.defer import Deferred
from twisted.words.xish import domish

from chatgate.xml import serialize

if TYPE_CHECKING:
    from chatgate.session import Session


def _nothing() -> None:
    pass


class Delivery:
    """A message to one user: the stanza, who sent it, where it goes, what was decided."""

    __slots__ = ("stanza", "sender", "bare", "targets", "copy_of", "stored", "relayed", "copies", "stopped",
                 "condition", "application", "again", "written", "_text", "_hold")

    def __init__(self, stanza: domish.Element, sender: Session | None, bare: str, targets: list[Session],
                 hold: Callable[[Delivery, Deferred[Any]], None], copy_of: Delivery | None = None,
                 stored: bool = False, relayed: bool = False) -> None:
        self.stanza = stanza
        #: the sending session, None when the server sends (an alias's copy, a carbon)
        self.sender = sender
        #: the recipient's bare JID ("" for presence, which goes to many users)
        self.bare = bare
        #: the sessions it goes to; empty when it is to be kept offline or refused
        self.targets = targets
        #: for a copy of a message sent elsewhere (a carbon), the message's own Delivery
        self.copy_of = copy_of
        #: a message delivered from offline storage (XEP-0160): archived when it first came
        self.stored = stored
        #: a stanza another node's router delivered (its hooks ran there) to a session held here
        self.relayed = relayed
        #: delivers the stanza again the same way from the start (a filter that
        #: had to wait for something, such as a blocklist being read); set by the router
        self.again: Callable[[], None] = _nothing
        #: the archive write the delivery waits for (write-ahead), once there is one
        self.written: Deferred[Any] | None = None
        #: set by :meth:`stop`
        self.stopped = False
        self.condition: str | None = None
        #: the RFC 6120 §8.3.4 application-specific condition that goes with it
        self.application: domish.Element | None = None
        #: owner's bare JID -> (archive id, the stanza as that owner's archive keeps it)
        self.copies: dict[str, tuple[str, str]] = {}
        self._text: str | None = None
        self._hold = hold

    @property
    def parties(self) -> set[str]:
        """The bare JIDs whose archives and clients the message concerns."""
        return {self.bare} if self.sender is None else {self.bare, self.sender.bare}

    def text(self) -> str:
        """The stanza as it is now, serialized (plain form), made at most once."""
        if self._text is None:
            self._text = serialize(self.stanza)
        return self._text

    def known_text(self) -> str | None:
        """The serialized stanza if a hook made it already, else None."""
        return self._text

    def keep_text(self, text: str) -> None:
        """*text* is the stanza as it is now, serialized: :meth:`text` needs no
        second serialization."""
        self._text = text

    def changed(self) -> None:
        """The stanza was changed: its text is made again when asked."""
        self._text = None

    def view_for(self, owner: str) -> str:
        """The stanza as *owner*'s archive keeps it (with their stanza-id and no
        one else's), or as it is now when it was not archived for them."""
        copy = self.copies.get(owner)
        return copy[1] if copy is not None else self.text()

    def stop(self, condition: str | None = None, application: domish.Element | None = None) -> None:
        """End this delivery: no hook after this one runs and nothing is sent;
        the sender gets the RFC 6120 §8.3 error *condition* if one is given,
        with the §8.3.4 *application*-specific condition element in it
        (``<blocked xmlns='urn:xmpp:blocking:errors'/>``, XEP-0191 §3.7)."""
        self.stopped = True
        self.condition = condition
        self.application = application

    def wait_for(self, written: Deferred[Any]) -> None:
        """Write-ahead: nothing sent to either party from now on goes out before
        *written* has fired (either way)."""
        self.written = written
        self._hold(self, written)

    def __repr__(self) -> str:
        sender = self.sender.full if self.sender is not None else "server"
        return f"<Delivery {self.stanza.name} {sender} -> {self.bare} ({len(self.targets)} sessions)>"
