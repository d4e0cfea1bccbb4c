"""The IDirectory contract, run against every backend (Redis: a real redis-server);
then what only SQLite adds, and the Redis change feed between nodes."""

from __future__ import annotations

import itertools
import time

import pytest
import pytest_twisted
from scramp import ScramClient, ScramMechanism
from twisted.application.internet import TimerService
from twisted.internet import reactor
from twisted.internet.task import deferLater

from chatgate.auth.credentials import make_credentials, verify_password
from chatgate.config import Settings, StorageSettings
from chatgate.storage import open_directory
from chatgate.storage.interfaces import (
    Alias,
    Change,
    DirectoryError,
    Domain,
    DuplicateDomain,
    DuplicateUser,
    Hold,
    IDirectory,
    RoomRecord,
    Site,
    UnknownAlias,
    UnknownDomain,
    UnknownSite,
    UnknownUser,
    User,
)
from chatgate.storage.memory import MemoryDirectory
from chatgate.storage.postgres_stores import PostgresDirectory
from chatgate.storage.redis_directory import RedisDirectory
from chatgate.storage.sqlite import SCHEMA_VERSION, SQLiteDirectory
from tests.redis_server import RedisServer, free_port

POLL = 0.02
ALICE = User("alice", "example.com", "Alice Liddell", "Dreamer", "Wonder", "+1 555 0100")
BOB = User("bob", "example.com", "Bob")
_prefixes = itertools.count()


@pytest.fixture(scope="module")
def secret_credentials():
    return make_credentials("s3cret pass", 4096)


@pytest.fixture(scope="module")
def other_credentials():
    return make_credentials("another", 4096)


class Recorder:
    """A watcher that keeps what it is told and lets a test wait for it."""

    def __init__(self) -> None:
        self.changes: list[Change] = []

    def __call__(self, change: Change) -> None:
        self.changes.append(change)

    async def until(self, count: int, timeout: float = 5.0) -> list[Change]:
        deadline = time.monotonic() + timeout
        while len(self.changes) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"waited for {count} changes, got {self.changes}")
            await deferLater(reactor, 0.01, lambda: None)
        return self.changes


def feed(store: SQLiteDirectory) -> TimerService:
    """The change feed as the service runs it: a poll every POLL seconds, started."""
    polling = TimerService(POLL, store.poll)
    polling.startService()
    return polling


def redis_at(server: RedisServer, prefix: str | None = None) -> RedisDirectory:
    """A directory on *server*, under a prefix of its own unless *prefix* names one to share."""
    return RedisDirectory(port=server.port, prefix=prefix or f"test{next(_prefixes)}")


@pytest_twisted.async_yield_fixture(params=["memory", "sqlite", "redis", "postgresql"])
async def directory(request, tmp_path):
    if request.param == "memory":
        store = MemoryDirectory()
    elif request.param == "sqlite":
        store = SQLiteDirectory(str(tmp_path / "directory.sqlite"), POLL)
    elif request.param == "postgresql":
        store = PostgresDirectory(request.getfixturevalue("postgres_server").database(), POLL)
    else:
        store = redis_at(request.getfixturevalue("redis_server"))
    await store.start()
    polling = feed(store)
    yield store
    await polling.stopService()  # a poll under way ends before the store closes
    await store.stop()


@pytest_twisted.async_fixture
async def hosted(directory, secret_credentials):
    """A directory hosting example.com with alice."""
    await directory.add_domain("example.com")
    await directory.add_user(ALICE, secret_credentials)
    return directory


def test_backends_provide_the_interface(tmp_path):
    assert IDirectory.providedBy(MemoryDirectory())
    assert IDirectory.providedBy(SQLiteDirectory(str(tmp_path / "x.sqlite"), POLL))
    assert IDirectory.providedBy(RedisDirectory())


# -- domains


@pytest_twisted.ensureDeferred
async def test_starts_without_domains(directory):
    assert await directory.domains() == []


@pytest_twisted.ensureDeferred
async def test_domains_are_added_enabled_and_listed_by_name(directory):
    assert await directory.add_domain("example.org") == Domain("example.org", True)
    await directory.add_domain("example.com")
    assert await directory.domains() == [Domain("example.com"), Domain("example.org")]


@pytest_twisted.ensureDeferred
async def test_duplicate_domain_is_refused(directory):
    await directory.add_domain("example.com")
    with pytest.raises(DuplicateDomain, match="^domain already exists: example.com$"):
        await directory.add_domain("example.com")


@pytest_twisted.ensureDeferred
async def test_chat_is_disabled_and_enabled_again(directory):
    await directory.add_domain("example.com")
    await directory.set_chat_enabled("example.com", False)
    assert await directory.domains() == [Domain("example.com", False)]
    await directory.set_chat_enabled("example.com", True)
    assert await directory.domains() == [Domain("example.com", True)]


