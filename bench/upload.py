"""File sharing (XEP-0363): upload and download throughput of one file, and
the reactor's responsiveness meanwhile.

One chatgate (``twistd -n chatgate``, the settings of bench/servers.py, the
upload folder in the server's temporary folder) pinned to core 0, this
script to core 1. A slixmpp client (u0) asks for a slot and the file goes
up by HTTP PUT and comes back by GET (``http.client`` in a thread, on
loopback, the body compared), back to back for ``--seconds`` (at least
``--rounds`` times) each; meanwhile another
client (u1) pings the server (XEP-0199, one ping every ``--ping-every`` s)
and the round trips are recorded: idle first, then during the PUTs and the
GETs. What the reactor does meanwhile: a PUT body is buffered by
twisted.web (to a temporary file beyond 100 kB), then copied into the
upload folder and fsynced in the thread pool; a GET is sent by
``static.File``'s producer in 64 KiB reads.

    .venv/bin/python bench/upload.py --size-mib 20 --rounds 5 --seconds 3
"""

from __future__ import annotations

import argparse
import asyncio
import http.client
import json
import os
import secrets
import ssl
import statistics
import sys
import time
from typing import Any
from urllib.parse import urlsplit

import slixmpp
from servers import DOMAIN, PASSWORD, Chatgate

SERVER_CORE, CLIENT_CORE = 0, 1
MIB = 1024 * 1024


class UploadServer(Chatgate):
    """chatgate with its upload service on the bench's HTTP port, a quota out of reach."""

    def __init__(self, size: int) -> None:
        super().__init__(users=2, core=SERVER_CORE)
        self.size = size

    def settings(self) -> dict[str, dict[str, object]]:
        settings = super().settings()
        settings["upload"] = {"base_url": f"http://127.0.0.1:{self.http_port}/upload", "path": "uploads",
                              "max_file_size": self.size, "daily_quota": 1 << 40}
        return settings


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid: str) -> None:
        super().__init__(jid, PASSWORD)
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.enable_direct_tls = False
        for plugin in ("xep_0030", "xep_0199", "xep_0363"):
            self.register_plugin(plugin)


async def login(server: Chatgate, jid: str) -> Client:
    client = Client(jid)
    started: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    client.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
    client.add_event_handler("failed_all_auth", lambda _: started.done() or started.set_result(False))
    client.connect("127.0.0.1", server.c2s_port)
    if not await asyncio.wait_for(started, 30):
        raise RuntimeError(f"{jid} could not log in:\n{server.tail()}")
    return client


def transfer(method: str, url: str, body: bytes | None = None,
             headers: dict[str, str] | None = None) -> tuple[int, bytes, float]:
    """One HTTP request on a fresh connection: status, body, seconds."""
    parts = urlsplit(url)
    connection = http.client.HTTPConnection(parts.hostname, parts.port, timeout=120)
    began = time.perf_counter()
    connection.request(method, f"{parts.path}?{parts.query}" if parts.query else parts.path, body=body,
                       headers=headers or {})
    answer = connection.getresponse()
    data = answer.read()
    took = time.perf_counter() - began
    connection.close()
    return answer.status, data, took


async def pings(client: Client, every: float, stop: asyncio.Event) -> list[float]:
    """Ping round trips in milliseconds until *stop*."""
    rtts: list[float] = []
    while not stop.is_set():
        rtts.append(await client.plugin["xep_0199"].ping(DOMAIN, timeout=30) * 1000)
        try:
            await asyncio.wait_for(stop.wait(), every)
        except TimeoutError:
            pass
    return rtts


def summary(rtts: list[float]) -> dict[str, float]:
    ordered = sorted(rtts)
    return {"count": len(ordered), "p50_ms": round(statistics.median(ordered), 2),
            "p99_ms": round(ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))], 2),
            "max_ms": round(ordered[-1], 2)}


async def run(server: Chatgate, size: int, rounds: int, seconds: float, every: float) -> dict[str, Any]:
    uploader = await login(server, f"u0@{DOMAIN}/bench")
    pinger = await login(server, f"u1@{DOMAIN}/bench")
    data = secrets.token_bytes(size)
    figures: dict[str, Any] = {}

    stop = asyncio.Event()
    idle = asyncio.create_task(pings(pinger, every, stop))
    await asyncio.sleep(3)
    stop.set()
    figures["ping_idle"] = summary(await idle)

    put_times: list[float] = []
    get_times: list[float] = []
    urls: list[str] = []
    for phase in ("put", "get"):
        stop = asyncio.Event()
        during = asyncio.create_task(pings(pinger, every, stop))
        ends = time.monotonic() + seconds
        n = 0
        while n < rounds or time.monotonic() < ends:
            if phase == "put":
                iq = await uploader.plugin["xep_0363"].request_slot(DOMAIN, f"bench{n}.bin", size,
                                                                     "application/octet-stream")
                put = iq["http_upload_slot"]["put"]["url"]
                urls.append(iq["http_upload_slot"]["get"]["url"])
                status, _, took = await asyncio.to_thread(
                    transfer, "PUT", put, data, {"Content-Type": "application/octet-stream"})
                if status != 201:
                    raise RuntimeError(f"PUT answered {status}:\n{server.tail()}")
                put_times.append(took)
            else:
                status, body, took = await asyncio.to_thread(transfer, "GET", urls[n % len(urls)])
                if status != 200 or body != data:
                    raise RuntimeError(f"GET answered {status} ({len(body)} bytes)")
                get_times.append(took)
            n += 1
        stop.set()
        figures[f"ping_during_{phase}"] = summary(await during)
    for phase, times in (("put", put_times), ("get", get_times)):
        rates = sorted(size / MIB / t for t in times)
        figures[phase] = {"count": len(times), "mib_per_s_median": round(statistics.median(rates), 1),
                          "mib_per_s_min": round(rates[0], 1), "mib_per_s_max": round(rates[-1], 1),
                          "seconds_median": round(statistics.median(times), 3)}
    for client in (uploader, pinger):
        client.disconnect()
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size-mib", type=float, default=20, help="the file's size in MiB")
    parser.add_argument("--rounds", type=int, default=5, help="at least this many PUTs, then GETs")
    parser.add_argument("--seconds", type=float, default=3, help="and PUTs (GETs) for at least this long")
    parser.add_argument("--ping-every", type=float, default=0.02, help="seconds between two pings")
    args = parser.parse_args()
    size = int(args.size_mib * MIB)
    os.sched_setaffinity(0, {CLIENT_CORE})
    server = UploadServer(size)
    server.start()
    try:
        figures = asyncio.run(run(server, size, args.rounds, args.seconds, args.ping_every))
        figures["version"] = server.version()
    finally:
        server.stop()
        server.cleanup()
    for phase in ("put", "get"):
        f = figures[phase]
        print(f"{phase.upper()} {args.size_mib:g} MiB x {f['count']}: {f['mib_per_s_median']} MiB/s median "
              f"({f['seconds_median']} s; {f['mib_per_s_min']}-{f['mib_per_s_max']})", file=sys.stderr)
    for name in ("ping_idle", "ping_during_put", "ping_during_get"):
        print(f"{name}: {figures[name]}", file=sys.stderr)
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
