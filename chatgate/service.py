"""The composition root: builds stores, router, features and listeners.

Nothing else wires parts together. ``twistd chatgate`` calls
:func:`makeService`; a bad configuration stops the start with one line.
"""

from __future__ import annotations

import dataclasses
import gc
import secrets
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from twisted.application import service
from twisted.application.internet import TimerService
from twisted.internet import defer, error
from twisted.logger import Logger
from twisted.web import server

from chatgate import logs, systemd
from chatgate.auth import slots
from chatgate.auth.credentials import make_credentials
from chatgate.auth.sasl import Authenticator
from chatgate.auth.throttle import LoginThrottle
from chatgate.cluster import Cluster
from chatgate.config import ConfigError, Settings, load
from chatgate.features import register_all
from chatgate.metrics import Metrics, ReactorLag
from chatgate.mirror import DirectoryMirror
from chatgate.private_files import warn_if_open
from chatgate.router import Router
from chatgate.storage import Stores, open_archive, open_directory, open_files, open_offline
from chatgate.storage.backup import hold_running
from chatgate.storage.interfaces import ArchiveError, DirectoryError, DuplicateDomain, User
from chatgate.tls import ReloadableContext, ensure_certificate
from chatgate.transports.bosh import BOSHResource, ConnectionManager
from chatgate.transports.c2s import C2SFactory
from chatgate.transports.sm import Resumption
from chatgate.transports.websocket import WebSocketEndpoint, WebSocketFactory
from chatgate.web.admin_api import AdminAPI
from chatgate.web.history import HistoryAPI
from chatgate.web.monitoring import AdminRoot
from chatgate.web.pane import ChatPane
from chatgate.web.site import make_site
from chatgate.web.upload import UploadResource

log = Logger()

#: the configuration's sections SIGHUP applies to a running node
RELOADABLE = ("limits", "log")
#: seconds /health/ready waits for the directory
READY_TIMEOUT = 2.0

DEMO_USERS = (("alice", "Alice Archer"), ("bob", "Bob Baker"), ("carol", "Carol Carter"))


class Stage(service.Service):
    """A child of the service tree whose start and stop are the given functions;
    either may return a Deferred, which :class:`ChatService` waits for."""

    def __init__(self, name: str, start: Callable[[], Any] | None = None,
                 stop: Callable[[], Any] | None = None) -> None:
        self.setName(name)
        self._start, self._stop = start, stop

    def startService(self) -> Any:
        super().startService()
        return self._start() if self._start is not None else None

    def stopService(self) -> Any:
        super().stopService()
        return self._stop() if self._stop is not None else None


