"""tap-config.ini -> typed, validated settings.

Every key has a default (the same ones tap-config.ini documents). A bad value
raises :class:`ConfigError` whose message names the section and the key, so
the service stops at start with one line instead of failing later.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class ConfigError(Exception):
    """A setting is missing, unknown or has a bad value."""


@dataclass(frozen=True)
class XMPPSettings:
    interfaces: tuple[str, ...] = ("0.0.0.0",)
    port: int = 5291
    extra_ports: tuple[int, ...] = ()
    direct_tls_port: int | None = None
    require_encryption: bool = True
    allow_plain_without_tls: bool = False
    ping_interval: float = 300.0
    ping_timeout: float = 60.0
    auth_timeout: float = 30.0


@dataclass(frozen=True)
class TLSSettings:
    certificate: str = "var/chatgate.crt"
    key: str = "var/chatgate.key"


@dataclass(frozen=True)
class StorageSettings:
    backend: str = "sqlite"
    path: str = "var/chatgate.sqlite"
    poll_interval: float = 0.5
    #: the Redis server of the stores [archive] puts on redis (txredisapi)
    redis_host: str = "127.0.0.1"
    redis_port: int = 6379
    redis_db: int = 0
    redis_password: str = ""
    redis_tls: bool = False
    redis_tls_ca: str = ""
    redis_prefix: str = "chatgate"
    #: the PostgreSQL database of the stores on postgresql (libpq: URI or key=value)
    postgresql_dsn: str = ""
    #: connections of each node's PostgreSQL archive for reads (MAM, history, search), beside its writer
    postgresql_readers: int = 4


@dataclass(frozen=True)
class ArchiveSettings:
    """History (XEP-0313 archive) and offline messages (XEP-0160)."""

    backend: str = "sqlite"
    offline_backend: str = "sqlite"
    commit_interval: float = 0.01
    conversation_gap: float = 1800.0
    retention_days: int | None = None
    offline_quota: int = 1000


@dataclass(frozen=True)
class AuthSettings:
    scram_iterations: int = 4096
    max_attempts: int = 3
    #: failed logins on one account from one address before it is locked there
    failures_per_account: int = 5
    #: failed logins from one address, any account, before the address is locked
    failures_per_address: int = 30
    #: seconds failures are remembered, and a lock lasts
    lockout: float = 300.0


@dataclass(frozen=True)
class LimitSettings:
    max_stanza_size: int = 262144
    max_stanza_size_preauth: int = 8192
    max_depth: int = 64
    #: bytes queued for a client that does not read before its session is closed
    max_output_buffer: int = 1048576
    #: bytes per second a session may send, sustained, and in one burst
    read_rate: int = 65536
    read_burst: int = 1048576
    #: stanzas per second a session may send, sustained, and in one burst
    stanza_rate: float = 50.0
    stanza_burst: int = 500
    #: connections from one address not yet authenticated, at once
    max_preauth_per_address: int = 16
    #: new BOSH sessions one address may open per second, sustained, and in a burst
    session_rate: float = 10.0
    session_burst: int = 100


@dataclass(frozen=True)
class HTTPSettings:
    interfaces: tuple[str, ...] = ("127.0.0.1",)
    port: int = 5280
    tls: bool = False
    bosh_path: str = "/http-bind"
    #: where XMPP over WebSocket (RFC 7395) is served on this listener; empty: not served
    websocket_path: str = "/xmpp-websocket"
    cors_origins: tuple[str, ...] = ()
    bosh_hold: int = 1
    bosh_requests: int = 2
    bosh_max_wait: int = 120
    bosh_inactivity: int = 60
    bosh_polling: int = 2
    bosh_max_pause: int = 120
    bosh_max_body_size: int = 262144
    #: reverse proxies whose X-Forwarded-For is believed (addresses and networks)
    trusted_proxies: tuple[Network, ...] = ()


@dataclass(frozen=True)
class StreamManagementSettings:
    """XEP-0198 on c2s and WebSocket streams."""

    #: seconds a session whose connection dropped waits to be resumed; 0: no resumption
    resume_timeout: float = 300.0
    #: the server asks the client for an ack after this many unacked stanzas
    ack_every: int = 5


@dataclass(frozen=True)
class UploadSettings:
    """HTTP file upload (XEP-0363): slots, the files and their limits."""

    enabled: bool = True
    #: the folder files are kept in (relative to this file)
    path: str = "var/uploads"
    #: where slots point, up to the path that http_path serves; empty:
    #: http(s)://<the user's domain>:<[http] port><http_path>
    base_url: str = ""
    #: where uploads are served on the [http] listener
    http_path: str = "/upload"
    #: largest file, in bytes
    max_file_size: int = 20 * 1024 * 1024
    #: bytes one user may upload per day (a rolling 24 hours)
    daily_quota: int = 200 * 1024 * 1024
    #: seconds a slot's PUT URL stays valid
    slot_lifetime: float = 300.0
    #: HMAC key that signs slots and download URLs (every node of a cluster must
    #: share it); empty: a key made at first start in the data folder (one node)
    secret: str = ""


@dataclass(frozen=True)
class MUCSettings:
    """Team rooms (XEP-0045) at <subdomain>.<domain>, following the directory."""

    enabled: bool = True
    #: the rooms of example.com are at <subdomain>.example.com
    subdomain: str = "conference"
    #: the room every user of the domain belongs to; empty: none
    domain_room: str = "everyone"
    #: a room per mail alias, its members the alias's
    alias_rooms: bool = True
    #: messages a newcomer is shown on entering (most), kept in memory per room
    history: int = 20
    #: occupants beyond which a room tells everyone only of its moderators' comings,
    #: goings and changes, not each participant's (0: always of everyone)
    large_room: int = 500


@dataclass(frozen=True)
class PEPSettings:
    """Personal eventing (XEP-0163): what each account keeps for its clients."""

    enabled: bool = True
    #: nodes one user keeps at most (OMEMO keeps one per device with older clients)
    max_nodes: int = 128
    #: bytes of nodes one user keeps in all (avatars are the largest)
    max_bytes: int = 2 * 1024 * 1024
    #: items one node keeps at most (``pubsub#max_items`` = ``max``)
    max_items: int = 256


@dataclass(frozen=True)
class WebmailSettings:
    #: HMAC key shared with the webmail for login tokens; empty: tokens are off
    token_secret: str = ""
    #: seconds a login token minted by chatgate stays valid
    token_lifetime: float = 300.0
    #: seconds after a sign-in that no token stands for it any more (renewals stop)
    token_max_age: float = 12 * 3600.0


@dataclass(frozen=True)
class AdminSettings:
    interfaces: tuple[str, ...] = ("127.0.0.1",)
    port: int = 5281
    #: bearer key of the admin API; empty: the API is off
    api_key: str = ""


@dataclass(frozen=True)
class LogSettings:
    """The service's log lines (chatgate/logs.py)."""

    #: text (twistd's lines) or json (one object a line)
    format: str = "text"
    #: debug, info, warn or error: events below are left out (SIGHUP changes it live)
    level: str = "info"


