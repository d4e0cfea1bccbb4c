"""Stores, reached through the interfaces in :mod:`chatgate.storage.interfaces`.

:func:`open_directory` is the one place a backend is picked from the
configuration, shared by the service and the admin command so both open the
same store the same way.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

from chatgate.storage.interfaces import DirectoryError, IDirectory

if TYPE_CHECKING:
    from chatgate.config import Settings


def open_directory(settings: Settings) -> IDirectory:
    """The directory backend *settings* names, not started yet.

    For SQLite the file's folder is created if missing; DirectoryError (one
    line) if that fails.
    """
    if settings.storage.backend == "memory":
        from chatgate.storage.memory import MemoryDirectory

        return MemoryDirectory()
    from chatgate.storage.sqlite import SQLiteDirectory

    path = settings.path(settings.storage.path)
    folder = os.path.dirname(path)
    if folder:
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as e:
            raise DirectoryError(f"{folder}: cannot create the storage folder: {e.strerror}") from None
    return SQLiteDirectory(path, settings.storage.poll_interval)
