"""Bookmarks kept once for old and new clients (XEP-0402 §4, ``urn:xmpp:bookmarks:1#compat``).

New clients keep each room bookmark as an item of the PEP node
``urn:xmpp:bookmarks:1`` (XEP-0402), old ones the whole list as
``<storage xmlns='storage:bookmarks'/>`` in private XML storage (XEP-0048 on
XEP-0049). The PEP node is the one truth for rooms: private storage reads its
conferences from it, and a list set through private storage replaces the
node's items (each change told to the owner's clients that asked, as a
publish or a retraction). XEP-0048's ``<url/>`` bookmarks have no place in
XEP-0402 and stay in private storage alone.
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import InvalidFormat
from twisted.words.xish import domish

from chatgate.features.pep.nodes import ACCESS, MAX_ITEMS, PERSIST, SEND_LAST
from chatgate.features.pep.service import Pep
from chatgate.jid import jid_of
from chatgate.session import Session
from chatgate.xml import Element, StreamError, copy_element, parse_fragment, serialize

LEGACY_NS = "storage:bookmarks"
#: the private storage key of XEP-0048's list
LEGACY_KEY = f"{{{LEGACY_NS}}}storage"
NODE = "urn:xmpp:bookmarks:1"
COMPAT = NODE + "#compat"
_TRUE = ("1", "true")


def _text(element: domish.Element, ns: str, name: str) -> str | None:
    found = next(element.elements(ns, name), None)
    return None if found is None else str(found)


def _conference(source: domish.Element, ns: str, source_ns: str, jid: str | None = None) -> domish.Element:
    """A conference element in *ns* from one in *source_ns* (the two XEPs name the same things)."""
    out = Element((ns, "conference"))
    if jid is not None:
        out["jid"] = jid
    if source.getAttribute("name"):
        out["name"] = source["name"]
    out["autojoin"] = "true" if source.getAttribute("autojoin", "") in _TRUE else "false"
    for child in ("nick", "password"):
        text = _text(source, source_ns, child)
        if text is not None:
            out.addElement(child, content=text)
    return out


def items_of(storage: domish.Element) -> list[tuple[str, str]]:
    """XEP-0402 items (room JID, payload) of a XEP-0048 list; conferences without a valid JID left out."""
    items: dict[str, str] = {}
    for conference in storage.elements(LEGACY_NS, "conference"):
        try:
            room = jid_of(conference.getAttribute("jid", "")).userhost()
        except (InvalidFormat, RuntimeError):
            continue
        if room and "@" in room:
            items[room] = serialize(_conference(conference, NODE, LEGACY_NS))
    return list(items.items())


class Bookmarks:
    def __init__(self, pep: Pep) -> None:
        self.pep = pep

    @defer.inlineCallbacks
    def read(self, session: Session, kept: domish.Element | None):
        """The XEP-0048 list private storage answers: the PEP node's rooms, and kept URLs."""
        node = (yield self.pep.nodes(session.bare)).get(NODE)
        if node is None:
            return kept
        storage = Element((LEGACY_NS, "storage"))
        for item in node.items:
            try:
                conference = parse_fragment(item.xml, self.pep.max_size)
            except StreamError:
                continue
            storage.addChild(_conference(conference, LEGACY_NS, NODE, jid=item.id))
        for url in kept.elements(LEGACY_NS, "url") if kept is not None else ():
            storage.addChild(copy_element(url))
        return storage

    def written(self, session: Session, storage: domish.Element) -> defer.Deferred[Any]:
        """A XEP-0048 list was set: the PEP node's items become its rooms."""
        config = {ACCESS: "whitelist", MAX_ITEMS: str(self.pep.settings.max_items), SEND_LAST: "never",
                  PERSIST: "true"}
        return self.pep.replace_items(session, NODE, items_of(storage), config)
