"""Several chatgate nodes sharing one real ``redis-server``: the test cluster.

One :class:`~tests.redis_server.RedisServer` (append-only file on, so a
restart keeps the archive and offline messages) and N
:class:`~tests.integration.harness.Server` processes, each in its own folder
with its own ports, all on one SQLite directory file (``shared.sqlite`` in the
cluster's folder), ``[archive]`` and offline messages on the Redis server and
``[cluster] backend = redis`` with short heartbeats (0.2 s, dead after 1 s).
Accounts are made once, through the first node's configuration, with the real
``chatgate-admin``: every node reads the same store.

``directory="redis"`` puts the directory on the Redis server too (no shared
file: the shape of nodes on several machines; Redis must be up for
``chatgate-admin``, :meth:`Cluster.start_redis` first). ``sentinel=True`` adds a
replica and one sentinel watching the master (quorum 1, quick to fail over),
and every node finds the master through it (``[cluster] redis_sentinels``).
"""

from __future__ import annotations

import csv
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

from tests.integration.harness import Server
from tests.redis_server import RedisSentinel, RedisServer

HEARTBEAT = 0.2
DEAD_AFTER = 1.0


def _merged(*layers: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Config sections, later layers overriding earlier ones key by key."""
    out: dict[str, dict[str, Any]] = {}
    for layer in layers:
        for section, values in layer.items():
            out.setdefault(section, {}).update(values)
    return out


class Cluster:
    """``nodes`` chatgate processes (``node1``, ``node2``, ...) and their Redis.

    *sections* are extra config sections for every node (``cluster={"forward_timeout": 3}``).
    """

    def __init__(self, folder: Path, nodes: int = 2, directory: str = "sqlite", sentinel: bool = False,
                 **sections: dict[str, Any]) -> None:
        self.folder = folder
        (folder / "redis").mkdir(parents=True, exist_ok=True)
        self.redis = RedisServer(folder / "redis", persist=True)
        #: with *sentinel*: the master's replica and the sentinel watching it (``self.redis`` is the first master)
        self.replica: RedisServer | None = None
        self.sentinel: RedisSentinel | None = None
        if sentinel:
            for name in ("replica", "sentinel"):
                (folder / name).mkdir(exist_ok=True)
            self.replica = RedisServer(folder / "replica", replica_of=self.redis.port)
            self.sentinel = RedisSentinel(folder / "sentinel", self.redis)
        self.store = folder / "shared.sqlite"
        base = {
            "storage": {"backend": directory, "path": str(self.store), "poll_interval": 0.1,
                        "redis_host": "127.0.0.1", "redis_port": self.redis.port, "redis_prefix": "cg"},
            "archive": {"backend": "redis", "offline_backend": "redis"},
            # every node signs and checks the same upload slots (XEP-0363)
            "upload": {"secret": "cluster-test-upload-secret-0123456789abcdef"},
        }
        if self.sentinel is not None:
            base["cluster"] = {"redis_sentinels": f"127.0.0.1:{self.sentinel.port}"}
        self.nodes: list[Server] = []
        for n in range(1, nodes + 1):
            node_folder = folder / f"node{n}"
            node_folder.mkdir(exist_ok=True)
            own = {"cluster": {"backend": "redis", "node_id": f"node{n}", "heartbeat": HEARTBEAT,
                               "dead_after": DEAD_AFTER}}
            self.nodes.append(Server(node_folder, **_merged(base, own, sections)))

    # -- the whole cluster

    def start(self) -> Cluster:
        """Redis (what is not running yet), then every node in order; then two heartbeats for them to see
        each other."""
        self.start_redis()
        try:
            for node in self.nodes:
                node.start()
        except BaseException:
            self.stop()
            raise
        time.sleep(2 * HEARTBEAT)
        return self

    def stop(self) -> None:
        for node in reversed(self.nodes):
            node.stop()
        self.stop_redis()

    def admin(self, *args: str, stdin: str | None = None, check: bool = True) -> Any:
        """chatgate-admin on the shared store (through the first node's configuration)."""
        return self.nodes[0].admin(*args, stdin=stdin, check=check)

    def add_users(self, password: str, *jids: str) -> None:
        """Add the domains of *jids* (when new) and the users, in one import."""
        known = set(self.admin("domain", "list").stdout.split())
        for domain in dict.fromkeys(jid.split("@", 1)[1] for jid in jids):
            if domain not in known:
                self.admin("domain", "add", domain)
        rows = self.folder / "users.csv"
        with rows.open("w", newline="") as out:
            writer = csv.writer(out)
            writer.writerow(["jid", "name", "password"])
            for jid in jids:
                writer.writerow([jid, jid.split("@", 1)[0].capitalize(), password])
        try:
            self.admin("user", "import", str(rows))
        finally:
            rows.unlink()

    # -- one node

    def kill(self, node: Server) -> None:
        """``kill -9``: no clean stop, nothing flushed, its heartbeat just ends."""
        assert node.process is not None, "the node is not running"
        node.process.send_signal(signal.SIGKILL)
        node.process.wait(10)
        node.stop()  # closes its output pipe; the process is gone already

    def restart(self, node: Server) -> None:
        """Start a stopped or killed node again, same folder, ports and node_id."""
        node.stop()
        node.start()

    # -- Redis

    def _redis_servers(self) -> list[RedisServer]:
        return [server for server in (self.redis, self.replica, self.sentinel) if server is not None]

    def stop_redis(self) -> None:
        for server in reversed(self._redis_servers()):
            server.stop()

    def start_redis(self) -> None:
        """Redis again, on the same port, with what its append-only file kept (and the replica and the
        sentinel, with *sentinel*); a server already running is left alone."""
        for server in self._redis_servers():
            if server.process is None or server.process.poll() is not None:
                server.start()

    def logs(self, tail: int = 2000) -> str:
        """Every node's log tail, for failure messages."""
        return "\n".join(f"--- {node.folder.name}\n{node.log_text()[-tail:]}" for node in self.nodes)


class RedisMonitor:
    """Every command the Redis server runs while this is open (``MONITOR``), in a thread.

    Lines look like ``+1700000000.123 [0 127.0.0.1:5555] "XADD" "key" ...`` (``[0 lua]``
    for commands a script runs).
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.lines: list[str] = []
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RedisMonitor:
        self._sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        self._sock.sendall(b"MONITOR\r\n")
        reply = b""
        while b"\r\n" not in reply:
            reply += self._sock.recv(64)
        assert reply.startswith(b"+OK"), reply
        pending = reply.split(b"\r\n", 1)[1]
        self._sock.settimeout(None)
        self._thread = threading.Thread(target=self._read, args=(pending,), daemon=True)
        self._thread.start()
        return self

    def _read(self, pending: bytes) -> None:
        assert self._sock is not None
        while True:
            while b"\r\n" in pending:
                line, pending = pending.split(b"\r\n", 1)
                self.lines.append(line.decode("utf-8", "replace"))
            try:
                chunk = self._sock.recv(65536)
            except OSError:
                return
            if not chunk:
                return
            pending += chunk

    def __exit__(self, *_: object) -> None:
        if self._sock is not None:
            try:
                self._sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self._sock.close()
        if self._thread is not None:
            self._thread.join(5)

    def commands(self, *names: str, containing: str = "") -> list[str]:
        """The lines of commands named *names* (any case) whose text contains *containing*."""
        wanted = {name.upper() for name in names}
        found = []
        for line in list(self.lines):
            parts = line.split('"', 2)
            if len(parts) >= 2 and parts[1].upper() in wanted and containing in line:
                found.append(line)
        return found
