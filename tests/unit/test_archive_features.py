"""Archive, MAM, offline messages and carbons on the router, with sessions that
record what they are sent and the in-memory stores (synchronous answers)."""

from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate import events
from chatgate.config import ArchiveSettings, Settings
from chatgate.features import register_all
from chatgate.features.mam import readable
from chatgate.mirror import DirectoryMirror
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import CLIENT_NS, parse_stamp, stamp
from chatgate.storage import Stores
from chatgate.storage.archive import ArchiveIds, id_floor, paginate, preview, time_of
from chatgate.storage.interfaces import ArchivedMessage, ArchiveQuery, Hold, User
from chatgate.storage.memory import MemoryDirectory
from chatgate.storage.memory_archive import MemoryArchive, MemoryOfflineStore
from chatgate.xml import parse_document, serialize

T0 = 1_700_000_000.0
SID = "urn:xmpp:sid:0"
MAM = "urn:xmpp:mam:2"
CARBONS = "urn:xmpp:carbons:2"
RSM = "http://jabber.org/protocol/rsm"


class RecordingSession(Session):
    transport_name = "test"

    def __init__(self, jid: str) -> None:
        super().__init__(JID(jid))
        self.got: list[domish.Element] = []

    def serialize(self, element: domish.Element) -> bytes:
        return element.toXml().encode()

    def from_text(self, text: str) -> bytes | None:
        return text.encode()  # its serialize() is toXml(): the router's noted text is taken as it is

    def _write(self, data: bytes) -> None:
        self.got.append(parse_document(data, 1 << 20))

    def _end(self, condition: str | None, text: str | None) -> None:
        pass

    def take(self, name: str | None = None) -> list[domish.Element]:
        taken = [e for e in self.got if name is None or e.name == name]
        self.got = [e for e in self.got if e not in taken]
        return taken


class World:
    def __init__(self, quota: int = 1000, retention_days: int | None = None) -> None:
        self.directory = directory = MemoryDirectory()
        directory.add_domain("example.com")
        for local in ("alice", "bob", "carol"):
            directory.add_user(User(local, "example.com"), {})
        domains = DirectoryMirror(directory)
        domains.load()
        self.clock = task.Clock()
        self.clock.advance(T0)
        self.router = Router(domains, clock=self.clock)
        self.archive, self.offline = MemoryArchive(), MemoryOfflineStore()
        settings = Settings(archive=ArchiveSettings(offline_quota=quota, retention_days=retention_days))
        stores = Stores(directory=directory, archive=self.archive, offline=self.offline)
        #: the features' services by name (what the service tree would start)
        self.services = {s.name: s for s in register_all(self.router, settings, stores)}

    def online(self, jid: str, priority: int | None = 0, carbons: bool = False) -> RecordingSession:
        session = RecordingSession(jid)
        self.router.bind(session)
        if priority is not None:
            self.presence(session, priority)
        if carbons:
            self.iq(session, "set", f"<enable xmlns='{CARBONS}'/>")
        session.got.clear()
        return session

    def presence(self, session: Session, priority: int) -> None:
        p = domish.Element((CLIENT_NS, "presence"))
        p.addElement("priority", content=str(priority))
        self.router.route(p, session)

    def send(self, session: Session, to: str, body: str | None = "hi", mtype: str = "chat",
             extra: str = "") -> None:
        xml = f"<message xmlns='jabber:client' to='{to}' type='{mtype}'>"
        if body is not None:
            xml += f"<body>{body}</body>"
        self.router.route(parse_document((xml + extra + "</message>").encode(), 1 << 20), session)

    def iq(self, session: Session, itype: str, payload: str, to: str | None = None) -> domish.Element:
        address = f" to='{to}'" if to else ""
        xml = f"<iq xmlns='jabber:client' type='{itype}' id='q1'{address}>{payload}</iq>"
        self.router.route(parse_document(xml.encode(), 1 << 20), session)
        replies = session.take("iq")
        assert len(replies) == 1, replies
        return replies[0]

    def history(self, owner: str) -> list[ArchivedMessage]:
        return self.archive.query(owner, ArchiveQuery(max=1000)).result.messages


