"""The three servers of the load benchmark, each from a throw-away config.

chatgate (``twistd -n chatgate``), Prosody 0.12 and ejabberd 23 (Debian
packages, installed by ``bench/setup.sh``) are started with the same
settings: plain TCP c2s on 127.0.0.1 (TLS off), SCRAM-SHA-1 with 4096
iterations, every chat message archived (chatgate: always; Prosody mod_mam
with ``default_archive_policy = true`` and ``archive_expires_after =
"never"``; ejabberd mod_mam ``default: always``), carbons and BOSH
(``/http-bind``) on, no rate limits, listen backlog 1024, the open-files limit
at its hard maximum. Each is pinned to one core with ``taskset`` and keeps all
its files in a temporary folder; the system services and their configs are
never touched. :meth:`BenchServer.stop` stops only what ``start`` started.

Users ``u0`` .. ``u<N-1>`` of the domain ``bench.test`` with one password are
provisioned in bulk before the start, the fast way for each server:

- chatgate: ``chatgate-admin user import`` of a CSV file (the documented way);
- Prosody: its internal storage files written directly
  (``accounts/<user>.dat`` with salted SCRAM keys, as mod_auth_internal_hashed
  keeps them), no prosodyctl per user;
- ejabberd: one ``ejabberdctl import_piefxis`` (XEP-0227) of all users while
  the node runs, instead of one ``ejabberdctl register`` (one Erlang node) each.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import pwd
import resource
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
DOMAIN = "bench.test"
PASSWORD = "bench-password-1"
ITERATIONS = 4096


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def raise_nofile() -> None:
    """Open-files limit to the hard maximum (this process and its children)."""
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of *pid* so far, every thread included."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise RuntimeError(f"no VmRSS for {pid}")


def terminate(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM, then SIGKILL after 30 s: a server process stopped, whatever it was doing."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(10)


def wait_port(port: int, timeout: float, alive: Callable[[], bool]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            raise RuntimeError("the server exited while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout:.0f} s")


class BenchServer:
    """One server under test: its folder, ports, process and provisioning."""

    name = "?"
    #: what keeps users and history, for the results table
    storage = "?"

    def __init__(self, users: int, core: int = 0, folder: Path | None = None) -> None:
        self.users = users
        self.core = core
        #: everyone of the domain in everyone's roster, as chatgate always has it (scenario S4);
        #: takes effect at the next start
        self.domain_roster = False
        self.folder = folder or Path(tempfile.mkdtemp(prefix=f"bench-{self.name}-"))
        self.c2s_port = free_port()
        self.http_port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.folder / "server.out"

    # -- what a subclass provides

    def prepare(self) -> None:
        """Write the config and provision users offline (before start)."""

    def after_start(self) -> None:
        """Provisioning that needs the running server."""

    def command(self) -> list[str]:
        raise NotImplementedError

    @property
    def pid(self) -> int:
        """The process whose CPU and memory are measured."""
        assert self.process is not None
        return self.process.pid

    def version(self) -> str:
        return "?"

    # -- life cycle

    def start(self, timeout: float = 60) -> None:
        self.prepare()
        with open(self.log, "ab") as out:
            self.process = subprocess.Popen(
                ["taskset", "-c", str(self.core), *self.command()],
                cwd=self.folder, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                preexec_fn=raise_nofile, env=self.environment(), **self.identity(),
            )
        try:
            wait_port(self.c2s_port, timeout, self.alive)
            wait_port(self.http_port, timeout, self.alive)
            self.after_start()
        except BaseException:
            self.stop()
            raise

    def environment(self) -> dict[str, str]:
        return dict(os.environ)

    def identity(self) -> dict[str, object]:
        """Popen's user/group arguments: the server runs as this user."""
        return {}

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        terminate(self.process)
        self.process = None

    def cleanup(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except FileNotFoundError:
            return ""


def scram_sha1_keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) of RFC 5802 §3 for SCRAM-SHA-1."""
    salted = hashlib.pbkdf2_hmac("sha1", password.encode(), salt, iterations)
    client_key = hmac.digest(salted, b"Client Key", "sha1")
    return hashlib.sha1(client_key).digest(), hmac.digest(salted, b"Server Key", "sha1")


# -- chatgate


class Chatgate(BenchServer):
    name = "chatgate"

    def __init__(self, users: int, core: int = 0, folder: Path | None = None, archive: str = "sqlite",
                 redis_port: int | None = None) -> None:
        super().__init__(users, core, folder)
        self.archive = archive
        self.redis_port = redis_port
        self.storage = "SQLite (directory); archive: " + (
            "Redis (on the same core; redis-server's own CPU and memory are not counted)" if archive == "redis"
            else "SQLite")
        self.redis_prefix = f"bench{secrets.token_hex(4)}"
        self.config = self.folder / "tap-config.ini"

    def settings(self) -> dict[str, dict[str, object]]:
        limits, auth = _unlimited()
        settings: dict[str, dict[str, object]] = {
            "xmpp": {"interfaces": "127.0.0.1", "port": self.c2s_port, "require_encryption": "false",
                     "allow_plain_without_tls": "false"},
            "tls": {"certificate": "tls/cert.pem", "key": "tls/key.pem"},
            "storage": {"backend": "sqlite", "path": "chatgate.sqlite"},
            "archive": {"backend": self.archive, "offline_backend": self.archive},
            "auth": {"scram_iterations": ITERATIONS, **auth},
            "limits": limits,
            "http": {"interfaces": "127.0.0.1", "port": self.http_port, "bosh_path": "/http-bind"},
            "demo": {"create": "false"},
        }
        if self.archive == "redis":
            settings["storage"].update(redis_host="127.0.0.1", redis_port=self.redis_port,
                                       redis_prefix=self.redis_prefix)
        return settings

    def prepare(self) -> None:
        lines = []
        for section, values in self.settings().items():
            lines.append(f"[{section}]")
            lines += [f"{key} = {value}" for key, value in values.items()]
        self.config.write_text("\n".join(lines) + "\n")
        if (self.folder / "chatgate.sqlite").exists():
            return  # provisioned already (a restart)
        self.admin("domain", "add", DOMAIN)
        csv = self.folder / "users.csv"
        rows = ["jid,name,password"] + [f"u{n}@{DOMAIN},User {n},{PASSWORD}" for n in range(self.users)]
        csv.write_text("\n".join(rows) + "\n")
        self.admin("user", "import", str(csv))

    def admin(self, *args: str) -> None:
        result = subprocess.run([str(VENV_BIN / "chatgate-admin"), "-c", str(self.config), *args],
                                capture_output=True, text=True, timeout=1800, cwd=self.folder)
        if result.returncode != 0:
            raise RuntimeError(f"chatgate-admin {' '.join(args)}: {result.stderr.strip()}")

    def command(self) -> list[str]:
        return [str(VENV_BIN / "twistd"), "-n", "--pidfile=", "--logfile", str(self.folder / "twistd.log"),
                "chatgate", "--config", str(self.config)]

    def version(self) -> str:
        out = subprocess.run([str(VENV_BIN / "python"), "-c",
                              "import chatgate, twisted, sys; print(chatgate.__version__, twisted.__version__,"
                              " sys.version.split()[0])"],
                             capture_output=True, text=True, cwd=REPO).stdout.split()
        git = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                             cwd=REPO).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "chatgate"], capture_output=True,
                               text=True, cwd=REPO).stdout.strip()
        tree = f"{git}{' + uncommitted changes' if dirty else ''}"
        return f"chatgate {out[0]} ({tree}), Twisted {out[1]}, CPython {out[2]}" if len(out) == 3 else tree

    def start(self, timeout: float = 60) -> None:
        super().start(timeout)
        deadline = time.monotonic() + timeout
        while "chatgate ready" not in (self.folder / "twistd.log").read_text(errors="replace"):
            if time.monotonic() > deadline or not self.alive():
                raise RuntimeError("chatgate did not become ready:\n" + self.tail())
            time.sleep(0.1)

    def tail(self, lines: int = 30) -> str:
        try:
            text = (self.folder / "twistd.log").read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        return "\n".join(text.splitlines()[-lines:]) + "\n" + super().tail(lines)


def _unlimited() -> tuple[dict[str, int], dict[str, int]]:
    """chatgate's ``[limits]`` and ``[auth]`` keys that throttle a client, each
    set out of reach: every rate and burst, the per-address caps, the login
    failure counts. Read from the config schema of the tree under test, so
    that a limit added there is lifted here too."""
    from dataclasses import fields

    from chatgate.config import AuthSettings, LimitSettings

    def throttles(name: str) -> bool:
        return name.endswith(("_rate", "_burst")) or "per_address" in name or name.startswith("failures_per_")

    unlimited = 10**9
    return ({f.name: unlimited for f in fields(LimitSettings) if throttles(f.name)},
            {f.name: unlimited for f in fields(AuthSettings) if throttles(f.name)})


# -- Prosody


PROSODY_CONFIG = """\
-- Prosody for the chatgate load benchmark (written by bench/servers.py).
daemonize = false
run_as_root = true
pidfile = "{folder}/prosody.pid"
data_path = "{folder}/data"
log = {{ info = "{folder}/prosody.log"; error = "*stderr" }}
network_backend = "epoll"
network_settings = {{ tcp_backlog = 1024 }}
interfaces = {{ "127.0.0.1" }}
c2s_ports = {{ {c2s_port} }}
c2s_direct_tls_ports = {{ }}
legacy_ssl_ports = {{ }}
s2s_ports = {{ }}
component_ports = {{ }}
http_ports = {{ {http_port} }}
http_interfaces = {{ "127.0.0.1" }}
https_ports = {{ }}
c2s_require_encryption = false
s2s_require_encryption = false
allow_unencrypted_plain_auth = false
authentication = "internal_hashed"
default_iteration_count = {iterations}
storage = "internal"
-- every message archived, forever
default_archive_policy = true
archive_expires_after = "never"
-- no per-user archive cap (10,000 by default, then truncation) and an item-count cache
-- big enough for every user, so no append reloads a whole archive file
storage_archive_item_limit = 100000000
storage_archive_item_limit_cache_size = 1000000
-- no rate limits: mod_limits is not loaded
bosh_max_inactivity = 60
consider_bosh_secure = true
modules_enabled = {{
    "roster"; "saslauth"; "disco"; "carbons"; "mam"; "bosh"; "ping"; "version"; "vcard_legacy"; "posix";{groups_module}
}}
modules_disabled = {{ "s2s"; "s2s_auth_certs"; }}
{groups}
VirtualHost "{domain}"
"""

class Prosody(BenchServer):
    name = "prosody"
    storage = "internal (files): accounts and mod_mam archive"

    def prepare(self) -> None:
        config = self.folder / "prosody.cfg.lua"
        groups = groups_module = ""
        if self.domain_roster:  # S4: mod_groups puts every user in one group, in everyone's roster
            (self.folder / "groups.txt").write_text(
                "[Everyone]\n" + "".join(f"u{n}@{DOMAIN}=User {n}\n" for n in range(self.users)))
            groups, groups_module = f'groups_file = "{self.folder}/groups.txt"', ' "groups";'
        config.write_text(PROSODY_CONFIG.format(folder=self.folder, c2s_port=self.c2s_port,
                                                http_port=self.http_port, iterations=ITERATIONS,
                                                domain=DOMAIN, groups=groups, groups_module=groups_module))
        accounts = self.folder / "data" / DOMAIN.replace(".", "%2e") / "accounts"
        if accounts.exists():
            return
        accounts.mkdir(parents=True)
        # mod_auth_internal_hashed's record: a UUID as salt, hex StoredKey and ServerKey
        for n in range(self.users):
            salt = str(uuid.uuid4())
            stored_key, server_key = scram_sha1_keys(PASSWORD, salt.encode(), ITERATIONS)
            (accounts / f"u{n}.dat").write_text(
                "return {\n"
                f'\t["iteration_count"] = {ITERATIONS};\n'
                f'\t["salt"] = "{salt}";\n'
                f'\t["server_key"] = "{server_key.hex()}";\n'
                f'\t["stored_key"] = "{stored_key.hex()}";\n'
                "};\n"
            )

    def command(self) -> list[str]:
        return ["prosody", "-F", "--config", str(self.folder / "prosody.cfg.lua")]

    def version(self) -> str:
        return "Prosody " + _package_version("prosody")

    def tail(self, lines: int = 30) -> str:
        try:
            text = (self.folder / "prosody.log").read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        return "\n".join(text.splitlines()[-lines:]) + "\n" + super().tail(lines)


# -- ejabberd


EJABBERD_CONFIG = """\
# ejabberd for the chatgate load benchmark (written by bench/servers.py).
hosts:
  - "{domain}"
