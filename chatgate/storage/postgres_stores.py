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
    """What the history stores change to run on PostgreSQL (a mixin before the SQLite store)."""

    tables: str
    path: str
    _reactor: Any

    def __init__(self, dsn: str, commit_interval: float = 0.0, reactor: Any = None) -> None:
        super().__init__(describe(dsn), commit_interval, reactor)  # type: ignore[call-arg]
        self._worker = PostgresWorker(dsn, f"postgresql {self.tables}", ArchiveError,
                                      f"the {self.tables} store is not started", self._reactor)

    def start(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._worker.start(self._create))

    def _create(self, db: PgConnection) -> None:
        check_schema(db, self.path, ArchiveError)


@implementer(IArchive)
class PostgresArchive(_OnPostgres, SQLiteArchive):
    """IArchive in the tables ``archive`` and ``archive_contacts`` of a PostgreSQL database."""

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
