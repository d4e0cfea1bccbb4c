"""The cluster benchmark (issue 16): chatgate nodes sharing one redis-server, on this machine.

Real processes on 127.0.0.1: a ``redis-server`` of this script's own on a free
port, and N ``twistd -n chatgate`` nodes (``[cluster] backend = redis``,
``node_id`` node1..nodeN), all on one SQLite directory file, the archive and
offline messages on the Redis server (``[archive] backend = redis``,
``offline_backend = redis``). Users ``u0``.. of ``bench.test`` are imported
once, with ``chatgate-admin user import``. The load comes from this process
(raw c2s sockets and pre-computed stanzas: bench/load.py's client, incoming
bytes scanned, not parsed) or, for the sessions, from worker processes of this
script, one per node (a process may hold no more open files than the hard
limit, 20,000 here). The load's CPU is never counted. Four measurements, each
on freshly started nodes and a Redis of its own:

1. ``cpu``: CPU per delivered message. Pairs of users chat (each to its
   partner's full JID, carbons on, as S2) at a fixed rate for a fixed time:
   on one node (``[cluster] backend = local``, the same stores: the baseline),
   on two nodes with half the pairs split across them (50 % of the messages
   cross nodes) and with all of them split (100 %). Every server process is
   pinned to core 0, this process to core 1 (as bench/run.py). CPU = utime +
   stime from /proc/<pid>/stat of every node and redis-server, from the first
   message sent to the last one received (or the drain's end), divided by the
   messages the clients received. From the costs and S2's single-node figure,
   the capacity of 4 and 16 nodes on one Redis is projected (see ``project``).
2. ``presence``: 3 nodes, a domain of ``--presence-users`` users spread over
   them, each with initial presence (everyone sees everyone); then one user
   changes presence ``--changes`` times, each change waited for at every
   user. Redis commands per change from ``INFO commandstats`` (calls of every
   command, scripts' own commands included: Redis counts them too) and from
   ``MONITOR`` (which tells a client's commands from a script's), each net of
   the same cluster's idle traffic (heartbeats, blocked reads timing out),
   measured just before over a quiet window.
3. ``sessions``: ``--sessions`` c2s sessions (no presence, as S1) over 4
   nodes, each node's share from one worker process; memory per session =
   (sum of the nodes' RSS after - before) / sessions, and where the logins went.
4. ``failure``: 3 nodes. ``kill -9`` of node1 holding ``--victims`` users
   (available) while as many users on node2 send them messages (bare JID) at
   ``--failure-rate``: when a watcher on node3 sees their unavailable presence,
   and, once the victims logged in again on node3 (offline messages come
   then), sent - received - errors = lost. Then a Redis restart (append-only
   file on; stopped with SIGTERM, started again on the same port after
   ``--redis-down`` s) while node2's users send to node3's users, and users of
   node2 chat among themselves: lost, errors, delayed.

Every loop is bounded in count and time; nothing listens beyond 127.0.0.1.

    .venv/bin/python bench/cluster.py            # the full run (~12 minutes); writes RESULTS.md's section
    .venv/bin/python bench/cluster.py --quick    # small sizes, under 2 minutes (RESULTS.md untouched)
    .venv/bin/python bench/cluster.py --only cpu,presence --no-write
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import re
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import load  # noqa: E402  (this folder: bench/load.py's client)
from servers import (  # noqa: E402
    DOMAIN,
    ITERATIONS,
    PASSWORD,
    REPO,
    VENV_BIN,
    _unlimited,
    cpu_seconds,
    rss_kib,
    terminate,
)
from servers import free_port as _free_port  # noqa: E402

SECTION = "## Cluster (issue 16)"
#: in RESULTS.md, what follows this line in the section is kept when the section is written again
NOTES = "<!-- written by hand below: bench/cluster.py keeps it -->"
SERVER_CORE, LOAD_CORE = 0, 1
#: py-spy (bench/setup.sh installs it) samples a node under load; without it, cProfile (see profiled())
SPY = VENV_BIN / "py-spy"
PREFIX = "cg"
#: S2's single-node capacity, bench/RESULTS.md "Load" (2026-11-22 03:26 run): chatgate with the
#: archive on Redis (the cluster's stores) passed 6,000 msg/s at 75 % of a core (SQLite archive:
#: 7,000 msg/s at 83 %)
S2_RATE, S2_CPU = 6000.0, 0.75
#: the benchmark's own commands, left out of the counts
OWN = {"INFO", "MONITOR"}
PRESENCE_CHANGE = (b"<presence><show>away</show><status>bench %d</status></presence>",
                   b"<presence><status>bench %d</status></presence>")


_PORTS: set[int] = set()


def free_port() -> int:
    """A free loopback port never handed out before in this run (the kernel may offer one twice)."""
    for _ in range(100):
        port = _free_port()
        if port not in _PORTS:
            _PORTS.add(port)
            return port
    raise RuntimeError("no new free port")


def log(text: str) -> None:
    print(f"[cluster {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


def raise_nofile() -> int:
    """Open files up to the hard limit (children inherit it); the limit."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    return hard


# -- Redis


def _encode(*args: Any) -> bytes:
    out = [b"*%d\r\n" % len(args)]
    for arg in args:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        out.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(out)


def _reply(stream: Any) -> Any:
    line = stream.readline()
    if not line:
        raise ConnectionError("redis closed the connection")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RuntimeError(f"redis: {rest.decode()}")
    if kind == b":":
        return int(rest)
    if kind == b"$":
        size = int(rest)
        return None if size < 0 else stream.read(size + 2)[:-2].decode("utf-8", "replace")
    if kind == b"*":
        size = int(rest)
        return None if size < 0 else [_reply(stream) for _ in range(size)]
    raise RuntimeError(f"redis: unexpected reply {line[:60]!r}")


class Redis:
    """One redis-server on a free loopback port; *persist*: an append-only file
    (``appendonly yes``, fsync every second), so a stop and a start keep the data."""

    def __init__(self, folder: Path, persist: bool = False, core: int | None = None) -> None:
        self.folder = folder
        folder.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.persist = persist
        self.core = core
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "redis.log"

    def start(self, timeout: float = 30) -> Redis:
        command = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
                   "--appendonly", "yes" if self.persist else "no", "--dir", str(self.folder),
                   "--logfile", str(self.log), "--daemonize", "no"]
        if self.core is not None:
            command = ["taskset", "-c", str(self.core), *command]
        self.process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT,
                                        stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"redis-server exited: {self.tail()}")
            try:
                if self.call("PING") == "PONG":
                    return self
            except (OSError, RuntimeError):
                pass  # not listening yet, or still loading its file
            time.sleep(0.05)
        raise RuntimeError(f"redis-server did not answer in {timeout:.0f} s: {self.tail()}")

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def call(self, *args: Any) -> Any:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as conn:
            conn.sendall(_encode(*args))
            with conn.makefile("rb") as stream:
                return _reply(stream)

    def info(self, section: str) -> dict[str, str]:
        out = {}
        for line in self.call("INFO", section).splitlines():
            key, sep, value = line.partition(":")
            if sep and not key.startswith("#"):
                out[key] = value
        return out

    def commandstats(self) -> Counter[str]:
        """Calls of each command so far (a script's own commands counted too)."""
        stats: Counter[str] = Counter()
        for key, value in self.info("commandstats").items():
            fields = dict(part.split("=", 1) for part in value.split(","))
            stats[key.removeprefix("cmdstat_").upper()] = int(fields["calls"])
        return stats

    def stop(self) -> None:
        terminate(self.process)
        self.process = None

    def tail(self, lines: int = 10) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""

    def version(self) -> str:
        out = subprocess.run(["redis-server", "--version"], capture_output=True, text=True).stdout
        match = re.search(r"v=(\S+)", out)
        return match.group(1) if match else out.strip()


