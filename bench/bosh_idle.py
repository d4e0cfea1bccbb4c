"""BOSH benchmark: idle sessions one chatgate process holds, and chat latency.

Starts a real ``twistd chatgate`` (as the integration tests do, SQLite store in
a temporary folder, everything on 127.0.0.1), then:

1. logs in ``--sessions`` BOSH sessions (PLAIN, resource bound, no presence)
   and leaves each with one request held, as an idle webmail tab does; reports
   the server's RSS before and after, per session, and the CPU the server uses
   while they idle (``--idle`` seconds);
2. measures ``--rounds`` message round trips BOSH -> c2s -> BOSH: a BOSH user
   (one poll held, a second request carrying the message, Strophe's pattern)
   sends to a slixmpp user on c2s who echoes at once; before the idle sessions
   and while they are held.

Bounded: the sessions and rounds asked for, and ``--timeout`` seconds in all.

    .venv/bin/python bench/bosh_idle.py --sessions 2000 --rounds 300
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from servers import cpu_seconds, rss_kib  # noqa: E402  (this folder: the script's own)

from tests.integration.harness import Server, login, logout  # noqa: E402

NS = "http://jabber.org/protocol/httpbind"
PASSWORD = "bench password 1"
USERS = 50  # sessions are spread over this many accounts, several resources each


class Connection:
    """One keep-alive HTTP/1.1 connection to the BOSH endpoint."""

    def __init__(self, port: int) -> None:
        self.port = port

    async def open(self) -> Connection:
        self.reader, self.writer = await asyncio.open_connection("127.0.0.1", self.port)
        return self

    def write(self, data: bytes) -> None:
        self.writer.write(b"POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: text/xml; charset=utf-8\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(data) + data)

    async def read(self) -> bytes:
        status = await self.reader.readline()
        if not status.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"HTTP answer {status!r}")
        length = 0
        while (line := await self.reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        return await self.reader.readexactly(length)

    async def post(self, data: bytes) -> bytes:
        self.write(data)
        return await self.read()

    def close(self) -> None:
        self.writer.close()


class Session:
    """A raw BOSH session: rids, sid, and the login steps."""

    def __init__(self, port: int, wait: int) -> None:
        self.port = port
        self.wait = wait
        self.rid = random.randrange(10**6, 10**9)
        self.sid = ""

    def body(self, payload: str = "", **attributes: str) -> bytes:
        self.rid += 1
        attrs = "".join(f" {k}='{v}'" for k, v in attributes.items())
        return (f"<body xmlns='{NS}' xmlns:xmpp='urn:xmpp:xbosh' rid='{self.rid}' sid='{self.sid}'{attrs}>"
                f"{payload}</body>").encode()

    async def login(self, user: str, resource: str) -> Connection:
        connection = await Connection(self.port).open()
        created = await connection.post(
            f"<body xmlns='{NS}' xmlns:xmpp='urn:xmpp:xbosh' rid='{self.rid}' to='example.com' wait='{self.wait}'"
            f" hold='1' ver='1.11' xmpp:version='1.0'/>".encode())
        self.sid = created.split(b"sid=\"")[1].split(b'"')[0].decode()
        token = base64.b64encode(f"\0{user}\0{PASSWORD}".encode()).decode()
        answer = await connection.post(
            self.body(f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>"))
        assert b"<success" in answer, answer
        await connection.post(self.body(**{"xmpp:restart": "true", "to": "example.com"}))
        answer = await connection.post(self.body(
            "<iq xmlns='jabber:client' type='set' id='b'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
            f"<resource>{resource}</resource></bind></iq>"))
        assert b"<jid>" in answer, answer
        return connection


def summary(samples: list[float]) -> str:
    ms = sorted(s * 1000 for s in samples)
    pick = lambda q: ms[min(len(ms) - 1, int(q * len(ms)))]  # noqa: E731
    return (f"median {statistics.median(ms):.2f} ms, p95 {pick(0.95):.2f} ms, p99 {pick(0.99):.2f} ms, "
            f"max {ms[-1]:.2f} ms ({len(ms)} round trips)")


async def round_trips(server: Server, rounds: int) -> list[float]:
    """BOSH alice -> c2s bob (echoes) -> BOSH alice."""
    bob = await login(server, "bob@example.com/echo", PASSWORD)
    bob.add_event_handler("message", lambda m: bob.send_message(mto=m["from"], mbody=m["body"], mtype="chat"))
    alice = Session(server.http_port, wait=60)
    polls = await alice.login("alice", "bench")
    sends = await Connection(server.http_port).open()
    samples = []
    for n in range(rounds):
        polls.write(alice.body())  # the held poll
        await asyncio.sleep(0)
        text = f"ping {n}"
        started = time.perf_counter()
        sends.write(alice.body(f"<message xmlns='jabber:client' to='bob@example.com' type='chat'>"
                               f"<body>{text}</body></message>"))
        await polls.read()  # released, empty, by the send
        answer = await sends.read()  # held until the echo came
        while f"<body>{text}</body>".encode() not in answer:
            polls.write(alice.body())
            answer = await polls.read()
        samples.append(time.perf_counter() - started)
    await polls.post(alice.body(type="terminate"))
    polls.close()
    sends.close()
    await logout(bob)
    return samples


async def run(args: argparse.Namespace) -> None:
    folder = Path(tempfile.mkdtemp(prefix="chatgate-bench-"))
    server = Server(folder, http={"bosh_max_wait": 120}, limits={"max_preauth_per_address": 64})
    server.admin("domain", "add", "example.com")
    rows = ["jid,name,password", f"alice@example.com,Alice,{PASSWORD}", f"bob@example.com,Bob,{PASSWORD}"]
    rows += [f"user{n}@example.com,User {n},{PASSWORD}" for n in range(USERS)]
    (folder / "users.csv").write_text("\n".join(rows) + "\n")
    server.admin("user", "import", str(folder / "users.csv"))
    server.start()
    pid = server.process.pid
    held: list[Connection] = []
    try:
        before_latency = await round_trips(server, args.rounds)
        await asyncio.sleep(1)
        baseline = rss_kib(pid)

        semaphore = asyncio.Semaphore(args.concurrency)

        async def idle(n: int) -> None:
            async with semaphore:
                session = Session(server.http_port, wait=120)
                connection = await session.login(f"user{n % USERS}", f"idle{n}")
                connection.write(session.body())  # held, the tab now idles
                held.append(connection)

        started = time.perf_counter()
        await asyncio.gather(*(idle(n) for n in range(args.sessions)))
        login_seconds = time.perf_counter() - started
        await asyncio.sleep(2)
        loaded = rss_kib(pid)
        cpu = cpu_seconds(pid)
        await asyncio.sleep(args.idle)
        idle_cpu = cpu_seconds(pid) - cpu
        during_latency = await round_trips(server, args.rounds)
        print(f"idle BOSH sessions held: {args.sessions} (logged in in {login_seconds:.1f} s, "
              f"{args.sessions / login_seconds:.0f}/s, {args.concurrency} at a time)")
        print(f"server RSS: {baseline / 1024:.1f} MiB before, {loaded / 1024:.1f} MiB with them: "
              f"{(loaded - baseline) / args.sessions:.1f} KiB per idle session")
        print(f"server CPU while they idled for {args.idle:.0f} s: {idle_cpu * 1000:.0f} ms")
        print(f"round trip BOSH -> c2s -> BOSH, no other sessions: {summary(before_latency)}")
        print(f"round trip BOSH -> c2s -> BOSH, with the idle sessions: {summary(during_latency)}")
    finally:
        for connection in held:
            connection.close()
        server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sessions", type=int, default=2000, help="idle BOSH sessions (at most 20000)")
    parser.add_argument("--rounds", type=int, default=300, help="round trips measured each time (at most 10000)")
    parser.add_argument("--idle", type=float, default=10, help="seconds the idle sessions are watched")
    parser.add_argument("--concurrency", type=int, default=16, help="logins at a time")
    parser.add_argument("--timeout", type=float, default=600, help="give up after this many seconds")
    args = parser.parse_args()
    args.sessions = min(args.sessions, 20000)
    args.rounds = min(args.rounds, 10000)
    asyncio.run(asyncio.wait_for(run(args), args.timeout))


if __name__ == "__main__":
    main()
