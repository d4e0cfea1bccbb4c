"""Team rooms (XEP-0045): a groupchat message fanned out to a large room, and entering one.

One chatgate (``twistd -n chatgate``, the settings of bench/servers.py:
SQLite directory and archive, limits lifted, ``[muc]`` at its defaults, so
rooms of more than ``large_room`` = 500 occupants broadcast the moderators'
presence only) pinned to core 0; this script, the clients, pinned to core 1.
The clients are bench/load.py's raw c2s sessions (SCRAM-SHA-1, bound, no
roster, no initial presence), imported from it; each enters the domain room
``everyone@conference.bench.test`` as a client does (presence to room/nick
with ``<history maxstanzas='0'/>``) and is in once the room's subject came.

Part 1, fan-out: ``--occupants`` users log in and enter (in batches, see
part 2), then ``--senders`` of them post groupchat messages round robin at
each of ``--rates`` messages/s for ``--step`` seconds. Every occupant (the
sender too: the room reflects it) receives each message; the body carries
``bench <step> <send time in µs> <sequence>``, and the latency of every
receipt is measured against the send time (one process, one monotonic
clock): p50/p99/max over all receipts, receipts not in within ``--drain``
seconds counting as infinitely late, and per message the time until its
last occupant had it. Server CPU per message = its CPU seconds (utime +
stime from /proc, the idle rate subtracted) over the step and drain /
messages sent.

Part 2, entering: a fresh server with ``--wave`` users; all log in and are
held (sessions only), then enter the room in batches of ``--batch``: the
first ``--alone`` joins of each batch one at a time (the latency of one
join into a room of that size), the rest ``--join-concurrency`` at a time.
Per batch: server CPU per join and join latencies; at the end the server's
RSS delta per occupant (RSS after all entered minus RSS with the same
sessions logged in but out of the room). The wave stops after the batch
that passes ``--wave-limit`` seconds. Then messages into the full room at
each of ``--big-rates`` for ``--big-step`` seconds, measured as in part 1.

Every loop is bounded in count and time. The raw figures go to
``bench/results/muc-<timestamp>.json`` (``--out``), a summary to stdout.

    cd bench && ../.venv/bin/python muc.py --occupants 1000 --rates 1,5,10,20,40,60 --wave 10000
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import math
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from load import (
    C2S,
    DOMAIN,
    PASSWORD,
    TEXT,
    LoginFailed,
    Meter,
    Recorder,
    c2s_login,
    log,
    now_us,
    quiet,
    run_rate,
    server_idle_rate,
    summary,
)
from servers import Chatgate, raise_nofile, rss_kib

HERE = Path(__file__).resolve().parent
SERVER_CORE, LOAD_CORE = 0, 1
ROOM = f"everyone@conference.{DOMAIN}"
ENTER = ("<presence to='{room}/{nick}'><x xmlns='http://jabber.org/protocol/muc'>"
         "<history maxstanzas='0'/></x></presence>")
#: the end of an entry: the room's subject (§7.2.16), or a refusal
ENTERED = re.compile(rb"<subject\b|<presence\b[^>]*\btype=['\"]error['\"]")
MARK = re.compile(rb"bench (-?\d+) (\d+) (\d+) ")


class RoomRecorder(Recorder):
    """load.py's recorder, also knowing per message (its sequence number) how many
    occupants have it and when the last one got it."""

    def __init__(self) -> None:
        super().__init__()
        self.count: dict[int, int] = {}
        self.last: dict[int, int] = {}
        #: per message, the latency of its first receipt (what came before the fan-out: archive, routing)
        self.first: dict[int, int] = {}
        #: a step is being paced by load.run_rate; receipts still count after it returns
        self.holding = False

    def seen(self, chunk: bytes) -> None:
        now = now_us()
        self.last_seen = time.monotonic()
        for match in MARK.finditer(chunk):
            if self.step is not None and int(match.group(1)) == self.step:
                latency = now - int(match.group(2))
                self.latencies.append(latency)
                seq = int(match.group(3))
                if seq not in self.count:
                    self.first[seq] = latency
                self.count[seq] = self.count.get(seq, 0) + 1
                self.last[seq] = latency
            else:
                self.late += 1
        if b"error" in chunk:
            self.errors += chunk.count(b"type='error'") + chunk.count(b'type="error"')

    def open(self, step: int) -> None:
        super().open(step)
        self.count, self.last, self.first = {}, {}, {}

    def close(self) -> list[int]:
        if self.holding:  # run_rate's summary, not the step's end
            return self.latencies
        return super().close()


class RoomClient(C2S):
    """A load.py c2s session that, in the room, scans for messages as load.py does and
    drops the room's presences (counted) instead of keeping them in its buffer."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        super().__init__(recorder)
        self.presences = 0

    def _scan(self) -> None:
        super()._scan()
        buf = self.buf
        if buf and b"<message" not in buf and b"<iq" not in buf:
            end = buf.rfind(b">")
            if end >= 0:
                self.presences += buf.count(b"<presence", 0, end)
                del buf[:end + 1]


