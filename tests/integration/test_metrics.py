"""Monitoring: /metrics read by Prometheus's own parser, and the health checks, as a scraper sees them.

Users log in over real sockets (slixmpp), one with a wrong password, chat and
leave; the metrics are compared before and after, never against totals.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.cluster import Cluster
from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import LoginFailed, Server, async_test, free_port, login, logout
from tests.redis_server import RedisServer

KEY = "an-admin-key-that-is-long-enough-0123456789"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    admin_port = free_port()
    srv = Server(tmp_path_factory.mktemp("metrics"), admin={"port": admin_port, "api_key": KEY},
                 metrics={"enabled": "true"})
    srv.admin_port = admin_port
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


def get(server: Server, path: str, key: str | None = None) -> tuple[int, str, str]:
    """(status, content type, body) of GET *path* on the admin listener."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.admin_port}{path}")
    if key is not None:
        request.add_header("Authorization", f"Bearer {key}")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status, response.headers["Content-Type"], response.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.headers["Content-Type"], e.read().decode()


def scrape(server: Server) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics: (name, sorted labels) -> value, through the prometheus_client parser."""
    status, content_type, text = get(server, "/metrics")
    assert status == 200 and content_type.startswith("text/plain; version=")
    samples = {}
    for family in text_string_to_metric_families(text):
        assert family.documentation, f"{family.name} has no HELP text"
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_health_answers_without_the_key(server):
    assert get(server, "/health/live")[::2] == (200, '{"status": "live"}\n')
    status, content_type, body = get(server, "/health/ready")
    assert (status, json.loads(body)) == (200, {"status": "ready"}) and content_type.startswith("application/json")
    # the API itself still wants its key
    assert get(server, "/api/domains")[0] == 401
    assert get(server, "/api/domains", KEY)[0] == 200


@async_test(timeout=60)
async def test_logins_stanzas_and_sessions_are_counted(server):
    before = scrape(server)
    assert all(name.startswith("chatgate_") for name, _ in before)
    with pytest.raises(LoginFailed):
        await login(server, "carol@example.com", "not the password", mechanism="SCRAM-SHA-256")
    alice = await login(server, "alice@example.com", PASSWORD, mechanism="SCRAM-SHA-256")
    bob = await login(server, "bob@example.com", PASSWORD, mechanism="PLAIN")
    during = scrape(server)
    assert value(during, "chatgate_sessions", transport="c2s", domain="example.com") == \
        value(before, "chatgate_sessions", transport="c2s", domain="example.com") + 2
    for n in range(3):
        alice.send_message(mto="bob@example.com", mbody=f"hello {n}", mtype="chat")
    for _ in range(3):
        await bob.next_message()
    await logout(alice, bob)
    after = await _settled(server, lambda s: value(s, "chatgate_sessions", transport="c2s", domain="example.com")
                           == value(before, "chatgate_sessions", transport="c2s", domain="example.com"))

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("chatgate_logins_total", transport="c2s", mechanism="SCRAM-SHA-256") == 1
    assert moved("chatgate_logins_total", transport="c2s", mechanism="PLAIN") == 1
    assert moved("chatgate_login_failures_total", transport="c2s", mechanism="SCRAM-SHA-256",
                 reason="not-authorized") >= 1  # slixmpp may try once more before giving up
    assert moved("chatgate_logins_throttled_total", transport="c2s") == 0
    assert moved("chatgate_stanzas_routed_total", kind="message") >= 3
    assert moved("chatgate_stanzas_routed_total", kind="presence") >= 2  # each one's initial presence
    assert moved("chatgate_stanzas_routed_total", kind="iq") >= 2  # each one's roster request
    # each message was committed to both archives before bob saw it
    assert moved("chatgate_archive_commit_seconds_count") >= 1
    assert value(after, "chatgate_archive_pending_messages") == 0
    # and handed to bob's session: three deliveries timed from the router to the socket
    assert moved("chatgate_stanzas_delivered_total", kind="message") >= 3
    assert moved("chatgate_stanzas_delivered_total", kind="presence") >= 2
    assert moved("chatgate_delivery_seconds_count") >= 3
    assert moved("chatgate_delivery_seconds_sum") > 0
    # nobody is locked out by one wrong password, and every client reads what it is sent
    assert ("chatgate_logins_locked", (("kind", "address"),)) in after
    assert value(after, "chatgate_logins_locked", kind="account") == 0
    assert ("chatgate_sessions_output_over_half", ()) in after


@async_test(timeout=60)
async def test_offline_messages_and_reactor_lag(server):
    before = scrape(server)
    alice = await login(server, "alice@example.com", PASSWORD)
    alice.send_message(mto="carol@example.com", mbody="while you were out", mtype="chat")
    await logout(alice)
    stored = await _settled(server, lambda s: value(s, "chatgate_offline_stored_total")
                            > value(before, "chatgate_offline_stored_total"))
    assert value(stored, "chatgate_offline_stored_total") - value(before, "chatgate_offline_stored_total") == 1
    carol = await login(server, "carol@example.com", PASSWORD)
    message = await carol.next_message()
    assert message["body"] == "while you were out"
    await logout(carol)
    # the lag timer is due every second from the start: observed at least once by now
    after = await _settled(server, lambda s: value(s, "chatgate_reactor_lag_seconds_count") >= 1)
    assert value(after, "chatgate_offline_delivered_total") - value(before, "chatgate_offline_delivered_total") == 1
    assert value(after, "chatgate_reactor_lag_seconds_count") >= 1
    assert value(after, "chatgate_reactor_lag_seconds_sum") < value(after, "chatgate_reactor_lag_seconds_count")


@async_test(timeout=60)
async def test_team_room_occupants(server):
    """Entering the domain's room shows in the occupant gauges; leaving takes it out."""
    room = "everyone@conference.example.com"
    before = scrape(server)
    alice = await login(server, "alice@example.com", PASSWORD)
    alice.register_plugin("xep_0045")
    await alice.plugin["xep_0045"].join_muc_wait(room, "alice", maxstanzas=0, timeout=10)
    inside = await _settled(server, lambda s: value(s, "chatgate_room_occupant_sessions", domain="example.com")
                            > value(before, "chatgate_room_occupant_sessions", domain="example.com"))
    assert value(inside, "chatgate_room_occupant_sessions", domain="example.com") - \
        value(before, "chatgate_room_occupant_sessions", domain="example.com") == 1
    assert value(inside, "chatgate_rooms_occupied", domain="example.com") == 1
    await logout(alice)
    after = await _settled(server, lambda s: value(s, "chatgate_rooms_occupied", domain="example.com") == 0)
    assert value(after, "chatgate_rooms_occupied", domain="example.com") == 0


