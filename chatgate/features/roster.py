"""The domain roster (RFC 6121 §2), computed, never stored per user.

A user's roster is every other user of the same domain (name from the
directory, subscription ``both``, the domain as group) and the domain's mail
aliases (group "Aliases"; see aliases.py). It comes from the
in-memory directory mirror, so a roster get never waits on the store. Users
added, renamed or removed are pushed (§2.1.6) to every session that asked for
its roster. Roster sets would break the rule and are refused <not-allowed/>.

Every login of a domain of N users asks for the same N items (but its own),
so each domain's items are kept serialized, made again after a change to
the domain's users or aliases: a roster get is one join, not N elements
built and serialized (in a 5,000-user domain, 0.1 s of CPU per login).
"""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.mirror import DirectoryMirror
from chatgate.router import Router
from chatgate.session import SLOT, Session, around_slot
from chatgate.stanza import CLIENT_NS, StanzaError, iq_result
from chatgate.storage import Stores
from chatgate.storage.interfaces import Alias, Change, User
from chatgate.xml import Element, serialize

ALIASES_GROUP = "Aliases"

NS = "jabber:iq:roster"
#: directory changes that leave every roster as it is: the domain's items are kept
_NOT_ROSTER = frozenset({"credentials-changed", "blocklist-changed"})


def _item(parent: domish.Element, contact: User | Alias, subscription: str = "both") -> None:
    item = parent.addElement("item")
    item["jid"] = contact.jid
    item["subscription"] = subscription
    if subscription != "remove":
        item["name"] = contact.display_name
        item.addElement("group", content=ALIASES_GROUP if isinstance(contact, Alias) else contact.domain)


def _serialized_item(contact: User | Alias) -> bytes:
    """One roster item as it appears inside a serialized <query xmlns='jabber:iq:roster'/>."""
    query = Element((NS, "query"))
    _item(query, contact)
    return serialize(query.children[0], NS).encode("utf-8")


class RosterItems:
    """Each domain's roster items, serialized once: (bare JID, bytes), users then aliases."""

    def __init__(self, domains: DirectoryMirror) -> None:
        self.domains = domains
        self._items: dict[str, list[tuple[str, bytes]]] = {}

    def of(self, domain: str) -> list[tuple[str, bytes]]:
        items = self._items.get(domain)
        if items is None:
            items = [(u.jid, _serialized_item(u)) for u in self.domains.users(domain)]
            items += [(a.jid, _serialized_item(a)) for a in self.domains.aliases(domain)]
            self._items[domain] = items
        return items

    def forget(self, domain: str) -> None:
        """The users or aliases of *domain* changed: its items are made again when next asked for."""
        self._items.pop(domain, None)


def register(router: Router, settings: Settings, stores: Stores) -> None:
    domains = router.domains
    items = RosterItems(domains)

    def own_roster_only(sender: Session, to: JID) -> None:
        if to.userhost() != sender.bare:
            raise StanzaError("forbidden", "A roster belongs to its user")

    def get(stanza: domish.Element, sender: Session, to: JID) -> None:
        own_roster_only(sender, to)
        reply = iq_result(stanza)
        reply.addElement((NS, "query")).addContent(SLOT)
        head, tail = around_slot(sender, reply)
        own = sender.bare
        sender.state["roster"] = True
        sender.send_serialized(b"".join([head, *(xml for jid, xml in items.of(sender.domain) if jid != own), tail]))

    def set_(stanza: domish.Element, sender: Session, to: JID) -> None:
        own_roster_only(sender, to)
        raise StanzaError("not-allowed", "The roster is everyone of your domain; it cannot be edited")

    def changed(change: Change, subject: User | Alias | None) -> None:
        if change.kind not in _NOT_ROSTER:
            items.forget(change.domain)
        if subject is None:
            return
        if change.kind == "user-removed":  # their own sessions are closed by features/revocation.py
            push(subject, "remove")
        elif change.kind == "alias-removed":
            push(subject, "remove")
        elif change.kind in ("user-added", "user-changed", "alias-added", "alias-changed"):
            push(subject)

    def push(contact: User | Alias, subscription: str = "both") -> None:
        for session in router.domain_sessions(contact.domain):
            if session.bare == contact.jid or not session.state.get("roster"):
                continue
            iq = Element((CLIENT_NS, "iq"))
            iq["type"] = "set"
            iq["id"] = f"push-{id(iq):x}"
            iq["to"] = session.full
            _item(iq.addElement((NS, "query")), contact, subscription)
            session.send(iq)

    router.handle(f"iq-get/bare/{NS}:query", get)
    router.handle(f"iq-set/bare/{NS}:query", set_)
    domains.listen(changed)