def groupchat(step: int, stamp: int, seq: int) -> bytes:
    return (b"<message to='%s' type='groupchat' id='g%d'><body>bench %d %d %d %s</body></message>"
            % (ROOM.encode(), seq, step, stamp, seq, TEXT.encode()))


def client_args(server: Chatgate) -> argparse.Namespace:
    """What load.py's c2s_login reads of its command line."""
    return argparse.Namespace(host="127.0.0.1", port=server.c2s_port, http_port=server.http_port,
                              domain=DOMAIN, password=PASSWORD, websocket=False)


def ms(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[max(0, math.ceil(q * len(ordered)) - 1)], 2)


async def login_all(server: Chatgate, count: int, recorder: Recorder, concurrency: int,
                    timeout: float) -> tuple[list[RoomClient], dict[str, Any]]:
    """*count* users log in (load.py's client) and are held, answering pings."""
    ns = client_args(server)
    semaphore = asyncio.Semaphore(concurrency)
    clients: list[RoomClient | None] = [None] * count
    failures: list[str] = []

    async def one(n: int) -> None:
        async with semaphore:
            try:
                client = await c2s_login(ns, n, "muc", recorder, protocol=lambda: RoomClient(recorder))
            except (LoginFailed, OSError, TimeoutError) as e:
                failures.append(f"u{n}: {e}")
                return
            assert isinstance(client, RoomClient)
            client.chatting = True
            client._scan()
            clients[n] = client

    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(count))), timeout)
    except TimeoutError:
        failures.append(f"stopped after {timeout:.0f} s")
    ok = [c for c in clients if c is not None]
    figures = {"users": count, "logged_in": len(ok), "login_s": round(time.monotonic() - started, 1),
               "login_failures": len(failures), "login_failure_examples": failures[:3]}
    log(f"{len(ok)}/{count} logged in in {figures['login_s']} s")
    return ok, figures


async def enter(client: RoomClient, nick: str, timeout: float) -> float:
    """Enter the room; milliseconds until its subject came."""
    client.chatting = False
    started = time.monotonic()
    client.write(ENTER.format(room=ROOM, nick=nick).encode())
    try:
        match = await client.expect(ENTERED, timeout)
    finally:
        client.chatting = True
    elapsed = (time.monotonic() - started) * 1000
    if not match.group(0).startswith(b"<subject"):
        raise LoginFailed(f"{nick}: refused: {bytes(client.buf[:300])!r}")
    client._scan()
    return elapsed


