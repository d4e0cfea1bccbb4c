"""Load benchmark: chatgate beside Prosody and ejabberd, in one run.

Each server runs pinned to core 0 and ``bench/load.py`` pinned to core 1, one
server at a time, each scenario on a freshly started server (so one scenario's
freed memory does not hide the next one's). S2, chat throughput, comes first
with the servers' ladders interleaved: each rate in turn on every server still
climbing, so that a drift in the machine's speed falls on all of them alike;
then chatgate is profiled with py-spy under S2 at a fixed rate; then each
server in turn runs S1 (login storm), S3 (BOSH) and S4 (presence fan-out).
Writes the raw figures to ``bench/results/`` and the section "Load: chatgate
vs Prosody vs ejabberd" of ``bench/RESULTS.md`` (only that section; the others
are left as they are).

    .venv/bin/python bench/run.py            # the full run, about 40 minutes
    .venv/bin/python bench/run.py --quick    # small sizes, under a minute (a smoke test: RESULTS.md untouched)

Missing servers are installed first with ``bench/setup.sh`` (apt, as root).
Figures from a machine where other work runs are noisy: the "others on the
server core" columns say how much CPU other processes took on core 0, and
only ratios from one run count.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from servers import SERVERS, BenchServer, Chatgate, free_port  # noqa: E402

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
SECTION = "## Load: chatgate vs Prosody vs ejabberd"
SERVER_CORE, LOAD_CORE = 0, 1
NAMES = {"chatgate": "chatgate", "prosody": "Prosody", "ejabberd": "ejabberd"}


def log(text: str) -> None:
    print(f"[run {time.strftime('%H:%M:%S')}] {text}", flush=True)


# -- the parts


def ensure_installed(skip: bool) -> None:
    missing = [c for c in ("prosody", "ejabberdctl", "taskset") if shutil.which(c) is None]
    if not (Path(sys.executable).parent / "py-spy").exists():
        missing.append("py-spy")
    if missing and not skip:
        log(f"missing {', '.join(missing)}: running bench/setup.sh")
        subprocess.run(["sh", str(HERE / "setup.sh")], check=True)


def load(server: BenchServer, scenario: str, options: list[str], timeout: float) -> dict[str, Any]:
    """Run one scenario of load.py on the generator's core; its JSON result."""
    command = ["taskset", "-c", str(LOAD_CORE), sys.executable, str(HERE / "load.py"), scenario,
               "--port", str(server.c2s_port), "--http-port", str(server.http_port),
               "--server-pid", str(server.pid), "--server-core", str(SERVER_CORE), *options]
    try:
        done = subprocess.run(command, stdout=subprocess.PIPE, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"load.py {scenario} did not finish in {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"error": f"load.py {scenario} failed (exit {done.returncode}); server log:\n{server.tail(15)}"}
    result = json.loads(lines[-1])
    result["server_alive_after"] = server.alive()
    return result


def profile(server: BenchServer, scenario: str, options: list[str], seconds: float, rate: float,
            folder: Path) -> dict[str, Any]:
    """py-spy on the server while *scenario* (s2-fixed or s3) chats at *rate*
    for *seconds* (sampling starts when the chat does: logins are not in it)."""
    raw = folder / f"chatgate-{scenario}.pyspy.txt"
    command = ["taskset", "-c", str(LOAD_CORE), sys.executable, str(HERE / "load.py"), scenario,
               "--port", str(server.c2s_port), "--http-port", str(server.http_port),
               "--server-pid", str(server.pid), "--server-core", str(SERVER_CORE), *options,
               "--rate", str(rate), "--duration", str(seconds)]
    generator = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    spy: subprocess.Popen[str] | None = None
    try:
        assert generator.stderr is not None
        for line in generator.stderr:
            print(line, end="", file=sys.stderr)
            if "S2 steps start" in line or "S3 chat starts" in line:
                # py-spy pauses the process for each sample (its default): exact stacks, a
                # little overhead; its idle detection is not used (waits are told by frame)
                spy = subprocess.Popen(
                    ["taskset", "-c", str(LOAD_CORE), str(Path(sys.executable).parent / "py-spy"), "record",
                     "--pid", str(server.pid), "--rate", "100", "--duration", str(max(1, int(seconds) - 1)),
                     "--format", "raw", "--nolineno", "--idle", "--output", str(raw)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
                break
        for line in generator.stderr:
            print(line, end="", file=sys.stderr)
        out, _ = generator.communicate(timeout=seconds + 300)
        if spy is not None:
            spy.wait(60)
    finally:
        for process in (generator, spy):
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGINT)
                process.wait(30)
    if not raw.exists():
        error = spy.stderr.read() if spy is not None and spy.stderr else "the chat did not start"
        return {"error": f"py-spy wrote nothing: {error}"[:500]}
    lines = out.strip().splitlines()
    figures = json.loads(lines[-1]) if lines else {}
    chat = (figures.get("steps") or [None])[-1] if scenario == "s2-fixed" else figures
    return {"scenario": scenario, "rate": rate, "seconds": seconds, "figures": chat,
            **top_frames(raw.read_text())}


def _frame(frame: str) -> str:
    """``func (path)`` with the path made short."""
    frame = re.sub(r"\(/work/main/", "(", frame)
    frame = re.sub(r"\([^()]*?/site-packages/", "(", frame)
    return re.sub(r"\(/[^()]*?/lib/python3\.\d+/", "(", frame)


#: leaf frames of a thread that waits (py-spy's own idle detection is unreliable here)
#: (SQLiteWorker._loop as the leaf: waiting in SimpleQueue.get, which is C)
WAITS = ("EPollReactor.doPoll ", "Condition.wait ", "Event.wait ", "Queue.get ", "Thread._wait_for_tstate_lock ",
         "SQLiteWorker._loop ")
#: frames every busy sample of a thread passes through (twistd, the reactor loop, the
#: thread pool): left out of the inclusive list, which would show nothing else
PLUMBING = re.compile(r"^<module> \(twistd\)"
                      r"|\((twisted/(application|scripts)/|twisted/python/(context|log|threadpool)\.py"
                      r"|twisted/_threads/|threading\.py)"
                      r"|^(ReactorBase\.(run|mainLoop)|EPollReactor\.doPoll|_PollLikeMixin\._doReadOrWrite"
                      r"|SQLiteWorker\._loop) ")


def top_frames(raw: str, count: int = 15) -> dict[str, Any]:
    """Where the busy samples are, from py-spy's collapsed stacks (idle ones
    included, then told apart by their leaf frame): self and inclusive shares
    of the busy samples, and how busy the reactor thread and the worker
    threads were (share of their samples)."""
    own: Counter[str] = Counter()
    inclusive: Counter[str] = Counter()
    threads: dict[str, list[int]] = {"reactor": [0, 0], "workers": [0, 0]}
    busy = 0
    for line in raw.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        frames = [_frame(f) for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        if not frames:
            continue
        thread = threads["reactor" if frames[0].startswith("<module>") else "workers"]
        thread[1] += samples
        if frames[-1].startswith(WAITS):
            continue
        thread[0] += samples
        busy += samples
        own[frames[-1]] += samples
        for frame in set(frames):
            if not PLUMBING.search(frame):
                inclusive[frame] += samples

    def share(counter: Counter[str]) -> list[tuple[str, float]]:
        return [(frame, round(100 * n / busy, 1)) for frame, n in counter.most_common(count)] if busy else []

    return {"samples": busy, "self": share(own), "inclusive": share(inclusive),
            "busy_share": {name: round(b / t, 3) if t else None for name, (b, t) in threads.items()}}


def start_redis(folder: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    process = subprocess.Popen(
        ["taskset", "-c", str(SERVER_CORE), "redis-server", "--port", str(port), "--bind", "127.0.0.1",
         "--save", "", "--appendonly", "no", "--dir", str(folder)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    return process, port


# -- the servers through the scenarios


class Contender:
    """One server of the run: its process (and the redis-server its archive
    uses, for chatgate-redis) and its figures."""

    def __init__(self, kind: str, args: argparse.Namespace, folder: Path) -> None:
        self.kind, self.args = kind, args
        users = max(args.users, 2 * args.pairs, *(n for n, _ in args.s3), *args.s4)
        self.redis: subprocess.Popen[bytes] | None = None
        if kind == "chatgate-redis":
            self.redis, port = start_redis(folder)
            self.server: BenchServer = Chatgate(users, SERVER_CORE, archive="redis", redis_port=port)
        else:
            self.server = SERVERS[kind](users, SERVER_CORE)
        self.result: dict[str, Any] = {"server": kind, "storage": self.server.storage,
                                       "version": self.server.version(), "users_provisioned": users}
        self.c2s = ["--concurrency", str(args.concurrency), "--settle", str(args.settle), "--idle", str(args.idle)]
        self.s2_options = [*self.c2s, "--pairs", str(args.pairs), "--step", str(args.step), "--drain",
                           str(args.drain), "--warmup", str(args.warmup), "--retries", str(args.retries)]
        # --quick starts each server once: with the domain roster S4 needs from the start
        self.server.domain_roster = bool(args.quick and args.s4)
        self.provisioned = False

    def start(self) -> None:
        """A fresh start (the first one provisions the users)."""
        self.server.stop()
        if self.provisioned:
            self.server.start()
            return
        started = time.monotonic()
        self.server.start(timeout=3600)
        self.provisioned = True
        self.result["provision_and_start_s"] = round(time.monotonic() - started, 1)
        log(f"{self.kind}: {self.result['version']}, {self.server.users} users, up in "
            f"{self.result['provision_and_start_s']} s (pid {self.server.pid}, folder {self.server.folder})")

    def fail(self, error: Exception) -> None:
        """A server that does not start or dies is a result too."""
        self.result["error"] = f"{type(error).__name__}: {error}"
        log(f"{self.kind}: {self.result['error']}\n{self.server.tail(20)}")
        self.server.stop()

    def s2(self, rates: list[float]) -> dict[str, Any]:
        """S2 through *rates* on a fresh start."""
        self.start()
        log(f"{self.kind}: S2 chat throughput, {self.args.pairs} pairs, {self.args.step:g} s per rate, "
            f"{', '.join(f'{r:g}' for r in rates)} msg/s")
        return load(self.server, "s2", [*self.s2_options, "--rates", ",".join(f"{r:g}" for r in rates)],
                    self.args.timeout)

    def profile_s2(self, folder: Path) -> None:
        s2 = self.result.get("s2") or {}
        if self.kind != "chatgate" or self.args.profile <= 0 or "error" in s2:
            return
        self.start()
        rate = max(self.args.rates[0], round((s2.get("max_rate") or self.args.rates[0]) * 0.8, -1))
        log(f"{self.kind}: py-spy under S2 at {rate:g} msg/s for {self.args.profile:g} s")
        self.result["profile"] = profile(self.server, "s2-fixed", self.s2_options, self.args.profile, rate, folder)

    def scenarios(self, folder: Path, with_s2: bool) -> None:
        """S1, S2 (when *with_s2*: a quick run), S3 and S4, each on a fresh start
        (in a quick run on the first one)."""
        args, server = self.args, self.server
        fresh = (lambda: None) if args.quick else self.start
        self.start()
        log(f"{self.kind}: S1 login storm, {args.users} users")
        self.result["s1"] = load(server, "s1", [*self.c2s, "--users", str(args.users), "--hold", str(args.hold)],
                                 args.timeout)
        if with_s2:
            fresh()
            log(f"{self.kind}: S2 chat throughput, {args.pairs} pairs, {args.step:g} s per rate")
            self.result["s2"] = load(server, "s2", [*self.s2_options, "--rates",
                                                    ",".join(f"{r:g}" for r in args.rates)], args.timeout)
            self.profile_s2(folder)
        self.result["s3"] = []
        for n, rate in args.s3:
            fresh()
            log(f"{self.kind}: S3 BOSH, {n} users at {rate:g} msg/s for {args.duration:g} s")
            self.result["s3"].append(load(server, "s3", [
                *self.c2s, "--users", str(n), "--rate", str(rate),
                "--duration", str(args.duration), "--drain", str(args.drain)], args.timeout))
        if self.kind == "chatgate" and args.profile > 0 and args.s3:
            fresh()
            n, rate = args.s3[0]
            log(f"{self.kind}: py-spy under S3, {n} users at {rate:g} msg/s for {args.profile:g} s")
            self.result["profile_s3"] = profile(server, "s3", [*self.c2s, "--users", str(n), "--drain",
                                                               str(args.drain)], args.profile, rate, folder)
        if args.s4:
            if not server.domain_roster:
                server.stop()
                server.domain_roster = True  # everyone in everyone's roster, as chatgate always has it
                server.start(timeout=3600)
            log(f"{self.kind}: S4 presence fan-out, domains of {', '.join(map(str, args.s4))} users")
            self.result["s4"] = load(server, "s4", [*self.c2s, "--sizes", ",".join(map(str, args.s4)),
                                                    "--round-limit", str(args.round_limit)], args.timeout)
        server.stop()

    def close(self) -> None:
        self.server.stop()
        if self.args.keep:
            log(f"{self.kind}: files kept in {self.server.folder}")
        else:
            self.server.cleanup()
        if self.redis is not None:
            self.redis.terminate()
            self.redis.wait(10)


def s2_in_turns(contenders: list[Contender], args: argparse.Namespace) -> None:
    """S2 with the servers' ladders interleaved: each rate in turn on every
    server still climbing, each time on a fresh start, the order reversed at
    every rate. The machine's speed drifts over minutes (a shared host), and
    the servers' ladders run back to back took ~15 minutes apart made their
    ratio a draw; rate by rate, a drift falls on all of them alike. A server
    leaves after two failed rates in a row (each failed rate tried again
    once, as in a ladder), after lost sessions, or when it fails to start."""
    climbing = [c for c in contenders if "error" not in c.result]
    state = {c.kind: {"steps": [], "failed_in_row": 0, "best": None, "exchanged": 0, "archive_count": None,
                      "errors": 0, "late": 0, "lost": 0} for c in climbing}
    for index, rate in enumerate(args.rates):
        for c in list(climbing if index % 2 == 0 else climbing[::-1]):
            st = state[c.kind]
            try:
                figures = c.s2([rate])
            except Exception as e:
                c.fail(e)
                figures = {"error": c.result["error"]}
            c.server.stop()
            if "error" in figures or not figures.get("server_alive_after", True):
                st["error"] = figures.get("error") or "the server died"
                climbing.remove(c)
                continue
            st["steps"] += figures["steps"]
            st["exchanged"] += figures["archive_probe"]["messages_exchanged"]
            st["archive_count"] = figures["archive_probe"]["archive_count"]
            st["errors"] += figures["errors_received"]
            st["late"] += figures["late_messages"]
            st["lost"] += figures["sessions_lost"]
            if figures["max_rate"] == rate:
                st["failed_in_row"], st["best"] = 0, figures["at_max"]
            else:
                st["failed_in_row"] += 1
                if st["failed_in_row"] == 2 or figures["sessions_lost"]:
                    climbing.remove(c)
    for c in contenders:
        st = state.get(c.kind)
        if st is None:
            continue
        best = st["best"]
        c.result["s2"] = {
            "in_turns": True,
            "archive_probe": {"user": "u0", "messages_exchanged": st["exchanged"],
                              "archive_count": st["archive_count"]},
            "pairs": args.pairs, "step_s": args.step, "p99_limit_ms": args.p99,
            "max_rate": best["rate"] if best else 0, "at_max": best, "steps": st["steps"],
            "errors_received": st["errors"], "late_messages": st["late"], "sessions_lost": st["lost"],
            **({"error": st["error"]} if "error" in st else {}),
        }


def bench(kinds: list[str], args: argparse.Namespace, folder: Path) -> list[dict[str, Any]]:
    """Every server through the scenarios: S2 first, in turns (not in a quick
    run: one rate, one start per server), then each server's S1, S3 and S4."""
    contenders: list[Contender] = []
    try:
        for kind in kinds:
            contenders.append(Contender(kind, args, folder))
        if not args.quick:
            s2_in_turns(contenders, args)
            for c in contenders:
                try:
                    c.profile_s2(folder)
                except Exception as e:
                    c.fail(e)
        for c in contenders:
            if "error" in c.result:
                continue
            try:
                c.scenarios(folder, with_s2=args.quick)
            except Exception as e:
                c.fail(e)
    finally:
        for c in contenders:
            c.close()
    return [c.result for c in contenders]


# -- the report


def machine() -> dict[str, str]:
    model = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    memory = Path("/proc/meminfo").read_text().split()[1]
    debian = Path("/etc/debian_version").read_text().strip() if Path("/etc/debian_version").exists() else "?"
    return {"nproc": str(os.cpu_count()), "model": model, "memory_gib": f"{int(memory) / 2**20:.0f}",
            "os": f"Debian {debian}, Linux {platform.release()}", "python": platform.python_version()}


def _num(value: Any, digits: int = 1) -> str:
    if not isinstance(value, (int, float)):
        return "–" if value is None else str(value)
    return f"{value:,.{digits}f}"


def _pct(value: Any) -> str:
    return "–" if value is None else f"{100 * value:.0f} %"


def _ratio(ours: Any, theirs: Any) -> str:
    if not isinstance(ours, (int, float)) or not isinstance(theirs, (int, float)) or not theirs:
        return "–"
    return f"{ours / theirs:.2f}×"


def report(results: dict[str, Any]) -> str:
    """The section of RESULTS.md, from one run's results."""
    runs = {r["server"]: r for r in results["servers"]}
    order = [k for k in ("chatgate", "chatgate-redis", "prosody", "ejabberd") if k in runs]
    ours = runs.get("chatgate", {})
    a = results["args"]
    m = results["machine"]

    def get(kind: str, *path: Any) -> Any:
        value: Any = runs.get(kind, {})
        for key in path:
            if isinstance(value, list):
                value = value[key] if len(value) > key else None
            elif isinstance(value, dict):
                value = value.get(key)
            else:
                return None
        return value

    header = ["scenario", *(_label(k) for k in order)]
    refs = [k for k in ("prosody", "ejabberd") if k in runs]
    header += [f"chatgate ÷ {NAMES[k]}" for k in refs] if "chatgate" in runs else []
    top_rate = max(a["rates"])

    def held(kind: str) -> str:
        s1 = runs[kind].get("s1") or {}
        return f"{_num(s1.get('held_after'), 0)} / {_num(s1.get('logged_in'), 0)}" if s1 else "–"

    def best_rate(kind: str) -> str:
        s2 = runs[kind].get("s2") or {}
        rate = s2.get("max_rate")
        # the top rate passed: the server was not saturated, the figure is a floor
        return ("≥ " if rate == top_rate else "") + _num(rate, 0)

    def bosh_memory(index: int) -> Any:
        return (lambda kind: "n/a (no restart)") if a["quick"] else ("s3", index, "kib_per_session")

    rows: list[tuple[str, Any, str]] = [
        (f"S1 login storm, {a['users']:,} users, SCRAM-SHA-1: server CPU per login, ms (lower is better)",
         ("s1", "server_cpu_ms_per_login"), "2"),
        ("S1: memory per idle authenticated session, KiB (RSS delta / sessions; lower is better)",
         ("s1", "kib_per_session"), "1"),
        ("S1: sessions held / logged in", held, ""),
        (f"S2 chat throughput, {a['pairs']} pairs: highest msg/s with p99 ≤ {a['p99']:g} ms and ≥ 99 % delivered "
         "(higher is better)", ("s2", "max_rate"), "0"),
        ("S2: p99 at that rate, ms", ("s2", "at_max", "p99_ms"), "1"),
        ("S2: server CPU at that rate", ("s2", "at_max", "server_cpu_share"), "%"),
    ]
    for index, (n, rate) in enumerate(a["s3"]):
        label = f"S3 BOSH, {n:,} users chatting at {rate:g} msg/s"
        rows += [
            (f"{label}: p99, ms (lower is better)", ("s3", index, "p99_ms"), "1"),
            (f"{label}: p50, ms", ("s3", index, "p50_ms"), "1"),
            (f"{label}: delivered", ("s3", index, "delivered_share"), "%"),
            (f"{label}: server CPU", ("s3", index, "server_cpu_share"), "%"),
            (f"{label}: memory per BOSH session, KiB (lower is better)", bosh_memory(index), "1"),
        ]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" + "---:|" * (len(header) - 1)]
    for label, path, kind in rows:
        cells = []
        for k in order:
            if callable(path):
                cells.append(path(k))
                continue
            value = get(k, *path)
            if kind == "%":
                cells.append(_pct(value))
            elif path == ("s2", "max_rate"):
                cells.append(best_rate(k))
            elif value is None and path[-1] in ("p50_ms", "p99_ms") and get(k, *path[:-1], "sent"):
                cells.append("∞")  # too few delivered for this percentile: saturated
            else:
                cells.append(_num(value, int(kind)))
        if "chatgate" in runs:
            if callable(path) or path[-1] == "delivered_share":
                cells += ["–"] * len(refs)
            else:
                mine = get("chatgate", *path)
                cells += [_ratio(mine, get(k, *path)) for k in refs]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    table = "\n".join(lines)

    steps = _steps_table(runs, order)
    presence = _s4_table(runs, order, a.get("s4") or [], a.get("round_limit") or 0)
    notes = _notes(runs, order)
    prof = "\n\n".join(_profile(ours.get(name)) for name in ("profile", "profile_s3") if ours.get(name))
    s3_text = ", ".join(f"{n:,} users at {rate:g} msg/s" for n, rate in a["s3"])
    in_turns = any((r.get("s2") or {}).get("in_turns") for r in runs.values())
    s2_order = (" S2 ran first, the servers' ladders interleaved: each rate in turn on every server still "
                "climbing (a fresh start each time, the order reversed at every rate), so that a drift in the "
                "machine's speed falls on all of them alike." if in_turns else "")
    return f"""{SECTION}

Script: `bench/run.py` (servers: `bench/servers.py`, load generator: `bench/load.py`,
install: `bench/setup.sh`). Run on {results['date']}:

```
{results['command']}
```

Machine: {m['nproc']} cores ({m['model']}), {m['memory_gib']} GiB, {m['os']}; generator on CPython
{m['python']}. Each server pinned to core {SERVER_CORE}, the load generator to core {LOAD_CORE}
(`taskset`); everything on 127.0.0.1, TLS off, SASL SCRAM-SHA-1 with 4096 iterations,
every chat message archived, carbons and BOSH on, no rate limits, listen backlog 1024,
open files at the hard limit (20,000 here). Each scenario ran on a freshly started
server{' (not in --quick mode: one start per server)' if a['quick'] else ''}.{s2_order} Servers and their storage:
{_versions(runs, order)}

The load: S1 logs {a['users']:,} users in ({a['concurrency']} at a time) and holds the sessions
(no presence); server CPU is its utime + stime delta (idle rate subtracted), memory its RSS delta.
S2 runs {a['pairs']} pairs sending chat messages to each other's full JID, the total rate stepped
through {', '.join(f'{r:g}' for r in a['rates'])} msg/s, {a['step']:g} s each; a message not delivered
within {a['drain']:g} s counts as infinitely late; latency is end to end (send time in the body).
S3: {s3_text}, long polling (one request held, one carrying what the user sends, as Strophe.js),
{a['duration']:g} s of chat. S1-S3 send no presence (messages go to full JIDs), so
chatgate's domain-wide roster and the references' empty rosters cost the same.

{table}

{steps}

{presence}

{notes}

{prof}
"""


def _label(kind: str) -> str:
    return {"chatgate-redis": "chatgate (Redis archive)"}.get(kind, NAMES.get(kind, kind))


def _versions(runs: dict[str, Any], order: list[str]) -> str:
    return "\n".join(f"- {_label(k)}: {runs[k].get('version')}; {runs[k].get('storage')}"
                     f"{' — ERROR: ' + runs[k]['error'].splitlines()[0] if runs[k].get('error') else ''}"
                     for k in order)


def _steps_table(runs: dict[str, Any], order: list[str]) -> str:
    rates: list[float] = []
    for k in order:
        for step in (runs[k].get("s2") or {}).get("steps", []):
            if step["rate"] not in rates:
                rates.append(step["rate"])
    if not rates:
        return ""
    lines = ["S2 step by step: p99 in ms (delivered share if under 100 %), server CPU, "
             "and CPU other processes took on the server's core; ✗ failed (a failed rate is tried again once):",
             "",
             "| msg/s | " + " | ".join(_label(k) for k in order) + " |", "|---:|" + "---|" * len(order)]
    for rate in sorted(rates):
        cells = []
        for k in order:
            attempts = []
            for step in (runs[k].get("s2") or {}).get("steps", []):
                if step["rate"] != rate:
                    continue
                p99 = "∞" if step["p99_ms"] is None else f"{step['p99_ms']:g}"
                lost = "" if step["delivered_share"] == 1 else f", {100 * step['delivered_share']:.1f} % delivered"
                attempts.append(f"{p99}{lost}; CPU {_pct(step['server_cpu_share'])}, others "
                                f"{_pct(step.get('others_on_server_core_share'))}{'' if step['passed'] else ' ✗'}")
            cells.append(" — again: ".join(attempts))
        lines.append(f"| {rate:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _s4_table(runs: dict[str, Any], order: list[str], sizes: list[int], limit: float) -> str:
    """S4, presence fan-out: a table per domain size, and chatgate's growth."""
    if not sizes:
        return ""

    def round_of(kind: str, size: int) -> dict[str, Any] | None:
        for r in (runs[kind].get("s4") or {}).get("rounds", []):
            if r["users"] == size:
                return r
        return None

    provisioned = max((runs[k].get("users_provisioned") or 0) for k in order)
    lines = [f"S4 presence fan-out: every user of the domain ({provisioned:,} users) is in everyone's roster "
             "(chatgate always; Prosody `mod_groups` with one group of all users; ejabberd `mod_shared_roster` "
             "with a group of `@all@`), so each roster holds every user. In rounds of growing size, N users log "
             "in (100 at a time), ask for their roster and send presence with XEP-0115 caps, as clients do; a "
             "round ends when presence stops coming. Each user should get N presence stanzas (everyone online's, "
             "its own included): N² in all. A server whose next "
             f"round would take over {limit:g} s (from its last round, the time growing as the square of the "
             "size) gets no larger round (–).", "",
             "| N online | " + " | ".join(_label(k) for k in order) + " |", "|---|" + "---:|" * len(order)]
    for size in sizes:
        for label, show in (
            ("logged in", lambda r: f"{r['logged_in']:,}" + (f" ({r['failures']:,} failed)" if r["failures"] else "")),
            ("server CPU per user, ms", lambda r: _num(r["server_cpu_ms_per_user"], 2)),
            ("server CPU per presence delivered, µs", lambda r: _num(r["server_cpu_us_per_presence"], 2)),
            ("presence stanzas delivered ÷ N²",
             lambda r: f"{r['presences_delivered'] / max(1, r['presences_expected']):.2f}"),
            ("rosters received / sessions lost", lambda r: f"{r.get('rosters_received', '?')} / {r['sessions_lost']}"),
            ("everyone had everyone's presence after, s", lambda r: _num(r["total_s"], 1)),
        ):
            cells = []
            for k in order:
                r = round_of(k, size)
                cells.append(show(r) if r else ("error" if (runs[k].get("s4") or {}).get("error") else "–"))
            lines.append(f"| {size:,}: {label} | " + " | ".join(cells) + " |")
    ours = (runs.get("chatgate", {}).get("s4") or {})
    if ours.get("cpu_per_presence_growth"):
        lines += ["", f"chatgate from {sizes[0]:,} to {ours['rounds'][-1]['users']:,} users: "
                      f"users ×{ours['users_growth']:g}, presence stanzas delivered ×{ours['presences_growth']:g}, "
                      f"server CPU per presence delivered ×{ours['cpu_per_presence_growth']:g}."]
    return "\n".join(lines)


def _notes(runs: dict[str, Any], order: list[str]) -> str:
    out = ["Checks and noise:", ""]
    for k in order:
        r = runs[k]
        s1, s2 = r.get("s1") or {}, r.get("s2") or {}
        probe = s2.get("archive_probe") or {}
        bits = []
        if s1:
            bits.append(f"S1 {s1.get('logged_in')}/{s1.get('users')} logged in in {s1.get('storm_s')} s "
                        f"({s1.get('logins_per_s')}/s; generator CPU {_pct(s1.get('generator_cpu_share'))}, "
                        f"others on the server core {_pct(s1.get('others_on_server_core_share'))}), "
                        f"SCRAM iterations seen {s1.get('scram_iterations_seen')}")
        if probe:
            bits.append(f"MAM count of u0 after S2: {probe.get('archive_count')} for "
                        f"{probe.get('messages_exchanged')} messages exchanged")
        for s3 in r.get("s3") or []:
            if s3.get("error"):
                bits.append(f"S3 error: {s3['error'].splitlines()[0]}")
            elif s3.get("failures") or s3.get("sessions_ended"):
                bits.append(f"S3 {s3.get('users')} users: {s3.get('failures')} login failures, "
                            f"{s3.get('sessions_ended')} sessions ended ({(s3.get('ended_examples') or [''])[0]})")
        for name in ("s1", "s2"):
            if (r.get(name) or {}).get("error"):
                bits.append(f"{name.upper()} error: {r[name]['error'].splitlines()[0]}")
        if r.get("error"):
            bits.append(f"ERROR: {r['error'].splitlines()[0]}")
        out.append(f"- {_label(k)}: " + "; ".join(bits) + ".")
    return "\n".join(out)


def _profile(prof: dict[str, Any] | None) -> str:
    if not prof:
        return ""
    if prof.get("error"):
        return f"Profile: {prof['error']}"
    s2 = prof.get("figures") if isinstance(prof.get("figures"), dict) else {}
    threads = prof.get("busy_share") or {}
    what = "S2" if prof.get("scenario") == "s2-fixed" else f"S3 ({(s2 or {}).get('users')} BOSH users)"
    lines = [f"chatgate under {what} at {prof['rate']:g} msg/s for {prof['seconds']:g} s, py-spy "
             f"(100 Hz, {prof['samples']:,} busy samples; server CPU {_pct((s2 or {}).get('server_cpu_share'))}, "
             f"p99 {(s2 or {}).get('p99_ms')} ms). The reactor thread was busy {_pct(threads.get('reactor'))} "
             f"of the time, the worker threads (SQLite; fsync waits included) {_pct(threads.get('workers'))}. "
             "Share of the busy samples (waits in epoll and idle workers left out; the inclusive column "
             "without twistd's, the reactor loop's and the thread pool's own frames):", "",
             "| self | function | | inclusive | function |", "|---:|---|---|---:|---|"]
    for (own, own_share), (inc, inc_share) in zip(prof["self"], prof["inclusive"], strict=False):
        lines.append(f"| {own_share} % | `{own}` | | {inc_share} % | `{inc}` |")
    return "\n".join(lines)


def write_section(path: Path, section: str) -> None:
    """Replace (or add) this benchmark's section of RESULTS.md; the rest stays."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    start = text.find(SECTION)
    if start < 0:
        text = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    else:
        following = re.search(r"^## ", text[start + len(SECTION):], re.M)
        end = start + len(SECTION) + following.start() if following else len(text)
        text = text[:start] + section.rstrip("\n") + "\n" + ("\n" + text[end:] if following else "")
    path.write_text(text)


# -- command line


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, one start per server, RESULTS.md untouched: under a minute")
    parser.add_argument("--servers",
                        help="comma separated, of chatgate, chatgate-redis (archive on Redis), prosody, ejabberd"
                             " (default all; quick: all but chatgate-redis)")
    parser.add_argument("--users", type=int, help="S1 users (default 10000; quick 200)")
    parser.add_argument("--pairs", type=int, help="S2 pairs (default 100; quick 50)")
    parser.add_argument("--rates", help="S2 total msg/s, stepped (comma separated; steps of about 10 %% "
                                        "where the servers top out)")
    parser.add_argument("--step", type=float, help="S2 seconds per rate (default 10; quick 1.5)")
    parser.add_argument("--s3", help="S3 runs as USERSxRATE, comma separated (default 2000x400,5000x1000)")
    parser.add_argument("--duration", type=float, help="S3 seconds of chat (default 30; quick 1)")
    parser.add_argument("--profile", type=float, help="seconds of py-spy on chatgate under S2 (0: none)")
    parser.add_argument("--s4", help="S4 domain sizes, comma separated (default 200,1000,2500,5000; quick 50; "
                                     "0: no S4)")
    parser.add_argument("--concurrency", type=int, default=100, help="logins at a time")
    parser.add_argument("--output", type=Path, default=HERE / "RESULTS.md")
    parser.add_argument("--results", type=Path, default=HERE / "results", help="folder for the raw JSON")
    parser.add_argument("--no-write", action="store_true", help="do not touch RESULTS.md")
    parser.add_argument("--write", action="store_true", help="write RESULTS.md after a --quick run too")
    parser.add_argument("--no-setup", action="store_true", help="do not run bench/setup.sh when something is missing")
    parser.add_argument("--keep", action="store_true", help="keep the servers' folders")
    parser.add_argument("--report", type=Path, metavar="RESULTS.json",
                        help="run nothing: write the section again from the raw figures of an earlier run")
    args = parser.parse_args(argv)
    quick = args.quick
    references = "prosody,ejabberd"
    args.servers = args.servers or (f"chatgate,{references}" if quick else f"chatgate,chatgate-redis,{references}")
    args.users = min(args.users or (200 if quick else 10000), 15000)
    args.pairs = args.pairs or (50 if quick else 100)
    args.rates = [float(r) for r in (args.rates or ("2000" if quick else
                  "250,500,750,1000,1500,2000,2500,2750,3000,3250,3500,3750,4000,4500,5000,5500,6000,"
                  "6500,7000,7500,8000,9000,10000")).split(",")]
    args.step = args.step or (1.5 if quick else 10.0)
    args.s3 = [(int(u), float(r)) for u, r in
               (p.split("x") for p in (args.s3 or ("100x50" if quick else "2000x400,5000x1000")).split(","))]
    args.duration = args.duration or (1.0 if quick else 30.0)
    args.s4 = [int(n) for n in (args.s4 or ("50" if quick else "200,1000,2500,5000")).split(",") if int(n)]
    args.round_limit = 30.0 if quick else 150.0
    args.profile = args.profile if args.profile is not None else (0.0 if quick else 20.0)
    args.hold = 0.5 if quick else 5.0
    args.drain = 1.0 if quick else 3.0
    args.settle = 0.5 if quick else 2.0
    args.idle = 0.5 if quick else 2.0
    args.warmup = 0.5 if quick else 1.0
    args.retries = 0 if quick else 1
    args.p99 = 100.0
    args.timeout = 300.0 if quick else 1800.0
    unknown = set(args.servers.split(",")) - {*SERVERS, "chatgate-redis"}
    if unknown:
        parser.error(f"unknown servers: {', '.join(sorted(unknown))}")
    return args


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    if args.report:
        section = report(json.loads(args.report.read_text()))
        print(section)
        if not args.no_write:
            write_section(args.output, section)
        return
    if os.geteuid() != 0:
        raise SystemExit("run.py: run as root (apt for the servers; ejabberd runs as its own user)")
    ensure_installed(args.no_setup)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    command = ".venv/bin/python bench/run.py " + shlex.join(sys.argv[1:] if argv is None else argv)
    if args.quick and args.results == HERE / "results":
        args.results = Path(tempfile.gettempdir())  # a smoke test: its figures are not kept in the repository
    args.results.mkdir(exist_ok=True)
    started = time.monotonic()
    results: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "command": command.strip(),
        "machine": machine(),
        "loadavg_before": os.getloadavg(),
        "args": {k: v for k, v in vars(args).items() if k in
                 ("quick", "users", "pairs", "rates", "step", "s3", "s4", "round_limit", "duration", "concurrency",
                  "p99", "drain", "profile")},
        "servers": [],
    }
    with tempfile.TemporaryDirectory(prefix="bench-run-") as scratch:
        results["servers"] = bench(args.servers.split(","), args, Path(scratch))
    results["seconds"] = round(time.monotonic() - started)
    results["loadavg_after"] = os.getloadavg()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    raw = args.results / f"load-{stamp}{'-quick' if args.quick else ''}.json"
    raw.write_text(json.dumps(results, indent=1) + "\n")
    section = report(results)
    print(section)
    if args.quick and not args.write:
        log("quick run: RESULTS.md left as it is (--write to record it anyway)")
    elif not args.no_write:
        write_section(args.output, section)
        log(f"wrote {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}")
    log(f"raw figures in {raw.relative_to(REPO) if raw.is_relative_to(REPO) else raw}; "
        f"{results['seconds']} s in all")


if __name__ == "__main__":
    main()
