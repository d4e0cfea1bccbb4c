"""History that is never lost, as users see it over real sockets (slixmpp):
carbons (XEP-0280), offline messages (XEP-0160, XEP-0203), MAM (XEP-0313,
XEP-0059) with stanza-ids (XEP-0359); a restart and a crash of the server
between writing and reading (SQLite); the same against a real redis-server."""

from __future__ import annotations

import asyncio
import base64
import itertools
import json
import signal
import urllib.error
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest
import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXMLMask

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Client, Server, async_test, login, logout
from tests.redis_server import RedisServer

MAM = "urn:xmpp:mam:2"
RSM = "http://jabber.org/protocol/rsm"
SID = "urn:xmpp:sid:0"
CARBONS = "urn:xmpp:carbons:2"
FORWARD = "urn:xmpp:forward:0"
DELAY = "urn:xmpp:delay"
CLIENT = "jabber:client"
_names = itertools.count()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # a one-second conversation gap, so that the HTTP test can make two conversations
    srv = Server(tmp_path_factory.mktemp("history"), archive={"conversation_gap": 1})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


async def new_users(server: Server, *names: str) -> list[str]:
    """Fresh users of example.com (so each test has its own history), as JIDs."""
    suffix = next(_names)
    jids = [f"{name}{suffix}@example.com" for name in names]
    for jid in jids:
        await asyncio.to_thread(server.admin, "user", "add", jid, "--password-stdin", stdin=PASSWORD + "\n")
    await asyncio.sleep(0.6)  # the service follows the store's change feed
    return jids


async def connect(server: Server, jid: str, carbons: bool = False, presence: bool = True) -> Client:
    client = await login(server, jid, PASSWORD, presence=presence)
    if carbons:
        client.register_plugin("xep_0280")
        # slixmpp tells carbons as their own events, not as messages
        client.add_event_handler("carbon_received", client.messages.put_nowait)
        client.add_event_handler("carbon_sent", client.messages.put_nowait)
        await client.plugin["xep_0280"].enable(timeout=10)
    return client


def xml(message: slixmpp.Message) -> ET.Element:
    return message.xml


def inner(message: slixmpp.Message, *path: str) -> ET.Element | None:
    """The forwarded <message/> inside a carbon or a MAM result."""
    element = message.xml
    for step in path:
        element = element.find(step) if element is not None else None
    return element


def body(element: ET.Element | None) -> str | None:
    return None if element is None else element.findtext(f"{{{CLIENT}}}body")


def stanza_ids(element: ET.Element) -> dict[str, str]:
    return {s.get("by"): s.get("id") for s in element.findall(f"{{{SID}}}stanza-id")}


async def until_quiet(client: Client, timeout: float = 1.0) -> list[slixmpp.Message]:
    """Everything the client gets until nothing comes for *timeout* seconds."""
    got = []
    while True:
        try:
            got.append(await client.next_message(timeout=timeout))
        except TimeoutError:
            return got


class MAMPage:
    def __init__(self, results: list[slixmpp.Message], reply: slixmpp.Iq) -> None:
        self.results = results
        fin = reply.xml.find(f"{{{MAM}}}fin")
        self.complete = fin.get("complete") in ("true", "1")
        rsm = fin.find(f"{{{RSM}}}set")
        self.count = int(rsm.findtext(f"{{{RSM}}}count"))
        self.first = rsm.findtext(f"{{{RSM}}}first")
        self.last = rsm.findtext(f"{{{RSM}}}last")
        first = rsm.find(f"{{{RSM}}}first")
        self.index = None if first is None else int(first.get("index"))

    @property
    def bodies(self) -> list[str | None]:
        return [body(forwarded(m)) for m in self.results]

    @property
    def ids(self) -> list[str]:
        return [m.xml.find(f"{{{MAM}}}result").get("id") for m in self.results]


def forwarded(message: slixmpp.Message) -> ET.Element | None:
    return inner(message, f"{{{MAM}}}result", f"{{{FORWARD}}}forwarded", f"{{{CLIENT}}}message")


