"""Personal eventing (XEP-0163) from real slixmpp clients, with their PEP plugins
(XEP-0060, XEP-0115 capabilities, XEP-0084 avatars, XEP-0172 nicknames,
XEP-0402 bookmarks, XEP-0223 private data): what one user publishes reaches
the contacts whose client asked for it (+notify) and nobody else, a client
that comes later gets the last item, private nodes stay the owner's, a
user of another domain reads nothing, and the XEP's errors come back for
forbidden, malformed, mismatched or oversized publishing."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import re
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest
from slixmpp.exceptions import IqError
from slixmpp.plugins.xep_0004 import Form
from slixmpp.plugins.xep_0048.stanza import Bookmarks
from slixmpp.plugins.xep_0084 import MetaData
from slixmpp.plugins.xep_0172 import UserNick
from slixmpp.plugins.xep_0402.stanza import Conference

from tests.integration.conftest import PASSWORD
from tests.integration.harness import Client, RawClient, Server, async_test, login, logout

NICK = "http://jabber.org/protocol/nick"
METADATA = "urn:xmpp:avatar:metadata"
BOOKMARKS = "urn:xmpp:bookmarks:1"
PUBSUB = "http://jabber.org/protocol/pubsub"
ROOM = "everyone@conference.example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # small limits, so a test reaches them
    srv = Server(tmp_path_factory.mktemp("pep"), pep={"max_nodes": 6, "max_bytes": 20000, "max_items": 50})
    for domain in ("example.com", "example.org"):
        srv.admin("domain", "add", domain)
    for jid in ("alice@example.com", "bob@example.com", "carol@example.com", "dave@example.com",
                "erin@example.com", "gina@example.com", "mallory@example.org"):
        srv.admin("user", "add", jid, "--password-stdin", stdin=PASSWORD + "\n")
    srv.start()
    yield srv
    srv.stop()


class Events:
    """The PEP events a client receives, kept in order."""

    def __init__(self, client: Client) -> None:
        self.received: asyncio.Queue = asyncio.Queue()
        for kind in ("publish", "retract", "delete", "purge"):
            client.add_event_handler(f"pubsub_{kind}", lambda msg, kind=kind: self.received.put_nowait((kind, msg)))

    async def next(self, timeout: float = 10):
        return await asyncio.wait_for(self.received.get(), timeout)

    async def none_within(self, client: Client, seconds: float = 1.0) -> None:
        """Nothing arrives: after a round trip through the server and a pause, the queue is empty."""
        await client.plugin["xep_0199"].ping(jid=client.boundjid.domain, timeout=10)
        await asyncio.sleep(seconds)
        assert self.received.empty(), [str(m) for _, m in self.received._queue]  # type: ignore[attr-defined]


async def pep_client(server: Server, jid: str, interests: tuple[str, ...] = ()) -> tuple[Client, Events]:
    """A client announcing its +notify interests in its capabilities, then its presence."""
    client = await login(server, jid, PASSWORD, presence=False)
    # not the XEP-0084 / XEP-0172 plugins: they would ask for their nodes on every client
    for plugin in ("xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0223", "xep_0402"):
        client.register_plugin(plugin)
    events = Events(client)
    for node in interests:
        client.plugin["xep_0030"].add_feature(f"{node}+notify")
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    client.send_presence()
    return client, events


def nick_of(msg) -> str:
    return msg["pubsub_event"]["items"]["item"]["payload"].text or ""


async def publish_nick(client: Client, text: str, **kwargs):
    nick = UserNick()
    nick["nick"] = text
    return await client.plugin["xep_0163"].publish(nick, node=NICK, timeout=10, **kwargs)


def options(**fields: str) -> Form:
    form = Form()
    form["type"] = "submit"
    form.add_field(var="FORM_TYPE", ftype="hidden", value=f"{PUBSUB}#publish-options")
    for var, value in fields.items():
        form.add_field(var=f"pubsub#{var}", value=value)
    return form


async def pubsub_error(awaitable) -> tuple[str, list[str]]:
    """(condition, pubsub#errors children) of the error an IQ gets."""
    with pytest.raises(IqError) as raised:
        await awaitable
    error = raised.value.iq["error"]
    extra = [child.tag.split("}")[1] for child in error.xml if child.tag.startswith(f"{{{PUBSUB}#errors}}")]
    return error["condition"], extra


@async_test(timeout=90)
async def test_a_nickname_reaches_contacts_that_asked_and_a_late_client_gets_the_last(server):
    alice, alice_events = await pep_client(server, "alice@example.com/desk", (NICK,))
    bob, bob_events = await pep_client(server, "bob@example.com/phone", (NICK, METADATA))
    dave, dave_events = await pep_client(server, "dave@example.com/desk")  # asks for nothing
    await bob.wait_presence(lambda p: p["from"] == "dave@example.com/desk")

    info = await bob.plugin["xep_0030"].get_info(jid="alice@example.com", timeout=10)
    assert ("pubsub", "pep", None, None) in info["disco_info"]["identities"]
    assert f"{PUBSUB}#publish-options" in info["disco_info"]["features"]
    # §7.1.5: max_items may be "max" (Converse.js asks for 9999, refused, unless this is offered)
    assert f"{PUBSUB}#config-node-max" in info["disco_info"]["features"]

    answer = await publish_nick(alice, "Alice A.")
    assert answer["pubsub"]["publish"]["node"] == NICK
    kind, msg = await bob_events.next()
    assert (kind, str(msg["from"]), msg["type"], nick_of(msg)) == ("publish", "alice@example.com", "headline",
                                                                     "Alice A.")
    kind, msg = await alice_events.next()  # her own client asked too
    assert (kind, nick_of(msg)) == ("publish", "Alice A.")
    await dave_events.none_within(dave)

    # an avatar's metadata, to bob only (alice's client did not ask for avatars)
    metadata = MetaData()
    metadata.add_info("5fa1", "image/png", "1024", height="32", width="32")
    await alice.plugin["xep_0163"].publish(metadata, node=METADATA, id="5fa1", timeout=10)
    kind, msg = await bob_events.next()
    assert msg["pubsub_event"]["items"]["node"] == METADATA
    assert msg["pubsub_event"]["items"]["item"]["payload"].find(f"{{{METADATA}}}info").get("id") == "5fa1"
    await alice_events.none_within(alice, 0.3)

    # carol comes later: alice's last nickname, with the time it was published
    carol, carol_events = await pep_client(server, "carol@example.com/laptop", (NICK,))
    kind, msg = await carol_events.next()
    assert (str(msg["from"]), nick_of(msg)) == ("alice@example.com", "Alice A.")
    delay = msg.xml.find("{urn:xmpp:delay}delay")
    assert delay is not None and delay.get("from") == "alice@example.com" and delay.get("stamp")
    # and reads it on demand, as a client opening a chat does
    items = await carol.plugin["xep_0060"].get_items("alice@example.com", NICK, timeout=10)
    assert [item["id"] for item in items["pubsub"]["items"]] == ["current"]

    # a new nickname replaces the old one (max_items 1); a retraction is told
    await publish_nick(alice, "Alice")
    for events in (bob_events, carol_events, alice_events):
        kind, msg = await events.next()
        assert (kind, nick_of(msg)) == ("publish", "Alice")
    items = await bob.plugin["xep_0060"].get_items("alice@example.com", NICK, timeout=10)
    assert len(items["pubsub"]["items"]) == 1
    await alice.plugin["xep_0060"].retract("alice@example.com", NICK, "current", notify=True, timeout=10)
    kind, msg = await bob_events.next()
    assert (kind, msg["pubsub_event"]["items"]["retract"]["id"]) == ("retract", "current")
    await logout(alice, bob, carol, dave)


@async_test(timeout=90)
async def test_bookmarks_follow_the_user_and_stay_private(server):
    desk, desk_events = await pep_client(server, "erin@example.com/desk", (BOOKMARKS,))
    laptop, laptop_events = await pep_client(server, "erin@example.com/laptop", (BOOKMARKS,))
    bob, bob_events = await pep_client(server, "bob@example.com/phone", (BOOKMARKS,))

    conference = Conference()
    conference["name"], conference["autojoin"], conference["nick"] = "Everyone", True, "erin"
    private = options(persist_items="true", max_items="max", send_last_published_item="never",
                      access_model="whitelist")
    await desk.plugin["xep_0163"].publish(conference, node=BOOKMARKS, id=ROOM, options=private, timeout=10)
    kind, msg = await laptop_events.next()  # her other client is told
    item = msg["pubsub_event"]["items"]["item"]
    assert (kind, item["id"]) == ("publish", ROOM)
    assert item["payload"].get("name") == "Everyone"
    await desk_events.next()
    # a second bookmark: both kept (max_items = max)
    second = Conference()
    second["name"] = "Sales"
    await desk.plugin["xep_0163"].publish(second, node=BOOKMARKS, id="sales@conference.example.com",
                                          options=private, timeout=10)
    items = await laptop.plugin["xep_0060"].get_items("erin@example.com", BOOKMARKS, timeout=10)
    assert {item["id"] for item in items["pubsub"]["items"]} == {ROOM, "sales@conference.example.com"}
    # another user reads nothing of them and is told nothing
    assert await pubsub_error(bob.plugin["xep_0060"].get_items("erin@example.com", BOOKMARKS, timeout=10)) == (
        "not-allowed", ["closed-node"])
    await bob_events.none_within(bob)
    # a client that comes later does not get private items pushed (send_last_published_item = never)
    phone, phone_events = await pep_client(server, "erin@example.com/phone", (BOOKMARKS,))
    await phone_events.none_within(phone)
    # publishing with options the node does not have: the precondition is not met
    assert await pubsub_error(desk.plugin["xep_0163"].publish(
        conference, node=BOOKMARKS, id=ROOM, options=options(access_model="presence"), timeout=10)) == (
        "conflict", ["precondition-not-met"])
    await logout(desk, laptop, bob, phone)


@async_test(timeout=90)
async def test_old_and_new_clients_share_one_list_of_bookmarks(server):
    """XEP-0402 §4: bookmarks set in private storage (XEP-0048) are the PEP node's items, and back."""
    old = await login(server, "gina@example.com/pidgin", PASSWORD)
    for plugin in ("xep_0049", "xep_0048"):
        old.register_plugin(plugin)
    new, new_events = await pep_client(server, "gina@example.com/conversations", (BOOKMARKS,))
    info = await new.plugin["xep_0030"].get_info(jid="gina@example.com", timeout=10)
    assert f"{BOOKMARKS}#compat" in info["disco_info"]["features"]

    marks = Bookmarks()
    marks.add_conference(ROOM, "gina", name="Everyone", autojoin=True)
    marks.add_url("https://example.com/wiki", name="Wiki")
    await old.plugin["xep_0048"].set_bookmarks(marks, method="xep_0049", timeout=10)
    kind, msg = await new_events.next()
    item = msg["pubsub_event"]["items"]["item"]
    assert (kind, item["id"], item["payload"].get("name"), item["payload"].get("autojoin")) == (
        "publish", ROOM, "Everyone", "true")
    assert item["payload"].findtext(f"{{{BOOKMARKS}}}nick") == "gina"

    conference = Conference()
    conference["name"], conference["autojoin"] = "Sales", False
    await new.plugin["xep_0163"].publish(conference, node=BOOKMARKS, id="sales@conference.example.com",
                                         timeout=10)
    answer = await old.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=10)
    rooms = {str(c["jid"]): (c["name"], c["autojoin"]) for c in answer["private"]["bookmarks"]["conferences"]}
    assert rooms == {ROOM: ("Everyone", True), "sales@conference.example.com": ("Sales", False)}
    assert [u["url"] for u in answer["private"]["bookmarks"]["urls"]] == ["https://example.com/wiki"]

    await new_events.next()  # its own publish
    await old.plugin["xep_0048"].set_bookmarks(Bookmarks(), method="xep_0049", timeout=10)
    kind, msg = await new_events.next()
    assert kind == "retract"
    assert {r["id"] for r in msg["pubsub_event"]["items"]} == {ROOM, "sales@conference.example.com"}
    items = await new.plugin["xep_0060"].get_items("gina@example.com", BOOKMARKS, timeout=10)
    assert list(items["pubsub"]["items"]) == []
    await logout(old, new)