class Monitor:
    """Redis ``MONITOR`` in the background: (server time, client or script, command) of every command."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: list[tuple[float, bool, str]] = []
        self._task: asyncio.Task[None] | None = None
        self._writer: asyncio.StreamWriter | None = None

    async def __aenter__(self) -> Monitor:
        reader, self._writer = await asyncio.open_connection("127.0.0.1", self.port)
        self._writer.write(b"MONITOR\r\n")
        assert (await reader.readline()).startswith(b"+OK")
        self._task = asyncio.create_task(self._read(reader))
        return self

    async def _read(self, reader: asyncio.StreamReader) -> None:
        line_re = re.compile(rb'^\+(\d+\.\d+) \[\d+ ([^\]]+)\] "([^"]+)"')
        while True:
            line = await reader.readline()
            if not line:
                return
            match = line_re.match(line)
            if match:
                self.lines.append((float(match.group(1)), match.group(2) == b"lua", match.group(3).decode().upper()))

    async def __aexit__(self, *_: object) -> None:
        await asyncio.sleep(0.2)  # what is on its way
        if self._writer is not None:
            self._writer.close()
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, ConnectionError):
                pass

    def between(self, start: float, end: float) -> tuple[Counter[str], Counter[str]]:
        """Commands sent by clients, and run by scripts, with server times in [start, end)."""
        clients: Counter[str] = Counter()
        scripts: Counter[str] = Counter()
        for at, lua, name in self.lines:
            if start <= at < end:
                (scripts if lua else clients)[name] += 1
        return clients, scripts


# -- chatgate nodes


class Node:
    """One ``twistd -n chatgate`` process of the cluster, in its own folder."""

    def __init__(self, folder: Path, name: str, store: Path, tls: Path, redis: Redis, backend: str,
                 cluster: dict[str, Any], core: int | None = None) -> None:
        self.name = name
        self.folder = folder / name
        self.folder.mkdir(parents=True, exist_ok=True)
        self.c2s_port, self.http_port = free_port(), free_port()
        self.core = core
        #: where cProfile writes this node's profile when it stops (None: no profile)
        self.profile: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.folder / "twistd.log"
        self.config = self.folder / "tap-config.ini"
        limits, auth = _unlimited()
        settings: dict[str, dict[str, Any]] = {
            "xmpp": {"interfaces": "127.0.0.1", "port": self.c2s_port, "require_encryption": "false",
                     "allow_plain_without_tls": "false", "ping_interval": 3600, "ping_timeout": 60},
            "tls": {"certificate": str(tls / "cert.pem"), "key": str(tls / "key.pem")},
            "storage": {"backend": "sqlite", "path": str(store), "redis_host": "127.0.0.1",
                        "redis_port": redis.port, "redis_prefix": PREFIX},
            "archive": {"backend": "redis", "offline_backend": "redis"},
            "auth": {"scram_iterations": ITERATIONS, **auth},
            "limits": limits,
            "http": {"interfaces": "127.0.0.1", "port": self.http_port, "bosh_path": "/http-bind"},
            "demo": {"create": "false"},
            "cluster": {"backend": backend, "node_id": name, **cluster},
        }
        self.config.write_text("".join(f"[{section}]\n" + "".join(f"{k} = {v}\n" for k, v in values.items())
                                       for section, values in settings.items()))

    def spawn(self) -> None:
        command = [str(VENV_BIN / "twistd"), "-n", "--pidfile=", "--logfile", str(self.log), "chatgate",
                   "--config", str(self.config)]
        if self.profile is not None:
            command = [str(VENV_BIN / "python"), str(Path(__file__).resolve()), "_profiled", str(self.profile),
                       *command]
        if self.core is not None:
            command = ["taskset", "-c", str(self.core), *command]
        self._ready_before = self._log_text().count("chatgate ready")
        with open(self.folder / "twistd.out", "ab") as out:
            self.process = subprocess.Popen(command, cwd=self.folder, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL)

    async def ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while self._log_text().count("chatgate ready") <= self._ready_before:
            if not self.alive():
                out = (self.folder / "twistd.out").read_text(errors="replace")[-1500:]
                raise RuntimeError(f"{self.name} exited while starting:\n{out}\n{self.tail()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.name} not ready after {timeout:.0f} s:\n{self.tail()}")
            await asyncio.sleep(0.1)

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def endpoint(self) -> SimpleNamespace:
        """What load.c2s_login needs to know of a server."""
        return SimpleNamespace(host="127.0.0.1", port=self.c2s_port, domain=DOMAIN, password=PASSWORD)

    def kill(self) -> None:
        """``kill -9``."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(10)

    def stop(self) -> None:
        terminate(self.process)
        self.process = None

    def _log_text(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self._log_text().splitlines()[-lines:])

    def problems(self) -> dict[str, list[str]]:
        """The log's error and warning lines (tracebacks as their first and last line)."""
        errors, warnings, events = [], [], []
        lines = self._log_text().splitlines()
        for i, line in enumerate(lines):
            if "#error]" in line or "#critical]" in line or "Unhandled" in line:
                errors.append(line[:300])
            elif "Traceback" in line:
                # Twisted indents a failure's traceback with a tab; its last line is the exception
                end = i + 1
                while end < len(lines) and end < i + 200 and lines[end].startswith(("\t", " ")):
                    end += 1
                errors.append(f"{line.strip()[:100]} ... {lines[end - 1].strip()[-300:]}")
            elif "#warn]" in line:
                warnings.append(line[:300])
            if "cluster: node" in line and "is gone" in line or "previous run left" in line:
                events.append(line[:300])
        return {"errors": errors, "warnings": warnings, "cluster_events": events}


class Cluster:
    """Redis and the nodes of one measurement (a fresh folder under the run's)."""

    def __init__(self, ctx: Context, label: str, nodes: int, backend: str = "redis", persist: bool = False,
                 core: int | None = None, cluster: dict[str, Any] | None = None) -> None:
        self.ctx = ctx
        folder = ctx.run / label
        self.redis = Redis(folder / "redis", persist=persist, core=core)
        settings = {"heartbeat": ctx.args.heartbeat, "dead_after": ctx.args.dead_after, **(cluster or {})}
        self.nodes = [Node(folder, f"node{n + 1}", ctx.store, ctx.run / "tls", self.redis, backend, settings, core)
                      for n in range(nodes)]

    async def __aenter__(self) -> Cluster:
        self.redis.start()
        try:
            for node in self.nodes:
                node.spawn()
            for node in self.nodes:
                await node.ready()
            await asyncio.sleep(2 * self.ctx.args.heartbeat + 0.2)  # every node has seen every other beat
        except BaseException:
            self.stop()
            raise
        return self

    async def __aexit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
        self.redis.stop()

    def pids(self) -> dict[str, int]:
        return {**{n.name: n.pid for n in self.nodes if n.alive()}, "redis": self.redis.pid}

    def problems(self) -> dict[str, dict[str, list[str]]]:
        return {node.name: node.problems() for node in self.nodes}


# -- clients

TOKENS = re.compile(rb"<message\b([^>]*)>|</message>|cg ([a-z]+)(\d+) (\d+) |<presence\b([^>]*)>")
ID = re.compile(rb"""\bid=['"]([a-z]+)(\d+)['"]""")
TYPE = re.compile(rb"""\btype=['"]([a-z]+)['"]""")
FROM = re.compile(rb"""\bfrom=['"]([^'"/]+)""")


class Flow:
    """Messages of one kind (a tag): when each was sent, when it first came, which came back as errors."""

    def __init__(self, tag: str) -> None:
        self.tag = tag
        self.sent: dict[int, int] = {}  # seq -> send time, µs
        self.arrived: dict[int, int] = {}  # seq -> first arrival, µs
        self.errors: set[int] = set()
        self.duplicates = 0
        self.unsent = 0
        self.last_arrival = 0.0

    def stanza(self, to: bytes, seq: int, stamp: int) -> bytes:
        tag = self.tag.encode()
        return (b"<message to='%s' type='chat' id='%s%d'><body>cg %s%d %d %s</body></message>"
                % (to, tag, seq, tag, seq, stamp, load.TEXT.encode()))

    def summary(self, sent_between: tuple[int, int] | None = None, delayed_ms: float = 1000) -> dict[str, Any]:
        """Sent, received, errors, lost = sent - received - errors, duplicates, latencies; of the
        messages sent in [start, end) µs when *sent_between* is given."""
        seqs = [s for s, t in self.sent.items() if sent_between is None or sent_between[0] <= t < sent_between[1]]
        latencies = sorted((self.arrived[s] - self.sent[s]) / 1000 for s in seqs if s in self.arrived)
        errors = sum(1 for s in seqs if s in self.errors and s not in self.arrived)

        def pick(q: float) -> float | None:
            return round(latencies[max(0, math.ceil(q * len(latencies)) - 1)], 2) if latencies else None

        return {"sent": len(seqs), "received": len(latencies), "errors": errors,
                "lost": len(seqs) - len(latencies) - errors,
                "duplicates": self.duplicates if sent_between is None else None,
                "delayed_over_1s": sum(1 for v in latencies if v > delayed_ms),
                "p50_ms": pick(0.5), "p99_ms": pick(0.99), "max_ms": round(latencies[-1], 1) if latencies else None}


class Ledger:
    """Every flow of a measurement, and the presence stanzas watchers saw."""

    def __init__(self) -> None:
        self.flows: dict[str, Flow] = {}
        #: (monotonic time, from bare JID, type) of presence received by watching peers
        self.presence: list[tuple[float, str, str]] = []

    def flow(self, tag: str) -> Flow:
        return self.flows.setdefault(tag, Flow(tag))

    def scan(self, peer: Peer, chunk: bytes) -> None:
        now = load.now_us()
        for match in TOKENS.finditer(chunk):
            token = match.group(0)
            if token.startswith(b"<message"):
                attrs = match.group(1)
                kind = TYPE.search(attrs)
                if kind is not None and kind.group(1) == b"error":
                    peer.in_error = not attrs.endswith(b"/")
                    ident = ID.search(attrs)
                    if ident is not None and ident.group(1).decode() in self.flows:
                        self.flows[ident.group(1).decode()].errors.add(int(ident.group(2)))
            elif token == b"</message>":
                peer.in_error = False
            elif token.startswith(b"cg "):
                flow = self.flows.get(match.group(2).decode())
                if flow is None or peer.in_error:
                    continue
                seq = int(match.group(3))
                if seq in flow.arrived:
                    flow.duplicates += 1
                else:
                    flow.arrived[seq] = now
                    flow.last_arrival = time.monotonic()
            elif peer.watching:
                attrs = match.group(5)
                sender, kind = FROM.search(attrs), TYPE.search(attrs)
                self.presence.append((time.monotonic(), sender.group(1).decode() if sender else "",
                                      kind.group(1).decode() if kind else "available"))


class Peer(load.C2S):
    """A bound c2s session whose incoming bytes go to the ledger, cut after the last '>'
    (so no token the ledger looks for is ever cut in two)."""

    def __init__(self, ledger: Ledger) -> None:
        super().__init__(None)
        self.ledger = ledger
        self.in_error = False
        self.watching = False

    def start(self, presence: bool = False, watching: bool = False) -> None:
        self.watching = watching
        self.chatting = True
        self.data_received(b"")
        if presence:
            self.write(b"<presence/>")

    def data_received(self, data: bytes) -> None:
        if not self.chatting:
            super().data_received(data)
            return
        buf = self.buf
        buf += data
        end = buf.rfind(b">")
        if end >= 0:
            chunk = bytes(buf[:end + 1])
            del buf[:end + 1]
            self.ledger.scan(self, chunk)


class PresenceCounter(load.Counter):
    """S4's counting client, without the roster request: initial presence only."""

    def available(self) -> None:
        self.buf.clear()
        self.counting = True
        self.write(b"<presence/>")


async def log_in(node: Node, numbers: list[int], concurrency: int, ledger: Ledger | None = None,
                 presence: bool = False, carbons: bool = False, watching: bool = False,
                 timeout: float = 600) -> tuple[dict[int, Peer], list[str]]:
    """Users u<n> for n in *numbers* log in on *node* (resource 'b')."""
    ledger = ledger or Ledger()
    semaphore = asyncio.Semaphore(concurrency)
    peers: dict[int, Peer] = {}
    failures: list[str] = []

    async def one(n: int) -> None:
        async with semaphore:
            try:
                peer = await load.c2s_login(node.endpoint(), n, "b", protocol=lambda: Peer(ledger))
                assert isinstance(peer, Peer)
                if carbons:
                    await load.enable_carbons(peer)
                peer.start(presence, watching)
                peers[n] = peer
            except (load.LoginFailed, OSError, TimeoutError) as e:
                failures.append(f"u{n} on {node.name}: {e}"[:300])

    try:
        await asyncio.wait_for(asyncio.gather(*(one(n) for n in numbers)), timeout)
    except TimeoutError:
        failures.append(f"logins on {node.name} stopped after {timeout:.0f} s")
    return peers, failures


