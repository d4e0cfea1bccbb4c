"""SQLite IArchive and IOfflineStore: history in the embedded, durable default store.

Each store owns one connection on one worker thread, so SQLite never blocks
the reactor and its calls never interleave. The tables live in the
``[storage] path`` file beside the directory's (WAL journal, so readers never
wait for the writer; ``busy_timeout`` for the short moments two connections
want the write lock).

Writes are group-committed, one batch at a time. An append (or a removal,
an offline push) is queued on the reactor thread. While a batch is being
committed on the worker, new writes wait in the queue; when that commit ends,
everything that queued meanwhile goes at once as the next batch (one
transaction, at most :data:`MAX_BATCH` writes; any more go in the batch after).
So the worker never has more than one batch, and one synced commit covers
whatever came during the one before it: under load the batches grow instead of
queuing up behind each other, each with its own fsync.

Batches start at most once per ``commit_interval`` (default 10 ms). A write
to a store whose last batch started longer ago goes at the end of the reactor
turn, with the other writes of that turn, so a message alone is not delayed;
one that comes sooner waits for the rest of the interval or for the commit in
flight, whichever ends later. Each commit writes every page it changed to the
WAL (mostly kernel time; bench/RESULTS.md, History: pages, not syncs, are the
cost), and fewer, larger commits write a hot page once for many messages:
in the whole server (bench/load.py S2, 100 pairs, 2026-11-22) batches 10 ms
apart instead of back to back took server CPU at 4,000 messages/s from 61 % to
49 % and at 6,000 from 83 % to 71 %, for a p50 latency of 9.5 ms instead of
1.9 ms at 4,000 messages/s (bench/RESULTS.md, History). 0 starts each batch as
soon as the one before is committed.

The words index (FTS5, kept by triggers) does not merge its segments by
itself: inside the commit that fills a level, that merge held the writer for
up to two seconds under load. The batches merge it instead, a bounded step at
a time (:meth:`SQLiteArchive.merge_index`).

A read sees every write queued before it: it goes to the worker (which runs
its work in order) after the batch holding those writes; if they are still
queued behind the batch in flight, the read waits until they are handed over.
One failing write fails alone: each write runs in its own SAVEPOINT, except
that the archive first tries a run of appends in a row as one statement in
one savepoint and, only if that fails, runs them again one savepoint each. The
archive's contacts are upserted once per (owner, contact) and batch, with the
greatest id (before any removal in the batch, which recounts them).
``synchronous = FULL`` makes each commit durable (the WAL is synced to disk)
before the writes' Deferreds fire. :meth:`stop` commits the batch in flight
and everything queued before closing.

What a crash (process killed, machine down) can lose: only writes whose
Deferreds have not fired, i.e. the batch being committed at that moment and
the writes queued behind it (those that came during its commit or, for an
idle store, in the current reactor turn; more only while writes come faster
than the worker commits them, see ``bench/RESULTS.md``). Every write whose
Deferred succeeded is on disk.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Callable, Collection
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatgate.storage.archive import (
    ERASE_ALL,
    ConversationsMixin,
    check_query,
    check_search,
    id_ceiling,
    id_floor,
    named_ids,
    search_cursor,
    search_position,
    search_terms,
    swept,
    time_of,
    unknown,
)
from chatgate.storage.interfaces import (
    ArchiveContact,
    ArchivedMessage,
    ArchiveError,
    ArchivePage,
    ArchiveQuery,
    HistoryHits,
    HistorySearch,
    IArchive,
    IOfflineStore,
    OfflineMessage,
)
from chatgate.storage.sqlite_worker import SQLiteWorker, execute_statements

log = Logger()
T = TypeVar("T")

#: the most writes in one batch (a queue that reaches it goes to an idle worker at once)
MAX_BATCH = 2000
#: rows deleted per transaction when expiring or erasing: the first chunk, and the bounds of the
#: size the sweep adapts to, so that one chunk holds the writer about EXPIRE_TARGET seconds
EXPIRE_CHUNK = 500
EXPIRE_CHUNK_RANGE = (50, 5000)
EXPIRE_TARGET = 0.02
#: seconds between two steps of merging the words index, and the pages each step writes at most
MERGE_EVERY = 0.05
MERGE_PAGES = 100
MERGE = "INSERT INTO archive_text (archive_text, rank) VALUES ('merge', ?)"
HISTORY_SCHEMA_VERSION = 1

_SCHEMA = {
    "archive": """
