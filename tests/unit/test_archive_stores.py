"""The IArchive and IOfflineStore contract, run against memory, SQLite and a
real redis-server; then what only SQLite (durability, batching) and Redis (TLS,
key layout) add."""

from __future__ import annotations

import itertools
import sqlite3

import pytest
import pytest_twisted
from twisted.internet import reactor
from twisted.internet.task import deferLater

from chatgate.config import ArchiveSettings, Settings, StorageSettings
from chatgate.storage import open_archive, open_offline, sqlite_archive
from chatgate.storage.archive import ArchiveIds, client_id, fold, replaced_id
from chatgate.storage.interfaces import (
    ArchiveContact,
    ArchivedMessage,
    ArchiveError,
    ArchiveQuery,
    BadCursor,
    HistorySearch,
    IArchive,
    IOfflineStore,
    OfflineMessage,
    SearchUnavailable,
    UnknownMessage,
)
from chatgate.storage.memory_archive import MemoryArchive, MemoryOfflineStore
from chatgate.storage.postgres_stores import PostgresArchive, PostgresOfflineStore
from chatgate.storage.redis import RedisArchive, RedisOfflineStore
from chatgate.storage.sqlite_archive import SQLiteArchive, SQLiteOfflineStore
from chatgate.xml import Element, serialize
from tests.redis_server import RedisServer

ALICE, BOB, CAROL = "alice@example.com", "bob@example.com", "carol@example.com"
T0 = 1_700_000_000.0
_prefixes = itertools.count()


def _backend(kind: str, request: pytest.FixtureRequest, tmp_path, archive: bool):
    if kind == "memory":
        return MemoryArchive() if archive else MemoryOfflineStore()
    if kind == "sqlite":
        cls = SQLiteArchive if archive else SQLiteOfflineStore
        return cls(str(tmp_path / "history.sqlite"), commit_interval=0.005)
    if kind == "postgresql":
        cls = PostgresArchive if archive else PostgresOfflineStore
        return cls(request.getfixturevalue("postgres_server").database(), commit_interval=0.005)
    server = request.getfixturevalue("redis_server")
    cls = RedisArchive if archive else RedisOfflineStore
    return cls(port=server.port, prefix=f"test{next(_prefixes)}")


@pytest_twisted.async_yield_fixture(params=["memory", "sqlite", "redis", "postgresql"])
async def archive(request, tmp_path):
    store = _backend(request.param, request, tmp_path, archive=True)
    await store.start()
    yield store
    await store.stop()


@pytest_twisted.async_yield_fixture(params=["memory", "sqlite", "redis", "postgresql"])
async def offline(request, tmp_path):
    store = _backend(request.param, request, tmp_path, archive=False)
    await store.start()
    yield store
    await store.stop()


class Conversation:
    """Makes messages the way the archive feature does: ids from the time."""

    def __init__(self) -> None:
        self.ids = ArchiveIds()

    def message(self, owner: str, contact: str, at: float, body: str = "hi", outgoing: bool = False,
                resource: str = "") -> ArchivedMessage:
        archive_id, at = self.ids.make(at)
        stanza = f"<message xmlns='jabber:client' type='chat'><body>{body}</body></message>"
        return ArchivedMessage(owner, archive_id, contact, resource, outgoing, at, body, stanza)


async def fill(archive, count: int = 10, contact: str = BOB, step: float = 60.0) -> list[ArchivedMessage]:
    """*count* messages between alice and *contact*, one a minute from T0, alternating direction."""
    maker = Conversation()
    messages = [maker.message(ALICE, contact, T0 + i * step, f"message {i}", outgoing=i % 2 == 0)
                for i in range(count)]
    await archive.append(messages)
    return messages


def ids(page) -> list[str]:
    return [m.id for m in page.messages]


def test_backends_provide_the_interfaces(tmp_path):
    assert IArchive.providedBy(MemoryArchive())
    assert IArchive.providedBy(SQLiteArchive(str(tmp_path / "h.sqlite")))
    assert IArchive.providedBy(RedisArchive())
    assert IOfflineStore.providedBy(MemoryOfflineStore())
    assert IOfflineStore.providedBy(SQLiteOfflineStore(str(tmp_path / "h.sqlite")))
    assert IOfflineStore.providedBy(RedisOfflineStore())


def test_open_picks_the_configured_backends(tmp_path):
    def settings(backend: str) -> Settings:
        return Settings(storage=StorageSettings(path="h.sqlite"), base_dir=str(tmp_path),
                        archive=ArchiveSettings(backend=backend, offline_backend=backend, commit_interval=0.01))

    for backend, archive_cls, offline_cls in [
        ("memory", MemoryArchive, MemoryOfflineStore),
        ("sqlite", SQLiteArchive, SQLiteOfflineStore),
        ("redis", RedisArchive, RedisOfflineStore),
    ]:
        assert isinstance(open_archive(settings(backend)), archive_cls)
        assert isinstance(open_offline(settings(backend)), offline_cls)
    store = open_archive(settings("sqlite"))
    assert store.path == str(tmp_path / "h.sqlite") and store.commit_interval == 0.01


# -- the archive: result sets and paging (XEP-0313 §4, XEP-0059 §2)


@pytest_twisted.ensureDeferred
async def test_empty_archive(archive):
    page = await archive.query(ALICE, ArchiveQuery())
    assert (page.messages, page.count, page.first_index, page.complete) == ([], 0, None, True)
    assert await archive.contacts(ALICE) == []


@pytest_twisted.ensureDeferred
async def test_whole_archive_in_order_with_what_was_stored(archive):
    messages = await fill(archive, 5)
    page = await archive.query(ALICE, ArchiveQuery())
    assert page.messages == messages
    assert (page.count, page.first_index, page.complete) == (5, 0, True)
    assert page.messages[0].at == T0 and page.messages[0].outgoing and not page.messages[1].outgoing


@pytest_twisted.ensureDeferred
async def test_paging_forward_with_after(archive):
    messages = await fill(archive, 10)
    seen, after, indexes = [], None, []
    while True:
        page = await archive.query(ALICE, ArchiveQuery(after=after, max=3))
        seen += ids(page)
        indexes.append(page.first_index)
        assert page.count == 10
        if page.complete:
            break
        after = page.messages[-1].id
    assert seen == [m.id for m in messages]
    assert indexes == [0, 3, 6, 9]