@pytest_twisted.ensureDeferred
async def test_chat_of_unknown_domain_is_refused(directory):
    with pytest.raises(UnknownDomain, match="^unknown domain: example.org$"):
        await directory.set_chat_enabled("example.org", False)


# -- users


@pytest_twisted.ensureDeferred
async def test_users_are_listed_by_localpart_with_details(hosted, secret_credentials):
    await hosted.add_user(BOB, secret_credentials)
    await hosted.add_user(User("aaron", "example.com"), secret_credentials)
    users = await hosted.users("example.com")
    assert [u.localpart for u in users] == ["aaron", "alice", "bob"]
    assert users[1] == ALICE
    assert await hosted.user("example.com", "alice") == ALICE
    assert await hosted.user("example.com", "carol") is None


@pytest_twisted.ensureDeferred
async def test_users_of_one_domain_only(hosted, secret_credentials):
    await hosted.add_domain("example.org")
    await hosted.add_user(User("alice", "example.org"), secret_credentials)
    assert await hosted.users("example.com") == [ALICE]
    assert await hosted.users("example.org") == [User("alice", "example.org")]


@pytest_twisted.ensureDeferred
async def test_users_of_unknown_domain_are_refused(directory):
    with pytest.raises(UnknownDomain, match="^unknown domain: example.org$"):
        await directory.users("example.org")


@pytest_twisted.ensureDeferred
async def test_user_in_unknown_domain_is_refused(directory, secret_credentials):
    with pytest.raises(UnknownDomain, match="^unknown domain: example.com$"):
        await directory.add_user(ALICE, secret_credentials)


@pytest_twisted.ensureDeferred
async def test_duplicate_user_is_refused(hosted, other_credentials):
    with pytest.raises(DuplicateUser, match="^user already exists: alice@example.com$"):
        await hosted.add_user(User("alice", "example.com", "Other Alice"), other_credentials)
    assert await hosted.user("example.com", "alice") == ALICE


@pytest_twisted.ensureDeferred
async def test_user_details_are_replaced(hosted):
    changed = User("alice", "example.com", "Alice L.", phone="+1 555 0199")
    await hosted.update_user(changed)
    assert await hosted.user("example.com", "alice") == changed


@pytest_twisted.ensureDeferred
async def test_updating_unknown_user_is_refused(hosted):
    with pytest.raises(UnknownUser, match="^unknown user: bob@example.com$"):
        await hosted.update_user(BOB)


@pytest_twisted.ensureDeferred
async def test_removing_a_user_removes_credentials_and_vcard(hosted, secret_credentials):
    await hosted.set_vcard("example.com", "alice", "<vCard xmlns='vcard-temp'/>")
    await hosted.remove_user("example.com", "alice")
    assert await hosted.user("example.com", "alice") is None
    assert await hosted.credentials("example.com", "alice") is None
    assert await hosted.vcard("example.com", "alice") is None
    # the same name may be taken again, with nothing left over
    await hosted.add_user(User("alice", "example.com"), secret_credentials)
    assert await hosted.vcard("example.com", "alice") is None


@pytest_twisted.ensureDeferred
async def test_removing_unknown_user_is_refused(hosted):
    with pytest.raises(UnknownUser, match="^unknown user: bob@example.com$"):
        await hosted.remove_user("example.com", "bob")


# -- aliases


@pytest_twisted.ensureDeferred
async def test_aliases_are_added_listed_and_changed(hosted, secret_credentials):
    await hosted.add_user(BOB, secret_credentials)
    await hosted.add_alias(Alias("sales", "example.com", "Sales Team", ("bob", "alice", "bob")))
    sales = Alias("sales", "example.com", "Sales Team", ("alice", "bob"))
    assert await hosted.alias("example.com", "sales") == sales
    assert await hosted.aliases("example.com") == [sales]
    await hosted.set_alias(Alias("sales", "example.com", "Sales", ("bob",)))
    assert await hosted.alias("example.com", "sales") == Alias("sales", "example.com", "Sales", ("bob",))
    await hosted.remove_alias("example.com", "sales")
    assert await hosted.alias("example.com", "sales") is None
    assert await hosted.aliases("example.com") == []


@pytest_twisted.ensureDeferred
async def test_aliases_and_users_share_the_addresses(hosted, secret_credentials):
    with pytest.raises(DuplicateUser, match="^address already in use: alice@example.com$"):
        await hosted.add_alias(Alias("alice", "example.com"))
    await hosted.add_alias(Alias("team", "example.com", "", ("alice",)))
    with pytest.raises(DuplicateUser):
        await hosted.add_user(User("team", "example.com"), secret_credentials)


