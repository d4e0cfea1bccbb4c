"""What a node tells Prometheus: chatgate's own metrics, in its own registry.

One :class:`Metrics` per service (``service.py`` makes it when ``[metrics]
enabled``), with a ``prometheus_client`` :class:`CollectorRegistry` of its
own (never the process-global one: unit tests run several services in one
process). ``GET /metrics`` on the admin listener serializes it
(:mod:`chatgate.web.monitoring`).

Most of it costs nothing until a scrape: :class:`_Scraped` reads the state
the parts keep anyway when Prometheus asks (sessions by transport and
domain from the router, BOSH sessions and held requests from the connection
manager, messages waiting for the archive). What has to be counted as it
happens is counted at the edges, once per event:

- logins: the stream (``transports/stream.py``) tells the authenticator's
  ``logins`` (this object) of each SASL success and failure;
- stanzas routed: :meth:`Metrics.watch` wraps this router's ``route`` (one
  dict increment per stanza a client sends), the archive's ``append`` (the
  commit latency, and how many messages wait) and the offline store's
  ``push`` (stored), so the router and the stores know nothing of metrics;
- stanzas delivered, offline messages delivered and the delivery time (from
  the router to the recipients' connections, the archive commit included):
  ``message-delivering`` and ``presence-delivering`` listeners, last of all,
  the time taken when the delivery's write-ahead hold is released;
- login locks, sessions whose client is behind by more than half the output
  limit, and (with the cluster on Redis) the heartbeat's round trip, read at a
  scrape; the time entries wait in the cluster inbox, observed by the bus;
- reactor lag: :class:`ReactorLag`, a call every second measuring how late it is.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from twisted.internet.defer import Deferred

from chatgate import events
from chatgate.delivery import Delivery

#: the Session.state key (a SHARED_STATE one) of the team rooms a session is in
ROOMS_STATE = "muc"
#: the SASL failure the login throttle answers with (chatgate.auth.throttle)
THROTTLED = "temporary-auth-failure"

#: seconds: the archive commits in batches every [archive] commit_interval (10 ms by default)
COMMIT_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Metrics:
    """Every metric of one node, and the hooks that feed them."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        self.logins = Counter("chatgate_logins", "Successful SASL logins, by transport and mechanism",
                              ["transport", "mechanism"], registry=r)
        self.login_failures = Counter(
            "chatgate_login_failures",
            "Refused SASL logins, by transport, mechanism (none before one was chosen) and reason "
            "(the RFC 6120 6.5 condition sent)", ["transport", "mechanism", "reason"], registry=r)
        self.throttled = Counter("chatgate_logins_throttled",
                                 "Logins refused because the account or address is locked after failures "
                                 "(also counted in chatgate_login_failures as temporary-auth-failure)",
                                 ["transport"], registry=r)
        self.archive_commit = Histogram("chatgate_archive_commit_seconds",
                                        "Seconds from handing messages to the archive to their commit",
                                        buckets=COMMIT_BUCKETS, registry=r)
        self.offline_stored = Counter("chatgate_offline_stored", "Messages kept offline (XEP-0160)",
                                      registry=r)
        self.offline_delivered = Counter("chatgate_offline_delivered",
                                         "Messages kept offline, delivered when their recipient came back",
                                         registry=r)
        self.reactor_lag = Histogram("chatgate_reactor_lag_seconds",
                                     "How late a call due every second runs (the reactor's backlog)",
                                     buckets=LAG_BUCKETS, registry=r)
        self.delivery_latency = Histogram(
            "chatgate_delivery_seconds",
            "Seconds from a client's message reaching the router to its release to the recipients' "
            "connections (the archive commit included: nothing is sent before it, write-ahead)",
            buckets=COMMIT_BUCKETS, registry=r)
        self.bus_latency = Histogram("chatgate_cluster_bus_seconds",
                                     "Seconds an entry waited in this node's cluster inbox (Redis's clock)",
                                     buckets=COMMIT_BUCKETS, registry=r)
        #: stanza kind (message, presence, iq) -> how many clients sent to the router
        self.routed: Tally[str] = Tally()
        #: stanza kind (message, presence) -> copies handed to sessions
        self.delivered: Tally[str] = Tally()
        #: when the stanza the router handles now reached it (None between stanzas)
        self._routing_since: float | None = None
        #: messages handed to the archive and not committed yet
        self.archive_pending = 0
        self._scraped = _Scraped(self)
        r.register(self._scraped)

    # -- logins (called by the stream)

    def login_succeeded(self, transport: str, mechanism: str) -> None:
        self.logins.labels(transport, mechanism or "none").inc()

    def login_failed(self, transport: str, mechanism: str, reason: str, text: str | None) -> None:
        self.login_failures.labels(transport, mechanism or "none", reason).inc()
        if reason == THROTTLED and text:  # the throttle says why; a store failure has no text
            self.throttled.labels(transport).inc()

    # -- what the service hands over

    def watch(self, router: Any, archive: Any = None, offline: Any = None, bosh: Any = None,
              throttle: Any = None, cluster: Any = None, output_limit: int = 0) -> None:
        """Count what *router* routes and delivers (and from offline storage), time
        deliveries and *archive*'s commits, count *offline*'s stored messages, and read
        *router*'s sessions (their output against *output_limit*), *bosh*'s connections,
        *throttle*'s locks and *cluster*'s Redis round trip at each scrape."""
        s = self._scraped
        s.router, s.bosh, s.throttle, s.cluster, s.output_limit = router, bosh, throttle, cluster, output_limit
        if cluster is not None and hasattr(cluster, "on_bus_latency"):
            cluster.on_bus_latency = self.bus_latency.observe
        route, routed = router.route, self.routed

        def counted_route(stanza: Any, sender: Any) -> None:
            routed[stanza.name] += 1
            self._routing_since = time.perf_counter()
            try:
                route(stanza, sender)
            finally:
                self._routing_since = None

        router.route = counted_route
        router.listen(events.MESSAGE_DELIVERING, self._delivering, events.PER_TARGET - 1)
        router.listen(events.PRESENCE_DELIVERING, self._presence_delivering, events.PER_TARGET - 1)
        if archive is not None:
            archive.append = self._timed_append(archive.append)
        if offline is not None:
            offline.push = self._counted_push(offline.push)

    def _delivering(self, delivery: Delivery) -> None:
        if delivery.stopped:
            return
        self.delivered["message"] += len(delivery.targets)
        if delivery.stored and delivery.targets:
            self.offline_delivered.inc()
        started = self._routing_since
        if started is None or not delivery.targets or delivery.copy_of is not None:
            return  # not a client's stanza routed now (offline, relayed, a carbon: counted with its original)
        if delivery.written is None:
            self.delivery_latency.observe(time.perf_counter() - started)
        else:
            def released(result: Any) -> Any:
                self.delivery_latency.observe(time.perf_counter() - started)
                return result

            delivery.written.addBoth(released)

    def _presence_delivering(self, delivery: Delivery) -> None:
        if not delivery.stopped:
            self.delivered["presence"] += len(delivery.targets)

    def _timed_append(self, append: Callable[..., Deferred[Any]]) -> Callable[..., Deferred[Any]]:
        observe = self.archive_commit.observe

        def timed(messages: list[Any]) -> Deferred[Any]:
            n = len(messages)
            self.archive_pending += n
            started = time.perf_counter()
            d = append(messages)

            def committed(result: Any) -> Any:
                self.archive_pending -= n
                observe(time.perf_counter() - started)
                return result

            def failed(failure: Any) -> Any:
                self.archive_pending -= n
                return failure

            d.addCallbacks(committed, failed)
            return d

        return timed

    def _counted_push(self, push: Callable[..., Deferred[Any]]) -> Callable[..., Deferred[Any]]:
        def counted(*args: Any, **kwargs: Any) -> Deferred[Any]:
            d = push(*args, **kwargs)

            def stored(result: Any) -> Any:
                if result is not False:  # False: over the recipient's quota
                    self.offline_stored.inc()
                return result

            d.addCallback(stored)
            return d

        return counted