@pytest.fixture
def world() -> World:
    return World()


def child(element: domish.Element, uri: str, name: str) -> domish.Element | None:
    return next(element.elements(uri, name), None)


def error_condition(element: domish.Element) -> str | None:
    error = child(element, CLIENT_NS, "error")
    return None if error is None else error.firstChildElement().name


# -- pure parts


def test_stamps_are_xep_0082_to_the_microsecond():
    assert stamp(T0 + 0.25) == "2023-11-14T22:13:20.250000Z"
    assert parse_stamp("2023-11-14T22:13:20.250000Z") == T0 + 0.25
    assert parse_stamp("2023-11-14T23:13:20+01:00") == T0
    for bad in ("2023-11-14", "yesterday", "2023-11-14T22:13:20", "2023-11-14 22:13:20Z"):
        with pytest.raises(ValueError):
            parse_stamp(bad)


def test_archive_ids_sort_like_time_and_never_repeat():
    ids = ArchiveIds()
    made = [ids.make(t) for t in (T0, T0, T0 - 5, T0 + 1)]
    assert [i for i, _ in made] == sorted(i for i, _ in made) and len({i for i, _ in made}) == 4
    assert [at for _, at in made] == [T0, T0 + 0.000001, T0 + 0.000002, T0 + 1]
    assert time_of(made[3][0]) == T0 + 1
    assert id_floor(T0) <= made[0][0] < id_floor(T0 + 0.000001)
    with pytest.raises(ValueError):
        time_of("not-an-id")


def test_paginate_both_ways():
    ids = ArchiveIds()
    items = [ArchivedMessage("a@x", ids.make(T0 + i)[0], "b@x", "", False, T0 + i, "", "") for i in range(5)]
    page = paginate(items, ArchiveQuery(max=2))
    assert (page.messages, page.first_index, page.complete) == (items[:2], 0, False)
    page = paginate(items, ArchiveQuery(after=items[2].id, max=2))
    assert (page.messages, page.first_index, page.complete) == (items[3:], 3, True)
    page = paginate(items, ArchiveQuery(before="", max=2))
    assert (page.messages, page.first_index, page.complete) == (items[3:], 3, False)
    page = paginate(items, ArchiveQuery(before=items[2].id, max=5))
    assert (page.messages, page.first_index, page.complete) == (items[:2], 0, True)


def test_preview_is_one_short_line():
    assert preview("  hello\n  world ") == "hello world"
    assert len(preview("x" * 500)) == 100 and preview("x" * 500).endswith("…")


# -- the router's events


def test_delivering_is_told_with_the_targets_and_refused_on_bounce(world):
    told, refused = [], []
    world.router.listen(events.MESSAGE_DELIVERING, lambda d: told.append((d.bare, len(d.targets))))
    world.router.listen(events.MESSAGE_REFUSED, lambda d: refused.append(d.bare))
    alice = world.online("alice@example.com/desk")
    bob = world.online("bob@example.com/x")
    world.send(alice, "bob@example.com")
    world.send(alice, "carol@example.com", extra="<no-store xmlns='urn:xmpp:hints'/>")
    assert told == [("bob@example.com", 1), ("carol@example.com", 0)]
    assert refused == ["carol@example.com"]
    assert error_condition(alice.take("message")[0]) == "service-unavailable"
    assert len(bob.take("message")) == 1


# -- archive and stanza-ids (XEP-0313 §3.5, §5.1.1; XEP-0359)