async def wave(clients: list[RoomClient], server: Chatgate, args: argparse.Namespace,
               idle_rate: float) -> tuple[dict[str, Any], list[RoomClient]]:
    """Everyone enters, batch after batch; per batch the server's CPU per join and
    the joins' latencies (the first ``--alone`` of a batch entering one at a time)."""
    rows = []
    failures: list[str] = []
    entered: list[RoomClient] = []
    started = time.monotonic()
    for first in range(0, len(clients), args.batch):
        group = clients[first:first + args.batch]
        meter = Meter(server.pid, SERVER_CORE)
        alone: list[float] = []
        together: list[float] = []
        batch_started = time.monotonic()
        ok = 0

        async def one(index: int, client: RoomClient, into: list[float]) -> None:
            nonlocal ok
            try:
                into.append(await enter(client, f"n{index}", args.join_timeout))
            except (LoginFailed, OSError, TimeoutError) as e:
                failures.append(str(e)[:300])
                return
            ok += 1
            entered.append(client)

        for offset, client in enumerate(group[:args.alone]):
            await one(first + offset, client, alone)
        semaphore = asyncio.Semaphore(args.join_concurrency)

        async def bounded(index: int, client: RoomClient, semaphore: asyncio.Semaphore = semaphore,
                          into: list[float] = together) -> None:
            async with semaphore:
                await one(index, client, into)

        rest = list(enumerate(group))[args.alone:]
        await asyncio.gather(*(bounded(first + offset, client) for offset, client in rest))
        seconds = time.monotonic() - batch_started
        cpu = meter.read(idle_rate)
        row = {
            "occupants_before": first,
            "occupants_after": len(entered),
            "joins": ok,
            "seconds": round(seconds, 2),
            "joins_per_s": round(ok / seconds, 1),
            "server_cpu_s": round(cpu["server_cpu_s"], 3),
            "server_cpu_share": round(cpu["server_cpu_share"], 3),
            "server_cpu_ms_per_join": round(cpu["server_cpu_s"] * 1000 / ok, 3) if ok else None,
            "alone_join_ms": [round(v, 1) for v in alone],
            "join_p50_ms": ms(together, 0.5),
            "join_p99_ms": ms(together, 0.99),
            "join_max_ms": ms(together, 1.0),
            "generator_cpu_share": round(cpu["generator_cpu_share"], 3),
            "others_on_server_core_share": round(cpu["others_on_server_core_share"], 3),
        }
        rows.append(row)
        log(f"entered {row['occupants_after']} (+{ok} in {seconds:.1f} s): {row['server_cpu_ms_per_join']} ms "
            f"server CPU per join, alone {row['alone_join_ms']} ms, p50/p99 {row['join_p50_ms']}/"
            f"{row['join_p99_ms']} ms at {args.join_concurrency} in flight")
        if failures and len(failures) >= 10:
            log(f"stopping the wave: {failures[:2]}")
            break
        if time.monotonic() - started > args.wave_limit and first + args.batch < len(clients):
            log(f"stopping the wave after {time.monotonic() - started:.0f} s (--wave-limit)")
            break
    return {"batches": rows, "entered": len(entered), "wave_s": round(time.monotonic() - started, 1),
            "join_failures": len(failures), "join_failure_examples": failures[:3],
            "server_cpu_s": round(sum(row["server_cpu_s"] for row in rows), 2),
            # the room's presences to occupants already in (a newcomer's own list is not counted)
            "presences_to_occupants": sum(c.presences for c in clients)}, entered


