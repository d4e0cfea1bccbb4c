"""Retention under load: the history sweep deleting a million old rows while S2 chats.

One chatgate (the settings of bench/servers.py, limits lifted) pinned to core 0,
its archive on SQLite (the [storage] file) or on PostgreSQL (a server of this
script's own on a free loopback port, tests/postgres_server.py, on core 0 as
well), with ``[archive] retention_days = 30``. Before the start, ``--rows``
rows older than that are written straight into the archive in its own layout
(with their search index), spread over the users' conversations; the sweep
then runs as the service starts (chatgate sweeps at start and hourly), in the
store's own chunks, while bench/load.py (pinned to core 1) runs S2 at
``--rate`` (half of S2's top rate on this machine by default) in steps of
``--step`` seconds. Each step's p99 is reported with whether the sweep was
running during it (its end is the ``retention: deleted`` line of the log),
and the rows left are counted at the end. Goal (issue 19): p99 <= 100 ms while
the sweep runs.

    cd bench && ../.venv/bin/python retention.py --backend sqlite --rows 1000000
    cd bench && ../.venv/bin/python retention.py --backend postgresql --rows 1000000
"""

from __future__ import annotations

import argparse
import json
import random
import re
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from servers import DOMAIN, Chatgate

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from chatgate.storage.archive import search_words  # noqa: E402
from tests.postgres_server import PostgresServer  # noqa: E402

SERVER_CORE, LOAD_CORE = 0, 1
WORDS = ("meeting budget report lunch invoice review draft update call tomorrow "
         "numbers quarter client project deadline office travel schedule").split()


class RetentionChatgate(Chatgate):
    """chatgate with retention on, its archive on *backend*."""

    def __init__(self, users: int, backend: str, dsn: str = "") -> None:
        super().__init__(users, core=SERVER_CORE, archive=backend)
        self.dsn = dsn
        self.storage = f"SQLite (directory); archive: {backend}"

    def settings(self) -> dict[str, dict[str, object]]:
        settings = super().settings()
        settings["archive"]["retention_days"] = 30
        if self.dsn:
            settings["storage"]["postgresql_dsn"] = self.dsn
        return settings


def old_rows(users: int, rows: int, now: float) -> list[tuple[Any, ...]]:
    """*rows* archive rows (both parties' copies) between 400 and 31 days old, among *users* users."""
    rng = random.Random(19)
    out: list[tuple[Any, ...]] = []
    start, end = now - 400 * 86400, now - 31 * 86400
    for n in range(rows // 2):
        a, b = rng.randrange(users), rng.randrange(users)
        if a == b:
            b = (a + 1) % users
        at = start + (end - start) * n / (rows // 2)
        stamp = f"{int(at * 1_000_000):014x}"
        body = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12)))
        for owner, contact, outgoing in ((a, b, 1), (b, a, 0)):
            out.append((f"u{owner}@{DOMAIN}", f"{stamp}-{rng.getrandbits(40):010x}", f"u{contact}@{DOMAIN}",
                        "s2", outgoing, body, f"<message><body>{body}</body></message>"))
    return out


