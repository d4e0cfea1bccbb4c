"""Archiving: every message is kept in both parties' archives, and none is lost.

XEP-0313 §5.1.1: every message of type ``chat`` or ``normal`` with a
``<body/>`` a user sends or receives goes into their archive — once, however
many of their resources get a copy — whichever client sent it. chatgate
archives for both parties: the recipient's copy as it was delivered, and the
sender's. History cannot be switched off (the prefs of ``mam.py`` say
``always`` and refuse anything else).

XEP-0313 §3.5 and XEP-0359: the delivered message carries the recipient's
archive id, ``<stanza-id by='recipient@domain' id='…'/>``, so clients can match
it with MAM results; the sender's copy (kept in their archive and forwarded
in their sent carbons, XEP-0280) carries the sender's own id instead, never
the recipient's (§3.5: not to JIDs without access to that archive). A
stanza-id a client put in claiming to be by one of the two archives is
removed first (XEP-0359 §5 rule 3).

Listens to the router's ``message-delivering`` (registered before carbons, so
copies carry the ids) and ``message-refused`` (a message bounced after all,
over an offline quota: taken back out, XEP-0313 §5.1 "only messages accepted
for delivery"). Each owner's copy and id go on the Delivery
(``Delivery.copies``), the recipient's text with its stanza-id too
(``Delivery.keep_text``), so the message is serialized once. Writes are handed
to the IArchive, whose backend batches them, and the Delivery waits for the
write (``Delivery.wait_for``: the router's write-ahead rule): what any client
has received is in the archive, whatever crashes.

When the archive cannot be reached (Redis down: its store refuses at once
rather than hold every delivery for the whole outage), the messages are kept
here, in order, and written again every second until it answers; delivery
goes on meanwhile. Only then can a crash of this node lose history: what it
kept waiting (at most ``SPOOL`` messages; beyond that each one lost is logged).
Retention, once an hour: each domain keeps its history for its own number of
days (``chatgate-admin domain set D --retention-days N``; 0: always) or else
``[archive] retention_days`` (unset: always); older messages are deleted in
batches, except those of users on legal hold, and none of a domain on hold.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.application.internet import TimerService
from twisted.application.service import IService
from twisted.internet.defer import Deferred, inlineCallbacks, succeed
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import InvalidFormat
from twisted.words.xish import domish

from chatgate import events
from chatgate.config import Settings
from chatgate.delivery import Delivery
from chatgate.jid import jid_of
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import HINTS_NS, SID_NS, acknowledgement, body_of
from chatgate.storage import Stores
from chatgate.storage.archive import ArchiveIds
from chatgate.storage.interfaces import ArchivedMessage, ArchiveError, IArchive
from chatgate.xml import Element, escape_attribute, serialize

#: seconds between two retention sweeps
EXPIRE_EVERY = 3600.0
#: messages kept to be written again while the archive cannot be reached, at most
SPOOL = 100_000
#: seconds between attempts to write them, and how many go in one write
RETRY_EVERY = 1.0
RETRY_BATCH = 500

log = Logger()

def archivable(stanza: domish.Element) -> bool:
    """XEP-0313 §5.1.1: chat or normal, with a body — or, so that any client
    rebuilds the same view from MAM, a XEP-0184 receipt or XEP-0333 marker
    (archived with an empty body: that is how every backend and the history
    tell them from messages). A XEP-0308 correction has a body and keeps its
    ``<replace id/>`` in the stored XML. XEP-0334 §4.1/§4.2: a message with
    ``<no-permanent-store/>`` or ``<no-store/>`` is not archived."""
    if stanza.getAttribute("type", "normal") not in ("chat", "normal"):
        return False
    if any(child.uri == HINTS_NS and child.name in ("no-store", "no-permanent-store")
           for child in stanza.elements()):
        return False
    return body_of(stanza) is not None or acknowledgement(stanza) is not None


def _strip_ids(stanza: domish.Element, owners: set[str]) -> None:
    """Remove stanza-ids claiming to be by *owners*' archives (XEP-0359 §5 rule 3)."""
    for child in list(stanza.elements(SID_NS, "stanza-id")):
        if child.getAttribute("by") in owners:
            stanza.children.remove(child)


