"""BOSH (XEP-0124/0206) over raw HTTP against twistd chatgate: the session
rules, every error case, and BOSH users chatting with c2s (slixmpp) users."""

from __future__ import annotations

import asyncio
import base64
import http.client
import re
import threading
import time
from collections.abc import Iterator

import pytest

from tests.integration.bosh_client import (
    CLIENT,
    SASL,
    BOSHClient,
    body,
    is_message,
    is_presence,
    message,
    post,
)
from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, login, logout

ORIGIN = "https://mail.example.com"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("bosh"), http={"cors_origins": ORIGIN})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def brief(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """A server whose BOSH sessions end after 2 idle seconds."""
    srv = Server(tmp_path_factory.mktemp("bosh-brief"),
                 http={"bosh_inactivity": 2, "bosh_polling": 1, "bosh_max_pause": 6})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


def create(server: Server, rid: int = 1000, **attributes) -> tuple[str, int]:
    """A fresh (unauthenticated) session: its sid and the rid it was created with."""
    attrs = {"rid": rid, "to": "example.com", "wait": 2, "hold": 1, "ver": "1.6", "xmpp_version": "1.0"}
    attrs.update(attributes)
    answer = post(server.http_port, body(**attrs))
    assert answer.get("sid"), answer.raw
    return answer.get("sid"), rid


def in_thread(fn, *args, **kwargs) -> tuple[threading.Thread, list]:
    """Run a blocking request in the background; its result lands in the list."""
    result: list = []
    thread = threading.Thread(target=lambda: result.append(fn(*args, **kwargs)), daemon=True)
    thread.start()
    return thread, result


# -- session creation and HTTP


def test_session_creation_answers_the_session_attributes(server):
    answer = post(server.http_port, body(rid=4242, to="example.com", wait=500, hold=5, ver="1.6",
                                         xmpp_version="1.0", xml_lang="en"))
    assert answer.status == 200
    assert answer.headers["content-type"] == "text/xml; charset=utf-8"
    assert "no-store" in answer.headers["cache-control"] and "no-cache" in answer.headers["cache-control"]
    assert "access-control-allow-origin" not in answer.headers  # no Origin, no CORS
    assert re.fullmatch(r"[0-9a-f]{32}", answer.get("sid"))
    xbosh = "{urn:xmpp:xbosh}"
    assert (answer.get("wait"), answer.get("hold"), answer.get("requests")) == ("120", "1", "2")
    assert (answer.get("inactivity"), answer.get("polling"), answer.get("maxpause")) == ("60", "2", "120")
    assert (answer.get("ver"), answer.get("from"), answer.get("ack")) == ("1.6", "example.com", "4242")
    assert answer.get(xbosh + "version") == "1.0" and answer.get(xbosh + "restartlogic") == "true"
    mechanisms = [m.text for m in answer.body.iter(f"{{{SASL}}}mechanism")]
    # loopback counts as encrypted (see [http] in tap-config.ini): PLAIN is offered
    assert mechanisms == ["SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN"]
    newer = post(server.http_port, body(rid=1, to="example.com", wait=30, hold=1, ver="1.99"))
    assert (newer.get("wait"), newer.get("ver")) == ("30", "1.11")


def test_cors_for_the_configured_origin_only(server):
    allowed = post(server.http_port, body(rid=1, to="example.com"), {"Origin": ORIGIN})
    assert allowed.headers["access-control-allow-origin"] == ORIGIN
    assert allowed.headers["vary"] == "Origin"
    other = post(server.http_port, body(rid=1, to="example.com"), {"Origin": "https://evil.example.net"})
    assert "access-control-allow-origin" not in other.headers
    preflight = post(server.http_port, b"", {"Origin": ORIGIN, "Access-Control-Request-Method": "POST",
                                             "Access-Control-Request-Headers": "content-type"}, method="OPTIONS")
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == ORIGIN
    assert preflight.headers["access-control-allow-methods"] == "POST, OPTIONS"
    assert preflight.headers["access-control-allow-headers"] == "Authorization, Content-Type"
    refused = post(server.http_port, b"", {"Origin": "https://evil.example.net"}, method="OPTIONS")
    assert refused.status == 204 and "access-control-allow-origin" not in refused.headers


@pytest.mark.parametrize("method", ["GET", "HEAD", "PUT", "DELETE"])
def test_other_methods_are_not_allowed(server, method):
    answer = post(server.http_port, b"", method=method)
    assert answer.status == 405
    assert answer.headers["allow"] == "POST, OPTIONS"


@pytest.mark.parametrize("content_type", ["application/json", "application/x-www-form-urlencoded",
                                          "text/xml; charset=iso-8859-1", "image/png"])
def test_wrong_content_type_is_refused(server, content_type):
    answer = post(server.http_port, body(rid=1, to="example.com"), {"Content-Type": content_type})
    assert answer.status == 415
    assert answer.condition == "bad-request"


@pytest.mark.parametrize("content_type", ["text/xml", "application/xml; charset=UTF-8", "text/plain;charset=utf-8"])
def test_xml_content_types_are_accepted(server, content_type):
    answer = post(server.http_port, body(rid=1, to="example.com"), {"Content-Type": content_type})
    assert answer.status == 200 and answer.get("sid")


def test_other_paths_are_not_found(server):
    assert post(server.http_port, b"", method="GET", path="/").status == 404
    assert post(server.http_port, body(rid=1, to="example.com"), path="/http-bind/more").status == 404
    assert post(server.http_port, body(rid=1, to="example.com"), path="/http-bind/").get("sid")


# -- errors


OVERSIZED = body("<message xmlns='jabber:client'><body>" + "x" * 270000 + "</body></message>", rid=1,
                 sid="0" * 32)


@pytest.mark.parametrize(
    "name, payload",
    [
        ("not xml", b"hello"),
        ("unclosed", b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1'>"),
        ("doctype", b"<!DOCTYPE body [<!ENTITY x 'y'>]><body xmlns='http://jabber.org/protocol/httpbind'"
                    b" rid='1' to='example.com'>&x;</body>"),
        ("comment", b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1' to='example.com'><!-- x --></body>"),
        ("processing instruction", b"<?evil x?><body xmlns='http://jabber.org/protocol/httpbind' rid='1'/>"),
        ("invalid utf-8", b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1' to='\xff'/>"),
        ("text in body", b"<body xmlns='http://jabber.org/protocol/httpbind' rid='1' to='example.com'>hi</body>"),
        ("wrong element", b"<stream xmlns='http://jabber.org/protocol/httpbind' rid='1' to='example.com'/>"),
        ("wrong namespace", b"<body xmlns='jabber:client' rid='1' to='example.com'/>"),
        ("no rid", body(to="example.com")),
        ("rid not a number", body(rid="12a", to="example.com")),
        ("rid zero", body(rid=0, to="example.com")),
        ("rid too large", body(rid=2**53, to="example.com")),
        ("wait not a number", body(rid=1, to="example.com", wait="soon")),
        ("oversized", OVERSIZED),
        ("oversized before authentication", body("<presence xmlns='jabber:client'/>" * 400, rid=1,
                                                 to="example.com")),
    ],
)
def test_malformed_or_oversized_body_gets_bad_request(server, name, payload):
    answer = post(server.http_port, payload)
    assert answer.status == 200, name
    assert (answer.get("type"), answer.condition) == ("terminate", "bad-request"), answer.raw
    assert server.alive()


def test_oversized_chunked_body_gets_bad_request(server):
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    chunks = (b"<body xmlns='http://jabber.org/protocol/httpbind'>" if i == 0 else b"x" * 65536 for i in range(8))
    connection.request("POST", "/http-bind", body=chunks, headers={"Content-Type": "text/xml"},
                       encode_chunked=True)
    response = connection.getresponse()
    assert response.status == 200
    assert b"condition=\"bad-request\"" in response.read()
    connection.close()


def test_unknown_host_and_unknown_sid(server):
    assert post(server.http_port, body(rid=1, to="nowhere.test")).condition == "host-unknown"
    assert post(server.http_port, body(rid=2, sid="f" * 32)).condition == "item-not-found"


def test_bad_rid_in_a_session_ends_it_with_bad_request(server):
    sid, rid = create(server)
    assert post(server.http_port, body(rid="x", sid=sid)).condition == "bad-request"
    assert post(server.http_port, body(rid=rid + 1, sid=sid)).condition == "item-not-found"


def test_rid_outside_the_window_ends_the_session(server):
    sid, rid = create(server)
    assert post(server.http_port, body(rid=rid + 3, sid=sid)).condition == "item-not-found"
    assert post(server.http_port, body(rid=rid + 1, sid=sid)).condition == "item-not-found"  # gone
    sid, rid = create(server)
    assert post(server.http_port, body(rid=rid - 5, sid=sid)).condition == "item-not-found"  # never seen


def test_too_many_simultaneous_requests_get_policy_violation(server):
    sid, rid = create(server)
    held, held_answer = in_thread(post, server.http_port, body(rid=rid + 1, sid=sid))
    time.sleep(0.3)
    # rid + 3 arrives ahead of rid + 2 and waits for it, unprocessed
    early, early_answer = in_thread(post, server.http_port,
                                    body(message("bob@example.com", "early"), rid=rid + 3, sid=sid))
    time.sleep(0.3)
    third = post(server.http_port, body(message("bob@example.com", "third"), rid=rid + 2, sid=sid))
    assert third.condition == "policy-violation"
    held.join(10)
    early.join(10)
    assert held_answer[0].status == 200 and not held_answer[0].payloads
    assert early_answer[0].condition == "policy-violation"
    assert post(server.http_port, body(rid=rid + 4, sid=sid)).condition == "item-not-found"


def test_empty_requests_too_often_get_policy_violation(server):
    sid, rid = create(server)
    held, held_answer = in_thread(post, server.http_port, body(rid=rid + 1, sid=sid))
    time.sleep(0.2)
    # a second empty request while the first is held, sooner than 'polling' (XEP-0124 §11)
    assert post(server.http_port, body(rid=rid + 2, sid=sid)).condition == "policy-violation"
    held.join(10)


def test_polling_session_polls_too_often(server):
    sid, rid = create(server, hold=0)
    assert post(server.http_port, body(rid=rid + 1, sid=sid)).get("type") is None  # answered at once, empty
    assert post(server.http_port, body(rid=rid + 2, sid=sid)).condition == "policy-violation"  # §12


def test_stanza_before_authentication_is_a_stream_error(server):
    sid, rid = create(server)
    answer = post(server.http_port, body(message("bob@example.com", "hi"), rid=rid + 1, sid=sid))
    assert answer.condition == "remote-stream-error"
    assert answer.stream_error() == "not-authorized"


def test_unencrypted_session_is_refused(server):
    """A proxy on this host saying its client used plain HTTP: [xmpp] require_encryption refuses.
    (No [http] trusted_proxies here: the client's address is the proxy's, whatever X-Forwarded-For says.)"""
    answer = post(server.http_port, body(rid=1, to="example.com", wait=5, hold=1),
                  {"X-Forwarded-Proto": "http", "X-Forwarded-For": "192.0.2.7"})
    assert answer.condition == "remote-stream-error"
    assert answer.stream_error() == "policy-violation"
    assert "refused unencrypted BOSH session from 127.0.0.1:" in server.log_text()
    assert "192.0.2.7" not in server.log_text()
    forwarded_https = post(server.http_port, body(rid=1, to="example.com"), {"X-Forwarded-Proto": "https"})
    assert forwarded_https.get("sid")


def test_wrong_password_then_right_one(server):
    client = BOSHClient(server.http_port, wait=5)
    client.create()
    token = "AGFsaWNlAHdyb25n"  # \0alice\0wrong
    failed = client.request(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    assert failed.body.find(f"{{{SASL}}}failure/{{{SASL}}}not-authorized") is not None, failed.raw
    token = base64.b64encode(f"\0alice\0{PASSWORD}".encode()).decode()
    ok = client.request(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
    assert ok.body.find(f"{{{SASL}}}success") is not None, ok.raw
    restart_with_payload = client.request(message("bob@example.com", "hi"), xmpp_restart="true")
    assert restart_with_payload.condition == "bad-request"


# -- the session rules


def test_held_request_gets_an_empty_answer_after_wait(server):
    client = BOSHClient(server.http_port, wait=1)
    client.login("carol", PASSWORD, resource="wait", presence=False, poll=False)
    started = time.monotonic()
    answer = client.request()
    assert answer.status == 200 and not answer.terminated and not answer.payloads
    assert time.monotonic() - started >= 0.5  # it was held, not answered at once
    client.close()


def test_repeated_rid_gets_the_same_answer(server):
    client = BOSHClient(server.http_port, wait=2)
    client.login("carol", PASSWORD, mechanism="SCRAM-SHA-1", resource="replay", presence=False, poll=False)
    roster = client.request(f"<iq xmlns='{CLIENT}' type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
    items = [item.get("jid") for item in roster.body.iter("{jabber:iq:roster}item")]
    assert items == ["alice@example.com", "bob@example.com"]
    rid = client.rid
    again = post(server.http_port, body(f"<iq xmlns='{CLIENT}' type='get' id='r1'>"
                                        "<query xmlns='jabber:iq:roster'/></iq>", rid=rid, sid=client.sid))
    assert again.raw == roster.raw  # the cached answer, and the iq was not processed twice
    client.request(f"<iq xmlns='{CLIENT}' type='get' id='p1'><ping xmlns='urn:xmpp:ping'/></iq>")
    client.request(f"<iq xmlns='{CLIENT}' type='get' id='p2'><ping xmlns='urn:xmpp:ping'/></iq>")
    # only the last 'requests' answers are kept (XEP-0124 §14.3)
    assert post(server.http_port, body(rid=rid, sid=client.sid)).condition == "item-not-found"


@async_test()
async def test_out_of_order_requests_are_processed_in_rid_order(server):
    bob = await login(server, "bob@example.com/order", PASSWORD)
    alice = BOSHClient(server.http_port, wait=2)
    await asyncio.to_thread(alice.login, "alice", PASSWORD, resource="order", presence=False, poll=False)
    rid = alice.rid
    later, later_answer = in_thread(post, server.http_port,
                                    body(message("bob@example.com", "second"), rid=rid + 2, sid=alice.sid))
    await asyncio.sleep(0.5)  # rid + 2 waits at the server for rid + 1
    first = await asyncio.to_thread(post, server.http_port,
                                    body(message("bob@example.com", "first"), rid=rid + 1, sid=alice.sid))
    assert [(await bob.next_message())["body"] for _ in range(2)] == ["first", "second"]
    # rid + 1 was answered when rid + 2 was processed, acknowledging it (§9.1)
    assert first.get("ack") == str(rid + 2) and not first.terminated
    await asyncio.to_thread(later.join, 10)
    assert later_answer[0].status == 200 and later_answer[0].get("ack") is None
    await logout(bob)
    await asyncio.to_thread(alice.close)


@async_test()
async def test_bosh_user_chats_with_c2s_user_and_terminates(server):
    bob = await login(server, "bob@example.com/desk", PASSWORD)
    alice = BOSHClient(server.http_port, wait=10)
    jid = await asyncio.to_thread(alice.login, "alice", PASSWORD, "SCRAM-SHA-256", "web")
    assert jid == "alice@example.com/web"
    await bob.wait_presence(lambda p: p["from"] == jid)
    await asyncio.to_thread(alice.wait_for, is_presence("bob@example.com/desk"))
    alice.send(message("bob@example.com", "hello from the webmail"))
    received = await bob.next_message()
    assert (received["body"], str(received["from"])) == ("hello from the webmail", jid)
    bob.send_message(mto=jid, mbody="hello from the desk", mtype="chat")
    await asyncio.to_thread(alice.wait_for, is_message("hello from the desk", "bob@example.com/desk"))
    ended = await asyncio.to_thread(alice.terminate)
    assert ended.get("type") == "terminate" and ended.condition is None
    await bob.wait_presence(lambda p: p["from"] == jid and p["type"] == "unavailable")
    assert post(server.http_port, body(rid=alice.rid + 1, sid=alice.sid)).condition == "item-not-found"
    await logout(bob)


@async_test()
async def test_same_user_on_bosh_and_c2s_with_independent_presence(server):
    bob = await login(server, "bob@example.com/watch", PASSWORD)
    desk = await login(server, "alice@example.com/desk", PASSWORD)
    web = BOSHClient(server.http_port, wait=10)
    await asyncio.to_thread(web.login, "alice", PASSWORD, resource="web")
    await bob.wait_presence(lambda p: p["from"] == "alice@example.com/web")
    await desk.wait_presence(lambda p: p["from"] == "alice@example.com/web")
    await asyncio.to_thread(web.wait_for, is_presence("alice@example.com/desk"))

    web.send(f"<presence xmlns='{CLIENT}'><show>dnd</show><status>in a call</status></presence>")
    await bob.wait_presence(lambda p: p["from"] == "alice@example.com/web" and p["show"] == "dnd")
    assert not any(p["from"] == "alice@example.com/desk" and p["show"] == "dnd" for p in bob.presences)

    bob.send_message(mto="alice@example.com", mbody="to both", mtype="chat")
    assert (await desk.next_message())["body"] == "to both"
    await asyncio.to_thread(web.wait_for, is_message("to both"))
    bob.send_message(mto="alice@example.com/web", mbody="to the web only", mtype="chat")
    await asyncio.to_thread(web.wait_for, is_message("to the web only"))

    bob.presences.clear()
    await asyncio.to_thread(web.terminate)
    await bob.wait_presence(lambda p: p["from"] == "alice@example.com/web" and p["type"] == "unavailable")
    assert not any(p["from"] == "alice@example.com/desk" for p in bob.presences)  # the desk stays available
    bob.send_message(mto="alice@example.com", mbody="still at the desk?", mtype="chat")
    assert (await desk.next_message())["body"] == "still at the desk?"
    assert desk.messages.empty()
    await logout(bob, desk)


@async_test()
async def test_login_elsewhere_on_the_same_resource_ends_the_bosh_session(server):
    web = BOSHClient(server.http_port, wait=10)
    await asyncio.to_thread(web.login, "carol", PASSWORD, resource="shared")
    desk = await login(server, "carol@example.com/shared", PASSWORD)
    ended = await asyncio.to_thread(web.wait_ended)
    assert ended.condition == "remote-stream-error"
    assert ended.stream_error() == "conflict"
    await logout(desk)
    await asyncio.to_thread(web.stop_polling)


def test_server_is_fine_after_all_that(server):
    client = BOSHClient(server.http_port, wait=2)
    assert client.login("alice", PASSWORD, resource="last", presence=False) == "alice@example.com/last"
    client.close()
    assert server.alive()
    assert "Traceback" not in server.log_text()


# -- inactivity and pause


@async_test()
async def test_inactivity_ends_the_session_and_sends_unavailable(brief):
    bob = await login(brief, "bob@example.com/watch", PASSWORD)
    alice = BOSHClient(brief.http_port, wait=1)
    await asyncio.to_thread(alice.login, "alice", PASSWORD, resource="gone")
    await bob.wait_presence(lambda p: p["from"] == "alice@example.com/gone")
    await asyncio.to_thread(alice.stop_polling)  # the browser tab is closed: no more requests
    await bob.wait_presence(lambda p: p["from"] == "alice@example.com/gone" and p["type"] == "unavailable")
    assert post(brief.http_port, body(rid=alice.rid + 1, sid=alice.sid)).condition == "item-not-found"
    await logout(bob)


def test_pause_lengthens_inactivity_once(brief):
    client = BOSHClient(brief.http_port, wait=1)
    client.login("carol", PASSWORD, resource="pause", presence=False, poll=False)
    paused = client.request(pause=5)
    assert paused.status == 200 and not paused.terminated and not paused.payloads
    time.sleep(3.5)  # longer than the inactivity of 2 s, shorter than the pause
    assert not client.request().terminated
    time.sleep(3.5)  # the pause was for once: inactivity is 2 s again
    assert client.request().condition == "item-not-found"