@dataclass(frozen=True)
class ServiceSettings:
    """How a node stops: a drain (SIGTERM, ``chatgate-admin drain``)."""

    #: seconds a stop may take, from the first refused connection to the stores closed
    drain_timeout: float = 30.0
    #: where c2s and BOSH clients are sent when this node stops (host or host:port; RFC 6120
    #: §4.9.3.19 <see-other-host/>); empty: they are told <system-shutdown/>
    see_other_host: str = ""
    #: where WebSocket clients are sent (RFC 7395 §3.6.1 see-other-uri, ws:// or wss://);
    #: empty: see_other_host, as for c2s
    see_other_uri: str = ""


@dataclass(frozen=True)
class MetricsSettings:
    #: /metrics and /health/* on the admin listener (opened for them even without an api_key)
    enabled: bool = False


@dataclass(frozen=True)
class ClusterSettings:
    #: local (one process) or redis (nodes sharing the [storage] Redis server)
    backend: str = "local"
    #: this node's name among the cluster's; empty: the host name and process id
    node_id: str = ""
    #: seconds between this node's heartbeats in Redis
    heartbeat: float = 1.0
    #: a node whose last heartbeat is older than this is dead: its sessions end
    dead_after: float = 5.0
    #: how long a message for another node waits for Redis before its sender gets an error
    forward_timeout: float = 10.0
    #: (host, port) of the Redis Sentinels to ask for the master; none: [storage] redis_host and redis_port
    redis_sentinels: tuple[tuple[str, int], ...] = ()
    #: the master's name in the sentinels' configuration
    redis_master_name: str = "mymaster"