def test_both_parties_archive_with_their_own_ids(world):
    alice = world.online("alice@example.com/desk")
    bob = world.online("bob@example.com/laptop")
    world.send(alice, "bob@example.com", "hello bob")
    delivered = bob.take("message")[0]
    ids = [(s["by"], s["id"]) for s in delivered.elements(SID, "stanza-id")]
    assert len(ids) == 1 and ids[0][0] == "bob@example.com"
    [bobs] = world.history("bob@example.com")
    [alices] = world.history("alice@example.com")
    assert (bobs.id, bobs.contact, bobs.resource, bobs.outgoing, bobs.body) == (
        ids[0][1], "alice@example.com", "desk", False, "hello bob")
    assert (alices.contact, alices.resource, alices.outgoing, alices.body) == ("bob@example.com", "", True,
                                                                               "hello bob")
    assert alices.id != bobs.id and bobs.at == alices.at == T0
    assert f"by='alice@example.com' id='{alices.id}'" in alices.stanza and "by='bob" not in alices.stanza
    assert f"id='{bobs.id}'" in bobs.stanza


def test_spoofed_ids_of_the_archives_are_replaced(world):
    alice = world.online("alice@example.com/desk")
    bob = world.online("bob@example.com/laptop")
    spoof = ("<stanza-id xmlns='urn:xmpp:sid:0' by='bob@example.com' id='fake'/>"
             "<stanza-id xmlns='urn:xmpp:sid:0' by='carol@example.com' id='theirs'/>")
    world.send(alice, "bob@example.com", extra=spoof)
    ids = {(s["by"], s["id"]) for s in bob.take("message")[0].elements(SID, "stanza-id")}
    assert ("bob@example.com", "fake") not in ids and ("carol@example.com", "theirs") in ids
    world.send(alice, "bob@example.com", body=None, extra=spoof.replace("carol", "alice"))  # not archived
    assert [s["by"] for s in bob.take("message")[0].elements(SID, "stanza-id")] == []


def test_what_is_not_archived(world):
    alice = world.online("alice@example.com/desk")
    world.online("bob@example.com/laptop")
    world.send(alice, "bob@example.com", body=None, extra="<composing xmlns='http://jabber.org/protocol/chatstates'/>")
    world.send(alice, "bob@example.com", mtype="headline")
    world.send(alice, "bob@example.com", mtype="groupchat")
    assert world.history("bob@example.com") == [] and world.history("alice@example.com") == []


def test_message_to_oneself_is_archived_once(world):
    desk = world.online("alice@example.com/desk")
    world.online("alice@example.com/phone")
    world.send(desk, "alice@example.com/phone", "note to self")
    [kept] = world.history("alice@example.com")
    assert (kept.contact, kept.outgoing) == ("alice@example.com", True)


def test_retention_deletes_old_history_hourly():
    world = World(retention_days=2)
    alice = world.online("alice@example.com/desk")
    world.online("bob@example.com/laptop")
    world.send(alice, "bob@example.com", "old")
    world.clock.advance(86400)
    world.send(alice, "bob@example.com", "recent")
    retention = world.services["retention"]
    retention.startService()  # a sweep at start, then every hour
    assert [m.body for m in world.history("bob@example.com")] == ["old", "recent"]
    world.clock.advance(86400 + 3600)
    assert [m.body for m in world.history("bob@example.com")] == ["recent"]
    assert [m.body for m in world.history("alice@example.com")] == ["recent"]
    retention.stopService()
    assert world.clock.getDelayedCalls() == []  # no sweep left behind


def test_history_is_kept_forever_by_default(world):
    alice = world.online("alice@example.com/desk")
    world.send(alice, "bob@example.com", "old")
    world.services["retention"].startService()
    # no retention_days, and the domain has none of its own: nothing ever expires
    world.clock.advance(3650 * 86400)
    assert [m.body for m in world.history("bob@example.com")] == ["old"]
    world.services["retention"].stopService()