@pytest_twisted.ensureDeferred
async def test_alias_refusals(hosted):
    with pytest.raises(UnknownUser, match="^unknown user: zed@example.com$"):
        await hosted.add_alias(Alias("team", "example.com", "", ("alice", "zed")))
    assert await hosted.alias("example.com", "team") is None  # nothing half written
    with pytest.raises(UnknownDomain):
        await hosted.add_alias(Alias("team", "example.org"))
    with pytest.raises(UnknownAlias, match="^unknown alias: team@example.com$"):
        await hosted.set_alias(Alias("team", "example.com"))
    with pytest.raises(UnknownAlias):
        await hosted.remove_alias("example.com", "team")


@pytest_twisted.ensureDeferred
async def test_removing_a_user_removes_their_memberships(directory, secret_credentials):
    recorder = Recorder()
    directory.watch(recorder)
    await directory.add_domain("example.com")
    await directory.add_user(ALICE, secret_credentials)
    await directory.add_user(BOB, secret_credentials)
    await directory.add_alias(Alias("team", "example.com", "", ("alice", "bob")))
    await directory.remove_user("example.com", "bob")
    assert (await directory.alias("example.com", "team")).members == ("alice",)
    assert (await recorder.until(6))[-3:] == [
        Change("alias-added", "example.com", "team"),
        Change("user-removed", "example.com", "bob"),
        Change("alias-changed", "example.com", "team"),
    ]


# -- private XML (XEP-0049)


@pytest_twisted.ensureDeferred
async def test_private_xml_is_kept_per_user_and_namespace_within_a_limit(hosted, secret_credentials):
    await hosted.add_user(BOB, secret_credentials)
    marks = "<storage xmlns='storage:bookmarks'><conference jid='a@conference.example.com'/></storage>"
    assert await hosted.private_xml("example.com", "alice", "storage:bookmarks") is None
    assert await hosted.set_private_xml("example.com", "alice", "storage:bookmarks", marks, 2) is True
    assert await hosted.private_xml("example.com", "alice", "storage:bookmarks") == marks
    assert await hosted.private_xml("example.com", "bob", "storage:bookmarks") is None  # alice's alone
    assert await hosted.set_private_xml("example.com", "alice", "storage:rosternotes", "<x/>", 2) is True
    # a third namespace is over the limit of two; replacing a kept one is not
    assert await hosted.set_private_xml("example.com", "alice", "game:prefs", "<y/>", 2) is False
    assert await hosted.private_xml("example.com", "alice", "game:prefs") is None
    assert await hosted.set_private_xml("example.com", "alice", "storage:bookmarks", "<z/>", 2) is True
    assert await hosted.private_xml("example.com", "alice", "storage:bookmarks") == "<z/>"
    with pytest.raises(UnknownUser):
        await hosted.set_private_xml("example.com", "zed", "storage:bookmarks", marks, 2)
    # a removed user's private XML goes with them: the address made again starts empty
    await hosted.remove_user("example.com", "alice")
    await hosted.add_user(ALICE, secret_credentials)
    assert await hosted.private_xml("example.com", "alice", "storage:bookmarks") is None


# -- PEP nodes (XEP-0163)


@pytest_twisted.ensureDeferred
async def test_pep_nodes_are_kept_per_user_within_quotas_and_told(hosted, secret_credentials):
    recorder = Recorder()
    hosted.watch(recorder)
    await hosted.add_user(BOB, secret_credentials)
    assert await hosted.pep_nodes("example.com", "alice") == {}
    assert await hosted.set_pep_node("example.com", "alice", "urn:xmpp:avatar:metadata", "a" * 40, 2, 100)
    assert await hosted.set_pep_node("example.com", "alice", "http://jabber.org/protocol/nick", "n" * 40, 2, 100)
    # a third node is over two nodes; a record taking the total over 100 bytes is refused whole
    assert not await hosted.set_pep_node("example.com", "alice", "urn:xmpp:bookmarks:1", "b", 2, 100)
    assert not await hosted.set_pep_node("example.com", "alice", "http://jabber.org/protocol/nick", "n" * 61, 2, 100)
    assert await hosted.set_pep_node("example.com", "alice", "http://jabber.org/protocol/nick", "N" * 60, 2, 100)
    assert await hosted.pep_nodes("example.com", "alice") == {
        "urn:xmpp:avatar:metadata": "a" * 40, "http://jabber.org/protocol/nick": "N" * 60}
    assert await hosted.pep_nodes("example.com", "bob") == {}  # alice's alone
    assert await hosted.set_pep_node("example.com", "alice", "urn:xmpp:avatar:metadata", None, 2, 100)
    assert await hosted.set_pep_node("example.com", "alice", "urn:xmpp:avatar:metadata", None, 2, 100)  # told once
    assert list(await hosted.pep_nodes("example.com", "alice")) == ["http://jabber.org/protocol/nick"]
    with pytest.raises(UnknownUser):
        await hosted.set_pep_node("example.com", "zed", "urn:xmpp:avatar:metadata", "x", 2, 100)
    for _ in range(50):  # the feed may still be telling (bounded: 5 s)
        if sum(c.kind == "pep-changed" for c in recorder.changes) >= 4:
            break
        await deferLater(reactor, 0.1, lambda: None)
    await deferLater(reactor, 0.2, lambda: None)
    told = [c for c in recorder.changes if c.kind == "pep-changed"]
    assert told == [Change("pep-changed", "example.com", "alice")] * 4
    # a removed user's nodes go with them: the address made again starts empty
    await hosted.remove_user("example.com", "alice")
    await hosted.add_user(ALICE, secret_credentials)
    assert await hosted.pep_nodes("example.com", "alice") == {}