async def send(flow: Flow, senders: list[tuple[load.C2S, bytes]], rate: float, duration: float) -> float:
    """*rate* messages/s for *duration* s, round robin over *senders* (client, to); the achieved rate."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    limit = int(rate * duration)
    count = len(senders)
    seq = 0
    while seq < limit:
        due = min(limit, int(rate * (loop.time() - started)) + 1)
        stamp = load.now_us()
        while seq < due:
            client, to = senders[seq % count]
            if client.lost:
                flow.unsent += 1
            else:
                client.write(flow.stanza(to, seq, stamp))
                flow.sent[seq] = stamp
            seq += 1
        await asyncio.sleep(0.002)
        if loop.time() - started > 3 * duration + 10:
            break  # this process cannot keep up: the achieved rate says so
    return round(len(flow.sent) / max(1e-9, loop.time() - started), 1)


async def settled(flows: list[Flow], quiet: float, limit: float) -> None:
    """Until every message of *flows* came back (or errors), or none came for *quiet* s; at most *limit* s."""
    deadline = time.monotonic() + limit
    started = time.monotonic()
    while time.monotonic() < deadline:
        missing = sum(len(f.sent) - len(f.arrived.keys() | f.errors) for f in flows)
        if missing <= 0:
            return
        last = max([f.last_arrival for f in flows] + [started])
        if time.monotonic() - last > quiet:
            return
        await asyncio.sleep(0.05)


def kernel_seconds(pid: int) -> float:
    """System CPU time of *pid* so far (stime), every thread included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[12]) / os.sysconf("SC_CLK_TCK")


def close_all(peers: Any) -> None:
    for peer in peers:
        peer.close()


def core_busy(core: int) -> float:
    return load.core_busy(core)


# -- 1. CPU per delivered message


