"""Client State Indication (XEP-0352) on the router with the memory stores."""

from __future__ import annotations

from twisted.words.xish import domish

from chatgate.features.csi import NS
from chatgate.stanza import CHATSTATES_NS, CLIENT_NS
from chatgate.transports.stream import features_element
from tests.unit import test_blocking_router
from tests.unit.test_blocking_router import message, online

world = test_blocking_router.world  # the same router and memory stores


def nonza(name: str) -> domish.Element:
    return domish.Element((NS, name))


def status(show: str) -> domish.Element:
    presence = domish.Element((CLIENT_NS, "presence"))
    presence.addElement("show", content=show)
    return presence


def test_csi_is_offered_once_authenticated_and_in_disco(world):
    router, _ = world
    assert (NS, "csi") in router.stream_features and NS in router.server_features
    state = ("bind", tuple(router.stream_features), False)
    assert features_element(state).toXml().count(f"<csi xmlns='{NS}'/>") == 1


def test_inactive_client_gets_no_chatter_then_a_message_with_the_latest_presence_first(world):
    router, _ = world
    phone, desk = online(router, "alice@example.com/phone"), online(router, "alice@example.com/desk")
    bob, carol = online(router, "bob@example.com/x"), online(router, "carol@example.com/x")
    assert router.nonza(nonza("inactive"), phone)
    phone.got.clear(), desk.got.clear()
    for show in ("away", "xa", "dnd"):
        router.route(status(show), bob)
    router.route(status("away"), carol)
    router.route(message("alice@example.com", body=None, state="composing"), bob)
    router.route(message("alice@example.com", body=None, state="paused"), bob)
    assert phone.got == []
    assert len(desk.kinds("presence")) == 4 and len(desk.kinds("message")) == 2  # the active client: everything
    router.route(message("alice@example.com", body="lunch?"), carol)
    flushed, sent = phone.got
    assert flushed.count("<presence") == 2 and "<show>dnd" in flushed and "<show>xa" not in flushed
    assert flushed.count("<message") == 1 and "paused" in flushed and "composing" not in flushed
    assert flushed.index("from='bob@example.com/x'") < flushed.index("from='carol@example.com/x'")
    assert "lunch?" in sent
    phone.got.clear()
    router.route(status("chat"), bob)
    assert phone.got == []
    assert router.nonza(nonza("active"), phone)
    [everything] = phone.got
    assert "<show>chat</show>" in everything
    router.route(status("away"), bob)
    assert len(phone.got) == 2  # active again: at once


def test_chat_state_carbons_are_held_too(world):
    router, _ = world
    phone, desk = online(router, "alice@example.com/phone"), online(router, "alice@example.com/desk")
    bob = online(router, "bob@example.com/x")
    enable = domish.Element((CLIENT_NS, "iq"))
    enable["type"], enable["id"] = "set", "c1"
    enable.addElement(("urn:xmpp:carbons:2", "enable"))
    router.route(enable, phone)
    router.nonza(nonza("inactive"), phone)
    phone.got.clear()
    router.route(message("alice@example.com/desk", body=None, state="composing"), bob)
    assert phone.got == [] and len(desk.kinds("message")) == 1
    router.route(message("alice@example.com/desk", body="hi"), bob)
    flushed, carbon = phone.got
    assert f"<composing xmlns='{CHATSTATES_NS}'" in flushed and "hi" in carbon
