"""What only the PostgreSQL stores do, on a real PostgreSQL server (tests/postgres_server.py; the
store contracts run on it in test_directory.py, test_archive_stores.py and test_blocklist_store.py):
the schema made on an empty database, an older one refused until ``upgrade`` brings it up, a newer
one refused; two nodes on one database, their changes told to each other and their racing writes
serialised; a lost connection made again; errors in one line without the DSN's password."""

from __future__ import annotations

import time

import psycopg
import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from chatgate.storage.interfaces import (
    ArchiveError,
    ArchiveQuery,
    DirectoryError,
    DuplicateUser,
    OfflineMessage,
    User,
)
from chatgate.storage.postgres import SCHEMA_VERSION, describe, schema_version, upgrade
from chatgate.storage.postgres_stores import PostgresArchive, PostgresDirectory, PostgresOfflineStore
from tests.unit.test_archive_stores import ALICE, BOB, T0, Conversation, ids

ALICE_USER = User("alice", "example.com", "Alice")


def version_of(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as db:
        from chatgate.storage.postgres import PgConnection

        return schema_version(PgConnection(db))


@pytest_twisted.ensureDeferred
async def test_an_empty_database_gets_the_whole_schema_at_start(postgres_server):
    dsn = postgres_server.database()
    assert version_of(dsn) == 0
    archive = PostgresArchive(dsn)
    await archive.start()
    assert version_of(dsn) == SCHEMA_VERSION
    directory, offline = PostgresDirectory(dsn), PostgresOfflineStore(dsn)
    await directory.start()  # the same schema: nothing more to do
    await offline.start()
    await directory.add_domain("example.com")
    await archive.append([Conversation().message(ALICE, BOB, T0, "hello on PostgreSQL")])
    assert await offline.push(ALICE, OfflineMessage(T0, "<message/>"), quota=None)
    assert len(ids(await archive.query(ALICE, ArchiveQuery()))) == 1
    for store in (archive, directory, offline):
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_an_older_schema_is_refused_until_upgraded_and_a_newer_one_always(postgres_server):
    dsn = postgres_server.database()
    assert upgrade(dsn, DirectoryError, target=1) == (0, [1])  # as an older chatgate left it
    archive = PostgresArchive(dsn)
    with pytest.raises(ArchiveError, match="schema 1, this chatgate needs .*chatgate-admin db upgrade"):
        await archive.start()
    assert upgrade(dsn, DirectoryError) == (1, list(range(2, SCHEMA_VERSION + 1)))
    assert upgrade(dsn, DirectoryError) == (SCHEMA_VERSION, [])  # again: nothing to do
    await archive.start()
    await archive.stop()
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("INSERT INTO chatgate_schema (version) VALUES (%s)", (SCHEMA_VERSION + 1,))
    directory = PostgresDirectory(dsn)
    with pytest.raises(DirectoryError, match="made by a newer chatgate"):
        await directory.start()
    with pytest.raises(DirectoryError, match="made by a newer chatgate"):
        upgrade(dsn, DirectoryError)


@pytest_twisted.async_yield_fixture
async def two_nodes(postgres_server):
    dsn = postgres_server.database()
    nodes = [PostgresDirectory(dsn, 0.02), PostgresDirectory(dsn, 0.02)]
    for node in nodes:
        await node.start()
    yield nodes
    for node in nodes:
        await node.stop()


@pytest_twisted.ensureDeferred
async def test_a_change_by_one_node_reaches_the_others_watchers(two_nodes):
    one, other = two_nodes
    told = []
    other.watch(told.append)
    await one.add_domain("example.com")
    await one.add_user(ALICE_USER, {})
    await other.poll()
    assert [(c.kind, c.domain, c.localpart) for c in told] == [
        ("domain-added", "example.com", None), ("user-added", "example.com", "alice")]
    assert await other.user("example.com", "alice") == ALICE_USER


@pytest_twisted.ensureDeferred
async def test_two_nodes_adding_one_address_at_once_make_one_user(two_nodes):
    one, other = two_nodes
    await one.add_domain("example.com")
    tries = [node.add_user(User(f"sales{i % 2}", "example.com", f"by node {n}"), {})
             for i in range(10) for n, node in enumerate(two_nodes)]
    outcomes = []
    for d in tries:
        try:
            await d
            outcomes.append("added")
        except DuplicateUser:
            outcomes.append("duplicate")
    assert outcomes.count("added") == 2 and outcomes.count("duplicate") == 18
    assert [u.localpart for u in await other.users("example.com")] == ["sales0", "sales1"]
    told = []
    other.watch(told.append)
    await other.poll()  # every change committed in seq order: none skipped by the feed
    assert sorted(c.localpart for c in told if c.kind == "user-added") == ["sales0", "sales1"]


@pytest_twisted.ensureDeferred
async def test_a_lost_connection_is_made_again(postgres_server):
    dsn = postgres_server.database()
    archive = PostgresArchive(dsn, commit_interval=0.0)
    await archive.start()
    maker = Conversation()
    await archive.append([maker.message(ALICE, BOB, T0, "before")])
    with psycopg.connect(dsn, autocommit=True) as db:  # the server ends every other session of it
        db.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                   " WHERE datname = current_database() AND pid <> pg_backend_pid()")
    await deferLater(reactor, 0.1, lambda: None)
    try:
        await archive.append([maker.message(ALICE, BOB, T0 + 1, "during")])
    except ArchiveError as e:  # the write under way fails in one line, or goes on a new connection
        assert "\n" not in str(e)
    await archive.append([maker.message(ALICE, BOB, T0 + 2, "after")])
    bodies = [m.body for m in (await archive.query(ALICE, ArchiveQuery())).messages]
    assert bodies[0] == "before" and bodies[-1] == "after"
    await archive.stop()


