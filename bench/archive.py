"""Archive benchmark: write throughput per backend, MAM query latency over a big archive.

1. **writes**: ``--writes`` messages archived the way the archive feature does
   it — one ``IArchive.append`` per message with both parties' copies (two
   rows), never waiting for the answer — into memory, SQLite (batched,
   ``--commit-interval``) and Redis. Reports messages/s at saturation, and
   for SQLite and Redis the time from append to acknowledgement (for SQLite:
   committed and synced to disk, i.e. what a crash could lose) both at
   saturation and at a steady ``--rate``.
2. **queries**: builds an archive of ``--rows`` rows (default one million)
   in SQLite and in Redis with bulk inserts in the stores' own layout — one
   heavy owner with ``--heavy`` rows and owners of 1,000 rows each, ten
   contacts apiece, a year of history — then times ``--queries`` queries of
   each kind through ``IArchive.query``, one at a time: the last page with a
   contact (opening a chat), an older page with a contact (scrolling up),
   catching up after an id (a client syncing) and one day with anyone; then
   the same "last page" through the whole MAM handler (XEP-0313 query parsed,
   store, 50 result stanzas built and serialized).

Bounded: the sizes asked for, in a temporary folder removed at the end;
redis-server is started on a free loopback port (persistence off) and
stopped.

    .venv/bin/python bench/archive.py                      # about four minutes
    .venv/bin/python bench/archive.py --rows 100000 --queries 200
    .venv/bin/python bench/archive.py --skip-queries --backends sqlite --rate 2000 5000
"""

from __future__ import annotations

import argparse
import json
import random
import secrets
import shutil
import socket
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from twisted.internet import defer, reactor, task  # noqa: E402
from twisted.internet.task import deferLater  # noqa: E402
from twisted.words.protocols.jabber.jid import JID  # noqa: E402
from twisted.words.xish import domish  # noqa: E402

from chatgate.config import Settings  # noqa: E402
from chatgate.features.mam import ArchiveQueries  # noqa: E402
from chatgate.mirror import DirectoryMirror  # noqa: E402
from chatgate.router import Router  # noqa: E402
from chatgate.session import Session  # noqa: E402
from chatgate.storage.archive import ArchiveIds  # noqa: E402
from chatgate.storage.interfaces import ArchivedMessage, ArchiveQuery, User  # noqa: E402
from chatgate.storage.memory import MemoryDirectory  # noqa: E402
from chatgate.storage.memory_archive import MemoryArchive  # noqa: E402
from chatgate.storage.redis import RedisArchive  # noqa: E402
from chatgate.storage.sqlite_archive import SQLiteArchive  # noqa: E402
from chatgate.xml import parse_document  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

DOMAIN = "example.com"
YEAR = 365 * 86400.0
BACKENDS = ("memory", "sqlite", "redis")
BODY = "Could you send me the figures for the third quarter before the meeting?"


def stanza(frm: str, to: str, body: str) -> str:
    return (f"<message xmlns='jabber:client' to='{to}' type='chat' id='{secrets.token_hex(8)}'"
            f" from='{frm}/desk'><body>{body}</body><origin-id xmlns='urn:xmpp:sid:0'"
            f" id='{secrets.token_hex(8)}'/></message>")


