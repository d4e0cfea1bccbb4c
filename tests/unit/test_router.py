"""The router's delivery rules (RFC 6121 §8), on sessions that record what they get."""

from __future__ import annotations

import pytest
from twisted.internet import task
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate import events
from chatgate.config import Settings
from chatgate.features import register_all
from chatgate.mirror import DirectoryMirror
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import CLIENT_NS
from chatgate.storage import Stores
from chatgate.storage.interfaces import User
from chatgate.storage.memory import MemoryDirectory


class RecordingSession(Session):
    transport_name = "test"

    def __init__(self, jid: str) -> None:
        super().__init__(JID(jid))
        self.got: list[str] = []
        self.closed_with: str | None = None

    def serialize(self, element: domish.Element) -> bytes:
        return element.toXml().encode()

    def _write(self, data: bytes) -> None:
        self.got.append(data.decode())

    @property
    def messages(self) -> list[str]:
        return [x for x in self.got if x.startswith("<message")]

    def _end(self, condition: str | None, text: str | None) -> None:
        self.closed_with = condition


@pytest.fixture
def world():
    directory = MemoryDirectory()
    for domain in ("example.com", "other.org"):
        directory.add_domain(domain)
    for jid in ("alice@example.com", "bob@example.com", "dave@other.org"):
        local, domain = jid.split("@")
        directory.add_user(User(local, domain), {})
    domains = DirectoryMirror(directory)
    domains.load()
    clock = task.Clock()
    router = Router(domains, clock=clock)
    register_all(router, Settings(), Stores(directory=directory))
    return router, clock


def online(router: Router, jid: str, priority: int | None = 0) -> RecordingSession:
    """A bound session; available with *priority* unless it is None."""
    session = RecordingSession(jid)
    router.bind(session)
    if priority is not None:
        presence = domish.Element((CLIENT_NS, "presence"))
        presence.addElement("priority", content=str(priority))
        router.route(presence, session)
    session.got.clear()
    return session


def message(to: str, mtype: str = "chat", body: str = "hi") -> domish.Element:
    m = domish.Element((CLIENT_NS, "message"))
    m["to"], m["type"] = to, mtype
    m.addElement("body", content=body)
    return m


def test_bare_jid_reaches_available_non_negative_resources(world):
    router, _ = world
    desk = online(router, "alice@example.com/desk", 5)
    phone = online(router, "alice@example.com/phone", 0)
    hidden = online(router, "alice@example.com/bot", -1)
    bound_only = online(router, "alice@example.com/new", None)
    bob = online(router, "bob@example.com/x")
    router.route(message("alice@example.com"), bob)
    assert len(desk.messages) == len(phone.messages) == 1
    assert hidden.messages == [] and bound_only.messages == []
    assert "from='bob@example.com/x'" in desk.messages[0]


def test_full_jid_goes_to_that_resource_even_unavailable_else_like_bare(world):
    router, _ = world
    desk = online(router, "alice@example.com/desk")
    bound_only = online(router, "alice@example.com/new", None)
    bob = online(router, "bob@example.com/x")
    router.route(message("alice@example.com/new"), bob)
    assert len(bound_only.messages) == 1 and desk.messages == []
    router.route(message("alice@example.com/gone"), bob)
    assert len(desk.messages) == 1
    router.route(message("alice@example.com/gone", mtype="headline"), bob)
    assert len(desk.messages) == 1 and bob.messages == []  # headline to a missing resource is dropped


def test_sender_cannot_spoof_from(world):
    router, _ = world
    alice = online(router, "alice@example.com/desk")
    bob = online(router, "bob@example.com/x")
    m = message("alice@example.com")
    m["from"] = "dave@other.org/evil"
    router.route(m, bob)
    assert "from='bob@example.com/x'" in alice.messages[0]


# (a user with no available resource gets the message offline: test_archive_features.py)
@pytest.mark.parametrize("to", ["dave@other.org", "nobody@example.com"])
def test_unreachable_gets_service_unavailable(world, to):
    router, _ = world
    bob = online(router, "bob@example.com/x")
    router.route(message(to), bob)
    assert len(bob.got) == 1
    assert "type='error'" in bob.got[0] and "<service-unavailable" in bob.got[0]


def test_undeliverable_hook_takes_the_message(world):
    router, _ = world
    bob = online(router, "bob@example.com/x")
    stored = []
    router.listen(events.MESSAGE_UNDELIVERABLE, lambda delivery: stored.append(delivery.bare) or True)
    router.route(message("alice@example.com"), bob)
    assert stored == ["alice@example.com"] and bob.got == []