async def cpu_run(ctx: Context, label: str, nodes: int, cross: float, profile: bool = False) -> dict[str, Any]:
    """Pairs chat at --rate for --duration s; CPU of every server process per delivered message
    (*profile*: node1 runs under cProfile, its profile summarized; its CPU figures are cProfile's too)."""
    args = ctx.args
    pairs = args.pairs
    split = round(pairs * cross) if nodes > 1 else 0
    where: dict[int, int] = {}
    for p in range(pairs):
        if p < split:
            where[2 * p], where[2 * p + 1] = 0, 1
        else:
            where[2 * p] = where[2 * p + 1] = p % nodes
    pinned = args.layout == "pinned"
    cl = Cluster(ctx, label, nodes, backend="redis" if nodes > 1 else "local", core=SERVER_CORE if pinned else None)
    if profile:
        # node1 alone on the server core, so that the profiler sees its own time, not the others' it waits for
        cl.redis.core = LOAD_CORE
        for node in cl.nodes:
            node.core = SERVER_CORE if node is cl.nodes[0] else LOAD_CORE
        if not SPY.exists():
            cl.nodes[0].profile = cl.nodes[0].folder / "node1.prof"
    async with cl:
        ledger = Ledger()
        peers: dict[int, Peer] = {}
        failures: list[str] = []
        for index, node in enumerate(cl.nodes):
            got, failed = await log_in(node, [n for n, k in where.items() if k == index], 50, ledger, carbons=True)
            peers.update(got)
            failures += failed
        if failures:
            close_all(peers.values())
            return {"label": label, "error": f"{len(failures)} logins failed: {failures[:2]}"}
        senders = [(peers[n], f"u{n ^ 1}@{DOMAIN}/b".encode()) for n in sorted(peers)]
        pids = cl.pids()
        idle_before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        await asyncio.sleep(args.idle)
        idle = sum(cpu_seconds(pid) - idle_before[name] for name, pid in pids.items()) / args.idle
        warm = ledger.flow("w")
        await send(warm, senders, args.rate, args.warmup)
        await settled([warm], 1.0, 10)
        await asyncio.sleep(0.5)
        stats_before = cl.redis.commandstats()
        flow = ledger.flow("m")
        before = {name: cpu_seconds(pid) for name, pid in pids.items()}
        kernel_before = {name: kernel_seconds(pid) for name, pid in pids.items()}
        busy_before, started = core_busy(SERVER_CORE), time.monotonic()
        spy = None
        if profile and SPY.exists():
            raw = cl.nodes[0].folder / "node1.pyspy.txt"
            spy = await asyncio.create_subprocess_exec(
                "taskset", "-c", str(LOAD_CORE), str(SPY), "record", "--pid", str(cl.nodes[0].pid), "--rate", "100",
                "--duration", str(int(args.duration)), "--format", "raw", "--nolineno", "--idle", "--output",
                str(raw), stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        elif profile:
            os.kill(cl.nodes[0].pid, signal.SIGUSR1)
        achieved = await send(flow, senders, args.rate, args.duration)
        await settled([flow], args.drain, args.drain + 10)
        if spy is not None:
            await asyncio.wait_for(spy.wait(), 60)
        elif profile:
            os.kill(cl.nodes[0].pid, signal.SIGUSR2)
        elapsed = time.monotonic() - started
        used = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
        kernel = {name: kernel_seconds(pid) - kernel_before[name] for name, pid in pids.items()}
        others = max(0.0, core_busy(SERVER_CORE) - busy_before - sum(used.values()))
        stats = cl.redis.commandstats() - stats_before
        summary = flow.summary()
        close_all(peers.values())
        problems = cl.problems()
    delivered = summary["received"]
    node_cpu = sum(v for k, v in used.items() if k != "redis")
    result = {
        "label": label, "nodes": nodes, "cross_share": split / pairs if pairs else 0.0, "rate": args.rate,
        "achieved_rate": achieved, "seconds": round(elapsed, 2), **summary,
        "cpu_s": {k: round(v, 3) for k, v in used.items()},
        "kernel_cpu_s": {k: round(v, 3) for k, v in kernel.items()},
        "nodes_kernel_us_per_msg": round(sum(v for k, v in kernel.items() if k != "redis") * 1e6 / delivered, 1)
        if delivered else None,
        "nodes_cpu_us_per_msg": round(node_cpu * 1e6 / delivered, 1) if delivered else None,
        "redis_cpu_us_per_msg": round(used["redis"] * 1e6 / delivered, 1) if delivered else None,
        "cpu_us_per_msg": round((node_cpu + used["redis"]) * 1e6 / delivered, 1) if delivered else None,
        "server_core_share": round(sum(used.values()) / elapsed, 3),
        "others_on_server_core_share": round(others / elapsed, 3),
        "idle_cpu_share": round(idle, 4),
        "redis_calls_per_msg": round(sum(stats.values()) / delivered, 2) if delivered else None,
        "redis_commands": dict(stats.most_common()),
        "problems": problems,
    }
    if profile and delivered:
        share = sum(1 for k in where.values() if k == 0) / len(where)
        sampled = cl.nodes[0].folder / "node1.pyspy.txt"
        if SPY.exists():
            # py-spy sampled for --duration s: the messages sent then
            handled = len(flow.sent) * share * min(1.0, int(args.duration) / args.duration)
            result["profile"] = spy_summary(sampled, handled)
        elif cl.nodes[0].profile is not None:
            result["profile"] = profile_summary(cl.nodes[0].profile, delivered * share)
    log(f"cpu {label}: {delivered}/{summary['sent']} delivered at {achieved} msg/s, p99 {summary['p99_ms']} ms; "
        f"{result['cpu_us_per_msg']} µs CPU per message (nodes {result['nodes_cpu_us_per_msg']}, redis "
        f"{result['redis_cpu_us_per_msg']}); server core {result['server_core_share']:.0%}, others "
        f"{result['others_on_server_core_share']:.0%}")
    return result


def _where(filename: str) -> str:
    """A profile entry's file, short: chatgate/..., twisted/..., or the stdlib module's name."""
    if filename.startswith("~") or filename.startswith("<"):
        return "(built-in)"
    for marker in ("/site-packages/", str(REPO) + "/", "/lib/python3."):
        if marker in filename:
            rest = filename.split(marker, 1)[1]
            return rest.split("/", 1)[1] if marker == "/lib/python3." else rest
    return filename


def profiled(out: str, command: list[str]) -> None:
    """Run twistd (*command*) with a cProfile of the main thread's CPU time (not wall time: the
    processes share cores), on from SIGUSR1 to SIGUSR2, written to *out* when the process ends.
    (``python -m cProfile`` around twistd writes nothing: twistd ends by raising the signal that
    stopped it again; ``twistd --profiler=cprofile`` measures wall time.)"""
    import cProfile

    from twisted.application import app
    from twisted.scripts import twistd

    profiler = cProfile.Profile(time.thread_time)
    signal.signal(signal.SIGUSR1, lambda *_: profiler.enable())
    signal.signal(signal.SIGUSR2, lambda *_: profiler.disable())
    exit_with_signal = app._exitWithSignal

    def dump_then_exit(sig: int) -> None:
        profiler.disable()
        profiler.dump_stats(out)
        exit_with_signal(sig)

    app._exitWithSignal = dump_then_exit
    sys.argv = command
    try:
        twistd.run()
    finally:
        profiler.disable()
        profiler.dump_stats(out)


def spy_summary(path: Path, messages: float, count: int = 20) -> dict[str, Any]:
    """py-spy's samples of a node (raw, 100 Hz, idle ones included and told apart as bench/run.py
    does) as µs of CPU per message it handled: by function (own time, and inclusive) and by file."""
    from run import PLUMBING, WAITS, _frame

    if not path.exists():
        return {"error": f"py-spy wrote nothing ({path.name})"}
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    busy = 0
    for line in path.read_text().splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        frames = [_frame(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames or frames[-1].startswith(WAITS):
            continue
        samples = int(number)
        busy += samples
        own[frames[-1]] += samples
        by_file[frames[-1].rpartition("(")[2].rstrip(")") or "?"] += samples
        for frame in set(frames):
            if not PLUMBING.search(frame):
                inclusive[frame] += samples
    scale = 10_000 / messages  # a sample is 10 ms of one thread's time
    return {"tool": "py-spy", "messages": round(messages), "samples": busy,
            "total_us_per_msg": round(busy * scale, 1),
            "functions": [(k, round(v * scale, 2)) for k, v in own.most_common(count)],
            "inclusive": [(k, round(v * scale, 2)) for k, v in inclusive.most_common(count)],
            "files": [(k, round(v * scale, 2)) for k, v in by_file.most_common(count)],
            "all_files": {k: round(v * scale, 2) for k, v in by_file.items()},
            "all_inclusive": {k: round(v * scale, 2) for k, v in inclusive.items() if v * scale >= 1}}


def profile_summary(path: Path, messages: float, count: int = 20) -> dict[str, Any]:
    """A node's profile (see :func:`profiled`: the reactor thread's CPU time over the measured
    window) as µs per message it handled: by function (own time) and by file."""
    import pstats

    if not path.exists():
        return {"error": f"no profile written ({path.name})"}
    stats = pstats.Stats(str(path)).stats  # type: ignore[attr-defined]
    by_function: Counter[str] = Counter()
    by_file: Counter[str] = Counter()
    total = 0.0
    for (filename, line, name), (_cc, _nc, tottime, _ct, _callers) in stats.items():
        where = _where(filename)
        by_function[f"{name} ({where}:{line})" if line else f"{name} {where}"] += tottime
        by_file[where] += tottime
        total += tottime
    scale = 1e6 / messages
    return {"messages": round(messages), "total_us_per_msg": round(total * scale, 1),
            "functions": [(k, round(v * scale, 2)) for k, v in by_function.most_common(count)],
            "files": [(k, round(v * scale, 2)) for k, v in by_file.most_common(count)],
            "all_files": {k: round(v * scale, 2) for k, v in by_file.items() if v * scale >= 0.05}}


def project(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """From the per-message costs (mean of the runs of each kind), the ratio to one node and the
    capacity of 4 and 16 nodes on one Redis.

    A cluster node's cost per message is taken as linear in the share f of the messages that cross
    nodes, between the points measured with two nodes: f = 0 (when measured; else one node's),
    0.5 and 1. With N nodes and users spread evenly, f = 1 - 1/N. One node's capacity is S2's
    (msg/s per core of its process) scaled by its cost at f against the baseline's; N nodes give
    N times that, unless Redis, at 100 % of one core, saturates first at 1 / (its CPU per message
    at f)."""

    def mean(kind: str, key: str) -> float | None:
        values = [r[key] for r in runs if r.get("kind") == kind and r.get(key)]
        return statistics.fmean(values) if values else None

    base_n, base_r = mean("one node", "nodes_cpu_us_per_msg"), mean("one node", "redis_cpu_us_per_msg")
    half_n, half_r = mean("2 nodes, 50 % cross", "nodes_cpu_us_per_msg"), mean("2 nodes, 50 % cross",
                                                                              "redis_cpu_us_per_msg")
    full_n, full_r = mean("2 nodes, 100 % cross", "nodes_cpu_us_per_msg"), mean("2 nodes, 100 % cross",
                                                                               "redis_cpu_us_per_msg")
    zero_n, zero_r = mean("2 nodes, 0 % cross", "nodes_cpu_us_per_msg"), mean("2 nodes, 0 % cross",
                                                                             "redis_cpu_us_per_msg")
    if None in (base_n, base_r, half_n, half_r):
        return {}
    assert base_n and base_r and half_n and half_r

    def at(f: float, zero: float, half: float, full: float | None) -> float:
        if full is None or f <= 0.5:
            return zero + (half - zero) * f / 0.5
        return half + (full - half) * (f - 0.5) / 0.5

    # nodes of a cluster (2 or more) start from two nodes without crossing when it was measured
    cluster_n, cluster_r = zero_n or base_n, zero_r or base_r

    per_core = S2_RATE / S2_CPU
    out: dict[str, Any] = {
        "cpu_ratio_50": round((half_n + half_r) / (base_n + base_r), 3),
        "nodes_cpu_ratio_50": round(half_n / base_n, 3),
        "cpu_ratio_100": round((full_n + full_r) / (base_n + base_r), 3) if full_n and full_r else None,
        "cpu_ratio_0": round((zero_n + zero_r) / (base_n + base_r), 3) if zero_n and zero_r else None,
        "one_node_per_core": round(per_core),
        "redis_one_node_msgs_per_s": round(1e6 / base_r),
        "redis_saturates_50": round(1e6 / half_r),
        "redis_saturates_100": round(1e6 / full_r) if full_r else None,
        "nodes": {},
    }
    for count in (1, 2, 4, 16):
        f = 1 - 1 / count
        if count == 1:
            node_us, redis_us = base_n, base_r
        else:
            node_us, redis_us = at(f, cluster_n, half_n, full_n), at(f, cluster_r, half_r, full_r)
        nodes_cap = count * per_core * base_n / node_us
        redis_cap = 1e6 / redis_us
        capacity = min(nodes_cap, redis_cap)
        out["nodes"][str(count)] = {
            "cross_share": round(f, 3), "node_cpu_us_per_msg": round(node_us, 1),
            "redis_cpu_us_per_msg": round(redis_us, 1), "nodes_capacity": round(nodes_cap),
            "redis_saturates_at": round(redis_cap), "capacity": round(capacity),
            # were the archive and offline messages on a Redis of their own: the bus's share alone
            "bus_redis_saturates_at": round(1e6 / (redis_us - base_r)) if redis_us > base_r else None,
            "share_of_linear": round(capacity / (count * per_core), 3),
            "bound_by": "redis" if redis_cap < nodes_cap else "nodes",
        }
    return out


async def measure_cpu(ctx: Context) -> dict[str, Any]:
    runs = []
    kinds = [("one node", 1, 0.0), ("2 nodes, 50 % cross", 2, 0.5)]
    if not ctx.args.quick or ctx.args.cpu_rounds > 1:
        kinds += [("2 nodes, 0 % cross", 2, 0.0), ("2 nodes, 100 % cross", 2, 1.0)]
    if ctx.args.layout == "pinned":
        os.sched_setaffinity(0, {LOAD_CORE})
    try:
        for round_ in range(ctx.args.cpu_rounds):
            for kind, nodes, cross in kinds if round_ % 2 == 0 else kinds[::-1]:
                log(f"cpu: {kind}, {ctx.args.rate:g} msg/s for {ctx.args.duration:g} s (round {round_ + 1})")
                run = await cpu_run(ctx, f"cpu-{nodes}-{int(cross * 100)}-{round_ + 1}", nodes, cross)
                run["kind"], run["round"] = kind, round_ + 1
                runs.append(run)
        profiles = {}
        os.sched_setaffinity(0, {LOAD_CORE})
        if ctx.args.profile:
            for kind, nodes, cross in kinds[:2]:  # one node, and a node of two with 50 % cross
                log(f"cpu: {kind} again, node1 under cProfile (not counted)")
                run = await cpu_run(ctx, f"profile-{nodes}-{int(cross * 100)}", nodes, cross, profile=True)
                profiles[kind] = run.get("profile") or {"error": run.get("error", "no profile")}
    finally:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))
    return {"rate": ctx.args.rate, "duration": ctx.args.duration, "pairs": ctx.args.pairs, "runs": runs,
            "projection": project(runs), "profiles": profiles}


# -- 2. presence fan-out


async def measure_presence(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    users, nodes_count = args.presence_users, 3
    async with Cluster(ctx, "presence", nodes_count) as cl:
        semaphore = asyncio.Semaphore(args.concurrency)
        clients: dict[int, PresenceCounter] = {}
        failures: list[str] = []

        async def one(n: int) -> None:
            async with semaphore:
                try:
                    client = await load.c2s_login(cl.nodes[n % nodes_count].endpoint(), n, "b",
                                                  protocol=PresenceCounter)
                except (load.LoginFailed, OSError, TimeoutError) as e:
                    failures.append(f"u{n}: {e}"[:300])
                    return
                assert isinstance(client, PresenceCounter)
                client.available()
                clients[n] = client

        log(f"presence: {users} users log in with presence over {nodes_count} nodes")
        started = time.monotonic()
        try:
            await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(users))), args.timeout)
        except TimeoutError:
            failures.append(f"stopped after {args.timeout:.0f} s")
        logins_s = time.monotonic() - started
        expected = len(clients) ** 2
        deadline = time.monotonic() + args.timeout
        seen, last_change = -1, time.monotonic()
        while time.monotonic() < deadline:
            count = sum(c.presences for c in clients.values())
            if count != seen:
                seen, last_change = count, time.monotonic()
            elif time.monotonic() - last_change > (1.0 if count >= expected else 15.0):
                break
            await asyncio.sleep(0.1)
        everyone_s = last_change - started
        log(f"presence: {len(clients)} logged in in {logins_s:.1f} s, {seen:,}/{expected:,} presence stanzas "
            f"after {everyone_s:.1f} s")
        changer = clients.get(0)
        if changer is None or seen < expected:
            close_all(clients.values())
            return {"users": users, "logged_in": len(clients), "failures": failures[:3],
                    "presences": seen, "expected": expected,
                    "error": "not everyone had everyone's presence; no changes measured"}
        async with Monitor(cl.redis.port) as monitor:
            await asyncio.sleep(0.5)
            idle_start, stats_idle = time.time(), cl.redis.commandstats()
            await asyncio.sleep(args.presence_idle)
            idle_end, stats_busy = time.time(), cl.redis.commandstats()
            delays, incomplete = [], 0
            for k in range(args.changes):
                before = sum(c.presences for c in clients.values())
                sent = time.monotonic()
                changer.write(PRESENCE_CHANGE[k % 2] % k)
                limit = sent + 5
                while sum(c.presences for c in clients.values()) < before + len(clients) and time.monotonic() < limit:
                    await asyncio.sleep(0.002)
                delays.append(time.monotonic() - sent)
                if time.monotonic() >= limit:
                    incomplete += 1
                    if incomplete >= 2:
                        break  # not everyone gets the changes: the figures say so
                await asyncio.sleep(0.05)
            changes = k + 1
            got = sum(c.presences for c in clients.values()) - seen
            busy_end, stats_end = time.time(), cl.redis.commandstats()
        idle_s, busy_s = idle_end - idle_start, busy_end - idle_end
        idle_stats, busy_stats = stats_busy - stats_idle, stats_end - stats_busy
        registry = cl.redis.call("HLEN", f"{PREFIX}:cluster:sessions:{DOMAIN}")
        entry = json.loads(cl.redis.call("HGET", f"{PREFIX}:cluster:sessions:{DOMAIN}", f"u0@{DOMAIN}/b") or "{}")
        idle_clients, idle_scripts = monitor.between(idle_start, idle_end)
        busy_clients, busy_scripts = monitor.between(idle_end, busy_end)
        close_all(clients.values())
        await asyncio.sleep(0.5)
        problems = cl.problems()

    def per_change(busy: Counter[str], idle: Counter[str]) -> dict[str, float]:
        names = set(busy) | set(idle)
        net = {n: (busy[n] - idle[n] * busy_s / idle_s) / changes for n in names if n not in OWN}
        return {n: round(v, 2) for n, v in sorted(net.items(), key=lambda kv: -kv[1]) if abs(v) >= 0.05}

    stats_net = per_change(busy_stats, idle_stats)
    clients_net = per_change(busy_clients, idle_clients)
    scripts_net = per_change(busy_scripts, idle_scripts)
    result = {
        "users": users, "nodes": nodes_count, "logged_in": len(clients), "failures": failures[:3],
        "logins_s": round(logins_s, 1), "everyone_s": round(everyone_s, 1), "presences": seen,
        "expected": expected, "changes": changes, "change_delivered": got,
        "change_expected": changes * len(clients), "changes_incomplete": incomplete,
        "registry_size": registry, "changer_registry_node": entry.get("n"),
        "change_to_all_ms": {"p50": round(statistics.median(delays) * 1000, 1),
                             "max": round(max(delays) * 1000, 1)},
        "idle_window_s": round(idle_s, 2), "change_window_s": round(busy_s, 2),
        "commandstats_per_change": stats_net,
        "commandstats_calls_per_change": round(sum(stats_net.values()), 2),
        "commandstats_raw": {"idle": dict(idle_stats), "changes": dict(busy_stats)},
        "monitor_client_per_change": clients_net,
        "monitor_script_per_change": scripts_net,
        "monitor_client_calls_per_change": round(sum(clients_net.values()), 2),
        "monitor_script_calls_per_change": round(sum(scripts_net.values()), 2),
        "problems": problems,
    }
    log(f"presence: {changes} changes, {got}/{result['change_expected']} delivered; per change "
        f"{result['commandstats_calls_per_change']} calls in commandstats {stats_net}; MONITOR: clients "
        f"{clients_net}, scripts {scripts_net}")
    return result


