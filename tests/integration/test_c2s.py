"""Users on real XMPP clients (slixmpp) over real sockets, against twistd chatgate."""

from __future__ import annotations

import asyncio

import pytest
from slixmpp.exceptions import IqError

from tests.integration.conftest import PASSWORD
from tests.integration.harness import LoginFailed, async_test, login, logout


@pytest.mark.parametrize("mechanism", ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"])
@async_test()
async def test_login_with_each_mechanism_over_tls(server, mechanism):
    client = await login(server, "alice@example.com/desk", PASSWORD, mechanism=mechanism, presence=False)
    assert str(client.boundjid) == "alice@example.com/desk"
    assert client.transport.get_extra_info("ssl_object") is not None  # STARTTLS happened
    await logout(client)
    assert f"login alice@example.com via {mechanism}" in server.log_text()


@async_test()
async def test_wrong_password_and_unknown_user_are_refused_alike(server):
    for jid in ("alice@example.com", "nobody@example.com"):
        with pytest.raises(LoginFailed):
            await login(server, jid, "wrong password", mechanism="SCRAM-SHA-256")
    log = server.log_text()
    assert log.count("refused login to example.com") >= 2
    assert "not-authorized" in log
    assert "wrong password" not in log and PASSWORD not in log


@async_test()
async def test_server_made_resource(server):
    client = await login(server, "carol@example.com", PASSWORD, presence=False)
    assert client.boundjid.resource.startswith("chatgate-")
    await logout(client)


@async_test()
async def test_roster_is_the_domain(server):
    client = await login(server, "alice@example.com/roster", PASSWORD, presence=False)
    roster = client.client_roster
    assert sorted(roster.keys()) == ["bob@example.com", "carol@example.com"]
    bob = roster["bob@example.com"]
    assert bob["name"] == "Bob Baker"
    assert bob["subscription"] == "both"
    assert bob["groups"] == ["example.com"]
    with pytest.raises(IqError) as refused:
        await client.update_roster("dave@other.org", name="Dave")
    assert refused.value.condition == "not-allowed"
    await logout(client)


@async_test()
async def test_roster_push_when_admin_adds_and_removes_a_user(server):
    client = await login(server, "bob@example.com/push", PASSWORD, presence=False)
    changed = asyncio.Event()
    client.add_event_handler("roster_update", lambda _: changed.set())
    await asyncio.to_thread(server.admin, "user", "add", "frank@example.com", "--name", "Frank Ford",
                            "--password-stdin", stdin=PASSWORD + "\n")
    await asyncio.wait_for(changed.wait(), 10)
    assert client.client_roster["frank@example.com"]["name"] == "Frank Ford"
    # a roster asked for again (the server keeps it serialized) has him too
    fresh = await client.get_roster()
    assert "frank@example.com" in [item["jid"].bare for item in fresh["roster"]]
    frank = await login(server, "frank@example.com/x", PASSWORD)
    changed.clear()
    await asyncio.to_thread(server.admin, "user", "remove", "frank@example.com")
    await asyncio.wait_for(changed.wait(), 10)
    assert "frank@example.com" not in client.client_roster
    fresh = await client.get_roster()
    assert "frank@example.com" not in [item["jid"].bare for item in fresh["roster"]]
    await frank.wait_closed()
    await logout(client)


@async_test()
async def test_presence_per_resource_and_chat_both_ways(server):
    alice_desk = await login(server, "alice@example.com/desk", PASSWORD)
    alice_phone = await login(server, "alice@example.com/phone", PASSWORD)
    bob = await login(server, "bob@example.com/laptop", PASSWORD)

    # bob sees both of alice's resources, and alice's resources see each other and bob
    await bob.wait_presence(lambda p: p["from"] == "alice@example.com/desk")
    await bob.wait_presence(lambda p: p["from"] == "alice@example.com/phone")
    await alice_desk.wait_presence(lambda p: p["from"] == "alice@example.com/phone")
    await alice_phone.wait_presence(lambda p: p["from"] == "bob@example.com/laptop")

    # statuses
    alice_phone.send_presence(pshow="dnd", pstatus="in a meeting")
    busy = await bob.wait_presence(lambda p: p["from"] == "alice@example.com/phone" and p["show"] == "dnd")
    assert busy["status"] == "in a meeting"
    alice_desk.send_presence(pshow="away")
    await bob.wait_presence(lambda p: p["from"] == "alice@example.com/desk" and p["show"] == "away")

    # chat both ways: a bare JID reaches both of alice's resources
    bob.send_message(mto="alice@example.com", mbody="hello alice", mtype="chat")
    for client in (alice_desk, alice_phone):
        msg = await client.next_message()
        assert msg["body"] == "hello alice"
        assert msg["from"] == "bob@example.com/laptop"
    alice_desk.send_message(mto="bob@example.com/laptop", mbody="hi bob", mtype="chat")
    reply = await bob.next_message()
    assert (reply["body"], str(reply["from"])) == ("hi bob", "alice@example.com/desk")

    # one resource going offline leaves the other available
    bob.presences.clear()
    await logout(alice_phone)
    await bob.wait_presence(lambda p: p["from"] == "alice@example.com/phone" and p["type"] == "unavailable")
    assert not any(p["from"] == "alice@example.com/desk" and p["type"] == "unavailable" for p in bob.presences)
    bob.send_message(mto="alice@example.com", mbody="still there?", mtype="chat")
    assert (await alice_desk.next_message())["body"] == "still there?"
    await logout(alice_desk, bob)


@async_test()
async def test_unclean_disconnect_sends_unavailable(server):
    bob = await login(server, "bob@example.com/watch", PASSWORD)
    carol = await login(server, "carol@example.com/flaky", PASSWORD)
    await bob.wait_presence(lambda p: p["from"] == "carol@example.com/flaky")
    carol.transport.abort()  # no closing tag, the TCP connection just drops
    await bob.wait_presence(lambda p: p["from"] == "carol@example.com/flaky" and p["type"] == "unavailable")
    await logout(bob)


@async_test()
async def test_same_resource_login_replaces_old_session(server):
    first = await login(server, "carol@example.com/same", PASSWORD)
    second = await login(server, "carol@example.com/same", PASSWORD)
    await first.wait_closed()
    assert "conflict" in first.stream_errors
    second.send_message(mto="carol@example.com/same", mbody="me again", mtype="chat")
    assert (await second.next_message())["body"] == "me again"
    await logout(second)


@async_test()
async def test_offline_user_and_other_domains_are_unreachable(server):
    alice = await login(server, "alice@example.com/sealed", PASSWORD)
    dave = await login(server, "dave@other.org/x", PASSWORD)

    async def error_for(to: str) -> str:
        alice.send_message(mto=to, mbody="anyone?", mtype="chat")
        msg = await alice.next_message()
        assert msg["type"] == "error"
        return msg["error"]["condition"]

    assert await error_for("dave@other.org") == "service-unavailable"
    assert await error_for("nobody@example.com") == "service-unavailable"
    # carol, offline, gets hers later: tests/integration/test_history.py
    assert "dave@other.org" not in alice.client_roster
    with pytest.raises(asyncio.TimeoutError):
        await dave.next_message(timeout=1)
    await logout(alice, dave)


@async_test()
async def test_disabled_domain_refuses_login_and_enable_restores(server):
    with pytest.raises(LoginFailed):
        await login(server, "erin@closed.net", PASSWORD)
    assert "account-disabled" in server.log_text()
    await asyncio.to_thread(server.admin, "domain", "enable", "closed.net")
    await asyncio.sleep(1)  # the service follows the store's change feed
    erin = await login(server, "erin@closed.net/a", PASSWORD)
    await asyncio.to_thread(server.admin, "domain", "disable", "closed.net")
    await erin.wait_closed()
    assert "policy-violation" in erin.stream_errors


@async_test()
async def test_disco_version_ping_vcard(server):
    alice = await login(server, "alice@example.com/features", PASSWORD)
    info = await alice.plugin["xep_0030"].get_info(jid="example.com")
    features = info["disco_info"]["features"]
    assert "urn:xmpp:ping" in features and "jabber:iq:version" in features
    assert ("server", "im", None, "chatgate") in info["disco_info"]["identities"]
    account = await alice.plugin["xep_0030"].get_info(jid="bob@example.com")
    assert ("account", "registered", None, None) in account["disco_info"]["identities"]
    version = await alice.plugin["xep_0092"].get_version("example.com")
    assert version["software_version"]["name"] == "chatgate"
    assert await alice.plugin["xep_0199"].ping("example.com", timeout=5) >= 0

    card = await alice.plugin["xep_0054"].get_vcard("bob@example.com")
    assert card["vcard_temp"]["FN"] == "Bob Baker"
    vcard = alice.plugin["xep_0054"].make_vcard()
    vcard["FN"] = "Alice A. Archer"
    vcard["NICKNAME"] = "ali"
    await alice.plugin["xep_0054"].publish_vcard(vcard)
    mine = await alice.plugin["xep_0054"].get_vcard("alice@example.com")
    assert (mine["vcard_temp"]["FN"], mine["vcard_temp"]["NICKNAME"]) == ("Alice A. Archer", ["ali"])
    with pytest.raises(IqError) as refused:
        await alice.make_iq_set(vcard, ito="bob@example.com").send()
    assert refused.value.condition == "forbidden"
    await logout(alice)
