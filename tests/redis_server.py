"""A real ``redis-server`` on a free loopback port, started and stopped by the tests.

It listens on 127.0.0.1 only. Nothing is persisted (no RDB, no AOF) unless
*persist* is set: then every write goes to an append-only file in its folder
(fsync always), so ``stop()`` then ``start()`` (same port) keeps the data. With
*tls* set to ``(certificate, key)`` PEM paths it speaks TLS only (plain port
off) and asks clients for no certificate. Tests are skipped when
``redis-server`` is not installed; ``make test`` installs it.

*replica_of* (the port of a server started here) makes it that server's
replica (``--replicaof``, with the same password); :class:`RedisSentinel` is
a ``redis-server --sentinel`` watching one master.
"""

from __future__ import annotations

import shutil
import socket
import ssl
import subprocess
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RedisServer:
    def __init__(self, folder: Path, tls: tuple[str, str] | None = None, password: str = "",
                 persist: bool = False, replica_of: int | None = None) -> None:
        self.folder = folder
        self.port = free_port()
        self.tls = tls
        self.password = password
        self.persist = persist
        self.replica_of = replica_of
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "redis.log"

    def start(self, timeout: float = 10) -> RedisServer:
        binary = shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (make test installs it)")
        aof = ["--appendonly", "yes", "--appendfsync", "always"] if self.persist else ["--appendonly", "no"]
        args = [binary, "--bind", "127.0.0.1", "--save", "", *aof, "--dir", str(self.folder),
                "--logfile", str(self.log), "--daemonize", "no"]
        if self.tls:
            cert, key = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", cert, "--tls-key-file", key,
                     "--tls-auth-clients", "no"]
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        if self.replica_of is not None:
            args += ["--replicaof", "127.0.0.1", str(self.replica_of)]
            args += ["--masterauth", self.password] if self.password else []
        return self._launch(args, timeout)

    def _launch(self, args: list[str], timeout: float) -> RedisServer:
        self.process = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"redis-server exited: {self.log_text()}")
            if self._answers():
                return self
            time.sleep(0.05)
        self.stop()
        raise AssertionError(f"redis-server did not start in {timeout}s: {self.log_text()}")

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw:
                conn: socket.socket = raw
                if self.tls:
                    context = ssl.create_default_context()
                    context.check_hostname = False
                    context.verify_mode = ssl.CERT_NONE
                    conn = context.wrap_socket(raw)
                conn.sendall(b"PING\r\n")
                return conn.recv(64).startswith((b"+PONG", b"-NOAUTH"))
        except OSError:
            return False

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        self.process = None

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except FileNotFoundError:
            return ""


class RedisSentinel(RedisServer):
    """A sentinel on a free loopback port watching *master* as *name*, alone (quorum 1), quick to fail over.

    With *tls* (the master's certificate and key) it talks TLS to the master, trusting that certificate;
    clients still ask it over plain TCP.
    """

    def __init__(self, folder: Path, master: RedisServer, name: str = "mymaster", down_after_ms: int = 500,
                 failover_timeout_ms: int = 2000, tls: tuple[str, str] | None = None) -> None:
        super().__init__(folder)
        self.master_tls = tls
        self.master, self.name = master, name
        self.down_after_ms, self.failover_timeout_ms = down_after_ms, failover_timeout_ms
        self.log = folder / "sentinel.log"

    def start(self, timeout: float = 10) -> RedisServer:
        binary = shutil.which("redis-sentinel") or shutil.which("redis-server")
        if binary is None:
            pytest.skip("redis-server is not installed (make test installs it)")
        lines = [f"port {self.port}", "bind 127.0.0.1", f"dir {self.folder}", f"logfile {self.log}",
                 f"sentinel monitor {self.name} 127.0.0.1 {self.master.port} 1",
                 f"sentinel down-after-milliseconds {self.name} {self.down_after_ms}",
                 f"sentinel failover-timeout {self.name} {self.failover_timeout_ms}"]
        if self.master.password:
            lines.append(f"sentinel auth-pass {self.name} {self.master.password}")
        if self.master_tls:
            cert, key = self.master_tls
            lines += ["tls-replication yes", f"tls-cert-file {cert}", f"tls-key-file {key}", f"tls-ca-cert-file {cert}"]
        config = self.folder / "sentinel.conf"  # the sentinel rewrites it: its own file
        config.write_text("\n".join(lines) + "\n")
        return self._launch([binary, str(config), "--sentinel"], timeout)