@pytest_twisted.ensureDeferred
async def test_paging_backward_from_the_last_page(archive):
    messages = await fill(archive, 10)
    pages, before = [], ""
    while True:
        page = await archive.query(ALICE, ArchiveQuery(before=before, max=4))
        pages.append((ids(page), page.first_index, page.complete))
        if page.complete:
            break
        before = page.messages[0].id
    every = [m.id for m in messages]
    assert pages == [(every[6:], 6, False), (every[2:6], 2, False), (every[:2], 0, True)]


@pytest_twisted.ensureDeferred
async def test_page_by_index_and_count_only(archive):
    messages = await fill(archive, 10)
    page = await archive.query(ALICE, ArchiveQuery(index=4, max=3))
    assert ids(page) == [m.id for m in messages[4:7]] and page.first_index == 4 and not page.complete
    page = await archive.query(ALICE, ArchiveQuery(index=8, max=3))
    assert ids(page) == [m.id for m in messages[8:]] and page.complete
    count_only = await archive.query(ALICE, ArchiveQuery(max=0))
    assert (count_only.messages, count_only.count, count_only.first_index, count_only.complete) == ([], 10, None,
                                                                                                      False)


@pytest_twisted.ensureDeferred
async def test_filter_by_contact_and_resource(archive):
    maker = Conversation()
    messages = [
        maker.message(ALICE, BOB, T0, "to bob", outgoing=True),
        maker.message(ALICE, CAROL, T0 + 1, "from carol's phone", resource="phone"),
        maker.message(ALICE, BOB, T0 + 2, "from bob's desk", resource="desk"),
        maker.message(ALICE, CAROL, T0 + 3, "from carol's desk", resource="desk"),
        maker.message(ALICE, BOB, T0 + 4, "from bob's phone", resource="phone"),
    ]
    await archive.append(messages)
    with_bob = await archive.query(ALICE, ArchiveQuery(contact=BOB))
    assert [m.body for m in with_bob.messages] == ["to bob", "from bob's desk", "from bob's phone"]
    assert with_bob.count == 3
    bob_desk = await archive.query(ALICE, ArchiveQuery(contact=BOB, resource="desk"))
    assert [m.body for m in bob_desk.messages] == ["from bob's desk"]
    nobody = await archive.query(ALICE, ArchiveQuery(contact="dave@example.com"))
    assert nobody.count == 0 and nobody.complete


@pytest_twisted.ensureDeferred
async def test_time_range_is_inclusive_at_both_ends(archive):
    messages = await fill(archive, 10)  # one a minute from T0
    page = await archive.query(ALICE, ArchiveQuery(start=T0 + 120, end=T0 + 300))
    assert ids(page) == [m.id for m in messages[2:6]]
    assert page.count == 4
    page = await archive.query(ALICE, ArchiveQuery(start=T0 + 120.000001, end=T0 + 299.999999))
    assert ids(page) == [m.id for m in messages[3:5]]
    page = await archive.query(ALICE, ArchiveQuery(start=T0 + 10_000))
    assert page.count == 0


@pytest_twisted.ensureDeferred
async def test_paging_inside_a_filtered_result_set(archive):
    maker = Conversation()
    messages = [maker.message(ALICE, BOB if i % 3 else CAROL, T0 + i * 60, f"m{i}") for i in range(12)]
    await archive.append(messages)
    bob = [m for m in messages if m.contact == BOB]
    # 'after' names a carol message: paging resumes in bob's set after that point
    page = await archive.query(ALICE, ArchiveQuery(contact=BOB, after=messages[3].id, max=2))
    assert ids(page) == [bob[2].id, bob[3].id]
    assert page.first_index == 2 and page.count == len(bob) and not page.complete
    page = await archive.query(ALICE, ArchiveQuery(contact=BOB, before=messages[6].id, max=10))
    assert ids(page) == [m.id for m in bob[:4]] and page.first_index == 0 and page.complete
    ranged = ArchiveQuery(contact=BOB, start=T0 + 120, end=T0 + 600)
    in_range = [m for m in bob if T0 + 120 <= m.at <= T0 + 600]
    page = await archive.query(ALICE, ArchiveQuery(**{**ranged.__dict__, "before": "", "max": 2}))
    assert ids(page) == [m.id for m in in_range[-2:]] and page.first_index == len(in_range) - 2
    page = await archive.query(ALICE, ArchiveQuery(**{**ranged.__dict__, "after": messages[11].id, "max": 2}))
    assert page.messages == [] and page.first_index is None and page.complete


@pytest_twisted.ensureDeferred
async def test_after_id_before_id_and_ids(archive):
    messages = await fill(archive, 8)
    page = await archive.query(ALICE, ArchiveQuery(after_id=messages[1].id, before_id=messages[5].id))
    assert ids(page) == [m.id for m in messages[2:5]] and page.count == 3
    wanted = (messages[6].id, messages[0].id, messages[3].id)
    page = await archive.query(ALICE, ArchiveQuery(ids=wanted))
    assert ids(page) == [messages[0].id, messages[3].id, messages[6].id]
    page = await archive.query(ALICE, ArchiveQuery(ids=wanted, start=T0 + 60, max=1))
    assert ids(page) == [messages[3].id] and page.count == 2 and not page.complete


@pytest.mark.parametrize("field", ["after", "before", "after_id", "before_id", "ids"])
@pytest_twisted.ensureDeferred
async def test_ids_not_in_the_archive_are_unknown(archive, field):
    await fill(archive, 3)
    bobs = await fill_other_owner(archive)
    for missing in ("0000000000000f-0123456789", bobs.id, "not an id"):
        value = (missing,) if field == "ids" else missing
        with pytest.raises(UnknownMessage, match=missing):
            await archive.query(ALICE, ArchiveQuery(**{field: value}))


async def fill_other_owner(archive) -> ArchivedMessage:
    message = Conversation().message(BOB, ALICE, T0 + 5, "bob's own copy", outgoing=True)
    await archive.append([message])
    return message


