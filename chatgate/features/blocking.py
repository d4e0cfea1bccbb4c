"""Blocking Command (XEP-0191, ``urn:xmpp:blocking``): a user stops all communication with a JID.

The blocklist (§3.2) is kept per user behind ``IDirectory.blocklist/block/unblock``
and changed with ``<block/>`` (§3.3), ``<unblock/>`` (§3.4) and an empty
``<unblock/>`` (§3.5, everything). Every change is answered, then pushed to each
of the user's resources that asked for the blocklist, the asking one included.
Items are any JIDs, matched as XEP-0016 §2.1 does: a sender ``u@d/r`` is
blocked by ``u@d/r``, ``u@d``, ``d/r`` or ``d``; JIDs of other domains are kept
but never match anything, since nothing crosses from one hosted domain to another.

One FILTER-priority hook on ``message-delivering`` and ``presence-delivering``
(before the archive, carbons and CSI) applies it:

- Nothing from a blocked JID reaches the blocker's clients: no message, chat
  state or presence. The origin is the sending session, or for what the server
  sends, the XEP-0033 ``ofrom`` (a mail alias's copy names its real sender
  there; its ``from`` is the alias) and the ``from`` (blocking an alias blocks
  its copies and presence). Carbons need no check of their own: a message the
  filter stops is neither archived nor copied.
- §3.6, a blocked JID writing to the blocker: a ``chat`` or ``normal`` message
  with a body is answered <service-unavailable/> (the SHOULD of §3.6; the same
  answer as for an address nobody reads, so it tells nothing); a message
  without a body (chat states, receipts) or of another type is dropped
  silently, since an error for every keystroke would only be noise. Presence
  is dropped without an answer (§3.6 MUST).
- §3.7, the blocker writing to a blocked JID: the message is refused with
  <not-acceptable/> and ``<blocked xmlns='urn:xmpp:blocking:errors'/>`` (the
  Delivery's ``stop(condition, application)``); their presence no longer
  reaches the blocked JID.
- Presence on a change (§3.3, §3.4): blocking sends the blocked contacts
  unavailable from each of the blocker's available resources, and the blocker's
  resources unavailable from each of the contacts' (so neither shows the other
  online); unblocking sends both sides' current presence again.

A mail alias's copy of the blocker's own message to an alias still reaches a
blocked member: they wrote to the alias, as to a mailing list. IQs between
full JIDs pass the same filter (``iq-delivering``): a get or set from a
blocked JID gets <service-unavailable/>, one to it the blocking error, and a
result or error is dropped.

Lists are read on demand and cached: from a session's bind for as long as the
user has one, then kept among the most recent :data:`OFFLINE_CACHE` of users
offline (messages to offline users need their list too). The filter never
waits: a delivery whose parties' lists are still being read is stopped
silently and delivered again, in order, once they are read (with the memory
store they are read at once). A ``blocklist-changed`` change from the
directory feed (another process, chatgate-admin) reads the list again.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from chatgate import events
from chatgate.config import Settings
from chatgate.delivery import Delivery
from chatgate.jid import jid_of
from chatgate.router import Router
from chatgate.session import Addressed, Session
from chatgate.stanza import ADDRESS_NS, CLIENT_NS, StanzaError, body_of, iq_result, unavailable
from chatgate.storage import Stores
from chatgate.storage.interfaces import Alias, Change, IDirectory, User
from chatgate.xml import Element

NS = "urn:xmpp:blocking"
ERRORS_NS = "urn:xmpp:blocking:errors"
#: the most JIDs one user may block
MAX_ITEMS = 1000
#: how many offline users' lists stay cached (online users' always do); at
#: least the two parties of one message, so a delivery that waited for both reads meets both
OFFLINE_CACHE = 4096

log = Logger()
_EMPTY: frozenset[str] = frozenset()


def candidates(jid: JID) -> Iterable[str]:
    """The blocklist items that match *jid* (XEP-0016 §2.1 order: full, bare, domain/resource, domain)."""
    host, user, resource = jid.host, jid.user, jid.resource
    if user and resource:
        yield f"{user}@{host}/{resource}"
    if user:
        yield f"{user}@{host}"
    if resource:
        yield f"{host}/{resource}"
    yield host


def matches(items: frozenset[str], jids: Iterable[JID]) -> bool:
    return any(candidate in items for jid in jids for candidate in candidates(jid))


def blocked_error() -> domish.Element:
    """XEP-0191 §3.7's application-specific condition."""
    return Element((ERRORS_NS, "blocked"))


