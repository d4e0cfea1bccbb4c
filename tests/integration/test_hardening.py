"""Attacks on a running chatgate while bystanders chat: password guessing,
user enumeration, unauthenticated connection floods, slow readers, floods."""

from __future__ import annotations

import asyncio
import statistics
import time
from collections.abc import Iterator

import pytest
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

from tests.integration.bosh_client import BOSHClient
from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import RawClient, Server, async_test, login, logout


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(
        tmp_path_factory.mktemp("hardening"),
        auth={"failures_per_account": 3, "failures_per_address": 1000, "lockout": 4},
        limits={"max_preauth_per_address": 4, "max_output_buffer": 262144,
                "read_rate": 50_000_000, "read_burst": 50_000_000, "stanza_rate": 200, "stanza_burst": 200,
                "session_rate": 1, "session_burst": 6},
    )
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


async def attempt(server: Server, localpart: str, password: str, source: str = "127.0.0.1") -> str:
    """One PLAIN login attempt on a fresh connection: the SASL answer's name and condition."""
    raw = await RawClient.connect(server.port, source=source)
    try:
        await raw.starttls()
        name, data = await raw.plain(localpart, password)
        return name if name == "success" else data.decode().split("<", 2)[1].split(" ")[0].rstrip("/>")
    finally:
        raw.close()


async def chat_round(alice, bob, text: str) -> float:
    start = time.monotonic()
    alice.send_message(mto="bob@example.com", mbody=text, mtype="chat")
    assert (await bob.next_message())["body"] == text
    return time.monotonic() - start


@async_test(timeout=90)
async def test_password_guessing_is_locked_out_but_not_the_owner_elsewhere(server):
    alice = await login(server, "alice@example.com/desk", PASSWORD)
    bob = await login(server, "bob@example.com/desk", PASSWORD)
    outcomes = [await attempt(server, "carol", f"guess {i}", source="127.0.0.3") for i in range(5)]
    assert outcomes[:3] == ["not-authorized"] * 3
    assert outcomes[3:] == ["temporary-auth-failure"] * 2
    # even the right password is refused from the guessing address while locked
    assert await attempt(server, "carol", PASSWORD, source="127.0.0.3") == "temporary-auth-failure"
    # carol from her own address is not locked out
    assert await attempt(server, "carol", PASSWORD, source="127.0.0.4") == "success"
    assert await chat_round(alice, bob, "during the attack") < 5
    await asyncio.sleep(4.5)  # the lockout passes
    assert await attempt(server, "carol", PASSWORD, source="127.0.0.3") == "success"
    await logout(alice, bob)


@async_test(timeout=120)
async def test_unknown_user_and_wrong_password_look_the_same(server):
    async def scram(localpart: str, source: str) -> tuple[list[str], float]:
        raw = await RawClient.connect(server.port, source=source)
        await raw.starttls()
        start = time.monotonic()
        answers = await raw.scram(localpart, "not the password")
        elapsed = time.monotonic() - start
        raw.close()
        return [name for name, _ in answers], elapsed

    known, unknown = [], []
    for i in range(8):
        # a fresh source address each time keeps the throttle's delays out of the timing
        steps, seconds = await scram("alice", f"127.0.1.{i + 1}")
        assert steps == ["challenge", "failure"]
        known.append(seconds)
        steps, seconds = await scram("nobody", f"127.0.2.{i + 1}")
        assert steps == ["challenge", "failure"]
        unknown.append(seconds)
    # same step, same condition; and no timing gap worth the name between the two
    known_median, unknown_median = statistics.median(known), statistics.median(unknown)
    assert abs(known_median - unknown_median) < max(0.05, 0.5 * known_median), (known, unknown)


@async_test()
async def test_unauthenticated_connections_per_address_are_capped(server):
    idle = [await RawClient.connect(server.port, source="127.0.0.5") for _ in range(4)]
    for raw in idle:
        await raw.open()
    refused = await RawClient.connect(server.port, source="127.0.0.5")
    answer = await refused.read_to_end()
    assert b"<policy-violation xmlns='urn:ietf:params:xml:ns:xmpp-streams'" in answer
    # another address is not affected, and the cap frees as connections go
    assert await attempt(server, "bob", PASSWORD, source="127.0.0.6") == "success"
    for raw in idle:
        raw.close()
    await asyncio.sleep(0.5)
    assert await attempt(server, "bob", PASSWORD, source="127.0.0.5") == "success"