def percentiles(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    p50 = statistics.median(ms)
    p99 = ms[min(len(ms) - 1, int(len(ms) * 0.99))]
    return f"p50 {p50:7.2f} ms  p99 {p99:7.2f} ms  max {ms[-1]:7.2f} ms"


# -- 1. write throughput


def copies(ids: ArchiveIds, n: int, now: float) -> list[ArchivedMessage]:
    """Both parties' copies of message *n*, as the archive feature makes them."""
    a, b = f"w{n % 200}@{DOMAIN}", f"w{(n + 1) % 200}@{DOMAIN}"
    archive_id, at = ids.make(now)
    xml = stanza(a, b, BODY)
    return [
        ArchivedMessage(b, archive_id, a, "desk", False, at, BODY, xml),
        ArchivedMessage(a, ids.twin(archive_id), b, "", True, at, BODY, xml),
    ]


async def saturate(store: Any, count: int) -> tuple[float, list[float]]:
    """Append *count* messages as fast as the reactor allows; (seconds until all acknowledged, latencies)."""
    ids = ArchiveIds()
    latencies: list[float] = []
    pending = []
    start = time.perf_counter()
    for n in range(count):
        issued = time.perf_counter()
        d = store.append(copies(ids, n, time.time()))
        d.addCallback(lambda _, issued=issued: latencies.append(time.perf_counter() - issued))
        pending.append(d)
        if n % 200 == 199:  # let the reactor breathe, as between client stanzas
            await deferLater(reactor, 0, lambda: None)
    await defer.gatherResults(pending)
    return time.perf_counter() - start, latencies


async def paced(store: Any, rate: int, seconds: float, tick: float = 0.01) -> list[float]:
    """Append at *rate* messages/s for *seconds*, a burst every *tick* seconds; the latencies."""
    ids = ArchiveIds()
    latencies: list[float] = []
    pending = []
    per_tick = max(1, round(rate * tick))
    start = time.perf_counter()
    n = 0
    while time.perf_counter() - start < seconds:
        for _ in range(per_tick):
            issued = time.perf_counter()
            d = store.append(copies(ids, n, time.time()))
            d.addCallback(lambda _, issued=issued: latencies.append(time.perf_counter() - issued))
            pending.append(d)
            n += 1
        await deferLater(reactor, tick, lambda: None)
    await defer.gatherResults(pending)
    return latencies


async def writes(args: argparse.Namespace, folder: Path, redis: RedisServer) -> None:
    print(f"\n== writes: {args.writes} messages (two rows each), appended without waiting ==")
    stores = {
        "memory": lambda: MemoryArchive(),
        "sqlite": lambda: SQLiteArchive(str(folder / "writes.sqlite"), args.commit_interval),
        "redis": lambda: RedisArchive(port=redis.port, prefix="writes"),
    }
    for name in args.backends:
        store = stores[name]()
        await store.start()
        elapsed, latencies = await saturate(store, args.writes)
        line = f"{name:7s} {args.writes / elapsed:9.0f} messages/s ({2 * args.writes / elapsed:7.0f} rows/s)"
        if name != "memory":
            line += f"   ack latency {percentiles(latencies)}"
        print(line, flush=True)
        if name != "memory":
            for rate in args.rate:
                steady = await paced(store, rate, args.seconds, args.tick)
                print(f"        at {rate} messages/s for {args.seconds:g} s: ack latency {percentiles(steady)}",
                      flush=True)
        await store.stop()


# -- 2. a big archive


class Archive:
    """The generated archive: owners, their contacts, a sample of their ids."""

    def __init__(self, rows: int, heavy: int) -> None:
        self.now = time.time()
        self.start = self.now - YEAR
        self.heavy = f"heavy@{DOMAIN}"
        typical = max(1, (rows - heavy) // 1000)
        self.owners = {self.heavy: heavy, **{f"u{i}@{DOMAIN}": 1000 for i in range(typical)}}
        self.total = sum(self.owners.values())
        self.contacts = {o: [f"u{(i * 7 + k) % max(typical, 11)}@{DOMAIN}" for k in range(1, 11)]
                         for i, o in enumerate(self.owners)}
        self.samples: dict[str, list[tuple[str, str]]] = {}  # owner -> [(id, contact)]

    def rows(self, owner: str) -> Iterable[tuple[str, str, str, int, str, str, float]]:
        """(id, contact, resource, outgoing, body, stanza, at) of one owner, in id order."""
        count = self.owners[owner]
        step = YEAR / count
        contacts = self.contacts[owner]
        sample = self.samples.setdefault(owner, [])
        for k in range(count):
            at = self.start + k * step + random.random() * step * 0.5
            archive_id = f"{round(at * 1_000_000):014x}-{secrets.token_hex(5)}"
            contact = contacts[(k // 7) % len(contacts)]  # runs of seven with one contact
            outgoing = k % 2
            frm, to = (owner, contact) if outgoing else (contact, owner)
            if k % 97 == 0:
                sample.append((archive_id, contact))
            yield archive_id, contact, "" if outgoing else "desk", outgoing, BODY, stanza(frm, to, BODY), at


async def fill_sqlite(path: Path, archive: Archive) -> float:
    store = SQLiteArchive(str(path))
    await store.start()  # the schema, as the service makes it
    await store.stop()
    begin = time.perf_counter()
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA synchronous = OFF")
    db.execute("PRAGMA cache_size = -500000")
    db.execute("BEGIN")
    for owner in archive.owners:
        last: dict[str, str] = {}
        batch = []
        for archive_id, contact, resource, outgoing, body, xml, _ in archive.rows(owner):
            batch.append((owner, archive_id, contact, resource, outgoing, body, xml))
            last[contact] = archive_id
        db.executemany("INSERT INTO archive (owner, id, contact, resource, outgoing, body, stanza)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)", batch)
        db.executemany("INSERT INTO archive_contacts (owner, contact, last_id) VALUES (?, ?, ?)",
                       [(owner, c, i) for c, i in last.items()])
    db.execute("COMMIT")
    db.execute("ANALYZE")
    db.close()
    return time.perf_counter() - begin


def _resp(*parts: str | bytes) -> bytes:
    out = [b"*%d\r\n" % len(parts)]
    for part in parts:
        data = part.encode() if isinstance(part, str) else part
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def fill_redis(port: int, prefix: str, archive: Archive) -> float:
    """Bulk load in RedisArchive's key layout, pipelined over one socket."""
    begin = time.perf_counter()
    sock = socket.create_connection(("127.0.0.1", port))
    sent = 0
    buffer: list[bytes] = []

    def flush() -> None:
        nonlocal sent
        sock.sendall(b"".join(buffer))
        buffer.clear()
        received = b""
        while received.count(b"\r\n") < sent:
            chunk = sock.recv(1 << 20)
            if not chunk:
                raise RuntimeError("redis closed the connection")
            received += chunk
        if b"-ERR" in received or b"-WRONG" in received:
            raise RuntimeError(received[:200])
        sent = 0

    def command(*parts: str) -> None:
        nonlocal sent
        buffer.append(_resp(*parts))
        sent += 1
        if sent >= 500:
            flush()

    command("SADD", f"{prefix}:archive-domains", DOMAIN)
    for owner in archive.owners:
        local = owner.split("@")[0]
        base = f"{prefix}:{DOMAIN}:archive:{local}"
        command("SADD", f"{prefix}:{DOMAIN}:archive-owners", local)
        ids: list[str] = []
        per_contact: dict[str, list[str]] = {}
        per_resource: dict[str, list[str]] = {}
        records: list[str] = []
        last: dict[str, float] = {}
        for archive_id, contact, resource, outgoing, body, xml, at in archive.rows(owner):
            ids.append(archive_id)
            per_contact.setdefault(contact, []).append(archive_id)
            if resource:
                per_resource.setdefault(f"{contact}/{resource}", []).append(archive_id)
            records += [archive_id, json.dumps({"c": contact, "r": resource, "o": outgoing, "b": body, "s": xml},
                                               separators=(",", ":"))]
            last[contact] = at
        for key, members in [(f"{base}:ids", ids),
                             *((f"{base}:with:{c}", m) for c, m in per_contact.items()),
                             *((f"{base}:with:{r}", m) for r, m in per_resource.items())]:
            for i in range(0, len(members), 1000):
                chunk = members[i:i + 1000]
                command("ZADD", key, *[x for m in chunk for x in ("0", m)])
        for i in range(0, len(records), 1000):
            command("HSET", f"{base}:messages", *records[i:i + 1000])
        command("ZADD", f"{base}:contacts", *[x for c, at in last.items() for x in (str(round(at * 1e6)), c)])
    flush()
    sock.close()
    return time.perf_counter() - begin


def query_kinds(archive: Archive, owner: str) -> dict[str, ArchiveQuery]:
    """One random query of each kind for *owner*."""
    archive_id, contact = random.choice(archive.samples[owner])
    day = archive.start + random.random() * (YEAR - 86400)
    return {
        "last page with a contact": ArchiveQuery(contact=contact, before="", max=50),
        "older page with a contact": ArchiveQuery(contact=contact, before=archive_id, max=50),
        "catch up after an id": ArchiveQuery(after=archive_id, max=50),
        "one day, any contact": ArchiveQuery(start=day, end=day + 86400, max=50),
    }


async def time_queries(store: Any, archive: Archive, count: int) -> None:
    typical = [o for o in archive.owners if o != archive.heavy]
    for population, owners in (("typical owner (1,000 rows)", typical),
                               (f"heavy owner ({archive.owners[archive.heavy]:,} rows)", [archive.heavy])):
        print(f"  {population}:")
        timings: dict[str, list[float]] = {}
        for _ in range(count):
            owner = random.choice(owners)
            for kind, query in query_kinds(archive, owner).items():
                begin = time.perf_counter()
                page = await store.query(owner, query)
                timings.setdefault(kind, []).append(time.perf_counter() - begin)
                assert page.count >= len(page.messages)
        for kind, samples in timings.items():
            print(f"    {kind:28s} {percentiles(samples)}", flush=True)


class Sink(Session):
    """A session that serializes what it gets, as a transport would, and tells when the IQ answer came."""

    transport_name = "bench"

    def __init__(self, jid: str) -> None:
        super().__init__(JID(jid))
        self.answered: defer.Deferred[None] | None = None

    def serialize(self, element: domish.Element) -> bytes:
        return element.toXml().encode()

    def _write(self, data: bytes) -> None:
        if data.startswith(b"<iq") and self.answered is not None:
            d, self.answered = self.answered, None
            d.callback(None)

    def _end(self, condition: str | None, text: str | None) -> None:
        pass


async def time_handler(store: Any, archive: Archive, count: int) -> None:
    directory = MemoryDirectory()
    directory.add_domain(DOMAIN)
    for owner in archive.owners:
        directory.add_user(User(owner.split("@")[0], DOMAIN), {})
    domains = DirectoryMirror(directory)
    domains.load()
    router = Router(domains, clock=reactor)
    mam = ArchiveQueries(router, store)
    samples = []
    typical = [o for o in archive.owners if o != archive.heavy]
    for n in range(count):
        owner = random.choice(typical)
        contact = random.choice(archive.contacts[owner])
        session = Sink(f"{owner}/desk")
        xml = (f"<iq xmlns='jabber:client' type='set' id='b{n}' from='{owner}/desk'>"
               f"<query xmlns='urn:xmpp:mam:2' queryid='q{n}'><x xmlns='jabber:x:data' type='submit'>"
               "<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:mam:2</value></field>"
               f"<field var='with'><value>{contact}</value></field></x>"
               "<set xmlns='http://jabber.org/protocol/rsm'><max>50</max><before/></set></query></iq>")
        begin = time.perf_counter()
        iq = parse_document(xml.encode(), 1 << 16)
        answered: defer.Deferred[None] = defer.Deferred()
        session.answered = answered
        await mam.query(iq, session, JID(owner))
        await answered
        samples.append(time.perf_counter() - begin)
    print(f"    {'MAM handler, last page':28s} {percentiles(samples)}", flush=True)


async def queries(args: argparse.Namespace, folder: Path, redis: RedisServer) -> None:
    random.seed(1)
    archive = Archive(args.rows, args.heavy)
    print(f"\n== queries over {archive.total:,} rows: {len(archive.owners) - 1} owners of 1,000 and one of"
          f" {args.heavy:,}; {args.queries} queries of each kind, one at a time ==")
    path = folder / "big.sqlite"
    seconds = await fill_sqlite(path, archive)
    print(f"sqlite: bulk load {seconds:.1f} s, file {path.stat().st_size / 1e6:.0f} MB", flush=True)
    store = SQLiteArchive(str(path))
    await store.start()
    await time_queries(store, archive, args.queries)
    await time_handler(store, archive, args.queries)
    await store.stop()

    random.seed(1)
    archive = Archive(args.rows, args.heavy)  # the same shape again, new ids (the samples are rebuilt)
    seconds = fill_redis(redis.port, "big", archive)
    print(f"redis: bulk load {seconds:.1f} s", flush=True)
    store = RedisArchive(port=redis.port, prefix="big")
    await store.start()
    await time_queries(store, archive, args.queries)
    await time_handler(store, archive, args.queries)
    await store.stop()


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="chatgate-bench-"))
    redis = RedisServer(folder).start()
    try:
        cpus = Path("/proc/cpuinfo").read_text().count("processor")
        print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, {cpus} CPUs; "
              f"commit_interval {args.commit_interval} s")
        if not args.skip_writes:
            await writes(args, folder, redis)
        if not args.skip_queries:
            await queries(args, folder, redis)
    finally:
        redis.stop()
        shutil.rmtree(folder, ignore_errors=True)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=50_000, help="messages in the write test")
    parser.add_argument("--rate", type=int, nargs="+", default=[2_000],
                        help="messages/s of the steady write test (several: one test each)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each steady write test")
    parser.add_argument("--tick", type=float, default=0.01,
                        help="seconds between the bursts of the steady write test (rate x tick appends each)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=list(BACKENDS),
                        help="the stores of the write test (the query test always runs SQLite and Redis)")
    parser.add_argument("--commit-interval", type=float, default=Settings().archive.commit_interval)
    parser.add_argument("--rows", type=int, default=1_000_000, help="rows in the queried archive")
    parser.add_argument("--heavy", type=int, default=100_000, help="rows of the one heavy owner")
    parser.add_argument("--queries", type=int, default=1_000, help="queries of each kind")
    parser.add_argument("--skip-writes", action="store_true")
    parser.add_argument("--skip-queries", action="store_true")
    args = parser.parse_args()
    task.react(lambda _: defer.Deferred.fromCoroutine(main(args)))


if __name__ == "__main__":
    run()
