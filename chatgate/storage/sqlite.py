"""The SQLite IDirectory: the embedded, durable default backend.

One worker thread owns the connection, so blocking SQLite calls never run on
the reactor and never interleave. The file is shared by the running service
and the ``chatgate-admin`` command: WAL journal mode lets readers go on while
one writes, ``busy_timeout`` makes a writer wait for the other instead of
failing, and every write starts with ``BEGIN IMMEDIATE`` so writers are
serialised before they read (no deadlock upgrading a read lock) and change
rows commit in ``seq`` order.

Every mutation writes its :class:`Change` row in the same transaction. The
change feed polls that table every ``poll_interval`` seconds and tells the
watchers, so a change reaches every process sharing the file, this one
included, the same way.
"""

from __future__ import annotations

import json
import os
import sqlite3
import time
from collections.abc import Callable
from typing import Any, TypeVar

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import implementer

from chatgate.storage.interfaces import (
    Alias,
    Change,
    Credentials,
    DirectoryError,
    DirectoryWatcher,
    Domain,
    DuplicateDomain,
    DuplicateUser,
    Hold,
    IDirectory,
    RoomRecord,
    ScramKeys,
    Site,
    UnknownAlias,
    UnknownDomain,
    UnknownSite,
    UnknownUser,
    User,
    tell_watchers,
)
from chatgate.storage.sqlite_worker import SQLiteWorker, execute_statements

log = Logger()
T = TypeVar("T")

#: 2: users.credentials_at (when the user's credentials were last set);
#: 3: blocklist (XEP-0191), made by CREATE TABLE IF NOT EXISTS on a schema 2 file;
#: 4: rooms (team rooms' records) and private_xml (XEP-0049), the same way on a schema 3 file;
#: 5: pep (XEP-0163 nodes), the same way on a schema 4 file;
#: 6: retention (per domain) and holds (legal holds), the same way on a schema 5 file
SCHEMA_VERSION = 6
#: change rows older than this are deleted at start: every live process has read them
CHANGE_RETENTION = 24 * 3600.0

_SCHEMA = """
CREATE TABLE IF NOT EXISTS domains (
    name TEXT PRIMARY KEY,
    chat_enabled INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS users (
    domain TEXT NOT NULL REFERENCES domains(name),
    localpart TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    title TEXT NOT NULL DEFAULT '',
    department TEXT NOT NULL DEFAULT '',
    phone TEXT NOT NULL DEFAULT '',
    credentials_at REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (domain, localpart)
);
CREATE TABLE IF NOT EXISTS credentials (
    domain TEXT NOT NULL,
    localpart TEXT NOT NULL,
    mechanism TEXT NOT NULL,
    salt BLOB NOT NULL,
    stored_key BLOB NOT NULL,
    server_key BLOB NOT NULL,
    iterations INTEGER NOT NULL,
    PRIMARY KEY (domain, localpart, mechanism),
    FOREIGN KEY (domain, localpart) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS vcards (
    domain TEXT NOT NULL,
    localpart TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (domain, localpart),
    FOREIGN KEY (domain, localpart) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS private_xml (
    domain TEXT NOT NULL,
    localpart TEXT NOT NULL,
    namespace TEXT NOT NULL,
    xml TEXT NOT NULL,
    PRIMARY KEY (domain, localpart, namespace),
    FOREIGN KEY (domain, localpart) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS pep (
    domain TEXT NOT NULL,
    localpart TEXT NOT NULL,
    node TEXT NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (domain, localpart, node),
    FOREIGN KEY (domain, localpart) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS retention (
    domain TEXT PRIMARY KEY REFERENCES domains(name),
    days INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS holds (
    domain TEXT NOT NULL REFERENCES domains(name),
    localpart TEXT NOT NULL,
    by_whom TEXT NOT NULL,
    at REAL NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (domain, localpart)
);
CREATE TABLE IF NOT EXISTS secrets (
    name TEXT PRIMARY KEY,
    value BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS aliases (
    domain TEXT NOT NULL REFERENCES domains(name),
    localpart TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (domain, localpart)
);
CREATE TABLE IF NOT EXISTS alias_members (
    domain TEXT NOT NULL,
    alias TEXT NOT NULL,
    member TEXT NOT NULL,
    PRIMARY KEY (domain, alias, member),
    FOREIGN KEY (domain, alias) REFERENCES aliases(domain, localpart) ON DELETE CASCADE,
    FOREIGN KEY (domain, member) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS sites (
    host TEXT PRIMARY KEY,
    owner TEXT NOT NULL DEFAULT '',
    show_chat_link INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS blocklist (
    domain TEXT NOT NULL,
    localpart TEXT NOT NULL,
    jid TEXT NOT NULL,
    PRIMARY KEY (domain, localpart, jid),
    FOREIGN KEY (domain, localpart) REFERENCES users(domain, localpart) ON DELETE CASCADE
);
CREATE TABLE IF NOT EXISTS rooms (
    domain TEXT NOT NULL REFERENCES domains(name),
    localpart TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    enabled INTEGER NOT NULL DEFAULT 1,
    made INTEGER NOT NULL DEFAULT 0,
    owners TEXT NOT NULL DEFAULT '[]',
    members TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (domain, localpart)
);
CREATE TABLE IF NOT EXISTS changes (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    domain TEXT NOT NULL,
    localpart TEXT,
    at REAL NOT NULL
);
"""


