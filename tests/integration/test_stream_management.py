"""Stream management (XEP-0198) as a phone meets it: slixmpp with its xep_0198
plugin over c2s, through a loopback relay that plays the mobile network (it
can drop the connection at once, or swallow it silently as a network switch
does, the server still writing into it).
"""

from __future__ import annotations

import asyncio
import contextlib
import re

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Client, RawClient, Server, async_test, login, logout
from tests.integration.test_history import CLIENT, forwarded, mam

NS = "urn:xmpp:sm:3"
RESUME_TIMEOUT = 4


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    srv = Server(tmp_path_factory.mktemp("chatgate"), sm={"resume_timeout": RESUME_TIMEOUT, "ack_every": 2})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


class Network:
    """A TCP relay between a client and the server: ``cut()`` drops the
    client's side with a reset the server sees at once; ``swallow()`` goes
    silent both ways, the server's side left open (a phone changing
    networks); ``reset_server_side()`` then lets the server see it die."""

    def __init__(self, port: int) -> None:
        self.port_to = port
        self.port = 0
        self._server: asyncio.base_events.Server | None = None
        self._links: list[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = []
        self.silent = False

    async def start(self) -> Network:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.port_to)
        link = (writer, up_writer)
        self._links.append(link)
        self.silent = False
        await asyncio.gather(self._pump(reader, up_writer, link), self._pump(up_reader, writer, link))

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, link: tuple) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                if link is self._links[-1] and not self.silent:
                    writer.write(data)
        if not (self.silent and link is self._links[-1]):
            writer.close()

    def cut(self) -> None:
        client_side, server_side = self._links[-1]
        for writer in (client_side, server_side):
            writer.transport.abort()

    def swallow(self) -> None:
        """Nothing passes any more; the client sees its connection die, the server does not."""
        self.silent = True
        self._links[-1][0].transport.abort()

    def reset_server_side(self) -> None:
        self._links[-1][1].transport.abort()

    async def close(self) -> None:
        for client_side, server_side in self._links:
            client_side.transport.abort()
            server_side.transport.abort()
        if self._server is not None:
            self._server.close()


async def phone_login(server: Server, network: Network, jid: str) -> Client:
    """A slixmpp client with stream management, through *network*; it keeps every body it gets in ``bodies``."""
    phone = Client(jid, PASSWORD)
    phone.register_plugin("xep_0198")
    phone.bodies = []
    phone.add_event_handler("message", lambda m: phone.bodies.append(m["body"]) if m["body"] else None)
    started = asyncio.get_running_loop().create_future()
    phone.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
    phone.connect("127.0.0.1", network.port)
    await asyncio.wait_for(started, 20)
    await phone.get_roster()
    phone.send_presence()
    for _ in range(100):  # until the server answered <enable/>
        if phone.plugin["xep_0198"].sm_id:
            break
        await asyncio.sleep(0.05)
    assert phone.plugin["xep_0198"].sm_id, "stream management was not enabled"
    return phone


async def reconnect(phone: Client, network: Network) -> str:
    """Connect *phone* again after its connection died: 'resumed', or 'new session'."""
    await phone.wait_closed()
    phone.gone.clear()
    outcome = asyncio.get_running_loop().create_future()
    phone.add_event_handler("session_resumed", lambda _: outcome.done() or outcome.set_result("resumed"))
    phone.add_event_handler("session_start", lambda _: outcome.done() or outcome.set_result("new session"))
    phone.connect("127.0.0.1", network.port)
    return await asyncio.wait_for(outcome, 20)