@async_test(timeout=90)
async def test_others_cannot_publish_and_bad_publishing_gets_the_errors(server):
    alice, _ = await pep_client(server, "alice@example.com/errors")
    bob, _ = await pep_client(server, "bob@example.com/errors")
    mallory, mallory_events = await pep_client(server, "mallory@example.org/desk", (NICK,))
    await publish_nick(alice, "Alice")

    # into someone else's PEP service
    iq = bob.plugin["xep_0060"].publish("alice@example.com", NICK, id="current",
                                        payload=ET.fromstring(f"<nick xmlns='{NICK}'>Bob was here</nick>"),
                                        timeout=10)
    assert (await pubsub_error(iq))[0] == "forbidden"
    items = await bob.plugin["xep_0060"].get_items("alice@example.com", NICK, timeout=10)
    assert nick_of_item(items) == "Alice"
    # no node, no item
    assert (await pubsub_error(bob.plugin["xep_0060"].get_items("alice@example.com", "urn:nothing", timeout=10))
            )[0] == "item-not-found"
    # another domain's user reads nothing and was told nothing
    assert (await pubsub_error(mallory.plugin["xep_0060"].get_items("alice@example.com", NICK, timeout=10))
            )[0] in ("service-unavailable", "not-allowed", "forbidden", "item-not-found")
    await mallory_events.none_within(mallory)
    # an item with no payload, or two
    empty = alice.make_iq_set()
    empty.xml.append(ET.fromstring(f"<pubsub xmlns='{PUBSUB}'><publish node='{NICK}'><item id='x'/></publish>"
                                   "</pubsub>"))
    assert await pubsub_error(empty.send(timeout=10)) == ("bad-request", ["payload-required"])
    two = alice.make_iq_set()
    two.xml.append(ET.fromstring(f"<pubsub xmlns='{PUBSUB}'><publish node='{NICK}'><item id='x'>"
                                 f"<nick xmlns='{NICK}'>a</nick><nick xmlns='{NICK}'>b</nick></item></publish>"
                                 "</pubsub>"))
    assert await pubsub_error(two.send(timeout=10)) == ("bad-request", ["invalid-payload"])
    # an access model the service does not offer
    assert (await pubsub_error(publish_nick(alice, "A", options=options(access_model="authorize"))))[0] == (
        "not-acceptable")
    # quotas, per user: 20,000 bytes and 6 nodes in all
    dave, _ = await pep_client(server, "dave@example.com/quota")

    def put(node: str, payload: str):
        return dave.plugin["xep_0060"].publish("dave@example.com", node, id="1", payload=ET.fromstring(payload),
                                               timeout=10)

    big = "<big xmlns='urn:example'>" + "x" * 12000 + "</big>"
    await put("urn:example:big", big)
    assert (await pubsub_error(put("urn:example:more", big)))[0] == "resource-constraint"
    await dave.plugin["xep_0060"].delete_node("dave@example.com", "urn:example:big", timeout=10)
    await put("urn:example:more", big)  # room again once the first is deleted
    for n in range(5):
        await put(f"urn:example:n{n}", "<x xmlns='urn:example'/>")
    assert (await pubsub_error(put("urn:example:n5", "<x xmlns='urn:example'/>")))[0] == "resource-constraint"
    await put("urn:example:n4", "<y xmlns='urn:example'/>")  # a node kept is still written
    await logout(dave)
    # the service is still up for everyone
    items = await bob.plugin["xep_0060"].get_items("alice@example.com", NICK, timeout=10)
    assert nick_of_item(items) == "Alice"
    await logout(alice, bob, mallory)


