"""The composition root: builds stores, router, features and listeners.

Nothing else wires parts together. ``twistd chatgate`` calls
:func:`makeService`; a bad configuration stops the start with one line.
"""

from __future__ import annotations

import gc
import secrets
import signal
import sys
from typing import Any

from twisted.application import service
from twisted.internet import defer, error
from twisted.logger import Logger
from twisted.web import server

from chatgate.auth.credentials import make_credentials
from chatgate.auth.sasl import Authenticator
from chatgate.auth.throttle import LoginThrottle
from chatgate.config import ConfigError, Settings, load
from chatgate.domains import HostedDomains
from chatgate.features import register_all
from chatgate.private_files import warn_if_open
from chatgate.router import Router
from chatgate.storage import Stores, open_archive, open_directory, open_offline
from chatgate.storage.interfaces import User
from chatgate.tls import ReloadableContext, ensure_certificate
from chatgate.transports.bosh import BOSHResource, ConnectionManager
from chatgate.transports.c2s import C2SFactory
from chatgate.web.admin_api import AdminAPI
from chatgate.web.history import HistoryAPI
from chatgate.web.pane import ChatPane
from chatgate.web.site import make_site

log = Logger()

DEMO_USERS = (("alice", "Alice Archer"), ("bob", "Bob Baker"), ("carol", "Carol Carter"))


