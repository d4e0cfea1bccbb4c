"""Message Carbons (XEP-0280, ``urn:xmpp:carbons:2``): every client of a user sees the whole conversation.

A resource turns carbons on and off with ``<enable/>``/``<disable/>`` (§4,
§5; repeating either is no error, §10.1). For each message eligible (§6: type
``chat``, or ``normal`` with a body) the router is delivering:

- received copies (§7) go to the recipient's carbons-enabled resources the
  message itself does not reach, wrapped in ``<received/>`` from the user's
  bare JID;
- sent copies (§8) go to the sender's other carbons-enabled resources,
  wrapped in ``<sent/>``, whether or not the sending resource enabled carbons.

A message with ``<private xmlns='urn:xmpp:carbons:2'/>`` (§9; the element is
then removed before delivery) or the XEP-0334 ``<no-copy/>`` hint is not
copied. Received copies forward the message as delivered, with the
recipient's XEP-0359 stanza-id; sent copies carry the sender's own archive id
instead (XEP-0313 §3.5), which is why this feature listens after ``archive``.
"""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate import events
from chatgate.config import Settings
from chatgate.delivery import Delivery
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import CLIENT_NS, FORWARD_NS, HINTS_NS, StanzaError, acknowledgement, body_of, iq_result
from chatgate.storage import Stores
from chatgate.xml import Element

NS = "urn:xmpp:carbons:2"


def enabled(session: Session) -> bool:
    return bool(session.state.get("carbons"))


def eligible(stanza: domish.Element) -> bool:
    """§6 and XEP-0334 §4.3 (no-copy): whether copies of *stanza* go out. §6
    also copies a ``normal`` message without a body that carries IM payloads:
    XEP-0184 receipts and XEP-0333 markers (so the sender's other resources
    know the message was read)."""
    mtype = stanza.getAttribute("type", "normal")
    if mtype not in ("chat", "normal") or (
            mtype == "normal" and body_of(stanza) is None and acknowledgement(stanza) is None):
        return False
    return next(stanza.elements(HINTS_NS, "no-copy"), None) is None


def _private(delivery: Delivery) -> bool:
    """§9: a <private/> message is not copied, and loses the element on delivery."""
    stanza = delivery.stanza
    marks = list(stanza.elements(NS, "private"))
    for mark in marks:
        stanza.children.remove(mark)
    if marks:
        delivery.changed()  # the text made before (the archive's) still holds the element
    return bool(marks)


class Carbons:
    def __init__(self, router: Router) -> None:
        self.router = router

    def _copy(self, kind: str, delivery: Delivery, xml: str, owner: str, to: Session) -> None:
        """*xml* (written by chatgate's serializer) forwarded to *to*, through the router."""
        wrapper = Element((CLIENT_NS, "message"))
        wrapper["from"], wrapper["to"] = owner, to.full
        wrapper["type"] = delivery.stanza.getAttribute("type", "normal")
        wrapper.addElement((NS, kind)).addElement((FORWARD_NS, "forwarded")).addRawXml(xml)
        self.router.deliver_copy(wrapper, delivery, owner, [to])

    def toggle(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """§4, §5: enable or disable for the sending resource."""
        if to.userhost() not in (sender.bare, sender.domain):
            raise StanzaError("not-allowed", "carbons are turned on and off for yourself")
        sender.state["carbons"] = stanza.firstChildElement().name == "enable"
        self.router.session_changed(sender)  # other nodes send this resource copies too
        sender.send(iq_result(stanza))

    def delivering(self, delivery: Delivery) -> None:
        """Send the received (§7) and sent (§8) copies of a message going out."""
        stanza, sender, bare = delivery.stanza, delivery.sender, delivery.bare
        if delivery.copy_of is not None or delivery.stored or delivery.relayed or _private(delivery) \
                or not eligible(stanza):
            return
        reached = {id(s) for s in delivery.targets}
        if sender is not None:
            reached.add(id(sender))
            others = [s for s in self.router.resources(sender.bare).values() if enabled(s) and id(s) not in reached]
            if others:
                sent = delivery.view_for(sender.bare)
                for session in others:
                    self._copy("sent", delivery, sent, sender.bare, session)
                reached.update(id(s) for s in others)
        others = [s for s in self.router.resources(bare).values() if enabled(s) and id(s) not in reached]
        if others:
            received = delivery.text()
            for session in others:
                self._copy("received", delivery, received, bare, session)


def register(router: Router, settings: Settings, stores: Stores) -> None:
    carbons = Carbons(router)
    router.server_features.add(NS)
    for kind in ("enable", "disable"):
        router.handle(f"iq-set/bare/{NS}:{kind}", carbons.toggle)
        router.handle(f"iq-set/host/{NS}:{kind}", carbons.toggle)
    router.listen(events.MESSAGE_DELIVERING, carbons.delivering, events.COPIES)
