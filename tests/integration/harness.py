"""Start a real chatgate (``twistd -n chatgate``) and talk to it as users do.

The service runs as a separate process on free loopback ports with a SQLite
store in a temporary folder; accounts are made with the real
``chatgate-admin`` command. Clients are slixmpp over real sockets, or a raw
TCP socket for the attacks no client library would send.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import re
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import scramp
import slixmpp

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """One chatgate process and its folder."""

    def __init__(self, folder: Path, **sections: dict[str, Any]) -> None:
        self.folder = folder
        self.port = free_port()
        #: the web listener (BOSH at /http-bind), plain HTTP on loopback
        self.http_port = free_port()
        self.config = folder / "tap-config.ini"
        settings: dict[str, dict[str, Any]] = {
            "xmpp": {"interfaces": "127.0.0.1", "port": self.port},
            "storage": {"backend": "sqlite", "path": "chatgate.sqlite", "poll_interval": 0.2},
            "tls": {"certificate": "tls/cert.pem", "key": "tls/key.pem"},
            "demo": {"create": "false"},
            "http": {"interfaces": "127.0.0.1", "port": self.http_port},
            # slots (XEP-0363) name this listener, not the domain (example.com is not resolvable here)
            "upload": {"base_url": f"http://127.0.0.1:{self.http_port}/upload"},
        }
        for name, values in sections.items():
            settings.setdefault(name, {}).update(values)
        lines = []
        for name, values in settings.items():
            lines.append(f"[{name}]")
            lines += [f"{key} = {value}" for key, value in values.items()]
        self.config.write_text("\n".join(lines) + "\n")
        self.process: subprocess.Popen[bytes] | None = None
        self.log = folder / "twistd.log"

    def admin(self, *args: str, stdin: str | None = None, check: bool = True,
              umask: int = -1) -> subprocess.CompletedProcess[str]:
        """Run chatgate-admin on this server's configuration (with *umask* if given)."""
        result = subprocess.run(
            [sys.executable, "-m", "chatgate.admin.cli", "-c", str(self.config), *args],
            input=stdin, capture_output=True, text=True, timeout=60, cwd=REPO, umask=umask,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"chatgate-admin {' '.join(args)} failed: {result.stderr}")
        return result

    def start(self, timeout: float = 30, umask: int = -1) -> None:
        """Start chatgate (with *umask* if given) and wait until it is ready."""
        seen = self.log_text().count("chatgate ready")  # a restart appends to the same log
        self.process = subprocess.Popen(
            [str(BIN / "twistd"), "-n", "--pidfile=", "--logfile", str(self.log), "chatgate",
             "--config", str(self.config)],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, umask=umask,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                out = self.process.stdout.read().decode() if self.process.stdout else ""
                raise AssertionError(f"chatgate exited: {out}\n{self.log_text()}")
            if self.log_text().count("chatgate ready") > seen:
                return
            time.sleep(0.1)
        raise AssertionError(f"chatgate did not start in {timeout}s:\n{self.log_text()}")

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
        if self.process is not None and self.process.stdout:
            self.process.stdout.close()
        self.process = None

    def log_text(self) -> str:
        try:
            return self.log.read_text()
        except FileNotFoundError:
            return ""

    @property
    def bosh_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/http-bind"

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None


def async_test(timeout: float = 60) -> Callable[[Callable[..., Awaitable[None]]], Callable[..., None]]:
    """Run an async test in a fresh event loop, bounded in time."""

    def wrap(fn: Callable[..., Awaitable[None]]) -> Callable[..., None]:
        @functools.wraps(fn)
        def run(*args: Any, **kwargs: Any) -> None:
            asyncio.run(asyncio.wait_for(fn(*args, **kwargs), timeout))

        return run

    return wrap


class Client(slixmpp.ClientXMPP):
    """A slixmpp client that records what it receives."""

    def __init__(self, jid: str, password: str, mechanism: str | None = None) -> None:
        super().__init__(jid, password, sasl_mech=mechanism)
        # The test server's certificate is self-signed and made on first start.
        self.ssl_context.check_hostname = False
        self.ssl_context.verify_mode = ssl.CERT_NONE
        self.enable_direct_tls = False  # the test port speaks STARTTLS
        for plugin in ("xep_0030", "xep_0054", "xep_0092", "xep_0199"):
            self.register_plugin(plugin)
        self.messages: asyncio.Queue[slixmpp.Message] = asyncio.Queue()
        self.presences: list[slixmpp.Presence] = []
        self.presence_changed = asyncio.Event()
        self.stream_errors: list[str] = []
        self.gone = asyncio.Event()
        self.add_event_handler("disconnected", lambda _: self.gone.set())
        self.add_event_handler("message", self.messages.put_nowait)
        self.add_event_handler("message_error", self.messages.put_nowait)
        self.add_event_handler("presence", self._presence)
        self.add_event_handler("stream_error", lambda e: self.stream_errors.append(e["condition"]))

    def _presence(self, presence: slixmpp.Presence) -> None:
        self.presences.append(presence)
        self.presence_changed.set()

    async def wait_presence(
        self, predicate: Callable[[slixmpp.Presence], bool], timeout: float = 10
    ) -> slixmpp.Presence:
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for presence in self.presences:
                if predicate(presence):
                    return presence
            self.presence_changed.clear()
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                raise AssertionError(f"no such presence; got {[str(p) for p in self.presences]}")
            try:
                await asyncio.wait_for(self.presence_changed.wait(), remaining)
            except TimeoutError:
                pass

    async def wait_closed(self, timeout: float = 10) -> None:
        """Wait until the connection is closed (it may be already)."""
        await asyncio.wait_for(self.gone.wait(), timeout)

    async def next_message(self, timeout: float = 10) -> slixmpp.Message:
        return await asyncio.wait_for(self.messages.get(), timeout)


async def login(server: Server, jid: str, password: str, mechanism: str | None = None,
                presence: bool = True, roster: bool = True) -> Client:
    """Connect, authenticate, bind; fail the test with the reason otherwise."""
    client = Client(jid, password, mechanism)
    started: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def settle(outcome: str) -> None:
        if not started.done():
            started.set_result(outcome)

    client.add_event_handler("session_start", lambda _: settle("ok"))
    client.add_event_handler("failed_all_auth", lambda _: settle("auth failed"))
    client.add_event_handler("disconnected", lambda _: settle("disconnected"))
    client.connect("127.0.0.1", server.port)
    outcome = await asyncio.wait_for(started, 20)
    if outcome != "ok":
        client.disconnect()
        raise LoginFailed(f"{jid}: {outcome}; server log ends:\n{server.log_text()[-1500:]}")
    if roster:
        await client.get_roster()
    if presence:
        client.send_presence()
    return client


class LoginFailed(Exception):
    pass


async def logout(*clients: Client) -> None:
    for client in clients:
        if client.transport is not None:
            client.disconnect()
            await client.wait_until("disconnected", 10)


class RawClient:
    """A hand-driven XMPP client on a raw socket, for what libraries won't do
    (stop answering, misbehave at a chosen step)."""

    HEADER = (
        "<stream:stream to='{domain}' xmlns='jabber:client'"
        " xmlns:stream='http://etherx.jabber.org/streams' version='1.0'>"
    )

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, domain: str) -> None:
        self.reader, self.writer, self.domain = reader, writer, domain
        self.received = b""

    @classmethod
    async def connect(cls, port: int, domain: str = "example.com", source: str | None = None) -> RawClient:
        """Connect to 127.0.0.1, from the loopback address *source* if given."""
        local = (source, 0) if source else None
        reader, writer = await asyncio.open_connection("127.0.0.1", port, local_addr=local)
        return cls(reader, writer, domain)

    def send(self, data: str | bytes) -> None:
        self.writer.write(data.encode() if isinstance(data, str) else data)

    async def expect(self, marker: str, timeout: float = 10) -> bytes:
        """Read until *marker* appears in what was received; return all of it."""
        return await self.read_until(lambda received: marker.encode() in received, timeout, marker)

    async def read_until(self, done: Callable[[bytes], bool], timeout: float = 10, what: str = "") -> bytes:
        """Read until *done(everything received)*; return all of it."""
        async def read() -> bytes:
            while not done(self.received):
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise AssertionError(f"closed before {what or 'the end expected'}; got {self.received!r}")
                self.received += chunk
            return self.received
        return await asyncio.wait_for(read(), timeout)

    async def read_to_end(self, timeout: float = 10) -> bytes:
        async def read() -> bytes:
            while chunk := await self.reader.read(65536):
                self.received += chunk
            return self.received
        return await asyncio.wait_for(read(), timeout)

    async def open(self) -> None:
        self.received = b""
        self.send(self.HEADER.format(domain=self.domain))
        await self.expect("</stream:features>")

    async def starttls(self) -> None:
        await self.open()
        self.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
        await self.expect("<proceed")
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        await self.writer.start_tls(context)
        await self.open()

    _SASL_ANSWER = re.compile(rb"<(challenge|success|failure) xmlns='[^']*'(?:/>|>(.*?)</\1>)", re.S)

    async def sasl_reply(self, timeout: float = 15) -> tuple[str, bytes]:
        """The next SASL answer: (challenge|success|failure, its data: decoded, or the failure's XML)."""
        async def read() -> tuple[str, bytes]:
            while (match := self._SASL_ANSWER.search(self.received)) is None:
                chunk = await self.reader.read(65536)
                if not chunk:
                    raise AssertionError(f"closed during SASL; got {self.received!r}")
                self.received += chunk
            self.received = self.received[match.end():]
            name, body = match.group(1).decode(), match.group(2) or b""
            return name, body if name == "failure" else base64.b64decode(body)
        return await asyncio.wait_for(read(), timeout)

    async def plain(self, localpart: str, password: str) -> tuple[str, bytes]:
        token = base64.b64encode(f"\0{localpart}\0{password}".encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>")
        return await self.sasl_reply()

    async def scram(self, localpart: str, password: str) -> list[tuple[str, bytes]]:
        """A SCRAM-SHA-256 exchange; every server answer, in order."""
        client = scramp.ScramClient(["SCRAM-SHA-256"], localpart, password)
        first = base64.b64encode(client.get_client_first().encode()).decode()
        self.send(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='SCRAM-SHA-256'>{first}</auth>")
        answers = [await self.sasl_reply()]
        if answers[-1][0] != "challenge":
            return answers
        client.set_server_first(answers[-1][1].decode())
        final = base64.b64encode(client.get_client_final().encode()).decode()
        self.send(f"<response xmlns='urn:ietf:params:xml:ns:xmpp-sasl'>{final}</response>")
        answers.append(await self.sasl_reply())
        return answers

    async def login(self, localpart: str, password: str, resource: str) -> str:
        """STARTTLS, SASL PLAIN, bind; returns the bound full JID."""
        await self.starttls()
        name, data = await self.plain(localpart, password)
        assert name == "success", data
        await self.open()
        self.send(
            "<iq type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"
        )
        answer = await self.expect("</iq>")
        return answer.split(b"<jid>")[1].split(b"</jid>")[0].decode()

    def close(self) -> None:
        self.writer.close()