async def _settled(server: Server, done, timeout: float = 10) -> dict:
    """Scrape until *done*(samples) (the server learns of a logout a moment after the client)."""
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(server)
        if done(samples) or time.monotonic() > deadline:
            return samples
        await asyncio.sleep(0.1)


def test_ready_turns_503_while_redis_is_down(tmp_path):
    """A node whose directory is on Redis is not ready while Redis is down, and ready again after."""
    redis = RedisServer(tmp_path / "redis", persist=True)
    (tmp_path / "redis").mkdir()
    redis.start()
    admin_port = free_port()
    (tmp_path / "node").mkdir()
    srv = Server(tmp_path / "node", admin={"port": admin_port}, metrics={"enabled": "true"},
                 storage={"backend": "redis", "redis_host": "127.0.0.1", "redis_port": redis.port},
                 archive={"backend": "redis", "offline_backend": "redis"})
    srv.admin_port = admin_port
    try:
        srv.start()
        assert get(srv, "/health/ready")[0] == 200
        # no api_key: the listener serves monitoring only
        assert get(srv, "/api/domains", KEY)[0] == 404
        redis.stop()
        status, _, body = _poll(srv, 503)
        assert status == 503 and json.loads(body)["status"] == "not ready"
        assert "directory" in json.loads(body)["reason"]
        assert get(srv, "/health/live")[0] == 200  # alive all along: a restart would not help
        redis.start()
        assert _poll(srv, 200)[0] == 200
    finally:
        srv.stop()
        redis.stop()


@async_test(timeout=120)
async def test_cluster_bus_and_redis_round_trip(tmp_path):
    """Two nodes on Redis: each tells its heartbeat's round trip to Redis, and a message from a
    user on one node to a user on the other is timed through the inbox it waited in."""
    admin_ports = [free_port(), free_port()]
    cluster = Cluster(tmp_path, nodes=2)
    for node, port in zip(cluster.nodes, admin_ports, strict=True):
        node.admin_port = port
        text = node.config.read_text()
        node.config.write_text(text + f"[admin]\nport = {port}\n[metrics]\nenabled = true\n")
    provision(cluster.nodes[0])
    cluster.start()
    try:
        alice = await login(cluster.nodes[0], "alice@example.com/desk", PASSWORD)
        bob = await login(cluster.nodes[1], "bob@example.com/phone", PASSWORD)
        await alice.wait_presence(lambda p: p["from"] == "bob@example.com/phone", timeout=20)
        before = scrape(cluster.nodes[1])
        alice.send_message(mto="bob@example.com/phone", mbody="across the bus", mtype="chat")
        assert (await bob.next_message(15))["body"] == "across the bus"
        after = scrape(cluster.nodes[1])
        assert value(after, "chatgate_cluster_bus_seconds_count") > value(before, "chatgate_cluster_bus_seconds_count")
        for node in cluster.nodes:
            rtt = value(scrape(node), "chatgate_cluster_redis_rtt_seconds")
            assert 0 < rtt < 5
        await logout(alice, bob)
    finally:
        cluster.stop()


def _poll(server: Server, status: int, timeout: float = 15) -> tuple[int, str, str]:
    deadline = time.monotonic() + timeout
    while True:
        answer = get(server, "/health/ready")
        if answer[0] == status or time.monotonic() > deadline:
            return answer
        time.sleep(0.2)
