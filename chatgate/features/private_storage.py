"""Private XML storage (XEP-0049, ``jabber:iq:private``): what a client keeps on the server.

Pidgin, Psi, Gajim and mcabber keep their bookmarks (XEP-0048: the team rooms a
user joins, with autojoin) and roster notes here, so every client of the user
finds them. A user reaches only their own storage (§2.3: anyone else's is
<forbidden/>). Each element is kept under its namespace and name, replaced
whole by the next set; a get names the element and receives it, or it back
empty when nothing was kept (§2.2). Elements in ``jabber:`` namespaces are
refused with <not-acceptable/> (they are the protocol's own, never private
data), as is a query with no element. A user keeps at most
:data:`MAX_ELEMENTS` elements (<resource-constraint/> beyond; a stanza's own
size limit bounds each). An element another feature also keeps in its own
form (``Router.private_bridges``: XEP-0048 bookmarks, kept in PEP as XEP-0402
bookmarks) is read through it and told to it when set. Stored behind ``IDirectory.private_xml`` /
``set_private_xml``, read back through the restricted parser; removing the
user removes it.
"""

from __future__ import annotations

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import StanzaError, iq_result
from chatgate.storage import Stores
from chatgate.xml import Element, StreamError, parse_fragment, serialize

NS = "jabber:iq:private"
#: elements one user keeps at most
MAX_ELEMENTS = 64


def _elements(stanza: domish.Element) -> list[domish.Element]:
    """The query's elements, each checked (§2.3)."""
    found = list(stanza.firstChildElement().elements())
    if not found:
        raise StanzaError("not-acceptable", "Name the element to keep or to get")
    for element in found:
        if not element.uri or element.uri.startswith("jabber:"):
            raise StanzaError("not-acceptable", "The jabber: namespaces are not private data")
    return found


def _key(element: domish.Element) -> str:
    return f"{{{element.uri}}}{element.name}"


def register(router: Router, settings: Settings, stores: Stores) -> None:
    directory = stores.directory
    max_size = settings.limits.max_stanza_size

    def own(sender: Session, to: JID) -> None:
        if to.userhost() != sender.bare:
            raise StanzaError("forbidden", "Only your own private storage")

    @defer.inlineCallbacks
    def get(stanza: domish.Element, sender: Session, to: JID):
        own(sender, to)
        reply = iq_result(stanza)
        query = reply.addElement((NS, "query"))
        for wanted in _elements(stanza):
            kept = yield directory.private_xml(sender.domain, sender.jid.user, _key(wanted))
            element = None
            if kept is not None:
                try:
                    element = parse_fragment(kept, max_size)
                except StreamError:
                    element = None  # what does not read back whole is not handed out
            bridge = router.private_bridges.get(_key(wanted))
            if bridge is not None:  # kept by another feature as well (bookmarks: in PEP, XEP-0402 §4)
                element = yield bridge[0](sender, element)
            query.addChild(element if element is not None else Element((wanted.uri, wanted.name)))
        sender.send(reply)

    @defer.inlineCallbacks
    def set_(stanza: domish.Element, sender: Session, to: JID):
        own(sender, to)
        for element in _elements(stanza):
            kept = yield directory.set_private_xml(sender.domain, sender.jid.user, _key(element),
                                                   serialize(element), MAX_ELEMENTS)
            if not kept:
                raise StanzaError("resource-constraint", f"At most {MAX_ELEMENTS} kinds of private data")
            bridge = router.private_bridges.get(_key(element))
            if bridge is not None:
                yield bridge[1](sender, element)
        sender.send(iq_result(stanza))

    router.handle(f"iq-get/bare/{NS}:query", get)
    router.handle(f"iq-set/bare/{NS}:query", set_)
    router.account_features.add(NS)
