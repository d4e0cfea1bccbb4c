"""Service discovery (XEP-0030) for the server and for accounts, and the server's
entity capabilities (XEP-0115 §6.3).

Features announce themselves in ``router.server_features`` and
``router.account_features`` (identities in ``server_identities`` and
``account_identities``) when they register; this module only answers, and is
registered after them. Nodes are not used (§3.1, §7: a query with a node gets
<item-not-found/>) but one: the server's capabilities node
``urn:chatgate:caps#<ver>``, answered like the server itself. ``ver`` is the
XEP-0115 §5.1 hash of that answer, offered to every bound stream in its
features as ``<c xmlns='http://jabber.org/protocol/caps' hash='sha-1'/>``, so a
client that saw the same ``ver`` before need not ask again.
"""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import StanzaError, caps_hash, caps_verification, iq_result
from chatgate.storage import Stores
from chatgate.xml import Element

INFO = "http://jabber.org/protocol/disco#info"
ITEMS = "http://jabber.org/protocol/disco#items"
CAPS_NS = "http://jabber.org/protocol/caps"
#: the node of the server's capabilities (XEP-0115 §4: a URI naming the software)
CAPS_NODE = "urn:chatgate:caps"


def register(router: Router, settings: Settings, stores: Stores) -> None:
    router.server_features.update((INFO, ITEMS, CAPS_NS))
    router.account_features.update((INFO, ITEMS))

    def info_query(category: str, kind: str, features: set[str]) -> domish.Element:
        query = Element((INFO, "query"))
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
        return query

    ver = caps_hash("sha-1", caps_verification(info_query("server", "im", router.server_features)) or "")
    caps_node = f"{CAPS_NODE}#{ver}"
    router.stream_features.append((CAPS_NS, "c", (("hash", "sha-1"), ("node", CAPS_NODE), ("ver", ver or ""))))

    def answer(stanza: domish.Element, nodes: tuple[str, ...] = ()) -> domish.Element:
        node = stanza.firstChildElement().getAttribute("node")
        if node and node not in nodes:
            raise StanzaError("item-not-found")
        return iq_result(stanza)

    def info(category: str, kind: str, features: set[str]):
        def handler(stanza: domish.Element, sender: Session, to: JID) -> None:
            node = stanza.firstChildElement().getAttribute("node")
            reply = answer(stanza, (caps_node,) if category == "server" else ())
            query = reply.addChild(info_query(category, kind, features))
            if node:
                query["node"] = node
            sender.send(reply)

        return handler

    def items(stanza: domish.Element, sender: Session, to: JID) -> None:
        reply = answer(stanza)
        reply.addElement((ITEMS, "query"))
        sender.send(reply)

    def server_items(stanza: domish.Element, sender: Session, to: JID) -> None:
        """The domain's services at their own hosts (rooms at conference.<domain>), §4."""
        reply = answer(stanza)
        query = reply.addElement((ITEMS, "query"))
        for label in sorted(router.subdomains):
            query.addElement("item")["jid"] = f"{label}.{to.host}"
        sender.send(reply)

    router.handle(f"iq-get/host/{INFO}:query", info("server", "im", router.server_features))
    router.handle(f"iq-get/bare/{INFO}:query", info("account", "registered", router.account_features))
    router.handle(f"iq-get/host/{ITEMS}:query", server_items)
    router.handle(f"iq-get/bare/{ITEMS}:query", items)