async def fanout_step(senders: list[RoomClient], recorder: RoomRecorder, occupants: int, step: int,
                      rate: float, duration: float, drain: float, server: Chatgate,
                      idle_rate: float) -> dict[str, Any]:
    """*rate* groupchat messages/s for *duration* s round robin over *senders*, each
    to reach *occupants*; wait up to *drain* s for the last receipts."""
    loop = asyncio.get_running_loop()
    meter = Meter(server.pid, SERVER_CORE)
    # load.py's paced sender (a tick every 2 ms); its own summary counts one receipt per
    # message, so it is replaced below by the room's (one per occupant), after the drain
    recorder.holding = True
    try:
        paced = await run_rate([(client.write, b"") for client in senders], recorder, step, rate, duration, 0,
                               lambda: meter, lambda _to, step_, stamp, seq: groupchat(step_, stamp, seq))
    finally:
        recorder.holding = False
    sent = paced["sent"]
    expected = sent * occupants
    deadline = loop.time() + drain
    while len(recorder.latencies) < expected and loop.time() < deadline:
        await asyncio.sleep(0.01)
    cpu = meter.read(idle_rate)
    count, last, first = recorder.count, recorder.last, recorder.first
    figures = summary(recorder.close(), expected)
    figures["receipts_expected"] = figures.pop("sent")
    figures["receipts"] = figures.pop("delivered")
    everyone = sorted(last[seq] / 1000 for seq in range(sent) if count.get(seq, 0) >= occupants)
    firsts = sorted(first[seq] / 1000 for seq in first)
    # per message, its first receipt to its last: the fan-out itself, as the occupants saw it
    spread = sorted((last[seq] - first[seq]) / 1000 for seq in range(sent) if count.get(seq, 0) >= occupants)
    cpu_s = cpu["server_cpu_s"]
    figures.update(
        rate=rate,
        messages=sent,
        occupants=occupants,
        achieved_rate=paced["achieved_rate"],
        messages_reaching_everyone=len(everyone),
        # the time until a message's last occupant had it (messages that did not reach everyone: none)
        all_reached_p50_ms=ms(everyone, 0.5) if len(everyone) == sent else None,
        all_reached_p99_ms=ms(everyone, 0.99) if len(everyone) == sent else None,
        all_reached_max_ms=round(everyone[-1], 2) if everyone and len(everyone) == sent else None,
        first_reached_p50_ms=ms(firsts, 0.5),
        first_reached_p99_ms=ms(firsts, 0.99),
        first_reached_max_ms=ms(firsts, 1.0),
        spread_p50_ms=ms(spread, 0.5),
        spread_p99_ms=ms(spread, 0.99),
        spread_max_ms=ms(spread, 1.0),
        server_cpu_s=round(cpu_s, 3),
        server_cpu_ms_per_message=round(cpu_s * 1000 / sent, 3) if sent else None,
        server_cpu_us_per_receipt=round(cpu_s * 1e6 / expected, 2) if expected else None,
        server_cpu_share=round(cpu["server_cpu_share"], 3),
        generator_cpu_share=round(cpu["generator_cpu_share"], 3),
        others_on_server_core_share=round(cpu["others_on_server_core_share"], 3),
        generator_worst_lag_ms=paced["generator_worst_lag_ms"],
        seconds=round(cpu["seconds"], 2),
    )
    log(f"{'warm-up: ' if step < 0 else ''}{rate:g} msg/s into {occupants}: "
        f"{figures['receipts']}/{expected} receipts, p50 {figures['p50_ms']} "
        f"p99 {figures['p99_ms']} max {figures['max_ms']} ms; all reached p99 {figures['all_reached_p99_ms']} ms; "
        f"first receipt p50/p99 {figures['first_reached_p50_ms']}/{figures['first_reached_p99_ms']} ms, "
        f"first to last p50/p99 {figures['spread_p50_ms']}/{figures['spread_p99_ms']} ms; "
        f"server {figures['server_cpu_ms_per_message']} ms CPU per message ({figures['server_cpu_share']:.0%}), "
        f"generator {figures['generator_cpu_share']:.0%}")
    return figures