#: how every archivable message's serialization ends (it has a <body/>, a receipt or a marker: never empty)
_CLOSE = "</message>"


def _stanza_id_xml(by: str, archive_id: str) -> str:
    """The stanza-id child and the end tag, as serialize() writes them."""
    return f"<stanza-id xmlns='{SID_NS}' by='{escape_attribute(by)}' id='{escape_attribute(archive_id)}'/>{_CLOSE}"


def _stanza_id(by: str, archive_id: str) -> domish.Element:
    element = Element((SID_NS, "stanza-id"))
    element["by"], element["id"] = by, archive_id
    return element


class Archiving:
    """Archives messages as the router delivers them."""

    def __init__(self, router: Router, archive: IArchive) -> None:
        self.router = router
        self.archive = archive
        self.ids = ArchiveIds()
        #: what could not be written, oldest first, to be written again
        self._waiting: deque[ArchivedMessage] = deque()
        self._retrying: Any = None

    def _write(self, messages: list[ArchivedMessage]) -> Deferred[None]:
        """Hand *messages* to the archive; kept for later if it cannot take them now."""
        if self._waiting:  # keep the order: behind what waits already
            self._keep(messages, None)
            return succeed(None)
        written = self.archive.append(messages)
        written.addErrback(self._not_written, messages)
        return written

    def _not_written(self, failure: Failure, messages: list[ArchivedMessage]) -> None:
        if not failure.check(ArchiveError):
            log.failure("archiving {n} messages failed", failure, n=len(messages))
            return
        self._keep(messages, failure.getErrorMessage())

    def _keep(self, messages: list[ArchivedMessage], why: str | None) -> None:
        if why is not None and not self._waiting:
            log.warn("the archive cannot be reached ({why}); messages are kept to be written when it can", why=why)
        room = SPOOL - len(self._waiting)
        if room < len(messages):
            log.error("the archive is still unreachable: {n} messages of {owner} not archived",
                      n=len(messages) - room, owner=messages[0].owner)
            messages = messages[:max(room, 0)]
        self._waiting.extend(messages)
        if self._retrying is None and self._waiting:
            self._retrying = self.router.clock.callLater(RETRY_EVERY, self._retry)

    def _retry(self) -> None:
        batch = [self._waiting[i] for i in range(min(RETRY_BATCH, len(self._waiting)))]

        def written(_: Any) -> None:
            for _ in batch:
                self._waiting.popleft()
            self._retrying = self.router.clock.callLater(0, self._retry) if self._waiting else None
            if not self._waiting:
                log.info("the archive is reachable again; every kept message is written")

        def failed(_: Failure) -> None:
            self._retrying = self.router.clock.callLater(RETRY_EVERY, self._retry)

        self.archive.append(batch).addCallbacks(written, failed)

    def delivering(self, delivery: Delivery) -> None:
        """Stamp the recipient's archive id on the stanza and archive both copies."""
        if delivery.copy_of is not None or delivery.stored or delivery.relayed:  # archived already
            return
        stanza, sender, bare = delivery.stanza, delivery.sender, delivery.bare
        _strip_ids(stanza, delivery.parties)
        if not archivable(stanza):
            return
        try:
            origin = jid_of(stanza.getAttribute("from", ""))
            addressee = jid_of(stanza.getAttribute("to", bare))
        except (InvalidFormat, RuntimeError):  # no or bad address: nothing to archive it under
            return
        body = body_of(stanza) or ""
        now = self.router.clock.seconds()
        messages: list[ArchivedMessage] = []
        copies = delivery.copies
        archive_id, at = self.ids.make(now)
        # Serialized once; each owner's copy only adds its stanza-id as the last child.
        whole = serialize(stanza)
        if not whole.endswith(_CLOSE):  # cannot happen for a message with a body; never drop it silently
            log.error("not archived, unexpected serialization of a message to {bare}: {xml}", bare=bare,
                      xml=whole[-200:])
            return
        head = whole[: -len(_CLOSE)]
        if sender is not None and sender.bare != bare:
            # the sender's copy: their own id, not the recipient's
            sent_id, sent_at = self.ids.twin(archive_id), at
            xml = head + _stanza_id_xml(sender.bare, sent_id)
            copies[sender.bare] = (sent_id, xml)
            messages.append(ArchivedMessage(sender.bare, sent_id, bare, addressee.resource or "", True, sent_at,
                                            body, xml))
        stanza.addChild(_stanza_id(bare, archive_id))
        xml = head + _stanza_id_xml(bare, archive_id)
        copies[bare] = (archive_id, xml)
        delivery.keep_text(xml)  # the recipient's copy is the stanza as it now goes out
        to_self = sender is not None and sender.bare == bare
        messages.append(ArchivedMessage(bare, archive_id, origin.userhost(), origin.resource or "", to_self, at,
                                        body, xml))
        delivery.wait_for(self._write(messages))

    def sent(self, stanza: domish.Element, sender: Session, peer: str) -> None:
        """Keep the sender's copy of a message the router fanned out another way
        (to a mail alias: each member's copy is archived as it is delivered)."""
        _strip_ids(stanza, {sender.bare})
        if not archivable(stanza):
            return
        try:
            resource = jid_of(stanza.getAttribute("to", peer)).resource or ""
        except (InvalidFormat, RuntimeError):
            return
        archive_id, at = self.ids.make(self.router.clock.seconds())
        mark = _stanza_id(sender.bare, archive_id)
        stanza.addChild(mark)
        xml = serialize(stanza)
        stanza.children.remove(mark)
        message = ArchivedMessage(sender.bare, archive_id, peer, resource, True, at, body_of(stanza) or "", xml)
        self._write([message])

    def refused(self, delivery: Delivery) -> None:
        """A message bounced after all leaves both archives (XEP-0313 §5.1)."""
        for owner, (archive_id, _) in delivery.copies.items():
            self.archive.remove(owner, [archive_id]).addErrback(
                lambda f, owner=owner: log.failure("taking a refused message out of {owner}'s history", f,
                                                   owner=owner)
            )