async def mam(client: Client, with_jid: str | None = None, rsm: str = "", to: str | None = None,
              fields: dict[str, str] | None = None) -> MAMPage:
    """One MAM query: its results and the <fin/> of its answer."""
    query_id = f"q{next(_names)}"
    form = ""
    fields = dict(fields or {})
    if with_jid:
        fields["with"] = with_jid
    if fields:
        form = (f"<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>"
                f"<value>{MAM}</value></field>")
        form += "".join(f"<field var='{k}'><value>{v}</value></field>" for k, v in fields.items()) + "</x>"
    iq = client.make_iq_set(ito=to)
    iq.xml.append(ET.fromstring(f"<query xmlns='{MAM}' queryid='{query_id}'>{form}{rsm}</query>"))
    # slixmpp's "message" event is only for messages with a body: catch the results directly
    results: list[slixmpp.Message] = []
    client.register_handler(Callback(query_id, MatchXMLMask(
        f"<message xmlns='{CLIENT}'><result xmlns='{MAM}' queryid='{query_id}'/></message>"), results.append))
    try:
        reply = await iq.send(timeout=10)
    finally:
        client.remove_handler(query_id)
    return MAMPage(results, reply)


def page_rsm(max_: int, after: str | None = None, before: str | None = None) -> str:
    cursor = ""
    if after is not None:
        cursor = f"<after>{after}</after>"
    elif before is not None:
        cursor = f"<before>{before}</before>" if before else "<before/>"
    return f"<set xmlns='{RSM}'><max>{max_}</max>{cursor}</set>"


# -- carbons


@async_test(timeout=90)
async def test_alice_on_two_resources_with_carbons_sees_every_message(server):
    alice, bob = await new_users(server, "alice", "bob")
    desk = await connect(server, f"{alice}/desk", carbons=True)
    phone = await connect(server, f"{alice}/phone", carbons=True)
    laptop = await connect(server, f"{bob}/laptop")

    # bob writes to alice's desk: the desk gets it, the phone a received carbon
    laptop.send_message(mto=f"{alice}/desk", mbody="to your desk", mtype="chat")
    direct = await desk.next_message()
    assert direct["body"] == "to your desk"
    copy = await phone.next_message()
    assert copy["from"] == alice and copy["to"] == f"{alice}/phone"
    received = inner(copy, f"{{{CARBONS}}}received", f"{{{FORWARD}}}forwarded", f"{{{CLIENT}}}message")
    assert body(received) == "to your desk" and received.get("from") == f"{bob}/laptop"
    assert stanza_ids(received) == stanza_ids(direct.xml) and set(stanza_ids(received)) == {alice}

    # to the bare JID: both get the message itself, once
    laptop.send_message(mto=alice, mbody="to both", mtype="chat")
    for client in (desk, phone):
        got = await until_quiet(client)
        assert [m["body"] for m in got] == ["to both"]

    # alice answers from the desk: the phone sees what she sent, with her own archive id
    desk.send_message(mto=bob, mbody="answer from the desk", mtype="chat")
    assert (await laptop.next_message())["body"] == "answer from the desk"
    copy = await phone.next_message()
    sent = inner(copy, f"{{{CARBONS}}}sent", f"{{{FORWARD}}}forwarded", f"{{{CLIENT}}}message")
    assert body(sent) == "answer from the desk" and sent.get("from") == f"{alice}/desk"
    assert set(stanza_ids(sent)) == {alice}
    assert await until_quiet(desk, 0.5) == []

    # a private message is not copied
    laptop.send_message(mto=f"{alice}/desk", mbody="just for the desk", mtype="chat")
    laptop.send_message(mto=f"{alice}/desk", mbody="after it", mtype="chat")
    last = laptop.make_message(mto=f"{alice}/desk", mbody="private", mtype="chat")
    last.xml.append(ET.Element(f"{{{CARBONS}}}private"))
    last.send()
    bodies = [body(inner(m, f"{{{CARBONS}}}received", f"{{{FORWARD}}}forwarded", f"{{{CLIENT}}}message"))
              for m in await until_quiet(phone)]
    assert bodies == ["just for the desk", "after it"]
    got = {m["body"]: m.xml for m in await until_quiet(desk, 0.5)}
    assert list(got) == ["just for the desk", "after it", "private"]
    assert got["private"].find(f"{{{CARBONS}}}private") is None  # §9: taken out on delivery
    assert set(stanza_ids(got["private"])) == {alice}
    await logout(desk, phone, laptop)


# -- offline messages