# -- retention and legal holds


@pytest_twisted.ensureDeferred
async def test_retention_and_holds_are_kept_per_domain(hosted):
    assert await hosted.retention("example.com") is None
    await hosted.set_retention("example.com", 30)
    assert await hosted.retention("example.com") == 30
    await hosted.set_retention("example.com", 0)  # always
    assert await hosted.retention("example.com") == 0
    await hosted.set_retention("example.com", None)
    assert await hosted.retention("example.com") is None
    with pytest.raises(UnknownDomain):
        await hosted.set_retention("example.org", 5)

    assert await hosted.holds("example.com") == []
    alice = Hold("example.com", "alice", "counsel@example.com", 1_700_000_000.5, "case 17")
    whole = Hold("example.com", "", "admin", 1_700_000_001.0)
    await hosted.put_hold(alice)
    await hosted.put_hold(whole)
    assert await hosted.holds("example.com") == [whole, alice]
    await hosted.put_hold(Hold("example.com", "gone", "admin", 1.0))  # an address with no user: kept all the same
    assert [h.target for h in await hosted.holds("example.com")] == ["example.com", "alice@example.com",
                                                                      "gone@example.com"]
    assert await hosted.remove_hold("example.com", "gone") is True
    assert await hosted.remove_hold("example.com", "gone") is False
    with pytest.raises(UnknownDomain):
        await hosted.put_hold(Hold("example.org", "", "admin", 1.0))
    await hosted.remove_user("example.com", "alice")  # the hold outlives the user
    assert alice in await hosted.holds("example.com")


# -- rooms


@pytest_twisted.ensureDeferred
async def test_room_records_are_put_listed_and_told(directory):
    recorder = Recorder()
    directory.watch(recorder)
    await directory.add_domain("example.com")
    assert await directory.rooms("example.com") == []
    await directory.put_room(RoomRecord("example.com", "everyone", "", False))
    await directory.put_room(RoomRecord("example.com", "sales", "Sales floor"))
    await directory.put_room(RoomRecord("example.com", "everyone", "All of us", True))
    assert await directory.rooms("example.com") == [RoomRecord("example.com", "everyone", "All of us", True),
                                                    RoomRecord("example.com", "sales", "Sales floor", True)]
    assert (await recorder.until(4))[1:] == [Change("room-changed", "example.com", name)
                                             for name in ("everyone", "sales", "everyone")]
    with pytest.raises(UnknownDomain):
        await directory.put_room(RoomRecord("example.org", "everyone"))
    with pytest.raises(UnknownDomain):
        await directory.rooms("example.org")
    # a room a user made: its owners and members, kept sorted and once each; removed again
    await directory.put_room(RoomRecord("example.com", "lunch", "Lunch", True, True, ("bob", "alice"),
                                        ("carol", "alice", "carol")))
    lunch = RoomRecord("example.com", "lunch", "Lunch", True, True, ("alice", "bob"), ("carol",))
    assert (await directory.rooms("example.com"))[1] == lunch
    await directory.remove_room("example.com", "lunch")
    await directory.remove_room("example.com", "lunch")  # nothing to remove: no change told
    assert [r.localpart for r in await directory.rooms("example.com")] == ["everyone", "sales"]
    assert [c.kind for c in (await recorder.until(6))[4:]] == ["room-changed", "room-removed"]
    await deferLater(reactor, 0.2, lambda: None)
    assert len(recorder.changes) == 6


# -- sites


