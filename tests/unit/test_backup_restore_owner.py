"""A restore run as root (``sudo chatgate-admin restore``) into an empty state folder
leaves the store and its lock file to the folder's owner, the service's user; a backup is
checked whatever characters its file name holds."""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

import pytest

from chatgate.storage import backup as backups
from chatgate.storage.sqlite import SCHEMA_VERSION


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to give files away")
def test_a_restore_as_root_leaves_new_files_to_the_folder_owner(tmp_path: Path):
    source = tmp_path / "backup.sqlite"
    with sqlite3.connect(source) as db:
        for table in ("domains", "users", "credentials", "archive", "offline"):
            db.execute(f"CREATE TABLE {table} (x)")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    state = tmp_path / "state"
    state.mkdir()
    os.chown(state, 4242, 4243)
    store = state / "chatgate.sqlite"
    backups.restore(str(source), str(store))
    for path in (store, state / "chatgate.sqlite.running"):
        info = os.stat(path)
        assert (info.st_uid, info.st_gid) == (4242, 4243), path
    assert os.stat(store).st_mode & 0o077 == 0


def test_a_backup_file_is_checked_whatever_its_name(tmp_path: Path):
    # "?" and "#" would end the path in a file: URI if it were not encoded
    for name in ("back?up.sqlite", "back#up%20.sqlite"):
        source = tmp_path / name
        with sqlite3.connect(source) as db:
            for table in ("domains", "users", "credentials", "archive", "offline"):
                db.execute(f"CREATE TABLE {table} (x)")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        backups.check(str(source))
        (tmp_path / f"not-{name}").write_text("not a database")
        with pytest.raises(backups.BackupError, match="not a chatgate store"):
            backups.check(str(tmp_path / f"not-{name}"))