def _origins(delivery: Delivery) -> list[JID]:
    """Whose stanza it is: the sending session, or the ``ofrom`` and ``from`` the server wrote."""
    if delivery.sender is not None:
        return [delivery.sender.jid]
    stanza, found = delivery.stanza, []
    for addresses in stanza.elements(ADDRESS_NS, "addresses"):
        for address in addresses.elements(ADDRESS_NS, "address"):
            if address.getAttribute("type") == "ofrom":
                found.append(address.getAttribute("jid", ""))
    found.append(stanza.getAttribute("from", ""))
    origins = []
    for text in found:
        try:
            origins.append(jid_of(text))
        except (InvalidFormat, RuntimeError):
            continue
    return origins


class Blocking:
    def __init__(self, router: Router, directory: IDirectory) -> None:
        self.router = router
        self.directory = directory
        #: bare JID -> the items it blocks, for every user read (online ones and OFFLINE_CACHE more)
        self._lists: dict[str, frozenset[str]] = {}
        #: the users in _lists with no session, oldest first
        self._offline: OrderedDict[str, None] = OrderedDict()
        #: bare JID -> what waits for its list being read
        self._waiting: dict[str, list[Callable[[], None]]] = {}
        #: the users in _lists who block anyone (most block nobody: the filter's fast path)
        self._blocking: set[str] = set()
        #: while the unavailable presence of a block goes out: let it pass
        self._announcing = False

    # -- the cache

    def _set(self, bare: str, items: frozenset[str]) -> None:
        self._lists[bare] = items
        if items:
            self._blocking.add(bare)
        else:
            self._blocking.discard(bare)
        if not self.router.local_resources(bare):
            self._went_offline(bare)

    def _went_offline(self, bare: str) -> None:
        self._offline[bare] = None
        self._offline.move_to_end(bare)
        while len(self._offline) > max(OFFLINE_CACHE, 2):
            old, _ = self._offline.popitem(last=False)
            self._lists.pop(old, None)
            self._blocking.discard(old)

    def _ensure(self, bare: str) -> bool:
        """Start reading *bare*'s list unless it is read or being read; True when it is read now."""
        if bare in self._lists:
            return True
        if bare not in self._waiting:
            self._waiting[bare] = []
            localpart, _, domain = bare.partition("@")
            d = self.directory.blocklist(domain, localpart)
            d.addCallbacks(self._read, self._not_read, (bare,), None, (bare,))
        return bare in self._lists

    def _read(self, items: list[str], bare: str) -> None:
        self._set(bare, frozenset(items))
        for waiter in self._waiting.pop(bare, ()):
            try:
                waiter()
            except Exception:
                log.failure("delivering what waited for the blocklist of {bare}", bare=bare)

    def _not_read(self, failure: Failure, bare: str) -> None:
        log.failure("reading the blocklist of {bare} failed; nothing is blocked for them until it is read again",
                    failure, bare=bare)
        self._read([], bare)

    def _after(self, bares: list[str], then: Callable[[], None]) -> None:
        """Call *then* once the lists of *bares* are read (at once when they are)."""
        for bare in bares:
            if not self._ensure(bare):
                self._waiting[bare].append(lambda: self._after(bares, then))
                return
        then()

    def _list_of(self, bare: str) -> defer.Deferred[frozenset[str]]:
        d: defer.Deferred[frozenset[str]] = defer.Deferred()
        self._after([bare], lambda: d.callback(self._lists[bare]))
        return d

    def bound(self, session: Session) -> None:
        self._offline.pop(session.bare, None)
        self._ensure(session.bare)

    def ended(self, session: Session) -> None:
        if not self.router.local_resources(session.bare) and session.bare in self._lists:
            self._went_offline(session.bare)

    def directory_changed(self, change: Change, subject: User | Alias | None) -> None:
        bare = f"{change.localpart}@{change.domain}"
        if change.kind == "user-removed":
            self._lists.pop(bare, None)
            self._offline.pop(bare, None)
            self._blocking.discard(bare)
        elif change.kind == "blocklist-changed" and (bare in self._lists or bare in self._waiting):
            d = self.directory.blocklist(change.domain, change.localpart or "")
            d.addCallbacks(lambda items: self._set(bare, frozenset(items)) if bare in self._lists else None,
                           lambda f: log.failure("reading the blocklist of {bare} again", f, bare=bare))

    # -- the filter

    def message(self, delivery: Delivery) -> None:
        """FILTER on message-delivering: §3.6 and §3.7."""
        if self._announcing or delivery.copy_of is not None or delivery.relayed:
            return  # a relayed one was filtered on the sender's node
        sender, owner, lists = delivery.sender, delivery.bare, self._lists
        if owner not in lists or (sender is not None and sender.bare not in lists):
            parties = [owner] if sender is None else [owner, sender.bare]
            delivery.stop()
            # delivered again the same way once both lists are read (a stored one never archived twice)
            self._after(parties, delivery.again)
            return
        if owner not in self._blocking and (sender is None or sender.bare not in self._blocking):
            return
        stanza = delivery.stanza
        if sender is not None and sender.bare != owner and sender.bare in self._blocking:
            if matches(self._lists[sender.bare], [self._to(stanza, owner)]):
                delivery.stop("not-acceptable", blocked_error())
                return
        if owner in self._blocking:
            origins = [jid for jid in _origins(delivery) if jid.userhost() != owner]
            if matches(self._lists[owner], origins):
                chat = stanza.getAttribute("type", "normal") in ("chat", "normal") and body_of(stanza) is not None
                delivery.stop("service-unavailable" if chat else None)

    def iq(self, delivery: Delivery) -> None:
        """FILTER on iq-delivering: a get or set from a blocked JID gets
        service-unavailable (§3.6), one to a blocked JID the blocking error
        (§3.7); a result or error is dropped either way."""
        sender, owner, lists = delivery.sender, delivery.bare, self._lists
        if sender is None or sender.bare == owner or owner not in lists or sender.bare not in lists:
            return  # both are online, so their lists are read; one still being read lets it pass
        request = delivery.stanza.getAttribute("type") in ("get", "set")
        target = delivery.targets[0]
        if sender.bare in self._blocking and matches(lists[sender.bare], [target.jid]):
            delivery.stop("not-acceptable", blocked_error()) if request else delivery.stop()
        elif owner in self._blocking and matches(lists[owner], [sender.jid]):
            delivery.stop("service-unavailable") if request else delivery.stop()

    @staticmethod
    def _to(stanza: domish.Element, owner: str) -> JID:
        to = stanza.getAttribute("to")
        return jid_of(to) if to else jid_of(owner)

    def presence(self, delivery: Delivery) -> None:
        """FILTER on presence-delivering: no presence from a blocked JID, none from the blocker to it."""
        if self._announcing or (not self._blocking and not self._waiting):
            return
        sender = delivery.sender
        if sender is not None and sender.bare not in self._lists:
            later, keep = list(delivery.targets), []
        else:
            origins = _origins(delivery)
            outgoing = self._lists[sender.bare] if sender is not None else _EMPTY
            keep, later = [], []
            for target in delivery.targets:
                bare = target.bare
                if bare not in self._lists:
                    later.append(target)
                elif sender is not None and bare == sender.bare:
                    keep.append(target)
                elif bare in self._blocking and matches(self._lists[bare], origins):
                    continue
                elif outgoing and matches(outgoing, [target.jid]):
                    continue
                else:
                    keep.append(target)
        if later:
            stanza = delivery.stanza
            waiting = sorted({t.bare for t in later} | ({sender.bare} if sender is not None else set()))
            self._after(waiting, lambda: self.router.deliver_presence(Addressed(stanza), sender, later))
        if len(keep) != len(delivery.targets):
            delivery.targets = keep

    # -- the protocol

    def _own(self, sender: Session, to: JID) -> None:
        if to.userhost() != sender.bare:
            raise StanzaError("forbidden", "A blocklist is its owner's alone")

    def get(self, stanza: domish.Element, sender: Session, to: JID) -> defer.Deferred[None]:
        """§3.2: the blocklist; the resource gets pushes from now on."""
        self._own(sender, to)
        sender.state["blocking"] = True

        def answer(items: frozenset[str]) -> None:
            reply = iq_result(stanza)
            blocklist = reply.addElement((NS, "blocklist"))
            for jid in sorted(items):
                blocklist.addElement("item")["jid"] = jid
            sender.send(reply)

        return self._list_of(sender.bare).addCallback(answer)

    def block(self, stanza: domish.Element, sender: Session, to: JID) -> defer.Deferred[None]:
        """§3.3: add JIDs."""
        self._own(sender, to)
        jids = _items(stanza)
        if not jids:
            raise StanzaError("bad-request", "Name at least one JID to block")
        return defer.ensureDeferred(self._block(stanza, sender, jids))

    async def _block(self, stanza: domish.Element, sender: Session, jids: list[str]) -> None:
        owner = sender.bare
        current = await self._list_of(owner)
        if len(current.union(jids)) > MAX_ITEMS:
            raise StanzaError("policy-violation", f"At most {MAX_ITEMS} JIDs can be blocked")
        added = await self.directory.block(sender.domain, sender.jid.user, jids)
        self._set(owner, self._lists.get(owner, current).union(added))
        self._hide(owner, frozenset(added))
        sender.send(iq_result(stanza))
        self._push(owner, "block", added)

    def unblock(self, stanza: domish.Element, sender: Session, to: JID) -> defer.Deferred[None]:
        """§3.4: take JIDs off; §3.5: no item takes every one off."""
        self._own(sender, to)
        return defer.ensureDeferred(self._unblock(stanza, sender, _items(stanza)))

    async def _unblock(self, stanza: domish.Element, sender: Session, jids: list[str]) -> None:
        owner = sender.bare
        current = await self._list_of(owner)
        removed = await self.directory.unblock(sender.domain, sender.jid.user, jids or None)
        self._set(owner, self._lists.get(owner, current).difference(removed))
        sender.send(iq_result(stanza))
        if removed:
            self._push(owner, "unblock", [] if not jids else removed)
        self._show(owner, frozenset(removed))

    def _push(self, owner: str, kind: str, jids: list[str]) -> None:
        """§3.3-3.5: tell each resource that asked for the blocklist."""
        if kind == "block" and not jids:
            return
        for session in self.router.resources(owner).values():
            if session.state.get("blocking"):
                iq = Element((CLIENT_NS, "iq"))
                iq["type"], iq["id"], iq["to"] = "set", f"block-{id(iq):x}", session.full
                element = iq.addElement((NS, kind))
                for jid in jids:
                    element.addElement("item")["jid"] = jid
                session.send(iq)

    def _sides(self, owner: str, items: frozenset[str]) -> tuple[list[Session], list[Session]]:
        """The owner's available sessions, and the available sessions *items* name."""
        if not items:
            return [], []
        mine = [s for s in self.router.resources(owner).values() if s.available]
        theirs = [s for s in self.router.domain_sessions(owner.partition("@")[2])
                  if s.bare != owner and s.available and matches(items, [s.jid])]
        return mine, theirs

    def _hide(self, owner: str, added: frozenset[str]) -> None:
        """§3.3: each side sees the other go unavailable (through the hooks, past this filter)."""
        mine, theirs = self._sides(owner, added)
        if not mine or not theirs:
            return
        self._announcing = True
        try:
            for session in mine:
                self.router.deliver_presence(Addressed(unavailable(session.full)), session, theirs)
            for session in theirs:
                self.router.deliver_presence(Addressed(unavailable(session.full)), session, mine)
        finally:
            self._announcing = False

    def _show(self, owner: str, removed: frozenset[str]) -> None:
        """§3.4: each side gets the other's current presence again (what is still blocked stays filtered)."""
        mine, theirs = self._sides(owner, removed)
        for session in mine:
            if theirs and session.presence is not None:
                self.router.deliver_presence(Addressed(session.presence), session, theirs)
        for session in theirs:
            if mine and session.presence is not None:
                self.router.deliver_presence(Addressed(session.presence), session, mine)