def test_errors_are_never_answered_with_errors(world):
    router, _ = world
    bob = online(router, "bob@example.com/x")
    router.route(message("dave@other.org", mtype="error"), bob)
    router.route(message("alice@example.com", mtype="error"), bob)
    assert bob.got == []


def test_presence_to_unknown_user_is_ignored(world):
    router, _ = world
    bob = online(router, "bob@example.com/x")
    p = domish.Element((CLIENT_NS, "presence"))
    p["to"] = "nobody@example.com"
    router.route(p, bob)
    assert bob.got == []


def test_iq_rules(world):
    router, _ = world
    bob = online(router, "bob@example.com/x")
    iq = domish.Element((CLIENT_NS, "iq"))
    iq["type"], iq["id"], iq["to"] = "get", "1", "alice@example.com"
    iq.addElement(("urn:example:unknown", "query"))
    router.route(iq, bob)
    assert "<service-unavailable" in bob.got.pop()
    empty = domish.Element((CLIENT_NS, "iq"))
    empty["type"], empty["id"] = "get", "2"
    router.route(empty, bob)
    assert "<bad-request" in bob.got.pop()
    bad_to = message("not a jid@@")
    router.route(bad_to, bob)
    assert "<jid-malformed" in bob.got.pop()


def test_server_request_only_answered_by_the_asked_resource(world):
    router, clock = world
    alice = online(router, "alice@example.com/desk")
    bob = online(router, "bob@example.com/x")
    iq = domish.Element((CLIENT_NS, "iq"))
    iq["type"] = "get"
    iq.addElement(("urn:xmpp:ping", "ping"))
    d = router.request(alice, iq, timeout=5)
    results = []
    d.addBoth(results.append)

    def answer(session: Session) -> None:
        reply = domish.Element((CLIENT_NS, "iq"))
        reply["type"], reply["id"], reply["to"] = "result", iq["id"], "example.com"
        router.route(reply, session)

    answer(bob)
    assert results == []
    answer(alice)
    assert results and results[0]["from"] == "alice@example.com/desk"


def test_same_resource_replaces_with_conflict(world):
    router, _ = world
    old = online(router, "alice@example.com/desk")
    new = online(router, "alice@example.com/desk")
    assert old.closed_with == "conflict"
    assert router.resources("alice@example.com") == {"desk": new}


def test_presence_broadcast_and_unavailable_on_unbind(world):
    router, _ = world
    bob = online(router, "bob@example.com/x")
    alice = online(router, "alice@example.com/desk")
    assert any("from='alice@example.com/desk'" in x for x in bob.got)
    router.unbind(alice)
    assert "type='unavailable'" in bob.got[-1]
    dave = online(router, "dave@other.org/x")
    assert dave.got == []  # presence never crosses domains


def test_a_new_password_resets_every_session_of_that_user_only(world):
    """features/revocation: whatever their transport (RFC 6120 §4.9.3.16)."""
    router, _ = world
    desk, web, bob = (online(router, jid) for jid in
                      ("alice@example.com/desk", "alice@example.com/web", "bob@example.com/desk"))
    router.domains.directory.set_credentials("example.com", "alice", {})
    assert (desk.closed_with, web.closed_with, bob.closed_with) == ("reset", "reset", None)


def test_a_stream_signed_in_before_a_new_password_is_reset_when_it_binds(world):
    """features/revocation: SASL succeeded before this process learnt of the
    change, the resource was bound after it."""
    router, clock = world
    clock.advance(10)
    early = RecordingSession("alice@example.com/slow")
    early.signed_in_at = clock.seconds()
    clock.advance(1)
    router.domains.directory.set_credentials("example.com", "alice", {})
    clock.advance(1)
    later = RecordingSession("alice@example.com/new")
    later.signed_in_at = clock.seconds()
    bob = RecordingSession("bob@example.com/desk")
    bob.signed_in_at = 0.0
    for session in (early, later, bob):
        router.bind(session)
    assert early.closed_with is None  # not before its bind result went out
    clock.advance(0)
    assert (early.closed_with, later.closed_with, bob.closed_with) == ("reset", None, None)


def test_a_removed_account_ends_with_not_authorized(world):
    """features/revocation (RFC 6120 §4.9.3.12)."""
    router, _ = world
    alice, bob = online(router, "alice@example.com/desk"), online(router, "bob@example.com/desk")
    router.domains.directory.remove_user("example.com", "alice")
    assert (alice.closed_with, bob.closed_with) == ("not-authorized", None)