def test_a_domains_own_retention_and_legal_holds():
    """The domain's retention over the server's (none here), sparing a user on hold; a domain
    on hold keeps everything; 0 keeps always."""
    world = World()
    directory = world.directory
    directory.set_retention("example.com", 1)
    directory.put_hold(Hold("example.com", "bob", "counsel", T0, "case 17"))
    alice = world.online("alice@example.com/desk")
    world.online("bob@example.com/laptop")
    world.send(alice, "bob@example.com", "old")
    retention = world.services["retention"]
    retention.startService()
    world.clock.advance(2 * 86400)
    assert world.history("alice@example.com") == []  # her copy: past the domain's day
    assert [m.body for m in world.history("bob@example.com")] == ["old"]  # his: on hold
    world.send(alice, "bob@example.com", "newer")
    directory.put_hold(Hold("example.com", "", "counsel", T0))  # the whole domain
    world.clock.advance(2 * 86400)
    assert [m.body for m in world.history("alice@example.com")] == ["newer"]
    directory.remove_hold("example.com", "")
    directory.set_retention("example.com", 0)  # always
    world.clock.advance(2 * 86400)
    assert [m.body for m in world.history("alice@example.com")] == ["newer"]
    retention.stopService()


# -- offline messages (XEP-0160)


def test_offline_message_waits_for_available_presence_with_delay(world):
    alice = world.online("alice@example.com/desk")
    world.send(alice, "bob@example.com", "are you there?")
    assert alice.take() == []  # no error: kept
    world.clock.advance(90)
    bob = world.online("bob@example.com/laptop", priority=None)
    assert bob.take("message") == []  # bound, not yet available
    world.presence(bob, 0)
    [message] = bob.take("message")
    assert str(child(message, CLIENT_NS, "body")) == "are you there?"
    delay = child(message, "urn:xmpp:delay", "delay")
    assert (delay["from"], parse_stamp(delay["stamp"]), str(delay)) == ("example.com", T0, "Offline Storage")
    [archived] = world.history("bob@example.com")
    assert child(message, SID, "stanza-id")["id"] == archived.id
    world.presence(bob, 0)  # a later presence finds nothing more
    assert bob.take("message") == [] and world.offline.count("bob@example.com").result == 0


def test_negative_priority_is_not_reached_until_it_is_not(world):
    alice = world.online("alice@example.com/desk")
    bob = world.online("bob@example.com/bot", priority=-1)
    world.send(alice, "bob@example.com", "later")
    assert bob.take("message") == []
    world.presence(bob, 1)
    assert [str(child(m, CLIENT_NS, "body")) for m in bob.take("message")] == ["later"]


def test_chat_states_are_not_kept_and_not_bounced(world):
    alice = world.online("alice@example.com/desk")
    world.send(alice, "bob@example.com", body=None, extra="<gone xmlns='http://jabber.org/protocol/chatstates'/>")
    assert alice.take() == [] and world.offline.count("bob@example.com").result == 0


def test_quota_bounces_and_takes_the_message_out_of_history():
    world = World(quota=2)
    alice = world.online("alice@example.com/desk")
    for n in range(3):
        world.send(alice, "bob@example.com", f"message {n}")
    [bounce] = alice.take("message")
    assert error_condition(bounce) == "service-unavailable" and bounce["from"] == "bob@example.com"
    assert [m.body for m in world.history("bob@example.com")] == ["message 0", "message 1"]
    assert [m.body for m in world.history("alice@example.com")] == ["message 0", "message 1"]


def test_offline_goes_to_another_resource_if_the_first_left(world):
    alice = world.online("alice@example.com/desk")
    world.send(alice, "bob@example.com", "for bob")
    bob = RecordingSession("bob@example.com/gone")
    world.router.bind(bob)
    bob.presence = domish.Element((CLIENT_NS, "presence"))  # reachable for the router...
    bob.closed = True  # ...but closed by the time the store answers
    world.router.emit(events.SESSION_AVAILABLE, bob)
    assert world.offline.count("bob@example.com").result == 1  # put back
    other = world.online("bob@example.com/other", priority=None)
    world.presence(other, 0)
    assert len(other.take("message")) == 1


# -- carbons (XEP-0280)


