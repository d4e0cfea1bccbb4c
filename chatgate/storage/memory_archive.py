"""In-memory IArchive and IOfflineStore: for tests and throw-away demos, gone at exit.

The contract is the durable backends' (the same interface tests run against
all of them); answers are synchronous. There is no index by contact:
``between`` scans the owner's ids from its bound until it has *limit*.
"""

from __future__ import annotations

import bisect
from collections import defaultdict
from collections.abc import Collection
from itertools import islice, takewhile

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from chatgate.storage.archive import (
    ConversationsMixin,
    check_query,
    check_search,
    in_hosts,
    matches,
    named_ids,
    paginate,
    same_moment,
    search_cursor,
    search_hit,
    swept,
    unknown,
)
from chatgate.storage.interfaces import (
    ArchiveContact,
    ArchivedMessage,
    ArchivePage,
    ArchiveQuery,
    HistoryHits,
    HistorySearch,
    IArchive,
    IOfflineStore,
    OfflineMessage,
)


@implementer(IArchive)
class MemoryArchive(ConversationsMixin):
    """Each owner's messages in a list sorted by id."""

    def __init__(self) -> None:
        self._ids: dict[str, list[str]] = defaultdict(list)
        self._messages: dict[str, dict[str, ArchivedMessage]] = defaultdict(dict)

    def start(self) -> Deferred[None]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def append(self, messages: list[ArchivedMessage]) -> Deferred[None]:
        for message in messages:
            if message.id not in self._messages[message.owner]:
                bisect.insort(self._ids[message.owner], message.id)
            self._messages[message.owner][message.id] = message
        return succeed(None)

    def remove(self, owner: str, ids: list[str]) -> Deferred[None]:
        for archive_id in ids:
            if self._messages[owner].pop(archive_id, None) is not None:
                self._ids[owner].remove(archive_id)
        return succeed(None)

    def query(self, owner: str, query: ArchiveQuery) -> Deferred[ArchivePage]:
        check_query(query)
        archive = self._messages.get(owner, {})
        for archive_id in named_ids(query):
            if archive_id not in archive:
                return fail(unknown(archive_id))
        candidates = sorted(set(query.ids)) if query.ids is not None else self._ids.get(owner, ())
        result_set = [archive[i] for i in candidates if matches(archive[i], query)]
        return succeed(paginate(result_set, query))

    def between(
        self, owner: str, contact: str, after: str | None = None, before: str | None = None, limit: int = 50,
        newest: bool = False,
    ) -> Deferred[list[ArchivedMessage]]:
        ids, archive = self._ids.get(owner, []), self._messages.get(owner, {})
        begin = 0 if after is None else bisect.bisect_right(ids, after)
        end = len(ids) if before is None else bisect.bisect_left(ids, before)
        span = range(end - 1, begin - 1, -1) if newest else range(begin, end)
        found = list(islice((archive[ids[i]] for i in span if archive[ids[i]].contact == contact), limit))
        return succeed(found[::-1] if newest else found)

    def contacts(self, owner: str) -> Deferred[list[ArchiveContact]]:
        last: dict[str, float] = {}
        for archive_id in self._ids.get(owner, ()):
            message = self._messages[owner][archive_id]
            last[message.contact] = message.at
        ordered = sorted(last.items(), key=lambda item: item[1], reverse=True)
        return succeed([ArchiveContact(contact, at) for contact, at in ordered])

    def search(self, search: HistorySearch) -> Deferred[HistoryHits]:
        try:
            check_search(search)
        except ValueError as e:
            return fail(e)
        owners = [search.owner] if search.owner is not None else list(self._messages)
        hits = [m for owner in owners for m in self._messages.get(owner, {}).values()
                if search_hit(m, search) and (search.owner is not None or not self._twin_shown(m, search))]
        hits.sort(key=lambda m: (m.id, m.owner), reverse=True)
        page = hits[: search.max]
        return succeed(HistoryHits(page, search_cursor(page[-1]) if len(hits) > search.max else None))

    def _twin_shown(self, message: ArchivedMessage, search: HistorySearch) -> bool:
        """Whether *message* is a recipient's copy whose sender's copy is a hit in its place."""
        if message.outgoing or not in_hosts(message.contact, search.hosts):
            return False
        ids = self._ids.get(message.contact, [])
        at = bisect.bisect_left(ids, message.id[:14])
        twins = (self._messages[message.contact][i]
                 for i in takewhile(lambda i: same_moment(i, message.id), islice(ids, at, None)))
        return any(t.outgoing and t.contact == message.owner for t in twins)

    def expire(self, before: float, domain: str | None = None, spare: Collection[str] = ()) -> Deferred[int]:
        removed = 0
        for owner, archive in self._messages.items():
            if not swept(owner, domain, spare):
                continue
            old = [i for i in self._ids[owner] if archive[i].at < before]
            for archive_id in old:
                del archive[archive_id]
            self._ids[owner] = self._ids[owner][len(old):]
            removed += len(old)
        return succeed(removed)


    def erase(self, owner: str) -> Deferred[int]:
        erased = len(self._messages.pop(owner, {}))
        self._ids.pop(owner, None)
        return succeed(erased)


@implementer(IOfflineStore)
class MemoryOfflineStore:
    """Each owner's waiting messages in a list."""

    def __init__(self) -> None:
        self._waiting: dict[str, list[OfflineMessage]] = defaultdict(list)

    def start(self) -> Deferred[None]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def push(self, owner: str, message: OfflineMessage, quota: int | None) -> Deferred[bool]:
        waiting = self._waiting[owner]
        if quota is not None and len(waiting) >= quota:
            return succeed(False)
        waiting.append(message)
        return succeed(True)

    def pop(self, owner: str) -> Deferred[list[OfflineMessage]]:
        return succeed(self._waiting.pop(owner, []))

    def count(self, owner: str) -> Deferred[int]:
        return succeed(len(self._waiting.get(owner, ())))