@pytest_twisted.ensureDeferred
async def test_archives_are_per_owner(archive):
    await fill(archive, 3)
    await fill_other_owner(archive)
    assert (await archive.query(ALICE, ArchiveQuery())).count == 3
    bob = await archive.query(BOB, ArchiveQuery())
    assert [m.body for m in bob.messages] == ["bob's own copy"]
    assert (await archive.query("alice@example.org", ArchiveQuery())).count == 0


@pytest_twisted.ensureDeferred
async def test_append_is_idempotent_and_keeps_any_text(archive):
    maker = Conversation()
    body = "quotes ' \" <tags> & émoji 🎉 and a\nnewline"
    message = maker.message(ALICE, BOB, T0, body)
    await archive.append([message])
    await archive.append([message])
    page = await archive.query(ALICE, ArchiveQuery())
    assert page.count == 1 and page.messages[0].body == body and page.messages[0].stanza == message.stanza


@pytest_twisted.ensureDeferred
async def test_remove_takes_messages_back(archive):
    messages = await fill(archive, 4)
    await archive.remove(ALICE, [messages[1].id, messages[3].id, "0000000000000f-0123456789"])
    assert ids(await archive.query(ALICE, ArchiveQuery())) == [messages[0].id, messages[2].id]
    assert await archive.contacts(ALICE) == [ArchiveContact(BOB, messages[2].at)]
    await archive.remove(ALICE, [messages[0].id, messages[2].id])
    assert await archive.contacts(ALICE) == []


@pytest_twisted.ensureDeferred
async def test_contacts_most_recent_first(archive):
    maker = Conversation()
    await archive.append([
        maker.message(ALICE, BOB, T0), maker.message(ALICE, CAROL, T0 + 10),
        maker.message(ALICE, "dave@example.com", T0 + 15), maker.message(ALICE, BOB, T0 + 20),
    ])
    assert await archive.contacts(ALICE) == [
        ArchiveContact(BOB, T0 + 20), ArchiveContact("dave@example.com", T0 + 15), ArchiveContact(CAROL, T0 + 10),
    ]


@pytest_twisted.ensureDeferred
async def test_expire_deletes_the_oldest(archive):
    messages = await fill(archive, 6)
    carol = Conversation().message(ALICE, CAROL, T0 + 30)
    await archive.append([carol])
    assert await archive.expire(T0 + 120) == 3  # T0, T0+30 (carol), T0+60
    assert ids(await archive.query(ALICE, ArchiveQuery())) == [m.id for m in messages[2:]]
    assert [c.contact for c in await archive.contacts(ALICE)] == [BOB]
    assert await archive.expire(T0) == 0


@pytest_twisted.ensureDeferred
async def test_expire_keeps_other_domains_and_spared_owners(archive):
    """Retention per domain, and a legal hold sparing an owner."""
    maker = Conversation()
    old = [maker.message(ALICE, BOB, T0, "alice's"), maker.message(BOB, ALICE, T0 + 1, "bob's"),
           maker.message("olga@example.org", "pat@example.org", T0 + 2, "another domain's")]
    await archive.append(old)
    assert await archive.expire(T0 + 60, domain="example.org") == 1
    assert await archive.expire(T0 + 60, domain="example.com", spare={BOB}) == 1
    assert ids(await archive.query(ALICE, ArchiveQuery())) == []
    assert ids(await archive.query(BOB, ArchiveQuery())) == [old[1].id]  # on hold: kept
    assert await archive.expire(T0 + 60) == 1
    assert ids(await archive.query(BOB, ArchiveQuery())) == []


@pytest_twisted.ensureDeferred
async def test_erase_takes_one_owners_whole_archive(archive):
    messages = await fill(archive, 5)
    other = await fill_other_owner(archive)
    assert await archive.erase(ALICE) == len(messages)
    assert ids(await archive.query(ALICE, ArchiveQuery())) == []
    assert await archive.contacts(ALICE) == []
    assert ids(await archive.query(BOB, ArchiveQuery())) == [other.id]  # bob's copy is bob's
    assert await archive.erase(ALICE) == 0


@pytest_twisted.ensureDeferred
async def test_search_finds_every_word_as_a_prefix_in_any_case(archive):
    maker = Conversation()
    messages = [maker.message(ALICE, BOB, T0 + i, body) for i, body in enumerate((
        "The quarterly Report is ready", "lunch at noon?", "report: café numbers", "nothing here"))]
    messages.append(maker.message(ALICE, CAROL, T0 + 10, "carol's report"))
    await archive.append(messages)
    if not getattr(archive, "searchable", True):
        with pytest.raises(SearchUnavailable):
            await archive.query(ALICE, ArchiveQuery(text="report"))
        return
    assert ids(await archive.query(ALICE, ArchiveQuery(text="REPORT"))) == [messages[i].id for i in (0, 2, 4)]
    assert ids(await archive.query(ALICE, ArchiveQuery(text="rep quart"))) == [messages[0].id]
    assert ids(await archive.query(ALICE, ArchiveQuery(text="cafe"))) == [messages[2].id]  # accents aside
    assert ids(await archive.query(ALICE, ArchiveQuery(text="port"))) == []  # words start, not inside
    assert ids(await archive.query(ALICE, ArchiveQuery(text="report", contact=CAROL))) == [messages[4].id]
    page = await archive.query(ALICE, ArchiveQuery(text="report", before="", max=2))
    assert ids(page) == [messages[2].id, messages[4].id] and page.count == 3
    assert ids(await archive.query(BOB, ArchiveQuery(text="report"))) == []  # alice's alone
    await archive.erase(ALICE)
    assert ids(await archive.query(ALICE, ArchiveQuery(text="report"))) == []
    with pytest.raises(ValueError):
        await archive.query(ALICE, ArchiveQuery(text="  ?! "))


def both(maker: Conversation, sender: str, recipient: str, at: float, body: str) -> list[ArchivedMessage]:
    """A message as the archive feature keeps it: the recipient's copy and the sender's (its twin)."""
    received = maker.message(recipient, sender, at, body)
    sent = ArchivedMessage(sender, ArchiveIds.twin(received.id), recipient, "", True, received.at, body,
                           received.stanza)
    return [received, sent]


