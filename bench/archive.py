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
   store, 50 result stanzas built and serialized). Bodies are drawn from a
   made-up vocabulary (``--vocabulary`` words, Zipf-like), so that where a
   store can search (SQLite FTS5, PostgreSQL's GIN index) a full-text search
   (XEP-0431, ``ArchiveQuery(text=...)``, the last page of the matches) is
   timed too: a word in about 1 % of the messages and a rare one (the
   vocabulary's nearest to 1 in 10,000: about 1 in 5,000 with 5,000
   words). ``--query-backends`` picks the stores; ``--explain`` prints
   PostgreSQL's EXPLAIN (ANALYZE, BUFFERS) of the statements one query of
   each kind sends (the heavy owner, a typical one), after the timings.

PostgreSQL (``postgresql``): a server of its own, started as the tests do it
(tests/postgres_server.py: initdb in a temporary folder, loopback port, fsync
and synchronous_commit on, the defaults), one database per store, stopped at
the end. Its archive is bulk-loaded with COPY (the words tsvector written as
``to_tsvector('simple', search_words(body))`` makes it, checked on a sample),
the indexes dropped first and made again after with the migration's own
statements; the layout is then checked against a database PostgresArchive
made itself.

Bounded: the sizes asked for, in temporary folders removed at the end;
redis-server and postgres are started on free loopback ports and stopped.
``--json PATH`` writes the figures.

    .venv/bin/python bench/archive.py                      # about four minutes
    .venv/bin/python bench/archive.py --rows 100000 --queries 200
    .venv/bin/python bench/archive.py --skip-queries --backends sqlite --rate 2000 5000
    .venv/bin/python bench/archive.py --skip-queries --backends sqlite postgresql --rate 2000 5000
    .venv/bin/python bench/archive.py --skip-writes --query-backends postgresql --rows 10000000 --explain
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import random
import re
import secrets
import shutil
import socket
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
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
from chatgate.storage.archive import ArchiveIds, search_words  # noqa: E402
from chatgate.storage.interfaces import ArchivedMessage, ArchiveQuery, HistorySearch, User  # noqa: E402
from chatgate.storage.memory import MemoryDirectory  # noqa: E402
from chatgate.storage.memory_archive import MemoryArchive  # noqa: E402
from chatgate.storage.postgres import MIGRATIONS, PgConnection  # noqa: E402
from chatgate.storage.postgres_stores import PostgresArchive  # noqa: E402
from chatgate.storage.redis import RedisArchive  # noqa: E402
from chatgate.storage.sqlite_archive import SQLiteArchive  # noqa: E402
from chatgate.xml import parse_document  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

DOMAIN = "example.com"
YEAR = 365 * 86400.0
BACKENDS = ("memory", "sqlite", "redis", "postgresql")
QUERY_BACKENDS = ("sqlite", "redis", "postgresql")
#: the figures, for --json
RESULTS: dict[str, Any] = {}
BODY = "Could you send me the figures for the third quarter before the meeting?"


def stanza(frm: str, to: str, body: str) -> str:
    return (f"<message xmlns='jabber:client' to='{to}' type='chat' id='{secrets.token_hex(8)}'"
            f" from='{frm}/desk'><body>{body}</body><origin-id xmlns='urn:xmpp:sid:0'"
            f" id='{secrets.token_hex(8)}'/></message>")


def stats(samples: list[float]) -> dict[str, float]:
    """p50 / p95 / p99 / max of *samples* (seconds), in milliseconds."""
    ms = sorted(s * 1000 for s in samples)

    def at(q: float) -> float:
        return round(ms[min(len(ms) - 1, int(len(ms) * q))], 3)

    return {"n": len(ms), "p50": round(statistics.median(ms), 3), "p95": at(0.95), "p99": at(0.99),
            "max": round(ms[-1], 3)}


def percentiles(samples: list[float]) -> str:
    s = stats(samples)
    return f"p50 {s['p50']:7.2f} ms  p95 {s['p95']:7.2f} ms  p99 {s['p99']:7.2f} ms  max {s['max']:7.2f} ms"


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


async def writes(args: argparse.Namespace, folder: Path, redis: RedisServer | None,
                 pg: PostgresServer | None) -> None:
    print(f"\n== writes: {args.writes} messages (two rows each), appended without waiting ==")
    stores = {
        "memory": lambda: MemoryArchive(),
        "sqlite": lambda: SQLiteArchive(str(folder / "writes.sqlite"), args.commit_interval),
        "redis": lambda: RedisArchive(port=redis.port, prefix="writes"),  # type: ignore[union-attr]
        "postgresql": lambda: PostgresArchive(pg.database(), args.commit_interval),  # type: ignore[union-attr]
    }
    figures: dict[str, Any] = RESULTS.setdefault("writes", {})
    for name in args.backends:
        store = stores[name]()
        await store.start()
        elapsed, latencies = await saturate(store, args.writes)
        line = f"{name:10s} {args.writes / elapsed:9.0f} messages/s ({2 * args.writes / elapsed:7.0f} rows/s)"
        figures[name] = {"messages": args.writes, "saturated_messages_per_s": round(args.writes / elapsed, 1)}
        if name != "memory":
            line += f"   ack latency {percentiles(latencies)}"
            figures[name]["ack_at_saturation_ms"] = stats(latencies)
        print(line, flush=True)
        if name != "memory":
            for rate in args.rate:
                steady = await paced(store, rate, args.seconds, args.tick)
                figures[name][f"ack_at_{rate}_per_s_ms"] = stats(steady)
                print(f"           at {rate} messages/s for {args.seconds:g} s: ack latency {percentiles(steady)}",
                      flush=True)
        await store.stop()


# -- 2. a big archive


class Vocabulary:
    """*size* made-up words (syllables), drawn Zipf-like: the word of rank r with weight 1 / r**s, the
    short words first. A body is 3 to 15 of them, a capital and a full stop or a question mark."""

    def __init__(self, size: int, s: float = 1.0, seed: int = 19) -> None:
        rng = random.Random(seed)
        syllables = [c + v for c in "bcdfghklmnprstvz" for v in "aeiou"]
        found: dict[str, None] = {}
        while len(found) < size:
            found.setdefault("".join(rng.choice(syllables) for _ in range(rng.choice((1, 2, 2, 3, 3, 3, 4)))))
        self.words = sorted(found, key=len)  # stable: short words are the common ones, as in speech
        weights = [1 / (r ** s) for r in range(1, size + 1)]
        total = sum(weights)
        self.share = [w / total for w in weights]  # of the words drawn
        self.cumulative = list(itertools.accumulate(weights))
        self.rng = random.Random(seed + 1)

    def body(self) -> str:
        words = self.rng.choices(self.words, cum_weights=self.cumulative, k=self.rng.randint(3, 15))
        return words[0].capitalize() + " " + " ".join(words[1:]) + self.rng.choice((".", ".", "?"))

    def searchable(self, share: float) -> str:
        """The word that about *share* of the bodies have (9 words on average), prefix of no other word:
        what a search for it finds is its messages only."""
        ordered = sorted(self.words)  # a word starts another one if it starts the next in this order
        prefixes = {a for a, b in itertools.pairwise(ordered) if b.startswith(a)}

        def message_share(rank: int) -> float:
            return float(1 - (1 - self.share[rank]) ** 9)

        ranks = [r for r, word in enumerate(self.words) if word not in prefixes]
        return self.words[min(ranks, key=lambda r: abs(message_share(r) - share))]


class Archive:
    """The generated archive: owners, their contacts, a sample of their ids, the words searched."""

    def __init__(self, rows: int, heavy: int, vocabulary: int = 5000) -> None:
        self.vocabulary = Vocabulary(vocabulary)
        self.common = self.vocabulary.searchable(0.01)
        self.rare = self.vocabulary.searchable(0.0001)
        self.matches = {self.common: 0, self.rare: 0}  # messages that have them, counted as made
        self.heavy_matches = {self.common: 0, self.rare: 0}
        self.now = time.time()
        self.start = self.now - YEAR
        self.heavy = f"heavy@{DOMAIN}"
        typical = max(1, (rows - heavy) // 1000)
        self.owners = {self.heavy: heavy, **{f"u{i}@{DOMAIN}": 1000 for i in range(typical)}}
        self.total = sum(self.owners.values())
        self.contacts = {o: [f"u{(i * 7 + k) % max(typical, 11)}@{DOMAIN}" for k in range(1, 11)]
                         for i, o in enumerate(self.owners)}
        self.samples: dict[str, list[tuple[str, str]]] = {}  # owner -> [(id, contact)]
        self.last: dict[str, dict[str, str]] = {}  # owner -> contact -> last id (the PostgreSQL load)

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
            body = self.vocabulary.body()
            for word, counts in ((self.common, self.matches), (self.rare, self.matches)):
                if f" {word} " in f" {body.lower()[:-1]} ":
                    counts[word] += 1
                    if owner == self.heavy:
                        self.heavy_matches[word] += 1
            yield archive_id, contact, "" if outgoing else "desk", outgoing, body, stanza(frm, to, body), at


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


#: COPY's text format: what a field must escape
_COPY_ESCAPES = str.maketrans({"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"})


def tsvector(body: str) -> str:
    """``to_tsvector('simple', search_words(body))`` as a tsvector literal (the store's words column),
    for words of letters only, as the vocabulary's: each word with its positions."""
    positions: dict[str, list[str]] = {}
    for n, word in enumerate(search_words(body).split(), 1):
        positions.setdefault(word, []).append(str(n))
    return " ".join(f"'{word}':{','.join(at)}" for word, at in positions.items())


def _archive_indexes() -> list[str]:
    """The archive's CREATE INDEX statements, as the migration has them."""
    statements = re.findall(r"CREATE (?:UNIQUE )?INDEX \w+ ON archive\b[^;]*;", MIGRATIONS[1])
    assert len(statements) == 3, statements
    return statements


def pg_layout(dsn: str) -> list[tuple[Any, ...]]:
    """The archive tables' columns, indexes and constraints, to compare two databases."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as db:
        columns = db.execute(
            "SELECT table_name, column_name, data_type, is_nullable, column_default FROM information_schema.columns"
            " WHERE table_name IN ('archive', 'archive_contacts') ORDER BY 1, ordinal_position").fetchall()
        indexes = db.execute("SELECT tablename, indexname, indexdef FROM pg_indexes"
                             " WHERE tablename IN ('archive', 'archive_contacts') ORDER BY 2").fetchall()
        constraints = db.execute(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint"
            " WHERE conrelid IN ('archive'::regclass, 'archive_contacts'::regclass) ORDER BY 2").fetchall()
    return [*columns, *indexes, *constraints]


def fill_postgres(dsn: str, archive: Archive) -> dict[str, float]:
    """Bulk load with COPY into the tables PostgresArchive made (the indexes dropped during the load and
    made again after with the migration's statements); the seconds of each step."""
    import psycopg

    steps: dict[str, float] = {}
    begin = time.perf_counter()
    with psycopg.connect(dsn, autocommit=True) as db:
        db.execute("SET synchronous_commit = off")  # this session only: the load, not the timed stores
        db.execute("SET maintenance_work_mem = '1GB'")
        db.execute("SET max_parallel_maintenance_workers = 1")
        db.execute("ALTER SYSTEM SET max_wal_size = '16GB'")  # no checkpoint every 1 GB of load
        db.execute("SELECT pg_reload_conf()")
        db.execute("ALTER TABLE archive DROP CONSTRAINT archive_pkey")
        for name in ("archive_by_owner", "archive_by_contact", "archive_words"):
            db.execute(f"DROP INDEX {name}")
        seq = 0
        with db.cursor().copy("COPY archive (seq, owner, id, contact, resource, outgoing, body, stanza, words)"
                              " FROM STDIN") as copy:
            lines: list[str] = []
            for owner in archive.owners:
                last: dict[str, str] = {}
                for archive_id, contact, resource, outgoing, body, xml, _ in archive.rows(owner):
                    seq += 1
                    lines.append(f"{seq}\t{owner}\t{archive_id}\t{contact}\t{resource}\t{outgoing}\t"
                                 f"{body.translate(_COPY_ESCAPES)}\t{xml.translate(_COPY_ESCAPES)}\t"
                                 f"{tsvector(body)}\n")
                    last[contact] = archive_id
                    if len(lines) >= 20_000:
                        copy.write("".join(lines).encode())
                        lines.clear()
                archive.last[owner] = last
            copy.write("".join(lines).encode())
        with db.cursor().copy("COPY archive_contacts (owner, contact, last_id) FROM STDIN") as copy:
            for owner, last in archive.last.items():
                for contact, archive_id in last.items():
                    copy.write_row((owner, contact, archive_id))
        steps["generate and copy"] = time.perf_counter() - begin
        mark = time.perf_counter()
        db.execute("ALTER TABLE archive ADD PRIMARY KEY (seq)")
        steps["primary key"] = time.perf_counter() - mark
        for statement in _archive_indexes():
            mark = time.perf_counter()
            db.execute(statement)
            steps[re.findall(r"INDEX (\w+)", statement)[0]] = time.perf_counter() - mark
        db.execute("SELECT setval(pg_get_serial_sequence('archive', 'seq'), %s)", (seq,))
        mark = time.perf_counter()
        db.execute("VACUUM (ANALYZE) archive")
        db.execute("VACUUM (ANALYZE) archive_contacts")
        db.execute("CHECKPOINT")
        db.execute("ALTER SYSTEM RESET max_wal_size")
        db.execute("SELECT pg_reload_conf()")
        steps["vacuum analyze, checkpoint"] = time.perf_counter() - mark
        # the words column is what the store writes: to_tsvector('simple', search_words(body)), on a sample
        sample = db.execute("SELECT seq, body FROM archive TABLESAMPLE SYSTEM (0.1) LIMIT 2000").fetchall()
        (differ,) = db.execute(
            "SELECT count(*) FROM archive a JOIN unnest(%s::bigint[], %s::text[]) AS s(seq, w) USING (seq)"
            " WHERE a.words <> to_tsvector('simple', s.w)",
            ([r[0] for r in sample], [search_words(r[1]) for r in sample])).fetchone()
        assert sample and differ == 0, f"{differ} of {len(sample)} sampled rows have other words than the store's"
    steps["total"] = time.perf_counter() - begin
    return steps


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


def query_kinds(archive: Archive, owner: str, search: bool) -> dict[str, ArchiveQuery]:
    """One random query of each kind for *owner* (with *search*, the full-text searches too: the last
    page of the messages with the word)."""
    archive_id, contact = random.choice(archive.samples[owner])
    day = archive.start + random.random() * (YEAR - 86400)
    kinds = {
        "last page with a contact": ArchiveQuery(contact=contact, before="", max=50),
        "older page with a contact": ArchiveQuery(contact=contact, before=archive_id, max=50),
        "catch up after an id": ArchiveQuery(after=archive_id, max=50),
        "one day, any contact": ArchiveQuery(start=day, end=day + 86400, max=50),
    }
    if search:
        kinds["search, common word (~1 %)"] = ArchiveQuery(text=archive.common, before="", max=50)
        kinds["search, rare word (~0.01 %)"] = ArchiveQuery(text=archive.rare, before="", max=50)
    return kinds


async def time_queries(store: Any, archive: Archive, count: int) -> dict[str, Any]:
    typical = [o for o in archive.owners if o != archive.heavy]
    search = getattr(store, "searchable", True)
    figures: dict[str, Any] = {}
    for population, owners in (("typical owner (1,000 rows)", typical),
                               (f"heavy owner ({archive.owners[archive.heavy]:,} rows)", [archive.heavy])):
        print(f"  {population}:")
        timings: dict[str, list[float]] = {}
        found: dict[str, list[int]] = {}
        for _ in range(count):
            owner = random.choice(owners)
            for kind, query in query_kinds(archive, owner, search).items():
                begin = time.perf_counter()
                page = await store.query(owner, query)
                timings.setdefault(kind, []).append(time.perf_counter() - begin)
                found.setdefault(kind, []).append(page.count)
                assert page.count >= len(page.messages)
        figures[population] = {}
        for kind, samples in timings.items():
            matched = statistics.mean(found[kind])
            figures[population][kind] = {**stats(samples), "mean_result_set": round(matched, 1)}
            print(f"    {kind:28s} {percentiles(samples)}   (result set {matched:,.1f} on average)", flush=True)
    if search:
        figures["administrator, whole domain"] = await time_domain_search(store, archive, max(10, count // 10))
    return figures


def domain_search_kinds(archive: Archive) -> dict[str, Callable[[], HistorySearch]]:
    """Makers of an administrator's searches of the whole domain, by kind."""
    typical = [o for o in archive.owners if o != archive.heavy]
    return {
        "domain search, common word (~1 %)": lambda: HistorySearch((DOMAIN,), text=archive.common),
        "domain search, rare word (~0.01 %)": lambda: HistorySearch((DOMAIN,), text=archive.rare),
        "domain search, both words": lambda: HistorySearch((DOMAIN,), text=f"{archive.common} {archive.rare}"),
        "one user's newest page": lambda: HistorySearch((DOMAIN,), owner=random.choice(typical)),
    }


async def time_domain_search(store: Any, archive: Archive, count: int) -> dict[str, Any]:
    """An administrator's search (``IArchive.search``) of the whole domain, newest first, and the newest
    page of one user's archive that way; *count* of each, one at a time."""
    kinds = domain_search_kinds(archive)
    print(f"  administrator, whole domain ({count} of each):")
    figures: dict[str, Any] = {}
    for kind, make in kinds.items():
        samples, hits = [], []
        for _ in range(count):
            search = make()
            begin = time.perf_counter()
            page = await store.search(search)
            samples.append(time.perf_counter() - begin)
            hits.append(len(page.messages))
        figures[kind] = {**stats(samples), "mean_hits": round(statistics.mean(hits), 1)}
        print(f"    {kind:34s} {percentiles(samples)}   ({statistics.mean(hits):,.1f} hits on a page)", flush=True)
    return figures


async def explain(store: PostgresArchive, archive: Archive) -> dict[str, list[dict[str, str]]]:
    """EXPLAIN (ANALYZE, BUFFERS) of each statement one query of each kind sends, for the heavy owner and
    one typical owner: PgConnection.execute wrapped for the time of it."""
    original = PgConnection.execute
    plans: list[dict[str, str]] = []

    def explaining(self: PgConnection, sql: str, params: Iterable[Any] = ()) -> Any:
        params = tuple(params)
        if sql.lstrip().upper().startswith("SELECT") and " archive" in sql:
            rows = original(self, "EXPLAIN (ANALYZE, BUFFERS) " + sql, params).fetchall()
            plans.append({"sql": sql, "params": repr(params), "plan": "\n".join(r[0] for r in rows)})
        return original(self, sql, params)

    figures: dict[str, list[dict[str, str]]] = {}
    typical = next(o for o in archive.owners if o != archive.heavy)
    PgConnection.execute = explaining  # type: ignore[method-assign]
    try:
        for owner in (archive.heavy, typical):
            for kind, query in query_kinds(archive, owner, True).items():
                plans.clear()
                await store.query(owner, query)
                figures[f"{owner}: {kind}"] = list(plans)
                print(f"\n-- {owner}: {kind}")
                for plan in plans:
                    print(f"{plan['sql']}\n  {plan['params']}\n{plan['plan']}")
        for kind, make in domain_search_kinds(archive).items():
            plans.clear()
            await store.search(make())
            figures[kind] = list(plans)
            print(f"\n-- {kind}")
            for plan in plans:
                print(f"{plan['sql']}\n  {plan['params']}\n{plan['plan']}")
    finally:
        PgConnection.execute = original  # type: ignore[method-assign]
    return figures


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
    mam = ArchiveQueries(router, store, Settings().limits.max_stanza_size + 4096)  # as features/mam.py makes it
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
    RESULTS.setdefault("mam_handler_last_page_ms", []).append(stats(samples))


def disk(folder: Path) -> str:
    free = shutil.disk_usage(folder)
    return f"{free.free / 1e9:.0f} GB free"


async def queries(args: argparse.Namespace, folder: Path, redis: RedisServer | None,
                  pg: PostgresServer | None) -> None:
    figures: dict[str, Any] = RESULTS.setdefault("queries", {})
    for backend in args.query_backends:
        random.seed(1)
        archive = Archive(args.rows, args.heavy, args.vocabulary)  # the same shape each time, new ids
        print(f"\n== {backend}: queries over {archive.total:,} rows: {len(archive.owners) - 1:,} owners of 1,000"
              f" and one of {args.heavy:,}; {args.queries} queries of each kind, one at a time;"
              f" searched: {archive.common!r}, {archive.rare!r} ==", flush=True)
        figure: dict[str, Any] = figures.setdefault(backend, {"rows": archive.total, "owners": len(archive.owners),
                                                              "heavy_rows": args.heavy,
                                                              "words": [archive.common, archive.rare]})
        if backend == "sqlite":
            path = folder / "big.sqlite"
            seconds = await fill_sqlite(path, archive)
            figure["load_s"] = round(seconds, 1)
            figure["size_mb"] = round(path.stat().st_size / 1e6)
            print(f"sqlite: bulk load {seconds:.1f} s, file {figure['size_mb']} MB; {disk(folder)}", flush=True)
            store: Any = SQLiteArchive(str(path))
        elif backend == "redis":
            assert redis is not None
            seconds = fill_redis(redis.port, "big", archive)
            figure["load_s"] = round(seconds, 1)
            print(f"redis: bulk load {seconds:.1f} s", flush=True)
            store = RedisArchive(port=redis.port, prefix="big")
        else:
            assert pg is not None
            made = pg.database()
            fresh = PostgresArchive(made)
            await fresh.start()  # the layout the migrations make, to compare with
            await fresh.stop()
            dsn = pg.database()
            empty = PostgresArchive(dsn)
            await empty.start()  # the schema, as the service makes it
            await empty.stop()
            steps = fill_postgres(dsn, archive)
            assert pg_layout(dsn) == pg_layout(made), "the loaded archive's layout is not the migrations'"
            import psycopg

            with psycopg.connect(dsn, autocommit=True) as db:
                (size,) = db.execute("SELECT pg_database_size(current_database())").fetchone()
                (words,) = db.execute("SELECT pg_relation_size('archive_words')").fetchone()
            figure.update(load_s={k: round(v, 1) for k, v in steps.items()}, size_mb=round(size / 1e6),
                          gin_index_mb=round(words / 1e6))
            print(f"postgresql: bulk load {', '.join(f'{k} {v:.1f} s' for k, v in steps.items())};"
                  f" database {size / 1e6:,.0f} MB (words index {words / 1e6:,.0f} MB); layout as the"
                  f" migrations make it; {disk(pg.folder)}", flush=True)
            store = PostgresArchive(dsn)
        figure["messages_with_words"] = {"all": archive.matches, "heavy owner": archive.heavy_matches}
        print(f"  messages with {archive.common!r}: {archive.matches[archive.common]:,}"
              f" ({archive.matches[archive.common] / archive.total:.2%}), heavy owner"
              f" {archive.heavy_matches[archive.common]:,}; with {archive.rare!r}:"
              f" {archive.matches[archive.rare]:,}, heavy owner {archive.heavy_matches[archive.rare]:,}", flush=True)
        await store.start()
        figure["latency_ms"] = await time_queries(store, archive, args.queries)
        await time_handler(store, archive, args.queries)
        if args.explain and backend == "postgresql":
            figure["explain"] = await explain(store, archive)
        await store.stop()
        if backend == "sqlite":
            path.unlink()  # the disk for the next


def pg_settings(pg: PostgresServer) -> dict[str, str]:
    import psycopg

    with psycopg.connect(pg.dsn("postgres"), autocommit=True) as db:
        found = {name: db.execute(f"SHOW {name}").fetchone()[0]
                 for name in ("server_version", "fsync", "synchronous_commit", "wal_sync_method", "full_page_writes",
                              "shared_buffers", "work_mem", "effective_cache_size", "max_wal_size")}
    return found


async def main(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="chatgate-bench-"))
    wanted = set(args.backends if not args.skip_writes else ()) | set(args.query_backends if not args.skip_queries
                                                                      else ())
    redis: RedisServer | None = None
    pg: PostgresServer | None = None
    try:
        if "redis" in wanted:
            redis = RedisServer(folder).start()
        if "postgresql" in wanted:
            pg = PostgresServer()  # its own temporary folder, removed by stop()
            pg.start()
        cpus = Path("/proc/cpuinfo").read_text().count("processor")
        tree = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                              cwd=Path(__file__).resolve().parents[1]).stdout.strip()
        RESULTS["run"] = {"started": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()), "tree": tree,
                          "argv": sys.argv[1:], "python": sys.version.split()[0], "sqlite": sqlite3.sqlite_version,
                          "cpus": cpus, "loadavg_at_start": os.getloadavg(),
                          "commit_interval": args.commit_interval}
        print(f"python {sys.version.split()[0]}, sqlite {sqlite3.sqlite_version}, {cpus} CPUs; "
              f"commit_interval {args.commit_interval} s; tree {tree}; load average {os.getloadavg()}")
        if pg is not None:
            RESULTS["run"]["postgresql"] = settings = pg_settings(pg)
            print("postgresql " + ", ".join(f"{k} {v}" for k, v in settings.items()), flush=True)
        if not args.skip_writes:
            await writes(args, folder, redis, pg)
        if not args.skip_queries:
            await queries(args, folder, redis, pg)
    finally:
        RESULTS.setdefault("run", {})["ended"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
        if args.json:
            Path(args.json).write_text(json.dumps(RESULTS, indent=1) + "\n")
        if redis is not None:
            redis.stop()
        if pg is not None:
            pg.stop()
        shutil.rmtree(folder, ignore_errors=True)


def run() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--writes", type=int, default=50_000, help="messages in the write test")
    parser.add_argument("--rate", type=int, nargs="+", default=[2_000],
                        help="messages/s of the steady write test (several: one test each)")
    parser.add_argument("--seconds", type=float, default=5.0, help="length of each steady write test")
    parser.add_argument("--tick", type=float, default=0.01,
                        help="seconds between the bursts of the steady write test (rate x tick appends each)")
    parser.add_argument("--backends", nargs="+", choices=BACKENDS, default=["memory", "sqlite", "redis"],
                        help="the stores of the write test")
    parser.add_argument("--query-backends", nargs="+", choices=QUERY_BACKENDS, default=["sqlite", "redis"],
                        help="the stores of the query test")
    parser.add_argument("--vocabulary", type=int, default=5000, help="words the bodies are drawn from")
    parser.add_argument("--explain", action="store_true",
                        help="after the PostgreSQL timings, EXPLAIN (ANALYZE, BUFFERS) one query of each kind")
    parser.add_argument("--json", help="write the figures to this file")
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
