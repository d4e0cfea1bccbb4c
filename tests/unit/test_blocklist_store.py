"""The blocklist part of the IDirectory contract (XEP-0191), on every backend (Redis: a real
redis-server); then what only SQLite adds."""

from __future__ import annotations

import itertools
import sqlite3

import pytest
import pytest_twisted

from chatgate.storage.interfaces import Change, UnknownUser, User
from chatgate.storage.memory import MemoryDirectory
from chatgate.storage.postgres_stores import PostgresDirectory
from chatgate.storage.redis_directory import RedisDirectory
from chatgate.storage.sqlite import SCHEMA_VERSION, SQLiteDirectory

ALICE = User("alice", "example.com", "Alice")
BOB = User("bob", "example.com", "Bob")
_prefixes = itertools.count()


@pytest_twisted.async_yield_fixture(params=["memory", "sqlite", "redis", "postgresql"])
async def hosted(request, tmp_path):
    """A directory hosting example.com with alice and bob, its changes recorded in ``store.told``."""
    if request.param == "memory":
        store = MemoryDirectory()
    elif request.param == "sqlite":
        store = SQLiteDirectory(str(tmp_path / "d.sqlite"), 0.02)
    elif request.param == "postgresql":
        store = PostgresDirectory(request.getfixturevalue("postgres_server").database(), 0.02)
    else:
        store = RedisDirectory(port=request.getfixturevalue("redis_server").port, prefix=f"test{next(_prefixes)}")
    await store.start()
    await store.add_domain("example.com")
    await store.add_user(ALICE, {})
    await store.add_user(BOB, {})
    await store.poll()
    store.told = []
    store.watch(store.told.append)
    yield store
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_blocklist_starts_empty(hosted):
    assert await hosted.blocklist("example.com", "alice") == []
    assert await hosted.blocklist("example.com", "nobody") == []


@pytest_twisted.ensureDeferred
async def test_block_adds_and_answers_what_is_new(hosted):
    assert await hosted.block("example.com", "alice", ["bob@example.com", "spam.org"]) == [
        "bob@example.com", "spam.org"]
    assert await hosted.block("example.com", "alice", ["spam.org", "eve@example.com/phone", "spam.org"]) == [
        "eve@example.com/phone"]
    assert await hosted.blocklist("example.com", "alice") == ["bob@example.com", "eve@example.com/phone", "spam.org"]
    assert await hosted.blocklist("example.com", "bob") == []


@pytest_twisted.ensureDeferred
async def test_unblock_some_then_all(hosted):
    await hosted.block("example.com", "alice", ["bob@example.com", "spam.org", "x.org"])
    assert await hosted.unblock("example.com", "alice", ["spam.org", "never@example.com"]) == ["spam.org"]
    assert await hosted.blocklist("example.com", "alice") == ["bob@example.com", "x.org"]
    assert await hosted.unblock("example.com", "alice", None) == ["bob@example.com", "x.org"]
    assert await hosted.blocklist("example.com", "alice") == []
    assert await hosted.unblock("example.com", "alice", None) == []


@pytest_twisted.ensureDeferred
async def test_unknown_user_is_refused(hosted):
    with pytest.raises(UnknownUser, match="^unknown user: carol@example.com$"):
        await hosted.block("example.com", "carol", ["bob@example.com"])
    with pytest.raises(UnknownUser, match="^unknown user: carol@example.com$"):
        await hosted.unblock("example.com", "carol", None)


@pytest_twisted.ensureDeferred
async def test_changes_are_told_only_when_the_list_changes(hosted):
    await hosted.block("example.com", "alice", ["bob@example.com"])
    await hosted.block("example.com", "alice", ["bob@example.com"])
    await hosted.unblock("example.com", "alice", ["nobody@example.com"])
    await hosted.unblock("example.com", "alice", None)
    await hosted.poll()
    assert hosted.told == [Change("blocklist-changed", "example.com", "alice")] * 2


@pytest_twisted.ensureDeferred
async def test_removing_a_user_removes_their_blocklist(hosted):
    await hosted.block("example.com", "alice", ["bob@example.com"])
    await hosted.remove_user("example.com", "alice")
    await hosted.add_user(ALICE, {})
    assert await hosted.blocklist("example.com", "alice") == []


async def sqlite_with_alice(tmp_path, blocked: list[str]) -> str:
    """A closed SQLite file hosting alice, who blocks *blocked*; its path."""
    path = str(tmp_path / "d.sqlite")
    store = SQLiteDirectory(path, 0.02)
    await store.start()
    await store.add_domain("example.com")
    await store.add_user(ALICE, {})
    if blocked:
        await store.block("example.com", "alice", blocked)
    await store.stop()
    return path


@pytest_twisted.ensureDeferred
async def test_sqlite_keeps_the_blocklist_across_restart(tmp_path):
    path = await sqlite_with_alice(tmp_path, ["bob@example.com"])
    store = SQLiteDirectory(path, 0.02)
    await store.start()
    try:
        assert await store.blocklist("example.com", "alice") == ["bob@example.com"]
    finally:
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_sqlite_schema_2_file_gains_the_blocklist(tmp_path):
    path = await sqlite_with_alice(tmp_path, [])
    db = sqlite3.connect(path)
    db.executescript("DROP TABLE blocklist; PRAGMA user_version = 2;")
    db.close()
    store = SQLiteDirectory(path, 0.02)
    await store.start()
    try:
        assert await store.block("example.com", "alice", ["bob@example.com"]) == ["bob@example.com"]
    finally:
        await store.stop()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()