@pytest_twisted.ensureDeferred
async def test_sites_are_put_listed_and_removed(directory):
    await directory.put_site(Site("mail.reseller.net", "Reseller Inc."))
    await directory.put_site(Site("webmail.example.com", "", False))
    assert await directory.sites() == [Site("mail.reseller.net", "Reseller Inc.", True),
                                       Site("webmail.example.com", "", False)]
    await directory.put_site(Site("mail.reseller.net", "Reseller Inc.", False))
    assert await directory.site("mail.reseller.net") == Site("mail.reseller.net", "Reseller Inc.", False)
    await directory.remove_site("mail.reseller.net")
    assert await directory.site("mail.reseller.net") is None
    with pytest.raises(UnknownSite, match="^unknown site: mail.reseller.net$"):
        await directory.remove_site("mail.reseller.net")


# -- credentials


@pytest_twisted.ensureDeferred
async def test_credentials_round_trip_and_verify(hosted, secret_credentials):
    stored = await hosted.credentials("example.com", "alice")
    assert stored == secret_credentials
    assert set(stored) == {"SCRAM-SHA-1", "SCRAM-SHA-256"}
    assert verify_password(stored, "s3cret pass")
    assert not verify_password(stored, "s3cret Pass")
    assert not verify_password(stored, "")


@pytest_twisted.ensureDeferred
async def test_credentials_of_unknown_user_are_none(hosted):
    assert await hosted.credentials("example.com", "bob") is None
    assert await hosted.credentials("example.org", "alice") is None


@pytest_twisted.ensureDeferred
async def test_new_password_replaces_the_old(hosted, other_credentials):
    await hosted.set_credentials("example.com", "alice", other_credentials)
    stored = await hosted.credentials("example.com", "alice")
    assert verify_password(stored, "another")
    assert not verify_password(stored, "s3cret pass")


@pytest_twisted.ensureDeferred
async def test_credentials_of_unknown_user_are_refused(hosted, other_credentials):
    with pytest.raises(UnknownUser, match="^unknown user: bob@example.com$"):
        await hosted.set_credentials("example.com", "bob", other_credentials)


@pytest_twisted.ensureDeferred
async def test_credentials_changed_is_when_the_account_was_made_or_got_a_new_password(
        directory, secret_credentials, other_credentials):
    """What login tokens are checked against (auth/tokens.py): made, new password, removed, made again."""
    await directory.add_domain("example.com")
    before = time.time()
    await directory.add_user(ALICE, secret_credentials)
    made = await directory.credentials_changed("example.com", "alice")
    assert before <= made <= time.time()
    await directory.update_user(ALICE)  # new details are not new credentials
    assert await directory.credentials_changed("example.com", "alice") == made

    await directory.set_credentials("example.com", "alice", other_credentials)
    changed = await directory.credentials_changed("example.com", "alice")
    assert made < changed <= time.time()

    await directory.remove_user("example.com", "alice")
    assert await directory.credentials_changed("example.com", "alice") is None
    await directory.add_user(ALICE, secret_credentials)  # the same address, someone new
    assert await directory.credentials_changed("example.com", "alice") > changed
    assert await directory.credentials_changed("example.com", "nobody") is None
    assert await directory.credentials_changed("nowhere.example", "alice") is None


# -- vCards and secrets


@pytest_twisted.ensureDeferred
async def test_vcard_is_stored_and_replaced(hosted):
    assert await hosted.vcard("example.com", "alice") is None
    await hosted.set_vcard("example.com", "alice", "<vCard xmlns='vcard-temp'><FN>A</FN></vCard>")
    await hosted.set_vcard("example.com", "alice", "<vCard xmlns='vcard-temp'><FN>Ä</FN></vCard>")
    assert await hosted.vcard("example.com", "alice") == "<vCard xmlns='vcard-temp'><FN>Ä</FN></vCard>"


@pytest_twisted.ensureDeferred
async def test_vcard_of_unknown_user_is_refused(hosted):
    with pytest.raises(UnknownUser, match="^unknown user: bob@example.com$"):
        await hosted.set_vcard("example.com", "bob", "<vCard xmlns='vcard-temp'/>")


@pytest_twisted.ensureDeferred
async def test_secrets_are_made_once_per_name(directory):
    first = await directory.secret("tokens")
    assert isinstance(first, bytes) and len(first) == 32
    assert await directory.secret("tokens") == first
    assert await directory.secret("other") != first


# -- change feed


@pytest_twisted.ensureDeferred
async def test_watchers_hear_every_change_in_order(directory, secret_credentials, other_credentials):
    first, second = Recorder(), Recorder()
    directory.watch(first)
    directory.watch(second)
    await directory.add_domain("example.com")
    await directory.set_chat_enabled("example.com", False)
    await directory.set_chat_enabled("example.com", True)
    await directory.add_user(ALICE, secret_credentials)
    await directory.update_user(User("alice", "example.com", "Alice L."))
    await directory.set_credentials("example.com", "alice", other_credentials)
    await directory.remove_user("example.com", "alice")
    expected = [
        Change("domain-added", "example.com"),
        Change("domain-disabled", "example.com"),
        Change("domain-enabled", "example.com"),
        Change("user-added", "example.com", "alice"),
        Change("user-changed", "example.com", "alice"),
        Change("credentials-changed", "example.com", "alice"),
        Change("user-removed", "example.com", "alice"),
    ]
    assert await first.until(len(expected)) == expected
    assert await second.until(len(expected)) == expected