def test_received_and_sent_copies(world):
    desk = world.online("alice@example.com/desk", carbons=True)
    phone = world.online("alice@example.com/phone", carbons=True)
    plain = world.online("alice@example.com/old")  # never enabled: no copies
    bob = world.online("bob@example.com/laptop", carbons=True)
    world.send(bob, "alice@example.com/desk", "to your desk")
    assert len(desk.take("message")) == 1 and plain.take("message") == []
    [copy] = phone.take("message")
    assert (copy["from"], copy["to"], copy["type"]) == ("alice@example.com", "alice@example.com/phone", "chat")
    forwarded = child(child(copy, CARBONS, "received"), "urn:xmpp:forward:0", "forwarded")
    inner = child(forwarded, CLIENT_NS, "message")
    assert str(child(inner, CLIENT_NS, "body")) == "to your desk"
    assert [s["by"] for s in inner.elements(SID, "stanza-id")] == ["alice@example.com"]
    assert bob.take("message") == []  # the sender's only resource gets no copy of its own message

    world.send(desk, "bob@example.com", "from my desk")
    [sent] = phone.take("message")
    inner = child(child(child(sent, CARBONS, "sent"), "urn:xmpp:forward:0", "forwarded"), CLIENT_NS, "message")
    assert inner["from"] == "alice@example.com/desk" and inner["to"] == "bob@example.com"
    assert [s["by"] for s in inner.elements(SID, "stanza-id")] == ["alice@example.com"]
    sent_id = next(inner.elements(SID, "stanza-id"))["id"]
    assert sent_id == world.history("alice@example.com")[-1].id
    assert desk.take("message") == [] and plain.take("message") == []


def test_bare_jid_message_reaches_each_resource_once(world):
    desk = world.online("alice@example.com/desk", carbons=True)
    phone = world.online("alice@example.com/phone", carbons=True)
    hidden = world.online("alice@example.com/hidden", priority=-1, carbons=True)
    bob = world.online("bob@example.com/laptop")
    world.send(bob, "alice@example.com", "to all of you")
    assert [len(desk.take("message")), len(phone.take("message"))] == [1, 1]
    [copy] = hidden.take("message")
    assert child(copy, CARBONS, "received") is not None


def test_private_and_no_copy_are_not_copied(world):
    world.online("alice@example.com/desk", carbons=True)
    phone = world.online("alice@example.com/phone", carbons=True)
    bob = world.online("bob@example.com/laptop")
    world.send(bob, "alice@example.com/desk", extra=f"<private xmlns='{CARBONS}'/>")
    world.send(bob, "alice@example.com/desk", extra="<no-copy xmlns='urn:xmpp:hints'/>")
    world.send(bob, "alice@example.com/desk", mtype="normal", body=None, extra="<x xmlns='urn:example'/>")
    assert phone.take("message") == []


def test_private_element_is_removed_before_delivery(world):
    desk = world.online("alice@example.com/desk")
    bob = world.online("bob@example.com/laptop")
    world.send(bob, "alice@example.com/desk", extra=f"<private xmlns='{CARBONS}'/>")
    assert child(desk.take("message")[0], CARBONS, "private") is None


def test_carbons_toggle(world):
    desk = world.online("alice@example.com/desk")
    phone = world.online("alice@example.com/phone")
    bob = world.online("bob@example.com/laptop")
    assert world.iq(phone, "set", f"<enable xmlns='{CARBONS}'/>")["type"] == "result"
    assert world.iq(phone, "set", f"<enable xmlns='{CARBONS}'/>")["type"] == "result"  # again: no error
    world.send(bob, "alice@example.com/desk")
    assert len(phone.take("message")) == 1
    assert world.iq(phone, "set", f"<disable xmlns='{CARBONS}'/>", to="example.com")["type"] == "result"
    world.send(bob, "alice@example.com/desk")
    assert phone.take("message") == [] and len(desk.take("message")) == 2
    refused = world.iq(phone, "set", f"<enable xmlns='{CARBONS}'/>", to="bob@example.com")
    assert error_condition(refused) == "not-allowed"


# -- MAM (XEP-0313)


def mam_query(world: World, session: RecordingSession, form: str = "", rsm: str = "", extra: str = "",
              to: str | None = None) -> tuple[list[domish.Element], domish.Element]:
    payload = f"<query xmlns='{MAM}' queryid='qq'>{form}{rsm}{extra}</query>"
    reply = world.iq(session, "set", payload, to=to)
    return session.take("message"), reply


