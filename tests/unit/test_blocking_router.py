"""Blocking (XEP-0191) on the router with the memory stores: the protocol, and the FILTER hook."""

from __future__ import annotations

import pytest
from twisted.internet import defer, task
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.features import register_all
from chatgate.features.blocking import ERRORS_NS, NS
from chatgate.mirror import DirectoryMirror
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import CHATSTATES_NS, CLIENT_NS
from chatgate.storage import Stores
from chatgate.storage.interfaces import Alias, User
from chatgate.storage.memory import MemoryDirectory
from chatgate.xml import parse_document


class RecordingSession(Session):
    transport_name = "test"

    def __init__(self, jid: str) -> None:
        super().__init__(JID(jid))
        self.got: list[str] = []

    def serialize(self, element: domish.Element) -> bytes:
        return element.toXml().encode()

    def _write(self, data: bytes) -> None:
        self.got.append(data.decode())

    def _end(self, condition: str | None, text: str | None) -> None:
        pass

    def kinds(self, name: str) -> list[str]:
        return [x for x in self.got if x.startswith(f"<{name}")]


class SlowDirectory(MemoryDirectory):
    """Blocklists answer only when the test says so (a store on another thread)."""

    def __init__(self) -> None:
        super().__init__()
        self.slow = False
        self.pending: list[tuple[defer.Deferred, list[str]]] = []

    def blocklist(self, domain: str, localpart: str) -> defer.Deferred[list[str]]:
        d = super().blocklist(domain, localpart)
        if not self.slow:
            return d
        later: defer.Deferred[list[str]] = defer.Deferred()
        d.addCallback(lambda items: self.pending.append((later, items)))
        return later

    def answer(self) -> None:
        pending, self.pending = self.pending, []
        for d, items in pending:
            d.callback(items)


@pytest.fixture
def world():
    directory = SlowDirectory()
    directory.add_domain("example.com")
    for local in ("alice", "bob", "carol"):
        directory.add_user(User(local, "example.com"), {})
    directory.add_alias(Alias("team", "example.com", "Team", ("alice", "bob", "carol")))
    mirror = DirectoryMirror(directory)
    mirror.load()
    router = Router(mirror, clock=task.Clock())
    register_all(router, Settings(), Stores(directory=directory))
    return router, directory


def online(router: Router, jid: str, available: bool = True) -> RecordingSession:
    session = RecordingSession(jid)
    router.bind(session)
    if available:
        router.route(domish.Element((CLIENT_NS, "presence")), session)
    session.got.clear()
    return session


def iq(kind: str, name: str, *jids: str, to: str | None = None) -> domish.Element:
    stanza = domish.Element((CLIENT_NS, "iq"))
    stanza["type"], stanza["id"] = kind, f"{name}-1"
    if to:
        stanza["to"] = to
    payload = stanza.addElement((NS, name))
    for jid in jids:
        payload.addElement("item")["jid"] = jid
    return stanza


def message(to: str, body: str | None = "hi", state: str | None = None) -> domish.Element:
    m = domish.Element((CLIENT_NS, "message"))
    m["to"], m["type"] = to, "chat"
    if body is not None:
        m.addElement("body", content=body)
    if state is not None:
        m.addElement((CHATSTATES_NS, state))
    return m


def parsed(text: str) -> domish.Element:
    return parse_document(text.encode(), 100_000)


def blocklist(router: Router, session: RecordingSession) -> list[str]:
    session.got.clear()
    router.route(iq("get", "blocklist"), session)
    reply = parsed(session.got.pop())
    assert reply["type"] == "result"
    return [item["jid"] for item in reply.firstChildElement().elements()]


def test_block_answers_pushes_to_resources_that_asked_and_unblock_all(world):
    router, _ = world
    desk, phone, bot = (online(router, f"alice@example.com/{r}") for r in ("desk", "phone", "bot"))
    assert blocklist(router, desk) == [] and blocklist(router, phone) == []
    router.route(iq("set", "block", "Bob@Example.com", "spam.org"), desk)
    result, push = (parsed(x) for x in desk.kinds("iq"))
    assert result["type"] == "result" and result["id"] == "block-1"
    assert push["type"] == "set" and push["to"] == "alice@example.com/desk"
    assert [i["jid"] for i in push.firstChildElement().elements()] == ["bob@example.com", "spam.org"]
    assert len(phone.kinds("iq")) == 1 and bot.kinds("iq") == []  # bot never asked for the list
    assert blocklist(router, bot) == ["bob@example.com", "spam.org"]
    phone.got.clear()
    router.route(iq("set", "unblock"), phone)
    result, push = (parsed(x) for x in phone.kinds("iq"))
    assert push.firstChildElement().name == "unblock" and list(push.firstChildElement().elements()) == []
    assert blocklist(router, desk) == []