def register(router: Router, settings: Settings, stores: Stores) -> IService | None:
    archiving = Archiving(router, stores.archive)
    router.server_features.add(SID_NS)
    router.account_features.add(SID_NS)
    router.listen(events.MESSAGE_DELIVERING, archiving.delivering, events.ARCHIVE)
    router.listen(events.MESSAGE_REFUSED, archiving.refused)
    router.listen(events.MESSAGE_SENT, archiving.sent)

    default_days = settings.archive.retention_days

    @inlineCallbacks
    def sweep(domain: str):
        """One domain: its own retention or the server's, sparing what legal holds keep."""
        days = yield stores.directory.retention(domain)
        days = default_days if days is None else days
        if not days:
            return  # kept always
        holds = yield stores.directory.holds(domain)
        if any(not hold.localpart for hold in holds):
            return  # the whole domain is on hold
        spare = {hold.target for hold in holds}
        n = yield stores.archive.expire(router.clock.seconds() - days * 86400, domain, spare)
        if n:
            log.info("retention: deleted {n} messages of {domain} older than {days} days{held}", n=n,
                     domain=domain, days=days, held=f" ({len(spare)} users on legal hold spared)" if spare else "")

    @inlineCallbacks
    def expire():
        for domain in router.domains.names():
            try:
                yield sweep(domain)
            except Exception:
                log.failure("retention: expiring old history of {domain} failed", domain=domain)

    # a sweep as the service starts, then every EXPIRE_EVERY seconds
    retention = TimerService(EXPIRE_EVERY, expire)
    retention.clock = router.clock
    retention.setName("retention")
    return retention