def _items(stanza: domish.Element) -> list[str]:
    """The prepared JIDs of a block or unblock request's items."""
    payload = stanza.firstChildElement()
    jids = []
    for item in payload.elements():
        if item.name != "item":
            continue
        raw = item.getAttribute("jid")
        if raw is None:
            raise StanzaError("bad-request", "Each item needs a jid")
        try:
            jids.append(jid_of(raw).full())
        except (InvalidFormat, RuntimeError):
            raise StanzaError("jid-malformed", "An item's jid is not a valid address") from None
    return jids


def register(router: Router, settings: Settings, stores: Stores) -> None:
    blocking = Blocking(router, stores.directory)
    router.server_features.add(NS)
    router.handle(f"iq-get/bare/{NS}:blocklist", blocking.get)
    router.handle(f"iq-set/bare/{NS}:block", blocking.block)
    router.handle(f"iq-set/bare/{NS}:unblock", blocking.unblock)
    router.listen(events.MESSAGE_DELIVERING, blocking.message, events.FILTER)
    router.listen(events.PRESENCE_DELIVERING, blocking.presence, events.FILTER)
    router.listen(events.IQ_DELIVERING, blocking.iq, events.FILTER)
    router.listen(events.SESSION_BOUND, blocking.bound)
    router.listen(events.SESSION_ENDED, blocking.ended)
    router.domains.listen(blocking.directory_changed)