class _Scraped(Collector):
    """The metrics read at a scrape from what the parts keep anyway."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics
        self.router: Any = None
        self.bosh: Any = None
        self.throttle: Any = None
        self.cluster: Any = None
        self.output_limit = 0

    def describe(self) -> list[Metric]:
        return []  # names are known only by collecting; an empty describe keeps the registry from calling collect

    def collect(self) -> Iterator[Metric]:
        m = self.metrics
        routed = CounterMetricFamily("chatgate_stanzas_routed", "Stanzas clients sent to the router, by kind",
                                     labels=["kind"])
        for kind in ("message", "presence", "iq"):
            routed.add_metric([kind], m.routed.get(kind, 0))
        yield routed
        delivered = CounterMetricFamily("chatgate_stanzas_delivered",
                                        "Stanzas handed to sessions (one per recipient session), by kind",
                                        labels=["kind"])
        for kind in ("message", "presence"):
            delivered.add_metric([kind], m.delivered.get(kind, 0))
        yield delivered
        if self.throttle is not None:
            accounts, addresses = self.throttle.locked_now()
            locked = GaugeMetricFamily("chatgate_logins_locked",
                                       "Login guessing locks now: an account from one address, or a whole address",
                                       labels=["kind"])
            locked.add_metric(["account"], accounts)
            locked.add_metric(["address"], addresses)
            yield locked
        rtt = getattr(self.cluster, "redis_rtt", None)
        if rtt is not None:
            redis = GaugeMetricFamily("chatgate_cluster_redis_rtt_seconds",
                                      "Round trip of the last cluster heartbeat to Redis")
            redis.add_metric([], rtt)
            yield redis
        pending = GaugeMetricFamily("chatgate_archive_pending_messages",
                                    "Messages handed to the archive and not committed yet (its queue)")
        pending.add_metric([], m.archive_pending)
        yield pending
        if self.router is not None:
            yield from self._sessions()
        if self.bosh is not None:
            connections = list(self.bosh.connections.values())
            sessions = GaugeMetricFamily("chatgate_bosh_sessions", "BOSH sessions (sids) on this node")
            sessions.add_metric([], len(connections))
            yield sessions
            held = GaugeMetricFamily("chatgate_bosh_held_requests", "HTTP requests BOSH holds open on this node")
            held.add_metric([], sum(len(c._held) for c in connections))
            yield held

    def _sessions(self) -> Iterator[Metric]:
        tally: Tally[tuple[str, str]] = Tally()
        occupants: Tally[str] = Tally()
        rooms: dict[str, set[str]] = {}
        half, filling = self.output_limit / 2, 0
        for session in self.router.all_sessions():
            tally[(session.transport_name, session.domain)] += 1
            if half and session.backlog() > half:
                filling += 1
            joined = session.state.get(ROOMS_STATE)  # room JID -> nickname (features/muc)
            if joined:
                occupants[session.domain] += len(joined)
                rooms.setdefault(session.domain, set()).update(joined)
        sessions = GaugeMetricFamily("chatgate_sessions", "Bound sessions on this node, by transport and domain",
                                     labels=["transport", "domain"])
        for (transport, domain), n in sorted(tally.items()):
            sessions.add_metric([transport, domain], n)
        yield sessions
        in_rooms = GaugeMetricFamily("chatgate_room_occupant_sessions",
                                     "Sessions of this node in team rooms (one per room each is in), by domain",
                                     labels=["domain"])
        occupied = GaugeMetricFamily("chatgate_rooms_occupied",
                                     "Team rooms with a session of this node in them, by domain", labels=["domain"])
        for domain in sorted(occupants):
            in_rooms.add_metric([domain], occupants[domain])
            occupied.add_metric([domain], len(rooms[domain]))
        yield in_rooms
        yield occupied
        backlog = GaugeMetricFamily("chatgate_sessions_output_over_half",
                                    "Sessions whose client has not taken more than half of [limits] max_output_buffer")
        backlog.add_metric([], filling)
        yield backlog
        remote = GaugeMetricFamily("chatgate_remote_sessions", "Sessions of other nodes mirrored on this node")
        remote.add_metric([], len(self.router.all_remote_sessions()))
        yield remote


class ReactorLag:
    """A call due every *interval* seconds, each scheduled when the last one
    ran; how late each one runs (on the *now* clock) goes to *histogram*."""

    def __init__(self, histogram: Histogram, clock: Any, interval: float = 1.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        self.histogram = histogram
        self.clock = clock
        self.interval = interval
        self.now = now
        self._due = 0.0
        self._call: Any = None

    def start(self) -> None:
        self._schedule()

    def stop(self) -> None:
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None

    def _schedule(self) -> None:
        self._due = self.now() + self.interval
        self._call = self.clock.callLater(self.interval, self._tick)

    def _tick(self) -> None:
        self.histogram.observe(max(0.0, self.now() - self._due))
        self._schedule()