@pytest_twisted.ensureDeferred
async def test_errors_name_the_database_without_its_password(postgres_server):
    dsn = f"postgresql://chatgate:hunter2-secret@127.0.0.1:{postgres_server.port}/no_such_database"
    assert describe(dsn) == f"postgresql 127.0.0.1:{postgres_server.port}/no_such_database"
    assert "hunter2" not in describe("host=db.example password=hunter2 dbname=chat")
    directory = PostgresDirectory(dsn)
    with pytest.raises(DirectoryError) as refused:
        await directory.start()
    message = str(refused.value)
    assert "no_such_database" in message and "hunter2" not in message and "\n" not in message


@pytest_twisted.ensureDeferred
async def test_a_long_read_holds_up_neither_commits_nor_other_reads(postgres_server):
    archive = PostgresArchive(postgres_server.database(), commit_interval=0.0, readers=2)
    await archive.start()
    maker = Conversation()
    slow = archive._read(lambda db: db.execute("SELECT pg_sleep(1.5)").fetchone())  # a search of a huge archive
    started = time.monotonic()
    await archive.append([maker.message(ALICE, BOB, T0, "acknowledged meanwhile")])
    assert time.monotonic() - started < 0.75
    assert ids(await archive.query(ALICE, ArchiveQuery()))  # on the other reader, seeing the commit
    assert time.monotonic() - started < 0.75
    await slow
    await archive.stop()


@pytest_twisted.ensureDeferred
async def test_a_read_sees_the_writes_queued_before_it(postgres_server):
    archive = PostgresArchive(postgres_server.database(), commit_interval=0.5)
    await archive.start()
    maker = Conversation()
    for i in range(3):  # queued, not waited for: the query must still see them all
        archive.append([maker.message(ALICE, BOB, T0 + i, f"queued {i}")])
    page = await archive.query(ALICE, ArchiveQuery())
    assert [m.body for m in page.messages] == ["queued 0", "queued 1", "queued 2"]
    await archive.stop()
