"""PostgreSQL under the SQL stores: the connection, its worker thread, the schema and its migrations.

The directory, the archive and offline messages keep their SQLite logic
(:mod:`chatgate.storage.sqlite`, :mod:`chatgate.storage.sqlite_archive`: standard
SQL, group-committed history writes) and run it here on a PostgreSQL database
that every node of a cluster shares (``[storage] backend = postgresql``,
``[archive] backend / offline_backend = postgresql``, ``[storage] postgresql_dsn``).

- The driver is psycopg 3, synchronous, on the store's own worker thread
  (:class:`PostgresWorker`, the SQLite worker's loop on another connection), so
  no call blocks the reactor and a store's calls run in order; each store of a
  node holds one connection. psycopg releases the GIL while it waits on the server.
- :class:`PgConnection` gives the stores' SQL the sqlite3 connection's shape
  (``?`` placeholders become psycopg's ``%s``; ``in_transaction``).
- Isolation: reads run in one REPEATABLE READ, READ ONLY transaction (one
  snapshot, as SQLite's). Directory writes take one transaction-scoped advisory
  lock first, as SQLite's ``BEGIN IMMEDIATE`` takes the write lock: writers are
  serialised before they read, so a check-then-insert cannot race another
  node's, and change rows commit in ``seq`` order, which the change feed's
  ``seq > last`` poll relies on. History writes take no lock (their rows are
  keyed by message, the contacts' upsert is ordered).
- Schema: numbered migrations in :data:`MIGRATIONS`, the version in
  ``chatgate_schema``. A store on an empty database applies them all; on an
  older one it refuses to start and names ``chatgate-admin db upgrade``
  (:func:`upgrade`), which applies the missing ones in one transaction under an
  advisory lock (PostgreSQL's DDL is transactional: all or nothing); a newer one
  is refused.
- A lost connection fails the work under way (the store's one-line error) and
  the next call connects again.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any, TypeVar
from urllib.parse import urlsplit

from chatgate.storage.sqlite_worker import SQLiteWorker

T = TypeVar("T")

#: transaction-scoped advisory locks: directory writes, and schema changes
DIRECTORY_LOCK = 0x63686174_0001
SCHEMA_LOCK = 0x63686174_0002

#: 1: the directory and offline messages; 2: the archive, with its words for full-text search
MIGRATIONS: list[str] = [
    """