class ChatService(service.MultiService):
    """One chatgate node: the root of its service tree (``twisted.application.service``).

    Its children start in this order, each once the one before has started
    (a Deferred its ``startService`` returns is waited for), and stop in the
    reverse order, each once the one after it has stopped (likewise):

    1. ``stores``: opens the directory, archive, offline and upload stores; on stop
       closes them, the archive committing every write still queued first.
    2. ``directory``: the demo domain when asked, the directory mirror loaded,
       the login secrets read.
    3. ``directory-feed``: a TimerService reading the directory's change feed
       every ``[storage] poll_interval`` (changes by other processes).
    4. the features' services, in ``FEATURES`` order (``ping``: idle clients;
       ``retention``: history older than ``[archive] retention_days``;
       ``upload-expiry``: uploaded files as old).
    5. ``cluster`` (``[cluster] backend = redis`` only): the bus between nodes
       (heartbeats, this node's inbox); on stop, after the sessions below have
       ended and other nodes were told, the node leaves the cluster.
    6. ``sessions``: on stop, every session still bound is closed with
       <system-shutdown/>.
    7. ``listeners``: the c2s, web and admin ports; on stop they accept no
       more connections.
    8. ``bosh``: the BOSH connection manager; on stop, first of all, every
       BOSH session ends with system-shutdown, a held request answered with
       it while the web listener still runs (a client between two requests
       gets the answer kept for its next one).

    So a stop (SIGTERM) ends the BOSH sessions, closes the doors, closes every
    other session, stops the timers (a call under way finishing), and closes
    the stores last.
    A timer's clock is the *reactor* given, so unit tests pass a Clock.
    """

    name = "chatgate"

    def __init__(self, settings: Settings, tls_context: Any, reactor: Any = None,
                 process_wide: bool = True) -> None:
        """*process_wide*: also take SIGHUP (TLS reload) and tune the cyclic
        collector once started; False in unit tests, which share the process."""
        super().__init__()
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        self.settings = settings
        self.tls_context = tls_context
        self.directory = open_directory(settings)
        self.archive = open_archive(settings)
        self.offline = open_offline(settings)
        self.files = open_files(settings)
        self.stores = Stores(directory=self.directory, archive=self.archive, offline=self.offline, files=self.files)
        self.domains = DirectoryMirror(self.directory)
        self.router = Router(self.domains, clock=reactor)
        self.cluster = open_cluster(settings, reactor)
        self.router.attach_cluster(self.cluster)
        a = settings.auth
        throttle = LoginThrottle(reactor, a.failures_per_account, a.failures_per_address, a.lockout)
        self.authenticator = Authenticator(self.directory, self.domains, a.scram_iterations, throttle,
                                           settings.webmail.token_secret.encode(), settings.webmail.token_max_age)
        self.process_wide = process_wide
        #: the configuration file, read again on SIGHUP (None: settings given, nothing to reload)
        self.config_path: str | None = None
        #: True from the start of a stop (SIGTERM, chatgate-admin drain): /health/ready says so
        self.draining = False
        self.ports: list[Any] = []
        #: the admin listener's ports: closed last, so /health/ready tells a drain to the end
        self.admin_ports: list[Any] = []
        #: the shared lock on the SQLite store's ``.running`` file while the stores are open
        self._running_lock: Any = None
        #: address -> its connections not authenticated yet, c2s and BOSH alike
        self._preauth: dict[str, int] = {}
        self.bosh = ConnectionManager(self.router, self.authenticator, settings, reactor, self._preauth)
        #: sessions stream management (XEP-0198) may resume, on c2s and WebSocket
        self.resumption = Resumption(self.router, settings, self.cluster, reactor)
        #: what /metrics shows ([metrics] enabled), None when off
        self.metrics: Metrics | None = None
        if settings.metrics.enabled:
            self.metrics = Metrics()
            self.authenticator.logins = self.metrics
            self.metrics.watch(self.router, self.archive, self.offline, self.bosh, throttle, self.cluster,
                               settings.limits.max_output_buffer)
        Stage("stores", self._open_stores, self._close_stores).setServiceParent(self)
        Stage("directory", self._load_directory).setServiceParent(self)
        feed = TimerService(settings.storage.poll_interval, self.directory.poll)
        feed.clock = reactor
        feed.setName("directory-feed")
        feed.setServiceParent(self)
        for feature_service in register_all(self.router, settings, self.stores):
            feature_service.setServiceParent(self)
        bus = self.cluster.service()
        if bus is not None:
            bus.setServiceParent(self)
        service_settings = settings.service
        Stage("sessions", stop=lambda: self.router.redirect_all(service_settings.see_other_host,
                                                                 service_settings.see_other_uri)
              ).setServiceParent(self)
        Stage("listeners", self._listen, self._stop_listening).setServiceParent(self)
        self.bosh.setServiceParent(self)
        if self.metrics is not None:
            lag = ReactorLag(self.metrics.reactor_lag, reactor)
            Stage("reactor-lag", lag.start, lag.stop).setServiceParent(self)

    def startService(self) -> None:
        service.Service.startService(self)
        self._starting = self._start()
        self._starting.addErrback(self._start_failed)

    @defer.inlineCallbacks
    def _start(self):
        for child in list(self):
            if not self.running:  # stopped while starting: the stop takes the started ones down
                return
            yield defer.maybeDeferred(child.startService)
        if self.process_wide:
            self._take_process()
        log.info("chatgate ready: domains {domains}", domains=", ".join(self.domains.names()) or "(none)")
        if self.process_wide:
            systemd.notify("READY=1")

    def stopService(self) -> defer.Deferred[None]:
        """Drain: stop the children in reverse order, each after the one started after it has
        stopped, within ``[service] drain_timeout`` seconds; the admin listener last."""
        service.Service.stopService(self)
        self.draining = True
        if self.process_wide:
            systemd.notify("STOPPING=1")
        s = self.settings.service
        log.info("chatgate stopping: no new connections, clients sent to {where}, the archive flushed,"
                 " within {timeout:g} s", where=s.see_other_uri or s.see_other_host or "(nowhere: system-shutdown)",
                 timeout=s.drain_timeout, event="stopping")
        d = self._stop_children()
        d.addTimeout(s.drain_timeout, self.reactor)
        d.addErrback(self._drain_overdue)
        d.addBoth(lambda _: self._stop_admin())
        return d

    @defer.inlineCallbacks
    def _stop_children(self):
        for child in reversed(list(self)):
            if child.running:
                try:
                    yield defer.maybeDeferred(child.stopService)
                except Exception:
                    log.failure("stopping {name} failed", name=child.name)

    def _drain_overdue(self, failure: Any) -> None:
        if failure.check(defer.TimeoutError, defer.CancelledError):
            log.error("chatgate stopped before its drain ended ([service] drain_timeout = {timeout:g} s):"
                      " what the archive had not committed yet is lost", timeout=self.settings.service.drain_timeout)
        else:
            log.failure("stopping chatgate failed", failure)

    def _stop_admin(self) -> defer.Deferred[Any]:
        ports, self.admin_ports = self.admin_ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])

    def drain(self) -> None:
        """Stop this node gracefully, as SIGTERM does (``chatgate-admin drain``, the admin API)."""
        if not self.draining:
            log.info("drain asked through the admin API")
            self.reactor.callLater(0, self.reactor.stop)

    @defer.inlineCallbacks
    def _open_stores(self):
        if "sqlite" in (self.settings.storage.backend, self.settings.archive.backend) and self.process_wide:
            # a restore (chatgate-admin restore) waits for no node to hold this
            self._running_lock = hold_running(self.settings.path(self.settings.storage.path))
        yield self.directory.start()
        yield self.archive.start()
        yield self.offline.start()
        if self.files is not None:
            yield self.files.start()

    @defer.inlineCallbacks
    def _close_stores(self):
        yield self.archive.stop()  # commits the history still queued
        yield self.offline.stop()
        yield self.directory.stop()
        if self._running_lock is not None:
            self._running_lock.close()
            self._running_lock = None

    @defer.inlineCallbacks
    def _load_directory(self):
        if self.settings.demo.create and not (yield self.directory.domains()):
            yield self._create_demo()
        yield self.domains.load()
        yield self.authenticator.start()

    def _take_process(self) -> None:
        """What only the real process does: SIGHUP, and the cyclic collector's tuning."""
        # SIGHUP: read the certificate (after a renewal) and the configuration again, without a restart.
        signal.signal(signal.SIGHUP, lambda *_: self.reactor.callFromThread(self.reload))
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

    def _listen(self) -> None:
        """Listen on every configured port (CannotListenError fails the start)."""
        x = self.settings.xmpp
        preauth = self._preauth
        plain = C2SFactory(self.router, self.authenticator, self.settings, self.tls_context,
                           clock=self.reactor, preauth=preauth, resumption=self.resumption)
        direct = C2SFactory(self.router, self.authenticator, self.settings, self.tls_context,
                            direct_tls=True, clock=self.reactor, preauth=preauth, resumption=self.resumption)
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
        history = HistoryAPI(self.authenticator, self.domains, self.archive, self.settings.archive.conversation_gap,
                             h.trusted_proxies, self.router.may_read_archive)
        pane = ChatPane(self.settings, self.directory, history.authenticate)  # /chat/, /api/sites/<host>/chat
        websocket = WebSocketEndpoint(WebSocketFactory(self.router, self.authenticator, self.settings, self.reactor,
                                                       self._preauth, self.resumption))
        upload = None
        if self.files is not None:
            u = self.settings.upload
            files = UploadResource(self.settings, self.files, slots.upload_key(self.settings), self.reactor)
            upload = (u.http_path, files.body_limit, files)
        site = make_site(h, bosh=BOSHResource(self.bosh), pane=pane, websocket=websocket, upload=upload)
        history.mount(site.resource, h.cors_origins)  # the webmail's conversations, at /history/
        for interface in h.interfaces:
            if h.tls:
                self.ports.append(self.reactor.listenSSL(h.port, site, self.tls_context, backlog=1024,
                                                         interface=interface))
            else:
                self.ports.append(self.reactor.listenTCP(h.port, site, backlog=1024, interface=interface))
            log.info("{scheme} (BOSH at {path}{websocket}) on {interface} port {port}",
                     scheme="HTTPS" if h.tls else "HTTP", path=h.bosh_path, interface=interface, port=h.port,
                     websocket=f", WebSocket at {h.websocket_path}" if h.websocket_path else "")
        self._listen_admin()

    def _listen_admin(self) -> None:
        """The admin API (with an api_key) and monitoring (``[metrics] enabled``: no key) on one port."""
        a = self.settings.admin
        if not a.api_key and self.metrics is None:
            return
        api = AdminAPI(self.directory, self.settings, self.drain, self.stores) if a.api_key else None
        if self.metrics is None:
            root = AdminRoot(api, None, None)
        else:
            root = AdminRoot(api, self.metrics.registry, self.readiness)
        site = server.Site(root)
        site.log = lambda request: None  # requests carry user names; the API's effects are logged
        serves = " and ".join(name for name, on in (("admin API", api is not None),
                                                     ("metrics and health", self.metrics is not None)) if on)
        for interface in a.interfaces:
            self.admin_ports.append(self.reactor.listenTCP(a.port, site, interface=interface))
            log.info("{serves} on {interface} port {port}", serves=serves, interface=interface, port=a.port)

    def readiness(self) -> defer.Deferred[str | None]:
        """None when this node can take users (listeners up, the directory answering within
        READY_TIMEOUT seconds), else why not, in one line: ``/health/ready``."""
        if self.draining:
            return defer.succeed("the node is draining")
        listeners = self.getServiceNamed("listeners")
        if not (self.running and listeners.running and self.ports):
            return defer.succeed("the listeners are not up")
        d = self.directory.domains()
        d.addTimeout(READY_TIMEOUT, self.reactor)
        d.addCallbacks(lambda _: None, self._not_ready)
        return d

    @staticmethod
    def _not_ready(failure: Any) -> str:
        if failure.check(defer.TimeoutError):
            return f"the directory did not answer within {READY_TIMEOUT:g} s"
        return f"the directory cannot be reached: {failure.getErrorMessage()}"

    def _stop_listening(self) -> defer.Deferred[Any]:
        ports, self.ports = self.ports, []
        return defer.gatherResults([defer.maybeDeferred(p.stopListening) for p in ports])

    def reload(self) -> None:
        """SIGHUP: the TLS certificate, and what of the configuration can change live."""
        self.reload_tls()
        if self.config_path is not None:
            self.reload_settings()

    def reload_settings(self) -> None:
        """Read the configuration file again: ``[limits]`` apply to every connection and request
        from now on; a change anywhere else is named in the log as needing a restart."""
        try:
            fresh = load(self.config_path or "")
        except ConfigError as e:
            log.error("configuration not reloaded, the running one stays: {error}", error=str(e))
            return
        changed = [f.name for f in dataclasses.fields(Settings) if f.name != "base_dir"
                   and getattr(fresh, f.name) != getattr(self.settings, f.name)]
        if "limits" in changed:
            # one Settings object is shared by every part: each reads settings.limits as it needs it
            object.__setattr__(self.settings, "limits", fresh.limits)
        if "log" in changed:
            logs.set_level(fresh.log.level)  # the format stays: it is the observer twistd started with
            if fresh.log.format != self.settings.log.format:
                changed.append("log format")
            object.__setattr__(self.settings, "log", replace(self.settings.log, level=fresh.log.level))
        restart = [name for name in changed if name not in RELOADABLE]
        changed = [name for name in changed if name != "log format"]
        log.info("configuration reloaded from {path}: {reloaded}{restart}", path=self.config_path,
                 reloaded=", ".join(f"[{n}]" for n in changed if n in RELOADABLE) or "nothing changed live",
                 restart=f"; changed but applied only at the next start: {', '.join(f'[{n}]' for n in restart)}"
                 if restart else "")

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
        elif failure.check(DirectoryError, ArchiveError):
            # a store that cannot be reached says why in one line (server, sentinels, reason)
            log.critical("chatgate could not start: {reason}", reason=failure.value)
        else:
            log.failure("chatgate could not start", failure)
        self.reactor.stop()

    @defer.inlineCallbacks
    def _create_demo(self):
        domain = self.settings.demo.domain
        try:
            yield self.directory.add_domain(domain)
        except DuplicateDomain:
            return  # another node sharing the store, starting at the same time, made it
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


def open_cluster(settings: Settings, reactor: Any = None) -> Cluster:
    """The bus ``[cluster] backend`` names, not started yet (:mod:`chatgate.cluster`)."""
    if settings.cluster.backend == "redis":
        from chatgate.cluster.redis_cluster import RedisCluster

        return RedisCluster(settings, reactor)
    return Cluster()


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
    chat = ChatService(settings, tls_context)
    chat.config_path = config_path
    return chat