@implementer(IDirectory)
class SQLiteDirectory:
    """IDirectory kept in the SQLite file at *path*.

    :param poll_interval: seconds between reads of the change feed (:meth:`poll`),
        kept for whoever runs them (the service's ``directory-feed`` timer).
    :param reactor: the reactor for the worker thread's results.
    """

    #: statements run on the new connection before the schema is checked
    pragmas: tuple[str, ...] = ("PRAGMA foreign_keys = ON",)

    def __init__(self, path: str, poll_interval: float = 0.5, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.path = path
        self.poll_interval = poll_interval
        self._reactor = reactor
        self._worker = SQLiteWorker(
            path, f"sqlite {os.path.basename(path)}", DirectoryError, "the directory is not started", reactor
        )
        self._watchers: list[DirectoryWatcher] = []
        self._last_seq = 0

    # -- life cycle

    def start(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        self._last_seq = await self._worker.start(self._create, self.pragmas)

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._worker.stop())

    def _create(self, db: sqlite3.Connection) -> int:
        """Create the schema (in the opening transaction); return the newest change's seq."""
        (version,) = db.execute("PRAGMA user_version").fetchone()
        if version > SCHEMA_VERSION:
            raise DirectoryError(
                f"{self.path}: made by a newer chatgate"
                f" (schema {version}, this one knows {SCHEMA_VERSION})"
            )
        execute_statements(db, _SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(users)")}
        if "credentials_at" not in columns:  # schema 1: tokens from sign-ins before now are refused
            db.execute("ALTER TABLE users ADD COLUMN credentials_at REAL NOT NULL DEFAULT 0")
            db.execute("UPDATE users SET credentials_at = ?", (time.time(),))
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        db.execute("DELETE FROM changes WHERE at < ?", (time.time() - CHANGE_RETENTION,))
        (last,) = db.execute("SELECT COALESCE(MAX(seq), 0) FROM changes").fetchone()
        return int(last)

    # -- running work on the worker thread

    def _read(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run *work(db, *args)* in one read transaction (one consistent snapshot)."""
        return self._worker.read(work, *args)

    def _write(self, work: Callable[..., T], *args: Any) -> Deferred[T]:
        """Run *work(db, *args)* in one write transaction, taking the write lock first."""
        return self._worker.write(work, *args)

    # -- change feed

    def watch(self, watcher: DirectoryWatcher) -> None:
        self._watchers.append(watcher)

    def poll(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._poll())

    async def _poll(self) -> None:
        """Tell the watchers the changes written since the last poll, by any process."""
        try:
            rows = await self._read(_changes_since, self._last_seq)
        except Exception:
            log.failure("cannot read the change feed of {path}", path=self.path)
            return  # the next poll tries again
        for seq, change in rows:
            self._last_seq = seq
            tell_watchers(self._watchers, change)

    # -- domains

    def domains(self) -> Deferred[list[Domain]]:
        return self._read(_domains)

    def add_domain(self, name: str) -> Deferred[Domain]:
        return self._write(_add_domain, name)

    def set_chat_enabled(self, name: str, enabled: bool) -> Deferred[None]:
        return self._write(_set_chat_enabled, name, enabled)

    # -- users

    def users(self, domain: str) -> Deferred[list[User]]:
        return self._read(_users, domain)

    def user(self, domain: str, localpart: str) -> Deferred[User | None]:
        return self._read(_user, domain, localpart)

    def add_user(self, user: User, credentials: Credentials) -> Deferred[None]:
        return self._write(_add_user, user, credentials)

    def update_user(self, user: User) -> Deferred[None]:
        return self._write(_update_user, user)

    def remove_user(self, domain: str, localpart: str) -> Deferred[None]:
        return self._write(_remove_user, domain, localpart)

    # -- credentials and vCards

    def credentials(self, domain: str, localpart: str) -> Deferred[Credentials | None]:
        return self._read(_credentials, domain, localpart)

    def set_credentials(self, domain: str, localpart: str, credentials: Credentials) -> Deferred[None]:
        return self._write(_set_credentials, domain, localpart, credentials)

    def credentials_changed(self, domain: str, localpart: str) -> Deferred[float | None]:
        return self._read(_credentials_changed, domain, localpart)

    def private_xml(self, domain: str, localpart: str, namespace: str) -> Deferred[str | None]:
        return self._read(_private_xml, domain, localpart, namespace)

    def set_private_xml(self, domain: str, localpart: str, namespace: str, xml: str, limit: int) -> Deferred[bool]:
        return self._write(_set_private_xml, domain, localpart, namespace, xml, limit)

    def retention(self, domain: str) -> Deferred[int | None]:
        return self._read(_retention, domain)

    def set_retention(self, domain: str, days: int | None) -> Deferred[None]:
        return self._write(_set_retention, domain, days)

    def holds(self, domain: str) -> Deferred[list[Hold]]:
        return self._read(_holds, domain)

    def put_hold(self, hold: Hold) -> Deferred[None]:
        return self._write(_put_hold, hold)

    def remove_hold(self, domain: str, localpart: str) -> Deferred[bool]:
        return self._write(_remove_hold, domain, localpart)

    def pep_nodes(self, domain: str, localpart: str) -> Deferred[dict[str, str]]:
        return self._read(_pep_nodes, domain, localpart)

    def set_pep_node(self, domain: str, localpart: str, node: str, record: str | None, max_nodes: int,
                     max_bytes: int) -> Deferred[bool]:
        return self._write(_set_pep_node, domain, localpart, node, record, max_nodes, max_bytes)

    def vcard(self, domain: str, localpart: str) -> Deferred[str | None]:
        return self._read(_vcard, domain, localpart)

    def set_vcard(self, domain: str, localpart: str, vcard: str) -> Deferred[None]:
        return self._write(_set_vcard, domain, localpart, vcard)

    # -- secrets

    def secret(self, name: str) -> Deferred[bytes]:
        return self._write(_secret, name)

    # -- aliases

    def aliases(self, domain: str) -> Deferred[list[Alias]]:
        return self._read(_aliases, domain)

    def alias(self, domain: str, localpart: str) -> Deferred[Alias | None]:
        return self._read(_alias, domain, localpart)

    def add_alias(self, alias: Alias) -> Deferred[None]:
        return self._write(_add_alias, alias)

    def set_alias(self, alias: Alias) -> Deferred[None]:
        return self._write(_set_alias, alias)

    def remove_alias(self, domain: str, localpart: str) -> Deferred[None]:
        return self._write(_remove_alias, domain, localpart)

    # -- rooms

    def rooms(self, domain: str) -> Deferred[list[RoomRecord]]:
        return self._read(_rooms, domain)

    def put_room(self, room: RoomRecord) -> Deferred[None]:
        return self._write(_put_room, room)

    def remove_room(self, domain: str, localpart: str) -> Deferred[None]:
        return self._write(_remove_room, domain, localpart)

    # -- sites

    def sites(self) -> Deferred[list[Site]]:
        return self._read(_sites)

    def site(self, host: str) -> Deferred[Site | None]:
        return self._read(_site, host)

    def put_site(self, site: Site) -> Deferred[None]:
        return self._write(_put_site, site)

    def remove_site(self, host: str) -> Deferred[None]:
        return self._write(_remove_site, host)

    # -- blocklists (XEP-0191)

    def blocklist(self, domain: str, localpart: str) -> Deferred[list[str]]:
        return self._read(_blocklist, domain, localpart)

    def block(self, domain: str, localpart: str, jids: list[str]) -> Deferred[list[str]]:
        return self._write(_block, domain, localpart, jids)

    def unblock(self, domain: str, localpart: str, jids: list[str] | None) -> Deferred[list[str]]:
        return self._write(_unblock, domain, localpart, jids)


# -- the SQL, run on the worker thread inside a transaction: standard SQL that PostgreSQL runs too
# (chatgate.storage.postgres: "?" placeholders become "%s" there)


def _record(db: sqlite3.Connection, kind: str, domain: str, localpart: str | None = None) -> None:
    db.execute(
        "INSERT INTO changes (kind, domain, localpart, at) VALUES (?, ?, ?, ?)",
        (kind, domain, localpart, time.time()),
    )


def _changes_since(db: sqlite3.Connection, seq: int) -> list[tuple[int, Change]]:
    rows = db.execute(
        "SELECT seq, kind, domain, localpart FROM changes WHERE seq > ? ORDER BY seq", (seq,)
    ).fetchall()
    return [(row[0], Change(row[1], row[2], row[3])) for row in rows]


def _domain_exists(db: sqlite3.Connection, name: str) -> bool:
    return db.execute("SELECT 1 FROM domains WHERE name = ?", (name,)).fetchone() is not None


def _user_exists(db: sqlite3.Connection, domain: str, localpart: str) -> bool:
    row = db.execute("SELECT 1 FROM users WHERE domain = ? AND localpart = ?", (domain, localpart))
    return row.fetchone() is not None


def _alias_exists(db: sqlite3.Connection, domain: str, localpart: str) -> bool:
    row = db.execute("SELECT 1 FROM aliases WHERE domain = ? AND localpart = ?", (domain, localpart))
    return row.fetchone() is not None


def _domains(db: sqlite3.Connection) -> list[Domain]:
    rows = db.execute("SELECT name, chat_enabled FROM domains ORDER BY name")
    return [Domain(name, bool(enabled)) for name, enabled in rows]


def _add_domain(db: sqlite3.Connection, name: str) -> Domain:
    if _domain_exists(db, name):
        raise DuplicateDomain(f"domain already exists: {name}")
    db.execute("INSERT INTO domains (name, chat_enabled) VALUES (?, 1)", (name,))
    _record(db, "domain-added", name)
    return Domain(name)


def _set_chat_enabled(db: sqlite3.Connection, name: str, enabled: bool) -> None:
    cursor = db.execute("UPDATE domains SET chat_enabled = ? WHERE name = ?", (int(enabled), name))
    if cursor.rowcount == 0:
        raise UnknownDomain(f"unknown domain: {name}")
    _record(db, "domain-enabled" if enabled else "domain-disabled", name)


_USER_COLUMNS = "localpart, domain, name, title, department, phone"


def _users(db: sqlite3.Connection, domain: str) -> list[User]:
    if not _domain_exists(db, domain):
        raise UnknownDomain(f"unknown domain: {domain}")
    rows = db.execute(f"SELECT {_USER_COLUMNS} FROM users WHERE domain = ? ORDER BY localpart", (domain,))
    return [User(*row) for row in rows]


def _user(db: sqlite3.Connection, domain: str, localpart: str) -> User | None:
    row = db.execute(
        f"SELECT {_USER_COLUMNS} FROM users WHERE domain = ? AND localpart = ?", (domain, localpart)
    ).fetchone()
    return None if row is None else User(*row)


def _add_user(db: sqlite3.Connection, user: User, credentials: Credentials) -> None:
    if not _domain_exists(db, user.domain):
        raise UnknownDomain(f"unknown domain: {user.domain}")
    if _user_exists(db, user.domain, user.localpart) or _alias_exists(db, user.domain, user.localpart):
        raise DuplicateUser(f"user already exists: {user.jid}")
    db.execute(
        f"INSERT INTO users ({_USER_COLUMNS}, credentials_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
        (user.localpart, user.domain, user.name, user.title, user.department, user.phone, time.time()),
    )
    _insert_credentials(db, user.domain, user.localpart, credentials)
    _record(db, "user-added", user.domain, user.localpart)


def _update_user(db: sqlite3.Connection, user: User) -> None:
    cursor = db.execute(
        "UPDATE users SET name = ?, title = ?, department = ?, phone = ? WHERE domain = ? AND localpart = ?",
        (user.name, user.title, user.department, user.phone, user.domain, user.localpart),
    )
    if cursor.rowcount == 0:
        raise UnknownUser(f"unknown user: {user.jid}")
    _record(db, "user-changed", user.domain, user.localpart)


def _remove_user(db: sqlite3.Connection, domain: str, localpart: str) -> None:
    key = (domain, localpart)
    # explicit deletes rather than ON DELETE CASCADE alone, should foreign keys be off
    db.execute("DELETE FROM credentials WHERE domain = ? AND localpart = ?", key)
    db.execute("DELETE FROM vcards WHERE domain = ? AND localpart = ?", key)
    db.execute("DELETE FROM private_xml WHERE domain = ? AND localpart = ?", key)
    db.execute("DELETE FROM pep WHERE domain = ? AND localpart = ?", key)
    db.execute("DELETE FROM blocklist WHERE domain = ? AND localpart = ?", key)
    groups = [row[0] for row in db.execute(
        "SELECT alias FROM alias_members WHERE domain = ? AND member = ? ORDER BY alias", key)]
    db.execute("DELETE FROM alias_members WHERE domain = ? AND member = ?", key)
    cursor = db.execute("DELETE FROM users WHERE domain = ? AND localpart = ?", key)
    if cursor.rowcount == 0:
        raise UnknownUser(f"unknown user: {localpart}@{domain}")
    _record(db, "user-removed", domain, localpart)
    for alias in groups:
        _record(db, "alias-changed", domain, alias)


def _credentials(db: sqlite3.Connection, domain: str, localpart: str) -> Credentials | None:
    if not _user_exists(db, domain, localpart):
        return None
    rows = db.execute(
        "SELECT mechanism, salt, stored_key, server_key, iterations FROM credentials"
        " WHERE domain = ? AND localpart = ?",
        (domain, localpart),
    )
    return {
        mechanism: ScramKeys(bytes(salt), bytes(stored), bytes(server), iterations)
        for mechanism, salt, stored, server, iterations in rows
    }


def _insert_credentials(
    db: sqlite3.Connection, domain: str, localpart: str, credentials: Credentials
) -> None:
    db.executemany(
        "INSERT INTO credentials (domain, localpart, mechanism, salt, stored_key, server_key, iterations)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [
            (domain, localpart, mechanism, keys.salt, keys.stored_key, keys.server_key, keys.iterations)
            for mechanism, keys in credentials.items()
        ],
    )


def _set_credentials(db: sqlite3.Connection, domain: str, localpart: str, credentials: Credentials) -> None:
    cursor = db.execute(
        "UPDATE users SET credentials_at = ? WHERE domain = ? AND localpart = ?", (time.time(), domain, localpart)
    )
    if cursor.rowcount == 0:
        raise UnknownUser(f"unknown user: {localpart}@{domain}")
    db.execute("DELETE FROM credentials WHERE domain = ? AND localpart = ?", (domain, localpart))
    _insert_credentials(db, domain, localpart, credentials)
    _record(db, "credentials-changed", domain, localpart)


def _credentials_changed(db: sqlite3.Connection, domain: str, localpart: str) -> float | None:
    row = db.execute("SELECT credentials_at FROM users WHERE domain = ? AND localpart = ?", (domain, localpart))
    found = row.fetchone()
    return None if found is None else float(found[0])


def _private_xml(db: sqlite3.Connection, domain: str, localpart: str, namespace: str) -> str | None:
    row = db.execute("SELECT xml FROM private_xml WHERE domain = ? AND localpart = ? AND namespace = ?",
                     (domain, localpart, namespace)).fetchone()
    return row[0] if row is not None else None


def _set_private_xml(db: sqlite3.Connection, domain: str, localpart: str, namespace: str, xml: str,
                     limit: int) -> bool:
    if not _user_exists(db, domain, localpart):
        raise UnknownUser(f"unknown user: {localpart}@{domain}")
    key = (domain, localpart)
    if _private_xml(db, domain, localpart, namespace) is None:
        (count,) = db.execute("SELECT COUNT(*) FROM private_xml WHERE domain = ? AND localpart = ?", key).fetchone()
        if count >= limit:
            return False
    db.execute("INSERT INTO private_xml (domain, localpart, namespace, xml) VALUES (?, ?, ?, ?)"
               " ON CONFLICT (domain, localpart, namespace) DO UPDATE SET xml = excluded.xml",
               (domain, localpart, namespace, xml))
    return True


def _retention(db: sqlite3.Connection, domain: str) -> int | None:
    row = db.execute("SELECT days FROM retention WHERE domain = ?", (domain,)).fetchone()
    return None if row is None else int(row[0])


def _set_retention(db: sqlite3.Connection, domain: str, days: int | None) -> None:
    if not _domain_exists(db, domain):
        raise UnknownDomain(f"unknown domain: {domain}")
    if days is None:
        db.execute("DELETE FROM retention WHERE domain = ?", (domain,))
    else:
        db.execute("INSERT INTO retention (domain, days) VALUES (?, ?)"
                   " ON CONFLICT (domain) DO UPDATE SET days = excluded.days", (domain, days))


def _holds(db: sqlite3.Connection, domain: str) -> list[Hold]:
    rows = db.execute("SELECT localpart, by_whom, at, reason FROM holds WHERE domain = ? ORDER BY localpart",
                      (domain,))
    return [Hold(domain, localpart, by, at, reason) for localpart, by, at, reason in rows]


def _put_hold(db: sqlite3.Connection, hold: Hold) -> None:
    if not _domain_exists(db, hold.domain):
        raise UnknownDomain(f"unknown domain: {hold.domain}")
    db.execute("INSERT INTO holds (domain, localpart, by_whom, at, reason) VALUES (?, ?, ?, ?, ?)"
               " ON CONFLICT (domain, localpart) DO UPDATE SET by_whom = excluded.by_whom, at = excluded.at,"
               " reason = excluded.reason", (hold.domain, hold.localpart, hold.by, hold.at, hold.reason))


def _remove_hold(db: sqlite3.Connection, domain: str, localpart: str) -> bool:
    return db.execute("DELETE FROM holds WHERE domain = ? AND localpart = ?", (domain, localpart)).rowcount > 0


def _pep_nodes(db: sqlite3.Connection, domain: str, localpart: str) -> dict[str, str]:
    rows = db.execute("SELECT node, record FROM pep WHERE domain = ? AND localpart = ?", (domain, localpart))
    return dict(rows.fetchall())


def _set_pep_node(db: sqlite3.Connection, domain: str, localpart: str, node: str, record: str | None,
                  max_nodes: int, max_bytes: int) -> bool:
    if not _user_exists(db, domain, localpart):
        raise UnknownUser(f"unknown user: {localpart}@{domain}")
    key = (domain, localpart, node)
    if record is None:
        if db.execute("DELETE FROM pep WHERE domain = ? AND localpart = ? AND node = ?", key).rowcount:
            _record(db, "pep-changed", domain, localpart)
        return True
    count, size = db.execute("SELECT COUNT(*), COALESCE(SUM(LENGTH(record)), 0) FROM pep"
                             " WHERE domain = ? AND localpart = ? AND node != ?", key).fetchone()
    if count >= max_nodes or size + len(record) > max_bytes:
        return False
    db.execute("INSERT INTO pep (domain, localpart, node, record) VALUES (?, ?, ?, ?)"
               " ON CONFLICT (domain, localpart, node) DO UPDATE SET record = excluded.record", (*key, record))
    _record(db, "pep-changed", domain, localpart)
    return True


def _vcard(db: sqlite3.Connection, domain: str, localpart: str) -> str | None:
    row = db.execute("SELECT xml FROM vcards WHERE domain = ? AND localpart = ?", (domain, localpart))
    found = row.fetchone()
    return None if found is None else found[0]


def _set_vcard(db: sqlite3.Connection, domain: str, localpart: str, vcard: str) -> None:
    if not _user_exists(db, domain, localpart):
        raise UnknownUser(f"unknown user: {localpart}@{domain}")
    db.execute(
        "INSERT INTO vcards (domain, localpart, xml) VALUES (?, ?, ?)"
        " ON CONFLICT (domain, localpart) DO UPDATE SET xml = excluded.xml",
        (domain, localpart, vcard),
    )


def _secret(db: sqlite3.Connection, name: str) -> bytes:
    # insert unless there, then SELECT: two processes racing to make it agree on the first one
    db.execute("INSERT INTO secrets (name, value) VALUES (?, ?) ON CONFLICT DO NOTHING", (name, os.urandom(32)))
    (value,) = db.execute("SELECT value FROM secrets WHERE name = ?", (name,)).fetchone()
    return bytes(value)


def _aliases(db: sqlite3.Connection, domain: str) -> list[Alias]:
    if not _domain_exists(db, domain):
        raise UnknownDomain(f"unknown domain: {domain}")
    names = db.execute("SELECT localpart FROM aliases WHERE domain = ? ORDER BY localpart", (domain,))
    return [_alias(db, domain, localpart) for (localpart,) in names.fetchall()]


def _alias(db: sqlite3.Connection, domain: str, localpart: str) -> Alias | None:
    row = db.execute("SELECT name FROM aliases WHERE domain = ? AND localpart = ?", (domain, localpart))
    found = row.fetchone()
    if found is None:
        return None
    members = db.execute(
        "SELECT member FROM alias_members WHERE domain = ? AND alias = ? ORDER BY member", (domain, localpart)
    )
    return Alias(localpart, domain, found[0], tuple(m for (m,) in members))


def _insert_members(db: sqlite3.Connection, alias: Alias) -> None:
    for member in alias.members:
        if not _user_exists(db, alias.domain, member):
            raise UnknownUser(f"unknown user: {member}@{alias.domain}")
    db.executemany(
        "INSERT INTO alias_members (domain, alias, member) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
        [(alias.domain, alias.localpart, member) for member in alias.members],
    )


def _add_alias(db: sqlite3.Connection, alias: Alias) -> None:
    if not _domain_exists(db, alias.domain):
        raise UnknownDomain(f"unknown domain: {alias.domain}")
    if _user_exists(db, alias.domain, alias.localpart) or _alias_exists(db, alias.domain, alias.localpart):
        raise DuplicateUser(f"address already in use: {alias.jid}")
    db.execute(
        "INSERT INTO aliases (domain, localpart, name) VALUES (?, ?, ?)", (alias.domain, alias.localpart, alias.name)
    )
    _insert_members(db, alias)
    _record(db, "alias-added", alias.domain, alias.localpart)


def _set_alias(db: sqlite3.Connection, alias: Alias) -> None:
    key = (alias.domain, alias.localpart)
    cursor = db.execute("UPDATE aliases SET name = ? WHERE domain = ? AND localpart = ?", (alias.name, *key))
    if cursor.rowcount == 0:
        raise UnknownAlias(f"unknown alias: {alias.jid}")
    db.execute("DELETE FROM alias_members WHERE domain = ? AND alias = ?", key)
    _insert_members(db, alias)
    _record(db, "alias-changed", alias.domain, alias.localpart)


def _remove_alias(db: sqlite3.Connection, domain: str, localpart: str) -> None:
    db.execute("DELETE FROM alias_members WHERE domain = ? AND alias = ?", (domain, localpart))
    cursor = db.execute("DELETE FROM aliases WHERE domain = ? AND localpart = ?", (domain, localpart))
    if cursor.rowcount == 0:
        raise UnknownAlias(f"unknown alias: {localpart}@{domain}")
    _record(db, "alias-removed", domain, localpart)


def _rooms(db: sqlite3.Connection, domain: str) -> list[RoomRecord]:
    if not _domain_exists(db, domain):
        raise UnknownDomain(f"unknown domain: {domain}")
    rows = db.execute("SELECT localpart, name, enabled, made, owners, members FROM rooms WHERE domain = ?"
                      " ORDER BY localpart", (domain,))
    return [RoomRecord(domain, localpart, name, bool(enabled), bool(made), tuple(json.loads(owners)),
                       tuple(json.loads(members))) for localpart, name, enabled, made, owners, members in rows]


def _put_room(db: sqlite3.Connection, room: RoomRecord) -> None:
    if not _domain_exists(db, room.domain):
        raise UnknownDomain(f"unknown domain: {room.domain}")
    db.execute(
        "INSERT INTO rooms (domain, localpart, name, enabled, made, owners, members) VALUES (?, ?, ?, ?, ?, ?, ?)"
        " ON CONFLICT (domain, localpart) DO UPDATE SET name = excluded.name, enabled = excluded.enabled,"
        " made = excluded.made, owners = excluded.owners, members = excluded.members",
        (room.domain, room.localpart, room.name, int(room.enabled), int(room.made),
         json.dumps(room.normalized().owners), json.dumps(room.normalized().members)),
    )
    _record(db, "room-changed", room.domain, room.localpart)


def _remove_room(db: sqlite3.Connection, domain: str, localpart: str) -> None:
    if db.execute("DELETE FROM rooms WHERE domain = ? AND localpart = ?", (domain, localpart)).rowcount:
        _record(db, "room-removed", domain, localpart)


def _sites(db: sqlite3.Connection) -> list[Site]:
    rows = db.execute("SELECT host, owner, show_chat_link FROM sites ORDER BY host")
    return [Site(host, owner, bool(show)) for host, owner, show in rows]


def _site(db: sqlite3.Connection, host: str) -> Site | None:
    row = db.execute("SELECT host, owner, show_chat_link FROM sites WHERE host = ?", (host,)).fetchone()
    return None if row is None else Site(row[0], row[1], bool(row[2]))


def _put_site(db: sqlite3.Connection, site: Site) -> None:
    db.execute(
        "INSERT INTO sites (host, owner, show_chat_link) VALUES (?, ?, ?) ON CONFLICT (host)"
        " DO UPDATE SET owner = excluded.owner, show_chat_link = excluded.show_chat_link",
        (site.host, site.owner, int(site.show_chat_link)),
    )


def _remove_site(db: sqlite3.Connection, host: str) -> None:
    if db.execute("DELETE FROM sites WHERE host = ?", (host,)).rowcount == 0:
        raise UnknownSite(f"unknown site: {host}")


def _blocklist(db: sqlite3.Connection, domain: str, localpart: str) -> list[str]:
    rows = db.execute("SELECT jid FROM blocklist WHERE domain = ? AND localpart = ? ORDER BY jid", (domain, localpart))
    return [row[0] for row in rows]


def _block(db: sqlite3.Connection, domain: str, localpart: str, jids: list[str]) -> list[str]:
    if not _user_exists(db, domain, localpart):
        raise UnknownUser(f"unknown user: {localpart}@{domain}")
    added = []
    for jid in dict.fromkeys(jids):
        cursor = db.execute("INSERT INTO blocklist (domain, localpart, jid) VALUES (?, ?, ?) ON CONFLICT DO NOTHING",
                            (domain, localpart, jid))
        if cursor.rowcount:
            added.append(jid)
    if added:
        _record(db, "blocklist-changed", domain, localpart)
    return added


def _unblock(db: sqlite3.Connection, domain: str, localpart: str, jids: list[str] | None) -> list[str]:
    if not _user_exists(db, domain, localpart):
        raise UnknownUser(f"unknown user: {localpart}@{domain}")
    held = set(_blocklist(db, domain, localpart))
    removed = sorted(held if jids is None else held.intersection(jids))
    db.executemany("DELETE FROM blocklist WHERE domain = ? AND localpart = ? AND jid = ?",
                   [(domain, localpart, jid) for jid in removed])
    if removed:
        _record(db, "blocklist-changed", domain, localpart)
    return removed
