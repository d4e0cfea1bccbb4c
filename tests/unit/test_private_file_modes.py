"""chatgate.private_files: exact modes at creation whatever the umask, a warning for open files."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
import pytest_twisted
from twisted.logger import LogEvent, formatEvent, globalLogPublisher

from chatgate.private_files import ensure_private_file, make_private_folder, new_file, warn_if_open
from chatgate.storage.sqlite import SQLiteDirectory
from chatgate.tls import ensure_certificate


def mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@pytest.fixture(params=[0o022, 0o000, 0o277], ids=["umask-022", "umask-000", "umask-277"])
def umask(request: pytest.FixtureRequest) -> Iterator[int]:
    """A permissive, an open and an over-strict umask (one that takes the owner's own bits)."""
    old = os.umask(request.param)
    yield request.param
    os.umask(old)


@pytest.fixture
def events() -> Iterator[list[LogEvent]]:
    seen: list[LogEvent] = []
    globalLogPublisher.addObserver(seen.append)
    yield seen
    globalLogPublisher.removeObserver(seen.append)


def test_folders_and_their_missing_parents_are_made_0700(tmp_path: Path, umask: int) -> None:
    make_private_folder(str(tmp_path / "a" / "var"))
    assert mode(tmp_path / "a") == 0o700 and mode(tmp_path / "a" / "var") == 0o700
    make_private_folder(str(tmp_path / "a" / "var"))  # there already: nothing to do


def test_an_existing_folder_is_left_as_it_is(tmp_path: Path) -> None:
    (tmp_path / "var").mkdir(mode=0o755)
    (tmp_path / "var").chmod(0o755)
    make_private_folder(str(tmp_path / "var"))
    assert mode(tmp_path / "var") == 0o755


def test_new_files_have_exactly_their_mode(tmp_path: Path, umask: int) -> None:
    assert ensure_private_file(str(tmp_path / "db")) is True
    assert mode(tmp_path / "db") == 0o600
    os.close(new_file(str(tmp_path / "cert"), 0o644))
    assert mode(tmp_path / "cert") == 0o644


def test_an_existing_file_is_neither_replaced_nor_changed(tmp_path: Path) -> None:
    (tmp_path / "db").write_text("kept")
    (tmp_path / "db").chmod(0o644)
    assert ensure_private_file(str(tmp_path / "db")) is False
    assert (tmp_path / "db").read_text() == "kept" and mode(tmp_path / "db") == 0o644
    with pytest.raises(FileExistsError):
        new_file(str(tmp_path / "db"))


def test_a_link_is_not_followed_to_create_a_file(tmp_path: Path) -> None:
    (tmp_path / "db").symlink_to(tmp_path / "elsewhere")
    assert ensure_private_file(str(tmp_path / "db")) is False
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.parametrize("open_mode", [0o644, 0o640, 0o604, 0o620])
def test_a_file_open_to_others_is_named_in_one_warning(tmp_path: Path, events: list[LogEvent],
                                                      open_mode: int) -> None:
    path = tmp_path / "chatgate.sqlite"
    path.write_bytes(b"")
    path.chmod(open_mode)
    assert warn_if_open(str(path), "the database") is True
    assert len(events) == 1 and events[0]["log_level"].name == "warn"
    text = formatEvent(events[0])
    assert f"the database {path} is open to other local users (mode {open_mode:04o})" in text
    assert "\n" not in text


def test_a_private_or_missing_file_is_not_warned_about(tmp_path: Path, events: list[LogEvent]) -> None:
    path = tmp_path / "chatgate.key"
    path.write_bytes(b"")
    path.chmod(0o600)
    assert warn_if_open(str(path), "the TLS key") is False
    assert warn_if_open(str(tmp_path / "missing"), "the TLS key") is False
    assert events == []


def test_the_made_tls_key_and_its_folder_are_private(tmp_path: Path, umask: int) -> None:
    cert, key = tmp_path / "var" / "chatgate.crt", tmp_path / "var" / "chatgate.key"
    assert ensure_certificate(str(cert), str(key), ["example.com"])
    assert mode(tmp_path / "var") == 0o700
    assert mode(key) == 0o600 and mode(cert) == 0o644


@pytest_twisted.ensureDeferred
async def test_a_new_sqlite_store_and_its_wal_files_are_0600(tmp_path: Path, umask: int) -> None:
    path = tmp_path / "chatgate.sqlite"
    store = SQLiteDirectory(str(path), 60)
    await store.start()
    try:
        await store.add_domain("example.com")  # a write: the WAL holds it until a checkpoint
        for made in (path, Path(f"{path}-wal"), Path(f"{path}-shm")):
            assert mode(made) == 0o600, made
    finally:
        await store.stop()
