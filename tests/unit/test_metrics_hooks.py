"""chatgate.metrics without a server: login reasons, the hooks on router and stores, the lag timer."""

from __future__ import annotations

from types import SimpleNamespace

from prometheus_client.exposition import generate_latest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.defer import Deferred, succeed
from twisted.internet.task import Clock

from chatgate import events
from chatgate.metrics import Metrics, ReactorLag


def samples(metrics: Metrics) -> dict:
    text = generate_latest(metrics.registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


class FakeRouter:
    def __init__(self, sessions):
        self.sessions = sessions
        self.routed = []
        self.listeners = []

    def route(self, stanza, sender):
        self.routed.append(stanza)

    def listen(self, event, listener, priority=0):
        self.listeners.append((event, listener, priority))

    def all_sessions(self):
        return self.sessions

    def all_remote_sessions(self):
        return []


def session(transport, domain, rooms=None):
    return SimpleNamespace(transport_name=transport, domain=domain, state={} if rooms is None else {"muc": rooms})


def test_logins_by_mechanism_and_reason():
    m = Metrics()
    m.login_succeeded("c2s", "SCRAM-SHA-256")
    m.login_failed("bosh", "PLAIN", "not-authorized", None)
    m.login_failed("c2s", "", "invalid-mechanism", None)
    m.login_failed("c2s", "SCRAM-SHA-1", "temporary-auth-failure", "Too many failed logins; try again later")
    m.login_failed("c2s", "SCRAM-SHA-1", "temporary-auth-failure", None)  # a store failure: not the throttle
    s = samples(m)
    assert s[("chatgate_logins_total", (("mechanism", "SCRAM-SHA-256"), ("transport", "c2s")))] == 1
    assert s[("chatgate_login_failures_total",
              (("mechanism", "PLAIN"), ("reason", "not-authorized"), ("transport", "bosh")))] == 1
    assert s[("chatgate_login_failures_total",
              (("mechanism", "none"), ("reason", "invalid-mechanism"), ("transport", "c2s")))] == 1
    assert s[("chatgate_login_failures_total",
              (("mechanism", "SCRAM-SHA-1"), ("reason", "temporary-auth-failure"), ("transport", "c2s")))] == 2
    assert s[("chatgate_logins_throttled_total", (("transport", "c2s"),))] == 1


def test_routed_sessions_and_bosh_read_at_scrape():
    router = FakeRouter([session("c2s", "a.example"), session("c2s", "a.example"), session("bosh", "b.example")])
    connections = {"s1": SimpleNamespace(_held=[1, 2]), "s2": SimpleNamespace(_held=[])}
    m = Metrics()
    m.watch(router, bosh=SimpleNamespace(connections=connections))
    for name in ("message", "message", "presence", "iq"):
        router.route(SimpleNamespace(name=name), None)
    assert len(router.routed) == 4  # still routed
    assert [(e, p) for e, _, p in router.listeners] == [(events.MESSAGE_DELIVERING, events.PER_TARGET - 1),
                                                        (events.PRESENCE_DELIVERING, events.PER_TARGET - 1)]
    s = samples(m)
    assert s[("chatgate_stanzas_routed_total", (("kind", "message"),))] == 2
    assert s[("chatgate_stanzas_routed_total", (("kind", "iq"),))] == 1
    assert s[("chatgate_sessions", (("domain", "a.example"), ("transport", "c2s")))] == 2
    assert s[("chatgate_sessions", (("domain", "b.example"), ("transport", "bosh")))] == 1
    assert s[("chatgate_bosh_sessions", ())] == 2
    assert s[("chatgate_bosh_held_requests", ())] == 2
    router.sessions = []
    assert ("chatgate_sessions", (("domain", "a.example"), ("transport", "c2s"))) not in samples(m)


def test_room_occupants_read_from_the_sessions_shared_state():
    room, other = "everyone@conference.a.example", "team@conference.a.example"
    router = FakeRouter([session("c2s", "a.example", {room: "alice", other: "alice"}),
                         session("bosh", "a.example", {room: "bob"}), session("c2s", "a.example", {}),
                         session("c2s", "b.example")])
    m = Metrics()
    m.watch(router)
    s = samples(m)
    assert s[("chatgate_room_occupant_sessions", (("domain", "a.example"),))] == 3
    assert s[("chatgate_rooms_occupied", (("domain", "a.example"),))] == 2
    assert ("chatgate_rooms_occupied", (("domain", "b.example"),)) not in s


def test_archive_commits_are_timed_and_offline_counted():
    written: Deferred = Deferred()
    archive = SimpleNamespace(append=lambda messages: written)
    offline = SimpleNamespace(push=lambda bare, message, quota: succeed(quota > 0))
    router = FakeRouter([])
    m = Metrics()
    m.watch(router, archive, offline)
    archive.append(["m1", "m2"])
    assert samples(m)[("chatgate_archive_pending_messages", ())] == 2
    written.callback(None)
    s = samples(m)
    assert s[("chatgate_archive_pending_messages", ())] == 0
    assert s[("chatgate_archive_commit_seconds_count", ())] == 1
    offline.push("bob@a.example", "hi", 10)
    offline.push("bob@a.example", "hi", 0)  # over quota: not stored
    delivering = router.listeners[0][1]
    delivering(SimpleNamespace(stored=True, targets=[object()], stopped=False, copy_of=None, written=None))
    delivering(SimpleNamespace(stored=False, targets=[object()], stopped=False, copy_of=None, written=None))
    s = samples(m)
    assert s[("chatgate_offline_stored_total", ())] == 1
    assert s[("chatgate_offline_delivered_total", ())] == 1


def test_reactor_lag_measures_lateness():
    clock = Clock()
    m = Metrics()
    lag = ReactorLag(m.reactor_lag, clock, now=clock.seconds)
    lag.start()
    clock.advance(1.0)  # on time
    clock.advance(1.5)  # the reactor was busy: half a second late
    lag.stop()
    assert not clock.getDelayedCalls()
    s = samples(m)
    assert s[("chatgate_reactor_lag_seconds_count", ())] == 2
    assert s[("chatgate_reactor_lag_seconds_sum", ())] == 0.5
    assert s[("chatgate_reactor_lag_seconds_bucket", (("le", "0.25"),))] == 1
