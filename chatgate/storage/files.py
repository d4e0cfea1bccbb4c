"""Uploaded files (XEP-0363) in a folder: ``[upload] path``.

One folder per file, ``<domain>/<file id>/``, holding ``data`` and
``meta.json`` (owner, file name, size, content type, time); each user's
uploads of the last day in ``usage/<domain>/<localpart>`` (a line per upload:
time and size), so the daily quota holds across every node sharing the
folder. A file appears whole or not at all: it is written under a temporary
name and renamed into place. Every file 0600, every folder 0700. All of it
runs in Twisted's thread pool, never on the reactor thread.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

from twisted.internet import threads
from twisted.internet.defer import Deferred, succeed
from zope.interface import implementer

from chatgate.private_files import ensure_private_file, make_private_folder, new_file
from chatgate.storage.interfaces import IFileStore

#: seconds of uploads the quota counts
DAY = 86400.0


@dataclass(frozen=True)
class StoredFile:
    owner: str
    filename: str
    size: int
    content_type: str
    at: float


@implementer(IFileStore)
class FolderFileStore:
    """:class:`~chatgate.storage.interfaces.IFileStore` on a folder."""

    def __init__(self, path: str) -> None:
        self.path = path

    def start(self) -> Deferred[None]:
        return threads.deferToThread(make_private_folder, self.path)

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def _folder(self, domain: str, file_id: str) -> str:
        return os.path.join(self.path, "files", domain, file_id)

    def _usage_file(self, domain: str, localpart: str) -> str:
        return os.path.join(self.path, "usage", domain, localpart)

    # -- files

    def put(self, domain: str, file_id: str, source: Any, meta: StoredFile) -> Deferred[bool]:
        """Store what the file object *source* holds as *domain*/*file_id*;
        False when that id exists already (a slot used twice)."""
        return threads.deferToThread(self._put, domain, file_id, source, meta)

    def _put(self, domain: str, file_id: str, source: Any, meta: StoredFile) -> bool:
        final = self._folder(domain, file_id)
        if os.path.exists(final):
            return False
        make_private_folder(os.path.dirname(final))
        staging = f"{final}.{os.getpid()}.{time.monotonic_ns()}.part"
        os.mkdir(staging, 0o700)
        try:
            source.seek(0)
            with os.fdopen(new_file(os.path.join(staging, "data")), "wb") as out:
                shutil.copyfileobj(source, out, 1 << 20)
                out.flush()
                os.fsync(out.fileno())
            with os.fdopen(new_file(os.path.join(staging, "meta.json")), "w") as out:
                json.dump(asdict(meta), out)
            try:
                os.rename(staging, final)  # atomic; fails if another PUT of the slot won
            except OSError:
                return False
        finally:
            if os.path.exists(staging):
                shutil.rmtree(staging, ignore_errors=True)
        self._count(domain, meta.owner, meta.size, meta.at)
        return True

    def get(self, domain: str, file_id: str) -> Deferred[tuple[StoredFile, str] | None]:
        """The file's description and the path of its bytes, or None."""
        return threads.deferToThread(self._get, domain, file_id)

    def _get(self, domain: str, file_id: str) -> tuple[StoredFile, str] | None:
        folder = self._folder(domain, file_id)
        try:
            with open(os.path.join(folder, "meta.json")) as f:
                meta = StoredFile(**json.load(f))
        except (OSError, ValueError, TypeError):
            return None
        return meta, os.path.join(folder, "data")

    # -- the quota

    def usage(self, domain: str, localpart: str, now: float) -> Deferred[tuple[int, float | None]]:
        """Bytes *localpart* uploaded in the last day, and when the oldest of them stops counting."""
        return threads.deferToThread(self._usage, domain, localpart, now)

    def _usage(self, domain: str, localpart: str, now: float) -> tuple[int, float | None]:
        total, oldest = 0, None
        for at, size in self._ledger(domain, localpart, now):
            total += size
            oldest = at if oldest is None else min(oldest, at)
        return total, None if oldest is None else oldest + DAY

    def _ledger(self, domain: str, localpart: str, now: float) -> Iterator[tuple[float, int]]:
        try:
            with open(self._usage_file(domain, localpart)) as f:
                lines = f.read().split("\n")
        except OSError:
            return
        for line in lines:
            at, _, size = line.partition(" ")
            try:
                if float(at) > now - DAY:
                    yield float(at), int(size)
            except ValueError:
                continue

    def _count(self, domain: str, owner: str, size: int, at: float) -> None:
        path = self._usage_file(domain, owner)
        make_private_folder(os.path.dirname(path))
        ensure_private_file(path + ".lock")
        # one writer at a time, whatever thread, process or node sharing the folder
        # (flock works across NFS clients on Linux): two uploads ending together
        # would otherwise each rewrite the ledger without the other's line
        with open(path + ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            kept = [f"{a} {s}" for a, s in self._ledger(domain, owner, at)]  # older lines drop out here
            staging = f"{path}.{os.getpid()}.{threading.get_ident()}.{time.monotonic_ns()}"
            with os.fdopen(new_file(staging), "w") as out:
                out.write("\n".join([*kept, f"{at} {size}"]) + "\n")
            os.replace(staging, path)

    # -- expiry

    def expire(self, before: float, batch: int = 500) -> Deferred[int]:
        """Remove up to *batch* files stored before *before*; how many went."""
        return threads.deferToThread(self._expire, before, batch)

    def _expire(self, before: float, batch: int) -> int:
        removed = 0
        root = os.path.join(self.path, "files")
        for domain in _entries(root):
            for file_id in _entries(os.path.join(root, domain)):
                folder = os.path.join(root, domain, file_id)
                # a file by its meta.json; a staging folder left by a crash by its own time
                probe = folder if file_id.endswith(".part") else os.path.join(folder, "meta.json")
                try:
                    if os.stat(probe).st_mtime >= before:
                        continue
                except OSError:
                    continue
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
                if removed >= batch:
                    return removed
        return removed


    # -- erasure

    def erase(self, domain: str, localpart: str) -> Deferred[int]:
        """Remove every file the user uploaded, and their quota ledger; how many files went."""
        return threads.deferToThread(self._erase, domain, localpart)

    def _erase(self, domain: str, localpart: str) -> int:
        removed = 0
        root = os.path.join(self.path, "files", domain)
        for file_id in _entries(root):
            folder = os.path.join(root, file_id)
            try:
                with open(os.path.join(folder, "meta.json"), encoding="utf-8") as f:
                    owner = json.load(f).get("owner")
            except (OSError, ValueError):
                continue
            if owner == localpart:
                shutil.rmtree(folder, ignore_errors=True)
                removed += 1
        try:
            os.unlink(self._usage_file(domain, localpart))
        except OSError:
            pass
        return removed


def _entries(path: str) -> list[str]:
    try:
        return os.listdir(path)
    except OSError:
        return []