EXAMPLE = ("example.com", "conference.example.com")
ROOM = "lunch@conference.example.com"


@pytest_twisted.ensureDeferred
async def test_an_administrators_search_of_a_domain(archive):
    maker = Conversation()
    to_bob = both(maker, ALICE, BOB, T0, "The quarterly report is ready")
    to_alice = both(maker, BOB, ALICE, T0 + 1, "Thanks for the report")
    to_carol = both(maker, ALICE, CAROL, T0 + 2, "Report for carol")
    in_room = maker.message(ROOM, ROOM, T0 + 3, "report at lunch", resource="dan")
    elsewhere = both(maker, "erin@example.org", "fred@example.org", T0 + 4, "their report")
    receipt = maker.message(BOB, ALICE, T0 + 5, "")
    lone = maker.message(CAROL, "gone@example.com", T0 + 6, "an old report")  # its sender erased
    await archive.append([*to_bob, *to_alice, *to_carol, in_room, *elsewhere, receipt, lone])
    if not getattr(archive, "searchable", True):
        with pytest.raises(SearchUnavailable):
            await archive.search(HistorySearch(EXAMPLE, text="report"))
        return

    def shown(hits) -> list[tuple[str, str]]:
        return [(m.owner, m.body) for m in hits.messages]

    # each message once, newest first: the sender's copy; the room's; the lone recipient's copy
    everything = await archive.search(HistorySearch(EXAMPLE, text="REPORT"))
    assert shown(everything) == [(CAROL, "an old report"), (ROOM, "report at lunch"), (ALICE, "Report for carol"),
                                 (BOB, "Thanks for the report"), (ALICE, "The quarterly report is ready")]
    assert everything.next is None and everything.messages[1].resource == "dan"
    # one archive: every copy in it, received too
    assert shown(await archive.search(HistorySearch(EXAMPLE, text="report", owner=ALICE))) == [
        (ALICE, "Report for carol"), (ALICE, "Thanks for the report"), (ALICE, "The quarterly report is ready")]
    assert shown(await archive.search(HistorySearch(EXAMPLE, owner=BOB))) == [
        (BOB, "Thanks for the report"), (BOB, "The quarterly report is ready")]  # no receipt
    assert shown(await archive.search(HistorySearch(EXAMPLE, text="report", contact=CAROL))) == [
        (ALICE, "Report for carol")]
    assert shown(await archive.search(HistorySearch(EXAMPLE, text="report", start=T0 + 1, end=T0 + 2))) == [
        (ALICE, "Report for carol"), (BOB, "Thanks for the report")]
    assert shown(await archive.search(HistorySearch(("example.org",), text="report"))) == [
        ("erin@example.org", "their report")]
    assert shown(await archive.search(HistorySearch(("example.com",), owner=ROOM))) == []  # not a host searched
    # pages of two, by the cursor
    pages, cursor = [], None
    while True:
        page = await archive.search(HistorySearch(EXAMPLE, text="report", max=2, before=cursor))
        pages.append(shown(page))
        if page.next is None:
            break
        cursor = page.next
    assert [len(p) for p in pages] == [2, 2, 1] and sum(pages, []) == shown(everything)
    # when the sender's copy is gone, the recipient's stands in for it
    await archive.erase(ALICE)
    assert shown(await archive.search(HistorySearch(EXAMPLE, text="quarterly"))) == [
        (BOB, "The quarterly report is ready")]
    for wrong in (HistorySearch(EXAMPLE), HistorySearch(EXAMPLE, text="?!"), HistorySearch((), text="report"),
                  HistorySearch(EXAMPLE, text="report", before="nonsense"), HistorySearch(EXAMPLE, owner=BOB, max=0)):
        with pytest.raises(ValueError):
            await archive.search(wrong)


# -- conversations (grouped by contact and silence)


@pytest_twisted.ensureDeferred
async def test_conversations_split_at_silences_newest_first(archive):
    maker = Conversation()
    times = [0, 60, 120, 4000, 4100, 9000, 20000, 20010, 20020, 20030]
    messages = [maker.message(ALICE, BOB, T0 + t, f"message at {t}") for t in times]
    messages.insert(2, maker.message(ALICE, CAROL, T0 + 90, "carol in between"))
    await archive.append(messages)
    found = await archive.conversations(ALICE, BOB, gap=1800)
    assert [(c.start - T0, c.end - T0, c.count, c.preview) for c in found] == [
        (20000, 20030, 4, "message at 20000"),
        (9000, 9000, 1, "message at 9000"),
        (4000, 4100, 2, "message at 4000"),
        (0, 120, 3, "message at 0"),
    ]
    assert all(c.contact == BOB for c in found)
    older = await archive.conversations(ALICE, BOB, gap=1800, before=found[1].id, limit=1)
    assert [c.id for c in older] == [found[2].id]
    assert [c.count for c in await archive.conversations(ALICE, BOB, gap=10_000)] == [4, 6]
    one = await archive.conversation(ALICE, found[3].id, gap=1800)
    assert [m.body for m in one.messages] == ["message at 0", "message at 60", "message at 120"]
    assert (one.contact, one.start, one.count, one.earlier, one.later) == (BOB, T0, 3, False, False)
    with pytest.raises(UnknownMessage):
        await archive.conversation(ALICE, "0000000000000f-0123456789", gap=1800)


def receipt(maker: Conversation, owner: str, contact: str, at: float, of: str, marker: str = "") -> ArchivedMessage:
    """A XEP-0184 receipt (or a XEP-0333 marker) as the archive feature keeps it: empty body, its XML."""
    child = (f"<{marker} xmlns='urn:xmpp:chat-markers:0' id='{of}'/>" if marker
             else f"<received xmlns='urn:xmpp:receipts' id='{of}'/>")
    archive_id, at = maker.ids.make(at)
    stanza = f"<message xmlns='jabber:client'>{child}</message>"
    return ArchivedMessage(owner, archive_id, contact, "", False, at, "", stanza)


