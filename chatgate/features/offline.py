"""Offline messages (XEP-0160): kept while a user has no available resource.

A message of type ``normal`` or ``chat`` the router cannot deliver (no
resource of the recipient available with a non-negative priority) is kept in
the IOfflineStore, stanza-id and all, unless (§3):

- it carries only XEP-0085 chat states (and hints, ids, a thread): nothing to
  keep, and nothing worth an error either, so it is dropped;
- it carries the XEP-0334 ``<no-store/>`` hint: the router bounces it;
- the recipient already has ``[archive] offline_quota`` messages waiting: the
  sender gets <service-unavailable/> (§2 step 3), and the message leaves the
  archive again (router event ``message-refused``).

When a resource becomes reachable (its available presence with priority >= 0,
the presence feature's ``session-available``), every waiting message goes to
it (§2 step 5), oldest first, with a XEP-0203 ``<delay/>`` from the server
saying when it arrived. Should that resource be gone by the time the store
answers, they go to another reachable resource, or back into the store.
"""

from __future__ import annotations

from twisted.logger import Logger
from twisted.python.failure import Failure

from chatgate import events
from chatgate.config import Settings
from chatgate.delivery import Delivery
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import DELAY_NS, HINTS_NS, chat_state_only, stamp
from chatgate.storage import Stores
from chatgate.storage.interfaces import ArchiveError, IOfflineStore, OfflineMessage
from chatgate.xml import StreamError, parse_document

#: how often, and how far apart (growing by this), reading a user's offline messages is tried
#: again when the store cannot be reached (Redis reconnecting)
READ_ATTEMPTS = 5
READ_RETRY = 1.0

log = Logger()


class OfflineMessages:
    def __init__(self, router: Router, store: IOfflineStore, quota: int, max_size: int) -> None:
        self.router = router
        self.store = store
        self.quota = quota
        self.max_size = max_size

    def undeliverable(self, delivery: Delivery) -> bool:
        """Take a message that no resource of its recipient can receive now."""
        stanza, bare = delivery.stanza, delivery.bare
        if stanza.getAttribute("type", "normal") not in ("normal", "chat"):
            return False
        if chat_state_only(stanza):
            return True
        if next(stanza.elements(HINTS_NS, "no-store"), None) is not None:
            return False
        message = OfflineMessage(self.router.clock.seconds(), delivery.text())
        d = self.store.push(bare, message, self.quota)
        d.addCallbacks(self._stored, self._not_stored, (delivery,), None, (delivery,))
        return True

    def _stored(self, stored: bool, delivery: Delivery) -> None:
        if stored:
            self.router.stored_offline(delivery.bare)
        else:
            log.info("offline messages for {bare}: quota of {quota} reached", bare=delivery.bare, quota=self.quota)
            self._refuse(delivery, "service-unavailable", "The recipient is offline and their message box is full")

    def _not_stored(self, failure: Failure, delivery: Delivery) -> None:
        log.failure("keeping an offline message for {bare} failed", failure, bare=delivery.bare)
        self._refuse(delivery, "internal-server-error", None)

    def _refuse(self, delivery: Delivery, condition: str, text: str | None) -> None:
        """Bounce a message the store would not keep, to the resource that sent it if still there."""
        self.router.emit(events.MESSAGE_REFUSED, delivery)
        self.router.bounce_to_origin(delivery.stanza, condition, text)

    def waiting(self, bare: str) -> None:
        """Another node kept a message for *bare*: deliver it if they are reachable here."""
        session = next((s for s in self.router.local_resources(bare).values() if _reachable(s)), None)
        if session is not None:
            self.available(session)

    def available(self, session: Session, attempt: int = 0) -> None:
        """Deliver what waits for a resource that just became reachable (§2 step 5)."""
        d = self.store.pop(session.bare)
        d.addCallback(self._deliver, session)
        d.addErrback(self._not_read, session, attempt)

    def _not_read(self, failure: Failure, session: Session, attempt: int) -> None:
        """The store could not be read (Redis reconnecting): tried again a few times while the session lasts."""
        if failure.check(ArchiveError) and attempt < READ_ATTEMPTS and _reachable(session):
            log.info("offline messages for {bare} cannot be read yet ({why}); trying again",
                     bare=session.bare, why=failure.getErrorMessage())
            self.router.clock.callLater(READ_RETRY * (attempt + 1), self._again, session, attempt + 1)
            return
        log.failure("reading offline messages for {bare} failed", failure, bare=session.bare)

    def _again(self, session: Session, attempt: int) -> None:
        if _reachable(session):
            self.available(session, attempt)

    def _deliver(self, messages: list[OfflineMessage], session: Session) -> None:
        if not messages:
            return
        target = session if _reachable(session) else None
        if target is None:
            target = next((s for s in self.router.resources(session.bare).values() if _reachable(s)), None)
        if target is None:  # gone meanwhile: keep them for next time
            for message in messages:
                self.store.push(session.bare, message, None).addErrback(
                    lambda f: log.failure("putting back an offline message for {bare} failed", f,
                                          bare=session.bare))
            return
        # in the order they came: a store with several connections (Redis) may have taken them out of it
        messages = sorted(messages, key=lambda m: m.at)
        for message in messages:
            try:
                stanza = parse_document(message.stanza.encode("utf-8"), self.max_size)
            except StreamError:
                log.error("an offline message for {bare} could not be read back; dropped", bare=session.bare)
                continue
            delay = stanza.addElement((DELAY_NS, "delay"), content="Offline Storage")
            delay["from"], delay["stamp"] = session.domain, stamp(message.at)
            self.router.deliver_stored(stanza, target)


def _reachable(session: Session) -> bool:
    return not session.closed and session.available and session.priority >= 0


def register(router: Router, settings: Settings, stores: Stores) -> None:
    # what was stored fit within max_stanza_size, plus the stanza-id the server added
    offline = OfflineMessages(router, stores.offline, settings.archive.offline_quota,
                              settings.limits.max_stanza_size + 4096)
    router.server_features.add("msgoffline")
    router.listen(events.MESSAGE_UNDELIVERABLE, offline.undeliverable)
    router.listen(events.SESSION_AVAILABLE, offline.available)
    router.listen(events.OFFLINE_WAITING, offline.waiting)