@pytest.mark.parametrize("stanza, condition", [
    (iq("set", "block"), "bad-request"),
    (iq("set", "block", "a@b@c"), "jid-malformed"),
    (iq("get", "blocklist", to="bob@example.com"), "forbidden"),
])
def test_bad_requests_are_refused(world, stanza, condition):
    router, _ = world
    alice = online(router, "alice@example.com/desk")
    router.route(stanza, alice)
    assert f"<{condition} " in alice.got[-1] and "type='error'" in alice.got[-1]


def test_disco_names_blocking(world):
    router, _ = world
    assert NS in router.server_features


def test_nothing_from_a_blocked_contact_reaches_any_client_of_the_blocker(world):
    router, _ = world
    desk, phone = online(router, "alice@example.com/desk"), online(router, "alice@example.com/phone")
    bob = online(router, "bob@example.com/x")
    router.route(iq("set", "block", "bob@example.com"), desk)
    desk.got.clear(), phone.got.clear(), bob.got.clear()
    router.route(message("alice@example.com"), bob)
    router.route(message("alice@example.com/phone"), bob)
    [error] = bob.got[:1]
    assert "<service-unavailable " in error and "blocked" not in error  # §3.6: tells nothing
    bob.got.clear()
    router.route(message("alice@example.com", body=None, state="composing"), bob)
    router.route(domish.Element((CLIENT_NS, "presence")), bob)  # a presence change
    assert bob.kinds("message") == []  # chat states: no error
    assert desk.got == [] and phone.got == []


def test_blocker_writing_to_a_blocked_contact_gets_the_blocking_error(world):
    router, _ = world
    alice, bob = online(router, "alice@example.com/desk"), online(router, "bob@example.com/x")
    router.route(iq("set", "block", "bob@example.com/x"), alice)
    alice.got.clear(), bob.got.clear()
    router.route(message("bob@example.com/x"), alice)
    error = parsed(alice.got[0]).firstChildElement()
    assert error["type"] == "modify"
    assert [(c.uri, c.name) for c in error.elements()][1] == (ERRORS_NS, "blocked")
    assert "<not-acceptable " in alice.got[0] and bob.got == []


def test_presence_both_ways_goes_unavailable_on_block_and_comes_back_on_unblock(world):
    router, _ = world
    alice, bob, carol = (online(router, f"{u}@example.com/r") for u in ("alice", "bob", "carol"))
    router.route(iq("set", "block", "bob@example.com"), alice)
    assert any("type='unavailable'" in x and "from='alice@example.com/r'" in x for x in bob.got)
    assert any("type='unavailable'" in x and "from='bob@example.com/r'" in x for x in alice.got)
    for s in (alice, bob, carol):
        s.got.clear()
    status = domish.Element((CLIENT_NS, "presence"))
    status.addElement("show", content="away")
    router.route(status, alice)
    router.route(domish.Element((CLIENT_NS, "presence")), bob)
    assert bob.kinds("presence") == [x for x in bob.kinds("presence") if "alice" not in x]
    assert [x for x in alice.kinds("presence") if "bob@" in x] == []
    assert any("alice@" in x for x in carol.kinds("presence")) and any("bob@" in x for x in carol.kinds("presence"))
    late = online(router, "alice@example.com/late")  # a newcomer learns everyone's presence but bob's
    router.route(domish.Element((CLIENT_NS, "presence")), late)
    assert not any("from='bob@" in x for x in late.got)
    for s in (alice, bob):
        s.got.clear()
    router.route(iq("set", "unblock", "bob@example.com"), alice)
    assert any("from='alice@example.com/r'" in x and "<show>away</show>" in x for x in bob.kinds("presence"))
    assert any("from='bob@example.com/r'" in x and "unavailable" not in x for x in alice.kinds("presence"))
    bob.got.clear()
    router.route(message("bob@example.com"), alice)
    assert len(bob.kinds("message")) == 1