def preload_sqlite(path: Path, rows: list[tuple[Any, ...]]) -> None:
    with sqlite3.connect(path) as db:
        db.executemany("INSERT INTO archive (owner, id, contact, resource, outgoing, body, stanza)"
                       " VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
        db.execute("INSERT INTO archive_contacts (owner, contact, last_id) SELECT owner, contact, MAX(id)"
                   " FROM archive GROUP BY owner, contact ON CONFLICT DO NOTHING")


def preload_postgresql(dsn: str, rows: list[tuple[Any, ...]]) -> None:
    import psycopg

    with psycopg.connect(dsn) as db:
        with db.cursor().copy("COPY archive (owner, id, contact, resource, outgoing, body, stanza, words)"
                              " FROM STDIN") as copy:
            for row in rows:
                copy.write_row((*row, " ".join(f"'{w}'" for w in set(search_words(row[5]).split()))))
        db.execute("INSERT INTO archive_contacts (owner, contact, last_id) SELECT owner, contact, MAX(id)"
                   " FROM archive GROUP BY owner, contact ON CONFLICT DO NOTHING")
        db.execute("ANALYZE archive")


def count_rows(backend: str, where: Path | str) -> int:
    if backend == "sqlite":
        with sqlite3.connect(where) as db:
            return int(db.execute("SELECT COUNT(*) FROM archive").fetchone()[0])
    import psycopg

    with psycopg.connect(str(where)) as db:
        return int(db.execute("SELECT COUNT(*) FROM archive").fetchone()[0])


def sweep_end(log: str) -> tuple[float | None, int | None]:
    """When the log says the sweep ended (POSIX seconds), and how many rows it deleted."""
    for line in log.splitlines():  # twistd's classic lines: "2026-12-05T15:40:01+0000 [system] text"
        found = re.search(r"^(\S+) .*retention: deleted (\d+) messages", line)
        if found:
            return datetime.strptime(found.group(1), "%Y-%m-%dT%H:%M:%S%z").timestamp(), int(found.group(2))
    return None, None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--backend", choices=["sqlite", "postgresql"], default="sqlite")
    parser.add_argument("--rows", type=int, default=1_000_000, help="old rows the sweep deletes")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--rate", type=float, default=3000.0, help="S2 msg/s in total")
    parser.add_argument("--step", type=float, default=5.0, help="seconds per measured step")
    parser.add_argument("--steps", type=int, default=24, help="steps in all (bounded)")
    args = parser.parse_args()

    pg = PostgresServer().start() if args.backend == "postgresql" else None
    dsn = pg.database() if pg else ""
    server = RetentionChatgate(2 * args.pairs, args.backend, dsn)
    result: dict[str, Any] = {}
    try:
        server.prepare()
        server.admin("db", "upgrade")  # the history tables, to load into
        started = time.time()
        rows = old_rows(2 * args.pairs, args.rows, started)
        if pg:
            preload_postgresql(dsn, rows)
        else:
            preload_sqlite(server.folder / "chatgate.sqlite", rows)
        loaded_s = time.time() - started
        if pg and pg.process is not None:
            subprocess.run(["taskset", "-a", "-p", "-c", str(SERVER_CORE), str(pg.process.pid)],
                           capture_output=True, check=False)
        print(f"loaded {len(rows):,} old rows in {loaded_s:.0f} s", file=sys.stderr)
        service_started = time.time()  # the sweep starts with the service
        server.start()
        command = ["taskset", "-c", str(LOAD_CORE), sys.executable, str(HERE / "load.py"), "s2",
                   "--port", str(server.c2s_port), "--http-port", str(server.http_port),
                   "--server-pid", str(server.pid), "--server-core", str(SERVER_CORE),
                   "--pairs", str(args.pairs), "--rates", ",".join([str(args.rate)] * args.steps),
                   "--step", str(args.step), "--retries", "0", "--p99", "1000000", "--warmup", "0.5"]
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True,
                              timeout=args.steps * (args.step + 30) + 300)
        if done.returncode != 0:
            raise RuntimeError(f"load.py failed (exit {done.returncode}):\n{server.tail(15)}")
        load = json.loads(done.stdout.strip().splitlines()[-1])
        ended, deleted = sweep_end((server.folder / "twistd.log").read_text(errors="replace"))
        steps = [{"during_sweep": ended is None or s["started_at"] < ended, "p50_ms": s["p50_ms"],
                  "p99_ms": s["p99_ms"], "max_ms": s.get("max_ms"), "delivered_share": s["delivered_share"],
                  "server_cpu_share": s["server_cpu_share"], "achieved_rate": s["achieved_rate"]}
                 for s in load["steps"]]
        server.stop()
        left = count_rows(args.backend, dsn or server.folder / "chatgate.sqlite")
        during = [s["p99_ms"] for s in steps if s["during_sweep"]]
        after = [s["p99_ms"] for s in steps if not s["during_sweep"]]
        result = {
            "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
            "command": "python retention.py " + " ".join(sys.argv[1:]),
            "tree": server.version(), "backend": args.backend, "rows_loaded": len(rows),
            "load_s": round(loaded_s, 1), "rate": args.rate, "pairs": args.pairs, "step_s": args.step,
            "sweep_s": round(ended - service_started, 1) if ended else None, "deleted": deleted,
            "archive_rows_left": left, "p99_during_sweep_ms_worst": max(during) if during else None,
            "p99_after_sweep_ms_worst": max(after) if after else None, "steps": steps,
            "sessions_lost": load["sessions_lost"], "errors_received": load["errors_received"],
        }
    finally:
        server.stop()
        server.cleanup()
        if pg:
            pg.stop()
    out = HERE / "results" / f"retention-{args.backend}-{datetime.now(UTC):%Y%m%d-%H%M%S}.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: v for k, v in result.items() if k != "steps"}, indent=1))
    print(f"raw: {out}", file=sys.stderr)


if __name__ == "__main__":
    main()
