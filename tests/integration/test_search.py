"""Searching one's own history (XEP-0431 on MAM, and the webmail's history JSON).

slixmpp users chat; a MAM query with ``{urn:xmpp:fulltext:0}fulltext`` finds
the messages with every word (any case, accents aside, word starts), paged
with RSM, only in the asker's own archive; the webmail's ``search`` answers
the same, newest first, each with the conversation to open at it. All of it
with the stores on SQLite, and again on PostgreSQL (a real server, the admin
command and the service sharing its database)."""

from __future__ import annotations

import urllib.parse
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from slixmpp.exceptions import IqError

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, login, logout
from tests.integration.test_history import http_get, mam, page_rsm

FULLTEXT = "{urn:xmpp:fulltext:0}fulltext"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """The service with its stores on SQLite, or all on a PostgreSQL database of a real server."""
    if request.param == "postgresql":
        dsn = request.getfixturevalue("postgres_server").database()
        srv = Server(tmp_path_factory.mktemp("search"), storage={"backend": "postgresql", "postgresql_dsn": dsn},
                     archive={"conversation_gap": 1, "backend": "postgresql", "offline_backend": "postgresql"})
    else:
        srv = Server(tmp_path_factory.mktemp("search"), archive={"conversation_gap": 1})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


def texts(page) -> list[str]:
    return [m.xml.findtext(".//{jabber:client}body") for m in page.results]


@async_test(timeout=120)
async def test_users_search_their_history_from_a_client_and_the_webmail(server):
    alice = await login(server, "alice@example.com/desk", PASSWORD)
    bob = await login(server, "bob@example.com/desk", PASSWORD)
    carol = await login(server, "carol@example.com/desk", PASSWORD)
    said = [(alice, "bob@example.com", "The quarterly Budget is ready"),
            (bob, "alice@example.com", "thanks, lunch first?"),
            (alice, "bob@example.com", "budget: café figures inside"),
            (carol, "alice@example.com", "carol's budget question")]
    clients = {"alice@example.com": alice, "bob@example.com": bob}
    for sender, to, text in said:  # one after another: the archive's order is the order said
        sender.send_message(mto=to, mbody=text, mtype="chat")
        assert (await clients[to].next_message())["body"] == text

    info = await alice.plugin["xep_0030"].get_info(jid="alice@example.com", timeout=10)
    assert "urn:xmpp:fulltext:0" in info["disco_info"]["features"]

    found = await mam(alice, fields={FULLTEXT: "BUDGET"})
    assert texts(found) == ["The quarterly Budget is ready", "budget: café figures inside",
                            "carol's budget question"]
    assert texts(await mam(alice, fields={FULLTEXT: "cafe fig"})) == ["budget: café figures inside"]
    assert texts(await mam(alice, with_jid="carol@example.com", fields={FULLTEXT: "budget"})) == [
        "carol's budget question"]
    assert texts(await mam(alice, fields={FULLTEXT: "dget"})) == []  # a word's start, not its inside
    last_two = await mam(alice, fields={FULLTEXT: "budget"}, rsm=page_rsm(2, before=""))
    assert texts(last_two) == ["budget: café figures inside", "carol's budget question"]
    assert texts(await mam(bob, fields={FULLTEXT: "carol"})) == []  # bob's archive has none of carol's
    empty = alice.make_iq_set()
    empty.xml.append(ET.fromstring(
        "<query xmlns='urn:xmpp:mam:2'><x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
        "<value>urn:xmpp:mam:2</value></field><field var='{urn:xmpp:fulltext:0}fulltext'><value>?!</value>"
        "</field></x></query>"))
    with pytest.raises(IqError) as refused:
        await empty.send(timeout=10)
    assert refused.value.iq["error"]["condition"] == "bad-request"

    # the webmail: newest first, each with its conversation
    status, answer, _ = http_get(server, "/history/search?" + urllib.parse.urlencode({"q": "budget"}),
                                 "alice@example.com")
    assert status == 200
    assert [m["body"] for m in answer["messages"]] == ["carol's budget question", "budget: café figures inside",
                                                        "The quarterly Budget is ready"]
    hit = answer["messages"][1]
    assert (hit["with"], hit["outgoing"]) == ("bob@example.com", True)
    status, conversation, _ = http_get(server, f"/history/conversation?id={hit['conversation']}",
                                       "alice@example.com")
    assert status == 200 and hit["id"] in [m["id"] for m in conversation["messages"]]
    status, page, _ = http_get(server, "/history/search?q=budget&limit=1", "alice@example.com")
    assert [m["body"] for m in page["messages"]] == ["carol's budget question"] and page["more"] is True
    status, page, _ = http_get(server, f"/history/search?q=budget&limit=1&before={page['last']}",
                               "alice@example.com")
    assert [m["body"] for m in page["messages"]] == ["budget: café figures inside"]
    status, page, _ = http_get(server, "/history/search?q=budget&with=carol@example.com", "alice@example.com")
    assert [m["body"] for m in page["messages"]] == ["carol's budget question"]
    assert http_get(server, "/history/search?q=%3F%21", "alice@example.com")[0] == 400
    assert http_get(server, "/history/search", "alice@example.com")[0] == 400
    await logout(alice, bob, carol)
