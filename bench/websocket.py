"""WebSocket (RFC 7395) against c2s: memory per idle session and S2.

One chatgate (``twistd -n chatgate``, the settings of bench/servers.py:
SQLite archive, limits lifted, ``[http] websocket_path`` at its default)
pinned to core 0, bench/load.py pinned to core 1, as for the other load
runs. A fresh server for each transport, c2s then WebSocket, answers S1
(``--users`` sessions logged in with SCRAM-SHA-1 and bound, held idle: the
server's RSS delta per session), then S2 (``--pairs`` pairs chat at
``--rates``, the highest rate that passes: >= 99 % delivered, p99 <= 100
ms). Both transports speak the same bytes from load.py's client (plain c2s,
and the same stanzas in WebSocket frames: see ``load.py --websocket``).

    .venv/bin/python bench/websocket.py --users 2000 --pairs 100
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000, help="S1: idle sessions per transport")
    parser.add_argument("--pairs", type=int, default=100, help="S2: chatting pairs")
    parser.add_argument("--rates", default="1000,2000,3000,4000,5000,6000,8000,10000",
                        help="S2: total msg/s, comma separated")
    parser.add_argument("--step", type=float, default=5.0, help="S2: seconds per rate")
    args = parser.parse_args()
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
            figures[f"s2_{name}"] = {"max_rate": s2["max_rate"], "at_max": s2["at_max"],
                                     "sessions_lost": s2["sessions_lost"]}
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