CREATE TABLE domains (
    name TEXT PRIMARY KEY,
    chat_enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE users (
    domain TEXT NOT NULL REFERENCES domains(name),
    localpart TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL DEFAULT '',
    department TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    credentials_at DOUBLE PRECISION NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, localpart)
);
CREATE TABLE credentials (
    domain TEXT NOT NULL,
    localpart TEXT NOT NULL,
    mechanism TEXT NOT NULL,
    salt BYTEA NOT NULL,
    stored_key BYTEA NOT NULL,
    server_key BYTEA NOT NULL,
    iterations INTEGER NOT NULL,
    PRIMARY KEY (domain, localpart, mechanism),
    FOREIGN KEY (domain, localpart) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE vcards (
    domain TEXT NOT NULL,
    localpart TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (domain, localpart),
    FOREIGN KEY (domain, localpart) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE private_xml (
    domain TEXT NOT NULL,
    localpart TEXT NOT NULL,
    namespace TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (domain, localpart, namespace),
    FOREIGN KEY (domain, localpart) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE pep (
    domain TEXT NOT NULL,
    localpart TEXT NOT NULL,
    node TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (domain, localpart, node),
    FOREIGN KEY (domain, localpart) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE retention (
    domain TEXT PRIMARY KEY REFERENCES domains(name),
    days INTEGER NOT NULL
);
CREATE TABLE holds (
    domain TEXT NOT NULL REFERENCES domains(name),
    localpart TEXT NOT NULL,
    by_whom TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (domain, localpart)
);
CREATE TABLE secrets (
    name TEXT PRIMARY KEY,
    value BYTEA NOT NULL
);
CREATE TABLE aliases (
    domain TEXT NOT NULL REFERENCES domains(name),
    localpart TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (domain, localpart)
);
CREATE TABLE alias_members (
    domain TEXT NOT NULL,
    alias TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (domain, alias, member),
    FOREIGN KEY (domain, alias) REFERENCES aliases(domain, localpart) ON DELETE CASCADE,
    FOREIGN KEY (domain, member) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE sites (
    host TEXT PRIMARY KEY,
    owner TEXT NOT NULL DEFAULT '',
    show_chat_link INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE blocklist (
    domain TEXT NOT NULL,
    localpart TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (domain, localpart, jid),
    FOREIGN KEY (domain, localpart) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE rooms (
    domain TEXT NOT NULL REFERENCES domains(name),
    localpart TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    made INTEGER NOT NULL DEFAULT 0,
    owners TEXT NOT NULL DEFAULT '[]',
    members TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (domain, localpart)
);
CREATE TABLE changes (
    seq BIGSERIAL PRIMARY KEY,
    kind TEXT NOT NULL,
    domain TEXT NOT NULL,
    localpart TEXT,
    at DOUBLE PRECISION NOT NULL
);
CREATE TABLE offline (
    seq BIGSERIAL PRIMARY KEY,
    owner TEXT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    stanza TEXT NOT NULL
);
CREATE INDEX offline_by_owner ON offline (owner, seq);
""",
    """
CREATE TABLE archive (
    seq BIGSERIAL PRIMARY KEY,
    owner TEXT NOT NULL,
    id TEXT NOT NULL,
    contact TEXT NOT NULL,
    resource TEXT NOT NULL,
    outgoing INTEGER NOT NULL,
    body TEXT NOT NULL,
    stanza TEXT NOT NULL,
    words TSVECTOR NOT NULL
);
CREATE UNIQUE INDEX archive_by_owner ON archive (owner, id);
CREATE INDEX archive_by_contact ON archive (owner, contact, id);
CREATE INDEX archive_words ON archive USING gin (words);
CREATE TABLE archive_contacts (
    owner TEXT NOT NULL,
    contact TEXT NOT NULL,
    last_id TEXT NOT NULL,
    PRIMARY KEY (owner, contact)
);
""",
]
SCHEMA_VERSION = len(MIGRATIONS)

_PLACEHOLDER = re.compile(r"\?")


def describe(dsn: str) -> str:
    """The database a DSN names, for messages: ``postgresql host:port/name``, never its password."""
    if "://" in dsn:
        parts = urlsplit(dsn)
        where = f"{parts.hostname or 'localhost'}{f':{parts.port}' if parts.port else ''}{parts.path or '/'}"
    else:  # key=value form
        fields = dict(re.findall(r"(\w+)\s*=\s*('(?:[^'\\]|\\.)*'|\S+)", dsn))
        where = f"{fields.get('host', 'localhost')}:{fields.get('port', '5432')}/{fields.get('dbname', '')}"
    return f"postgresql {where}"


class PgConnection:
    """A psycopg connection in autocommit mode (transactions are the worker's BEGIN/COMMIT), with the
    sqlite3 connection's shape that the stores' SQL is written for."""

    def __init__(self, connection: Any) -> None:
        self._connection = connection
        self._sql: dict[str, str] = {}
        #: statements that went through (a transaction that failed with none sent nothing)
        self.done = 0
        import psycopg

        self._idle = psycopg.pq.TransactionStatus.IDLE

    def _translated(self, sql: str) -> str:
        found = self._sql.get(sql)
        if found is None:
            found = self._sql[sql] = _PLACEHOLDER.sub("%s", sql.replace("%", "%%"))
        return found

    def execute(self, sql: str, params: Iterable[Any] = ()) -> Any:
        params = tuple(params)
        cursor = self._connection.execute(self._translated(sql) if params else sql, params or None)
        self.done += 1
        return cursor

    def executemany(self, sql: str, rows: Iterable[Iterable[Any]]) -> Any:
        cursor = self._connection.cursor()
        cursor.executemany(self._translated(sql), [tuple(row) for row in rows])
        self.done += 1
        return cursor

    @property
    def in_transaction(self) -> bool:
        return self._connection.info.transaction_status != self._idle

    @property
    def broken(self) -> bool:
        return bool(self._connection.closed or self._connection.broken)

    def close(self) -> None:
        self._connection.close()


def connect(dsn: str, label: str, error: type[Exception]) -> PgConnection:
    """A connection to *dsn* (``error`` in one line, naming *label*, if there is none)."""
    try:
        import psycopg
    except ImportError:
        raise error("the postgresql backend needs psycopg: pip install 'psycopg[binary]'") from None
    try:
        return PgConnection(psycopg.connect(dsn, autocommit=True, connect_timeout=10,
                                            application_name="chatgate"))
    except psycopg.Error as e:
        raise error(f"{label}: cannot connect: {str(e).strip().splitlines()[0]}") from None


def _driver_error() -> type[Exception]:
    try:
        import psycopg
    except ImportError:
        return OSError
    return psycopg.Error  # type: ignore[no-any-return]


class PostgresWorker(SQLiteWorker):
    """:class:`SQLiteWorker`'s thread on one PostgreSQL connection.

    :param lock: an advisory lock every write transaction takes first (the directory's), or None.
    """

    begin_read = "BEGIN ISOLATION LEVEL REPEATABLE READ, READ ONLY"

    def __init__(self, dsn: str, name: str, error: type[Exception], not_started: str, reactor: Any,
                 lock: int | None = None) -> None:
        super().__init__(describe(dsn), name, error, not_started, reactor)
        self.dsn = dsn
        self.driver_error = _driver_error()
        self.begin_write = "BEGIN" if lock is None else f"BEGIN; SELECT pg_advisory_xact_lock({lock})"

    def _connect(self) -> PgConnection:
        return connect(self.dsn, self.path, self._error)

    def _transaction(self, begin: str, work: Callable[..., T], args: tuple[Any, ...]) -> T:
        """A connection found lost (the server restarted, or ended the session) is made again; the work
        is tried again on it if that cannot write twice: a read, or a write that failed at its BEGIN."""
        db: PgConnection | None = self._db  # type: ignore[assignment]
        if db is not None and db.broken:
            db = self._reconnect()
        before = db.done if db is not None else 0
        try:
            return super()._transaction(begin, work, args)
        except self.driver_error:
            db = self._db  # type: ignore[assignment]
            if db is None or not db.broken:
                raise
            safe = begin == self.begin_read or db.done == before
            self._reconnect()
            if not safe:
                raise
        return super()._transaction(begin, work, args)

    def _reconnect(self) -> PgConnection:
        self._db = None
        db = self._connect()
        self._db = db  # type: ignore[assignment]
        return db


# -- the schema


def schema_version(db: PgConnection) -> int:
    """The database's schema version; 0 for one chatgate has never written to."""
    (exists,) = db.execute("SELECT to_regclass('chatgate_schema') IS NOT NULL").fetchone()
    if not exists:
        return 0
    (version,) = db.execute("SELECT COALESCE(MAX(version), 0) FROM chatgate_schema").fetchone()
    return int(version)


def _apply(db: PgConnection, target: int) -> list[int]:
    """Apply the migrations from the database's version up to *target*, in the transaction under way
    (which holds SCHEMA_LOCK); the versions applied."""
    db.execute("CREATE TABLE IF NOT EXISTS chatgate_schema (version INTEGER PRIMARY KEY,"
               " applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    applied = []
    for version in range(schema_version(db) + 1, target + 1):
        db.execute(MIGRATIONS[version - 1])
        db.execute("INSERT INTO chatgate_schema (version) VALUES (?)", (version,))
        applied.append(version)
    return applied


def check_schema(db: PgConnection, label: str, error: type[Exception]) -> None:
    """At a store's start (in its opening transaction): an empty database gets the whole schema; an
    older or newer one is refused in one line."""
    db.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
    version = schema_version(db)
    if version == 0:
        _apply(db, SCHEMA_VERSION)
    elif version < SCHEMA_VERSION:
        raise error(f"{label}: schema {version}, this chatgate needs {SCHEMA_VERSION}:"
                    " run chatgate-admin db upgrade")
    elif version > SCHEMA_VERSION:
        raise error(f"{label}: made by a newer chatgate (schema {version}, this one knows {SCHEMA_VERSION})")


def upgrade(dsn: str, error: type[Exception], target: int = SCHEMA_VERSION) -> tuple[int, list[int]]:
    """Bring the database up to *target* (``chatgate-admin db upgrade``): (the version it had, the
    versions applied). Blocking; run it where nothing else waits (the admin command)."""
    label = describe(dsn)
    db = connect(dsn, label, error)
    driver_error = _driver_error()
    try:
        db.execute("BEGIN")
        db.execute(f"SELECT pg_advisory_xact_lock({SCHEMA_LOCK})")
        before = schema_version(db)
        if before > SCHEMA_VERSION:
            raise error(f"{label}: made by a newer chatgate (schema {before}, this one knows {SCHEMA_VERSION})")
        applied = _apply(db, target)
        db.execute("COMMIT")
        return before, applied
    except driver_error as e:
        raise error(f"{label}: {str(e).strip().splitlines()[0]}") from None
    finally:
        db.close()
