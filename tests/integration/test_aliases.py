"""Mail aliases as contacts, seen from real clients: fan-out, replies, presence, history."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from slixmpp.exceptions import IqError

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, login, logout
from tests.integration.test_history import mam, page_rsm

OFROM = "{http://jabber.org/protocol/address}addresses/{http://jabber.org/protocol/address}address"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("aliases"))
    provision(srv)
    srv.admin("alias", "add", "sales@example.com", "alice@example.com", "bob@example.com", "--name", "Sales Team")
    srv.start()
    yield srv
    srv.stop()


def ofrom(message) -> str | None:
    address = message.xml.find(OFROM)
    return None if address is None or address.get("type") != "ofrom" else address.get("jid")


@async_test()
async def test_alias_is_a_contact_with_presence(server):
    carol = await login(server, "carol@example.com/roster", PASSWORD)
    sales = carol.client_roster["sales@example.com"]
    assert (sales["name"], sales["groups"]) == ("Sales Team", ["Aliases"])
    alice = await login(server, "alice@example.com/pres", PASSWORD)
    seen = await carol.wait_presence(lambda p: p["from"] == "sales@example.com" and p["type"] != "unavailable")
    assert seen["status"] == "1 of 2 members online"
    await logout(alice)
    await carol.wait_presence(lambda p: p["from"] == "sales@example.com" and p["type"] == "unavailable")
    card = await carol.plugin["xep_0054"].get_vcard("sales@example.com")
    assert card["vcard_temp"]["FN"] == "Sales Team"
    await logout(carol)


@async_test()
async def test_message_reaches_every_member_but_the_sender_and_replies_come_back(server):
    alice = await login(server, "alice@example.com/desk", PASSWORD)
    bob = await login(server, "bob@example.com/desk", PASSWORD)
    carol = await login(server, "carol@example.com/desk", PASSWORD)
    carol.send_message(mto="sales@example.com", mbody="who can help with an order?", mtype="chat")
    for member in (alice, bob):
        got = await member.next_message()
        assert (str(got["from"]), got["body"]) == ("sales@example.com/carol", "who can help with an order?")
        assert ofrom(got) == "carol@example.com"
    alice.send_message(mto="sales@example.com/carol", mbody="I can", mtype="chat")
    reply = await carol.next_message()
    assert (str(reply["from"]), reply["body"], ofrom(reply)) == ("sales@example.com/alice", "I can",
                                                                  "alice@example.com")
    # a member writing to the alias: the others get it, not the sender
    bob.send_message(mto="sales@example.com", mbody="thanks alice", mtype="chat")
    assert (await alice.next_message())["body"] == "thanks alice"
    with pytest.raises(asyncio.TimeoutError):
        await bob.next_message(timeout=1)
    # each side's history: the conversation is with the alias
    await asyncio.sleep(0.3)
    assert (await mam(carol, with_jid="sales@example.com", rsm=page_rsm(10))).bodies == [
        "who can help with an order?", "I can"]
    assert (await mam(alice, with_jid="sales@example.com", rsm=page_rsm(10))).bodies == [
        "who can help with an order?", "I can", "thanks alice"]
    assert (await mam(bob, with_jid="sales@example.com", rsm=page_rsm(10))).bodies == [
        "who can help with an order?", "thanks alice"]
    await logout(alice, bob, carol)


@async_test()
async def test_offline_member_gets_it_at_next_login(server):
    alice = await login(server, "alice@example.com/only", PASSWORD)
    carol = await login(server, "carol@example.com/only", PASSWORD)
    carol.send_message(mto="sales@example.com", mbody="anyone there?", mtype="chat")
    assert (await alice.next_message())["body"] == "anyone there?"
    bob = await login(server, "bob@example.com/later", PASSWORD)
    late = await bob.next_message()
    assert (late["body"], str(late["from"])) == ("anyone there?", "sales@example.com/carol")
    assert late.xml.find("{urn:xmpp:delay}delay") is not None
    await logout(alice, bob, carol)


@async_test()
async def test_alias_changes_are_pushed_and_an_alias_of_one_refuses(server):
    carol = await login(server, "carol@example.com/admin", PASSWORD)
    changed = asyncio.Event()
    carol.add_event_handler("roster_update", lambda _: changed.set())
    await asyncio.to_thread(server.admin, "alias", "add", "solo@example.com", "carol@example.com")
    await asyncio.wait_for(changed.wait(), 10)
    assert carol.client_roster["solo@example.com"]["groups"] == ["Aliases"]
    carol.send_message(mto="solo@example.com", mbody="hello me", mtype="chat")
    error = await carol.next_message()
    assert error["type"] == "error" and error["error"]["condition"] == "service-unavailable"
    changed.clear()
    await asyncio.to_thread(server.admin, "alias", "remove", "solo@example.com")
    await asyncio.wait_for(changed.wait(), 10)
    assert "solo@example.com" not in carol.client_roster
    with pytest.raises(IqError):
        await carol.plugin["xep_0054"].get_vcard("solo@example.com")
    await logout(carol)