@pytest_twisted.ensureDeferred
async def test_receipts_and_markers_are_kept_but_never_counted_as_messages(archive):
    """Every backend keeps a receipt's empty body and XML, MAM sees it in order; conversations
    neither count, preview, split on nor start with one."""
    maker = Conversation()
    early = receipt(maker, ALICE, BOB, T0 - 5000, "x")  # long before: starts no conversation
    first = maker.message(ALICE, BOB, T0, "hello", outgoing=True)
    late = receipt(maker, ALICE, BOB, T0 + 30, first.id)
    # read after the gap: splits nothing, and stays with the conversation it is about
    read = receipt(maker, ALICE, BOB, T0 + 3000, first.id, "displayed")
    second = maker.message(ALICE, BOB, T0 + 3100, "again", outgoing=True)
    await archive.append([early, first, late, read, second])
    whole = await archive.query(ALICE, ArchiveQuery())
    assert [(m.body, m.stanza) for m in whole.messages] == [(m.body, m.stanza) for m in (early, first, late, read,
                                                                                          second)]
    found = await archive.conversations(ALICE, BOB, gap=1800)
    assert [(c.id, c.count, c.preview) for c in found] == [(second.id, 1, "again"), (first.id, 1, "hello")]
    page = await archive.conversation(ALICE, first.id, gap=1800)
    assert page.count == 1 and [m.id for m in page.messages] == [first.id, late.id, read.id]
    assert (await archive.conversations(ALICE, BOB, gap=10_000))[0].count == 2


def said(maker: Conversation, at: float, body: str, own_id: str, outgoing: bool, replaces: str = "") -> ArchivedMessage:
    """A message of alice's archive with the id its client gave it, a XEP-0308 correction if *replaces*."""
    archive_id, at = maker.ids.make(at)
    replace = f"<replace xmlns='urn:xmpp:message-correct:0' id='{replaces}'/>" if replaces else ""
    stanza = f"<message xmlns='jabber:client' id='{own_id}' type='chat'><body>{body}</body>{replace}</message>"
    return ArchivedMessage(ALICE, archive_id, BOB, "", outgoing, at, body, stanza)


@pytest_twisted.ensureDeferred
async def test_corrections_are_counted_and_previewed_as_the_message_they_correct(archive):
    """Every backend: a correction from the original's sender is no message of its own (count) and gives
    the preview its latest text; one naming a message its sender did not send is a message."""
    maker = Conversation()
    entries = [
        said(maker, T0, "lunch at 12?", "a1", outgoing=True),
        said(maker, T0 + 10, "lunch at 1?", "a2", outgoing=True, replaces="a1"),
        said(maker, T0 + 20, "lunch at 2?", "a3", outgoing=True, replaces="a2"),  # a correction of the correction
        receipt(maker, ALICE, BOB, T0 + 25, "a3"),
        said(maker, T0 + 30, "no lunch", "b1", outgoing=False, replaces="a1"),  # bob's forgery: his own message
        said(maker, T0 + 40, "ok", "b2", outgoing=False),
    ]
    await archive.append(entries)
    [found] = await archive.conversations(ALICE, BOB, gap=1800)
    assert (found.count, found.preview) == (3, "lunch at 2?")
    page = await archive.conversation(ALICE, found.id, gap=1800)
    assert page.count == 3 and len(page.messages) == len(entries)  # the page has every entry; fold() shows 3
    shown = [(v.body, v.edited, v.state) for v in fold(page.messages)]
    assert shown == [("lunch at 2?", True, "delivered"), ("no lunch", False, "sent"), ("ok", False, "sent")]
    assert client_id(entries[0]) == "a1" and replaced_id(entries[2]) == "a2" and replaced_id(entries[0]) is None


@pytest_twisted.ensureDeferred
async def test_long_conversations_span_scan_pages(archive):
    messages = await fill(archive, 450, step=10)
    found = await archive.conversations(ALICE, BOB, gap=60)
    assert len(found) == 1 and found[0].count == 450 and found[0].id == messages[0].id
    newest = await archive.conversation(ALICE, messages[0].id, gap=60, limit=100)
    assert newest.count == 450 and newest.messages == messages[-100:] and newest.earlier
    assert found[0].preview == "message 0"


# -- one conversation, a page at a time (the webmail's /history/conversation)


async def three_conversations(archive, long: int = 23) -> tuple[list, list, list]:
    """With bob: 3 messages, an hour of silence, *long* messages a minute apart (carol's in
    between, in another conversation of hers), an hour of silence, 2 messages."""
    maker = Conversation()
    before = [maker.message(ALICE, BOB, T0 + i * 60, f"before {i}") for i in range(3)]
    start = T0 + 3600
    middle = [maker.message(ALICE, BOB, start + i * 60, f"middle {i}", outgoing=i % 3 == 0) for i in range(long)]
    carol = [maker.message(ALICE, CAROL, start + i * 60 + 30, f"carol {i}") for i in range(long)]
    after = [maker.message(ALICE, BOB, start + long * 60 + 3600 + i, f"after {i}") for i in range(2)]
    await archive.append(before + middle + carol + after)
    return before, middle, after


def bounded_reads(archive, monkeypatch) -> list[tuple[str, int]]:
    """Record every read the conversation paging makes: (kind, the most messages it may return)."""
    reads: list[tuple[str, int]] = []
    query, between = archive.query, archive.between

    def spy_query(owner, q):
        reads.append(("query ids" if q.ids is not None else "query", q.max))
        return query(owner, q)

    def spy_between(owner, contact, **bounds):
        reads.append(("between", bounds["limit"]))
        return between(owner, contact, **bounds)

    monkeypatch.setattr(archive, "query", spy_query)
    monkeypatch.setattr(archive, "between", spy_between)
    return reads


@pytest_twisted.ensureDeferred
async def test_between_reads_one_contact_between_two_ids(archive):
    maker = Conversation()
    messages = [maker.message(ALICE, BOB if i % 2 else CAROL, T0 + i, f"m{i}") for i in range(12)]
    await archive.append(messages)
    bob = [m for m in messages if m.contact == BOB]
    assert await archive.between(ALICE, BOB, limit=3) == bob[:3]
    assert await archive.between(ALICE, BOB, limit=3, newest=True) == bob[-3:]
    assert await archive.between(ALICE, BOB, after=bob[1].id, before=bob[5].id, limit=10) == bob[2:5]
    assert await archive.between(ALICE, BOB, after=bob[1].id, before=bob[5].id, limit=2, newest=True) == bob[3:5]
    # bounds need not be messages, nor of this contact
    assert await archive.between(ALICE, BOB, after=messages[4].id, limit=1) == [messages[5]]
    assert await archive.between(ALICE, BOB, before="0000000000000f-0123456789", limit=5) == []
    assert await archive.between(ALICE, "dave@example.com", limit=5) == []
    assert await archive.between(BOB, ALICE, limit=5) == []