@async_test(timeout=90)
async def test_offline_messages_arrive_at_next_login_with_delay(server):
    alice, bob = await new_users(server, "alice", "bob")
    desk = await connect(server, f"{alice}/desk")
    for n in range(3):
        desk.send_message(mto=bob, mbody=f"while you were out {n}", mtype="chat")
    assert await until_quiet(desk) == []  # kept, not bounced
    laptop = await connect(server, f"{bob}/laptop")
    got = [await laptop.next_message() for _ in range(3)]
    assert [m["body"] for m in got] == [f"while you were out {n}" for n in range(3)]
    for message in got:
        assert message["from"] == f"{alice}/desk"
        delay = message.xml.find(f"{{{DELAY}}}delay")
        assert delay.get("from") == "example.com" and delay.text == "Offline Storage"
        assert delay.get("stamp").endswith("Z")
        assert set(stanza_ids(message.xml)) == {bob}
    stamps = [m.xml.find(f"{{{DELAY}}}delay").get("stamp") for m in got]
    assert stamps == sorted(stamps)
    # the ids match bob's archive: a client can tell offline copies and MAM results apart
    page = await mam(laptop, with_jid=alice)
    assert page.ids == [stanza_ids(m.xml)[bob] for m in got]
    await logout(desk, laptop)


# -- MAM


@async_test(timeout=120)
async def test_mam_returns_the_whole_conversation_from_every_client_paged_both_ways(server):
    alice, bob, carol = await new_users(server, "alice", "bob", "carol")
    desk = await connect(server, f"{alice}/desk")
    phone = await connect(server, f"{alice}/phone")
    laptop = await connect(server, f"{bob}/laptop")
    elsewhere = await connect(server, f"{carol}/x")
    script = []
    for n in range(12):
        sender, to = [(desk, bob), (laptop, alice), (phone, bob)][n % 3]
        text = f"line {n:02d}"
        sender.send_message(mto=to, mbody=text, mtype="chat")
        script.append(text)
        receiver = laptop if to == bob else desk
        assert (await receiver.next_message())["body"] == text
    elsewhere.send_message(mto=alice, mbody="not with bob", mtype="chat")
    await desk.next_message()
    for client in (desk, phone, laptop):
        await until_quiet(client, 0.3)

    # forward, 5 at a time, from alice's phone
    seen, after, indexes = [], None, []
    while True:
        page = await mam(phone, with_jid=bob, rsm=page_rsm(5, after=after))
        assert page.count == 12
        seen += page.bodies
        indexes.append(page.index)
        if page.complete:
            break
        after = page.last
    assert seen == script and indexes == [0, 5, 10]

    # backward from the last page, on the desk
    pages, before = [], ""
    while True:
        page = await mam(desk, with_jid=bob, rsm=page_rsm(5, before=before))
        pages.insert(0, page.bodies)
        if page.complete:
            break
        before = page.first
    assert [b for p in pages for b in p] == script and len(pages) == 3

    # bob has the same conversation, and the whole archive also has carol's line
    assert (await mam(laptop, with_jid=alice, rsm=page_rsm(50))).bodies == script
    everything = await mam(desk, rsm=page_rsm(50))
    assert everything.bodies == [*script, "not with bob"] and everything.complete

    # the result carries the original stanza with its delay stamp
    first = (await mam(desk, with_jid=bob, rsm=page_rsm(1))).results[0]
    original = forwarded(first)
    assert original.get("from") == f"{alice}/desk" and original.get("to") == bob
    assert first.xml.find(f"{{{MAM}}}result/{{{FORWARD}}}forwarded/{{{DELAY}}}delay").get("stamp")

    # time filters, from the stamps
    stamps = [m.xml.find(f"{{{MAM}}}result/{{{FORWARD}}}forwarded/{{{DELAY}}}delay").get("stamp")
              for m in (await mam(desk, with_jid=bob, rsm=page_rsm(50))).results]
    ranged = await mam(desk, with_jid=bob, fields={"start": stamps[3], "end": stamps[6]})
    assert ranged.bodies == script[3:7]
    await logout(desk, phone, laptop, elsewhere)


