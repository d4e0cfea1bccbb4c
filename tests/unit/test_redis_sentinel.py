"""Redis through Sentinel (``[cluster] redis_sentinels``): real redis-server and sentinel processes on loopback."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_twisted
import txredisapi
from twisted.internet import defer, reactor
from twisted.internet.task import deferLater
from twisted.internet.testing import StringTransport

from chatgate.config import ConfigError, Settings, StorageSettings, parse
from chatgate.storage import _redis_options, open_archive, open_directory
from chatgate.storage.archive import ArchiveIds
from chatgate.storage.interfaces import ArchivedMessage, ArchiveError, ArchiveQuery
from chatgate.storage.redis import RedisArchive, _Master, _RedisStore
from tests.redis_server import RedisSentinel, RedisServer, free_port

PASSWORD = "s3cret"
ALICE, BOB = "alice@example.com", "bob@example.com"
_ids = ArchiveIds()


def message(body: str) -> ArchivedMessage:
    archive_id, at = _ids.make(time.time())
    stanza = f"<message xmlns='jabber:client' type='chat'><body>{body}</body></message>"
    return ArchivedMessage(ALICE, archive_id, BOB, "", True, at, body, stanza)


def settings(sentinel: RedisSentinel, prefix: str, **storage: Any) -> Settings:
    return parse(f"[storage]\nredis_password = {PASSWORD}\nredis_prefix = {prefix}\n"
                 + "".join(f"{k} = {v}\n" for k, v in storage.items())
                 + f"[archive]\nbackend = redis\n[cluster]\nredis_sentinels = 127.0.0.1:{sentinel.port}\n")


async def sleep(seconds: float) -> None:
    await deferLater(reactor, seconds, lambda: None)


async def ask(port: int, *command: Any) -> Any:
    """One command to the server (or sentinel) on *port*, on a connection of its own."""
    conn = await txredisapi.Connection("127.0.0.1", port, reconnect=False, convertNumbers=False)
    try:
        return await conn.execute_command(*command)
    finally:
        await conn.disconnect()


async def until(check: Any, timeout: float, what: str) -> None:
    """Poll the async *check* every 50 ms until it is true; fail naming *what* after *timeout* seconds."""
    deadline = time.monotonic() + timeout
    while not await check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {timeout} s")
        await sleep(0.05)


@pytest.fixture
def servers(tmp_path: Path) -> Iterator[tuple[RedisServer, RedisServer, RedisSentinel]]:
    """(master, its replica, a sentinel watching the master), with a password."""
    for name in ("master", "replica", "sentinel"):
        (tmp_path / name).mkdir()
    master = RedisServer(tmp_path / "master", password=PASSWORD).start()
    replica = RedisServer(tmp_path / "replica", password=PASSWORD, replica_of=master.port).start()
    sentinel = RedisSentinel(tmp_path / "sentinel", master).start()
    assert isinstance(sentinel, RedisSentinel)
    try:
        yield master, replica, sentinel
    finally:
        for server in (sentinel, replica, master):
            server.stop()


# -- (1) the stores through the sentinels


@pytest_twisted.ensureDeferred
async def test_archive_and_directory_through_the_sentinels(servers):
    master, _replica, sentinel = servers
    config = settings(sentinel, "one", redis_port=free_port())  # redis_host/port are not used
    assert _redis_options(config)["sentinels"] == (("127.0.0.1", sentinel.port),)
    archive = open_archive(config)
    assert isinstance(archive, RedisArchive)
    await archive.start()
    try:
        sent = message("through the sentinel")
        await archive.append([sent])
        page = await archive.query(ALICE, ArchiveQuery())
        assert [m.body for m in page.messages] == ["through the sentinel"]
        assert await ask(master.port, "AUTH", PASSWORD) == "OK"  # and it is on the master the sentinel names
    finally:
        await archive.stop()
    directory = open_directory(settings(sentinel, "one", backend="redis", redis_port=free_port()))
    await directory.start()
    try:
        await directory.add_domain("example.com")
        assert [d.name for d in await directory.domains()] == ["example.com"]
    finally:
        await directory.stop()


@pytest_twisted.ensureDeferred
async def test_tls_to_the_master_the_sentinels_name(tmp_path):
    """The master's certificate is checked against the address the sentinels give (txredisapi's own
    Sentinel connections would drop TLS)."""
    from chatgate.tls import ensure_certificate

    cert, key = str(tmp_path / "redis.crt"), str(tmp_path / "redis.key")
    ensure_certificate(cert, key, ["127.0.0.1"])
    for name in ("master", "sentinel"):
        (tmp_path / name).mkdir()
    master = RedisServer(tmp_path / "master", tls=(cert, key)).start()
    sentinel = RedisSentinel(tmp_path / "sentinel", master, tls=(cert, key)).start()
    try:
        trusted = RedisArchive(sentinels=[("127.0.0.1", sentinel.port)], tls=True, tls_ca=cert, prefix="tls")
        await trusted.start()
        await trusted.append([message("over TLS")])
        assert [m.body for m in (await trusted.query(ALICE, ArchiveQuery())).messages] == ["over TLS"]
        await trusted.stop()
        untrusted = RedisArchive(sentinels=[("127.0.0.1", sentinel.port)], tls=True, connect_timeout=1)
        with pytest.raises(ArchiveError, match="^redis master mymaster via sentinels .*: cannot connect"):
            await untrusted.start()
    finally:
        sentinel.stop()
        master.stop()


# -- (2) failover


@pytest_twisted.ensureDeferred
async def test_failover_the_same_store_goes_on_on_the_new_master(servers):
    master, replica, sentinel = servers

    async def sentinel_knows_the_replica() -> bool:
        replicas = await ask(sentinel.port, "SENTINEL", "replicas", "mymaster")
        fields = [dict(zip(r[::2], r[1::2], strict=True)) for r in replicas]
        return any(f["port"] == str(replica.port) and f["master-link-status"] == "ok"
                   and "s_down" not in f["flags"] for f in fields)

    await until(sentinel_knows_the_replica, 10, "the sentinel sees the replica in sync")
    config = settings(sentinel, "two")
    archive = open_archive(config)
    bus = _RedisStore(**_redis_options(config), poolsize=1)  # as the cluster bus makes its connections
    await archive.start()
    await bus.start()
    try:
        await archive.append([message("before")])
        assert int(await archive._redis.execute_command("WAIT", 1, 2000)) == 1  # the replica has it
        blocked = bus._redis.execute_command("XREAD", "BLOCK", 10_000, "STREAMS", "two:feed", "$")

        master.process.kill()  # SIGKILL: no goodbye to the clients, the sentinel finds it gone
        master.process.wait()
        killed = time.monotonic()
        with pytest.raises(txredisapi.ConnectionError):
            await blocked  # the blocked read ends with the connection (the bus reads again)

        async def pool_empty() -> bool:
            return not archive._redis._factory.size

        await until(pool_empty, 5, "the store sees its connections lost")
        # Written while there is no master: refused at once, in one line (the archive feature
        # keeps it and writes it again; a write already sent when the master died fails too).
        with pytest.raises(ArchiveError, match="not connected"):
            await archive.append([message("during")])

        async def promoted() -> bool:
            return await ask(sentinel.port, "SENTINEL", "get-master-addr-by-name", "mymaster") \
                == ["127.0.0.1", str(replica.port)]

        await until(promoted, 20, "the sentinel promotes the replica")
        promoted_after = time.monotonic() - killed

        # The same store object, not restarted: a write goes through again.
        failures = 0
        deadline = time.monotonic() + 10
        while True:
            try:
                await archive.append([message("after")]).addTimeout(2, reactor)
                break
            except (ArchiveError, defer.TimeoutError):
                failures += 1
                assert time.monotonic() < deadline, "no write on the new master within 10 s of its promotion"
                await sleep(0.1)
        back_after = time.monotonic() - killed
        page = await archive.query(ALICE, ArchiveQuery())
        assert [m.body for m in page.messages] == ["before", "after"]
        assert archive._master.master == ("127.0.0.1", replica.port)
        role = await ask(replica.port, "AUTH", PASSWORD)
        assert role == "OK"

        # the bus's kind of connection reads from the new master too (once its own slot has reconnected)
        await archive._redis.execute_command("XADD", "two:feed", "*", "m", "hello")
        reading = bus._redis.execute_command("XREAD", "BLOCK", 1000, "STREAMS", "two:feed", "0")
        reply = await reading.addTimeout(5, reactor)
        assert reply[0][1][0][1] == ["m", "hello"]
        print(f"failover: promoted {promoted_after:.1f} s after the kill, store writing again after "
              f"{back_after:.1f} s ({failures} failed attempts)")
    finally:
        await bus.stop()
        await archive.stop()


async def replied(conn: _Master, data: bytes) -> None:
    """*data* received; txredisapi reads bulk strings over a few reactor turns."""
    conn.dataReceived(data)
    for _ in range(10):
        await sleep(0)


@pytest_twisted.ensureDeferred
async def test_a_connection_to_a_demoted_master_is_dropped():
    """READONLY (the server became a replica, the connection stayed): dropped, so its slot asks the sentinels."""
    conn = _Master(convertNumbers=False)
    transport = StringTransport()
    conn.makeConnection(transport)
    assert transport.value() == b"*1\r\n$4\r\nROLE\r\n"
    await replied(conn, b"*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n")
    assert conn._ready and not transport.disconnecting
    written = conn.execute_command("SET", "k", "v")
    failures: list[Any] = []
    written.addErrback(failures.append)
    await replied(conn, b"-READONLY You can't write against a read only replica.\r\n")
    assert failures and failures[0].check(txredisapi.ResponseError)
    assert transport.disconnecting


@pytest_twisted.ensureDeferred
async def test_a_replica_named_as_master_is_not_taken():
    """The sentinels may not know of a failover yet: ROLE says replica, the connection is closed, never pooled."""
    conn = _Master(convertNumbers=False)
    transport = StringTransport()
    conn.makeConnection(transport)
    await replied(conn, b"*5\r\n$5\r\nslave\r\n$9\r\n127.0.0.1\r\n:6379\r\n$9\r\nconnected\r\n:10\r\n")
    assert transport.disconnecting and not conn._ready


# -- (3) bad settings and unreachable sentinels: one line


@pytest.mark.parametrize("value, reason", [
    ("sentinel.internal", "is not host:port"),
    ("10.0.0.1:0", "a port is between 1 and 65535"),
    ("10.0.0.1:26379, 10.0.0.2", "'10.0.0.2' is not host:port"),
    ("::1:26379", r"write an IPv6 address as \[address\]:port"),
    ("[::1:26379", r"is not \[IPv6 address\]:port"),
    ("[example]:26379", "is not an IPv6 address"),
    ("a b:26379", "is not a host name or address"),
    ("10.0.0.1:26379,10.0.0.1:26379", "listed twice"),
])
def test_bad_sentinel_lists_are_one_line_errors(value, reason):
    with pytest.raises(ConfigError, match=rf"^\[cluster\] redis_sentinels = .*{reason}") as e:
        parse(f"[cluster]\nredis_sentinels = {value}\n")
    assert "\n" not in str(e.value)


def test_sentinel_settings():
    s = parse("[cluster]\nredis_sentinels = 10.0.0.1:26379, [::1]:26380, sentinel.internal:26381\n"
              "redis_master_name = chat\n")
    assert s.cluster.redis_sentinels == (("10.0.0.1", 26379), ("::1", 26380), ("sentinel.internal", 26381))
    assert _redis_options(s)["master_name"] == "chat"
    assert parse("").cluster.redis_sentinels == ()
    assert parse("").cluster.redis_master_name == "mymaster"
    with pytest.raises(ConfigError, match=r"^\[cluster\] redis_master_name = 'my master': expected one word"):
        parse("[cluster]\nredis_master_name = my master\n")
    # the directory's two connections get them too, though RedisDirectory's own arguments do not name them
    directory: Any = open_directory(Settings(storage=StorageSettings(backend="redis"), cluster=s.cluster))
    assert directory.sentinels == directory._listener.sentinels == s.cluster.redis_sentinels
    assert directory._listener.master_name == "chat"


@pytest_twisted.ensureDeferred
async def test_unreachable_sentinels_are_one_line_at_start():
    ports = free_port(), free_port()
    store = RedisArchive(sentinels=[("127.0.0.1", p) for p in ports], connect_timeout=1)
    with pytest.raises(ArchiveError) as e:
        await store.start()
    assert str(e.value) == (
        f"redis master mymaster via sentinels 127.0.0.1:{ports[0]}, 127.0.0.1:{ports[1]}: cannot connect "
        f"(127.0.0.1:{ports[0]} connection refused; 127.0.0.1:{ports[1]} connection refused)")


@pytest_twisted.ensureDeferred
async def test_unknown_master_and_wrong_password_are_one_line_at_start(tmp_path):
    master = RedisServer(tmp_path, password=PASSWORD).start()
    sentinel = RedisSentinel(tmp_path, master).start()
    try:
        unknown = RedisArchive(sentinels=[("127.0.0.1", sentinel.port)], master_name="other", connect_timeout=1)
        with pytest.raises(ArchiveError, match=rf"^redis master other via sentinels 127.0.0.1:{sentinel.port}: "
                                               rf"cannot connect \(127.0.0.1:{sentinel.port} knows no master other\)$"):
            await unknown.start()
        wrong = RedisArchive(sentinels=[("127.0.0.1", sentinel.port)], password="wrong", connect_timeout=1)
        with pytest.raises(ArchiveError, match=r"^redis master mymaster via sentinels .*: cannot connect "
                                               r"\(could not auth: .*\)$"):
            await wrong.start()
    finally:
        sentinel.stop()
        master.stop()
