"""Receipts (XEP-0184), chat markers (XEP-0333) and corrections (XEP-0308)
on the router with the memory stores: routed to full JIDs, copied as carbons,
kept offline, never held by CSI, archived for both parties with an empty body
and their XML, and not archived under XEP-0334 no-store hints."""

from __future__ import annotations

from twisted.words.xish import domish

from chatgate.features.carbons import eligible
from chatgate.features.csi import NS as CSI
from chatgate.stanza import acknowledgement
from chatgate.xml import parse_document
from tests.unit import test_archive_features
from tests.unit.test_archive_features import CARBONS, World, child

RECEIPT = "<received xmlns='urn:xmpp:receipts' id='m1'/>"
DISPLAYED = "<displayed xmlns='urn:xmpp:chat-markers:0' id='m1'/>"
world = test_archive_features.world  # the same router and memory stores
CORRECTION = "<replace xmlns='urn:xmpp:message-correct:0' id='m1'/>"


def stanza(xml: str) -> domish.Element:
    return parse_document(xml.encode(), 1 << 20)


def test_acknowledgement_names_the_state_and_the_message():
    assert acknowledgement(stanza(f"<message xmlns='jabber:client'>{RECEIPT}</message>")) == ("delivered", "m1")
    assert acknowledgement(stanza(f"<message xmlns='jabber:client'>{DISPLAYED}</message>")) == ("read", "m1")
    assert acknowledgement(stanza("<message xmlns='jabber:client'><request xmlns='urn:xmpp:receipts'/>"
                                  "<body>x</body></message>")) is None
    assert acknowledgement(stanza("<message xmlns='jabber:client'><received xmlns='urn:xmpp:receipts'/>"
                                  "</message>")) is None  # no id: about nothing


def test_carbons_copy_body_less_receipts_and_markers_of_type_normal():
    assert eligible(stanza(f"<message xmlns='jabber:client'>{RECEIPT}</message>"))
    assert eligible(stanza(f"<message xmlns='jabber:client' type='chat'>{DISPLAYED}</message>"))
    assert not eligible(stanza("<message xmlns='jabber:client'><x xmlns='y'/></message>"))


def test_receipts_and_markers_reach_the_full_jid_and_the_senders_other_resources(world: World):
    alice = world.online("alice@example.com/desk")
    bob_phone = world.online("bob@example.com/phone", carbons=True)
    bob_desk = world.online("bob@example.com/desk", carbons=True)
    for extra in (RECEIPT, DISPLAYED):
        world.send(bob_phone, "alice@example.com/desk", body=None, mtype="normal", extra=extra)
        [got] = alice.take("message")
        assert acknowledgement(got) == acknowledgement(stanza(f"<message xmlns='jabber:client'>{extra}</message>"))
        [copy] = bob_desk.take("message")
        assert child(copy, CARBONS, "sent") is not None
        assert bob_phone.take("message") == []


def test_csi_holds_chat_states_but_not_receipts_or_markers(world: World):
    alice = world.online("alice@example.com/desk")
    bob = world.online("bob@example.com/phone")
    assert world.router.nonza(domish.Element((CSI, "inactive")), alice)
    alice.got.clear()
    world.send(bob, "alice@example.com/desk", body=None, extra=RECEIPT)
    world.send(bob, "alice@example.com/desk", body=None, extra=DISPLAYED)
    assert len(alice.take("message")) == 2


def test_csi_never_lets_a_chat_state_replace_a_marker_sent_with_one(world: World):
    """Some clients put a chat state in the message that carries their marker:
    held as a chat state, the sender's next chat state would replace it."""
    alice = world.online("alice@example.com/desk")
    bob = world.online("bob@example.com/phone")
    assert world.router.nonza(domish.Element((CSI, "inactive")), alice)
    alice.got.clear()
    active = "<active xmlns='http://jabber.org/protocol/chatstates'/>"
    world.send(bob, "alice@example.com/desk", body=None, extra=DISPLAYED + active)
    world.send(bob, "alice@example.com/desk", body=None, extra=RECEIPT + active)
    world.send(bob, "alice@example.com/desk", body=None, extra="<composing xmlns='http://jabber.org/protocol/chatstates'/>")
    assert [acknowledgement(m) for m in alice.take("message")] == [("read", "m1"), ("delivered", "m1")]
    assert world.router.nonza(domish.Element((CSI, "active")), alice)
    [typing] = alice.take("message")  # the chat state alone was held, and comes now
    assert acknowledgement(typing) is None


def test_receipts_wait_offline(world: World):
    bob = world.online("bob@example.com/phone")
    world.send(bob, "alice@example.com", body=None, mtype="chat", extra=DISPLAYED)
    alice = world.online("alice@example.com/desk", priority=None)
    world.presence(alice, 0)
    assert [acknowledgement(m) for m in alice.take("message")] == [("read", "m1")]


def test_both_parties_archive_receipts_markers_and_corrections(world: World):
    world.online("alice@example.com/desk")
    bob = world.online("bob@example.com/phone")
    world.send(bob, "alice@example.com/desk", body=None, mtype="normal", extra=RECEIPT)
    world.send(bob, "alice@example.com/desk", body=None, mtype="chat", extra=DISPLAYED)
    world.send(bob, "alice@example.com/desk", body="fixed", extra=CORRECTION)
    for owner in ("alice@example.com", "bob@example.com"):
        kept = world.history(owner)
        assert [m.body for m in kept] == ["", "", "fixed"]
        assert "urn:xmpp:receipts" in kept[0].stanza and "chat-markers" in kept[1].stanza
        assert "message-correct" in kept[2].stanza


def test_no_store_hints_keep_it_out_of_the_archive(world: World):
    world.online("alice@example.com/desk")
    bob = world.online("bob@example.com/phone")
    for hint in ("no-store", "no-permanent-store"):
        world.send(bob, "alice@example.com", body="secret", extra=f"<{hint} xmlns='urn:xmpp:hints'/>")
        world.send(bob, "alice@example.com", body=None, extra=f"{RECEIPT}<{hint} xmlns='urn:xmpp:hints'/>")
    assert world.history("alice@example.com") == [] and world.history("bob@example.com") == []


def test_blocking_drops_receipts_and_markers_too(world: World):
    alice = world.online("alice@example.com/desk")
    bob = world.online("bob@example.com/phone")
    reply = world.iq(alice, "set", "<block xmlns='urn:xmpp:blocking'><item jid='bob@example.com'/></block>")
    assert reply["type"] == "result"
    alice.got.clear()
    world.send(bob, "alice@example.com/desk", body=None, mtype="normal", extra=RECEIPT)
    world.send(bob, "alice@example.com/desk", body=None, mtype="chat", extra=DISPLAYED)
    assert alice.take("message") == [] and world.history("alice@example.com") == []
