"""An administrator searches a domain's history: the admin API's
``GET /api/domains/<domain>/history`` and ``chatgate-admin history search``.

slixmpp users chat one to one and in the domain's team room; the search
finds every message with the words once (the sender's copy, the room's),
newest first, with who wrote to whom; it pages by cursor, reads one user's
archive, keeps to one party or a span of time, never shows another domain's
messages, refuses what it cannot do with a one-line message, and every
search is in the audit trail (the server's log for the API, chatgate-admin's
own log for the command). With the stores on SQLite, and all on PostgreSQL."""

from __future__ import annotations

import asyncio
import json
import urllib.parse
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, free_port, login, logout
from tests.integration.test_admin_api import KEY, call
from tests.integration.test_audit import changes
from tests.integration.test_rooms import EVERYONE, member


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    admin_port = free_port()
    options: dict = {"admin": {"port": admin_port, "api_key": KEY}}
    if request.param == "postgresql":
        dsn = request.getfixturevalue("postgres_server").database()
        options.update(storage={"backend": "postgresql", "postgresql_dsn": dsn},
                       archive={"backend": "postgresql", "offline_backend": "postgresql"})
    srv = Server(tmp_path_factory.mktemp("adminsearch"), **options)
    srv.admin_port = admin_port
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


def history(server: Server, domain: str = "example.com", **query: object) -> tuple[int, dict]:
    return call(server, "GET", f"/api/domains/{domain}/history?" + urllib.parse.urlencode(query))


def said(answer: dict) -> list[tuple[str, str, str]]:
    return [(m["from"], m["to"], m["body"]) for m in answer["messages"]]


