"""The SQLite history stores' group commit: one batch on the worker at a time,
what queues during its commit goes as the next batch, reads see every write
queued before them, stop() commits it all; and the append path's batch work
(one statement for a run of appends, one contacts upsert per pair)."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_twisted
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater

from chatgate.storage import sqlite_archive
from chatgate.storage.archive import ArchiveIds
from chatgate.storage.interfaces import ArchivedMessage, ArchiveError, ArchiveQuery
from chatgate.storage.sqlite_archive import SQLiteArchive

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
T0 = 1_700_000_000.0


class Held:
    """Holds each batch on the worker thread until released; records the batches' sizes."""

    def __init__(self, store: SQLiteArchive) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.store = store
        commit = store._commit

        def held(db: sqlite3.Connection, batch: list[Any]) -> Any:
            self.sizes.append(len(batch))
            self.gate.wait(10)
            return commit(db, batch)

        store._commit = held  # type: ignore[method-assign]

    async def until(self, count: int) -> None:
        """Wait until *count* batches reached the worker."""
        for _ in range(500):
            if len(self.sizes) >= count:
                return
            await deferLater(reactor, 0.01, lambda: None)
        raise AssertionError(f"{count} batches expected on the worker, got {self.sizes}")


@pytest_twisted.async_yield_fixture
async def store(tmp_path) -> AsyncIterator[SQLiteArchive]:
    archive = SQLiteArchive(str(tmp_path / "h.sqlite"), commit_interval=0.01)
    await archive.start()
    yield archive
    held = getattr(archive, "_test_held", None)
    if held is not None:
        held.gate.set()  # never leave the worker blocked
    await archive.stop()


def hold(store: SQLiteArchive) -> Held:
    held = Held(store)
    store._test_held = held  # type: ignore[attr-defined]
    return held


class Maker:
    def __init__(self) -> None:
        self.ids = ArchiveIds()
        self.n = 0

    def __call__(self, owner: str = ALICE, contact: str = BOB, body: Any = "hi") -> list[ArchivedMessage]:
        self.n += 1
        archive_id, at = self.ids.make(T0 + self.n)
        return [ArchivedMessage(owner, archive_id, contact, "", False, at, body,  # type: ignore[arg-type]
                                f"<message><body>{body}</body></message>")]


def rows(path: str, sql: str = "SELECT COUNT(*) FROM archive") -> Any:
    with sqlite3.connect(path) as db:  # another connection: what is on disk
        return db.execute(sql).fetchall()


@pytest_twisted.ensureDeferred
async def test_one_batch_in_flight_and_what_queues_meanwhile_goes_next_together(store):
    held = hold(store)
    make = Maker()
    first = store.append(make())
    await held.until(1)
    later = []
    for _ in range(4):  # across several commit intervals: nothing more goes to the worker meanwhile
        later += [store.append(make()) for _ in range(5)]
        await deferLater(reactor, 0.02, lambda: None)
    assert held.sizes == [1]
    assert not first.called and not any(d.called for d in later)
    held.gate.set()
    await defer.gatherResults([first, *later])
    assert held.sizes == [1, 20]  # one batch, at once after the first commit
    assert rows(store.path) == [(21,)]


@pytest_twisted.ensureDeferred
async def test_batches_start_at_most_once_per_interval(tmp_path):
    store = SQLiteArchive(str(tmp_path / "h.sqlite"), commit_interval=0.3)
    await store.start()
    held = hold(store)
    make = Maker()
    try:
        started = reactor.seconds()
        first = store.append(make())  # the store was idle: it goes at once
        await held.until(1)
        second = store.append(make())
        held.gate.set()
        await first
        await deferLater(reactor, 0.1, lambda: None)
        assert held.sizes == [1] and not second.called  # committed, but the interval is not over
        await second
        assert held.sizes == [1, 1]
        assert reactor.seconds() - started >= 0.29
    finally:
        held.gate.set()
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_a_read_during_a_commit_sees_the_writes_queued_before_it(store):
    held = hold(store)
    make = Maker()
    first = store.append(make())
    await held.until(1)
    second = store.append(make())
    page = store.query(ALICE, ArchiveQuery())
    contacts = store.contacts(ALICE)
    await deferLater(reactor, 0.03, lambda: None)
    assert not page.called and held.sizes == [1]  # the read waits for the batch it needs
    held.gate.set()
    assert (await page).count == 2
    assert [c.contact for c in await contacts] == [BOB]
    assert first.called and second.called


@pytest_twisted.ensureDeferred
async def test_a_read_during_a_commit_with_nothing_queued_goes_right_behind_it(store):
    held = hold(store)
    store.append(Maker()())
    await held.until(1)
    page = store.query(ALICE, ArchiveQuery())
    held.gate.set()
    assert (await page).count == 1
    assert held.sizes == [1]


