"""What stream management (XEP-0198) costs: S2 with and without it.

One chatgate (``twistd -n chatgate``, the settings of bench/servers.py: SQLite
archive, limits lifted) pinned to core 0, bench/load.py pinned to core 1. For
each rate, S2 at that fixed rate (``load.py s2-fixed``: ``--pairs`` pairs chat
to each other's full JID, carbons on) runs ``--rounds`` times without and with
``--sm`` (every session enables stream management with resumption and
acknowledges what it gets when the server asks: the server counts, queues,
asks for acks after ``[sm] ack_every`` stanzas and drops what is acknowledged),
the two alternating on the same server, so a drift of the machine falls on
both. The figure is the server's CPU share (utime + stime over the chat),
and p99 latency; the overhead is the median with SM over the median without.

    .venv/bin/python bench/sm.py --rates 2000,4000,6000 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
from pathlib import Path
from typing import Any

from servers import Chatgate

HERE = Path(__file__).resolve().parent
SERVER_CORE, LOAD_CORE = 0, 1


def s2_fixed(server: Chatgate, args: argparse.Namespace, rate: float, sm: bool) -> dict[str, Any]:
    command = ["taskset", "-c", str(LOAD_CORE), sys.executable, str(HERE / "load.py"), "s2-fixed",
               "--port", str(server.c2s_port), "--http-port", str(server.http_port),
               "--server-pid", str(server.pid), "--server-core", str(SERVER_CORE),
               "--pairs", str(args.pairs), "--rate", str(rate), "--duration", str(args.duration)]
    if sm:
        command.append("--sm")
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=args.duration * 4 + 300)
    if done.returncode != 0:
        raise RuntimeError(f"load.py failed (exit {done.returncode}):\n{server.tail(15)}")
    result = json.loads(done.stdout.strip().splitlines()[-1])
    step = result["steps"][-1]
    return {"server_cpu_share": step["server_cpu_share"], "p99_ms": step["p99_ms"],
            "delivered_share": step["delivered_share"], "sessions_lost": result["sessions_lost"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="2000,4000,6000", help="total msg/s, comma separated")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each configuration at each rate")
    parser.add_argument("--pairs", type=int, default=100)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds of chat per run")
    args = parser.parse_args()
    server = Chatgate(2 * args.pairs, core=SERVER_CORE)
    server.start()
    rows = []
    try:
        for rate in (float(r) for r in args.rates.split(",")):
            runs: dict[bool, list[dict[str, Any]]] = {False: [], True: []}
            for n in range(args.rounds):
                for sm in ((False, True) if n % 2 == 0 else (True, False)):
                    runs[sm].append(s2_fixed(server, args, rate, sm))
                    print(f"{rate:.0f} msg/s, SM {'on ' if sm else 'off'}: {runs[sm][-1]}", file=sys.stderr)
            cpu = {sm: statistics.median(r["server_cpu_share"] for r in runs[sm]) for sm in runs}
            p99 = {sm: statistics.median(r["p99_ms"] or float("inf") for r in runs[sm]) for sm in runs}
            rows.append({"rate": rate, "cpu_without": cpu[False], "cpu_with": cpu[True],
                         "overhead": round(cpu[True] / cpu[False] - 1, 3) if cpu[False] else None,
                         "p99_without_ms": p99[False], "p99_with_ms": p99[True], "runs": runs})
    finally:
        server.stop()
        server.cleanup()
    print("| S2 rate | server CPU without SM | with SM | overhead | p99 without / with |")
    print("|---:|---:|---:|---:|---:|")
    for row in rows:
        print(f"| {row['rate']:,.0f} msg/s | {row['cpu_without']:.0%} | {row['cpu_with']:.0%} | "
              f"{row['overhead']:+.1%} | {row['p99_without_ms']} / {row['p99_with_ms']} ms |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