@async_test(timeout=60)
async def test_mam_errors(server):
    alice, bob = await new_users(server, "alice", "bob")
    desk = await connect(server, f"{alice}/desk")
    with pytest.raises(IqError) as refused:
        await mam(desk, to=bob)
    assert refused.value.condition == "forbidden"
    with pytest.raises(IqError) as refused:
        await mam(desk, fields={"start": "yesterday"})
    assert refused.value.condition == "bad-request"
    with pytest.raises(IqError) as refused:
        await mam(desk, fields={"{urn:example}search": "x"})
    assert refused.value.condition == "feature-not-implemented"
    with pytest.raises(IqError) as refused:
        await mam(desk, rsm=page_rsm(5, after="00000000000000-0000000000"))
    assert refused.value.condition == "item-not-found"
    await logout(desk)


@async_test(timeout=60)
async def test_disco_announces_history_features(server):
    alice, = await new_users(server, "alice")
    desk = await connect(server, f"{alice}/desk")
    account = await desk.plugin["xep_0030"].get_info(jid=alice, timeout=10)
    assert {MAM, f"{MAM}#extended", SID} <= set(account["disco_info"]["features"])
    host = await desk.plugin["xep_0030"].get_info(jid="example.com", timeout=10)
    assert {CARBONS, "msgoffline"} <= set(host["disco_info"]["features"])
    await logout(desk)


# -- the webmail's conversations over HTTP