@async_test(timeout=120)
async def test_an_administrator_searches_a_domains_history(server):
    alice = await member(server, "alice@example.com/desk")
    bob = await member(server, "bob@example.com/desk")
    carol = await login(server, "carol@example.com/desk", PASSWORD)
    dave = await login(server, "dave@other.org/desk", PASSWORD)
    clients = {"alice@example.com": alice.client, "bob@example.com": bob.client, "carol@example.com": carol}
    before = datetime.now(UTC)
    for sender, to, text in ((alice.client, "bob@example.com", "The quarterly Budget is ready"),
                             (bob.client, "alice@example.com", "thanks, the budget looks fine"),
                             (carol, "alice@example.com", "lunch first?"),
                             (alice.client, "carol@example.com", "Budget meeting at noon")):
        sender.send_message(mto=to, mbody=text, mtype="chat")
        assert (await clients[to].next_message())["body"] == text
    await alice.muc.join_muc_wait(EVERYONE, "alice", timeout=10)
    await bob.muc.join_muc_wait(EVERYONE, "bob", timeout=10)
    bob.client.send_message(mto=EVERYONE, mbody="Budget review on Friday, everyone", mtype="groupchat")
    assert (await bob.next_said())["body"] == "Budget review on Friday, everyone"
    dave.send_message(mto="dave@other.org", mbody="my own budget note", mtype="chat")  # another domain's
    await asyncio.sleep(0.5)  # archived (the group commit)

    # every message with the word, once, newest first, who wrote to whom
    status, found = await asyncio.to_thread(history, server, q="BUDGET")
    assert status == 200, found
    assert said(found) == [
        (f"{EVERYONE}/bob", EVERYONE, "Budget review on Friday, everyone"),
        ("alice@example.com", "carol@example.com", "Budget meeting at noon"),
        ("bob@example.com", "alice@example.com", "thanks, the budget looks fine"),
        ("alice@example.com", "bob@example.com", "The quarterly Budget is ready"),
    ]
    assert found["next"] is None
    assert [m["archive"] for m in found["messages"]] == [EVERYONE, "alice@example.com", "bob@example.com",
                                                         "alice@example.com"]
    stamps = [datetime.fromisoformat(m["at"]) for m in found["messages"]]
    assert stamps == sorted(stamps, reverse=True) and stamps[-1] >= before - timedelta(seconds=1)

    # pages of two by the cursor, one party, one archive (received copies too), a span of time
    status, first = await asyncio.to_thread(history, server, q="budget", max=2)
    assert said(first) == said(found)[:2] and first["next"]
    status, second = await asyncio.to_thread(history, server, q="budget", max=2, before=first["next"])
    assert said(second) == said(found)[2:] and second["next"] is None
    status, with_carol = await asyncio.to_thread(history, server, q="budget", **{"with": "carol@example.com"})
    assert said(with_carol) == [("alice@example.com", "carol@example.com", "Budget meeting at noon")]
    status, bobs = await asyncio.to_thread(history, server, user="bob@example.com")
    assert [m["body"] for m in bobs["messages"]] == ["thanks, the budget looks fine", "The quarterly Budget is ready"]
    status, span = await asyncio.to_thread(history, server, q="budget", since=stamps[2].isoformat(),
                                           until=(stamps[1] + timedelta(milliseconds=1)).isoformat())
    assert [m["at"] for m in span["messages"]] == [found["messages"][1]["at"], found["messages"][2]["at"]]
    status, none = await asyncio.to_thread(history, server, q="budget", until=(before - timedelta(days=1)).date())
    assert status == 200 and none == {"messages": [], "next": None}
    # the other domain's search: its own messages only
    status, other = await asyncio.to_thread(history, server, "other.org", q="budget")
    assert said(other) == [("dave@other.org", "dave@other.org", "my own budget note")]

    # refused, one line each
    for query, code, field in (({}, 400, "q"), ({"q": "?!"}, 400, None), ({"q": "x", "max": "0"}, 400, None),
                               ({"q": "x", "max": "many"}, 400, "max"),
                               ({"q": "x", "since": "yesterday"}, 400, "since"),
                               ({"user": "dave@other.org"}, 400, "user"),
                               ({"q": "x", "before": "nonsense"}, 400, None)):
        status, error = await asyncio.to_thread(history, server, **query)
        assert (status, error["field"]) == (code, field), (query, error)
        assert "\n" not in error["error"]
    assert (await asyncio.to_thread(history, server, "nosuch.example", q="x"))[0] == 404
    assert (await asyncio.to_thread(call, server, "GET", "/api/domains/example.com/history?q=x", key="wrong"))[0] == 401

    # chatgate-admin: the same hits, as lines or as JSON
    lines = (await asyncio.to_thread(server.admin, "history", "search", "example.com", "budget")).stdout.splitlines()
    assert [line.split("  ", 1)[1] for line in lines] == [f"{f} -> {t}  {b}" for f, t, b in said(found)]
    as_json = json.loads((await asyncio.to_thread(server.admin, "history", "search", "example.com", "budget",
                                                  "--json")).stdout)
    assert as_json == found
    paged = await asyncio.to_thread(server.admin, "history", "search", "example.com", "budget", "--max", "3")
    assert len(paged.stdout.splitlines()) == 3 and "more: --before " in paged.stderr
    cursor = paged.stderr.split("--before ", 1)[1].strip()
    rest = await asyncio.to_thread(server.admin, "history", "search", "example.com", "budget", "--before", cursor)
    assert len(rest.stdout.splitlines()) == 1 and "alice@example.com -> bob@example.com" in rest.stdout
    carols = await asyncio.to_thread(server.admin, "history", "search", "example.com", "--user", "carol@example.com",
                                     "--until", datetime.now(UTC).date().isoformat())
    assert [line.split("  ", 2)[2] for line in carols.stdout.splitlines()] == ["Budget meeting at noon", "lunch first?"]
    for args, message in ((("example.com",), "give words to search for, or --user"),
                          (("example.com", "x", "--since", "soon"), "since is not a time"),
                          (("nosuch.example", "x"), "no domain nosuch.example")):
        refused = await asyncio.to_thread(server.admin, "history", "search", *args, check=False)
        assert refused.returncode == 1 and message in refused.stderr and len(refused.stderr.splitlines()) == 1

    # every search in the audit trail: the API's in the server's log, the command's in its own
    api = changes(server.log_text().splitlines(), "api")
    assert "operation=history.search target=example.com caller=127.0.0.1 via=api" in api
    assert "operation=history.search target=bob@example.com caller=127.0.0.1 via=api" in api
    cli = changes((server.folder / "admin-audit.log").read_text().splitlines(), "cli")
    assert any(c.startswith("operation=history.search target=carol@example.com ") for c in cli)
    assert sum(c.startswith("operation=history.search target=example.com ") for c in cli) == 4
    await logout(alice.client, bob.client, carol, dave)