@dataclass(frozen=True)
class DemoSettings:
    create: bool = True
    domain: str = "example.com"


@dataclass(frozen=True)
class Settings:
    xmpp: XMPPSettings = field(default_factory=XMPPSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    archive: ArchiveSettings = field(default_factory=ArchiveSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    http: HTTPSettings = field(default_factory=HTTPSettings)
    webmail: WebmailSettings = field(default_factory=WebmailSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    metrics: MetricsSettings = field(default_factory=MetricsSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
    cluster: ClusterSettings = field(default_factory=ClusterSettings)
    sm: StreamManagementSettings = field(default_factory=StreamManagementSettings)
    upload: UploadSettings = field(default_factory=UploadSettings)
    muc: MUCSettings = field(default_factory=MUCSettings)
    pep: PEPSettings = field(default_factory=PEPSettings)
    service: ServiceSettings = field(default_factory=ServiceSettings)
    log: LogSettings = field(default_factory=LogSettings)
    #: Directory relative paths in the file are resolved against.
    base_dir: str = "."

    def path(self, relative: str) -> str:
        """Resolve a path setting against the configuration file's folder."""
        return os.path.normpath(os.path.join(self.base_dir, relative))


# -- value parsers: each takes the raw string and raises ValueError with a reason


def _bool(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ValueError("expected true or false")


def _port(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a port number") from None
    if not 0 < value < 65536:
        raise ValueError("a port is between 1 and 65535")
    return value


def _ports(raw: str) -> tuple[int, ...]:
    return tuple(_port(p) for p in _split(raw))


def _integer(raw: str) -> int:
    try:
        return int(raw)
    except ValueError:
        raise ValueError("expected a whole number") from None


def _positive_int(raw: str) -> int:
    value = _integer(raw)
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _iterations(raw: str) -> int:
    value = _positive_int(raw)
    if value < 4096:
        raise ValueError("at least 4096 (RFC 7677 §4; fewer make passwords cheap to guess)")
    return value


def _seconds(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if value <= 0:
        raise ValueError("must be greater than 0")
    return value


def _interfaces(raw: str) -> tuple[str, ...]:
    values = _split(raw)
    if not values:
        raise ValueError("name at least one address")
    for value in values:
        ipaddress.ip_address(value)  # ValueError names the bad address
    return tuple(values)


def _one_of(*choices: str) -> Callable[[str], str]:
    """A parser taking one of *choices* (named in this order in its error)."""
    expected = f"expected {', '.join(choices[:-1])} or {choices[-1]}"

    def parse(raw: str) -> str:
        value = raw.strip()
        if value not in choices:
            raise ValueError(expected)
        return value

    return parse


def _optional(parse: Callable[[str], T]) -> Callable[[str], T | None]:
    """*parse*, or None for an empty value."""
    return lambda raw: parse(raw) if raw.strip() else None


def _text(raw: str) -> str:
    return raw.strip()


def _secret(raw: str) -> str:
    value = raw.strip()
    if value and len(value) < 32:
        raise ValueError("too short: use at least 32 random characters (or leave it empty to turn this off)")
    return value


def _nonempty(raw: str) -> str:
    value = raw.strip()
    if not value:
        raise ValueError("must not be empty")
    return value


def _seconds_or_zero(raw: str) -> float:
    try:
        value = float(raw)
    except ValueError:
        raise ValueError("expected a number of seconds") from None
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _whole(raw: str) -> int:
    value = _integer(raw)
    if value < 0:
        raise ValueError("must not be negative")
    return value


def _url_path(raw: str) -> str:
    value = raw.strip()
    segments = value.split("/")
    if not value.startswith("/") or value == "/" or not all(segments[1:]):
        raise ValueError("expected a path such as /http-bind (no empty segment, no trailing /)")
    if any(s in (".", "..") or not re.fullmatch(r"[A-Za-z0-9._~-]+", s) for s in segments[1:]):
        raise ValueError("use letters, digits and . _ ~ - between the slashes")
    return value


def _optional_url_path(raw: str) -> str:
    return _url_path(raw) if raw.strip() else ""


def _base_url(raw: str) -> str:
    value = raw.strip().rstrip("/")
    if value and not re.fullmatch(r"https?://[^/\s?#]+(/[^\s?#]*)?", value):
        raise ValueError("expected an http:// or https:// URL such as https://chat.example.com/upload")
    return value


def _origins(raw: str) -> tuple[str, ...]:
    origins = []
    for value in _split(raw):
        if value != "*" and not re.fullmatch(r"https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?|https?://\[[0-9A-Fa-f:.]+\](:[0-9]{1,5})?",
                                             value):
            raise ValueError(f"{value!r} is not an origin such as https://mail.example.com (scheme and host, no path)")
        origins.append(value.lower())
    return tuple(origins)


def _networks(raw: str) -> tuple[Network, ...]:
    """Addresses and CIDR networks, IPv4 or IPv6 (an address is a network of one)."""
    return tuple(ipaddress.ip_network(value) for value in _split(raw))  # a ValueError names the bad value


def _node_id(raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"[A-Za-z0-9._-]{1,64}", value):
        raise ValueError("letters, digits, '.', '_' and '-' only, at most 64")
    return value


def _host_port(value: str) -> tuple[str, int]:
    """``host:port``, an IPv6 address as ``[addr]:port``."""
    if value.startswith("["):
        address, bracket, port = value[1:].partition("]:")
        if not bracket:
            raise ValueError(f"{value!r} is not [IPv6 address]:port")
        try:
            host = str(ipaddress.IPv6Address(address))
        except ValueError:
            raise ValueError(f"{value!r}: {address!r} is not an IPv6 address") from None
    else:
        host, colon, port = value.rpartition(":")
        if not colon or not host:
            raise ValueError(f"{value!r} is not host:port")
        if ":" in host:
            raise ValueError(f"{value!r}: write an IPv6 address as [address]:port")
        if not re.fullmatch(r"[A-Za-z0-9._-]+", host):
            raise ValueError(f"{value!r}: {host!r} is not a host name or address")
    try:
        return host, _port(port)
    except ValueError as e:
        raise ValueError(f"{value!r}: {e}") from None


def _host_ports(raw: str) -> tuple[tuple[str, int], ...]:
    values = tuple(_host_port(value) for value in _split(raw))
    if len(set(values)) != len(values):
        raise ValueError("an address is listed twice")
    return values


def _label(raw: str) -> str:
    value = raw.strip().lower()
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", value):
        raise ValueError("expected one DNS label such as conference")
    return value


def _room_name(raw: str) -> str:
    value = raw.strip().lower()
    if value and not re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,63}", value):
        raise ValueError("a room's name: letters, digits, '.', '_' and '-', at most 64 (empty: no such room)")
    return value


def _host_or_empty(raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"([A-Za-z0-9.\-]+|\[[0-9A-Fa-f:.]+\])(:[0-9]{1,5})?", value):
        raise ValueError("must be a host name or [address], with :port if not 5222")
    return value


def _websocket_uri(raw: str) -> str:
    value = raw.strip()
    if value and not re.fullmatch(r"wss?://[^\s'\"<>]+", value):
        raise ValueError("must be a ws:// or wss:// URI")
    return value


def _word(raw: str) -> str:
    value = raw.strip()
    if not re.fullmatch(r"\S+", value):
        raise ValueError("expected one word (no spaces)")
    return value


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


_SCHEMA: dict[str, tuple[type, dict[str, Callable[[str], object]]]] = {
    "xmpp": (
        XMPPSettings,
        {
            "interfaces": _interfaces,
            "port": _port,
            "extra_ports": _ports,
            "direct_tls_port": _optional(_port),
            "require_encryption": _bool,
            "allow_plain_without_tls": _bool,
            "ping_interval": _seconds,
            "ping_timeout": _seconds,
            "auth_timeout": _seconds,
        },
    ),
    "tls": (TLSSettings, {"certificate": _nonempty, "key": _nonempty}),
    "storage": (
        StorageSettings,
        {
            "backend": _one_of("sqlite", "redis", "postgresql", "memory"),
            "path": _nonempty,
            "poll_interval": _seconds,
            "redis_host": _nonempty,
            "redis_port": _port,
            "redis_db": _whole,
            "redis_password": _text,
            "redis_tls": _bool,
            "redis_tls_ca": _text,
            "redis_prefix": _nonempty,
            "postgresql_dsn": _text,
            "postgresql_readers": _positive_int,
        },
    ),
    "archive": (
        ArchiveSettings,
        {
            "backend": _one_of("sqlite", "redis", "postgresql", "memory"),
            "offline_backend": _one_of("sqlite", "redis", "postgresql", "memory"),
            "commit_interval": _seconds_or_zero,
            "conversation_gap": _seconds,
            "retention_days": _optional(_positive_int),
            "offline_quota": _positive_int,
        },
    ),
    "auth": (
        AuthSettings,
        {
            "scram_iterations": _iterations,
            "max_attempts": _positive_int,
            "failures_per_account": _positive_int,
            "failures_per_address": _positive_int,
            "lockout": _seconds,
        },
    ),
    "limits": (
        LimitSettings,
        {
            "max_stanza_size": _positive_int,
            "max_stanza_size_preauth": _positive_int,
            "max_depth": _positive_int,
            "max_output_buffer": _positive_int,
            "read_rate": _positive_int,
            "read_burst": _positive_int,
            "stanza_rate": _seconds,
            "stanza_burst": _positive_int,
            "max_preauth_per_address": _positive_int,
            "session_rate": _seconds,
            "session_burst": _positive_int,
        },
    ),
    "http": (
        HTTPSettings,
        {
            "interfaces": _interfaces,
            "port": _port,
            "tls": _bool,
            "bosh_path": _url_path,
            "websocket_path": _optional_url_path,
            "cors_origins": _origins,
            "bosh_hold": _positive_int,
            "bosh_requests": _positive_int,
            "bosh_max_wait": _positive_int,
            "bosh_inactivity": _positive_int,
            "bosh_polling": _whole,
            "bosh_max_pause": _whole,
            "bosh_max_body_size": _positive_int,
            "trusted_proxies": _networks,
        },
    ),
    "webmail": (WebmailSettings, {"token_secret": _secret, "token_lifetime": _seconds, "token_max_age": _seconds}),
    "admin": (AdminSettings, {"interfaces": _interfaces, "port": _port, "api_key": _secret}),
    "metrics": (MetricsSettings, {"enabled": _bool}),
    "demo": (DemoSettings, {"create": _bool, "domain": _nonempty}),
    "sm": (StreamManagementSettings, {"resume_timeout": _seconds_or_zero, "ack_every": _positive_int}),
    "upload": (
        UploadSettings,
        {
            "enabled": _bool,
            "path": _nonempty,
            "base_url": _base_url,
            "http_path": _url_path,
            "max_file_size": _positive_int,
            "daily_quota": _positive_int,
            "slot_lifetime": _seconds,
            "secret": _secret,
        },
    ),
    "muc": (
        MUCSettings,
        {
            "enabled": _bool,
            "subdomain": _label,
            "domain_room": _room_name,
            "alias_rooms": _bool,
            "history": _whole,
            "large_room": _whole,
        },
    ),
    "log": (
        LogSettings,
        {
            "format": _one_of("text", "json"),
            "level": _one_of("debug", "info", "warn", "error"),
        },
    ),
    "service": (
        ServiceSettings,
        {
            "drain_timeout": _seconds,
            "see_other_host": _host_or_empty,
            "see_other_uri": _websocket_uri,
        },
    ),
    "pep": (
        PEPSettings,
        {
            "enabled": _bool,
            "max_nodes": _positive_int,
            "max_bytes": _positive_int,
            "max_items": _positive_int,
        },
    ),
    "cluster": (
        ClusterSettings,
        {
            "backend": _one_of("local", "redis"),
            "node_id": _node_id,
            "heartbeat": _seconds,
            "dead_after": _seconds,
            "forward_timeout": _seconds,
            "redis_sentinels": _host_ports,
            "redis_master_name": _word,
        },
    ),
}


def parse(text: str, base_dir: str = ".") -> Settings:
    """Parse the text of a tap-config.ini into :class:`Settings`."""
    parser = configparser.ConfigParser(interpolation=None)
    try:
        parser.read_string(text)
    except configparser.Error as e:
        raise ConfigError(f"tap-config.ini is not a valid INI file: {e.message.splitlines()[0]}") from None
    sections: dict[str, object] = {}
    for name in parser.sections():
        if name not in _SCHEMA:
            raise ConfigError(f"[{name}]: unknown section (known: {', '.join(_SCHEMA)})")
    for name, (cls, keys) in _SCHEMA.items():
        values: dict[str, object] = {}
        if parser.has_section(name):
            for key, raw in parser.items(name):
                if key not in keys:
                    raise ConfigError(f"[{name}] {key}: unknown key (known: {', '.join(keys)})")
                try:
                    values[key] = keys[key](raw)
                except ValueError as e:
                    raise ConfigError(f"[{name}] {key} = {raw!r}: {e}") from None
        sections[name] = cls(**values)
    settings = Settings(base_dir=base_dir, **sections)  # type: ignore[arg-type]
    _check(settings)
    return settings


def _check(settings: Settings) -> None:
    x = settings.xmpp
    if x.ping_timeout >= x.ping_interval:
        raise ConfigError("[xmpp] ping_timeout: must be shorter than ping_interval")
    ports = [x.port, *x.extra_ports] + ([x.direct_tls_port] if x.direct_tls_port else [])
    if len(set(ports)) != len(ports):
        raise ConfigError("[xmpp] extra_ports: a port is listed twice (with port or direct_tls_port)")
    if settings.archive.commit_interval > 1:
        raise ConfigError("[archive] commit_interval: at most 1 second (a crash loses what is not committed)")
    limits = settings.limits
    if limits.max_stanza_size_preauth > limits.max_stanza_size:
        raise ConfigError("[limits] max_stanza_size_preauth: must not exceed max_stanza_size")
    h = settings.http
    if h.port in ports:
        raise ConfigError(f"[http] port: {h.port} is an [xmpp] port already")
    if h.bosh_requests <= h.bosh_hold:
        raise ConfigError("[http] bosh_requests: must be greater than bosh_hold (XEP-0124 §7.2)")
    if h.bosh_polling >= h.bosh_inactivity:
        raise ConfigError("[http] bosh_polling: must be shorter than bosh_inactivity")
    if h.bosh_max_body_size < limits.max_stanza_size_preauth:
        raise ConfigError("[http] bosh_max_body_size: must be at least [limits] max_stanza_size_preauth")
    if limits.read_burst < limits.max_stanza_size:
        raise ConfigError("[limits] read_burst: must be at least max_stanza_size")
    c = settings.cluster
    if c.dead_after < 2 * c.heartbeat:
        raise ConfigError("[cluster] dead_after: must be at least twice heartbeat")
    if c.backend == "redis" and "memory" in (settings.storage.backend, settings.archive.backend,
                                             settings.archive.offline_backend):
        raise ConfigError("[cluster] backend = redis: the nodes must share their stores (not memory)")
    if "postgresql" in (settings.storage.backend, settings.archive.backend, settings.archive.offline_backend) \
            and not settings.storage.postgresql_dsn:
        raise ConfigError("[storage] postgresql_dsn: needed by the stores on postgresql")
    paths = [p for p in (h.bosh_path, h.websocket_path, settings.upload.http_path) if p]
    if len(set(paths)) != len(paths):
        raise ConfigError("[http] websocket_path: bosh_path, websocket_path and [upload] http_path must differ")
    u = settings.upload
    if u.daily_quota < u.max_file_size:
        raise ConfigError("[upload] daily_quota: must be at least max_file_size")
    if c.backend == "redis" and u.enabled and not u.secret:
        raise ConfigError("[upload] secret: every node of a cluster must share it (set it, or enabled = false)")
    if settings.webmail.token_max_age < settings.webmail.token_lifetime:
        raise ConfigError("[webmail] token_max_age: must not be shorter than token_lifetime")


def load(path: str) -> Settings:
    """Read and parse the configuration file at *path*."""
    try:
        with open(path, encoding="utf-8") as f:
            text = f.read()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read the configuration file: {e.strerror}") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: the configuration file is not UTF-8") from None
    return parse(text, base_dir=os.path.dirname(os.path.abspath(path)))
