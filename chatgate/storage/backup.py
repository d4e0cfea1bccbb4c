"""Backing up and restoring the SQLite store (``chatgate-admin backup`` / ``restore``).

One SQLite file holds the directory, the archive and offline messages
(``[storage] path``). A backup is SQLite's online backup of it (one read
transaction: a consistent copy while the service writes), into a new file
made 0600. A restore checks the file is a chatgate store this version can
open, refuses while a node runs on the store (every node holds a shared lock
on ``<store>.running`` while it runs: :func:`hold_running`), and copies it
into place the same way. Uploaded files are plain files in ``[upload] path``:
copy that folder beside the backup.
"""

from __future__ import annotations

import fcntl
import os
import sqlite3
from pathlib import Path
from typing import IO

from chatgate.private_files import new_file
from chatgate.storage.sqlite import SCHEMA_VERSION

#: tables every chatgate store has
_TABLES = {"domains", "users", "credentials", "archive", "offline"}


class BackupError(Exception):
    """A backup or restore that cannot be done, in one line."""


def _lock_path(store: str) -> str:
    return store + ".running"


def hold_running(store: str) -> IO[bytes]:
    """Mark the store as used by a running node until the returned file is closed."""
    lock = open(_lock_path(store), "ab")  # noqa: SIM115 - held open for the life of the service
    fcntl.flock(lock, fcntl.LOCK_SH)
    return lock


def backup(store: str, target: str) -> int:
    """Copy *store* into the new file *target* (0600), consistently while it is in use; its pages."""
    if not os.path.exists(store):
        raise BackupError(f"{store}: no store there")
    try:
        os.close(new_file(target))  # 0600, and refuses a file that exists
    except FileExistsError:
        raise BackupError(f"{target} exists: give a new file") from None
    except OSError as e:
        raise BackupError(f"{target}: {e.strerror}") from None
    try:
        with sqlite3.connect(store, timeout=30) as source, sqlite3.connect(target) as copy:
            source.backup(copy)
            return copy.execute("PRAGMA page_count").fetchone()[0]
    except sqlite3.Error as e:
        os.unlink(target)
        raise BackupError(f"backup of {store} failed: {e}") from None


def check(path: str) -> None:
    """BackupError unless *path* is a chatgate store this version can open."""
    try:
        # read-only through a URI, the path percent-encoded: a file named "a?b#c" is that file
        with sqlite3.connect(Path(path).absolute().as_uri() + "?mode=ro", uri=True) as db:
            tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
            (version,) = db.execute("PRAGMA user_version").fetchone()
    except sqlite3.Error as e:
        raise BackupError(f"{path}: not a chatgate store ({e})") from None
    if not _TABLES <= tables:
        raise BackupError(f"{path}: not a chatgate store (no {', '.join(sorted(_TABLES - tables))})")
    if version > SCHEMA_VERSION:
        raise BackupError(f"{path}: made by a newer chatgate (schema {version}, this one knows {SCHEMA_VERSION})")


def _owned_like(folder: str, paths: list[str]) -> None:
    """Files a restore run as root makes belong to the store folder's owner (the service's user)."""
    if os.geteuid() != 0:
        return
    owner = os.stat(folder)
    for path in paths:
        os.chown(path, owner.st_uid, owner.st_gid)


def restore(source: str, store: str) -> None:
    """Put the backup *source* in place of *store*; refused while a node runs on it."""
    if not os.path.exists(source):
        raise BackupError(f"{source}: no such file")
    check(source)
    folder = os.path.dirname(store) or "."
    if not os.path.isdir(folder):
        raise BackupError(f"{folder}: no such folder")
    made = [path for path in (_lock_path(store), store) if not os.path.exists(path)]
    with open(_lock_path(store), "ab") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BackupError(f"a chatgate is running on {store}: stop it first") from None
        if not os.path.exists(store):
            os.close(new_file(store))
        _owned_like(folder, made)
        try:
            with sqlite3.connect(source) as backup_db, sqlite3.connect(store) as db:
                backup_db.backup(db)
        except sqlite3.Error as e:
            raise BackupError(f"restore into {store} failed: {e}") from None