def test_a_blocked_users_message_through_an_alias_does_not_reach_the_blocker(world):
    router, _ = world
    alice, bob, carol = (online(router, f"{u}@example.com/r") for u in ("alice", "bob", "carol"))
    router.route(iq("set", "block", "bob@example.com"), alice)
    alice.got.clear()
    router.route(message("team@example.com"), bob)
    assert alice.kinds("message") == [] and len(carol.kinds("message")) == 1
    assert bob.kinds("message") == []  # the alias's other copies went: no error for bob


def test_messages_to_an_offline_blocker_are_refused_not_kept(world):
    router, _ = world
    alice = online(router, "alice@example.com/r")
    router.route(iq("set", "block", "bob@example.com"), alice)
    router.unbind(alice)
    bob = online(router, "bob@example.com/x")
    router.route(message("alice@example.com"), bob)
    assert "<service-unavailable " in bob.got[-1]
    back = online(router, "alice@example.com/back", available=False)
    router.route(domish.Element((CLIENT_NS, "presence")), back)
    assert back.kinds("message") == []  # nothing kept offline


def test_deliveries_wait_for_lists_being_read_and_keep_their_order(world):
    router, directory = world
    directory.block("example.com", "alice", ["bob@example.com"])  # alice was never online here: not read yet
    directory.slow = True
    bob, carol = online(router, "bob@example.com/x"), online(router, "carol@example.com/x")
    directory.answer()
    router.route(message("alice@example.com", body="one"), carol)
    router.route(message("alice@example.com", body="from bob"), bob)
    router.route(message("alice@example.com", body="two"), carol)
    assert bob.kinds("message") == [] and carol.kinds("message") == []
    directory.answer()  # alice's list: the three go on, in order
    assert "<service-unavailable " in bob.got[-1] and carol.kinds("message") == []
    alice = online(router, "alice@example.com/r", available=False)
    directory.answer()
    router.route(domish.Element((CLIENT_NS, "presence")), alice)
    assert [str(parsed(x).body) for x in alice.kinds("message")] == ["one", "two"]


def test_messages_kept_offline_before_a_block_are_not_delivered_after_it(world):
    """Offline delivery goes through the router's hooks (Router.deliver_stored)."""
    router, _ = world
    bob = online(router, "bob@example.com/x")
    carol = online(router, "carol@example.com/x")
    router.route(message("alice@example.com", "from bob, kept"), bob)
    router.route(message("alice@example.com", "from carol, kept"), carol)
    alice = online(router, "alice@example.com/r", available=False)  # bound, not yet available
    router.route(iq("set", "block", "bob@example.com"), alice)
    alice.got.clear()
    router.route(domish.Element((CLIENT_NS, "presence")), alice)  # now the offline messages come
    bodies = [str(parsed(m).body) for m in alice.kinds("message")]
    assert bodies == ["from carol, kept"]


def test_iqs_between_full_jids_are_filtered_both_ways(world):
    """§3.6, §3.7 for IQ: a get from a blocked JID gets service-unavailable,
    the blocker's get to it the blocking error; a result is dropped."""
    router, _ = world
    alice = online(router, "alice@example.com/r")
    bob = online(router, "bob@example.com/x")
    carol = online(router, "carol@example.com/x")
    router.route(iq("set", "block", "bob@example.com"), alice)
    for session in (alice, bob, carol):
        session.got.clear()

    def version(to: str) -> domish.Element:
        stanza = domish.Element((CLIENT_NS, "iq"))
        stanza["type"], stanza["id"], stanza["to"] = "get", "v1", to
        stanza.addElement(("jabber:iq:version", "query"))
        return stanza

    router.route(version("alice@example.com/r"), bob)
    assert alice.kinds("iq") == []
    assert "<service-unavailable " in bob.got[-1]
    bob.got.clear()
    router.route(version("bob@example.com/x"), alice)
    assert bob.kinds("iq") == []
    answer = parsed(alice.got[-1])
    assert answer["type"] == "error" and next(answer.error.elements(ERRORS_NS, "blocked"), None) is not None
    result = domish.Element((CLIENT_NS, "iq"))
    result["type"], result["id"], result["to"] = "result", "v1", "alice@example.com/r"
    alice.got.clear()
    router.route(result, bob)
    assert alice.kinds("iq") == []
    router.route(version("alice@example.com/r"), carol)  # anyone else's still arrives
    assert len(alice.kinds("iq")) == 1
