"""WebSocket (RFC 7395) against c2s: memory per idle session and S2.

One chatgate (``twistd -n chatgate``, the settings of bench/servers.py:
SQLite archive, limits lifted, ``[http] websocket_path`` at its default)
pinned to core 0, bench/load.py pinned to core 1, as for the other load
runs. A fresh server for each transport, c2s then WebSocket, answers S1
(``--users`` sessions logged in with SCRAM-SHA-1 and bound, held idle: the
server's RSS delta per session), then S2 (``--pairs`` pairs chat at
``--rates``, the highest rate that passes: >= 99 % delivered, p99 <= 100
ms). Both transports speak the same bytes from load.py's client (plain c2s,
and the same stanzas in WebSocket frames: see ``load.py --websocket``). The
last line is the figures as JSON, every S2 step with its server CPU among them.

    .venv/bin/python bench/websocket.py --users 2000 --pairs 100

``--transport-cost`` measures instead, in this process and without a
network, what each transport adds to one chat message: the server's time to
take one stanza in (a c2s read, a WebSocket frame: framing, parsing, up to
the stream, which does nothing with it here) and to write one out, the best
of several rounds. The load runs above swing by 10 % or more from run to
run; this figure does not.

    .venv/bin/python bench/websocket.py --transport-cost
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from servers import Chatgate

HERE = Path(__file__).resolve().parent
SERVER_CORE, LOAD_CORE = 0, 1


def load(server: Chatgate, scenario: str, websocket: bool, extra: list[str], timeout: float) -> dict[str, Any]:
    command = ["taskset", "-c", str(LOAD_CORE), sys.executable, str(HERE / "load.py"), scenario,
               "--port", str(server.c2s_port), "--http-port", str(server.http_port),
               "--server-pid", str(server.pid), "--server-core", str(SERVER_CORE), *extra]
    if websocket:
        command.append("--websocket")
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout)
    if done.returncode != 0:
        raise RuntimeError(f"load.py failed (exit {done.returncode}):\n{server.tail(15)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def transport_cost(rounds: int = 5, number: int = 20000) -> dict[str, float]:
    """Microseconds per stanza in and out, c2s and WebSocket (rate limits lifted, no network)."""
    import timeit
    from dataclasses import replace
    from types import SimpleNamespace

    from twisted.internet.address import IPv4Address
    from twisted.internet.task import Clock
    from twisted.internet.testing import StringTransport

    from chatgate.config import Settings
    from chatgate.transports import c2s, websocket

    defaults = Settings()
    settings = replace(defaults, limits=replace(defaults.limits, read_rate=1e15, read_burst=1e15,
                                                 stanza_rate=1e15, stanza_burst=1e15))
    router = SimpleNamespace(domains=SimpleNamespace(is_hosted=lambda domain: True))
    stanza = (b"<message xmlns='jabber:client' to='u1@example.com/s2' type='chat' id='a1b2c3'>"
              b"<body>m 12345 1733380000.123456 hello hello hello hello</body></message>")
    received = [0]

    class Stream:  # what the transports hand a stanza to, doing nothing with it
        session = None

        def receive(self, element: Any) -> None:
            received[0] += 1

    # a WebSocket after its upgrade and <open/>; the stanza in a masked text frame
    factory = websocket.WebSocketFactory(router, None, settings, Clock())  # type: ignore[arg-type]
    protocol = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 1))
    ws_transport = StringTransport()
    protocol.makeConnection(ws_transport)
    protocol.dataReceived(b"GET /xmpp-websocket HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                          b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: xmpp\r\n\r\n")
    ws = protocol.connection
    ws.stream, ws._opened = Stream(), True
    mask = b"\x1f\x2e\x3d\x4c"
    frame = bytes((0x81, 0x80 | 126)) + len(stanza).to_bytes(2, "big") + mask + bytes(
        byte ^ mask[i % 4] for i, byte in enumerate(stanza))
    # a c2s stream after its header
    c2s_factory = SimpleNamespace(settings=settings, direct_tls=False, router=router, authenticator=None,
                                  resumption=None, clock=Clock(), preauth={})
    plain = c2s.C2SConnection(c2s_factory)  # type: ignore[arg-type]
    c2s_transport = StringTransport()
    plain.makeConnection(c2s_transport)
    plain.dataReceived(b"<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams'"
                       b" to='example.com' version='1.0'>")
    plain.stream = Stream()

    def ws_out() -> None:
        ws.write(stanza)
        ws_transport.clear()

    def c2s_out() -> None:
        plain.write(stanza)
        c2s_transport.clear()

    cases = {"c2s_in": lambda: plain.dataReceived(stanza), "websocket_in": lambda: protocol.dataReceived(frame),
             "c2s_out": c2s_out, "websocket_out": ws_out}
    figures = {}
    for name, case in cases.items():
        received[0] = 0
        best = min(timeit.repeat(case, number=number, repeat=rounds))
        if name.endswith("_in") and received[0] != rounds * number:
            raise RuntimeError(f"{name}: {received[0]} stanzas arrived of {rounds * number}")
        figures[name] = round(best / number * 1e6, 2)
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000, help="S1: idle sessions per transport")
    parser.add_argument("--pairs", type=int, default=100, help="S2: chatting pairs")
    parser.add_argument("--rates", default="1000,2000,3000,4000,5000,6000,8000,10000",
                        help="S2: total msg/s, comma separated")
    parser.add_argument("--step", type=float, default=5.0, help="S2: seconds per rate")
    parser.add_argument("--transport-cost", action="store_true",
                        help="only the microseconds each transport spends on a stanza in and out, in-process")
    args = parser.parse_args()
    if args.transport_cost:
        cost = transport_cost()
        print(f"per stanza in: c2s {cost['c2s_in']} us, WebSocket {cost['websocket_in']} us; "
              f"out: c2s {cost['c2s_out']} us, WebSocket {cost['websocket_out']} us")
        print(json.dumps(cost))
        return
    figures: dict[str, Any] = {}
    for websocket in (False, True):
        # a fresh server for each transport: the first one's freed heap would hide the second's growth
        name = "websocket" if websocket else "c2s"
        server = Chatgate(max(args.users, 2 * args.pairs), core=SERVER_CORE)
        server.start()
        try:
            s1 = load(server, "s1", websocket, ["--users", str(args.users), "--hold", "1"], 900)
            figures[f"s1_{name}"] = {k: s1[k] for k in ("logged_in", "held_after", "kib_per_session",
                                                         "server_cpu_ms_per_login")}
            print(f"S1 {name}: {figures[f's1_{name}']}", file=sys.stderr, flush=True)
            s2 = load(server, "s2", websocket, ["--pairs", str(args.pairs), "--rates", args.rates,
                                                "--step", str(args.step)], 1800)
            steps = [{key: step[key] for key in ("rate", "attempt", "passed", "delivered_share", "p50_ms",
                                                 "p99_ms", "server_cpu_share")} for step in s2["steps"]]
            figures[f"s2_{name}"] = {"max_rate": s2["max_rate"], "at_max": s2["at_max"],
                                     "sessions_lost": s2["sessions_lost"], "steps": steps}
            print(f"S2 {name}: max {s2['max_rate']} msg/s, at it {s2['at_max']}", file=sys.stderr, flush=True)
        finally:
            server.stop()
            server.cleanup()
    c2s, ws = figures["s1_c2s"]["kib_per_session"], figures["s1_websocket"]["kib_per_session"]
    rate_c2s, rate_ws = figures["s2_c2s"]["max_rate"], figures["s2_websocket"]["max_rate"]
    print(f"idle session: c2s {c2s} KiB, WebSocket {ws} KiB ({ws - c2s:+.1f} KiB; goal <= +4)")
    print(f"S2: c2s {rate_c2s:.0f} msg/s, WebSocket {rate_ws:.0f} msg/s "
          f"({rate_ws / rate_c2s:.0%} of c2s; goal >= 80 %)" if rate_c2s else "S2: c2s passed no rate")
    print(json.dumps(figures))


if __name__ == "__main__":
    main()