async def room_run(server: Chatgate, users: int, rates: list[float], step_s: float,
                   args: argparse.Namespace) -> dict[str, Any]:
    """Log *users* in, enter them all (the wave), then messages at each of *rates*."""
    recorder = RoomRecorder()
    result: dict[str, Any] = {"users": users}
    try:
        clients, figures = await login_all(server, users, recorder, args.concurrency, args.timeout)
        result.update(figures)
        await asyncio.sleep(args.settle)
        idle_rate = await server_idle_rate(server.pid, args.idle)
        rss_before = rss_kib(server.pid)
        gc.collect()
        gc.freeze()  # the clients' objects stay; the generator's collections need not walk them
        result["wave"], in_room = await wave(clients, server, args, idle_rate)
        await asyncio.sleep(args.settle)
        rss_after = rss_kib(server.pid)
        occupants = result["wave"]["entered"]
        result.update(
            server_idle_cpu_share=round(idle_rate, 4),
            rss_logged_in_kib=rss_before,
            rss_entered_kib=rss_after,
            kib_per_occupant=round((rss_after - rss_before) / occupants, 2) if occupants else None,
        )
        log(f"{occupants} in the room: RSS {rss_before} -> {rss_after} KiB = {result['kib_per_occupant']} KiB "
            f"per occupant")
        held_rate = await server_idle_rate(server.pid, args.idle)
        result["server_cpu_share_room_held"] = round(held_rate, 4)
        steps = []
        senders = in_room[:args.senders]
        # a short warm-up, not recorded (the room's history and archive path are loaded)
        if senders and rates:
            await fanout_step(senders, recorder, occupants, -1, 1, 2, args.drain, server, held_rate)
            await quiet(recorder)
        for number, rate in enumerate(rates):
            figures = await fanout_step(senders, recorder, occupants, number, rate, step_s, args.drain, server,
                                        held_rate)
            steps.append(figures)
            await quiet(recorder)
            if any(c.lost for c in clients) or figures["delivered_share"] is None \
                    or figures["delivered_share"] < 0.9:
                log("stopping the rates: receipts missing or sessions lost")
                break
        result["steps"] = steps
        result["sessions_lost"] = sum(c.lost for c in clients)
        result["errors_received"] = recorder.errors
        result["late_receipts"] = recorder.late
        for client in clients:
            client.close()
        await asyncio.sleep(1)
    finally:
        gc.unfreeze()
    return result


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--occupants", type=int, default=1000, help="part 1: occupants of the room (0: no part 1)")
    parser.add_argument("--senders", type=int, default=5, help="occupants posting, round robin")
    parser.add_argument("--rates", default="1,5,10,20", help="part 1: groupchat messages/s into the room")
    parser.add_argument("--step", type=float, default=20.0, help="seconds of messages per rate")
    parser.add_argument("--drain", type=float, default=10.0, help="seconds to wait for the last receipts")
    parser.add_argument("--wave", type=int, default=10000, help="part 2: users entering (0: no part 2)")
    parser.add_argument("--batch", type=int, default=500, help="joins per measured batch")
    parser.add_argument("--alone", type=int, default=3, help="joins one at a time at the start of each batch")
    parser.add_argument("--join-concurrency", type=int, default=20, help="joins in flight")
    parser.add_argument("--join-timeout", type=float, default=120.0, help="seconds one join may take")
    parser.add_argument("--wave-limit", type=float, default=600.0,
                        help="part 2: no further batch after this many seconds of entering")
    parser.add_argument("--big-rates", default="1,2,4",
                        help="part 2: messages/s into the full room afterwards (empty: none)")
    parser.add_argument("--big-step", type=float, default=10.0, help="part 2: seconds of messages per rate")
    parser.add_argument("--concurrency", type=int, default=100, help="logins at a time")
    parser.add_argument("--settle", type=float, default=2.0)
    parser.add_argument("--idle", type=float, default=2.0, help="seconds the idle server's CPU is measured")
    parser.add_argument("--timeout", type=float, default=900.0, help="give up logging in after this")
    parser.add_argument("--out", type=Path, default=None, help="the JSON file (bench/results/muc-<time>.json)")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="PREFIX",
                        help="profile each server with py-spy (on the load core) into PREFIX-<part>.txt "
                             "(collapsed stacks); the figures then carry py-spy's own cost")
    args = parser.parse_args()
    args.occupants = min(args.occupants, 20000)
    args.wave = min(args.wave, 20000)
    rates = [float(r) for r in args.rates.split(",") if r]
    stamp = time.strftime("%Y%m%d-%H%M%S", time.gmtime())
    out = args.out or HERE / "results" / f"muc-{stamp}.json"
    raise_nofile()
    os.sched_setaffinity(0, {LOAD_CORE})  # the clients; the servers are started on SERVER_CORE
    results: dict[str, Any] = {"date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                               "command": " ".join([Path(sys.executable).name, *sys.argv]),
                               "cores": os.cpu_count(), "cpu": cpu_model(), "server_core": SERVER_CORE,
                               "load_core": LOAD_CORE}
    parts = [("fanout", args.occupants, rates, args.step)] if args.occupants else []
    if args.wave:
        parts.append(("wave", args.wave, [float(r) for r in args.big_rates.split(",") if r], args.big_step))
    for name, users, part_rates, step_s in parts:
        started = time.monotonic()
        server = Chatgate(users, core=SERVER_CORE)
        log(f"{name}: provisioning {users} users and starting chatgate")
        server.start(timeout=600)
        results.setdefault("tree", server.version())
        log(f"{name}: chatgate up (pid {server.pid}) in {time.monotonic() - started:.0f} s")
        spy = None
        if args.py_spy:
            spy = subprocess.Popen(["taskset", "-c", str(LOAD_CORE), str(Path(sys.executable).parent / "py-spy"),
                                    "record", "--pid", str(server.pid), "--rate", "100", "--format", "raw",
                                    "-o", f"{args.py_spy}-{name}.txt"],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            results[name] = asyncio.run(asyncio.wait_for(
                room_run(server, users, part_rates, step_s, args), args.timeout + args.wave_limit + 1800))
        finally:
            server.stop()
            server.cleanup()
            if spy is not None:
                try:
                    spy.wait(60)  # it writes its file once the server is gone
                except subprocess.TimeoutExpired:
                    spy.kill()
                    spy.wait()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=1) + "\n")
    print(f"raw figures: {out}")
    fanout = results.get("fanout", {"steps": []})
    if "wave" in fanout:
        print(f"\n{fanout['wave']['entered']} occupants, {args.senders} senders, {args.step:g} s per rate:")
        print("| rate | receipts | p50 | p99 | max | last occupant p99 | server CPU per message | server CPU |")
        print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for s in fanout["steps"]:
        print(f"| {s['rate']:g} msg/s | {s['receipts']:,}/{s['receipts_expected']:,} | {s['p50_ms']} ms | "
              f"{s['p99_ms']} ms | {s['max_ms']} ms | {s['all_reached_p99_ms']} ms | "
              f"{s['server_cpu_ms_per_message']} ms | {s['server_cpu_share']:.0%} |")
    if "wave" in results:
        big = results["wave"]
        print(f"\nentering ({big['wave']['entered']} of {big['users']}; {big['kib_per_occupant']} KiB per occupant):")
        print("| occupants | server CPU per join | one join alone | p50 / p99 at "
              f"{args.join_concurrency} in flight |")
        print("|---:|---:|---:|---:|")
        for row in big["wave"]["batches"]:
            alone = statistics.median(row["alone_join_ms"]) if row["alone_join_ms"] else None
            print(f"| {row['occupants_before']:,}-{row['occupants_after']:,} | {row['server_cpu_ms_per_join']} ms | "
                  f"{alone} ms | {row['join_p50_ms']} / {row['join_p99_ms']} ms |")
        for s in big["steps"]:
            print(f"\n{s['rate']:g} msg/s into {s['occupants']}: p50 {s['p50_ms']} p99 {s['p99_ms']} "
                  f"max {s['max_ms']} ms, "
                  f"{s['server_cpu_ms_per_message']} ms server CPU per message")


if __name__ == "__main__":
    main()