loglevel: info
log_rotate_count: 0
hide_sensitive_log_data: true
default_db: mnesia
auth_method: internal
auth_password_format: scram
auth_scram_hash: sha
disable_sasl_mechanisms: ["digest-md5", "x-oauth2"]
listen:
  -
    port: {c2s_port}
    ip: "127.0.0.1"
    module: ejabberd_c2s
    max_stanza_size: 262144
    shaper: none
    access: c2s
    starttls: false
    starttls_required: false
    backlog: 1024
  -
    port: {http_port}
    ip: "127.0.0.1"
    module: ejabberd_http
    tls: false
    backlog: 1024
    request_handlers:
      /http-bind: mod_bosh
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
api_permissions:
  "console commands":
    from:
      - ejabberd_ctl
    who: all
    what: "*"
# no rate limits
shaper: {{}}
shaper_rules:
  max_user_sessions: 10
  max_user_offline_messages: 100000
  c2s_shaper: none
modules:
  mod_bosh: {{}}
  mod_carboncopy: {{}}
  mod_disco: {{}}
  mod_mam:
    default: always
  mod_offline: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_vcard: {{}}
  mod_version: {{}}
{shared_roster}"""

#: ejabberdctl's own settings: no busy-waiting schedulers (they would burn the
#: measured core while idle), the Erlang cookie given here rather than written
#: into the ejabberd user's home, the port limit above the session count
EJABBERDCTL_CONFIG = """\
POLL=true
ERL_PROCESSES=1000000
ERL_MAX_PORTS=65536
ERLANG_NODE={node}
ERL_OPTIONS="+sbwt none +sbwtdcpu none +sbwtdio none -setcookie {cookie} -env ERL_CRASH_DUMP_BYTES 0"
"""


class Ejabberd(BenchServer):
    name = "ejabberd"
    storage = "Mnesia (default): accounts and mod_mam archive"

    def __init__(self, users: int, core: int = 0, folder: Path | None = None) -> None:
        super().__init__(users, core, folder)
        self.node = f"bench{secrets.token_hex(3)}@localhost"
        self.epmd_was_running = _running("epmd")
        self._beam: int | None = None

    def ctl_args(self) -> list[str]:
        return ["ejabberdctl", "--config", str(self.folder / "ejabberd.yml"), "--ctl-config",
                str(self.folder / "ejabberdctl.cfg"), "--spool", str(self.folder / "db"),
                "--logs", str(self.folder / "logs"), "--node", self.node]

    def prepare(self) -> None:
        (self.folder / "db").mkdir(exist_ok=True)
        (self.folder / "logs").mkdir(exist_ok=True)
        # S4: mod_shared_roster with one group of @all@ users puts everyone in everyone's roster
        # (ejabberdctl's srg_* commands come with mod_admin_extra)
        shared_roster = "  mod_shared_roster: {}\n  mod_admin_extra: {}\n" if self.domain_roster else ""
        (self.folder / "ejabberd.yml").write_text(EJABBERD_CONFIG.format(
            domain=DOMAIN, c2s_port=self.c2s_port, http_port=self.http_port, shared_roster=shared_roster))
        (self.folder / "ejabberdctl.cfg").write_text(EJABBERDCTL_CONFIG.format(
            node=self.node, cookie=secrets.token_hex(16)))
        users = self.folder / "users.xml"
        if not users.exists():
            rows = [f"<user name='u{n}' password='{PASSWORD}'/>" for n in range(self.users)]
            users.write_text("<?xml version='1.0' encoding='UTF-8'?>\n<server-data xmlns='urn:xmpp:pie:0'>"
                             f"<host jid='{DOMAIN}'>\n" + "\n".join(rows) + "\n</host></server-data>\n")
        # the node runs as the ejabberd user, started as that user directly: ejabberdctl
        # started by root would switch with su, whose PAM session sets the open-files
        # limit back to 1024
        user = pwd.getpwnam("ejabberd")
        os.chmod(self.folder, 0o755)
        for path in [self.folder, *self.folder.rglob("*")]:
            os.chown(path, user.pw_uid, user.pw_gid)

    def command(self) -> list[str]:
        return [*self.ctl_args(), "foreground"]

    def environment(self) -> dict[str, str]:
        env = dict(os.environ)
        env["HOME"] = str(self.folder)
        return env

    def identity(self) -> dict[str, object]:
        return {"user": "ejabberd", "group": "ejabberd", "extra_groups": []}

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return subprocess.run([*self.ctl_args(), *args], capture_output=True, text=True, timeout=timeout,
                              env=self.environment(), cwd=self.folder, **self.identity())

    def after_start(self) -> None:
        self._wait_started()
        if self.users and not (self.folder / "imported").exists():
            started = time.monotonic()
            result = self.ctl("import_piefxis", str(self.folder / "users.xml"), timeout=3600)
            if result.returncode != 0:
                raise RuntimeError(f"ejabberdctl import_piefxis: {result.stdout}{result.stderr}")
            (self.folder / "imported").write_text(f"{time.monotonic() - started:.1f} s\n")
        if self.domain_roster and not (self.folder / "everyone").exists():
            for command in (["srg_create", "everyone", DOMAIN, "Everyone", "", "everyone"],
                            ["srg_user_add", "@all@", DOMAIN, "everyone", DOMAIN]):
                result = self.ctl(*command)
                if result.returncode != 0:
                    raise RuntimeError(f"ejabberdctl {command[0]}: {result.stdout}{result.stderr}")
            (self.folder / "everyone").write_text("")

    def _wait_started(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            result = self.ctl("status")
            if result.returncode == 0 and "is started" in result.stdout:
                return
            time.sleep(0.5)
        raise RuntimeError("ejabberd did not start:\n" + self.tail())

    @property
    def pid(self) -> int:
        """The beam.smp under ejabberdctl's su (found once, by its node name)."""
        if self._beam is None:
            out = subprocess.run(["pgrep", "-f", f"beam.smp.*-s?name {self.node}"], capture_output=True,
                                 text=True).stdout.split()
            if len(out) != 1:
                raise RuntimeError(f"beam.smp of {self.node}: found {out}")
            self._beam = int(out[0])
        return self._beam

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            try:
                beam: int | None = self.pid
            except RuntimeError:
                beam = None
            self.ctl("stop")
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                if beam:
                    os.kill(beam, signal.SIGKILL)
            deadline = time.monotonic() + 10
            while beam and Path(f"/proc/{beam}").exists() and time.monotonic() < deadline:
                time.sleep(0.1)
        super().stop()
        self._beam = None
        if not self.epmd_was_running and _running("epmd"):
            # epmd refuses -kill while a node is registered: the node is gone by now
            subprocess.run(["epmd", "-kill"], capture_output=True, timeout=10)

    def version(self) -> str:
        return "ejabberd " + _package_version("ejabberd")

    def tail(self, lines: int = 30) -> str:
        try:
            text = (self.folder / "logs" / "ejabberd.log").read_text(errors="replace")
        except FileNotFoundError:
            text = ""
        return "\n".join(text.splitlines()[-lines:]) + "\n" + super().tail(lines)


def _running(name: str) -> bool:
    return subprocess.run(["pgrep", "-x", name], capture_output=True).returncode == 0


def _package_version(package: str) -> str:
    return subprocess.run(["dpkg-query", "-W", "-f=${Version}", package], capture_output=True,
                          text=True).stdout.strip() or "?"


SERVERS = {"chatgate": Chatgate, "prosody": Prosody, "ejabberd": Ejabberd}


if __name__ == "__main__":
    # Start one server by hand: python bench/servers.py prosody 100 (Ctrl-C stops it)
    kind, users = sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 10
    server = SERVERS[kind](users)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.monotonic()
    server.start()
    print(f"{server.version()}: c2s {server.c2s_port}, http {server.http_port}, pid {server.pid}, "
          f"folder {server.folder}, up in {time.monotonic() - started:.1f} s", flush=True)
    try:
        signal.pause()
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        server.cleanup()