@pytest_twisted.ensureDeferred
async def test_refused_mutation_tells_nothing(directory, secret_credentials):
    recorder = Recorder()
    directory.watch(recorder)
    await directory.add_domain("example.com")
    with pytest.raises(DuplicateDomain):
        await directory.add_domain("example.com")
    with pytest.raises(UnknownUser):
        await directory.remove_user("example.com", "alice")
    await directory.add_user(ALICE, secret_credentials)
    assert await recorder.until(2) == [
        Change("domain-added", "example.com"),
        Change("user-added", "example.com", "alice"),
    ]


@pytest_twisted.ensureDeferred
async def test_failing_watcher_does_not_stop_the_others(directory):
    def broken(change):
        raise RuntimeError("watcher bug")

    recorder = Recorder()
    directory.watch(broken)
    directory.watch(recorder)
    await directory.add_domain("example.com")
    await directory.add_domain("example.org")
    assert len(await recorder.until(2)) == 2


def test_memory_watchers_hear_at_once():
    directory = MemoryDirectory()
    recorder = Recorder()
    directory.watch(recorder)
    directory.add_domain("example.com")
    assert recorder.changes == [Change("domain-added", "example.com")]


# -- credentials themselves


def test_credentials_work_for_a_real_scram_exchange(secret_credentials):
    for name, keys in secret_credentials.items():
        server = ScramMechanism(name).make_server(
            lambda _user, keys=keys: (keys.salt, keys.stored_key, keys.server_key, keys.iterations)
        )
        client = ScramClient([name], "alice", "s3cret pass")
        server.set_client_first(client.get_client_first())
        client.set_server_first(server.get_server_first())
        server.set_client_final(client.get_client_final())
        client.set_server_final(server.get_server_final())  # raises if the server proof is wrong


def test_credentials_are_salted_per_call():
    one, two = make_credentials("same", 4096), make_credentials("same", 4096)
    assert one["SCRAM-SHA-256"].salt != two["SCRAM-SHA-256"].salt
    assert one["SCRAM-SHA-256"].iterations == 4096


def test_verify_falls_back_to_sha1():
    credentials = make_credentials("pw", 4096)
    only_sha1 = {"SCRAM-SHA-1": credentials["SCRAM-SHA-1"]}
    assert verify_password(only_sha1, "pw")
    assert not verify_password(only_sha1, "wrong")
    assert not verify_password({}, "pw")


@pytest.mark.parametrize(
    "password, iterations, reason",
    [("pw", 1000, "at least 4096"), ("", 4096, "empty"), ("a\u0007b", 4096, "SASLprep")],
)
def test_bad_credentials_are_refused(password, iterations, reason):
    with pytest.raises(ValueError, match=reason):
        make_credentials(password, iterations)


# -- what only SQLite adds: durability and other processes


def sqlite_at(tmp_path) -> SQLiteDirectory:
    return SQLiteDirectory(str(tmp_path / "shared.sqlite"), POLL)


@pytest_twisted.ensureDeferred
async def test_sqlite_keeps_everything_across_restart(tmp_path, secret_credentials):
    store = sqlite_at(tmp_path)
    await store.start()
    await store.add_domain("example.com")
    await store.add_user(ALICE, secret_credentials)
    await store.set_vcard("example.com", "alice", "<vCard xmlns='vcard-temp'/>")
    secret = await store.secret("tokens")
    await store.stop()

    store = sqlite_at(tmp_path)
    recorder = Recorder()
    store.watch(recorder)
    await store.start()
    polling = feed(store)
    try:
        assert await store.secret("tokens") == secret
        assert await store.users("example.com") == [ALICE]
        assert await store.credentials("example.com", "alice") == secret_credentials
        assert await store.vcard("example.com", "alice") == "<vCard xmlns='vcard-temp'/>"
        await deferLater(reactor, POLL * 5, lambda: None)
        assert recorder.changes == []  # changes made before start are not told again
    finally:
        await polling.stopService()
        await store.stop()


@pytest_twisted.async_yield_fixture
async def two_processes(tmp_path):
    """(service, admin, recorder): two stores on one SQLite file, as two processes
    would have; the recorder watches the service's feed."""
    service, admin = sqlite_at(tmp_path), sqlite_at(tmp_path)
    recorder = Recorder()
    service.watch(recorder)
    await service.start()
    await admin.start()
    polling = feed(service)
    yield service, admin, recorder
    await polling.stopService()
    await admin.stop()
    await service.stop()


