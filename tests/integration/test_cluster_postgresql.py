"""Two chatgate nodes whose directory, history and offline messages are all in one PostgreSQL
database (a real server, tests/postgres_server.py), with Redis for the cluster's bus only, seen from
slixmpp users spread over them: ``chatgate-admin db upgrade`` on the shared database; a user added
by the admin command while both run signs in on either (the change feed read from PostgreSQL); chat
across the nodes archived once for each party and read back by MAM from the other node, with a
full-text search; a message to a user signed in nowhere waits in PostgreSQL and arrives at sign-in
on the other node; a user removed by the admin command is refused on both."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.cluster import Cluster
from tests.integration.conftest import PASSWORD
from tests.integration.harness import LoginFailed, async_test, login, logout
from tests.integration.test_history import mam
from tests.integration.test_search import FULLTEXT, texts

DOMAIN = "pg.example"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, postgres_server) -> Iterator[Cluster]:
    dsn = postgres_server.database()
    c = Cluster(tmp_path_factory.mktemp("cluster-pg"), directory="postgresql",
                storage={"postgresql_dsn": dsn},
                archive={"backend": "postgresql", "offline_backend": "postgresql"})
    c.start_redis()
    upgraded = c.admin("db", "upgrade")
    assert f"/{dsn.rsplit('/', 1)[1]}: schema 0 -> " in upgraded.stdout  # a new database: every migration
    assert "already at schema" in c.admin("db", "upgrade").stdout
    c.add_users(PASSWORD, *(f"{u}@{DOMAIN}" for u in ("alice", "bob", "carol")))
    c.start()
    yield c
    c.stop()


@async_test(timeout=90)
async def test_users_on_two_nodes_share_one_postgresql_database(cluster):
    node1, node2 = cluster.nodes
    # added while both run: known to both through the change feed in PostgreSQL
    cluster.admin("user", "add", f"dave@{DOMAIN}", "--password-stdin", stdin=PASSWORD + "\n")
    await asyncio.sleep(0.5)
    alice = await login(node1, f"alice@{DOMAIN}/one", PASSWORD)
    bob = await login(node2, f"bob@{DOMAIN}/two", PASSWORD)
    dave = await login(node2, f"dave@{DOMAIN}/two", PASSWORD)

    said = ["the Quarterly numbers are in", "café at noon?"]
    for text in said:
        alice.send_message(mto=f"bob@{DOMAIN}", mbody=text, mtype="chat")
        assert (await bob.next_message())["body"] == text
    # to carol, signed in nowhere: kept in PostgreSQL until she comes
    alice.send_message(mto=f"carol@{DOMAIN}", mbody="for when you are back", mtype="chat")
    await asyncio.sleep(0.5)
    carol = await login(node2, f"carol@{DOMAIN}/two", PASSWORD)
    assert (await carol.next_message())["body"] == "for when you are back"

    # each party's archive, read on the other node than the one that wrote it
    assert texts(await mam(bob, with_jid=f"alice@{DOMAIN}")) == said
    alice_on_2 = await login(node2, f"alice@{DOMAIN}/two", PASSWORD)
    assert texts(await mam(alice_on_2, with_jid=f"bob@{DOMAIN}")) == said
    assert texts(await mam(alice_on_2, fields={FULLTEXT: "quart"})) == [said[0]]
    assert texts(await mam(bob, fields={FULLTEXT: "CAFE"})) == [said[1]]
    await logout(alice, bob, carol, dave, alice_on_2)

    cluster.admin("user", "remove", f"dave@{DOMAIN}")
    await asyncio.sleep(0.5)
    for node in (node1, node2):
        with pytest.raises(LoginFailed):
            await login(node, f"dave@{DOMAIN}/again", PASSWORD)