def nick_of_item(items) -> str:
    return list(items["pubsub"]["items"])[0]["payload"].text or ""


@async_test(timeout=60)
async def test_a_removed_users_nodes_go_with_them(server):
    server.admin("user", "add", "frank@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    frank, _ = await pep_client(server, "frank@example.com/desk")
    await publish_nick(frank, "Frank")
    await logout(frank)
    server.admin("user", "remove", "frank@example.com")
    server.admin("user", "add", "frank@example.com", "--password-stdin", stdin=PASSWORD + "\n")
    bob, _ = await pep_client(server, "bob@example.com/removal")
    for _ in range(50):  # the directory's change reaches the server within its poll interval
        try:
            await bob.plugin["xep_0060"].get_items("frank@example.com", NICK, timeout=10)
        except IqError as e:  # service-unavailable while the server knows no frank, for a moment
            if e.iq["error"]["condition"] == "item-not-found":
                break
            assert e.iq["error"]["condition"] == "service-unavailable"
        await asyncio.sleep(0.1)
    else:
        raise AssertionError("the removed user's nickname is still there")
    await logout(bob)


@async_test(timeout=60)
async def test_the_server_offers_its_capabilities_and_they_hash_right(server):
    """XEP-0115 §6.3: the bound stream's features carry the server's caps; its node answers
    the server's disco#info, which hashes to the ver announced."""
    raw = await RawClient.connect(server.port)
    await raw.login("bob", PASSWORD, "caps")
    offered = re.search(rb"<c [^>]*xmlns=.http://jabber.org/protocol/caps.[^>]*>", raw.received)
    assert offered is not None, raw.received
    node = re.search(rb"node=.([^'\"]+)", offered.group()).group(1).decode()
    ver = re.search(rb"ver=.([^'\"]+)", offered.group()).group(1).decode()
    raw.close()
    bob = await login(server, "bob@example.com/caps2", PASSWORD)
    info = await bob.plugin["xep_0030"].get_info(jid="example.com", node=f"{node}#{ver}", timeout=10)
    identities = sorted(f"{c}/{t}/{lang or ''}/{name or ''}<" for c, t, lang, name in info["disco_info"]["identities"])
    text = "".join(identities) + "".join(f"{f}<" for f in sorted(info["disco_info"]["features"]))
    for form in sorted(info["disco_info"].xml.findall("{jabber:x:data}x"), key=lambda f: form_type(f)):
        text += form_type(form) + "<"
        fields = sorted((f.get("var"), sorted(v.text or "" for v in f.findall("{jabber:x:data}value")))
                        for f in form.findall("{jabber:x:data}field") if f.get("var") != "FORM_TYPE")
        for var, values in fields:
            text += f"{var}<" + "".join(f"{v}<" for v in values)
    assert base64.b64encode(hashlib.sha1(text.encode()).digest()).decode() == ver, text
    assert "http://jabber.org/protocol/caps" in info["disco_info"]["features"]
    await logout(bob)


def form_type(form) -> str:
    for field in form.findall("{jabber:x:data}field"):
        if field.get("var") == "FORM_TYPE":
            return field.findtext("{jabber:x:data}value") or ""
    return ""