async def wait_bodies(client: Client, expected: list[str], timeout: float = 10, ordered: bool = True) -> None:
    """*client* got exactly *expected*, each once (in that order if *ordered*: messages of
    one sender keep their order, those of two senders may cross)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while sorted(client.bodies) != sorted(expected) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
    await asyncio.sleep(0.5)  # and nothing more comes (no duplicate)
    assert (client.bodies if ordered else sorted(client.bodies)) == (expected if ordered else sorted(expected))


async def phone_and_contact(server: Server, phone_jid: str, contact_jid: str) -> tuple[Network, Client, Client]:
    """A phone (stream management, through a relay) and a contact who sees it available."""
    network = await Network(server.port).start()
    phone = await phone_login(server, network, phone_jid)
    contact = await login(server, contact_jid, PASSWORD)
    await contact.wait_presence(lambda p: str(p["from"]) == phone_jid)
    return network, phone, contact


def unavailable_from(client: Client, full: str) -> list:
    return [p for p in client.presences if str(p["from"]) == full and p["type"] == "unavailable"]


@async_test(90)
async def test_network_switch_resumes_losing_and_repeating_nothing(server):
    network, phone, bob = await phone_and_contact(server, "alice@example.com/phone", "bob@example.com/desk")
    for n in (1, 2, 3):
        bob.send_message(mto="alice@example.com/phone", mbody=f"before {n}", mtype="chat")
    await wait_bodies(phone, ["before 1", "before 2", "before 3"])

    # the phone changes networks: what the server writes now goes nowhere, and it does not know
    network.swallow()
    for n in (1, 2):
        bob.send_message(mto="alice@example.com/phone", mbody=f"lost in the air {n}", mtype="chat")
    await asyncio.sleep(0.5)
    assert await reconnect(phone, network) == "resumed"
    await wait_bodies(phone, ["before 1", "before 2", "before 3", "lost in the air 1", "lost in the air 2"])

    # the connection drops and the server sees it: the session waits, messages wait with it
    network.cut()
    await asyncio.sleep(0.3)
    bob.send_message(mto="alice@example.com", mbody="while away", mtype="chat")
    await asyncio.sleep(0.3)
    assert await reconnect(phone, network) == "resumed"
    await wait_bodies(phone, ["before 1", "before 2", "before 3", "lost in the air 1", "lost in the air 2",
                              "while away"])

    # the conversation goes on, both ways, and bob never saw the phone go offline
    phone.send_message(mto="bob@example.com/desk", mbody="back", mtype="chat")
    assert (await bob.next_message())["body"] == "back"
    assert unavailable_from(bob, "alice@example.com/phone") == []
    assert "resumed alice@example.com/phone" in server.log_text()
    await logout(phone, bob)
    await network.close()


@async_test(90)
async def test_not_resumed_in_time_unacknowledged_messages_go_offline_once(server):
    network, phone, bob = await phone_and_contact(server, "carol@example.com/phone", "bob@example.com/desk2")
    network.swallow()
    for n in (1, 2):
        bob.send_message(mto="carol@example.com", mbody=f"unread {n}", mtype="chat")
    await asyncio.sleep(0.5)
    network.reset_server_side()  # the server learns the connection is dead: the session waits
    await asyncio.sleep(0.5)
    assert unavailable_from(bob, "carol@example.com/phone") == []
    # ... for resume_timeout, then it ends: contacts see it go
    await bob.wait_presence(lambda p: str(p["from"]) == "carol@example.com/phone" and p["type"] == "unavailable",
                            timeout=RESUME_TIMEOUT + 5)

    # a new login gets both from offline storage, once each, with the time they were sent
    carol = Client("carol@example.com/again", PASSWORD)
    carol.bodies, carol.delays = [], []

    def got(message) -> None:
        if message["body"]:
            carol.bodies.append(message["body"])
            carol.delays.append(message.xml.find("{urn:xmpp:delay}delay") is not None)

    carol.add_event_handler("message", got)
    started = asyncio.get_running_loop().create_future()
    carol.add_event_handler("session_start", lambda _: started.done() or started.set_result(True))
    carol.connect("127.0.0.1", server.port)
    await asyncio.wait_for(started, 20)
    carol.send_presence()
    await wait_bodies(carol, ["unread 1", "unread 2"])
    assert carol.delays == [True, True]
    assert phone.bodies == []  # the phone itself never got them

    # and the archive holds each once
    page = await mam(carol, with_jid="bob@example.com")
    archived = [forwarded(m).findtext(f"{{{CLIENT}}}body") for m in page.results]
    assert archived.count("unread 1") == 1 and archived.count("unread 2") == 1
    await logout(carol, bob)
    await network.close()


@async_test(60)
async def test_a_clean_close_ends_the_session_at_once(server):
    network, phone, bob = await phone_and_contact(server, "alice@example.com/leaving", "bob@example.com/watch")
    phone.disconnect()
    await bob.wait_presence(lambda p: str(p["from"]) == "alice@example.com/leaving" and p["type"] == "unavailable",
                            timeout=3)
    await logout(bob)
    await network.close()


# -- what a client may get wrong


async def raw_bound(server: Server, localpart: str, resource: str) -> RawClient:
    raw = await RawClient.connect(server.port)
    await raw.login(localpart, PASSWORD, resource)
    raw.received = b""
    return raw


async def raw_enabled(server: Server, localpart: str, resource: str) -> tuple[RawClient, str]:
    raw = await raw_bound(server, localpart, resource)
    raw.send(f"<enable xmlns='{NS}' resume='true'/>")
    answer = await raw.expect("<enabled")
    await raw.expect("/>")
    previd = re.search(rb"<enabled[^>]* id='([^']+)'", answer).group(1).decode()
    assert re.search(rb"<enabled[^>]* max='%d'" % RESUME_TIMEOUT, answer)
    raw.received = b""
    return raw, previd


async def raw_resume(server: Server, localpart: str, previd: str, h: int = 0) -> RawClient:
    raw = await RawClient.connect(server.port)
    await raw.starttls()
    name, _ = await raw.plain(localpart, PASSWORD)
    assert name == "success"
    await raw.open()
    assert f"<sm xmlns='{NS}'/>".encode() in raw.received
    raw.received = b""
    raw.send(f"<resume xmlns='{NS}' previd='{previd}' h='{h}'/>")
    return raw


@async_test(60)
async def test_acks_count_stanzas_and_an_ack_of_more_than_was_sent_ends_the_stream(server):
    raw, _ = await raw_enabled(server, "alice", "acks")
    raw.send(f"<r xmlns='{NS}'/>")
    await raw.expect(f"<a xmlns='{NS}' h='0'/>")
    raw.send("<iq type='get' id='p1' to='example.com'><ping xmlns='urn:xmpp:ping'/></iq>"
             "<presence/>")
    await raw.expect("id='p1'")
    raw.send(f"<r xmlns='{NS}'/>")
    await raw.expect(f"<a xmlns='{NS}' h='2'/>")
    # the server asks for acks itself ([sm] ack_every = 2 here)
    await raw.expect(f"<r xmlns='{NS}'/>")
    raw.received = b""
    raw.send(f"<a xmlns='{NS}' h='1000'/>")
    ended = await raw.read_to_end()
    assert b"<undefined-condition" in ended and b"<handled-count-too-high" in ended


@async_test(60)
async def test_resumption_is_refused_for_another_users_session_and_unknown_ids(server):
    alice, previd = await raw_enabled(server, "alice", "mine")
    thief = await raw_resume(server, "bob", previd)
    answer = await thief.expect("</failed>")
    assert b"<item-not-found" in answer
    stranger = await raw_resume(server, "alice", "no-such-session.local")
    assert b"<item-not-found" in await stranger.expect("</failed>")
    # enabling before binding, and twice, is refused without ending the stream
    early = await RawClient.connect(server.port)
    await early.starttls()
    assert (await early.plain("carol", PASSWORD))[0] == "success"
    await early.open()
    early.received = b""
    early.send(f"<enable xmlns='{NS}'/>")
    assert b"<unexpected-request" in await early.expect("</failed>")
    alice.send(f"<enable xmlns='{NS}'/>")
    assert b"<unexpected-request" in await alice.expect("</failed>")
    # alice's own session was never touched: it answers as before
    alice.received = b""
    alice.send(f"<r xmlns='{NS}'/>")
    await alice.expect(f"<a xmlns='{NS}' h='0'/>")
    for raw in (alice, thief, stranger, early):
        raw.close()


@async_test(60)
async def test_resuming_replays_what_the_client_did_not_acknowledge(server):
    raw, previd = await raw_enabled(server, "alice", "replay")
    bob = await login(server, "bob@example.com/replay", PASSWORD)
    for n in (1, 2, 3):
        bob.send_message(mto="alice@example.com/replay", mbody=f"m{n}", mtype="chat")
    await raw.expect("m3</body>")
    raw.writer.transport.abort()  # acknowledged nothing, then dropped
    await asyncio.sleep(0.3)
    again = await raw_resume(server, "alice", previd, h=1)  # it says it handled the first one
    answer = await again.read_until(lambda r: b"m3</body>" in r)
    assert re.search(rb"<resumed xmlns='%s' previd='%s' h='0'/>" % (NS.encode(), previd.encode()), answer)
    assert b"m1</body>" not in answer and answer.index(b"m2</body>") < answer.index(b"m3</body>")
    again.close()
    await logout(bob)
