"""Mail aliases as chat contacts: salesteam@example.com reaches its members.

Every user of a domain has the domain's aliases in their roster (roster.py,
group "Aliases") and uses one like any contact:

- A message to the alias's bare JID reaches every member but the sender,
  from ``alias@domain/<sender's localpart>``, with a XEP-0033 ``ofrom``
  address naming the sender's bare JID (the router took any the client put
  in off: ``ofrom`` is the server's word). A member with no available
  resource gets it the offline way, as mail would (XEP-0160), and sees it at
  the next login. An alias with nobody else in it answers
  <service-unavailable/>.
- A reply to ``alias@domain/<localpart>`` reaches that user, from
  ``alias@domain/<replier's localpart>``, again with ``ofrom``.
- Each copy is archived for its recipient as it is delivered (with the
  alias as the contact), and once for the sender (``message-sent``).
- The alias is available while any member is: its presence comes from its
  bare JID, with a status such as "2 of 5 members online", and changes only
  when that count does.

Members come from the in-memory directory mirror: a message to a large
alias costs no directory query.
"""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate import events
from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Addressed, Session
from chatgate.stanza import ADDRESS_NS, CLIENT_NS, StanzaError, iq_result
from chatgate.storage import Stores
from chatgate.storage.interfaces import Alias, Change, User
from chatgate.xml import Element, copy_element

VCARD_NS = "vcard-temp"


class Aliases:
    def __init__(self, router: Router) -> None:
        self.router = router
        self.domains = router.domains
        #: (domain, alias localpart) -> members online when last told
        self._told: dict[tuple[str, str], int] = {}

    # -- messages

    def message(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        alias = self.domains.alias(to.host, to.user)
        mtype = stanza.getAttribute("type", "normal")
        if mtype == "error":
            return
        if mtype == "groupchat":
            raise StanzaError("service-unavailable", "An alias is not a chat room")
        if to.resource:
            if self.domains.user(to.host, to.resource) is None:
                raise StanzaError("service-unavailable", "Nobody by that name behind this alias")
            recipients = [to.resource]
        else:
            recipients = [m for m in alias.members if m != sender.jid.user]
            if not recipients:
                raise StanzaError("service-unavailable", "The alias has no other members")
        self.router.emit(events.MESSAGE_SENT, stanza, sender, alias.jid)
        outgoing = copy_element(stanza)
        outgoing["from"] = f"{alias.jid}/{sender.jid.user}"
        address = outgoing.addElement((ADDRESS_NS, "addresses")).addElement("address")
        address["type"], address["jid"] = "ofrom", sender.bare
        for member in recipients:
            copy = copy_element(outgoing)  # each member's copy gets its own stanza-id
            copy["to"] = f"{member}@{alias.domain}"
            self.router.deliver_message(copy, None, JID(tuple=(member, alias.domain, None)))

    # -- presence

    def online(self, alias: Alias) -> int:
        """How many members have an available resource."""
        return sum(
            1 for m in alias.members
            if any(s.available for s in self.router.resources(f"{m}@{alias.domain}").values())
        )

    def presence(self, alias: Alias, online: int) -> domish.Element:
        presence = Element((CLIENT_NS, "presence"))
        presence["from"] = alias.jid
        if online:
            presence.addElement("status", content=f"{online} of {len(alias.members)} members online")
        else:
            presence["type"] = "unavailable"
        return presence

    def _tell(self, presence: domish.Element, session: Session) -> None:
        self.router.deliver_presence(Addressed(presence), None, [session])

    def recount(self, alias: Alias, removed: bool = False) -> None:
        """Tell the domain the alias's presence if its online count changed."""
        key = (alias.domain, alias.localpart)
        online = 0 if removed else self.online(alias)
        if self._told.get(key, 0) == online:
            return
        if online:
            self._told[key] = online
        else:
            self._told.pop(key, None)
        self.router.deliver_presence(Addressed(self.presence(alias, online)), None,
                                     [s for s in self.router.domain_sessions(alias.domain) if s.available])

    def presence_changed(self, session: Session, was_available: bool) -> None:
        if not was_available and session.available:
            # a newcomer learns which aliases are available
            for alias in self.domains.aliases(session.domain):
                online = self._told.get((alias.domain, alias.localpart), 0)
                if online:
                    self._tell(self.presence(alias, online), session)
        if was_available != session.available:
            for name in self.domains.aliases_of(session.domain, session.jid.user):
                self.recount(self.domains.alias(session.domain, name))

    def remote_presence(self, session: Session, stanza: domish.Element, was_available: bool) -> None:
        """A member on another node came or went: this node's users see the alias's new count."""
        if was_available != session.available:
            for name in self.domains.aliases_of(session.domain, session.jid.user):
                self.recount(self.domains.alias(session.domain, name))

    def directed(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """Presence sent to an alias: a probe is answered, a subscription approved."""
        alias = self.domains.alias(to.host, to.user)
        ptype = stanza.getAttribute("type")
        if ptype == "subscribe":
            approval = Element((CLIENT_NS, "presence"))
            approval["from"], approval["type"] = alias.jid, "subscribed"
            self._tell(approval, sender)
        if ptype in ("probe", "subscribe"):
            self._tell(self.presence(alias, self.online(alias)), sender)

    def directory_changed(self, change: Change, subject: User | Alias | None) -> None:
        if not isinstance(subject, Alias):
            return
        if change.kind == "alias-removed":
            # unavailable first: the roster push removing the contact follows
            self.recount(subject, removed=True)
        else:
            # after the roster push that adds or changes the contact
            self.router.clock.callLater(0, self.recount, subject)

    # -- vCard

    def vcard(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        alias = self.domains.alias(to.host, to.user)
        reply = iq_result(stanza)
        card = reply.addElement((VCARD_NS, "vCard"))
        card.addElement("FN", content=alias.display_name)
        card.addElement("DESC", content=f"Mail alias of {len(alias.members)} members")
        email = card.addElement("EMAIL")
        email.addElement("INTERNET")
        email.addElement("USERID", content=alias.jid)
        sender.send(reply)


def register(router: Router, settings: Settings, stores: Stores) -> None:
    aliases = Aliases(router)
    router.handle("message/alias", aliases.message)
    router.handle("presence/alias", aliases.directed)
    router.handle(f"iq-get/alias/{VCARD_NS}:vCard", aliases.vcard)
    router.listen(events.PRESENCE_CHANGED, aliases.presence_changed)
    router.listen(events.REMOTE_PRESENCE, aliases.remote_presence)
    router.domains.listen(aliases.directory_changed)
