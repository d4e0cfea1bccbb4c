"""The domain roster (RFC 6121 §2), computed, never stored per user.

A user's roster is every other user of the same domain: name from the
directory, subscription ``both``, the domain as group. It comes from the
in-memory directory mirror, so a roster get never waits on the store. Users
added, renamed or removed are pushed (§2.1.6) to every session that asked for
its roster. Roster sets would break the rule and are refused <not-allowed/>.
"""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.router import CLIENT_NS, Router, StanzaError, iq_result
from chatgate.session import Session
from chatgate.storage.interfaces import Change, Stores, User

NS = "jabber:iq:roster"


def _item(parent: domish.Element, user: User, subscription: str = "both") -> None:
    item = parent.addElement("item")
    item["jid"] = user.jid
    item["subscription"] = subscription
    if subscription != "remove":
        item["name"] = user.display_name
        item.addElement("group", content=user.domain)


def register(router: Router, settings: Settings, stores: Stores) -> None:
    domains = router.domains

    def own_roster_only(sender: Session, to: JID) -> None:
        if to.userhost() != sender.bare:
            raise StanzaError("forbidden", "A roster belongs to its user")

    def get(stanza: domish.Element, sender: Session, to: JID) -> None:
        own_roster_only(sender, to)
        reply = iq_result(stanza)
        query = reply.addElement((NS, "query"))
        for user in domains.users(sender.domain):
            if user.jid != sender.bare:
                _item(query, user)
        sender.state["roster"] = True
        sender.send(reply)

    def set_(stanza: domish.Element, sender: Session, to: JID) -> None:
        own_roster_only(sender, to)
        raise StanzaError("not-allowed", "The roster is everyone of your domain; it cannot be edited")

    def changed(change: Change, user: User | None) -> None:
        if change.kind == "user-removed" and user is not None:
            router.close_sessions(user.domain, user.localpart, "not-authorized", "The account was removed")
            push(user, "remove")
        elif change.kind in ("user-added", "user-changed") and user is not None:
            push(user)

    def push(user: User, subscription: str = "both") -> None:
        for session in router.domain_sessions(user.domain):
            if session.bare == user.jid or not session.state.get("roster"):
                continue
            iq = domish.Element((CLIENT_NS, "iq"))
            iq["type"] = "set"
            iq["id"] = f"push-{id(iq):x}"
            iq["to"] = session.full
            _item(iq.addElement((NS, "query")), user, subscription)
            session.send(iq)

    router.handle(f"iq-get/bare/{NS}:query", get)
    router.handle(f"iq-set/bare/{NS}:query", set_)
    domains.listen(changed)