@async_test(timeout=90)
async def test_client_that_stops_reading_is_closed_and_goes_unavailable(server):
    alice = await login(server, "alice@example.com/slow", PASSWORD)
    bob = await login(server, "bob@example.com/slow", PASSWORD)
    raw = await RawClient.connect(server.port)
    await raw.login("carol", PASSWORD, "stuck")
    raw.send("<presence/>")
    await bob.wait_presence(lambda p: p["from"] == "carol@example.com/stuck")
    # carol reads nothing from now on, while alice sends her 20 MB
    text = "z" * 200_000
    for i in range(100):
        alice.send_message(mto="carol@example.com/stuck", mbody=text, mtype="chat")
        if i % 10 == 9:
            await chat_round(alice, bob, f"bystander {i}")
    await bob.wait_presence(lambda p: p["from"] == "carol@example.com/stuck" and p["type"] == "unavailable",
                            timeout=30)
    assert "stream error policy-violation" in server.log_text() or "policy-violation" in server.log_text()
    assert await chat_round(alice, bob, "after") < 5
    raw.close()
    await logout(alice, bob)


@async_test(timeout=90)
async def test_flooding_client_is_slowed_not_dropped(server):
    alice = await login(server, "alice@example.com/flood", PASSWORD)
    bob = await login(server, "bob@example.com/flood", PASSWORD)
    carol = await login(server, "carol@example.com/flood", PASSWORD)
    answered: list[str] = []
    done = asyncio.Event()
    count = 1000

    def pong(iq) -> None:
        if iq["type"] == "result" and iq["id"].startswith("f"):
            answered.append(iq["id"])
            if len(answered) == count:
                done.set()

    carol.register_handler(Callback("flood", MatchXPath("{jabber:client}iq"), pong))
    started = time.monotonic()
    for i in range(count):
        carol.send_raw(f"<iq type='get' id='f{i}' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>")
    latencies = []
    while not done.is_set():
        latencies.append(await chat_round(alice, bob, "meanwhile"))
        await asyncio.sleep(0.2)
    elapsed = time.monotonic() - started
    assert sorted(answered) == sorted(f"f{i}" for i in range(count))  # nothing dropped
    # 200 at once, then 200 a second: the flood took at least ~4 s to be read
    assert elapsed >= 0.8 * (count - 200) / 200
    assert max(latencies) < 2, latencies
    await logout(alice, bob, carol)


@async_test(timeout=90)
async def test_bosh_session_flood_is_capped_per_address(server):
    alice = await login(server, "alice@example.com/bosh-flood", PASSWORD)
    bob = await login(server, "bob@example.com/bosh-flood", PASSWORD)
    clients = [BOSHClient(server.http_port, wait=2) for _ in range(12)]
    answers = [await asyncio.to_thread(client.create) for client in clients]
    made = [client for client, answer in zip(clients, answers, strict=True) if answer.get("sid")]
    refused = [answer for answer in answers if not answer.get("sid")]
    # four unauthenticated sessions from one address (this server's limit), the rest refused
    assert len(made) == 4
    assert all(a.condition == "remote-stream-error" and a.stream_error() == "policy-violation" for a in refused)
    assert await chat_round(alice, bob, "through the BOSH flood") < 5

    # and new sessions come at most session_rate a second (burst 6, 4 spent)
    for client in made:
        await asyncio.to_thread(client.terminate, "")
    again = [await asyncio.to_thread(BOSHClient(server.http_port, wait=2).create) for _ in range(3)]
    assert [bool(a.get("sid")) for a in again] == [True, True, False]
    assert b"Too many new sessions" in again[2].raw
    await asyncio.sleep(1.2)
    assert (await asyncio.to_thread(BOSHClient(server.http_port, wait=2).create)).get("sid")
    await logout(alice, bob)