def http_get(server: Server, path: str, user: str | None = None, password: str = PASSWORD) -> tuple[int, dict, dict]:
    """(status, JSON body, headers) of a GET on the web listener."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}")
    if user is not None:
        token = base64.b64encode(f"{user}:{password}".encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read()), dict(answer.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read()), dict(e.headers)


@async_test(timeout=90)
async def test_webmail_reads_conversations_over_http(server):
    alice, bob = await new_users(server, "alice", "bob")
    desk = await connect(server, f"{alice}/desk")
    laptop = await connect(server, f"{bob}/laptop")
    first = await exchange(desk, laptop, alice, bob, 2, "morning")
    await asyncio.sleep(1.5)  # longer than the gap: a new conversation
    second = await exchange(desk, laptop, alice, bob, 3, "afternoon")

    def get(path: str, user: str | None = alice, password: str = PASSWORD) -> tuple[int, dict, dict]:
        return http_get(server, path, user, password)

    status, answer, headers = await asyncio.to_thread(get, "/history/contacts", None)
    assert status == 401 and headers["WWW-Authenticate"].startswith("Basic")
    status, _, _ = await asyncio.to_thread(get, "/history/contacts", alice, "wrong")
    assert status == 401
    status, answer, _ = await asyncio.to_thread(get, "/history/contacts")
    assert status == 200 and [c["jid"] for c in answer["contacts"]] == [bob]

    status, answer, _ = await asyncio.to_thread(get, f"/history/conversations?with={bob}")
    assert status == 200 and answer["more"] is False
    assert [(c["count"], c["preview"]) for c in answer["conversations"]] == [(3, second[0]), (2, first[0])]
    status, newest, _ = await asyncio.to_thread(get, f"/history/conversations?with={bob}&limit=1")
    assert newest["more"] is True and len(newest["conversations"]) == 1
    status, older, _ = await asyncio.to_thread(
        get, f"/history/conversations?with={bob}&limit=1&before={newest['conversations'][0]['id']}")
    assert [c["preview"] for c in older["conversations"]] == [first[0]] and older["more"] is False

    conversation_id = older["conversations"][0]["id"]
    status, answer, _ = await asyncio.to_thread(get, f"/history/conversation?id={conversation_id}")
    assert status == 200 and answer["with"] == bob
    assert [(m["body"], m["from"], m["outgoing"]) for m in answer["messages"]] == [
        (first[0], alice, True), (first[1], bob, False)]
    # bob's archive has its own ids: alice's conversation id is nothing to him
    status, _, _ = await asyncio.to_thread(get, f"/history/conversation?id={conversation_id}", bob)
    assert status == 404
    status, answer, _ = await asyncio.to_thread(get, "/history/conversations?with=not%20a%20jid@@")
    assert status == 400 and "with" in answer["error"]
    await logout(desk, laptop)


# -- durability: restart and crash (SQLite)


@pytest.fixture
def fresh_server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path)
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


async def exchange(a: Client, b: Client, a_jid: str, b_jid: str, count: int, tag: str) -> list[str]:
    lines = []
    for n in range(count):
        sender, receiver, to = (a, b, b_jid) if n % 2 == 0 else (b, a, a_jid)
        text = f"{tag} {n}"
        sender.send_message(mto=to, mbody=text, mtype="chat")
        assert (await receiver.next_message())["body"] == text
        lines.append(text)
    return lines


@async_test(timeout=120)
async def test_history_survives_a_restart_and_a_crash(fresh_server):
    server = fresh_server
    alice = await connect(server, "alice@example.com/desk")
    bob = await connect(server, "bob@example.com/laptop")
    before_restart = await exchange(alice, bob, "alice@example.com", "bob@example.com", 20, "before restart")
    alice.send_message(mto="carol@example.com", mbody="for carol, offline", mtype="chat")
    await asyncio.sleep(0.2)
    await logout(alice, bob)
    await asyncio.to_thread(server.stop)  # SIGTERM: a clean stop commits what is queued
    await asyncio.to_thread(server.start)

    alice = await connect(server, "alice@example.com/desk")
    bob = await connect(server, "bob@example.com/laptop")
    assert (await mam(alice, with_jid="bob@example.com", rsm=page_rsm(100))).bodies == before_restart
    carol = await connect(server, "carol@example.com/x")
    assert (await carol.next_message())["body"] == "for carol, offline"
    before_crash = await exchange(alice, bob, "alice@example.com", "bob@example.com", 10, "before crash")
    await asyncio.sleep(0.5)  # fifty commit intervals
    server.process.send_signal(signal.SIGKILL)
    await asyncio.to_thread(server.process.wait, 10)
    await asyncio.to_thread(server.start)

    bob = await connect(server, "bob@example.com/laptop2")
    page = await mam(bob, with_jid="alice@example.com", rsm=page_rsm(100))
    assert page.bodies == before_restart + before_crash
    await logout(bob, carol)


# -- offline quota


@pytest.fixture
def quota_server(tmp_path: Path) -> Iterator[Server]:
    srv = Server(tmp_path, archive={"offline_quota": 2})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


@async_test(timeout=60)
async def test_offline_quota_bounces_to_the_sender(quota_server):
    server = quota_server
    alice = await connect(server, "alice@example.com/desk")
    for n in range(3):
        alice.send_message(mto="carol@example.com", mbody=f"note {n}", mtype="chat")
    bounce = await alice.next_message()
    assert bounce["type"] == "error" and bounce["error"]["condition"] == "service-unavailable"
    assert bounce["from"] == "carol@example.com"
    carol = await connect(server, "carol@example.com/x")
    assert [(await carol.next_message())["body"] for _ in range(2)] == ["note 0", "note 1"]
    assert (await mam(alice, with_jid="carol@example.com")).bodies == ["note 0", "note 1"]
    await logout(alice, carol)


# -- the Redis backend, against a real redis-server


@pytest.fixture
def redis_chatgate(tmp_path: Path) -> Iterator[Server]:
    redis = RedisServer(tmp_path).start()
    (tmp_path / "chatgate").mkdir()
    srv = Server(tmp_path / "chatgate", storage={"redis_port": redis.port, "redis_prefix": "it"},
                 archive={"backend": "redis", "offline_backend": "redis"})
    provision(srv)
    srv.redis = redis
    srv.start()
    yield srv
    srv.stop()
    redis.stop()


@async_test(timeout=120)
async def test_redis_backend_keeps_history_and_offline_messages(redis_chatgate):
    server = redis_chatgate
    alice = await connect(server, "alice@example.com/desk")
    alice.send_message(mto="bob@example.com", mbody="waiting in redis", mtype="chat")
    await asyncio.sleep(0.3)
    bob = await connect(server, "bob@example.com/laptop")
    waiting = await bob.next_message()
    assert waiting["body"] == "waiting in redis" and waiting.xml.find(f"{{{DELAY}}}delay") is not None
    lines = await exchange(alice, bob, "alice@example.com", "bob@example.com", 9, "via redis")
    await logout(alice, bob)
    await asyncio.to_thread(server.stop)
    await asyncio.to_thread(server.start)  # chatgate restarts, redis keeps running

    alice = await connect(server, "alice@example.com/phone")
    every = ["waiting in redis", *lines]
    assert (await mam(alice, with_jid="bob@example.com", rsm=page_rsm(50))).bodies == every
    backward, before = [], ""
    while True:
        page = await mam(alice, with_jid="bob@example.com", rsm=page_rsm(4, before=before))
        backward = page.bodies + backward
        if page.complete:
            break
        before = page.first
    assert backward == every
    await logout(alice)