def form(**fields: str) -> str:
    xml = "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>" \
          f"<value>{MAM}</value></field>"
    for name, value in fields.items():
        xml += f"<field var='{name.replace('_', '-')}'><value>{value}</value></field>"
    return xml + "</x>"


def bodies(results: list[domish.Element]) -> list[str]:
    out = []
    for message in results:
        forwarded = child(child(message, MAM, "result"), "urn:xmpp:forward:0", "forwarded")
        out.append(str(child(child(forwarded, CLIENT_NS, "message"), CLIENT_NS, "body")))
    return out


def chat(world: World, count: int) -> tuple[RecordingSession, RecordingSession]:
    alice = world.online("alice@example.com/desk")
    bob = world.online("bob@example.com/laptop")
    for n in range(count):
        world.send(alice if n % 2 == 0 else bob, "bob@example.com" if n % 2 == 0 else "alice@example.com", f"m{n}")
        world.clock.advance(60)
    alice.got.clear()
    bob.got.clear()
    return alice, bob


def test_query_sends_results_then_fin(world):
    alice, _ = chat(world, 3)
    results, reply = mam_query(world, alice)
    assert bodies(results) == ["m0", "m1", "m2"]
    first = results[0]
    assert (first["to"], first["from"]) == ("alice@example.com/desk", "alice@example.com")
    result = child(first, MAM, "result")
    assert result["queryid"] == "qq" and result["id"] == world.history("alice@example.com")[0].id
    delay = child(child(result, "urn:xmpp:forward:0", "forwarded"), "urn:xmpp:delay", "delay")
    assert parse_stamp(delay["stamp"]) == T0
    fin = child(reply, MAM, "fin")
    assert reply["type"] == "result" and fin["complete"] == "true"
    rsm = child(fin, RSM, "set")
    assert str(child(rsm, RSM, "count")) == "3" and child(rsm, RSM, "first")["index"] == "0"
    assert str(child(rsm, RSM, "last")) == result["id"].replace(result["id"], world.history("alice@example.com")[-1].id)


def test_query_paging_both_ways(world):
    alice, _ = chat(world, 7)
    results, reply = mam_query(world, alice, rsm=f"<set xmlns='{RSM}'><max>3</max><before/></set>")
    assert bodies(results) == ["m4", "m5", "m6"]
    fin = child(reply, MAM, "fin")
    assert fin.getAttribute("complete") is None
    first = str(child(child(fin, RSM, "set"), RSM, "first"))
    results, reply = mam_query(world, alice, rsm=f"<set xmlns='{RSM}'><max>3</max><before>{first}</before></set>")
    assert bodies(results) == ["m1", "m2", "m3"]
    results, reply = mam_query(world, alice, rsm=f"<set xmlns='{RSM}'><max>3</max><after>{first}</after></set>")
    assert bodies(results) == ["m5", "m6"] and child(reply, MAM, "fin")["complete"] == "true"
    results, _ = mam_query(world, alice, rsm=f"<set xmlns='{RSM}'><max>2</max></set>",
                           extra="<flip-page/>")
    assert bodies(results) == ["m1", "m0"]


def test_query_filters(world):
    alice, _ = chat(world, 4)
    carol = world.online("carol@example.com/x")
    world.send(carol, "alice@example.com", "from carol")
    alice.got.clear()
    results, _ = mam_query(world, alice, form(**{"with": "bob@example.com"}))
    assert bodies(results) == ["m0", "m1", "m2", "m3"]
    results, _ = mam_query(world, alice, form(**{"with": "bob@example.com/laptop"}))
    assert bodies(results) == ["m1", "m3"]
    results, _ = mam_query(world, alice, form(start=stamp(T0 + 60), end=stamp(T0 + 120)))
    assert bodies(results) == ["m1", "m2"]
    ids = [m.id for m in world.history("alice@example.com")]
    results, _ = mam_query(world, alice, form(after_id=ids[0], before_id=ids[3]))
    assert bodies(results) == ["m1", "m2"]
    results, _ = mam_query(world, alice, form(ids=ids[4]))
    assert bodies(results) == ["from carol"]