# -- 3. sessions


async def measure_sessions(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    total, nodes_count = args.sessions, 4
    per_node = math.ceil(total / nodes_count)
    limit = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    if per_node > limit - 200:
        raise SystemExit(f"--sessions {total}: {per_node} per worker process is over the open-files limit {limit}")
    # a fifth node, the observer, holds no session while the others log in; then one user logs in
    # there, and it mirrors every session of the domain: what a mirror costs
    async with Cluster(ctx, "sessions", nodes_count + 1) as cl:
        observer = cl.nodes.pop()
        await asyncio.sleep(1.0)
        rss_before = {n.name: rss_kib(n.pid) for n in cl.nodes}
        redis_before = int(cl.redis.info("memory")["used_memory"])
        log(f"sessions: {total} c2s sessions over {nodes_count} nodes, one worker process per node")
        started = time.monotonic()
        workers = []
        for index, node in enumerate(cl.nodes):
            workers.append(await asyncio.create_subprocess_exec(
                sys.executable, str(Path(__file__).resolve()), "_worker", "--port", str(node.c2s_port),
                "--first", str(index), "--stop", str(total), "--step", str(nodes_count),
                "--concurrency", str(max(1, args.concurrency // nodes_count)), "--timeout", str(args.timeout),
                stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE))

        async def first_line(worker: asyncio.subprocess.Process) -> dict[str, Any]:
            assert worker.stdout is not None
            line = await worker.stdout.readline()
            return json.loads(line) if line else {"held": 0, "failures": -1, "examples": ["worker died"]}

        try:
            held = await asyncio.wait_for(asyncio.gather(*(first_line(w) for w in workers)), args.timeout + 60)
        except TimeoutError:
            held = [{"held": 0, "failures": -1, "examples": ["no answer from the worker"]} for _ in workers]
        logins_s = time.monotonic() - started
        # the nodes finish what the logins started (other nodes' mirrors of each session)
        for _ in range(60):
            before = sum(cpu_seconds(n.pid) for n in cl.nodes)
            await asyncio.sleep(0.5)
            if sum(cpu_seconds(n.pid) for n in cl.nodes) - before < 0.05:
                break
        rss_after = {n.name: rss_kib(n.pid) for n in cl.nodes}
        redis_after = int(cl.redis.info("memory")["used_memory"])
        registered = cl.redis.call("HLEN", f"{PREFIX}:cluster:sessions:{DOMAIN}")
        observer_before = rss_kib(observer.pid)
        watching, failed = await log_in(observer, [total], 1)
        for _ in range(60):
            before = cpu_seconds(observer.pid)
            await asyncio.sleep(0.5)
            if cpu_seconds(observer.pid) - before < 0.02:
                break
        observer_after = rss_kib(observer.pid)
        close_all(watching.values())
        cl.nodes.append(observer)
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write(b"close\n")
        closed = []
        for worker in workers:
            assert worker.stdout is not None
            try:
                line = await asyncio.wait_for(worker.stdout.readline(), 60)
                closed.append(json.loads(line) if line else {})
                await asyncio.wait_for(worker.wait(), 30)
            except TimeoutError:
                worker.kill()
                closed.append({})
        problems = cl.problems()
    sessions = sum(h.get("held", 0) for h in held)
    delta = sum(rss_after[k] - rss_before[k] for k in rss_after)
    result = {
        "asked": total, "nodes": nodes_count, "sessions": sessions, "registered_in_redis": registered,
        "logins_s": round(logins_s, 1), "logins_per_s": round(sessions / logins_s, 1) if logins_s else None,
        "per_node": [{"node": n.name, "sessions": h.get("held", 0), "failures": h.get("failures"),
                      "login_s": h.get("login_s"), "rss_before_kib": rss_before[n.name],
                      "rss_after_kib": rss_after[n.name],
                      "still_open_at_close": c.get("alive_before_close")}
                     for n, h, c in zip(cl.nodes, held, closed, strict=False)],
        "failure_examples": [e for h in held for e in h.get("examples", [])][:3],
        "rss_delta_kib": delta,
        "kib_per_session": round(delta / sessions, 2) if sessions else None,
        "redis_bytes_per_session": round((redis_after - redis_before) / sessions) if sessions else None,
        "observer_rss_kib": [observer_before, observer_after], "observer_failures": failed,
        "kib_per_mirror": round((observer_after - observer_before) / registered, 2) if registered else None,
        "open_files_limit": limit,
        "problems": problems,
    }
    log(f"sessions: {sessions}/{total} held in {logins_s:.1f} s, {result['kib_per_session']} KiB per session "
        f"(nodes' RSS +{delta / 1024:.0f} MiB), Redis {result['redis_bytes_per_session']} B per session, "
        f"{registered} in the registry; per node {[h.get('held') for h in held]}; a node mirroring them all "
        f"grew {result['kib_per_mirror']} KiB per session")
    return result


async def worker(args: argparse.Namespace) -> None:
    """One load process of the sessions measurement: log in u<first>, u<first+step>, .. on one node,
    hold them until a line comes on stdin, close them."""
    raise_nofile()
    endpoint = SimpleNamespace(host="127.0.0.1", port=args.port, domain=DOMAIN, password=PASSWORD)
    semaphore = asyncio.Semaphore(args.concurrency)
    peers: list[load.C2S] = []
    failures: list[str] = []

    async def one(n: int) -> None:
        async with semaphore:
            try:
                peer = await load.c2s_login(endpoint, n, "b")
                peer.chatting = True  # pings answered, nothing kept
                peers.append(peer)
            except (load.LoginFailed, OSError, TimeoutError) as e:
                failures.append(f"u{n}: {e}"[:300])

    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(args.first, args.stop, args.step))),
                               args.timeout)
    except TimeoutError:
        failures.append(f"stopped after {args.timeout:.0f} s")
    print(json.dumps({"held": len(peers), "failures": len(failures), "examples": failures[:3],
                      "login_s": round(time.monotonic() - started, 1)}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    try:
        await asyncio.wait_for(reader.readline(), args.timeout)
    except TimeoutError:
        pass
    alive = sum(not p.lost for p in peers)
    close_all(peers)
    await asyncio.sleep(0.5)
    print(json.dumps({"closed": len(peers), "alive_before_close": alive}), flush=True)


# -- 4. failure


def unavailable_times(ledger: Ledger, victims: set[str], since: float) -> list[float]:
    """Seconds from *since* to each victim's first unavailable presence seen after it."""
    first: dict[str, float] = {}
    for at, sender, kind in ledger.presence:
        if at >= since and kind == "unavailable" and sender in victims and sender not in first:
            first[sender] = at - since
    return sorted(first.values())


async def measure_failure(ctx: Context) -> dict[str, Any]:
    args = ctx.args
    v = args.victims
    victims, senders, watcher = list(range(v)), list(range(v, 2 * v)), 2 * v
    locals_ = list(range(2 * v + 1, 2 * v + 1 + 2 * args.local_pairs))
    result: dict[str, Any] = {"victims": v, "rate": args.failure_rate, "heartbeat": args.heartbeat,
                              "dead_after": args.dead_after, "redis_down_s": args.redis_down}
    async with Cluster(ctx, "failure", 3, persist=True) as cl:
        node1, node2, node3 = cl.nodes
        ledger = Ledger()
        peers: dict[int, Peer] = {}
        failures: list[str] = []
        for node, numbers, presence, watching in ((node1, victims, True, False), (node2, senders, False, False),
                                                  (node2, locals_, False, False), (node3, [watcher], True, True)):
            got, failed = await log_in(node, numbers, 50, ledger, presence=presence, watching=watching)
            peers.update(got)
            failures += failed
        if failures:
            close_all(peers.values())
            return {**result, "error": f"{len(failures)} logins failed: {failures[:2]}"}
        names = {f"u{n}@{DOMAIN}" for n in victims}
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if {s for _, s, k in ledger.presence if k == "available"} >= names:
                break
            await asyncio.sleep(0.1)
        # a. kill -9 of node1
        flow = ledger.flow("k")
        pairs = [(peers[s], f"u{s - v}@{DOMAIN}".encode()) for s in senders]
        post = args.dead_after + args.heartbeat + 4
        log(f"failure: node1 holds {v} users; {args.failure_rate:g} msg/s to them from node2; kill -9 in "
            f"{args.before_kill:g} s, sending {post:g} s more")
        sending = asyncio.create_task(send(flow, pairs, args.failure_rate, args.before_kill + post))
        await asyncio.sleep(args.before_kill)
        killed_at, killed_us = time.monotonic(), load.now_us()
        node1.kill()
        live = {s for s in flow.arrived}
        await sending
        await asyncio.sleep(1.0)
        gone = unavailable_times(ledger, names, killed_at)
        received_live = len(flow.arrived)
        # the victims come back on node3: what was kept offline for them comes now
        for n in victims:
            peers.pop(n, None)
        back, failed = await log_in(node3, victims, 50, ledger, presence=True)
        peers.update(back)
        await settled([flow], 3.0, 30)
        detected = killed_at + (gone[-1] if gone else args.dead_after)
        detected_us = killed_us + int((detected - killed_at) * 1e6)
        result["kill"] = {
            "unavailable_seen": len(gone), "first_unavailable_s": round(gone[0], 2) if gone else None,
            "all_unavailable_s": round(gone[-1], 2) if len(gone) == v else None,
            "received_before_relogin": received_live, "received_while_node1_lived": len(live),
            "relogin_failures": failed[:3], **flow.summary(),
            "sent_before_kill": flow.summary((0, killed_us)),
            "sent_kill_to_detection": flow.summary((killed_us, detected_us)),
            "sent_after_detection": flow.summary((detected_us, 1 << 62)),
        }
        log(f"failure: unavailable seen for {len(gone)}/{v} after {result['kill']['first_unavailable_s']}.."
            f"{result['kill']['all_unavailable_s']} s; messages {flow.summary()}")
        # b. Redis stopped and started again, node2 -> node3 (the victims there now) and within node2
        cross, within = ledger.flow("r"), ledger.flow("s")
        pairs = [(peers[s], f"u{s - v}@{DOMAIN}".encode()) for s in senders if s - v in peers]
        local_pairs = [(peers[n], f"u{locals_[i ^ 1]}@{DOMAIN}/b".encode()) for i, n in enumerate(locals_)]
        duration = args.before_kill + args.redis_down + args.after_redis
        log(f"failure: Redis stopped for {args.redis_down:g} s while node2 sends to node3 "
            f"({args.failure_rate:g} msg/s) and within itself ({args.local_rate:g} msg/s)")
        tasks = [asyncio.create_task(send(cross, pairs, args.failure_rate, duration)),
                 asyncio.create_task(send(within, local_pairs, args.local_rate, duration))]
        await asyncio.sleep(args.before_kill)
        down_us = load.now_us()
        cl.redis.stop()
        stopped_us = load.now_us()
        await asyncio.sleep(args.redis_down)
        cl.redis.start()
        up_us = load.now_us()
        await asyncio.gather(*tasks)
        await settled([cross, within], 3.0, 30)
        result["redis"] = {
            "stop_s": round((stopped_us - down_us) / 1e6, 2), "down_s": round((up_us - down_us) / 1e6, 2),
            "cross_node": cross.summary(), "cross_sent_while_down": cross.summary((down_us, up_us)),
            "same_node": within.summary(), "same_node_sent_while_down": within.summary((down_us, up_us)),
        }
        log(f"failure: Redis restart: cross-node {cross.summary()}, same node {within.summary()}")
        close_all(peers.values())
        await asyncio.sleep(0.5)
        result["problems"] = cl.problems()
    return result


# -- the run


class Context:
    def __init__(self, args: argparse.Namespace, run: Path) -> None:
        self.args = args
        self.run = run
        self.store = run / "directory.sqlite"


def provision(ctx: Context, users: int) -> float:
    """The domain and users u0..u<users-1> in the shared SQLite directory (chatgate-admin user import)."""
    from chatgate.tls import ensure_certificate

    started = time.monotonic()
    tls = ctx.run / "tls"
    ensure_certificate(str(tls / "cert.pem"), str(tls / "key.pem"), [DOMAIN])
    config = ctx.run / "admin.ini"
    config.write_text(f"[storage]\nbackend = sqlite\npath = {ctx.store}\n[auth]\nscram_iterations = {ITERATIONS}\n"
                      "[demo]\ncreate = false\n")

    def admin(*args: str) -> None:
        done = subprocess.run([str(VENV_BIN / "chatgate-admin"), "-c", str(config), *args], capture_output=True,
                              text=True, timeout=3600, cwd=ctx.run)
        if done.returncode != 0:
            raise RuntimeError(f"chatgate-admin {' '.join(args)}: {done.stderr.strip()}")

    admin("domain", "add", DOMAIN)
    rows = ctx.run / "users.csv"
    rows.write_text("jid,name,password\n" + "".join(f"u{n}@{DOMAIN},User {n},{PASSWORD}\n" for n in range(users)))
    admin("user", "import", str(rows))
    rows.unlink()
    return round(time.monotonic() - started, 1)


def machine_tree() -> str:
    """The commit of the tree under test (nodes import chatgate/ from it when they start)."""
    git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, cwd=REPO).stdout
    dirty = subprocess.run(["git", "status", "--porcelain", "--", "chatgate"], capture_output=True, text=True,
                           cwd=REPO).stdout.strip()
    return git.strip() + (" + uncommitted changes under chatgate/" if dirty else "")


def machine() -> dict[str, Any]:
    model = ""
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                if line.startswith("MemTotal:")), 0)
    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "?"
    return {"nproc": os.cpu_count(), "cpu_model": model, "memory_gib": round(mem / 1024 / 1024),
            "debian": debian, "kernel": platform.release(), "python": platform.python_version(),
            "chatgate_tree": machine_tree(),
            "redis": Redis(Path(tempfile.gettempdir())).version(),
            "open_files_limit": resource.getrlimit(resource.RLIMIT_NOFILE)[1]}


