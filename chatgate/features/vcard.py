"""vCard-temp (XEP-0054): each user's contact card.

Users own their vCard and may set it from any client (§3.2). Any field they
never set is filled from the directory on the way out (§3.1): FN from the
display name, TITLE, ORG/ORGUNIT from the department, a work TEL, and EMAIL
with the user's address. A user reads the vCard of anyone of the domain and
writes only their own.
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
from chatgate.storage.interfaces import User
from chatgate.xml import Element, StreamError, parse_document, serialize

NS = "vcard-temp"


def fill(card: domish.Element, user: User) -> domish.Element:
    """Add to *card* each directory field the user did not set."""

    def has(name: str) -> bool:
        return any(True for _ in card.elements(NS, name))

    if not has("FN"):
        card.addElement("FN", content=user.display_name)
    if user.title and not has("TITLE"):
        card.addElement("TITLE", content=user.title)
    if user.department and not has("ORG"):
        card.addElement("ORG").addElement("ORGUNIT", content=user.department)
    if user.phone and not has("TEL"):
        tel = card.addElement("TEL")
        tel.addElement("WORK")
        tel.addElement("VOICE")
        tel.addElement("NUMBER", content=user.phone)
    if not has("EMAIL"):
        email = card.addElement("EMAIL")
        email.addElement("INTERNET")
        email.addElement("PREF")
        email.addElement("USERID", content=user.jid)
    if not has("JABBERID"):
        card.addElement("JABBERID", content=user.jid)
    return card


def register(router: Router, settings: Settings, stores: Stores) -> None:
    directory = stores.directory
    max_size = settings.limits.max_stanza_size

    @defer.inlineCallbacks
    def get(stanza: domish.Element, sender: Session, to: JID):
        user = router.domains.user(to.host, to.user)
        stored = yield directory.vcard(to.host, to.user)
        card = None
        if stored:
            try:
                card = parse_document(stored.encode("utf-8"), max_size)
            except StreamError:
                card = None  # a card the store cannot give back whole is rebuilt from the directory
        if card is None:
            card = Element((NS, "vCard"))
        reply = iq_result(stanza)
        reply.addChild(fill(card, user))
        sender.send(reply)

    @defer.inlineCallbacks
    def set_(stanza: domish.Element, sender: Session, to: JID):
        if to.userhost() != sender.bare:
            raise StanzaError("forbidden", "You can only change your own vCard")
        card = stanza.firstChildElement()
        yield directory.set_vcard(sender.domain, sender.jid.user, serialize(card))
        reply = iq_result(stanza)
        sender.send(reply)

    router.handle(f"iq-get/bare/{NS}:vCard", get)
    router.handle(f"iq-set/bare/{NS}:vCard", set_)
    router.account_features.add(NS)
    router.server_features.add(NS)
