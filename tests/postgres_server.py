"""A real PostgreSQL server on a free loopback port, started and stopped by the tests.

``initdb`` makes a new cluster in a temporary folder and ``postgres`` serves it
on 127.0.0.1 only (no Unix socket, fsync on as in production); :meth:`database`
makes a new empty database and returns its DSN, so each test gets its own.
PostgreSQL refuses to run as root: when the tests are root (CI), the folder
belongs to the ``postgres`` user the Debian package made, and the programs run
as that user through ``runuser``. Tests are skipped when PostgreSQL is not
installed; ``make test`` installs it (Debian's ``postgresql``).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.redis_server import free_port

USER = "chatgate"


def _bin(name: str) -> str | None:
    """A PostgreSQL program: on PATH, else Debian's versioned folder (newest first)."""
    found = shutil.which(name)
    if found:
        return found
    candidates = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"),
                        key=lambda p: int(p.split("/")[4]) if p.split("/")[4].isdigit() else 0)
    return candidates[-1] if candidates else None


class PostgresServer:
    def __init__(self) -> None:
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="chatgate-pg-"))
        self.data = self.folder / "data"
        self.log = self.folder / "postgres.log"
        self.process: subprocess.Popen[bytes] | None = None
        self._databases = 0

    def _as_owner(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", "postgres", "--", *args] if os.geteuid() == 0 else args

    def start(self, timeout: float = 30) -> PostgresServer:
        initdb, postgres = _bin("initdb"), _bin("postgres")
        if initdb is None or postgres is None:
            pytest.skip("PostgreSQL is not installed (make test installs it)")
        if os.geteuid() == 0:
            owner = pwd.getpwnam("postgres")
            os.chown(self.folder, owner.pw_uid, owner.pw_gid)
        subprocess.run(self._as_owner([initdb, "-D", str(self.data), "-U", USER, "-A", "trust", "-E", "UTF8",
                                       "--locale=C.UTF-8", "--no-sync"]),
                       check=True, capture_output=True)
        self.process = subprocess.Popen(
            self._as_owner([postgres, "-D", str(self.data), "-h", "127.0.0.1", "-p", str(self.port),
                            "-k", "", "-c", "max_connections=200", "-c", "shared_buffers=64MB"]),
            stdout=subprocess.DEVNULL, stderr=open(self.log, "wb"),  # noqa: SIM115 (the server's own log)
        )
        import psycopg

        deadline = time.monotonic() + timeout
        while True:
            try:
                psycopg.connect(self.dsn("postgres"), connect_timeout=2).close()
                return self
            except psycopg.OperationalError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"postgres did not start: {self.log.read_text()[-2000:]}") from None
                time.sleep(0.1)

    def dsn(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def database(self) -> str:
        """A new, empty database; its DSN."""
        import psycopg

        self._databases += 1
        name = f"db{self._databases}"
        with psycopg.connect(self.dsn("postgres"), autocommit=True) as db:
            db.execute(f"CREATE DATABASE {name}")
        return self.dsn(name)

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None
        shutil.rmtree(self.folder, ignore_errors=True)