@pytest_twisted.ensureDeferred
async def test_sqlite_change_by_another_process_reaches_watchers(two_processes, secret_credentials):
    service, admin, recorder = two_processes
    await admin.add_domain("example.com")
    await admin.add_user(ALICE, secret_credentials)
    await admin.set_chat_enabled("example.com", False)
    assert await recorder.until(3) == [
        Change("domain-added", "example.com"),
        Change("user-added", "example.com", "alice"),
        Change("domain-disabled", "example.com"),
    ]
    assert await service.user("example.com", "alice") == ALICE
    assert await service.secret("shared") == await admin.secret("shared")


@pytest_twisted.ensureDeferred
async def test_sqlite_password_change_by_another_process_counts_at_once(
        two_processes, secret_credentials, other_credentials):
    """The login check reads the store, not the feed: no poll interval of grace for old tokens."""
    service, admin, recorder = two_processes
    await admin.add_domain("example.com")
    await admin.add_user(ALICE, secret_credentials)
    made = await service.credentials_changed("example.com", "alice")
    await admin.set_credentials("example.com", "alice", other_credentials)
    assert await service.credentials_changed("example.com", "alice") > made
    await admin.remove_user("example.com", "alice")
    assert await service.credentials_changed("example.com", "alice") is None
    assert (await recorder.until(4))[2:] == [
        Change("credentials-changed", "example.com", "alice"),
        Change("user-removed", "example.com", "alice"),
    ]


@pytest_twisted.ensureDeferred
async def test_sqlite_schema_1_file_gains_credentials_times(tmp_path, secret_credentials):
    """A file made before tokens could be revoked: its users count as changed
    when it is opened, so no token from an earlier sign-in is taken."""
    import sqlite3

    path = tmp_path / "shared.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE domains (name TEXT PRIMARY KEY, chat_enabled INTEGER NOT NULL DEFAULT 1);"
        "CREATE TABLE users (domain TEXT NOT NULL REFERENCES domains(name), localpart TEXT NOT NULL,"
        " name TEXT NOT NULL DEFAULT '', title TEXT NOT NULL DEFAULT '', department TEXT NOT NULL DEFAULT '',"
        " phone TEXT NOT NULL DEFAULT '', PRIMARY KEY (domain, localpart));"
        "INSERT INTO domains VALUES ('example.com', 1);"
        "INSERT INTO users (domain, localpart, name) VALUES ('example.com', 'alice', 'Alice');"
        "PRAGMA user_version = 1;"
    )
    db.close()
    before = time.time()
    store = sqlite_at(tmp_path)
    await store.start()
    try:
        assert await store.user("example.com", "alice") == User("alice", "example.com", "Alice")
        assert before <= await store.credentials_changed("example.com", "alice") <= time.time()
        await store.add_user(BOB, secret_credentials)
        assert await store.credentials_changed("example.com", "bob") is not None
    finally:
        await store.stop()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    db.close()


@pytest_twisted.ensureDeferred
async def test_sqlite_errors_are_one_line_directory_errors(tmp_path):
    store = SQLiteDirectory(str(tmp_path / "missing" / "folder" / "x.sqlite"), POLL)
    with pytest.raises(DirectoryError, match="x.sqlite: cannot create the database: No such file or directory"):
        await store.start()
    with pytest.raises(DirectoryError, match="not started"):
        await store.domains()
    await store.stop()  # harmless after a failed start


@pytest_twisted.ensureDeferred
async def test_open_directory_picks_the_configured_backend(tmp_path):
    memory = open_directory(Settings(storage=StorageSettings(backend="memory")))
    assert isinstance(memory, MemoryDirectory)
    settings = Settings(
        storage=StorageSettings(path="var/db/chat.sqlite", poll_interval=0.3), base_dir=str(tmp_path)
    )
    store = open_directory(settings)
    assert isinstance(store, SQLiteDirectory)
    assert store.path == str(tmp_path / "var" / "db" / "chat.sqlite")
    assert store.poll_interval == 0.3
    assert (tmp_path / "var" / "db").is_dir()
    await store.start()
    await store.stop()


@pytest_twisted.ensureDeferred
async def test_open_directory_picks_redis(tmp_path):
    settings = Settings(storage=StorageSettings(backend="redis", redis_host="redis.example", redis_port=6380,
                                                redis_prefix="chat1"), base_dir=str(tmp_path))
    store = open_directory(settings)
    assert isinstance(store, RedisDirectory)
    assert (store.host, store.port, store.prefix) == ("redis.example", 6380, "chat1")


