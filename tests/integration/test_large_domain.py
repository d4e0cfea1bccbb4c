"""A login in a large domain: its roster and everyone's presence arrive at once,
far more than the output limit for a client that does not read, and the
session stays up, on c2s and on BOSH."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.bosh_client import BOSHClient
from tests.integration.conftest import PASSWORD
from tests.integration.harness import RawClient, Server, async_test, login, logout

DOMAIN = "big.example"
USERS = 100
#: a long display name each: the roster alone is ~95 KB
NAME = "N" * 900
#: a long status each: everyone's presence is ~75 KB
STATUS = "s" * 6000
ONLINE = 12
ROSTER_GET = "<iq type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    folder = tmp_path_factory.mktemp("large-domain")
    srv = Server(folder, limits={"max_output_buffer": 16384})
    srv.admin("domain", "add", DOMAIN)
    users = folder / "users.csv"
    users.write_text("jid,name,password\n" + "".join(
        f"u{n}@{DOMAIN},{NAME} {n},{PASSWORD}\n" for n in range(USERS)))
    srv.admin("user", "import", str(users))
    srv.start()
    yield srv
    srv.stop()


async def bystanders(server: Server) -> list:
    clients = [await login(server, f"u{n}@{DOMAIN}/desk", PASSWORD, presence=False) for n in range(ONLINE)]
    for client in clients:
        client.send_presence(pstatus=STATUS)
    await clients[0].wait_presence(lambda p: p["from"] == f"u{ONLINE - 1}@{DOMAIN}/desk", timeout=20)
    return clients


@async_test(timeout=120)
async def test_c2s_login_gets_roster_and_everyones_presence_at_once(server):
    online = await bystanders(server)
    raw = await RawClient.connect(server.port, domain=DOMAIN)
    await raw.login("u50", PASSWORD, "pipelined")
    raw.received = b""
    raw.send(ROSTER_GET + "<presence/>")  # in one packet: both answers in one reactor turn
    got = await raw.read_until(lambda got: b"</query>" in got and got.count(STATUS.encode()) >= ONLINE)
    assert got.count(b"<item ") == USERS - 1
    raw.send(f"<iq type='get' id='p1' to='{DOMAIN}'><ping xmlns='urn:xmpp:ping'/></iq>")
    await raw.expect("id='p1'", timeout=10)  # still connected
    assert b"policy-violation" not in raw.received
    raw.close()
    await logout(*online)


@async_test(timeout=120)
async def test_bosh_login_gets_roster_and_everyones_presence_at_once(server):
    online = await bystanders(server)
    client = BOSHClient(server.http_port, domain=DOMAIN, wait=5)
    try:
        await asyncio.to_thread(client.login, "u51", PASSWORD, presence=False)
        client.send(ROSTER_GET.replace("<iq ", "<iq xmlns='jabber:client' ")
                    + "<presence xmlns='jabber:client'/>")
        roster = await asyncio.to_thread(client.wait_for, lambda s: s.get("id") == "r1", 20)
        assert len(roster[0]) == USERS - 1
        for n in range(ONLINE):
            await asyncio.to_thread(client.wait_for, lambda s, n=n: s.get("from") == f"u{n}@{DOMAIN}/desk", 20)
        assert client.ended is None
    finally:
        client.stop_polling()
        await logout(*online)
