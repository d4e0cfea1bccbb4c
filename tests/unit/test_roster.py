"""The domain roster as each transport writes it: items kept serialized, made again after changes."""

from __future__ import annotations

from twisted.internet import task
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.features import register_all
from chatgate.mirror import DirectoryMirror
from chatgate.router import Router
from chatgate.stanza import CLIENT_NS
from chatgate.storage import Stores
from chatgate.storage.interfaces import Alias, User
from chatgate.storage.memory import MemoryDirectory
from chatgate.xml import parse_document
from tests.unit.test_session import BOSHWire, Wire

ROSTER = "jabber:iq:roster"


def world():
    directory = MemoryDirectory()
    directory.add_domain("example.com")
    directory.add_domain("other.org")
    for local, name in (("alice", "Alice"), ("bob", "Bob O'Brien & <Co>"), ("carol", "")):
        directory.add_user(User(local, "example.com", name), {})
    directory.add_user(User("dave", "other.org", "Dave"), {})
    directory.add_alias(Alias("sales", "example.com", "Sales \"team\"", ("alice", "bob")))
    domains = DirectoryMirror(directory)
    domains.load()
    router = Router(domains, clock=task.Clock())
    register_all(router, Settings(), Stores(directory=directory))
    return router, directory


def roster_of(router: Router, session: Wire) -> list[tuple[str, str, str, list[str]]]:
    iq = domish.Element((CLIENT_NS, "iq"))
    iq["type"], iq["id"] = "get", "r1"
    iq.addElement((ROSTER, "query"))
    session.out.clear()
    router.route(iq, session)
    assert len(session.out) == 1
    reply = parse_document(session.out[0], 1 << 20)
    assert (reply.name, reply["type"], reply["id"]) == ("iq", "result", "r1")
    query = next(reply.elements(ROSTER, "query"))
    return [(item["jid"], item.getAttribute("name"), item["subscription"],
             [str(g) for g in item.elements(ROSTER, "group")]) for item in query.elements(ROSTER, "item")]


EXPECTED = [
    ("bob@example.com", "Bob O'Brien & <Co>", "both", ["example.com"]),
    ("carol@example.com", "carol", "both", ["example.com"]),
    ("sales@example.com", 'Sales "team"', "both", ["Aliases"]),
]


def test_roster_is_everyone_else_of_the_domain_on_either_transport():
    router, _ = world()
    c2s = Wire("alice@example.com/desk")
    bosh = BOSHWire("alice@example.com/pane")
    for session in (c2s, bosh):
        router.bind(session)
        assert sorted(roster_of(router, session)) == EXPECTED
    assert b"xmlns='jabber:client'" in bosh.out[0] and b"xmlns='jabber:client'" not in c2s.out[0]
    carol = Wire("carol@example.com/x")
    router.bind(carol)
    assert [i[0] for i in roster_of(router, carol)] == ["alice@example.com", "bob@example.com", "sales@example.com"]


def test_roster_follows_directory_changes():
    router, directory = world()
    alice = Wire("alice@example.com/desk")
    router.bind(alice)
    roster_of(router, alice)
    directory.add_user(User("erin", "example.com", "Erin"), {})
    directory.update_user(User("bob", "example.com", "Robert"))
    directory.remove_alias("example.com", "sales")
    got = sorted(roster_of(router, alice))
    assert got == [
        ("bob@example.com", "Robert", "both", ["example.com"]),
        ("carol@example.com", "carol", "both", ["example.com"]),
        ("erin@example.com", "Erin", "both", ["example.com"]),
    ]


def test_a_blocklist_change_keeps_the_domains_serialized_items(monkeypatch):
    """Blocking (XEP-0191) changes no roster: the domain's items are not made again."""
    router, directory = world()
    alice = Wire("alice@example.com/desk")
    router.bind(alice)
    built = []
    users = router.domains.users
    monkeypatch.setattr(router.domains, "users", lambda domain: built.append(domain) or users(domain))
    roster_of(router, alice)
    directory.block("example.com", "alice", ["bob@example.com"])
    directory.set_credentials("example.com", "carol", {})
    assert sorted(roster_of(router, alice)) == EXPECTED
    assert built == ["example.com"]  # made once, kept through both changes
