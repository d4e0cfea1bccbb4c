"""tap-config.ini -> typed, validated settings.

Every key has a default (the same ones tap-config.ini documents). A bad value
raises :class:`ConfigError` whose message names the section and the key, so
the service stops at start with one line instead of failing later.
"""

from __future__ import annotations

import configparser
import ipaddress
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

T = TypeVar("T")


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


@dataclass(frozen=True)
class WebmailSettings:
    #: HMAC key shared with the webmail for login tokens; empty: tokens are off
    token_secret: str = ""
    #: seconds a login token minted by chatgate stays valid
    token_lifetime: float = 300.0


@dataclass(frozen=True)
class AdminSettings:
    interfaces: tuple[str, ...] = ("127.0.0.1",)
    port: int = 5281
    #: bearer key of the admin API; empty: the API is off
    api_key: str = ""


@dataclass(frozen=True)
class DemoSettings:
    create: bool = True
    domain: str = "example.com"


@dataclass(frozen=True)
class Settings:
    xmpp: XMPPSettings = field(default_factory=XMPPSettings)
    tls: TLSSettings = field(default_factory=TLSSettings)
    storage: StorageSettings = field(default_factory=StorageSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    limits: LimitSettings = field(default_factory=LimitSettings)
    webmail: WebmailSettings = field(default_factory=WebmailSettings)
    admin: AdminSettings = field(default_factory=AdminSettings)
    demo: DemoSettings = field(default_factory=DemoSettings)
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


def _optional_port(raw: str) -> int | None:
    return _port(raw) if raw.strip() else None


def _ports(raw: str) -> tuple[int, ...]:
    return tuple(_port(p) for p in _split(raw))


def _positive_int(raw: str) -> int:
    try:
        value = int(raw)
    except ValueError:
        raise ValueError("expected a whole number") from None
    if value <= 0:
        raise ValueError("must be greater than 0")
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


def _backend(raw: str) -> str:
    value = raw.strip()
    if value not in ("sqlite", "memory"):
        raise ValueError("expected sqlite or memory")
    return value


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


def _split(raw: str) -> list[str]:
    return [part.strip() for part in raw.split(",") if part.strip()]


_SCHEMA: dict[str, tuple[type, dict[str, Callable[[str], object]]]] = {
    "xmpp": (
        XMPPSettings,
        {
            "interfaces": _interfaces,
            "port": _port,
            "extra_ports": _ports,
            "direct_tls_port": _optional_port,
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
        {"backend": _backend, "path": _nonempty, "poll_interval": _seconds},
    ),
    "auth": (
        AuthSettings,
        {
            "scram_iterations": _positive_int,
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
        },
    ),
    "webmail": (WebmailSettings, {"token_secret": _secret, "token_lifetime": _seconds}),
    "admin": (AdminSettings, {"interfaces": _interfaces, "port": _port, "api_key": _secret}),
    "demo": (DemoSettings, {"create": _bool, "domain": _nonempty}),
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
    limits = settings.limits
    if limits.max_stanza_size_preauth > limits.max_stanza_size:
        raise ConfigError("[limits] max_stanza_size_preauth: must not exceed max_stanza_size")
    if limits.read_burst < limits.max_stanza_size:
        raise ConfigError("[limits] read_burst: must be at least max_stanza_size")


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