@pytest.mark.parametrize(("query", "condition"), [
    (form(**{"with": "not a jid@@"}), "bad-request"),
    (form(start="last tuesday"), "bad-request"),
    (form(**{"{urn:example}full-text": "x"}), "feature-not-implemented"),
    (form().replace(MAM, "urn:xmpp:mam:1"), "bad-request"),
    (form().replace("type='submit'", "type='form'"), "bad-request"),
    (f"<set xmlns='{RSM}'><max>3</max><after>x</after><before>y</before></set>", "bad-request"),
    (f"<set xmlns='{RSM}'><max>many</max></set>", "bad-request"),
    (f"<set xmlns='{RSM}'><max>3</max><after>00000000000000-0000000000</after></set>", "item-not-found"),
    (form(ids="00000000000000-0000000000"), "item-not-found"),
])
def test_bad_queries_get_the_protocol_error(world, query, condition):
    alice, _ = chat(world, 1)
    results, reply = mam_query(world, alice, query)
    assert results == [] and reply["type"] == "error" and error_condition(reply) == condition


def test_someone_elses_archive_is_forbidden(world):
    alice, _ = chat(world, 1)
    results, reply = mam_query(world, alice, to="bob@example.com")
    assert results == [] and error_condition(reply) == "forbidden"


def test_rsm_max_is_optional_and_capped(world):
    alice, _ = chat(world, 3)
    results, _ = mam_query(world, alice, rsm=f"<set xmlns='{RSM}'><after>{world.history('alice@example.com')[0].id}"
                                             "</after></set>")
    assert bodies(results) == ["m1", "m2"]
    results, reply = mam_query(world, alice, rsm=f"<set xmlns='{RSM}'><max>0</max></set>")
    assert results == [] and str(child(child(child(reply, MAM, "fin"), RSM, "set"), RSM, "count")) == "3"


def test_fields_metadata_and_prefs(world):
    alice, _ = chat(world, 2)
    fields = world.iq(alice, "get", f"<query xmlns='{MAM}'/>")
    names = {f.getAttribute("var") for f in child(child(fields, MAM, "query"), "jabber:x:data", "x").elements()}
    assert {"FORM_TYPE", "with", "start", "end", "before-id", "after-id", "ids"} <= names
    metadata = child(world.iq(alice, "get", f"<metadata xmlns='{MAM}'/>"), MAM, "metadata")
    history = world.history("alice@example.com")
    assert child(metadata, MAM, "start")["id"] == history[0].id
    assert child(metadata, MAM, "end")["id"] == history[-1].id
    assert parse_stamp(child(metadata, MAM, "end")["timestamp"]) == history[-1].at
    prefs = child(world.iq(alice, "get", f"<prefs xmlns='{MAM}'/>"), MAM, "prefs")
    assert prefs["default"] == "always"
    ok = world.iq(alice, "set", f"<prefs xmlns='{MAM}' default='always'><always/><never/></prefs>")
    assert ok["type"] == "result"
    for refused in (f"<prefs xmlns='{MAM}' default='never'><always/><never/></prefs>",
                    f"<prefs xmlns='{MAM}' default='always'><always/><never><jid>bob@example.com</jid></never>"
                    "</prefs>"):
        assert error_condition(world.iq(alice, "set", refused)) == "not-allowed"