# -- Redis: the change feed between nodes


@pytest_twisted.async_yield_fixture
async def two_nodes(redis_server):
    """(one, other): two directories on one Redis server and prefix, as two nodes
    would have, each watched by a Recorder (``.told``); nobody polls."""
    prefix = f"test{next(_prefixes)}"
    nodes = [redis_at(redis_server, prefix), redis_at(redis_server, prefix)]
    for node in nodes:
        await node.start()
        node.told = Recorder()
        node.watch(node.told)
    yield nodes
    for node in nodes:
        await node.stop()


async def settle() -> None:
    """Long enough for a change told twice to be told the second time."""
    await deferLater(reactor, 0.1, lambda: None)


@pytest_twisted.ensureDeferred
async def test_redis_change_reaches_the_other_node_without_polling(two_nodes, secret_credentials):
    one, other = two_nodes
    await one.add_domain("example.com")
    await one.add_user(ALICE, secret_credentials)
    await one.add_alias(Alias("team", "example.com", "Team", ("alice",)))
    await one.remove_user("example.com", "alice")
    expected = [
        Change("domain-added", "example.com"),
        Change("user-added", "example.com", "alice"),
        Change("alias-added", "example.com", "team"),
        Change("user-removed", "example.com", "alice"),
        Change("alias-changed", "example.com", "team"),
    ]
    assert await other.told.until(len(expected), timeout=1.0) == expected  # the blocking read, not a poll
    await settle()
    await other.poll()  # a poll after the blocking read tells nothing again
    assert other.told.changes == expected
    assert await other.alias("example.com", "team") == Alias("team", "example.com", "Team", ())


@pytest_twisted.ensureDeferred
async def test_redis_own_changes_are_told_once(two_nodes):
    """Polls racing the blocking read: each change is told once, in order, by one or the other."""
    one, _ = two_nodes
    names = [f"d{i}.example" for i in range(30)]
    for name in names:
        await one.add_domain(name)
        one.poll()  # under way while the next change is written
    await one.told.until(len(names), timeout=1.0)
    await settle()
    await one.poll()
    assert one.told.changes == [Change("domain-added", name) for name in names]


@pytest_twisted.ensureDeferred
async def test_redis_changes_before_start_are_not_told(two_nodes, redis_server):
    one, _ = two_nodes
    await one.add_domain("example.com")
    late = redis_at(redis_server, one.prefix)
    recorder = Recorder()
    late.watch(recorder)
    await late.start()
    try:
        await late.poll()
        await one.set_chat_enabled("example.com", False)
        assert await recorder.until(1, timeout=1.0) == [Change("domain-disabled", "example.com")]
        assert await late.domains() == [Domain("example.com", chat_enabled=False)]
    finally:
        await late.stop()


@pytest_twisted.ensureDeferred
async def test_redis_errors_are_one_line_directory_errors(tmp_path):
    port = free_port()  # nothing listens there
    store = RedisDirectory(port=port, connect_timeout=0.3)
    with pytest.raises(DirectoryError, match=rf"^redis 127.0.0.1:{port}: cannot connect \(no answer\)$"):
        await store.start()
    with pytest.raises(DirectoryError, match=rf"^redis 127.0.0.1:{port}: the store is not started$"):
        await store.domains()
    await store.stop()  # harmless after a failed start

    waiting = set(reactor.getDelayedCalls())
    server = RedisServer(tmp_path).start()
    store = RedisDirectory(port=server.port)
    await store.start()
    server.stop()
    for _ in range(2):  # the connections lost, then reconnecting: refused at once either way
        with pytest.raises(DirectoryError) as refused:
            await store.add_domain("example.com")
        assert str(refused.value).startswith(f"redis 127.0.0.1:{server.port}: ")
        assert "\n" not in str(refused.value)
        await store.poll()  # logged, not raised
        await deferLater(reactor, 0.05, lambda: None)
    await store.stop()  # nothing left behind: no reconnection, no retry of the blocking read
    assert set(reactor.getDelayedCalls()) <= waiting


@pytest_twisted.ensureDeferred
async def test_sqlite_schema_3_file_gains_room_records(tmp_path, secret_credentials):
    store = sqlite_at(tmp_path)
    await store.start()
    await store.add_domain("example.com")
    await store.stop()
    import sqlite3

    db = sqlite3.connect(store.path)
    db.executescript("DROP TABLE rooms; PRAGMA user_version = 3;")
    db.close()
    store = sqlite_at(tmp_path)
    await store.start()
    try:
        await store.put_room(RoomRecord("example.com", "everyone", "", False))
        assert await store.rooms("example.com") == [RoomRecord("example.com", "everyone", "", False)]
    finally:
        await store.stop()