@pytest_twisted.ensureDeferred
async def test_conversation_newest_page_then_earlier_pages_to_the_first_message(archive, monkeypatch):
    monkeypatch.setattr("chatgate.storage.archive.WALK_STEP", 4)  # the walk to the end takes several reads
    reads = bounded_reads(archive, monkeypatch)
    _, middle, _ = await three_conversations(archive)
    newest = await archive.conversation(ALICE, middle[0].id, gap=1800, limit=5)
    assert newest.messages == middle[-5:] and newest.count == len(middle)
    assert (newest.contact, newest.start, newest.earlier, newest.later) == (BOB, middle[0].at, True, False)
    pages, page = [newest.messages], newest
    while page.earlier:
        page = await archive.conversation(ALICE, middle[0].id, gap=1800, before=page.messages[0].id, limit=5)
        assert 0 < len(page.messages) <= 5 and page.later and page.count is None
        pages.insert(0, page.messages)
    assert [m for p in pages for m in p] == middle
    assert [len(p) for p in pages] == [3, 5, 5, 5, 5]
    # each read asked for a page (and one more, to know whether there are others) or a walking step,
    # never for the conversation: the cursors are looked up by id
    assert {kind for kind, _ in reads} == {"query ids", "between"}
    assert max(n for _, n in reads) <= 6


@pytest_twisted.ensureDeferred
async def test_conversation_pages_forward_with_after_and_stop_at_the_silence(archive, monkeypatch):
    reads = bounded_reads(archive, monkeypatch)
    _, middle, after = await three_conversations(archive)
    seen, page = [middle[0]], None
    while page is None or page.later:
        page = await archive.conversation(ALICE, middle[0].id, gap=1800, after=seen[-1].id, limit=4)
        assert 0 < len(page.messages) <= 4 and page.earlier
        seen += page.messages
    assert seen == middle
    # after the last message: nothing more, the next conversation is another one
    last = await archive.conversation(ALICE, middle[0].id, gap=1800, after=middle[-1].id, limit=4)
    assert (last.messages, last.earlier, last.later) == ([], True, False)
    assert max(n for _, n in reads) <= 5
    # the first page of a conversation is the one before its second message
    first = await archive.conversation(ALICE, middle[0].id, gap=1800, before=middle[1].id, limit=4)
    assert (first.messages, first.earlier, first.later) == ([middle[0]], False, True)
    nothing = await archive.conversation(ALICE, middle[0].id, gap=1800, before=middle[0].id, limit=4)
    assert (nothing.messages, nothing.earlier) == ([], False)
    assert (await archive.conversation(ALICE, after[0].id, gap=1800)).messages == after


@pytest_twisted.ensureDeferred
async def test_conversation_pages_stay_put_while_messages_are_appended(archive):
    _, middle, _ = await three_conversations(archive, long=12)
    newest = await archive.conversation(ALICE, middle[0].id, gap=1800, limit=5)
    maker = Conversation()
    more = [maker.message(ALICE, BOB, middle[-1].at + 60 + i, f"more {i}") for i in range(7)]
    await archive.append(more)
    earlier = await archive.conversation(ALICE, middle[0].id, gap=1800, before=newest.messages[0].id, limit=5)
    assert earlier.messages == middle[2:7]
    later = await archive.conversation(ALICE, middle[0].id, gap=1800, after=newest.messages[-1].id, limit=5)
    assert later.messages == more[:5] and later.later
    again = await archive.conversation(ALICE, middle[0].id, gap=1800, limit=5)
    assert again.messages == more[-5:] and again.count == 19


@pytest_twisted.ensureDeferred
async def test_conversation_cursors_must_be_messages_of_that_conversation(archive):
    before, middle, after = await three_conversations(archive)
    bobs = await fill_other_owner(archive)
    carol = (await archive.between(ALICE, CAROL, limit=1))[0]
    conversation = middle[0].id
    for cursor in ("0000000000000f-0123456789", "not an id", bobs.id, carol.id, before[-1].id):
        for direction in ("before", "after"):
            with pytest.raises(BadCursor, match="no message of this conversation"):
                await archive.conversation(ALICE, conversation, gap=1800, **{direction: cursor})
    # a later conversation's message: the silence before it shows as soon as a page reaches it
    with pytest.raises(BadCursor):
        await archive.conversation(ALICE, conversation, gap=1800, before=after[0].id, limit=5)
    with pytest.raises(UnknownMessage):
        await archive.conversation(ALICE, "0000000000000f-0123456789", gap=1800)
    with pytest.raises(UnknownMessage):
        await archive.conversation(BOB, conversation, gap=1800)
    with pytest.raises(ValueError, match="exclude"):
        await archive.conversation(ALICE, conversation, gap=1800, before=middle[3].id, after=middle[1].id)


# -- offline messages (XEP-0160)


@pytest_twisted.ensureDeferred
async def test_offline_messages_wait_in_order_and_are_taken_once(offline):
    for i in range(3):
        assert await offline.push(BOB, OfflineMessage(T0 + i, f"<message n='{i}'/>"), None)
    await offline.push(CAROL, OfflineMessage(T0, "<message/>"), None)
    assert await offline.count(BOB) == 3
    assert await offline.pop(BOB) == [OfflineMessage(T0 + i, f"<message n='{i}'/>") for i in range(3)]
    assert await offline.pop(BOB) == [] and await offline.count(BOB) == 0
    assert await offline.count(CAROL) == 1


