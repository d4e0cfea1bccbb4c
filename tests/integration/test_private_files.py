"""Files only the service reads: the database with its -wal and -shm files, the
TLS key and their folder are made 0600/0700 by a real chatgate and a real
chatgate-admin started with a permissive umask; an existing database or key
open to other users is named in a warning at start."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from tests.integration.harness import Server

#: the permissive umask most systems give a login shell: new files 0644, folders 0755
PERMISSIVE = 0o022

#: the default layout of tap-config.ini: everything private under var/
LAYOUT = {
    "storage": {"path": "var/chatgate.sqlite"},
    "tls": {"certificate": "var/chatgate.crt", "key": "var/chatgate.key"},
}


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def warnings(server: Server) -> list[str]:
    return [line for line in server.log_text().splitlines() if "is open to other local users" in line]


def test_a_first_start_makes_the_folder_database_and_key_private(tmp_path: Path) -> None:
    server = Server(tmp_path, **LAYOUT)
    server.start(umask=PERMISSIVE)
    try:
        var = tmp_path / "var"
        database = var / "chatgate.sqlite"
        assert mode(var) == 0o700
        # checked while the service holds the database open: the WAL and shared-memory files exist
        for path in (database, Path(f"{database}-wal"), Path(f"{database}-shm"), var / "chatgate.key"):
            assert mode(path) == 0o600, path
        assert warnings(server) == []
    finally:
        server.stop()


def test_chatgate_admin_makes_the_database_private(tmp_path: Path) -> None:
    server = Server(tmp_path, **LAYOUT)
    server.admin("domain", "add", "example.com", umask=PERMISSIVE)
    var = tmp_path / "var"
    assert mode(var) == 0o700
    assert mode(var / "chatgate.sqlite") == 0o600
    assert server.admin("domain", "list").stdout.startswith("example.com")


def test_a_start_on_an_open_database_and_key_warns_naming_them(tmp_path: Path) -> None:
    server = Server(tmp_path, **LAYOUT)
    server.admin("domain", "add", "example.com")
    server.start(umask=PERMISSIVE)  # makes the key
    server.stop()
    database, key = tmp_path / "var" / "chatgate.sqlite", tmp_path / "var" / "chatgate.key"
    database.chmod(0o644)
    key.chmod(0o640)
    server.start(umask=PERMISSIVE)
    try:
        found = warnings(server)
        about_database = [line for line in found if f"the database {database} " in line]
        about_key = [line for line in found if f"the TLS key {key} " in line]
        assert len(found) == 2 and len(about_database) == 1 and len(about_key) == 1, found
        assert "(mode 0644)" in about_database[0] and "(mode 0640)" in about_key[0]
        assert mode(database) == 0o644  # warned about, not changed
    finally:
        server.stop()