class ChatService(service.Service):
    """One chatgate node: its stores, router, features and listening ports."""

    name = "chatgate"

    def __init__(self, settings: Settings, tls_context: Any, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings
        self.tls_context = tls_context
        self.directory = open_directory(settings)
        self.archive = open_archive(settings)
        self.offline = open_offline(settings)
        self.stores = Stores(directory=self.directory, archive=self.archive, offline=self.offline)
        self.domains = HostedDomains(self.directory)
        self.router = Router(self.domains, clock=reactor)
        a = settings.auth
        throttle = LoginThrottle(reactor, a.failures_per_account, a.failures_per_address, a.lockout)
        self.authenticator = Authenticator(self.directory, self.domains, a.scram_iterations, throttle,
                                           settings.webmail.token_secret.encode(), settings.webmail.token_max_age)
        register_all(self.router, settings, self.stores)
        self.ports: list[Any] = []

    def startService(self) -> None:
        super().startService()
        self._starting = self._start()
        self._starting.addErrback(self._start_failed)

    @defer.inlineCallbacks
    def _start(self):
        yield self.directory.start()
        yield self.archive.start()
        yield self.offline.start()
        if self.settings.demo.create and not (yield self.directory.domains()):
            yield self._create_demo()
        yield self.domains.load()
        yield self.authenticator.start()
        self._listen()
        self._listen_admin()
        # SIGHUP: read the certificate again (after a renewal) without a restart.
        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload_tls))
        self.router.emit("service-started")
        # The cyclic collector pauses everything; its cost is the number of
        # objects it walks. What exists at start (the directory mirror) is
        # frozen out of it. The delivery path makes no reference cycles
        # (chatgate.xml Element, the SQLite worker's own thread): dropped
        # stanzas are freed at once, not by the collector. A collection of the
        # middle generation walks every live young object (under BOSH load every
        # held request: ~0.2 s for 5,000), so it comes only after 500 young
        # collections (minutes apart under load; bench/RESULTS.md, the S3 tail).
        gc.freeze()
        gc.set_threshold(10_000, 500, 100)
        log.info("chatgate ready: domains {domains}", domains=", ".join(self.domains.names()) or "(none)")

    def _listen(self) -> None:
        x = self.settings.xmpp
        preauth: dict[str, int] = {}
        plain = C2SFactory(self.router, self.authenticator, self.settings, self.tls_context,
                           clock=self.reactor, preauth=preauth)
        direct = C2SFactory(self.router, self.authenticator, self.settings, self.tls_context,
                            direct_tls=True, clock=self.reactor, preauth=preauth)
        for interface in x.interfaces:
            for port in (x.port, *x.extra_ports):
                self.ports.append(self.reactor.listenTCP(port, plain, backlog=1024, interface=interface))
                log.info("XMPP (c2s, STARTTLS) on {interface} port {port}", interface=interface, port=port)
            if x.direct_tls_port:
                self.ports.append(
                    self.reactor.listenSSL(x.direct_tls_port, direct, self.tls_context, backlog=1024,
                                           interface=interface)
                )
                log.info("XMPP (c2s, direct TLS) on {interface} port {port}", interface=interface,
                         port=x.direct_tls_port)
        h = self.settings.http
        self.bosh = ConnectionManager(self.router, self.authenticator, self.settings, self.reactor, preauth)
        history = HistoryAPI(self.authenticator, self.domains, self.archive, self.settings.archive.conversation_gap,
                             h.trusted_proxies)
        pane = ChatPane(self.settings, self.directory, history.authenticate)  # /chat/, /api/sites/<host>/chat
        site = make_site(h, bosh=BOSHResource(self.bosh), pane=pane)
        history.mount(site.resource, h.cors_origins)  # the webmail's conversations, at /history/
        for interface in h.interfaces:
            if h.tls:
                self.ports.append(self.reactor.listenSSL(h.port, site, self.tls_context, backlog=1024,
                                                         interface=interface))
            else:
                self.ports.append(self.reactor.listenTCP(h.port, site, backlog=1024, interface=interface))
            log.info("{scheme} (BOSH at {path}) on {interface} port {port}", scheme="HTTPS" if h.tls else "HTTP",
                     path=h.bosh_path, interface=interface, port=h.port)

    def _listen_admin(self) -> None:
        a = self.settings.admin
        if not a.api_key:
            return
        site = server.Site(AdminAPI(self.directory, self.settings))
        site.log = lambda request: None  # requests carry user names; the API's effects are logged
        for interface in a.interfaces:
            self.ports.append(self.reactor.listenTCP(a.port, site, interface=interface))
            log.info("admin API on {interface} port {port}", interface=interface, port=a.port)

    def reload_tls(self) -> None:
        try:
            self.tls_context.reload()
        except ConfigError as e:
            log.error("TLS certificate not reloaded, the old one stays: {error}", error=str(e))
        else:
            log.info("TLS certificate reloaded from {path}", path=self.tls_context.cert_path)

    def _start_failed(self, failure: Any) -> None:
        if failure.check(error.CannotListenError):
            e = failure.value
            log.critical("chatgate: cannot listen on {iface} port {port}: {reason}",
                         iface=e.interface or "*", port=e.port, reason=e.socketError)
        else:
            log.failure("chatgate could not start", failure)
        self.reactor.stop()

    @defer.inlineCallbacks
    def _create_demo(self):
        domain = self.settings.demo.domain
        yield self.directory.add_domain(domain)
        lines = []
        for localpart, name in DEMO_USERS:
            password = secrets.token_urlsafe(9)
            credentials = make_credentials(password, self.settings.auth.scram_iterations)
            yield self.directory.add_user(User(localpart, domain, name=name), credentials)
            lines.append(f"  {localpart}@{domain}  password: {password}")
        log.info("created the demo domain {domain} with users {users}", domain=domain,
                 users=", ".join(u for u, _ in DEMO_USERS))
        # Shown once on the console, never written to the log.
        banner = "\n".join(["", "chatgate demo accounts (shown once):", *lines, ""])
        sys.__stdout__.write(banner + "\n")
        sys.__stdout__.flush()

    @defer.inlineCallbacks
    def stopService(self):
        super().stopService()
        self.router.emit("service-stopping")
        yield defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in self.ports])
        for resources in list(self.router.sessions.values()):
            for session in list(resources.values()):
                session.close("system-shutdown", "The server is stopping")
        yield self.archive.stop()  # commits the history still queued
        yield self.offline.stop()
        yield self.directory.stop()


def _warn_open_files(settings: Settings, key: str) -> None:
    """A warning for each private file, already there, that other local users may read."""
    warn_if_open(key, "the TLS key")
    if "sqlite" in (settings.storage.backend, settings.archive.backend, settings.archive.offline_backend):
        database = settings.path(settings.storage.path)
        for path in (database, f"{database}-wal", f"{database}-shm"):
            warn_if_open(path, "the database")


def makeService(config_path: str) -> service.IService:
    """Build the chatgate service from *config_path*; exits with one line on a bad config."""
    try:
        settings = load(config_path)
        cert, key = settings.path(settings.tls.certificate), settings.path(settings.tls.key)
        if ensure_certificate(cert, key, [settings.demo.domain]):
            log.info("made a self-signed TLS certificate {cert}", cert=cert)
        _warn_open_files(settings, key)
        tls_context = ReloadableContext(cert, key)
    except ConfigError as e:
        raise SystemExit(f"chatgate: {e}") from None
    return ChatService(settings, tls_context)