@pytest_twisted.ensureDeferred
async def test_offline_quota(offline):
    assert await offline.push(BOB, OfflineMessage(T0, "<message/>"), 2)
    assert await offline.push(BOB, OfflineMessage(T0, "<message/>"), 2)
    assert not await offline.push(BOB, OfflineMessage(T0, "<message/>"), 2)
    assert await offline.count(BOB) == 2
    assert await offline.push(BOB, OfflineMessage(T0, "<message/>"), None)  # a redelivery ignores the quota
    await offline.pop(BOB)
    assert await offline.push(BOB, OfflineMessage(T0, "<message/>"), 2)


# -- SQLite: batching and durability


@pytest_twisted.ensureDeferred
async def test_sqlite_query_sees_writes_still_queued(tmp_path):
    store = SQLiteArchive(str(tmp_path / "h.sqlite"), commit_interval=0.5)
    await store.start()
    maker = Conversation()
    appended = store.append([maker.message(ALICE, BOB, T0)])  # not awaited: still queued
    assert not appended.called
    assert (await store.query(ALICE, ArchiveQuery())).count == 1
    assert appended.called
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_sqlite_words_index_merging_is_upkeep_that_never_fails_a_message(tmp_path, monkeypatch):
    path = str(tmp_path / "h.sqlite")
    store = SQLiteArchive(path, commit_interval=0)
    await store.start()
    with sqlite3.connect(path) as db:  # FTS5 merges only when the batches say so
        assert db.execute("SELECT v FROM archive_text_config WHERE k = 'automerge'").fetchone() == (0,)
    maker = Conversation()
    await store.append([maker.message(ALICE, BOB, T0, "first report")])
    monkeypatch.setattr(sqlite_archive, "MERGE_EVERY", 0.0)
    monkeypatch.setattr(sqlite_archive, "MERGE", "INSERT INTO archive_text (archive_text, rank) VALUES ('nonsense', ?)")
    await store.append([maker.message(ALICE, BOB, T0 + 1, "second report")])  # its batch's merge fails
    assert [m.body for m in (await store.query(ALICE, ArchiveQuery(text="report"))).messages] == [
        "first report", "second report"]
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_sqlite_batches_writes_and_stop_commits_the_queue(tmp_path):
    path = str(tmp_path / "h.sqlite")
    store = SQLiteArchive(path, commit_interval=60)
    await store.start()
    maker = Conversation()
    pending = [store.append([maker.message(ALICE, BOB, T0 + i)]) for i in range(50)]
    assert not any(d.called for d in pending)  # queued: handed over at the end of the reactor turn
    await store.stop()
    assert all(d.called for d in pending)
    with sqlite3.connect(path) as db:
        assert db.execute("SELECT COUNT(*) FROM archive").fetchone()[0] == 50
    again = SQLiteArchive(path)
    await again.start()
    assert (await again.query(ALICE, ArchiveQuery())).count == 50
    await again.stop()


@pytest_twisted.ensureDeferred
async def test_sqlite_commits_within_the_interval(tmp_path):
    path = str(tmp_path / "h.sqlite")
    store = SQLiteArchive(path, commit_interval=0.02)
    await store.start()
    done = store.append([Conversation().message(ALICE, BOB, T0)])
    await deferLater(reactor, 0.3, lambda: None)
    assert done.called
    with sqlite3.connect(path) as db:  # another connection: it is on disk
        assert db.execute("SELECT COUNT(*) FROM archive").fetchone()[0] == 1
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_sqlite_one_failing_write_fails_alone(tmp_path):
    store = SQLiteOfflineStore(str(tmp_path / "h.sqlite"), commit_interval=0.05)
    await store.start()
    good = store.push(BOB, OfflineMessage(T0, "<message/>"), None)
    bad = store.push(BOB, OfflineMessage(T0, None), None)  # NOT NULL constraint
    other = store.push(BOB, OfflineMessage(T0 + 1, "<message/>"), None)
    assert await good and await other
    with pytest.raises(ArchiveError, match="NOT NULL"):
        await bad
    assert await store.count(BOB) == 2
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_sqlite_shares_the_directory_file(tmp_path):
    from chatgate.storage.sqlite import SQLiteDirectory

    path = str(tmp_path / "chatgate.sqlite")
    directory = SQLiteDirectory(path, 0.05)
    archive, offline = SQLiteArchive(path), SQLiteOfflineStore(path)
    for store in (directory, archive, offline):
        await store.start()
    await directory.add_domain("example.com")
    await archive.append([Conversation().message(ALICE, BOB, T0)])
    await offline.push(BOB, OfflineMessage(T0, "<message/>"), None)
    assert [d.name for d in await directory.domains()] == ["example.com"]
    assert (await archive.query(ALICE, ArchiveQuery())).count == 1
    for store in (directory, archive, offline):
        await store.stop()


@pytest.mark.parametrize("earlier", [
    # a chatgate from before search: no index of words
    "DROP TRIGGER archive_text_added; DROP TRIGGER archive_text_removed; DROP TABLE archive_text;",
    # one that kept positions and sizes in it
    "DROP TABLE archive_text; CREATE VIRTUAL TABLE archive_text USING fts5(body, content='archive',"
    " content_rowid='seq', tokenize='unicode61 remove_diacritics 2');"
    " INSERT INTO archive_text (archive_text) VALUES ('rebuild');",
], ids=["no index", "positions kept"])
@pytest_twisted.ensureDeferred
async def test_sqlite_makes_the_words_index_of_an_earlier_archive_once(tmp_path, earlier):
    path = str(tmp_path / "old.sqlite")
    archive = SQLiteArchive(path)
    await archive.start()
    old = Conversation().message(ALICE, BOB, T0, "the budget meeting")
    await archive.append([old])
    await archive.stop()
    db = sqlite3.connect(path)
    db.executescript(earlier)
    db.close()
    archive = SQLiteArchive(path)
    await archive.start()
    with sqlite3.connect(path) as db:
        (sql,) = db.execute("SELECT sql FROM sqlite_master WHERE name = 'archive_text'").fetchone()
    assert "detail=none" in sql and "columnsize=0" in sql  # which words, not where
    assert ids(await archive.query(ALICE, ArchiveQuery(text="budg meet"))) == [old.id]
    newer = Conversation().message(ALICE, BOB, T0 + 60, "budget approved")
    await archive.append([newer])
    assert ids(await archive.query(ALICE, ArchiveQuery(text="budget"))) == [old.id, newer.id]
    await archive.stop()


