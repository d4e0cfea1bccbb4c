"""Software version (XEP-0092) of the server. The OS is not told (§4: optional)."""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate import __version__
from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import iq_result
from chatgate.storage import Stores

NS = "jabber:iq:version"


def register(router: Router, settings: Settings, stores: Stores) -> None:
    def version(stanza: domish.Element, sender: Session, to: JID) -> None:
        reply = iq_result(stanza)
        query = reply.addElement((NS, "query"))
        query.addElement("name", content="chatgate")
        query.addElement("version", content=__version__)
        sender.send(reply)

    router.handle(f"iq-get/host/{NS}:query", version)
    router.server_features.add(NS)
