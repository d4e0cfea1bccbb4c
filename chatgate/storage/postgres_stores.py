"""The directory, the archive and offline messages on PostgreSQL (:mod:`chatgate.storage.postgres`).

Each is its SQLite store (the same SQL, the same group-committed history
writes, see :mod:`chatgate.storage.sqlite_archive`) on a :class:`PostgresWorker`;
what differs is said here: the schema is checked (and made on an empty
database) at start, directory writes take the directory's advisory lock, and
full-text search (XEP-0431) reads a ``tsvector`` of the message's folded words
(:func:`chatgate.storage.archive.search_words`, the same words the rule of
:func:`~chatgate.storage.archive.text_matches` sees) through a GIN index, each
word a prefix (``'word':*``), all of them (``&``).
"""

from __future__ import annotations

import time
from typing import Any

from twisted.internet.defer import Deferred
from zope.interface import implementer

from chatgate.storage.archive import search_words
from chatgate.storage.interfaces import (
    ArchivedMessage,
    ArchiveError,
    DirectoryError,
    IArchive,
    IDirectory,
    IOfflineStore,
)
from chatgate.storage.postgres import DIRECTORY_LOCK, PgConnection, PostgresWorker, check_schema, describe
from chatgate.storage.sqlite import CHANGE_RETENTION, SQLiteDirectory
from chatgate.storage.sqlite_archive import _COLUMNS, SQLiteArchive, SQLiteOfflineStore


@implementer(IDirectory)
class PostgresDirectory(SQLiteDirectory):
    """IDirectory in the PostgreSQL database *dsn*; its change feed is polled like SQLite's."""

    pragmas = ()

    def __init__(self, dsn: str, poll_interval: float = 0.5, reactor: Any = None) -> None:
        super().__init__(describe(dsn), poll_interval, reactor)
        self._worker = PostgresWorker(dsn, "postgresql directory", DirectoryError, "the directory is not started",
                                      self._reactor, lock=DIRECTORY_LOCK)

    def _create(self, db: PgConnection) -> int:  # type: ignore[override]
        check_schema(db, self.path, DirectoryError)
        db.execute("DELETE FROM changes WHERE at < ?", (time.time() - CHANGE_RETENTION,))
        (last,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(last)


class _OnPostgres:
    """What the history stores change to run on PostgreSQL (a mixin before the SQLite store).

    Writes keep the SQLite store's one connection and group commit. Reads go to a pool of
    *readers* connections of their own, each on its own thread, so a long search or a
    page of a large archive never holds up the commits that acknowledge messages, nor
    the other reads. A read still sees every write queued before it: if any is not
    committed yet, the read waits for the end of the batch that holds it (on SQLite the
    one connection's order gives that)."""

    tables: str
    path: str
    _reactor: Any
    _queued: int
    _handed: int
    _committing: bool

    def __init__(self, dsn: str, commit_interval: float = 0.0, reactor: Any = None, readers: int = 4) -> None:
        super().__init__(describe(dsn), commit_interval, reactor)  # type: ignore[call-arg]
        self._worker = PostgresWorker(dsn, f"postgresql {self.tables}", ArchiveError,
                                      f"the {self.tables} store is not started", self._reactor)
        self._readers = [PostgresWorker(dsn, f"postgresql {self.tables} reader {n}", ArchiveError,
                                        f"the {self.tables} store is not started", self._reactor)
                         for n in range(1, max(1, readers) + 1)]
        #: writes whose batch has ended (committed or failed)
        self._done = 0
        #: reads waiting for writes queued before them: (writes needed, work, args, result)
        self._after_writes: list[tuple[int, Any, tuple[Any, ...], Deferred[Any]]] = []

    def start(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        await self._worker.start(self._create)
        try:
            for reader in self._readers:
                await reader.start(lambda db: None)
        except BaseException:
            await self._stop_readers()
            await self._worker.stop()
            raise

    async def _stop(self) -> None:
        await super()._stop()  # type: ignore[misc]
        await self._stop_readers()

    async def _stop_readers(self) -> None:
        for reader in self._readers:
            await reader.stop()

    def _create(self, db: PgConnection) -> None:
        check_schema(db, self.path, ArchiveError)

    def _read(self, work: Any, *args: Any) -> Deferred[Any]:
        if self._done >= self._queued:
            return self._reader().read(work, *args)
        d: Deferred[Any] = Deferred()
        self._after_writes.append((self._queued, work, args, d))
        if not self._committing:
            self._flush()  # type: ignore[attr-defined]  (the writes it waits for go now)
        return d

    def _reader(self) -> PostgresWorker:
        """The reader with the least work queued."""
        return min(self._readers, key=lambda reader: reader.pending)

    def _next(self, result: Any) -> None:
        self._done = self._handed  # one batch in flight at a time: every write handed over has ended
        waiting, self._after_writes = self._after_writes, []
        for needed, work, args, d in waiting:
            if needed <= self._done:
                self._reader().read(work, *args).chainDeferred(d)
            else:
                self._after_writes.append((needed, work, args, d))
        super()._next(result)  # type: ignore[misc]


@implementer(IArchive)
class PostgresArchive(_OnPostgres, SQLiteArchive):
    """IArchive in the tables ``archive`` and ``archive_contacts`` of a PostgreSQL database."""

    def merge_index(self, db: Any) -> None:
        """(the GIN index needs no merging step: PostgreSQL's own pending list and autovacuum)"""

    def insert_rows(self, db: Any, messages: list[ArchivedMessage]) -> None:
        db.executemany(
            f"INSERT INTO archive ({_COLUMNS}, words) VALUES (?, ?, ?, ?, ?, ?, ?, to_tsvector('simple', ?))"
            " ON CONFLICT DO NOTHING",
            [(m.owner, m.id, m.contact, m.resource, int(m.outgoing), m.body, m.stanza, search_words(m.body))
             for m in messages],
        )

    @staticmethod
    def text_term(terms: list[str]) -> tuple[str, str]:
        # the terms are \w+ runs (search_terms): nothing in them to quote but the quote itself
        return "words @@ to_tsquery('simple', ?)", " & ".join("'" + t.replace("'", "''") + "':*" for t in terms)


@implementer(IOfflineStore)
class PostgresOfflineStore(_OnPostgres, SQLiteOfflineStore):
    """IOfflineStore in the table ``offline`` of a PostgreSQL database."""