@pytest_twisted.ensureDeferred
async def test_stop_commits_the_batch_in_flight_and_the_queue(tmp_path):
    path = str(tmp_path / "h.sqlite")
    store = SQLiteArchive(path, commit_interval=60)
    await store.start()
    held = hold(store)
    make = Maker()
    pending = [store.append(make())]
    store._flush()
    await held.until(1)
    pending += [store.append(make()) for _ in range(30)]
    stopped = store.stop()
    await deferLater(reactor, 0.02, lambda: None)
    assert not stopped.called
    held.gate.set()
    await stopped
    assert all(d.called for d in pending)
    assert held.sizes == [1, 30]
    assert rows(path) == [(31,)]


@pytest_twisted.ensureDeferred
async def test_a_big_queue_goes_in_batches_of_at_most_max_batch(store, monkeypatch):
    monkeypatch.setattr(sqlite_archive, "MAX_BATCH", 4)
    held = hold(store)
    make = Maker()
    pending = [store.append(make())]
    store._flush()
    await held.until(1)
    pending += [store.append(make()) for _ in range(10)]
    page = store.query(ALICE, ArchiveQuery())  # needs all three batches behind the first
    held.gate.set()
    assert (await page).count == 11
    assert all(d.called for d in pending)
    assert held.sizes == [1, 4, 4, 2]


# -- the append path


@pytest_twisted.ensureDeferred
async def test_one_contacts_upsert_per_pair_and_batch(store, monkeypatch):
    upserted: list[dict[tuple[str, str], str]] = []
    real: Callable[..., None] = sqlite_archive._upsert_contacts

    def spy(db: sqlite3.Connection, latest: dict[tuple[str, str], str]) -> None:
        if latest:
            upserted.append(dict(latest))
        real(db, latest)

    monkeypatch.setattr(sqlite_archive, "_upsert_contacts", spy)
    held = hold(store)
    make = Maker()
    store.append(make())
    await held.until(1)
    batch = [make(ALICE, BOB) for _ in range(10)] + [make(ALICE, CAROL) for _ in range(5)] + [make(BOB, ALICE)]
    pending = [store.append(messages) for messages in batch]
    held.gate.set()
    await defer.gatherResults(pending)
    assert len(upserted) == 2
    assert upserted[1] == {(ALICE, BOB): batch[9][0].id, (ALICE, CAROL): batch[14][0].id,
                           (BOB, ALICE): batch[15][0].id}
    contacts = await store.contacts(ALICE)
    assert [(c.contact, c.last_at) for c in contacts] == [(CAROL, batch[14][0].at), (BOB, batch[9][0].at)]


@pytest_twisted.ensureDeferred
async def test_a_failing_append_fails_alone_in_a_run_of_appends(store):
    held = hold(store)
    make = Maker()
    store.append(make())
    await held.until(1)
    good = store.append(make(ALICE, BOB))
    bad = store.append(make(ALICE, CAROL, body=["not", "text"]))  # sqlite3 cannot bind it
    other = store.append(make(ALICE, BOB))
    held.gate.set()
    await good
    await other
    with pytest.raises(ArchiveError, match="binding"):
        await bad
    assert held.sizes == [1, 3]
    assert (await store.query(ALICE, ArchiveQuery())).count == 3
    assert [c.contact for c in await store.contacts(ALICE)] == [BOB]  # nothing of the failed one


@pytest_twisted.ensureDeferred
async def test_a_removal_in_the_batch_sees_the_appends_before_it(store):
    held = hold(store)
    make = Maker()
    store.append(make(ALICE, CAROL))
    await held.until(1)
    messages = make(ALICE, BOB)
    appended = store.append(messages)
    removed = store.remove(ALICE, [messages[0].id])  # the only message with bob: bob is no contact any more
    later = store.append(make(ALICE, CAROL))
    held.gate.set()
    await defer.gatherResults([appended, removed, later])
    assert [c.contact for c in await store.contacts(ALICE)] == [CAROL]
    assert rows(store.path, "SELECT contact FROM archive_contacts") == [(CAROL,)]


# -- an idle store


@pytest_twisted.ensureDeferred
async def test_an_idle_store_hands_over_the_writes_of_one_reactor_turn_together(tmp_path):
    store = SQLiteArchive(str(tmp_path / "h.sqlite"), commit_interval=60)  # not waited for
    await store.start()
    held = hold(store)
    make = Maker()
    try:
        pending = [store.append(make()) for _ in range(3)]
        assert held.sizes == []  # not before the turn ends
        held.gate.set()
        await defer.gatherResults(pending)
        assert held.sizes == [3]
    finally:
        held.gate.set()
        await store.stop()


@pytest_twisted.ensureDeferred
async def test_writes_within_the_interval_after_a_commit_go_together(tmp_path):
    store = SQLiteArchive(str(tmp_path / "h.sqlite"), commit_interval=0.1)
    await store.start()
    held = hold(store)
    held.gate.set()
    make = Maker()
    await store.append(make())  # idle: at once
    assert held.sizes == [1]
    pending = [store.append(make())]
    await deferLater(reactor, 0.03, lambda: None)
    pending.append(store.append(make()))
    assert held.sizes == [1]
    await defer.gatherResults(pending)
    assert held.sizes == [1, 2]
    await store.stop()