async def bench(args: argparse.Namespace, run: Path) -> dict[str, Any]:
    ctx = Context(args, run)
    needs = {"cpu": 2 * args.pairs, "presence": args.presence_users, "sessions": args.sessions + 1,
             "failure": 2 * args.victims + 1 + 2 * args.local_pairs}
    users = max(needs[name] for name in args.only)
    log(f"provisioning {users} users in {ctx.store}")
    results: dict[str, Any] = {"users_provisioned": users, "provision_s": provision(ctx, users)}
    log(f"provisioned in {results['provision_s']} s")
    steps = {"cpu": measure_cpu, "presence": measure_presence, "sessions": measure_sessions,
             "failure": measure_failure}
    for name in args.only:
        started = time.monotonic()
        tree = machine_tree()
        try:
            results[name] = await steps[name](ctx)
            results[name]["chatgate_tree"] = tree
        except Exception as e:  # one measurement failing is a result; the others still run
            log(f"{name} failed: {type(e).__name__}: {e}")
            results[name] = {"error": f"{type(e).__name__}: {e}"[:2000]}
        results.setdefault("seconds", {})[name] = round(time.monotonic() - started)
    return results


# -- the report


def _n(value: Any, digits: int = 1) -> str:
    if value is None:
        return "–"
    if isinstance(value, int | float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:,.{digits}f}" if isinstance(value, float) else f"{value:,}"


def _verdict(ok: bool | None, missed: str = "") -> str:
    return "–" if ok is None else ("met" if ok else f"**missed**{': ' + missed if missed else ''}")


def report(results: dict[str, Any]) -> str:
    m, a = results["machine"], results["args"]
    cpu, pres, ses, fail = (results.get(k) or {} for k in ("cpu", "presence", "sessions", "failure"))
    proj = project(cpu["runs"]) if cpu.get("runs") else {}  # again: the rule may be newer than the figures
    goals = ["| figure | goal | measured | |", "|---|---|---|---|"]
    if proj:
        ratio = proj["cpu_ratio_50"]
        goals.append(f"| CPU per delivered message, 2 nodes with 50 % cross-node ÷ one node (nodes + redis-server) "
                     f"| ≤ 1.3× | {ratio:.2f}× (nodes alone {proj['nodes_cpu_ratio_50']:.2f}×) | "
                     f"{_verdict(ratio <= 1.3, f'{(ratio / 1.3 - 1) * 100:.0f} % over')} |")
        if proj.get("cpu_ratio_0"):
            goals.append(f"| … two nodes, no message crossing / every message crossing ÷ one node | – | "
                         f"{proj['cpu_ratio_0']:.2f}× / {proj['cpu_ratio_100']:.2f}× | |")
        four = proj["nodes"]["4"]
        goals.append(f"| projected capacity of 4 nodes, one Redis ÷ 4× one node | ≥ 85 % | "
                     f"{four['share_of_linear'] * 100:.0f} % ({_n(four['capacity'])} msg/s, bound by "
                     f"{four['bound_by']}) | {_verdict(four['share_of_linear'] >= 0.85)} |")
        sixteen = proj["nodes"]["16"]
        goals.append(f"| projected capacity of 16 nodes, one Redis | – | {_n(sixteen['capacity'])} msg/s = "
                     f"{sixteen['share_of_linear'] * 100:.0f} % of 16× one node (bound by {sixteen['bound_by']}) | |")
        goals.append(f"| one Redis saturates (100 % of a core) at, two nodes with 50 % / 100 % cross-node | – | "
                     f"{_n(proj['redis_saturates_50'])} / {_n(proj['redis_saturates_100'])} "
                     f"msg/s (one node's archive alone: {_n(proj['redis_one_node_msgs_per_s'])}) | |")
    if pres.get("commandstats_calls_per_change") is not None:
        calls = pres["commandstats_calls_per_change"]
        goals.append(f"| Redis commands per presence change, {pres['users']:,} users over {pres['nodes']} nodes "
                     f"(`INFO commandstats`, script's own commands included) | ≤ {pres['nodes']} | {calls:.1f} "
                     f"(sent by nodes: {pres['monitor_client_calls_per_change']:.1f}, run inside the script: "
                     f"{pres['monitor_script_calls_per_change']:.1f}) | {_verdict(calls <= pres['nodes'])} |")
    elif pres:
        goals.append(f"| Redis commands per presence change | ≤ 3 | error: {pres.get('error')} | |")
    if ses.get("sessions") is not None:
        goals.append(f"| c2s sessions held over {ses['nodes']} nodes | 40,000 | {ses['sessions']:,} of "
                     f"{ses['asked']:,} asked | {_verdict(ses['sessions'] >= 40000)} |")
        kib = ses["kib_per_session"]
        goals.append(f"| memory per session (nodes' RSS) | ≤ 30 KiB | {_n(kib, 1)} KiB | "
                     f"{_verdict(kib is not None and kib <= 30, f'{kib - 30:.1f} KiB over' if kib else '')} |")
    kill, red = fail.get("kill") or {}, fail.get("redis") or {}
    if kill:
        last, limit = kill["all_unavailable_s"], fail["dead_after"]
        late = f"by {last - limit:.2f} s" if last else "not all seen"
        goals.append(f"| `kill -9` of a node: its users' unavailable presence at a watcher on another node "
                     f"(heartbeat {fail['heartbeat']:g} s, dead_after {limit:g} s) | within "
                     f"dead_after | first {_n(kill['first_unavailable_s'], 2)} s, all {kill['unavailable_seen']} "
                     f"by {_n(last, 2)} s | "
                     f"{_verdict(last is not None and last <= limit, late)} |")
        goals.append(f"| `kill -9`: messages lost (sent − received − errors) | 0 | {kill['lost']} of "
                     f"{kill['sent']:,} ({kill['errors']} errors, {kill['duplicates']} duplicates) | "
                     f"{_verdict(kill['lost'] == 0)} |")
    if red:
        c, s = red["cross_node"], red["same_node"]
        goals.append(f"| Redis restart ({red['down_s']:g} s down): cross-node messages lost | 0 | {c['lost']} of "
                     f"{c['sent']:,} ({c['errors']} errors, {c['delayed_over_1s']} delayed over 1 s, max "
                     f"{_n(c['max_ms'])} ms) | {_verdict(c['lost'] == 0)} |")
        goals.append(f"| Redis restart: same-node messages lost | 0 | {s['lost']} of {s['sent']:,} "
                     f"({s['errors']} errors, {s['delayed_over_1s']} delayed over 1 s) | {_verdict(s['lost'] == 0)} |")
    if fail.get("error"):
        goals.append(f"| failure | – | error: {fail['error']} | |")
    goals.append("| Sentinel failover | 0 lost | not measured by this script | |")

    trees = {k: (results.get(k) or {}).get("chatgate_tree") for k in ("cpu", "presence", "sessions", "failure")}
    moved = {k: v for k, v in trees.items() if v and v != m["chatgate_tree"]}
    tree_note = (" (the tree moved during the run: " + ", ".join(f"{k} started at {v}" for k, v in moved.items())
                 + ")") if moved else ""
    parts = [SECTION, "", f"Script: `bench/cluster.py`. Run on {results['date']} ({results['seconds_total']} s "
             f"in all, {results['users_provisioned']:,} users provisioned in {results['provision_s']} s):", "",
             f"    {results['command']}", "",
             f"Machine: {m['nproc']} cores ({m['cpu_model']}), {m['memory_gib']} GiB, Debian {m['debian']}, Linux "
             f"{m['kernel']}, CPython {m['python']}, redis-server {m['redis']}; chatgate at {m['chatgate_tree']}"
             f"{tree_note}; "
             f"open files limit {m['open_files_limit']:,} per process (hard). Every node on one SQLite directory "
             "file, archive and offline messages on the run's own redis-server (no persistence, except the "
             "failure measurement's: `appendonly yes`), everything on 127.0.0.1, TLS off, SCRAM-SHA-1 4096, no "
             "rate limits.", "", "\n".join(goals), ""]
    if cpu.get("runs"):
        parts += [_cpu_table(cpu, a), ""]
    if proj:
        parts += [_projection_table(proj), ""]
    if cpu.get("profiles"):
        parts += [_profile_text(cpu["profiles"]), ""]
    if pres.get("commandstats_per_change") is not None:
        parts += [_presence_text(pres), ""]
    if ses.get("per_node"):
        parts += [_sessions_text(ses), ""]
    if kill or red:
        parts += [_failure_text(fail), ""]
    problems = _problems_text(results)
    if problems:
        parts += [problems, ""]
    return "\n".join(parts)


