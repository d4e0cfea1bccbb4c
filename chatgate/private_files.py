"""Files only the service reads: the SQLite database (and its -wal and -shm
files), the TLS private key, and the folder they are kept in (``var/``).

They are created with their final mode, 0600 for files and 0700 for folders,
whatever the process umask: the mode is given to the call that creates them
(the umask can only take bits away from it, and the exact mode is then set on
a file no one else can open yet), never by a chmod that leaves a moment when
another local user could open them. SQLite gives a database's -wal and -shm
files the mode of the database file itself, so creating that file 0600 before
the first connection covers them.

An existing file is never changed: :func:`warn_if_open` logs one warning
naming it when other users may read or write it.
"""

from __future__ import annotations

import os
import stat

from twisted.logger import Logger

log = Logger()

PRIVATE_FILE = 0o600
PRIVATE_FOLDER = 0o700


def make_private_folder(path: str) -> None:
    """Create the folder *path* and any missing parent with mode 0700; existing ones are left alone.

    @raise OSError: a folder cannot be created.
    """
    if not path or os.path.isdir(path):
        return
    make_private_folder(os.path.dirname(path))
    try:
        os.mkdir(path, PRIVATE_FOLDER)
    except FileExistsError:
        return  # made meanwhile by another process
    os.chmod(path, PRIVATE_FOLDER)  # the umask may have taken the owner's bits


def new_file(path: str, mode: int = PRIVATE_FILE) -> int:
    """Create *path* (it must not exist) with exactly *mode*; return its descriptor, open for writing.

    @raise FileExistsError: the file exists already.
    """
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
    try:
        os.fchmod(fd, mode)  # the umask may have taken bits
    except BaseException:
        os.close(fd)
        raise
    return fd


def ensure_private_file(path: str) -> bool:
    """Create *path* empty with mode 0600 unless it exists; True when it was created."""
    try:
        fd = new_file(path)
    except FileExistsError:
        return False
    os.close(fd)
    return True


def warn_if_open(path: str, what: str) -> bool:
    """Log one warning naming *path* when it exists and its group or others may use it; True then."""
    try:
        mode = stat.S_IMODE(os.stat(path).st_mode)
    except OSError:
        return False
    if not mode & 0o077:
        return False
    log.warn(
        "{what} {path} is open to other local users (mode {mode}); only chatgate should read it: chmod 600 {path}",
        what=what, path=path, mode=f"{mode:04o}",
    )
    return True
