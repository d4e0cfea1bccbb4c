"""Messages between users of one domain (RFC 6121 §5, delivery rules §8.5).

A message to the server itself (RFC 6120 §10.3.1 with no handler for its
payload) is refused with <service-unavailable/>, never silently dropped.
"""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.storage import Stores


def register(router: Router, settings: Settings, stores: Stores) -> None:
    def to_user(stanza: domish.Element, sender: Session, to: JID) -> None:
        router.deliver_message(stanza, sender, to)

    def to_server(stanza: domish.Element, sender: Session, to: JID) -> None:
        router.bounce(stanza, sender, "service-unavailable")

    router.handle("message/bare", to_user)
    router.handle("message/full", to_user)
    router.handle("message/host", to_server)