CREATE TABLE IF NOT EXISTS archive (
    seq INTEGER PRIMARY KEY,
    owner TEXT NOT NULL,
    id TEXT NOT NULL,
    contact TEXT NOT NULL,
    resource TEXT NOT NULL,
    outgoing INTEGER NOT NULL,
    body TEXT NOT NULL,
    stanza TEXT NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS archive_by_owner ON archive (owner, id);
CREATE INDEX IF NOT EXISTS archive_by_contact ON archive (owner, contact, id);
CREATE VIRTUAL TABLE IF NOT EXISTS archive_text USING fts5(
    body, content='archive', content_rowid='seq', tokenize='unicode61 remove_diacritics 2', detail=none, columnsize=0
);
CREATE TRIGGER IF NOT EXISTS archive_text_added AFTER INSERT ON archive BEGIN
    INSERT INTO archive_text (rowid, body) VALUES (new.seq, new.body);
END;
CREATE TRIGGER IF NOT EXISTS archive_text_removed AFTER DELETE ON archive BEGIN
    INSERT INTO archive_text (archive_text, rowid, body) VALUES ('delete', old.seq, old.body);
END;
CREATE TABLE IF NOT EXISTS archive_contacts (
    owner TEXT NOT NULL,
    contact TEXT NOT NULL,
    last_id TEXT NOT NULL,
    PRIMARY KEY (owner, contact)
) WITHOUT ROWID;
""",
    "offline": """
CREATE TABLE IF NOT EXISTS offline (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    owner TEXT NOT NULL,
    at REAL NOT NULL,
    stanza TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS offline_by_owner ON offline (owner, seq);
""",
}

_Write = tuple[Callable[..., Any], tuple[Any, ...], Deferred[Any]]
_Work = tuple[Callable[..., Any], tuple[Any, ...]]
_Outcome = tuple[bool, Any]


class _BatchedSQLite:
    """One connection on one worker thread; writes queued and group-committed, one batch at a time."""

    #: which part of _SCHEMA this store creates
    tables = ""
    def __init__(self, path: str, commit_interval: float = 0.0, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.path = path
        self.commit_interval = commit_interval
        self._reactor = reactor
        self._worker = SQLiteWorker(
            path, f"sqlite {self.tables} {os.path.basename(path)}", ArchiveError,
            f"the {self.tables} store is not started", reactor,
        )
        self._queue: list[_Write] = []
        self._timer: Any = None
        #: a batch is on the worker: the queue waits for its commit
        self._committing = False
        #: when the last batch went to the worker (reactor seconds)
        self._last_start = float("-inf")
        #: writes ever queued, writes ever handed to the worker (a read needs handed >= queued at its time)
        self._queued = self._handed = 0
        #: reads waiting for the writes queued before them to be handed over: (writes needed, work, args, result)
        self._reads: list[tuple[int, Callable[..., Any], tuple[Any, ...], Deferred[Any]]] = []
        #: fired at the end of the batch in flight (stop waits on them)
        self._commit_waiters: list[Deferred[None]] = []

    # -- life cycle

    def start(self) -> Deferred[None]:
        # A checkpoint copies every page the WAL holds back into the file; under load each commit
        # rewrites the same hot index leaves, so checkpoints ten times rarer (the WAL grows to
        # ~40 MB) copy each of them once instead of ten times: bench/load.py S2, three A/B pairs,
        # server CPU at 6,000 messages/s 75.7 -> 68.8 %, at 7,000 90.2 -> 84.8 %, bytes written -20 %.
        pragmas = ["PRAGMA synchronous = FULL", "PRAGMA cache_size = -16000", "PRAGMA wal_autocheckpoint = 10000"]
        return Deferred.fromCoroutine(self._worker.start(self._create, pragmas))

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        if not self._worker.started:
            return
        # the batch in flight, then what queued behind it (not waiting for the spacing), until nothing is left
        while True:
            self._flush()
            if not self._committing:
                break
            waiter: Deferred[None] = Deferred()
            self._commit_waiters.append(waiter)
            await waiter
        await self._worker.stop()  # closes after every batch and read handed over before it

    def _create(self, db: Any) -> None:
        """Check the history schema's version and create this store's tables (in the opening transaction)."""
        db.execute("CREATE TABLE IF NOT EXISTS history_schema (version INTEGER NOT NULL)")
        row = db.execute("SELECT MAX(version) FROM history_schema").fetchone()
        if row[0] is None:
            db.execute("INSERT INTO history_schema (version) VALUES (?)", (HISTORY_SCHEMA_VERSION,))
        elif row[0] > HISTORY_SCHEMA_VERSION:
            raise ArchiveError(
                f"{self.path}: history made by a newer chatgate"
                f" (schema {row[0]}, this one knows {HISTORY_SCHEMA_VERSION})"
            )
        made = db.execute("SELECT sql FROM sqlite_master WHERE name = 'archive_text'").fetchone()
        if made is not None and "detail=none" not in made[0]:
            # made with positions and sizes, which no search here reads and every message paid for
            # (bench/RESULTS.md, "S2 again"): made again without them, below
            db.execute("DROP TABLE archive_text")
            made = None
        indexed = made is not None
        execute_statements(db, _SCHEMA[self.tables])
        if self.tables == "archive" and not indexed:
            # an archive from before full-text search (or this index): its messages indexed once
            # (minutes for millions)
            db.execute("INSERT INTO archive_text (archive_text) VALUES ('rebuild')")
        if self.tables == "archive":
            # the words index's segments are merged a little at a time by the batches (merge_index),
            # never all at once inside one commit
            db.execute("INSERT INTO archive_text (archive_text, rank) VALUES ('automerge', 0)")

    # -- the reactor side: queue, hand over, one batch in flight

    def _read(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run *work(db, *args)* in a read transaction, after every write queued before it."""
        if self._committing and self._queue:
            # the queue goes when the batch in flight is committed; the read goes right behind it
            d: Deferred[T] = Deferred()
            self._reads.append((self._queued, work, args, d))
            return d
        self._flush()  # (the worker runs in order: the read comes after any batch handed over)
        return self._worker.read(work, *args)

    def _write(self, work: Callable[..., T], *args: Any, now: bool = False) -> Deferred[T]:
        """Queue *work(db, *args)* for the next batch; fires once it is committed."""
        d: Deferred[T] = Deferred()
        self._queue.append((work, args, d))
        self._queued += 1
        if self._committing:
            pass  # goes with the next batch, when the one in flight is committed
        elif now or len(self._queue) >= MAX_BATCH:
            self._flush()
        else:
            self._flush_later(self._spacing())
        return d

    def _flush_later(self, delay: float) -> None:
        if self._timer is None:
            self._timer = self._reactor.callLater(delay, self._flush)

    def _spacing(self) -> float:
        """Seconds until the next batch may go: batches start at most once per ``commit_interval``
        (0 at the end of this reactor turn)."""
        return max(0.0, self._last_start + self.commit_interval - self._reactor.seconds())

    def _flush(self) -> None:
        """Hand the queued writes (up to MAX_BATCH) to the worker as one transaction, unless a batch is
        in flight: then they go when it is committed."""
        if self._timer is not None:
            if self._timer.active():
                self._timer.cancel()
            self._timer = None
        if self._committing or not self._queue:
            return
        batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
        self._handed += len(batch)
        self._committing = True
        self._last_start = self._reactor.seconds()
        d = self._worker.write(self._commit, [(work, args) for work, args, _ in batch])
        d.addCallbacks(self._committed, self._batch_failed, callbackArgs=(batch,), errbackArgs=(batch,))
        d.addBoth(self._next)
        self._hand_reads()

    def _hand_reads(self) -> None:
        """Hand over the waiting reads whose writes have all been handed over (they run after those)."""
        if not self._reads:
            return
        ready = [r for r in self._reads if r[0] <= self._handed]
        self._reads = [r for r in self._reads if r[0] > self._handed]
        for _, work, args, d in ready:
            self._worker.read(work, *args).chainDeferred(d)

    def _next(self, result: Any) -> None:
        """The batch in flight is done: what queued during its commit goes as the next batch, as soon as
        the spacing allows."""
        if isinstance(result, Failure):
            log.failure("history batch bookkeeping failed", result)
        self._committing = False
        spacing = self._spacing()
        if self._queue and spacing > 0 and len(self._queue) < MAX_BATCH:
            self._flush_later(spacing)
        else:
            self._flush()
        self._hand_reads()  # (any left when the store could not hand a batch over)
        waiters, self._commit_waiters = self._commit_waiters, []
        for waiter in waiters:
            waiter.callback(None)

    # -- the worker thread

    def _commit(self, db: Any, batch: list[_Work]) -> list[_Outcome]:
        """Every write of *batch*, each in its own savepoint (inside the batch's transaction)."""
        return [self._savepoint(db, work, args) for work, args in batch]

    def _savepoint(self, db: Any, work: Callable[..., Any], args: tuple[Any, ...]) -> _Outcome:
        """Run one write in its own savepoint: (True, result), or (False, the exception) with nothing written."""
        db.execute("SAVEPOINT write")
        try:
            outcome: _Outcome = (True, work(db, *args))
        except Exception as e:
            db.execute("ROLLBACK TO write")
            outcome = (False, self._error(e))
        db.execute("RELEASE write")
        return outcome

    def _error(self, e: Exception) -> Exception:
        return ArchiveError(f"{self.path}: {e}") if isinstance(e, self._worker.driver_error) else e

    # -- back on the reactor

    @staticmethod
    def _committed(outcomes: list[_Outcome], batch: list[_Write]) -> None:
        for (ok, value), (_, _, d) in zip(outcomes, batch, strict=True):
            if ok:
                d.callback(value)
            else:
                d.errback(Failure(value))

    @staticmethod
    def _batch_failed(failure: Failure, batch: list[_Write]) -> None:
        for _, _, d in batch:
            d.errback(failure)


@implementer(IArchive)
class SQLiteArchive(ConversationsMixin, _BatchedSQLite):
    """IArchive in the tables ``archive`` and ``archive_contacts``."""

    tables = "archive"
    #: when the words index was last merged (time.monotonic, on the worker thread)
    _merged = float("-inf")

    def insert_rows(self, db: Any, messages: list[ArchivedMessage]) -> None:
        """Insert *messages*, leaving those already there as they are."""
        db.executemany(
            f"INSERT INTO archive ({_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            [(m.owner, m.id, m.contact, m.resource, int(m.outgoing), m.body, m.stanza) for m in messages],
        )

    @staticmethod
    def text_term(terms: list[str]) -> tuple[str, str]:
        """The WHERE term (and its parameter) of a full-text search for *terms*: each word as a
        prefix (FTS5 §3.4: "word"*), all of them (implicit AND)."""
        return ("seq IN (SELECT rowid FROM archive_text WHERE archive_text MATCH ?)",
                " ".join('"' + term.replace('"', '""') + '"*' for term in terms))

    def _commit(self, db: Any, batch: list[_Work]) -> list[_Outcome]:
        """The writes of *batch* in order; each run of appends in a row goes as one statement, and the
        contacts' last ids once per batch (see :func:`_append`)."""
        outcomes: list[_Outcome] = []
        latest: dict[tuple[str, str], str] = {}  # (owner, contact) -> greatest id appended, not yet upserted
        appends: list[list[ArchivedMessage]] = []
        for work, args in batch:
            if work is _append:
                appends.append(args[0])
                continue
            outcomes += self._appends(db, appends, latest)
            appends = []
            _upsert_contacts(db, latest)  # a removal recounts the contacts: they must be up to date
            outcomes.append(self._savepoint(db, work, args))
        outcomes += self._appends(db, appends, latest)
        _upsert_contacts(db, latest)
        self.merge_index(db)
        return outcomes

    def merge_index(self, db: Any) -> None:
        """At most every MERGE_EVERY seconds, about MERGE_PAGES pages of the words index's merging
        (FTS5 'merge'; only once a level has four segments, or a merge is under way). FTS5's own
        automatic merges run inside the commit that fills a level, and a level's merge is four times
        the one below: at 3,000 messages/s one commit took 270 ms every ~54 s and 1-2 s every
        ~3.5 minutes (bench/RESULTS.md, "SQLite's lone spikes")."""
        now = time.monotonic()
        if now - self._merged < MERGE_EVERY:
            return
        self._merged = now
        db.execute("SAVEPOINT merge")  # upkeep: a failure here never fails the batch's messages
        try:
            db.execute(MERGE, (MERGE_PAGES,))
        except sqlite3.Error as e:
            db.execute("ROLLBACK TO merge")
            log.warn("{path}: merging the words index: {error}", path=self.path, error=e)
        db.execute("RELEASE merge")

    def _appends(
        self, db: Any, appends: list[list[ArchivedMessage]], latest: dict[tuple[str, str], str]
    ) -> list[_Outcome]:
        """Appends in a row: all their rows in one statement in one savepoint; if that fails, again one
        append at a time, each in its own savepoint, so that only the failing ones fail."""
        if not appends:
            return []
        db.execute("SAVEPOINT appends")
        try:
            _append(db, [m for messages in appends for m in messages], latest, self.insert_rows)
        except Exception:
            db.execute("ROLLBACK TO appends")
            db.execute("RELEASE appends")
            return [self._savepoint(db, _append, (messages, latest, self.insert_rows)) for messages in appends]
        db.execute("RELEASE appends")
        return [(True, None)] * len(appends)

    def append(self, messages: list[ArchivedMessage]) -> Deferred[None]:
        return self._write(_append, messages)

    def remove(self, owner: str, ids: list[str]) -> Deferred[None]:
        return self._write(_remove, owner, ids)

    def query(self, owner: str, query: ArchiveQuery) -> Deferred[ArchivePage]:
        try:
            check_query(query)
        except ValueError as e:
            return fail(e)
        return self._read(_query, owner, query, self.text_term)

    def search(self, search: HistorySearch) -> Deferred[HistoryHits]:
        try:
            check_search(search)
        except ValueError as e:
            return fail(e)
        return self._read(_search, search, self.text_term)

    def between(
        self, owner: str, contact: str, after: str | None = None, before: str | None = None, limit: int = 50,
        newest: bool = False,
    ) -> Deferred[list[ArchivedMessage]]:
        return self._read(_between, owner, contact, after, before, limit, newest)

    def contacts(self, owner: str) -> Deferred[list[ArchiveContact]]:
        return self._read(_contacts, owner)

    def expire(self, before: float, domain: str | None = None, spare: Collection[str] = ()) -> Deferred[int]:
        return Deferred.fromCoroutine(self._expire(id_floor(before), domain, spare))

    def erase(self, owner: str) -> Deferred[int]:
        return Deferred.fromCoroutine(self._expire(ERASE_ALL, None, (), [owner]))

    async def _expire(self, cutoff: str, domain: str | None, spare: Collection[str],
                      owners: list[str] | None = None) -> int:
        """Delete in chunks sized to hold the writer about EXPIRE_TARGET s each, and after each chunk
        wait as long as it took: the messages' appends, committed in the batches between, wait at most
        one chunk, and the sweep takes at most half the writer (and of the core it shares with the
        reactor). bench/retention.py: 5,000-row chunks back to back held S2's p99 at 600-840 ms for
        the 55 s of a 1,000,000-row sweep on SQLite."""
        if owners is None:
            owners = [owner for owner in await self._read(_owners) if swept(owner, domain, spare)]
        removed, chunk = 0, EXPIRE_CHUNK
        low, high = EXPIRE_CHUNK_RANGE
        for owner in owners:
            while True:
                started = self._reactor.seconds()
                count = await self._write(_expire_chunk, owner, cutoff, chunk, now=True)
                took = self._reactor.seconds() - started
                removed += count
                if count < chunk:
                    break
                chunk = int(min(high, max(low, chunk * EXPIRE_TARGET / max(took, 0.001))))
                await deferLater(self._reactor, took, lambda: None)
        return removed


@implementer(IOfflineStore)
class SQLiteOfflineStore(_BatchedSQLite):
    """IOfflineStore in the table ``offline``."""

    tables = "offline"

    def push(self, owner: str, message: OfflineMessage, quota: int | None) -> Deferred[bool]:
        return self._write(_push, owner, message, quota)

    def pop(self, owner: str) -> Deferred[list[OfflineMessage]]:
        return self._write(_pop, owner, now=True)

    def count(self, owner: str) -> Deferred[int]:
        return self._read(lambda db: db.execute("SELECT COUNT(*) FROM offline WHERE owner = ?", (owner,))
                          .fetchone()[0])


# -- the SQL, run on the worker thread inside a transaction

_COLUMNS = "owner, id, contact, resource, outgoing, body, stanza"


def _message(row: tuple[Any, ...]) -> ArchivedMessage:
    owner, archive_id, contact, resource, outgoing, body, stanza = row
    return ArchivedMessage(owner, archive_id, contact, resource, bool(outgoing), time_of(archive_id), body, stanza)


def _append(db: Any, messages: list[ArchivedMessage], latest: dict[tuple[str, str], str],
            insert: Callable[[Any, list[ArchivedMessage]], None]) -> None:
    """Insert *messages* (by *insert*: the ones already there are left as they are) and note each
    (owner, contact)'s greatest id in *latest*, for :func:`_upsert_contacts` (*latest* is changed
    only if nothing raised)."""
    insert(db, messages)
    newer: dict[tuple[str, str], str] = {}
    for m in messages:
        key = (m.owner, m.contact)
        best = newer[key] if key in newer else latest.get(key)
        if best is None or m.id > best:
            newer[key] = m.id
    latest.update(newer)


def _upsert_contacts(db: Any, latest: dict[tuple[str, str], str]) -> None:
    """Raise each (owner, contact)'s last id to the one in *latest* (one statement per pair, not per message)."""
    if latest:
        # in key order, so that two nodes upserting the same pairs (PostgreSQL) take their locks alike
        db.executemany(
            "INSERT INTO archive_contacts (owner, contact, last_id) VALUES (?, ?, ?)"
            " ON CONFLICT (owner, contact) DO UPDATE SET last_id = CASE"
            " WHEN excluded.last_id > archive_contacts.last_id THEN excluded.last_id"
            " ELSE archive_contacts.last_id END",
            [(owner, contact, last_id) for (owner, contact), last_id in sorted(latest.items())],
        )
        latest.clear()


def _remove(db: Any, owner: str, ids: list[str]) -> None:
    contacts = set()
    for archive_id in ids:
        row = db.execute("DELETE FROM archive WHERE owner = ? AND id = ? RETURNING contact", (owner, archive_id))
        contacts.update(r[0] for r in row.fetchall())
    for contact in contacts:
        _recount_contact(db, owner, contact)


def _recount_contact(db: Any, owner: str, contact: str) -> None:
    (last,) = db.execute(
        "SELECT MAX(id) FROM archive WHERE owner = ? AND contact = ?", (owner, contact)
    ).fetchone()
    if last is None:
        db.execute("DELETE FROM archive_contacts WHERE owner = ? AND contact = ?", (owner, contact))
    else:
        db.execute("UPDATE archive_contacts SET last_id = ? WHERE owner = ? AND contact = ?", (last, owner, contact))


def _owners(db: Any) -> list[str]:
    return [row[0] for row in db.execute("SELECT DISTINCT owner FROM archive_contacts")]


def _expire_chunk(db: Any, owner: str, cutoff: str, limit: int) -> int:
    rows = db.execute(
        "DELETE FROM archive WHERE seq IN"
        " (SELECT seq FROM archive WHERE owner = ? AND id < ? ORDER BY id LIMIT ?) RETURNING contact",
        (owner, cutoff, limit),
    ).fetchall()
    for contact in {r[0] for r in rows}:
        _recount_contact(db, owner, contact)
    return len(rows)


def _filters(owner: str | None, query: ArchiveQuery,
             text_term: Callable[[list[str]], tuple[str, str]]) -> tuple[list[str], list[Any]]:
    """The WHERE terms that make the query's result set (in *owner*'s archive; None: in any)."""
    terms, params = ([], []) if owner is None else (["owner = ?"], [owner])
    for term, value in (
        ("contact = ?", query.contact),
        ("resource = ?", query.resource),
        ("id >= ?", None if query.start is None else id_floor(query.start)),
        ("id < ?", None if query.end is None else id_ceiling(query.end)),
        ("id > ?", query.after_id),
        ("id < ?", query.before_id),
    ):
        if value is not None:
            terms.append(term)
            params.append(value)
    if query.ids is not None:
        terms.append(f"id IN ({', '.join('?' * len(query.ids))})")
        params.extend(query.ids)
    if query.text is not None:
        term, param = text_term(search_terms(query.text))
        terms.append(term)
        params.append(param)
    return terms, params


def _query(db: Any, owner: str, query: ArchiveQuery,
           text_term: Callable[[list[str]], tuple[str, str]]) -> ArchivePage:
    named = named_ids(query)
    if named:
        found = {row[0] for row in db.execute(
            f"SELECT id FROM archive WHERE owner = ? AND id IN ({', '.join('?' * len(named))})", (owner, *named)
        )}
        for archive_id in named:
            if archive_id not in found:
                raise unknown(archive_id)
    terms, params = _filters(owner, query, text_term)
    where = " AND ".join(terms)

    def count(extra: str = "", *extra_params: Any) -> int:
        sql = f"SELECT COUNT(*) FROM archive WHERE {where}{extra}"
        return db.execute(sql, (*params, *extra_params)).fetchone()[0]

    def rows(extra: str, order: str, *extra_params: Any, offset: int = 0) -> list[ArchivedMessage]:
        sql = f"SELECT {_COLUMNS} FROM archive WHERE {where}{extra} ORDER BY id {order} LIMIT ? OFFSET ?"
        return [_message(r) for r in db.execute(sql, (*params, *extra_params, query.max + 1, offset))]

    total = count()
    if query.before is not None:
        if query.before:
            found_rows = rows(" AND id < ?", "DESC", query.before)
            preceding = count(" AND id < ?", query.before)
        else:
            found_rows = rows("", "DESC")
            preceding = total
        page = found_rows[: query.max][::-1]
        first_index = preceding - len(page)
    elif query.after is not None:
        found_rows = rows(" AND id > ?", "ASC", query.after)
        page = found_rows[: query.max]
        first_index = count(" AND id <= ?", query.after)
    else:
        first_index = query.index or 0
        found_rows = rows("", "ASC", offset=first_index)
        page = found_rows[: query.max]
    complete = len(found_rows) <= query.max
    return ArchivePage(page, total, first_index if page else None, complete)


def _hosts_term(column: str, hosts: tuple[str, ...]) -> tuple[str, list[str]]:
    """The WHERE term (and its parameters) for "*column* is a bare JID of one of *hosts*"."""
    patterns = ["%@" + host.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") for host in hosts]
    return "(" + " OR ".join(f"{column} LIKE ? ESCAPE '\\'" for _ in hosts) + ")", patterns


def _search(db: Any, search: HistorySearch, text_term: Callable[[list[str]], tuple[str, str]]) -> HistoryHits:
    """An administrator's search (:class:`HistorySearch`): newest first, by ``archive_by_owner``
    for one archive, else from the words' index; a recipient's copy is left out where its
    sender's copy (the same moment, :meth:`ArchiveIds.twin`) is a hit."""
    terms_sql, params = _filters(search.owner, ArchiveQuery(contact=search.contact, start=search.start,
                                                            end=search.end, text=search.text), text_term)
    owners, patterns = _hosts_term("owner", search.hosts)
    terms_sql += ["body != ''", owners]
    params += patterns
    if search.before is not None:
        before_id, before_owner = search_position(search.before)
        terms_sql.append("(id < ? OR (id = ? AND owner < ?))")
        params += [before_id, before_id, before_owner]
    if search.owner is None:
        contacts, patterns = _hosts_term("archive.contact", search.hosts)
        terms_sql.append(
            f"(outgoing = 1 OR NOT {contacts} OR NOT EXISTS (SELECT 1 FROM archive AS twin"
            " WHERE twin.owner = archive.contact AND twin.contact = archive.owner AND twin.outgoing = 1"
            # 'g' after every hex digit and the dash, whatever the collation (a linguistic one ignores the dash)
            " AND twin.id >= substr(archive.id, 1, 14) AND twin.id < substr(archive.id, 1, 14) || 'g'))")
        params += patterns
    sql = (f"SELECT {_COLUMNS} FROM archive WHERE {' AND '.join(terms_sql)}"
           " ORDER BY id DESC, owner DESC LIMIT ?")
    found = [_message(r) for r in db.execute(sql, (*params, search.max + 1))]
    page = found[: search.max]
    return HistoryHits(page, search_cursor(page[-1]) if len(found) > search.max else None)


def _between(db: Any, owner: str, contact: str, after: str | None, before: str | None, limit: int,
             newest: bool) -> list[ArchivedMessage]:
    """At most *limit* rows by ``archive_by_contact`` (owner, contact, id): no count, no offset."""
    terms, params = ["owner = ?", "contact = ?"], [owner, contact]
    for term, value in (("id > ?", after), ("id < ?", before)):
        if value is not None:
            terms.append(term)
            params.append(value)
    sql = (f"SELECT {_COLUMNS} FROM archive WHERE {' AND '.join(terms)}"
           f" ORDER BY id {'DESC' if newest else 'ASC'} LIMIT ?")
    found = [_message(r) for r in db.execute(sql, (*params, limit))]
    return found[::-1] if newest else found


def _contacts(db: Any, owner: str) -> list[ArchiveContact]:
    rows = db.execute(
        "SELECT contact, last_id FROM archive_contacts WHERE owner = ? ORDER BY last_id DESC", (owner,)
    )
    return [ArchiveContact(contact, time_of(last_id)) for contact, last_id in rows]


def _push(db: Any, owner: str, message: OfflineMessage, quota: int | None) -> bool:
    if quota is not None:
        (waiting,) = db.execute("SELECT COUNT(*) FROM offline WHERE owner = ?", (owner,)).fetchone()
        if waiting >= quota:
            return False
    db.execute("INSERT INTO offline (owner, at, stanza) VALUES (?, ?, ?)", (owner, message.at, message.stanza))
    return True


def _pop(db: Any, owner: str) -> list[OfflineMessage]:
    rows = db.execute("DELETE FROM offline WHERE owner = ? RETURNING seq, at, stanza", (owner,)).fetchall()
    return [OfflineMessage(at, stanza) for _, at, stanza in sorted(rows)]
