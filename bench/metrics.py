"""What scraping /metrics costs a chatgate holding many idle sessions.

Starts chatgate as the load benchmark does (``servers.Chatgate``: pinned to
one core, ``--users`` users provisioned, SQLite) with ``[metrics] enabled``
and the admin listener on a free port, logs ``--users`` c2s sessions in with
``load.py``'s S1 login (SCRAM-SHA-1, bound, no presence) and holds them
idle. Then it measures the server's CPU (``/proc/<pid>/stat``) for
``--window`` seconds without scraping, then as long again scraping
``/metrics`` every ``--interval`` seconds (as Prometheus would), and reports
both shares of one core, their difference, the CPU per scrape (the
difference over the scrapes made) and what that is at one scrape per
interval, plus each scrape's duration and size.

Bounded: the users asked for, ``--window`` seconds twice, a timeout on the logins.

    .venv/bin/python bench/metrics.py --users 10000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import load  # noqa: E402  (this folder: the script's own)
from servers import Chatgate, cpu_seconds, free_port, raise_nofile  # noqa: E402


class MeteredChatgate(Chatgate):
    """The benchmark's chatgate with /metrics on its admin listener."""

    def __init__(self, users: int, core: int = 0) -> None:
        super().__init__(users, core)
        self.admin_port = free_port()

    def settings(self) -> dict[str, dict[str, object]]:
        settings = super().settings()
        settings["admin"] = {"interfaces": "127.0.0.1", "port": self.admin_port}
        settings["metrics"] = {"enabled": "true"}
        return settings


def scrape(port: int) -> tuple[float, int, str]:
    """(seconds, bytes, text) of one GET /metrics."""
    started = time.monotonic()
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as response:
        body = response.read()
    return time.monotonic() - started, len(body), body.decode()


async def cpu_share(pid: int, seconds: float, port: int | None, interval: float) -> dict[str, Any]:
    """The server's CPU share over *seconds*, scraping every *interval* seconds when *port* is given."""
    loop = asyncio.get_running_loop()
    before, started = cpu_seconds(pid), time.monotonic()
    durations, size = [], 0
    end = started + seconds
    while True:
        if port is not None:
            duration, size, _ = await loop.run_in_executor(None, scrape, port)
            durations.append(duration)
        remaining = end - time.monotonic()
        if remaining <= 0:
            break
        await asyncio.sleep(min(interval, remaining))
    elapsed = time.monotonic() - started
    share = (cpu_seconds(pid) - before) / elapsed
    return {"seconds": round(elapsed, 1), "cpu_share": share, "scrapes": len(durations),
            "scrape_ms": sorted(round(d * 1000, 1) for d in durations), "scrape_bytes": size}


async def run(args: argparse.Namespace, server: MeteredChatgate) -> dict[str, Any]:
    largs = load.parse(["s1", "--port", str(server.c2s_port), "--server-pid", str(server.pid),
                        "--server-core", str(args.core)])
    semaphore = asyncio.Semaphore(args.concurrency)
    sessions, failures = [], []

    async def one(n: int) -> None:
        async with semaphore:
            try:
                sessions.append(await load.c2s_login(largs, n, "idle"))
            except (load.LoginFailed, OSError, TimeoutError) as e:
                failures.append(f"u{n}: {e}")

    started = time.monotonic()
    await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(args.users))), args.timeout)
    load.log(f"{len(sessions)} sessions in {time.monotonic() - started:.0f} s; settling")
    await asyncio.sleep(args.settle)
    _, _, text = scrape(server.admin_port)
    counted = sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                  if line.startswith("chatgate_sessions{"))
    load.log(f"measuring {args.window:.0f} s without scraping")
    without = await cpu_share(server.pid, args.window, None, args.interval)
    load.log(f"measuring {args.window:.0f} s scraping every {args.interval:.0f} s")
    scraped = await cpu_share(server.pid, args.window, server.admin_port, args.interval)
    alive = sum(not s.lost for s in sessions)
    for session in sessions:
        session.close()
    extra = scraped["cpu_share"] - without["cpu_share"]
    per_scrape = extra * scraped["seconds"] / max(1, scraped["scrapes"])
    return {
        "users": args.users, "sessions": len(sessions), "held_after": alive, "failures": len(failures),
        "failure_examples": failures[:3], "sessions_in_metrics": counted,
        "without_scraping_cpu_share": round(without["cpu_share"], 5),
        "scraping_cpu_share": round(scraped["cpu_share"], 5),
        "difference_share": round(extra, 5),
        "cpu_per_scrape_ms": round(per_scrape * 1000, 2),
        "cost_at_interval_percent": round(100 * per_scrape / args.interval, 3),
        "scrapes": scraped["scrapes"], "scrape_ms": scraped["scrape_ms"], "scrape_bytes": scraped["scrape_bytes"],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=10_000, help="idle sessions held (one per user)")
    parser.add_argument("--concurrency", type=int, default=100, help="logins at a time")
    parser.add_argument("--core", type=int, default=0, help="the core the server is pinned to")
    parser.add_argument("--window", type=float, default=60.0, help="seconds measured, without and with scraping")
    parser.add_argument("--interval", type=float, default=15.0, help="seconds between scrapes")
    parser.add_argument("--settle", type=float, default=5.0, help="seconds after the logins before measuring")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up logging in after this")
    args = parser.parse_args(argv)
    raise_nofile()
    server = MeteredChatgate(args.users, args.core)
    load.log(f"provisioning {args.users} users and starting chatgate in {server.folder}")
    server.start(timeout=120)
    try:
        result = asyncio.run(run(args, server))
    finally:
        server.stop()
        server.cleanup()
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
