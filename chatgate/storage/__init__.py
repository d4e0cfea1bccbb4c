"""Stores, reached through the interfaces in :mod:`chatgate.storage.interfaces`.

:func:`open_directory` is the one place a backend is picked from the
configuration, shared by the service and the admin command so both open the
same store the same way.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from chatgate.private_files import make_private_folder
from chatgate.storage.interfaces import DirectoryError, IArchive, IDirectory, IFileStore, IOfflineStore
from chatgate.storage.memory_archive import MemoryArchive, MemoryOfflineStore

if TYPE_CHECKING:
    from chatgate.config import Settings


@dataclass
class Stores:
    """The stores a running service uses, handed to every feature's register().

    ``service.py`` always passes the configured archive and offline stores;
    the in-memory defaults serve unit tests that only care about the directory.
    """

    directory: IDirectory
    archive: IArchive = field(default_factory=MemoryArchive)
    offline: IOfflineStore = field(default_factory=MemoryOfflineStore)
    #: uploaded files (XEP-0363); None when [upload] is off
    files: IFileStore | None = None


def open_files(settings: Settings) -> IFileStore | None:
    """The store of uploaded files (XEP-0363), ``[upload] path``; None when uploads are off."""
    if not settings.upload.enabled:
        return None
    from chatgate.storage.files import FolderFileStore

    return FolderFileStore(settings.path(settings.upload.path))


def open_directory(settings: Settings) -> IDirectory:
    """The directory backend *settings* names, not started yet.

    For SQLite the file's folder is created if missing; DirectoryError (one
    line) if that fails. Redis is the ``[storage] redis_*`` server, as for the archive.
    """
    if settings.storage.backend == "memory":
        from chatgate.storage.memory import MemoryDirectory

        return MemoryDirectory()
    if settings.storage.backend == "redis":
        from chatgate.storage.redis_directory import RedisDirectory

        return RedisDirectory(**_redis_options(settings))  # type: ignore[arg-type]
    if settings.storage.backend == "postgresql":
        from chatgate.storage.postgres_stores import PostgresDirectory

        return PostgresDirectory(settings.storage.postgresql_dsn, settings.storage.poll_interval)
    from chatgate.storage.sqlite import SQLiteDirectory

    return SQLiteDirectory(_sqlite_path(settings), settings.storage.poll_interval)


def open_archive(settings: Settings) -> IArchive:
    """The history backend ``[archive] backend`` names, not started yet."""
    return _open_archive_store(settings, settings.archive.backend, "Archive")


def open_offline(settings: Settings) -> IOfflineStore:
    """The offline-message backend ``[archive] offline_backend`` names, not started yet."""
    return _open_archive_store(settings, settings.archive.offline_backend, "OfflineStore")


def _open_archive_store(settings: Settings, backend: str, store: str) -> Any:
    """``Memory<store>``, ``Redis<store>``, ``Postgres<store>`` or ``SQLite<store>``, as *backend* says,
    made from *settings*."""
    if backend == "memory":
        from chatgate.storage import memory_archive

        return getattr(memory_archive, f"Memory{store}")()
    if backend == "redis":
        from chatgate.storage import redis

        return getattr(redis, f"Redis{store}")(**_redis_options(settings))
    if backend == "postgresql":
        from chatgate.storage import postgres_stores

        # the archive's reads get the pool; offline messages are read once per login (1 reader)
        readers = settings.storage.postgresql_readers if store == "Archive" else 1
        return getattr(postgres_stores, f"Postgres{store}")(settings.storage.postgresql_dsn,
                                                            settings.archive.commit_interval, readers=readers)
    from chatgate.storage import sqlite_archive

    return getattr(sqlite_archive, f"SQLite{store}")(_sqlite_path(settings), settings.archive.commit_interval)


def _sqlite_path(settings: Settings) -> str:
    """The ``[storage] path`` file, its folder made (0700) if missing (DirectoryError if that fails)."""
    path = settings.path(settings.storage.path)
    folder = os.path.dirname(path)
    if folder:
        try:
            make_private_folder(folder)
        except OSError as e:
            raise DirectoryError(f"{folder}: cannot create the storage folder: {e.strerror}") from None
    return path


def _redis_options(settings: Settings) -> dict[str, object]:
    """``_RedisStore``'s arguments: ``[storage] redis_*``, and the sentinels that name the master if any."""
    s = settings.storage
    return {
        "host": s.redis_host,
        "port": s.redis_port,
        "db": s.redis_db,
        "password": s.redis_password,
        "tls": s.redis_tls,
        "tls_ca": settings.path(s.redis_tls_ca) if s.redis_tls_ca else "",
        "prefix": s.redis_prefix,
        "sentinels": settings.cluster.redis_sentinels,
        "master_name": settings.cluster.redis_master_name,
    }
