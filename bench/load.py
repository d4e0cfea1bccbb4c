"""The load generator: thousands of XMPP sessions from one asyncio process.

Raw sockets, no XMPP library: each c2s session is an :class:`asyncio.Protocol`
speaking plain (non-TLS) c2s — stream header, SASL SCRAM-SHA-1 with scramp's
client, the stream restart, resource binding — and each BOSH session
(XEP-0124/0206) two keep-alive HTTP/1.1 connections to ``/http-bind``. The
incoming bytes are scanned, not parsed: a chat message carries
``bench <step> <send time in µs>`` in its body, and the latency is measured
end to end (sender and receiver are in this process, one monotonic clock).

Scenarios (each prints one JSON object on stdout):

- ``s1`` login storm: ``--users`` users log in (``--concurrency`` at a time)
  and their sessions are held; server CPU per login from the server's
  ``/proc/<pid>/stat`` (utime + stime, its idle rate subtracted), memory per
  idle session = its RSS delta / sessions.
- ``s2`` chat throughput: ``--pairs`` pairs chat (each user to its partner's
  full JID), the total rate stepped up through ``--rates``, ``--step``
  seconds each; a step passes with >= 99 % delivered and p99 <= 100 ms
  (messages not delivered within ``--drain`` seconds count as infinitely
  late); a failed rate is tried once more (``--retries``: noise from other
  work only ever makes a step fail); it stops after two failed rates in a row.
- ``s3`` BOSH: ``--users`` long-polling BOSH users (one request held each,
  a second one carrying what they send, as Strophe.js does) chat in pairs at
  ``--rate`` messages/s in total for ``--duration`` seconds: p50/p99,
  delivered, server CPU, memory per BOSH session.
- ``s4`` presence fan-out: rounds of ``--sizes`` users of one domain, each
  in everyone's roster, log in, ask for their roster and send presence (as
  clients do); each round ends when everyone has everyone's presence: server
  CPU per presence stanza delivered, per user.

S1-S3 send no presence: messages go to full JIDs, which every server delivers
without it, so chatgate's domain-wide roster (everyone sees everyone) and
the references' empty rosters cost the same. Every loop is bounded in
count and time; traffic goes to 127.0.0.1 only (from source addresses
127.0.0.1-16, for more ephemeral ports).

    python bench/load.py s2 --port 5222 --http-port 5280 --server-pid 1234
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import math
import os
import random
import re
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import scramp
from servers import cpu_seconds, rss_kib  # (this folder: the script's own)

DOMAIN = "bench.test"
PASSWORD = "bench-password-1"
SOURCES = [f"127.0.0.{n}" for n in range(1, 17)]
HEADER = ("<?xml version='1.0'?><stream:stream to='{domain}' xmlns='jabber:client'"
          " xmlns:stream='http://etherx.jabber.org/streams' version='1.0' xml:lang='en'>")
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BOSH_NS = "http://jabber.org/protocol/httpbind"
#: what follows the marker in every message body: a typical chat line
TEXT = "Hello! Are we still on for the meeting at three? I will bring the figures."

FEATURES = re.compile(rb"</stream:features>|<stream:features\s*/>")
SASL = re.compile(rb"<(challenge|success|failure)\b[^>]*?(?:/>|>(.*?)</\1>)", re.S)
BOUND = re.compile(rb"<jid>([^<]+)</jid>")
IQ_RESULT = re.compile(rb"<iq\b[^>]*\bid=['\"]carbons['\"][^>]*>")
SM_ENABLED = re.compile(rb"<enabled\b[^>]*/>")
#: the server's ack request as chatgate writes it (XEP-0198 §4)
SM_REQUEST = b"<r xmlns='urn:xmpp:sm:3'/>"
MARK = re.compile(rb"bench (-?\d+) (\d+) ")
ERROR = re.compile(rb"<message\b[^>]*\btype=['\"]error['\"]")
PING = re.compile(rb"<iq\b([^>]*)>\s*<ping xmlns=['\"]urn:xmpp:ping['\"]\s*/>\s*</iq>")
ATTR = re.compile(rb"\b(id|from)=['\"]([^'\"]*)['\"]")
SID = re.compile(rb"\bsid=['\"]([^'\"]+)['\"]")
FIN = re.compile(rb"<fin\b[^>]*/>|<fin\b.*?</fin>"
                 rb"|<iq(?=[^>]*\bid=['\"]mam['\"])(?=[^>]*\btype=['\"]error['\"])[^>]*>", re.S)
TERMINATE = re.compile(rb"<body\b[^>]*\btype=['\"]terminate['\"]")


def now_us() -> int:
    return time.monotonic_ns() // 1000


def core_busy(core: int) -> float:
    """Seconds core *core* ran processes (user, nice, system), whichever they were;
    interrupts, softirqs (loopback traffic) and time stolen by the hypervisor are
    not counted."""
    for line in Path("/proc/stat").read_text().splitlines():
        if line.startswith(f"cpu{core} "):
            user, nice, system = (int(v) for v in line.split()[1:4])
            return (user + nice + system) / os.sysconf("SC_CLK_TCK")
    raise RuntimeError(f"no cpu{core} in /proc/stat")


class Meter:
    """CPU of the server, of this generator and of everything else on the
    server's core, from one moment on."""

    def __init__(self, pid: int, core: int) -> None:
        self.pid, self.core = pid, core
        self.server, self.own, self.busy = cpu_seconds(pid), own_cpu(), core_busy(core)
        self.started = time.monotonic()

    def read(self, idle_rate: float = 0.0) -> dict[str, float]:
        elapsed = time.monotonic() - self.started
        server = cpu_seconds(self.pid) - self.server
        others = max(0.0, core_busy(self.core) - self.busy - server)
        return {
            "seconds": elapsed,
            "server_cpu_s": server - idle_rate * elapsed,
            "server_cpu_share": server / elapsed,
            "generator_cpu_share": (own_cpu() - self.own) / elapsed,
            "others_on_server_core_share": others / elapsed,
        }


