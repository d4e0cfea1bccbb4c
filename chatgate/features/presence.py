"""Presence within a domain (RFC 6121 §4, §8.5.2.1.2, §8.5.3.1).

Everyone of a domain is subscribed to everyone (the domain roster), so
broadcast presence goes to every available resource of the domain, the
sender's own resources included (§4.2.2), and a resource becoming available
receives the presence of every available resource of the domain. Presence is
per resource: one going unavailable never changes another. Subscription
requests need no approval: a ``subscribe`` is answered ``subscribed`` at once
(§3.1.3), the other subscription types change nothing and are ignored (§3.2-3.3
allow it when the state does not change).
"""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate import events
from chatgate.cluster.remote import RemoteSession
from chatgate.config import Settings
from chatgate.jid import jid_of
from chatgate.router import Router
from chatgate.session import Addressed, Session
from chatgate.stanza import CLIENT_NS, StanzaError, unavailable
from chatgate.storage import Stores
from chatgate.xml import Element

_SUBSCRIPTION = ("subscribe", "subscribed", "unsubscribe", "unsubscribed")


def _priority(stanza: domish.Element) -> int:
    for child in stanza.elements(CLIENT_NS, "priority"):
        try:
            value = int(str(child).strip())
        except ValueError:
            raise StanzaError("bad-request", "priority must be a number") from None
        if not -128 <= value <= 127:
            raise StanzaError("bad-request", "priority must be between -128 and 127")
        return value
    return 0


class Presence:
    def __init__(self, router: Router) -> None:
        self.router = router
        #: the available resources of each domain, each with its current presence
        #: ready to be addressed to anyone, kept as they come and go, so a
        #: broadcast walks only those
        self._available: dict[str, dict[Session, Addressed]] = {}

    def broadcast(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """Presence with no 'to': the resource's own availability (§4.2, §4.4, §4.5)."""
        ptype = stanza.getAttribute("type")
        if ptype is None:
            was_reachable = sender.available and sender.priority >= 0
            sender.priority = _priority(stanza)
            first = not sender.available
            sender.presence = stanza
            addressed = self._available.setdefault(sender.domain, {})[sender] = Addressed(stanza)
            self.router.deliver_presence(addressed, sender, self.available(sender.domain))
            self.router.session_changed(sender)  # other nodes tell their users, once per node
            if first:
                self.tell_current(sender)
            self.router.emit(events.PRESENCE_CHANGED, sender, not first)
            if sender.priority >= 0 and not was_reachable:
                # now reached by messages to the bare JID (RFC 6121 §8.5.2.1.1)
                self.router.emit(events.SESSION_AVAILABLE, sender)
        elif ptype == "unavailable":
            self.leave(sender, stanza)
        elif ptype not in _SUBSCRIPTION and ptype != "probe":
            raise StanzaError("bad-request", f"unknown presence type {ptype}")

    def _forget(self, session: Session) -> None:
        domain = self._available.get(session.domain)
        if domain is not None:
            domain.pop(session, None)
            if not domain:
                del self._available[session.domain]

    def arrived(self, session: Session) -> None:
        """A session bound with its presence already (resumed here from another
        node, whose users were told it is available): known, nothing broadcast."""
        if session.presence is not None:
            self._available.setdefault(session.domain, {})[session] = Addressed(session.presence)

    def available(self, domain: str) -> list[Session]:
        return list(self._available.get(domain, ()))

    def tell_current(self, newcomer: Session) -> None:
        """Send a newly available resource everyone's current presence (§4.2.2),
        in one write: in a large domain that is thousands of stanzas at once."""
        current: list[tuple[Session | None, Addressed]] = [
            (s, presence) for s, presence in self._available.get(newcomer.domain, {}).items() if s is not newcomer]
        current.extend((s, s.addressed) for s in self.router.remote_sessions(newcomer.domain)
                       if s.addressed is not None)
        self.router.deliver_presences(newcomer, current)

    def remote(self, remote: RemoteSession, stanza: domish.Element, was_available: bool) -> None:
        """A resource on another node changed its broadcast presence: tell this node's users."""
        self.router.deliver_presence(remote.addressed or Addressed(stanza), remote, self.available(remote.domain))

    def leave(self, sender: Session, stanza: domish.Element | None = None) -> None:
        """The resource goes unavailable: tell the domain and its directed-presence peers."""
        if sender.moved:  # it lives on, on another node (XEP-0198 resumption there): nobody is told
            self._forget(sender)
            return
        if not sender.available and not sender.directed:
            return
        stanza = stanza if stanza is not None else unavailable(sender.full)
        stanza["from"] = sender.full
        was_available = sender.available
        sender.presence = None
        self._forget(sender)
        addressed = Addressed(stanza)
        recipients = self.available(sender.domain) if was_available else []
        told = {session.full for session in recipients}
        for full in sender.directed - told:
            target = jid_of(full)
            session = self.router.resources(target.userhost()).get(target.resource)
            if session is not None:
                recipients.append(session)
        self.router.deliver_presence(addressed, sender, recipients)
        if was_available:
            self.router.session_changed(sender)
        sender.directed.clear()
        if was_available:
            self.router.emit(events.PRESENCE_CHANGED, sender, True)

    def directed(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """Presence sent to one user or resource of the domain."""
        ptype = stanza.getAttribute("type")
        if ptype == "probe":
            self.probe(sender, to)
        elif ptype == "subscribe":
            self.subscribed(sender, to)
        elif ptype in _SUBSCRIPTION:
            return
        elif ptype in (None, "unavailable"):
            targets = self.router.resources(to.userhost())
            if to.resource:
                target = targets.get(to.resource)
                recipients = [target] if target is not None else []
            else:
                recipients = [s for s in targets.values() if s.available]
            self.router.deliver_presence(Addressed(stanza), sender, recipients)
            if ptype is None:
                sender.directed.update(s.full for s in recipients)
            else:
                sender.directed.difference_update(s.full for s in recipients)
        else:
            raise StanzaError("bad-request", f"unknown presence type {ptype}")

    def probe(self, sender: Session, to: JID) -> None:
        """Answer a probe with the contact's current presence (§4.3.2)."""
        sessions = [s for s in self.router.resources(to.userhost()).values() if s.available]
        current = self._available.get(to.host, {})
        if sessions:
            self.router.deliver_presences(sender, [
                (session, session.addressed if isinstance(session, RemoteSession) else current[session])
                for session in sessions])
        else:
            presence = Element((CLIENT_NS, "presence"))
            presence["from"] = to.userhost()
            presence["type"] = "unavailable"
            self.router.deliver_presence(Addressed(presence), None, [sender])

    def subscribed(self, sender: Session, to: JID) -> None:
        """Every user of a domain is subscribed already: approve at once (§3.1.3)."""
        presence = Element((CLIENT_NS, "presence"))
        presence["from"] = to.userhost()
        presence["type"] = "subscribed"
        self.router.deliver_presence(Addressed(presence), None, [sender])
        self.probe(sender, to)


def register(router: Router, settings: Settings, stores: Stores) -> None:
    presence = Presence(router)
    router.handle("presence/broadcast", presence.broadcast)
    router.handle("presence/bare", presence.directed)
    router.handle("presence/full", presence.directed)
    router.handle("presence/host", lambda stanza, sender, to: None)  # nothing to tell the server
    router.listen(events.SESSION_ENDED, presence.leave)
    router.listen(events.SESSION_BOUND, presence.arrived)
    router.listen(events.REMOTE_PRESENCE, presence.remote)
