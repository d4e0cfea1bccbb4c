"""Service discovery (XEP-0030) for the server and for accounts.

Features announce themselves in ``router.server_features`` and
``router.account_features`` when they register; this module only answers.
Nodes are not used: a query with a node gets <item-not-found/> (§3.1, §7).
"""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import StanzaError, iq_result
from chatgate.storage import Stores

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"


def register(router: Router, settings: Settings, stores: Stores) -> None:
    router.server_features.update((INFO, ITEMS))
    router.account_features.update((INFO, ITEMS))

    def answer(stanza: domish.Element, ns: str) -> tuple[domish.Element, domish.Element]:
        query = stanza.firstChildElement()
        if query.getAttribute("node"):
            raise StanzaError("item-not-found")
        reply = iq_result(stanza)
        return reply, reply.addElement((ns, "query"))

    def info(category: str, kind: str, features: set[str]):
        def handler(stanza: domish.Element, sender: Session, to: JID) -> None:
            reply, query = answer(stanza, INFO)
            identity = query.addElement("identity")
            identity["category"], identity["type"] = category, kind
            if category == "server":
                identity["name"] = "chatgate"
            # what features add (an upload service, XEP-0363 §2; PEP, XEP-0163 §8.1), with forms (XEP-0128)
            added_identities = router.server_identities if category == "server" else router.account_identities
            for more, more_kind, name in added_identities:
                added = query.addElement("identity")
                added["category"], added["type"] = more, more_kind
                if name:
                    added["name"] = name
            for var in sorted(features):
                query.addElement("feature")["var"] = var
            if category == "server":
                for form in router.server_forms:
                    query.addChild(form)
            sender.send(reply)

        return handler

    def items(stanza: domish.Element, sender: Session, to: JID) -> None:
        sender.send(answer(stanza, ITEMS)[0])

    def server_items(stanza: domish.Element, sender: Session, to: JID) -> None:
        """The domain's services at their own hosts (rooms at conference.<domain>), §4."""
        reply, query = answer(stanza, ITEMS)
        for label in sorted(router.subdomains):
            query.addElement("item")["jid"] = f"{label}.{to.host}"
        sender.send(reply)

    router.handle(f"iq-get/host/{INFO}:query", info("server", "im", router.server_features))
    router.handle(f"iq-get/bare/{INFO}:query", info("account", "registered", router.account_features))
    router.handle(f"iq-get/host/{ITEMS}:query", server_items)
    router.handle(f"iq-get/bare/{ITEMS}:query", items)