def own_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def log(text: str) -> None:
    print(f"  [load {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


class LoginFailed(Exception):
    pass


# -- what the receivers record


class Recorder:
    """Latencies of the messages of the step under way; later ones are late."""

    def __init__(self) -> None:
        self.step: int | None = None
        self.latencies: list[int] = []
        self.late = 0
        self.errors = 0
        self.last_seen = 0.0

    def seen(self, chunk: bytes) -> None:
        now = now_us()
        self.last_seen = time.monotonic()
        for match in MARK.finditer(chunk):
            if self.step is not None and int(match.group(1)) == self.step:
                self.latencies.append(now - int(match.group(2)))
            else:
                self.late += 1
        if b"error" in chunk:
            self.errors += len(ERROR.findall(chunk))

    def open(self, step: int) -> None:
        self.step, self.latencies = step, []

    def close(self) -> list[int]:
        self.step = None
        return self.latencies


def summary(latencies: list[int], sent: int) -> dict[str, Any]:
    """Delivered share and percentiles in ms; undelivered messages count as infinitely late."""
    ordered = sorted(latencies)

    def pick(q: float) -> float | None:
        k = max(0, math.ceil(q * sent) - 1)
        return round(ordered[k] / 1000, 2) if k < len(ordered) else None

    return {
        "sent": sent,
        "delivered": len(ordered),
        "delivered_share": round(len(ordered) / sent, 4) if sent else None,
        "p50_ms": pick(0.50),
        "p90_ms": pick(0.90),
        "p99_ms": pick(0.99),
        "max_ms": round(ordered[-1] / 1000, 2) if ordered else None,
    }


# -- c2s


class C2S(asyncio.Protocol):
    """One client connection: waits for patterns while logging in, then scans
    for chat messages (and answers server pings)."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        self.recorder = recorder
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.waiting: tuple[re.Pattern[bytes], asyncio.Future[re.Match[bytes]]] | None = None
        self.chatting = False
        self.lost = False
        #: stream management (XEP-0198) enabled: messages received so far (the h acknowledged)
        self.managed = False
        self.handled = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.waiting and not self.waiting[1].done():
            self.waiting[1].set_exception(LoginFailed(f"connection closed; got {bytes(self.buf[-300:])!r}"))

    def data_received(self, data: bytes) -> None:
        self.buf += data
        if self.chatting:
            self._scan()
        elif self.waiting is not None:
            self._match()

    def _match(self) -> None:
        pattern, future = self.waiting  # type: ignore[misc]
        match = pattern.search(self.buf)
        if match is not None and not future.done():
            self.waiting = None
            consumed = bytes(self.buf[:match.end()])  # a match on the bytearray would change with it
            del self.buf[:match.end()]
            future.set_result(pattern.search(consumed))

    async def expect(self, pattern: re.Pattern[bytes], timeout: float = 30) -> re.Match[bytes]:
        future: asyncio.Future[re.Match[bytes]] = asyncio.get_running_loop().create_future()
        self.waiting = (pattern, future)
        self._match()
        try:
            return await asyncio.wait_for(future, timeout)
        except TimeoutError:
            raise LoginFailed(
                f"waited {timeout:.0f} s for {pattern.pattern!r}; got {bytes(self.buf[-300:])!r}") from None

    def _scan(self) -> None:
        buf = self.buf
        end = buf.rfind(b"</message>")
        if end >= 0:
            end += 10
            chunk = bytes(buf[:end])
            del buf[:end]
            if self.recorder is not None:
                self.recorder.seen(chunk)
            if self.managed:
                self.handled += chunk.count(b"</message>")
        if self.managed and SM_REQUEST in buf:
            # every message received so far is handled: the server sent at least as many
            answers = buf.count(SM_REQUEST)
            self.transport.write(b"<a xmlns='urn:xmpp:sm:3' h='%d'/>" % self.handled * answers)  # type: ignore
            buf[:] = buf.replace(SM_REQUEST, b"")
        if b"urn:xmpp:ping" in buf:
            for match in list(PING.finditer(buf))[::-1]:
                attrs = dict(ATTR.findall(match.group(1)))
                reply = b"<iq type='result' id='" + attrs.get(b"id", b"") + b"'"
                if b"from" in attrs:
                    reply += b" to='" + attrs[b"from"] + b"'"
                self.transport.write(reply + b"/>")  # type: ignore[union-attr]
                del buf[match.start():match.end()]
        if len(buf) > 1 << 20:
            del buf[:-65536]

    def write(self, data: bytes) -> None:
        self.transport.write(data)  # type: ignore[union-attr]

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(b"</stream:stream>")
            self.transport.close()


class Scram:
    """The client side of SCRAM-SHA-1 (scramp), remembering the server's iteration count."""

    iterations_seen: set[int] = set()

    def __init__(self, user: str, password: str) -> None:
        self.client = scramp.ScramClient(["SCRAM-SHA-1"], user, password)

    def first(self) -> str:
        return base64.b64encode(self.client.get_client_first().encode()).decode()

    def final(self, challenge: bytes) -> str:
        server_first = base64.b64decode(challenge).decode()
        for part in server_first.split(","):
            if part.startswith("i="):
                Scram.iterations_seen.add(int(part[2:]))
        self.client.set_server_first(server_first)
        return base64.b64encode(self.client.get_client_final().encode()).decode()

    def check(self, success: bytes | None) -> None:
        if success:
            self.client.set_server_final(base64.b64decode(success).decode())


def sasl_answer(match: re.Match[bytes], expected: str, user: str) -> bytes:
    kind = match.group(1).decode()
    if kind != expected:
        raise LoginFailed(f"{user}: SASL {kind} {match.group(0)[:200]!r}")
    return (match.group(2) or b"").strip()


async def c2s_login(args: argparse.Namespace, n: int, resource_: str,
                    recorder: Recorder | None = None, protocol: Callable[[], C2S] | None = None) -> C2S:
    """Connect, SCRAM-SHA-1, restart, bind: a session ready to chat."""
    if getattr(args, "websocket", False):
        return await websocket_login(args, n, resource_, recorder)
    loop = asyncio.get_running_loop()
    user = f"u{n}"
    _, client = await asyncio.wait_for(loop.create_connection(
        protocol or (lambda: C2S(recorder)), args.host, args.port, local_addr=(SOURCES[n % len(SOURCES)], 0)), 30)
    try:
        header = HEADER.format(domain=args.domain).encode()
        client.write(header)
        features = await client.expect(FEATURES)
        del features
        scram = Scram(user, args.password)
        client.write(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-1'>{scram.first()}</auth>".encode())
        challenge = sasl_answer(await client.expect(SASL), "challenge", user)
        client.write(f"<response xmlns='{SASL_NS}'>{scram.final(challenge)}</response>".encode())
        scram.check(sasl_answer(await client.expect(SASL), "success", user))
        client.write(header)
        await client.expect(FEATURES)
        client.write(f"<iq type='set' id='bind'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                     f"<resource>{resource_}</resource></bind></iq>".encode())
        await client.expect(BOUND)
    except BaseException:
        client.close()
        raise
    return client


# -- WebSocket (RFC 7395): the same C2S protocol object, its bytes framed


FRAMING_NS = "urn:ietf:params:xml:ns:xmpp-framing"
UPGRADED = re.compile(rb"\AHTTP/1\.1 101 [^\r]*\r\n(?:[^\r]+\r\n)*\r\n")


class Framed:
    """The transport of a WebSocket session: every write one masked text frame
    (RFC 6455 §5.2; the mask key is zero, so the payload goes unchanged)."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self.transport = transport

    def write(self, data: bytes) -> None:
        # load.py writes c2s stanzas, whose namespace the stream header gave; here each carries its own
        if not data.startswith(b"<open") and b"xmlns=" not in data[:data.find(b">")]:
            space = data.find(b" ")
            data = data[:space] + b" xmlns='jabber:client'" + data[space:]
        size = len(data)
        if size < 126:
            head = bytes((0x81, 0x80 | size))
        elif size < 65536:
            head = bytes((0x81, 0x80 | 126)) + size.to_bytes(2, "big")
        else:
            head = bytes((0x81, 0x80 | 127)) + size.to_bytes(8, "big")
        self.transport.write(head + b"\0\0\0\0" + data)

    def close(self) -> None:
        self.transport.close()


class WebSocketC2S(C2S):
    """A C2S session over WebSocket: after the HTTP upgrade, the server's
    frames (unmasked) are unwrapped into ``buf`` and the scanning is c2s's."""

    def __init__(self, recorder: Recorder | None = None) -> None:
        super().__init__(recorder)
        self.raw = bytearray()
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.socket = transport
        self.transport = transport  # type: ignore[assignment]  # the upgrade request goes unframed

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            self.raw += data
            payloads = []
            raw = self.raw
            while len(raw) >= 2:
                size, start = raw[1] & 0x7F, 2
                if size == 126:
                    size, start = int.from_bytes(raw[2:4], "big"), 4
                elif size == 127:
                    size, start = int.from_bytes(raw[2:10], "big"), 10
                if len(raw) < start + size:
                    break
                if raw[0] & 0x0F in (0x1, 0x0):
                    payloads.append(bytes(raw[start:start + size]))
                del raw[:start + size]
            if not payloads:
                return
            data = b"".join(payloads)
        super().data_received(data)

    def upgrade(self) -> None:
        self.upgraded = True
        self.transport = Framed(self.socket)  # type: ignore[assignment]
        rest = bytes(self.buf)
        self.buf.clear()
        if rest:
            self.data_received(rest)

    def close(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.write(f"<close xmlns='{FRAMING_NS}'/>".encode())
            self.transport.close()


async def websocket_login(args: argparse.Namespace, n: int, resource_: str,
                          recorder: Recorder | None = None) -> C2S:
    """Upgrade, <open/>, SCRAM-SHA-1, <open/> again, bind: a WebSocket session ready to chat."""
    loop = asyncio.get_running_loop()
    user = f"u{n}"
    _, client = await asyncio.wait_for(loop.create_connection(
        lambda: WebSocketC2S(recorder), args.host, args.http_port, local_addr=(SOURCES[n % len(SOURCES)], 0)), 30)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        client.write(f"GET {args.websocket_path} HTTP/1.1\r\nHost: {args.host}:{args.http_port}\r\n"
                     f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                     f"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n".encode())
        await client.expect(UPGRADED)
        client.upgrade()
        opening = f"<open xmlns='{FRAMING_NS}' to='{args.domain}' version='1.0'/>".encode()
        client.write(opening)
        await client.expect(FEATURES)
        scram = Scram(user, args.password)
        client.write(f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-1'>{scram.first()}</auth>".encode())
        challenge = sasl_answer(await client.expect(SASL), "challenge", user)
        client.write(f"<response xmlns='{SASL_NS}'>{scram.final(challenge)}</response>".encode())
        scram.check(sasl_answer(await client.expect(SASL), "success", user))
        client.write(opening)
        await client.expect(FEATURES)
        client.write(f"<iq type='set' id='bind' xmlns='jabber:client'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
                     f"<resource>{resource_}</resource></bind></iq>".encode())
        await client.expect(BOUND)
    except BaseException:
        client.close()
        raise
    return client


# -- S1: login storm


async def s1(args: argparse.Namespace) -> dict[str, Any]:
    pid = args.server_pid
    idle_rate = await server_idle_rate(pid, args.idle)
    gc.collect()
    rss_before = rss_kib(pid)
    started = time.monotonic()
    meter = Meter(pid, args.server_core)
    semaphore = asyncio.Semaphore(args.concurrency)
    sessions: list[C2S] = []
    login_ms: list[float] = []
    failures: list[str] = []

    async def one(n: int) -> None:
        async with semaphore:
            t0 = time.monotonic()
            try:
                sessions.append(await c2s_login(args, n, "storm"))
                login_ms.append((time.monotonic() - t0) * 1000)
            except (LoginFailed, OSError, TimeoutError) as e:
                failures.append(f"u{n}: {e}")

    try:
        await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(args.users))), args.timeout)
    except TimeoutError:
        failures.append(f"stopped after {args.timeout:.0f} s")
    stormed = time.monotonic() - started
    during = meter.read()
    await asyncio.sleep(args.settle)
    cpu_used = meter.read(idle_rate)["server_cpu_s"]
    ok = len(sessions)
    rss_after = rss_kib(pid)
    await asyncio.sleep(args.hold)
    alive = sum(not s.lost for s in sessions)
    for session in sessions:
        session.close()
    await asyncio.sleep(0.5)
    login_ms.sort()
    result = {
        "users": args.users,
        "logged_in": ok,
        "held_after": alive,
        "hold_s": args.hold,
        "failures": len(failures),
        "failure_examples": failures[:3],
        "storm_s": round(stormed, 2),
        "logins_per_s": round(ok / stormed, 1) if stormed else None,
        "server_cpu_s": round(cpu_used, 3),
        "server_cpu_ms_per_login": round(cpu_used * 1000 / ok, 3) if ok else None,
        "server_cpu_share": round(during["server_cpu_share"], 3),
        "server_idle_cpu_share": round(idle_rate, 4),
        "generator_cpu_share": round(during["generator_cpu_share"], 3),
        "others_on_server_core_share": round(during["others_on_server_core_share"], 3),
        "login_p50_ms": round(login_ms[len(login_ms) // 2], 1) if login_ms else None,
        "login_p99_ms": round(login_ms[int(len(login_ms) * 0.99)], 1) if login_ms else None,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "kib_per_session": round((rss_after - rss_before) / ok, 2) if ok else None,
        "scram_iterations_seen": sorted(Scram.iterations_seen),
    }
    log(f"S1: {ok}/{args.users} logged in in {stormed:.1f} s, {result['server_cpu_ms_per_login']} ms server CPU "
        f"per login, {result['kib_per_session']} KiB per session, generator CPU {result['generator_cpu_share']}")
    return result


async def server_idle_rate(pid: int, seconds: float = 2.0) -> float:
    """The server's CPU share while nothing happens (timers, polls), to subtract."""
    await asyncio.sleep(min(0.5, seconds))
    before, started = cpu_seconds(pid), time.monotonic()
    await asyncio.sleep(seconds)
    return (cpu_seconds(pid) - before) / (time.monotonic() - started)


# -- S2: chat throughput


async def enable_sm(client: C2S) -> None:
    """Stream management with resumption, as a phone client asks for it (XEP-0198)."""
    client.write(b"<enable xmlns='urn:xmpp:sm:3' resume='true'/>")
    await client.expect(SM_ENABLED)
    client.managed = True


async def enable_carbons(client: C2S) -> None:
    client.write(b"<iq type='set' id='carbons'><enable xmlns='urn:xmpp:carbons:2'/></iq>")
    await client.expect(IQ_RESULT)


async def run_rate(senders: list[tuple[Callable[[bytes], None], bytes]], recorder: Recorder, step: int,
                   rate: float, duration: float, drain: float, meter_of: Callable[[], Meter],
                   stanza: Callable[[bytes, int, int, int], bytes],
                   sent_by: list[int] | None = None) -> dict[str, Any]:
    """Send *rate* messages/s for *duration* s round robin over *senders*; wait
    up to *drain* s for the last ones; the step's figures."""
    recorder.open(step)
    loop = asyncio.get_running_loop()
    meter = meter_of()
    started = loop.time()
    started_at = time.time()  # wall clock, to line the step up with the server's log
    sent = 0
    worst_lag = 0.0
    count = len(senders)
    limit = int(rate * duration)
    next_tick = started
    while sent < limit:
        now = loop.time()
        worst_lag = max(worst_lag, now - next_tick)
        due = min(limit, int(rate * (now - started)) + 1) - sent
        stamp = now_us()
        for _ in range(due):
            send, to = senders[sent % count]
            send(stanza(to, step, stamp, sent))
            if sent_by is not None:
                sent_by[sent % count] += 1
            sent += 1
        next_tick = now + 0.002
        await asyncio.sleep(0.002)
        if loop.time() - started > duration * 3 + 10:
            break  # the generator cannot keep up; figures say so (lag)
    sending = loop.time() - started
    cpu = meter.read()
    deadline = loop.time() + drain
    while len(recorder.latencies) < sent and loop.time() < deadline:
        await asyncio.sleep(0.01)
    figures = summary(recorder.close(), sent)
    figures.update(
        rate=rate,
        achieved_rate=round(sent / sending, 1),
        server_cpu_share=round(cpu["server_cpu_share"], 3),
        generator_cpu_share=round(cpu["generator_cpu_share"], 3),
        others_on_server_core_share=round(cpu["others_on_server_core_share"], 3),
        generator_worst_lag_ms=round(worst_lag * 1000, 1),
        started_at=round(started_at, 3),
        ended_at=round(time.time(), 3),
    )
    return figures


async def quiet(recorder: Recorder, seconds: float = 1.0, limit: float = 30.0) -> None:
    """Wait until no message arrived for *seconds* (stragglers of an overloaded step)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and time.monotonic() - recorder.last_seen < seconds:
        await asyncio.sleep(0.1)


def c2s_stanza(to: bytes, step: int, stamp: int, seq: int) -> bytes:
    return (b"<message to='%s' type='chat' id='m%d'><body>bench %d %d %s</body></message>"
            % (to, seq, step, stamp, TEXT.encode()))


def passed(figures: dict[str, Any], p99_limit: float) -> bool:
    return (figures["delivered_share"] or 0) >= 0.99 and figures["p99_ms"] is not None \
        and figures["p99_ms"] <= p99_limit


async def s2(args: argparse.Namespace) -> dict[str, Any]:
    recorder = Recorder()
    semaphore = asyncio.Semaphore(args.concurrency)

    async def one(n: int) -> C2S:
        async with semaphore:
            client = await c2s_login(args, n, "s2", recorder)
            await enable_carbons(client)
            if args.sm:
                await enable_sm(client)
            return client

    clients = await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(2 * args.pairs))), args.timeout)
    for client in clients:
        client.chatting = True
        client._scan()
    senders = [(clients[n].write, f"u{n ^ 1}@{args.domain}/s2".encode()) for n in range(len(clients))]
    sent_by = [0] * len(senders)

    def meter() -> Meter:
        return Meter(args.server_pid, args.server_core)

    # warm-up, not recorded
    await run_rate(senders, recorder, -1, min(args.rates[0], 200), args.warmup, args.drain, meter, c2s_stanza,
                   sent_by)
    await quiet(recorder)
    log(f"S2 steps start: {len(clients)} sessions")
    steps = []
    failed_in_row = 0
    best: dict[str, Any] | None = None
    step = 0
    for rate in args.rates:
        for attempt in range(1 + args.retries):
            figures = await run_rate(senders, recorder, step, rate, args.step, args.drain, meter, c2s_stanza,
                                     sent_by)
            step += 1
            figures["passed"] = passed(figures, args.p99)
            figures["attempt"] = attempt + 1
            steps.append(figures)
            log(f"S2 {rate:>6} msg/s: delivered {figures['delivered_share']}, p50 {figures['p50_ms']} ms, "
                f"p99 {figures['p99_ms']} ms, server CPU {figures['server_cpu_share']}, "
                f"generator CPU {figures['generator_cpu_share']}, others on the server core "
                f"{figures['others_on_server_core_share']} -> {'pass' if figures['passed'] else 'FAIL'}")
            await quiet(recorder)
            if figures["passed"] or any(c.lost for c in clients):
                break
        if figures["passed"]:
            failed_in_row = 0
            best = figures
        else:
            failed_in_row += 1
            if failed_in_row == 2 or any(c.lost for c in clients):
                break
    lost = sum(c.lost for c in clients)
    await quiet(recorder)
    archived = await archive_count(args, clients[0])
    for client in clients:
        client.close()
    await asyncio.sleep(0.5)
    return {
        "archive_probe": {"user": "u0", "messages_exchanged": sent_by[0] + sent_by[1], "archive_count": archived},
        "pairs": args.pairs,
        "step_s": args.step,
        "p99_limit_ms": args.p99,
        "max_rate": best["rate"] if best else 0,
        "at_max": best,
        "steps": steps,
        "errors_received": recorder.errors,
        "late_messages": recorder.late,
        "sessions_lost": lost,
    }


async def archive_count(args: argparse.Namespace, client: C2S) -> int | None:
    """How many messages u0's archive holds (MAM, XEP-0313, with an RSM count)."""
    client.chatting = False
    client.buf.clear()
    client.write(b"<iq type='set' id='mam'><query xmlns='urn:xmpp:mam:2'>"
                 b"<set xmlns='http://jabber.org/protocol/rsm'><max>0</max></set></query></iq>")
    try:
        fin = await client.expect(FIN, 60)
    except LoginFailed as e:
        log(f"MAM probe: {e}")
        return None
    count = re.search(rb"<count>(\d+)</count>", fin.group(0))
    return int(count.group(1)) if count else None


async def s2_fixed(args: argparse.Namespace) -> dict[str, Any]:
    """S2 at one rate for a while (for profiling)."""
    args.rates = [args.rate]
    args.step = args.duration
    args.retries = 0
    return await s2(args)


# -- BOSH


class HTTP(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection; one request at a time."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.buf = bytearray()
        self.transport: asyncio.Transport | None = None
        self.busy = False
        self.callback: Callable[[bytes | None], None] | None = None
        self.lost = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        if self.busy and self.callback is not None:
            self.busy = False
            self.callback(None)

    def post(self, body: bytes, callback: Callable[[bytes | None], None]) -> None:
        self.busy = True
        self.callback = callback
        self.transport.write(  # type: ignore[union-attr]
            b"POST /http-bind HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Type: text/xml; charset=utf-8\r\n"
            b"Content-Length: %d\r\n\r\n%s" % (self.port, len(body), body))

    async def request(self, body: bytes, timeout: float = 70) -> bytes:
        future: asyncio.Future[bytes | None] = asyncio.get_running_loop().create_future()
        self.post(body, lambda answer: future.done() or future.set_result(answer))
        answer = await asyncio.wait_for(future, timeout)
        if answer is None:
            raise LoginFailed("HTTP connection closed")
        return answer

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while True:
            answer = self._answer()
            if answer is None:
                return
            self.busy = False
            callback, self.callback = self.callback, None
            if callback is not None:
                callback(answer)

    def _answer(self) -> bytes | None:
        buf = self.buf
        head_end = buf.find(b"\r\n\r\n")
        if head_end < 0:
            return None
        head = bytes(buf[:head_end]).lower()
        start = head_end + 4
        if b"transfer-encoding: chunked" in head:
            body = bytearray()
            at = start
            while True:
                line_end = buf.find(b"\r\n", at)
                if line_end < 0:
                    return None
                size = int(bytes(buf[at:line_end]).split(b";")[0], 16)
                if len(buf) < line_end + 2 + size + 2:
                    return None
                body += buf[line_end + 2:line_end + 2 + size]
                at = line_end + 2 + size + 2
                if size == 0:
                    del buf[:at]
                    return bytes(body)
        match = re.search(rb"content-length:\s*(\d+)", head)
        length = int(match.group(1)) if match else 0
        if len(buf) < start + length:
            return None
        answer = bytes(buf[start:start + length])
        del buf[:start + length]
        if not head.startswith(b"http/1.1 200"):
            return b"<body type='terminate' condition='http-" + head[9:12] + b"'/>"
        return answer


class BOSHUser:
    """A long-polling BOSH client: one request held, a second one for what it sends."""

    def __init__(self, args: argparse.Namespace, n: int, recorder: Recorder) -> None:
        self.args = args
        self.n = n
        self.recorder = recorder
        self.rid = random.randrange(1 << 20, 1 << 40)
        self.sid = b""
        self.connections: list[HTTP] = []
        self.outstanding = 0
        self.queue: list[bytes] = []
        self.chatting = False
        self.dead: str | None = None

    async def connect(self) -> HTTP:
        loop = asyncio.get_running_loop()
        _, connection = await asyncio.wait_for(loop.create_connection(
            lambda: HTTP(self.args.http_port), self.args.host, self.args.http_port,
            local_addr=(SOURCES[(self.n + len(self.connections)) % len(SOURCES)], 0)), 30)
        self.connections.append(connection)
        return connection

    def body(self, payload: bytes = b"", attributes: bytes = b"") -> bytes:
        self.rid += 1
        return (b"<body rid='%d' sid='%s' xmlns='%s'%s>%s</body>"
                % (self.rid, self.sid, BOSH_NS.encode(), attributes, payload))

    async def exchange(self, connection: HTTP, payload: bytes, pattern: re.Pattern[bytes],
                       attributes: bytes = b"") -> re.Match[bytes]:
        """Send *payload*; poll on until *pattern* shows up (at most 10 requests)."""
        seen = b""
        answer = await connection.request(self.body(payload, attributes))
        for _ in range(10):
            seen += answer
            if TERMINATE.search(answer):
                raise LoginFailed(f"u{self.n}: BOSH session terminated: {answer[:300]!r}")
            match = pattern.search(seen)
            if match is not None:
                return match
            answer = await connection.request(self.body())
        raise LoginFailed(f"u{self.n}: no {pattern.pattern!r} in {seen[:300]!r}")

    async def login(self) -> None:
        args, user = self.args, f"u{self.n}"
        connection = await self.connect()
        self.rid += 1
        created = await connection.request(
            (f"<body rid='{self.rid}' to='{args.domain}' xml:lang='en' wait='{args.wait}' hold='1' ver='1.11'"
             f" content='text/xml; charset=utf-8' xmpp:version='1.0' xmlns='{BOSH_NS}'"
             " xmlns:xmpp='urn:xmpp:xbosh'/>").encode())
        match = SID.search(created)
        if match is None:
            raise LoginFailed(f"{user}: no sid in {created[:300]!r}")
        self.sid = match.group(1)
        if not FEATURES.search(created):
            await self.exchange(connection, b"", FEATURES)
        scram = Scram(user, args.password)
        auth = f"<auth xmlns='{SASL_NS}' mechanism='SCRAM-SHA-1'>{scram.first()}</auth>".encode()
        challenge = sasl_answer(await self.exchange(connection, auth, SASL), "challenge", user)
        response = f"<response xmlns='{SASL_NS}'>{scram.final(challenge)}</response>".encode()
        scram.check(sasl_answer(await self.exchange(connection, response, SASL), "success", user))
        await self.exchange(connection, b"", FEATURES,
                            f" to='{args.domain}' xml:lang='en' xmpp:restart='true'"
                            " xmlns:xmpp='urn:xmpp:xbosh'".encode())
        await self.exchange(connection, b"<iq xmlns='jabber:client' type='set' id='bind'>"
                            b"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>s3</resource></bind></iq>",
                            BOUND)
        await self.connect()  # the second connection, for sending while a poll is held

    # -- long polling

    def start(self) -> None:
        self.chatting = True
        self._post(b"")

    def _post(self, payload: bytes) -> None:
        for connection in self.connections:
            if not connection.busy and not connection.lost:
                self.outstanding += 1
                connection.post(self.body(payload), self._answered)
                return
        self.dead = self.dead or "no usable HTTP connection"

    def send(self, stanza: bytes) -> None:
        if self.dead:
            return
        if self.outstanding < 2:
            self._post(stanza)
        else:
            self.queue.append(stanza)

    def _answered(self, answer: bytes | None) -> None:
        self.outstanding -= 1
        if answer is None:
            self.dead = self.dead or "HTTP connection closed"
            return
        if b"bench " in answer:
            self.recorder.seen(answer)
        if b"terminate" in answer and TERMINATE.search(answer):
            self.dead = self.dead or answer[:200].decode(errors="replace")
            return
        if not self.chatting:
            return
        if self.queue and self.outstanding < 2:
            payload = b"".join(self.queue)
            self.queue.clear()
            self._post(payload)
        elif self.outstanding == 0:
            self._post(b"")

    def close(self) -> None:
        self.chatting = False
        for connection in self.connections:
            if connection.transport is not None:
                connection.transport.close()


def bosh_stanza(to: bytes, step: int, stamp: int, seq: int) -> bytes:
    return (b"<message xmlns='jabber:client' to='%s' type='chat' id='m%d'><body>bench %d %d %s</body></message>"
            % (to, seq, step, stamp, TEXT.encode()))


async def s3(args: argparse.Namespace) -> dict[str, Any]:
    pid = args.server_pid
    recorder = Recorder()
    users = [BOSHUser(args, n, recorder) for n in range(args.users)]
    idle_rate = await server_idle_rate(pid, args.idle)
    gc.collect()
    rss_before = rss_kib(pid)
    semaphore = asyncio.Semaphore(args.concurrency)
    failures: list[str] = []
    started = time.monotonic()
    meter = Meter(pid, args.server_core)

    async def one(user: BOSHUser) -> None:
        async with semaphore:
            try:
                await user.login()
                user.start()
            except (LoginFailed, OSError, TimeoutError) as e:
                user.dead = str(e)
                failures.append(f"u{user.n}: {e}")

    try:
        await asyncio.wait_for(asyncio.gather(*(one(u) for u in users)), args.timeout)
    except TimeoutError:
        failures.append(f"stopped after {args.timeout:.0f} s")
    logged_in = sum(u.dead is None for u in users)
    login_s = time.monotonic() - started
    login_cpu = meter.read(idle_rate)
    log(f"S3: {logged_in}/{args.users} BOSH users logged in in {login_s:.1f} s ({failures[:1]})")
    await asyncio.sleep(args.settle)
    rss_after = rss_kib(pid)
    held_rate = await server_idle_rate(pid, args.idle)
    senders = [(users[n].send, f"u{n ^ 1}@{args.domain}/s3".encode())
               for n in range(len(users)) if users[n].dead is None and users[n ^ 1].dead is None]
    figures: dict[str, Any] = {}
    log(f"S3 chat starts: {len(senders)} senders")
    if senders:
        figures = await run_rate(senders, recorder, 0, args.rate, args.duration, args.drain,
                                 lambda: Meter(pid, args.server_core), bosh_stanza)
    dead = [u.dead for u in users if u.dead]
    for user in users:
        user.close()
    result = {
        "users": args.users,
        "logged_in": logged_in,
        "login_s": round(login_s, 1),
        "failures": len(failures),
        "failure_examples": failures[:3],
        "rate": args.rate,
        "duration_s": args.duration,
        "rss_before_kib": rss_before,
        "rss_after_kib": rss_after,
        "kib_per_session": round((rss_after - rss_before) / logged_in, 2) if logged_in else None,
        "server_cpu_ms_per_login": round(login_cpu["server_cpu_s"] * 1000 / logged_in, 3) if logged_in else None,
        "server_idle_cpu_share": round(idle_rate, 4),
        "server_cpu_share_sessions_held": round(held_rate, 4),
        "sessions_ended": len(dead),
        "ended_examples": dead[:3],
        "errors_received": recorder.errors,
        **figures,
    }
    if figures:
        result["passed"] = passed(figures, args.p99)
    log(f"S3 {args.users} users at {args.rate} msg/s: delivered {figures.get('delivered_share')}, "
        f"p50 {figures.get('p50_ms')} ms, p99 {figures.get('p99_ms')} ms, server CPU "
        f"{figures.get('server_cpu_share')}, {result['kib_per_session']} KiB per BOSH session")
    return result


# -- S4: presence fan-out

#: a desktop client's initial presence: XEP-0115 caps, as Gajim, Psi or Conversations send it
INITIAL_PRESENCE = (b"<presence><c xmlns='http://jabber.org/protocol/caps' hash='sha-1'"
                    b" node='https://bench.test/client' ver='QgayPKawpkPSDYmwT/WM94uAlu0='/></presence>")
PRESENCE = b"<presence"
ROSTER_GET = b"<iq type='get' id='roster'><query xmlns='jabber:iq:roster'/></iq>"


ROSTER_NS = b"jabber:iq:roster"


def counted(pattern: bytes, before: bytes, data: bytes) -> int:
    """Occurrences of *pattern* in *data*, and those split between the end of *before* and *data*."""
    edge = len(pattern) - 1
    return data.count(pattern) + (before[-edge:] + data[:edge]).count(pattern)


class Counter(C2S):
    """A c2s client that, once it asked for its roster and sent presence, only
    counts the presence stanzas (and roster answers) it receives."""

    def __init__(self) -> None:
        super().__init__()
        self.counting = False
        self.presences = 0
        self.rosters = 0
        self._tail = b""

    def data_received(self, data: bytes) -> None:
        if not self.counting:
            super().data_received(data)
            return
        self.presences += counted(PRESENCE, self._tail, data)
        self.rosters += counted(ROSTER_NS, self._tail, data)
        self._tail = data[-32:]
        if b"urn:xmpp:ping" in data:  # a long round: answer the server's pings
            self.buf[:] = data
            self._scan()
            self.buf.clear()

    def available(self) -> None:
        """Do what a client does after binding: ask for the roster, then send presence."""
        self.buf.clear()  # nothing but the bind result: no presence comes before ours
        self.counting = True
        self.write(ROSTER_GET + INITIAL_PRESENCE)


async def s4(args: argparse.Namespace) -> dict[str, Any]:
    """Rounds of a whole domain logging in with presence, growing in size.

    Everyone of a domain sees everyone, so a round of N users delivers N x N
    presence stanzas (each user gets everyone's, its own included). The
    server's CPU per delivered stanza must not grow with N: nothing is
    looked up per stanza.
    """
    await server_quiet(args.server_pid, 0.0, args.timeout)  # (an earlier run's logouts may still go out)
    idle_rate = await server_idle_rate(args.server_pid, args.idle)
    rounds = []
    for index, size in enumerate(args.sizes):
        if rounds:
            await server_quiet(args.server_pid, idle_rate, args.timeout)
        last = await presence_round(args, size, idle_rate)
        rounds.append(last)
        if last["presences_delivered"] < last["logged_in"] * (last["logged_in"] - 1):
            break  # not even everyone else's presence came: a larger round would not either
        if index + 1 < len(args.sizes):
            # the work grows as the square of the size at best
            expected_s = last["total_s"] * (args.sizes[index + 1] / size) ** 2
            if expected_s > args.round_limit:
                log(f"S4: {size} users took {last['total_s']:.0f} s; {args.sizes[index + 1]} would take "
                    f"{expected_s:.0f} s or more: no larger round")
                break
    first, last = rounds[0], rounds[-1]
    growth = None
    if first["server_cpu_us_per_presence"] and last["server_cpu_us_per_presence"]:
        growth = round(last["server_cpu_us_per_presence"] / first["server_cpu_us_per_presence"], 3)
    return {"rounds": rounds, "server_idle_cpu_share": round(idle_rate, 4),
            "cpu_per_presence_growth": growth,
            "users_growth": round(last["users"] / first["users"], 2),
            "presences_growth": round(last["presences_delivered"] / max(1, first["presences_delivered"]), 2)}


async def presence_round(args: argparse.Namespace, size: int, idle_rate: float) -> dict[str, Any]:
    """*size* users log in and send initial presence; wait until each got everyone's."""
    semaphore = asyncio.Semaphore(args.concurrency)
    clients: list[Counter] = []
    failures: list[str] = []

    async def one(n: int) -> None:
        async with semaphore:
            try:
                client = await c2s_login(args, n, "s4", protocol=Counter)
            except (LoginFailed, OSError, TimeoutError) as e:
                failures.append(f"u{n}: {e}")
                return
            assert isinstance(client, Counter)
            client.available()
            clients.append(client)

    meter = Meter(args.server_pid, args.server_core)
    started = time.monotonic()
    try:
        await asyncio.wait_for(asyncio.gather(*(one(n) for n in range(size))), args.timeout)
    except TimeoutError:
        failures.append(f"stopped after {args.timeout:.0f} s")
    logins_s = time.monotonic() - started
    expected = len(clients) ** 2
    # Done when presence stops coming: for 0.5 s once everyone can have
    # everyone's (a server may send more, e.g. probe answers), else for 10 s (a
    # server that does not echo a user's own presence, or loses some), or
    # 60 s while nothing at all came (a server still busy with the logins).
    deadline = time.monotonic() + args.timeout
    seen, last_change = -1, time.monotonic()
    while time.monotonic() < deadline and not any(c.lost for c in clients):
        count = sum(c.presences for c in clients)
        if count != seen:
            seen, last_change = count, time.monotonic()
        elif time.monotonic() - last_change > (0.5 if count >= expected else 10 if count else 60):
            break
        await asyncio.sleep(0.05)
    total_s = last_change - started
    figures = meter.read(idle_rate)
    delivered = sum(c.presences for c in clients)
    lost = sum(c.lost for c in clients)
    cpu = figures["server_cpu_s"]
    result = {
        "users": size,
        "logged_in": len(clients),
        "failures": len(failures),
        "failure_examples": failures[:3],
        "sessions_lost": lost,
        "presences_expected": expected,
        "presences_delivered": delivered,
        "rosters_received": sum(c.rosters for c in clients),
        "all_delivered": delivered == expected and not lost,
        "logins_s": round(logins_s, 2),
        "total_s": round(total_s, 2),
        "server_cpu_s": round(cpu, 3),
        "server_cpu_share": round(figures["server_cpu_share"], 3),
        "server_cpu_us_per_presence": round(cpu * 1e6 / delivered, 3) if delivered else None,
        "server_cpu_ms_per_user": round(cpu * 1000 / len(clients), 3) if clients else None,
        "generator_cpu_share": round(figures["generator_cpu_share"], 3),
        "others_on_server_core_share": round(figures["others_on_server_core_share"], 3),
    }
    log(f"S4 {size} users: {delivered}/{expected} presences in {total_s:.1f} s, server CPU {cpu:.2f} s = "
        f"{result['server_cpu_us_per_presence']} µs per presence delivered, {lost} sessions lost")
    for client in clients:
        client.close()
    return result


async def server_quiet(pid: int, idle_rate: float, limit: float) -> None:
    """Wait until the server is back to its idle CPU, or within 3 % of a core of it
    (the logouts' unavailable presence went out)."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if await server_idle_rate(pid, 0.5) <= idle_rate + 0.03:
            return


# -- command line


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenario", choices=["s1", "s2", "s2-fixed", "s3", "s4"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5222, help="c2s port")
    parser.add_argument("--http-port", type=int, default=5280, help="BOSH port (/http-bind)")
    parser.add_argument("--domain", default=DOMAIN)
    parser.add_argument("--password", default=PASSWORD)
    parser.add_argument("--server-pid", type=int, required=True, help="the server process measured")
    parser.add_argument("--server-core", type=int, default=0, help="the core the server is pinned to")
    parser.add_argument("--users", type=int, default=1000, help="S1: sessions; S3: BOSH users (even)")
    parser.add_argument("--concurrency", type=int, default=100, help="logins at a time")
    parser.add_argument("--settle", type=float, default=2.0, help="seconds after logins before measuring")
    parser.add_argument("--idle", type=float, default=2.0, help="seconds the idle server's CPU is measured")
    parser.add_argument("--warmup", type=float, default=1.0, help="S2: seconds of unrecorded chat first")
    parser.add_argument("--hold", type=float, default=5.0, help="S1: seconds the sessions are held")
    parser.add_argument("--pairs", type=int, default=100, help="S2: chatting pairs")
    parser.add_argument("--rates", default="250,500,750,1000,1500,2000,3000,4000,5000,6000,8000,10000",
                        help="S2: total msg/s, stepped")
    parser.add_argument("--step", type=float, default=10.0, help="S2: seconds per rate")
    parser.add_argument("--p99", type=float, default=100.0, help="p99 limit in ms for a passing step")
    parser.add_argument("--retries", type=int, default=1,
                        help="S2: a failed rate is tried again this many times (other work on the machine "
                             "makes single steps fail)")
    parser.add_argument("--drain", type=float, default=3.0, help="seconds to wait for the last messages")
    parser.add_argument("--rate", type=float, default=400.0, help="S3 and s2-fixed: total msg/s")
    parser.add_argument("--duration", type=float, default=30.0, help="S3 and s2-fixed: seconds of chat")
    parser.add_argument("--wait", type=int, default=60, help="S3: BOSH 'wait' in seconds")
    parser.add_argument("--sizes", default="200,1000,2500,5000",
                        help="S4: users of the domain in each round (comma separated, growing)")
    parser.add_argument("--round-limit", type=float, default=120.0,
                        help="S4: no larger round if it would take longer than this (seconds; from the "
                             "round before, the time growing as the square of the size)")
    parser.add_argument("--timeout", type=float, default=600.0, help="give up logging in after this")
    parser.add_argument("--sm", action="store_true",
                        help="S2: every session enables stream management (XEP-0198) and acknowledges")
    parser.add_argument("--websocket", action="store_true",
                        help="S1, S2: sessions over WebSocket (RFC 7395) at --http-port instead of c2s")
    parser.add_argument("--websocket-path", default="/xmpp-websocket")
    args = parser.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",")] if isinstance(args.rates, str) else args.rates
    args.users = min(args.users, 20000)
    args.sizes = [min(int(n), 20000) for n in args.sizes.split(",")]
    if args.scenario == "s3":
        args.users += args.users % 2
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    scenario = {"s1": s1, "s2": s2, "s2-fixed": s2_fixed, "s3": s3, "s4": s4}[args.scenario]
    result = asyncio.run(asyncio.wait_for(scenario(args), args.timeout * 2 + 900))
    result["scenario"] = args.scenario
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