def test_sqlite_between_reads_the_contact_index_without_sorting(tmp_path):
    from chatgate.storage.sqlite_archive import _SCHEMA, _between

    db = sqlite3.connect(str(tmp_path / "h.sqlite"))
    db.executescript(_SCHEMA["archive"])
    statements: list[str] = []
    db.set_trace_callback(statements.append)
    for after, before, newest in ((None, None, True), ("00000000000001-0123456789", None, False),
                                  ("00000000000001-0123456789", "0000000000000f-0123456789", True)):
        statements.clear()
        assert _between(db, ALICE, BOB, after, before, 10, newest) == []
        (sql,) = statements
        plan = " ".join(row[3] for row in db.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "USING INDEX archive_by_contact" in plan and "TEMP B-TREE" not in plan, plan
        assert sql.endswith("LIMIT 10")
    db.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_not_started_is_one_line(tmp_path):
    store = SQLiteArchive(str(tmp_path / "h.sqlite"))
    with pytest.raises(ArchiveError, match="not started"):
        await store.query(ALICE, ArchiveQuery())


# -- Redis: keys, connection errors, TLS


@pytest_twisted.ensureDeferred
async def test_redis_keys_are_namespaced_by_prefix_and_domain(redis_server):
    store = RedisArchive(port=redis_server.port, prefix="ns")
    offline = RedisOfflineStore(port=redis_server.port, prefix="ns")
    await store.start()
    await offline.start()
    await store.append([Conversation().message(ALICE, BOB, T0, resource="desk")])
    await offline.push("bob@example.org", OfflineMessage(T0, "<message/>"), None)
    keys = sorted(await store._redis.keys("ns:*"))
    assert keys == [
        "ns:archive-domains",
        "ns:example.com:archive-owners",
        "ns:example.com:archive:alice:contacts",
        "ns:example.com:archive:alice:ids",
        "ns:example.com:archive:alice:messages",
        "ns:example.com:archive:alice:with:bob@example.com",
        "ns:example.com:archive:alice:with:bob@example.com/desk",
        "ns:example.org:offline:bob",
    ]
    await store.stop()
    await offline.stop()


@pytest_twisted.ensureDeferred
async def test_redis_unreachable_is_one_line():
    from tests.redis_server import free_port

    store = RedisArchive(port=free_port(), connect_timeout=0.5)
    with pytest.raises(ArchiveError, match=r"^redis 127\.0\.0\.1:\d+: cannot connect"):
        await store.start()


@pytest_twisted.ensureDeferred
async def test_redis_password(tmp_path):
    server = RedisServer(tmp_path, password="s3cret").start()
    try:
        wrong = RedisArchive(port=server.port, password="wrong")
        with pytest.raises(ArchiveError, match="cannot connect .*could not auth"):
            await wrong.start()
        right = RedisArchive(port=server.port, password="s3cret")
        await right.start()
        await right.append([Conversation().message(ALICE, BOB, T0)])
        assert (await right.query(ALICE, ArchiveQuery())).count == 1
        await right.stop()
    finally:
        server.stop()


@pytest_twisted.ensureDeferred
async def test_redis_over_tls_checks_the_certificate(tmp_path):
    from chatgate.tls import ensure_certificate

    cert, key = str(tmp_path / "redis.crt"), str(tmp_path / "redis.key")
    ensure_certificate(cert, key, ["localhost"])
    server = RedisServer(tmp_path, tls=(cert, key)).start()
    try:
        trusted = RedisArchive(host="localhost", port=server.port, tls=True, tls_ca=cert)
        await trusted.start()
        await trusted.append([Conversation().message(ALICE, BOB, T0)])
        assert (await trusted.query(ALICE, ArchiveQuery())).count == 1
        await trusted.stop()
        untrusted = RedisArchive(host="localhost", port=server.port, tls=True, connect_timeout=1)
        with pytest.raises(ArchiveError, match="cannot connect"):
            await untrusted.start()
    finally:
        server.stop()


def test_client_id_reads_the_serializers_escaped_opening_tag():
    """client_id reads the id without parsing: any attribute value, as chatgate's serializer writes it."""
    stanza = Element(("jabber:client", "message"))
    stanza["to"], stanza["id"] = "bob@example.com/a id='x'>", "it's <1> & \"2\""
    stanza.addElement("body", content="id='body'")
    xml = serialize(stanza)
    message = ArchivedMessage(ALICE, "00000000000001-0123456789", BOB, "", True, T0, "x", xml)
    assert client_id(message) == "it's <1> & \"2\""
    assert client_id(ArchivedMessage(ALICE, message.id, BOB, "", True, T0, "x", "<message/>")) is None


def test_a_marker_marks_every_message_up_to_it_a_receipt_only_its_own():
    """XEP-0333 §6: a displayed marker for alice's second message reads her first one too;
    a receipt (XEP-0184) is about its message alone; a correction starts its message again."""
    maker = Conversation()
    entries = [
        said(maker, T0, "one", "a1", outgoing=True),
        said(maker, T0 + 1, "hi", "b1", outgoing=False),
        said(maker, T0 + 2, "two", "a2", outgoing=True),
        said(maker, T0 + 3, "three", "a3", outgoing=True),
        receipt(maker, ALICE, BOB, T0 + 4, "a3"),
        receipt(maker, ALICE, BOB, T0 + 5, "a2", "displayed"),
        said(maker, T0 + 6, "four", "a4", outgoing=True),
    ]
    assert [(v.body, v.state) for v in fold(entries)] == [
        ("one", "read"), ("hi", "sent"), ("two", "read"), ("three", "delivered"), ("four", "sent")]
    # a correction takes its message back to sent: what acknowledged the old text did not see the new one
    entries.append(said(maker, T0 + 7, "2!", "a5", outgoing=True, replaces="a2"))
    assert [(v.body, v.state) for v in fold(entries)][:3] == [("one", "read"), ("hi", "sent"), ("2!", "sent")]
    entries.append(receipt(maker, ALICE, BOB, T0 + 8, "a4", "displayed"))  # read up to "four", "2!" too
    assert {v.state for v in fold(entries) if v.message.outgoing} == {"read"}