def test_disco_features(world):
    alice = world.online("alice@example.com/desk")
    server = world.iq(alice, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>", to="example.com")
    account = world.iq(alice, "get", "<query xmlns='http://jabber.org/protocol/disco#info'/>")

    def features(reply: domish.Element) -> set[str]:
        return {f["var"] for f in child(reply, "http://jabber.org/protocol/disco#info", "query").elements()
                if f.name == "feature"}

    assert {CARBONS, "msgoffline", SID} <= features(server)
    assert {MAM, MAM + "#extended", SID} <= features(account)


def test_mam_reads_archived_text_back_and_rebuilds_what_does_not_read():
    """A row written before output was escaped (the forgery of SECURITY.md's
    "Output") comes back from MAM as one message from the real peer."""
    poisoned = ("<message xmlns='jabber:client' to='bob@example.com' from='alice@example.com/evil' type='chat'>"
                "<body>hi bob</body><x xmlns='urn:a'/></message><message from='boss@othercorp.org/x'"
                " to='bob@example.com' type='chat'><body>FORGED</body></message><message type='chat'><x b=''/>"
                "<stanza-id xmlns='urn:xmpp:sid:0' by='bob@example.com' id='1'/></message>")
    row = ArchivedMessage("bob@example.com", "1", "alice@example.com", "evil", False, 0.0, "hi bob", poisoned)
    rebuilt = readable(row, 65536)
    assert (rebuilt["from"], rebuilt["to"], str(rebuilt.body)) == ("alice@example.com/evil", "bob@example.com",
                                                                   "hi bob")
    assert "FORGED" not in serialize(rebuilt)
    sent = ArchivedMessage("alice@example.com", "2", "bob@example.com", "", True, 0.0, "x", "<iq/>")
    assert (readable(sent, 65536)["from"], readable(sent, 65536)["to"]) == ("alice@example.com", "bob@example.com")
    good = ArchivedMessage("bob@example.com", "3", "alice@example.com", "desk", False, 0.0, "ok",
                           "<message xmlns='jabber:client' from='alice@example.com/desk' id='k'><body>ok</body>"
                           "<x xmlns='urn:example:x' a='&apos;'/></message>")
    kept = readable(good, 65536)
    assert kept["id"] == "k" and next(kept.elements("urn:example:x", "x"))["a"] == "'"


def test_an_unreachable_archive_does_not_stop_delivery_and_loses_no_history(world):
    """A Redis archive refuses at once while Redis is down: the message is
    delivered anyway, kept, and written in order once the archive answers."""
    from twisted.internet.defer import fail

    from chatgate.features.archive import RETRY_EVERY
    from chatgate.storage.interfaces import ArchiveError

    append, down = world.archive.append, [True]

    def flaky(messages):
        return fail(ArchiveError("redis 127.0.0.1:6379: not connected")) if down[0] else append(messages)

    world.archive.append = flaky
    alice, bob = world.online("alice@example.com/a"), world.online("bob@example.com/b")
    for n in range(3):
        world.send(alice, "bob@example.com", f"while down {n}")
    assert [str(m.body) for m in bob.take("message")] == [f"while down {n}" for n in range(3)]
    world.clock.advance(RETRY_EVERY)
    assert world.history("bob@example.com") == []  # still down: kept
    down[0] = False
    world.send(alice, "bob@example.com", "back")
    world.clock.advance(RETRY_EVERY)
    world.clock.advance(0)
    bodies = [m.body for m in world.history("bob@example.com")]
    assert bodies == ["while down 0", "while down 1", "while down 2", "back"]
    assert [m.body for m in world.history("alice@example.com")] == bodies


def test_offline_messages_the_store_cannot_read_yet_are_read_again(world):
    """Redis reconnecting: reading a user's offline messages fails at once; it is
    tried again shortly, and the user gets them without logging in again."""
    from twisted.internet.defer import fail

    from chatgate.features.offline import READ_RETRY
    from chatgate.storage.interfaces import ArchiveError

    alice = world.online("alice@example.com/a")
    world.send(alice, "bob@example.com", "kept")
    pop, failures = world.offline.pop, [1]

    def flaky(owner):
        if failures[0]:
            failures[0] -= 1
            return fail(ArchiveError("redis 127.0.0.1:6379: not connected"))
        return pop(owner)

    world.offline.pop = flaky
    bob = world.online("bob@example.com/b")
    assert bob.take("message") == []
    world.clock.advance(READ_RETRY)
    assert [str(m.body) for m in bob.take("message")] == ["kept"]