def _cpu_table(cpu: dict[str, Any], a: dict[str, Any]) -> str:
    lines = [f"CPU per delivered message: {cpu['pairs']} pairs (each user to its partner's full JID, carbons on, "
             f"one message every {2 * cpu['pairs'] / cpu['rate']:.2f} s per user) at {cpu['rate']:,.0f} msg/s for "
             f"{cpu['duration']:g} s; every server process (nodes and redis-server) pinned to core 0, the load "
             "to core 1. CPU from /proc/<pid>/stat, first message sent to last received; "
             "\"others\" is what other processes took on core 0 meanwhile.", "",
             "| run | delivered | p50 / p99 ms | nodes µs/msg (of it kernel) | redis µs/msg | total µs/msg | "
             "Redis calls/msg | core 0: ours / others | idle CPU |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in cpu["runs"]:
        if r.get("error"):
            lines.append(f"| {r['kind']} (round {r['round']}) | error: {r['error']} | | | | | | | |")
            continue
        lines.append(f"| {r['kind']} (round {r['round']}) | {r['received']:,}/{r['sent']:,} | {r['p50_ms']} / "
                     f"{r['p99_ms']} | {r['nodes_cpu_us_per_msg']} ({r.get('nodes_kernel_us_per_msg')}) | "
                     f"{r['redis_cpu_us_per_msg']} | "
                     f"{r['cpu_us_per_msg']} | {r['redis_calls_per_msg']} | {r['server_core_share'] * 100:.0f} % / "
                     f"{r['others_on_server_core_share'] * 100:.0f} % | {r['idle_cpu_share'] * 100:.1f} % |")
    return "\n".join(lines)


def _projection_table(proj: dict[str, Any]) -> str:
    lines = [f"Projection (`project()` in the script): one node's capacity is S2's, {S2_RATE:,.0f} msg/s at "
             f"{S2_CPU:.0%} of a core = {proj['one_node_per_core']:,} msg/s per core (bench/RESULTS.md, Load: "
             "chatgate with the Redis archive), scaled by the node's cost per message at the cross-node share "
             "of N nodes (1 − 1/N, users spread evenly; costs interpolated between two nodes' measured 0, 50 and "
             "100 %); "
             "one Redis saturates at 1 / its CPU per message, at 100 % of one core (the archive's and offline "
             "messages' commands included: they share it; the last column takes one node's Redis CPU out, as if "
             "they had a Redis of their own). Costs measured at this run's rate, not at saturation (fewer "
             "messages per read and write than at full load).", "",
             "| nodes | cross-node share | node µs/msg | redis µs/msg | nodes' capacity | Redis saturates at | "
             "capacity | ÷ N× one node | a bus-only Redis would saturate at |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for count, p in proj["nodes"].items():
        lines.append(f"| {count} | {p['cross_share'] * 100:.0f} % | {p['node_cpu_us_per_msg']} | "
                     f"{p['redis_cpu_us_per_msg']} | {_n(p['nodes_capacity'])} | {_n(p['redis_saturates_at'])} | "
                     f"{_n(p['capacity'])} ({p['bound_by']}) | {p['share_of_linear'] * 100:.0f} % | "
                     f"{_n(p.get('bus_redis_saturates_at'))} |")
    return "\n".join(lines)


def _profile_text(profiles: dict[str, Any]) -> str:
    one, two = profiles.get("one node") or {}, profiles.get("2 nodes, 50 % cross") or {}
    if not one.get("files") or not two.get("files"):
        return f"Profile: {one.get('error') or two.get('error') or 'missing'}"
    a, b = one["all_files"], two["all_files"]
    grown = sorted(set(a) | set(b), key=lambda k: (-(b.get(k, 0) - a.get(k, 0)), k))[:15]
    how = ("py-spy on node1 (100 Hz, every thread, waits left out) over the measured window" if
           one.get("tool") == "py-spy" else "cProfile of node1's reactor thread, CPU time (`time.thread_time`), over "
           "the measured window, the profiler's overhead included")
    lines = [f"Where a node's time goes: {how}, in runs of their own at the same rate (not counted above), as µs "
             f"per message its users sent or received: one node {one['total_us_per_msg']} µs, a node of two with "
             f"50 % cross-node {two['total_us_per_msg']} µs. The files whose time grew most (own time):", "",
             "| file | one node, µs/msg | node of two, µs/msg | grew by |", "|---|---:|---:|---:|"]
    for k in grown:
        lines.append(f"| `{k}` | {a.get(k, 0):.1f} | {b.get(k, 0):.1f} | {b.get(k, 0) - a.get(k, 0):+.1f} |")
    lines += ["", "The node of two, functions by own time:", "", "| µs/msg | function |", "|---:|---|"]
    lines += [f"| {v:.1f} | `{k}` |" for k, v in two["functions"][:15]]
    if one.get("all_inclusive") and two.get("all_inclusive"):
        a, b = one["all_inclusive"], two["all_inclusive"]
        grown = sorted(set(a) | set(b), key=lambda k: (-(b.get(k, 0) - a.get(k, 0)), k))[:15]
        lines += ["", "Functions whose inclusive time grew most (time in them and what they call):", "",
                  "| function | one node, µs/msg | node of two, µs/msg | grew by |", "|---|---:|---:|---:|"]
        lines += [f"| `{k}` | {a.get(k, 0):.1f} | {b.get(k, 0):.1f} | {b.get(k, 0) - a.get(k, 0):+.1f} |"
                  for k in grown]
    return "\n".join(lines)


def _presence_text(p: dict[str, Any]) -> str:
    fmt = ", ".join
    return "\n".join([
        f"Presence fan-out: {p['logged_in']:,} users of one domain over {p['nodes']} nodes logged in with initial "
        f"presence in {p['logins_s']} s; everyone had everyone's ({p['presences']:,} presence stanzas) after "
        f"{p['everyone_s']} s. Then one user changed presence {p['changes']} times, each waited for at every "
        f"user ({p['change_delivered']:,} of {p['change_expected']:,} delivered; to all of them in "
        f"{p['change_to_all_ms']['p50']} ms median, {p['change_to_all_ms']['max']} ms at most; the Redis "
        f"session registry held {p['registry_size']:,} entries for the {p['logged_in']:,} sessions). Per change, "
        f"net of the idle cluster's own traffic over {p['idle_window_s']} s just before (heartbeats, blocked "
        "reads timing out):", "",
        f"- `INFO commandstats`: {p['commandstats_calls_per_change']} calls: "
        f"{fmt(f'{k} {v:g}' for k, v in p['commandstats_per_change'].items())};",
        f"- `MONITOR`, sent by the nodes: {p['monitor_client_calls_per_change']}: "
        f"{fmt(f'{k} {v:g}' for k, v in p['monitor_client_per_change'].items())}; run by the script: "
        f"{p['monitor_script_calls_per_change']}: "
        f"{fmt(f'{k} {v:g}' for k, v in p['monitor_script_per_change'].items())}.",
    ])


def _sessions_text(s: dict[str, Any]) -> str:
    lines = [f"Sessions: {s['sessions']:,} of {s['asked']:,} c2s sessions (SCRAM, bound, no presence) logged in "
             f"over {s['nodes']} nodes from {s['nodes']} worker processes (one per node, users round robin, as a "
             f"load balancer spreads them) in {s['logins_s']} s ({_n(s['logins_per_s'])}/s); "
             f"{s['registered_in_redis']:,} in the Redis session registry; Redis memory "
             f"{_n(s['redis_bytes_per_session'])} B per session. Every node mirrors the other nodes' sessions of "
             "the domain (for routing and presence), so each node's RSS includes three remote sessions per local "
             f"one: a fifth node that held none while they logged in grew by {_n(s.get('kib_per_mirror'), 2)} KiB "
             "per session of the domain once one user of it logged in there (it then mirrors them all).", "",
             "| node | sessions | login time, s | RSS before → after, MiB | per local session, KiB |",
             "|---|---:|---:|---:|---:|"]
    for p in s["per_node"]:
        per = (p["rss_after_kib"] - p["rss_before_kib"]) / p["sessions"] if p["sessions"] else None
        lines.append(f"| {p['node']} | {p['sessions']:,} | {p['login_s']} | {p['rss_before_kib'] / 1024:.1f} → "
                     f"{p['rss_after_kib'] / 1024:.1f} | {_n(per, 1)} |")
    if s.get("failure_examples"):
        lines += ["", f"Login failures, e.g.: {s['failure_examples'][:2]}"]
    return "\n".join(lines)


def _failure_text(f: dict[str, Any]) -> str:
    k, r = f.get("kill") or {}, f.get("redis") or {}

    def row(label: str, x: dict[str, Any]) -> str:
        return (f"| {label} | {x['sent']:,} | {x['received']:,} | {x['errors']} | {x['lost']} | "
                f"{x['delayed_over_1s']:,} | {_n(x['p50_ms'], 1)} / {_n(x['max_ms'], 1)} |")

    lines = [f"Failure: 3 nodes, heartbeat {f['heartbeat']:g} s, dead_after {f['dead_after']:g} s. node1 held "
             f"{f['victims']} available users; {f['victims']} users on node2 sent them messages (bare JID) at "
             f"{f['rate']:g} msg/s; a watcher on node3. node1 was killed with SIGKILL, sending went on "
             "until after the others had declared it dead, then the victims logged in again on node3 (offline "
             "messages arrive then). Then redis-server (appendonly yes) was stopped (SIGTERM) and started again "
             f"on the same port {r.get('down_s', '?')} s later while node2's users sent to node3's (the victims "
             "again) and node2's own pairs chatted. lost = sent − received − errors; delayed = received more "
             "than 1 s after it was sent.", "",
             "| messages | sent | received | errors | lost | delayed | latency p50 / max, ms |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    if k:
        lines += [row("kill -9: all", k), row("… sent before the kill", k["sent_before_kill"]),
                  row("… sent between the kill and the last unavailable seen", k["sent_kill_to_detection"]),
                  row("… sent after it", k["sent_after_detection"])]
    if r:
        lines += [row("Redis restart: node2 → node3", r["cross_node"]),
                  row("… sent while Redis was down", r["cross_sent_while_down"]),
                  row("Redis restart: within node2", r["same_node"]),
                  row("… sent while Redis was down", r["same_node_sent_while_down"])]
    if k:
        lines += ["", f"After the kill: {k['received_while_node1_lived']} received before node1 died, "
                      f"{k['received_before_relogin']} before the victims logged in again, {k['duplicates']} "
                      "duplicates."]
    return "\n".join(lines)


def _problems_text(results: dict[str, Any]) -> str:
    lines = []
    for name in ("cpu", "presence", "sessions", "failure"):
        part = results.get(name) or {}
        sources = [part] + list(part.get("runs") or [])
        for source in sources:
            for node, found in (source.get("problems") or {}).items():
                label = f"{name}{' ' + source['label'] if source.get('label') else ''} {node}"
                for line in found["errors"][:3]:
                    lines.append(f"- {label} error: `{line}`")
                for line in found.get("cluster_events", [])[:3]:
                    lines.append(f"- {label}, while measuring: `{line}`")
                if found["warnings"]:
                    lines.append(f"- {label}: {len(found['warnings'])} warnings, e.g. `{found['warnings'][0]}`")
    return ("Node logs (errors, and warnings counted):\n\n" + "\n".join(lines)) if lines else \
        "Node logs: no errors or warnings."


def write_section(path: Path, section: str) -> None:
    """Replace (or add) this benchmark's section of RESULTS.md, keeping what follows NOTES in it."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n\n" + NOTES + "\n"
    else:
        following = re.search(r"^## ", text[start + len(SECTION):], re.M)
        end = start + len(SECTION) + following.start() if following else len(text)
        old = text[start:end]
        notes = old[old.find(NOTES):].rstrip("\n") if NOTES in old else NOTES
        text = text[:start] + section.rstrip("\n") + "\n\n" + notes + "\n" + ("\n" + text[end:] if following else "")
    path.write_text(text)


# -- command line


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, under 2 minutes; RESULTS.md untouched")
    parser.add_argument("--only", help="comma separated, of cpu, presence, sessions, failure (default all)")
    parser.add_argument("--rate", type=float, help="cpu: total msg/s (default 1000: two nodes and Redis with "
                                                   "every message crossing take 75 %% of core 0 then)")
    parser.add_argument("--duration", type=float, help="cpu: seconds measured (default 20; quick 4)")
    parser.add_argument("--pairs", type=int, default=100, help="cpu: chatting pairs")
    parser.add_argument("--cpu-rounds", type=int, help="cpu: rounds of (one node, 50 %%, 100 %%), the order "
                                                       "reversed every other round (default 2; quick 1, no 100 %%)")
    parser.add_argument("--profile", action=argparse.BooleanOptionalAction, default=None,
                        help="cpu: one node and two nodes again, node1 under cProfile (default on; quick off)")
    parser.add_argument("--layout", choices=["pinned", "free"], default="pinned",
                        help="cpu: every server process on core 0 and the load on core 1 (pinned), or all "
                             "of them on both cores (free)")
    parser.add_argument("--presence-users", type=int, help="presence: users of the domain (default 5000; quick 300)")
    parser.add_argument("--changes", type=int, help="presence: changes measured (default 20; quick 5)")
    parser.add_argument("--sessions", type=int, help="sessions over 4 nodes (default 40000; quick 2000)")
    parser.add_argument("--victims", type=int, help="failure: users on the killed node (default 200; quick 50)")
    parser.add_argument("--failure-rate", type=float, help="failure: msg/s to them (default 200; quick 100)")
    parser.add_argument("--local-rate", type=float, default=20.0, help="failure: msg/s within node2 during the "
                                                                      "Redis restart")
    parser.add_argument("--local-pairs", type=int, default=10)
    parser.add_argument("--redis-down", type=float, default=3.0, help="failure: seconds Redis stays down")
    parser.add_argument("--heartbeat", type=float, help="[cluster] heartbeat (default 1; quick 0.5)")
    parser.add_argument("--dead-after", type=float, help="[cluster] dead_after (default 5; quick 2)")
    parser.add_argument("--concurrency", type=int, default=100, help="logins at a time")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="folder for the raw JSON")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md after a --quick run too")
    parser.add_argument("--keep", action="store_true", help="keep the run's folder (nodes' logs)")
    parser.add_argument("--report", type=Path, metavar="RESULTS.json", help="run nothing: write the section "
                                                                            "again from an earlier run's JSON")
    args = parser.parse_args(argv)
    q = args.quick
    args.only = (args.only or "cpu,presence,sessions,failure").split(",")
    unknown = set(args.only) - {"cpu", "presence", "sessions", "failure"}
    if unknown:
        parser.error(f"unknown measurements: {', '.join(sorted(unknown))}")
    args.rate = args.rate or 1000.0
    args.duration = args.duration or (4.0 if q else 20.0)
    args.cpu_rounds = args.cpu_rounds or (1 if q else 2)
    args.profile = (not q) if args.profile is None else args.profile
    args.presence_users = args.presence_users or (300 if q else 5000)
    args.changes = args.changes or (5 if q else 20)
    args.sessions = min(args.sessions or (2000 if q else 40000), 80000)
    args.victims = args.victims or (50 if q else 200)
    args.failure_rate = args.failure_rate or (100.0 if q else 200.0)
    args.heartbeat = args.heartbeat or (0.5 if q else 1.0)
    args.dead_after = args.dead_after or (2.0 if q else 5.0)
    args.idle = 1.0 if q else 3.0
    args.warmup = 1.0 if q else 2.0
    args.drain = 2.0 if q else 3.0
    args.presence_idle = 2.0 if q else 5.0
    args.before_kill = 2.0 if q else 3.0
    args.after_redis = 4.0 if q else 8.0
    args.timeout = 300.0 if q else 600.0
    return args


def main(argv: list[str] | None = None) -> None:
    if len(sys.argv) > 2 and sys.argv[1] == "_profiled" and argv is None:
        profiled(sys.argv[2], sys.argv[3:])
        return
    if len(sys.argv) > 1 and sys.argv[1] == "_worker" and argv is None:
        parser = argparse.ArgumentParser()
        for name in ("--port", "--first", "--stop", "--step", "--concurrency"):
            parser.add_argument(name, type=int, required=True)
        parser.add_argument("--timeout", type=float, default=600.0)
        asyncio.run(worker(parser.parse_args(sys.argv[2:])))
        return
    args = parse(argv)
    if args.report:
        section = report(json.loads(args.report.read_text()))
        print(section)
        if not args.no_write:
            write_section(args.output, section)
        return
    for tool in ("redis-server", "taskset"):
        if shutil.which(tool) is None:
            raise SystemExit(f"cluster.py: {tool} is not installed")
    raise_nofile()  # this process and every node and worker it starts
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = ".venv/bin/python bench/cluster.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "command": command.strip(),
        "machine": machine(), "loadavg_before": os.getloadavg(),
        "args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
    }
    run = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    try:
        results.update(asyncio.run(bench(args, run)))
    finally:
        if args.keep:
            log(f"files kept in {run}")
        else:
            shutil.rmtree(run, ignore_errors=True)
    results["seconds_total"] = round(time.monotonic() - started)
    results["loadavg_after"] = os.getloadavg()
    folder = Path(tempfile.gettempdir()) if args.quick else args.results
    folder.mkdir(exist_ok=True)
    raw = folder / f"cluster-{time.strftime('%Y%m%d-%H%M%S')}{'-quick' if args.quick else ''}.json"
    raw.write_text(json.dumps(results, indent=1) + "\n")
    section = report(results)
    print(section)
    if args.quick and not args.write:
        log("quick run: RESULTS.md left as it is (--write to record it anyway)")
    elif not args.no_write:
        write_section(args.output, section)
        log(f"wrote {args.output}")
    log(f"raw figures in {raw}; {results['seconds_total']} s in all")


if __name__ == "__main__":
    main()
