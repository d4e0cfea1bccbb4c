"""XMPP over WebSocket (RFC 7395) from an independent client: the
``websockets`` package, SCRAM from ``scramp``, against a real server; the
other side of every chat is slixmpp over c2s. Then what a WebSocket client
may get wrong, judged by what the c2s user receives as much as by the
server's answers.
"""

from __future__ import annotations

import asyncio
import base64
import re
import xml.etree.ElementTree as ET

import pytest
import scramp
import websockets
from websockets.exceptions import ConnectionClosed, InvalidStatus

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, login, logout

FRAMING = "urn:ietf:params:xml:ns:xmpp-framing"
SASL = "urn:ietf:params:xml:ns:xmpp-sasl"
SM = "urn:xmpp:sm:3"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory):
    # bob may send as fast as he likes here (the flood test); the rest of [limits] as shipped
    fast = {"read_rate": 10**8, "read_burst": 10**8, "stanza_rate": 10**5, "stanza_burst": 10**5}
    srv = Server(tmp_path_factory.mktemp("chatgate"), limits={"max_stanza_size": 16384, **fast},
                 sm={"resume_timeout": 10})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


class WSClient:
    """An XMPP client over one WebSocket, driven by hand."""

    def __init__(self, socket: websockets.ClientConnection) -> None:
        self.socket = socket
        self.got: list[str] = []

    @classmethod
    async def connect(cls, server: Server, subprotocols: tuple[str, ...] = ("xmpp",), **options) -> WSClient:
        url = f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"
        socket = await websockets.connect(url, subprotocols=list(subprotocols), **options)
        return cls(socket)

    async def send(self, text: str) -> None:
        await self.socket.send(text)

    async def next(self, timeout: float = 10) -> str:
        message = await asyncio.wait_for(self.socket.recv(), timeout)
        self.got.append(message)
        return message

    async def until(self, marker: str, timeout: float = 10) -> str:
        """Messages until one holds *marker*; that one."""
        async def read() -> str:
            while True:
                message = await self.next()
                if marker in message:
                    return message
        return await asyncio.wait_for(read(), timeout)

    async def open(self, domain: str = "example.com") -> str:
        await self.send(f"<open xmlns='{FRAMING}' to='{domain}' version='1.0'/>")
        opened = await self.next()
        assert opened.startswith("<open ") and f"xmlns='{FRAMING}'" in opened, opened
        return await self.until("features")

    async def plain(self, localpart: str, password: str = PASSWORD) -> str:
        token = base64.b64encode(f"\0{localpart}\0{password}".encode()).decode()
        await self.send(f"<auth xmlns='{SASL}' mechanism='PLAIN'>{token}</auth>")
        return await self.until(SASL)

    async def scram(self, localpart: str, password: str = PASSWORD) -> str:
        client = scramp.ScramClient(["SCRAM-SHA-256"], localpart, password)
        first = base64.b64encode(client.get_client_first().encode()).decode()
        await self.send(f"<auth xmlns='{SASL}' mechanism='SCRAM-SHA-256'>{first}</auth>")
        challenge = ET.fromstring(await self.until(SASL))
        assert challenge.tag == f"{{{SASL}}}challenge", ET.tostring(challenge)
        client.set_server_first(base64.b64decode(challenge.text).decode())
        final = base64.b64encode(client.get_client_final().encode()).decode()
        await self.send(f"<response xmlns='{SASL}'>{final}</response>")
        success = await self.until(SASL)
        assert "<success" in success, success
        client.set_server_final(base64.b64decode(ET.fromstring(success).text).decode())
        return success

    async def bind(self, resource: str) -> str:
        await self.send("<iq xmlns='jabber:client' type='set' id='b1'>"
                        f"<bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'><resource>{resource}</resource></bind></iq>")
        answer = await self.until("id='b1'")
        return re.search(r"<jid>([^<]+)</jid>", answer).group(1)

    async def login(self, localpart: str, resource: str, scram: bool = False) -> str:
        await self.open()
        if scram:
            await self.scram(localpart)
        else:
            assert "<success" in await self.plain(localpart)
        features = await self.open()
        assert "xmpp-bind" in features and f"<sm xmlns='{SM}'/>" in features
        return await self.bind(resource)

    async def closed(self, timeout: float = 10) -> list[str]:
        """Everything until the server closes the WebSocket."""
        try:
            while True:
                await self.next(timeout)
        except ConnectionClosed:
            return self.got

    async def close(self) -> None:
        await self.socket.close()


def chat(to: str, body: str, extra: str = "") -> str:
    return f"<message xmlns='jabber:client' to='{to}' type='chat'{extra}><body>{body}</body></message>"


@async_test(60)
async def test_web_client_chats_with_a_c2s_user_both_ways(server):
    bob = await login(server, "bob@example.com/desk", PASSWORD)
    web = await WSClient.connect(server)
    assert web.socket.subprotocol == "xmpp"
    assert await web.login("alice", "browser", scram=True) == "alice@example.com/browser"
    await web.send("<iq xmlns='jabber:client' type='get' id='r1'><query xmlns='jabber:iq:roster'/></iq>")
    roster = await web.until("id='r1'")
    assert "bob@example.com" in roster and "carol@example.com" in roster
    await web.send("<presence xmlns='jabber:client'><show>away</show></presence>")
    seen = await bob.wait_presence(lambda p: str(p["from"]) == "alice@example.com/browser")
    assert seen["show"] == "away"
    await web.send(chat("bob@example.com", "hello from the pane"))
    got = await bob.next_message()
    assert (str(got["from"]), got["body"]) == ("alice@example.com/browser", "hello from the pane")
    bob.send_message(mto="alice@example.com/browser", mbody="hello from c2s", mtype="chat")
    message = await web.until("hello from c2s")
    assert message.startswith("<message xmlns='jabber:client'") and "from='bob@example.com/desk'" in message
    # the client closes: answered with <close/>, and bob sees it go
    await web.send(f"<close xmlns='{FRAMING}'/>")
    assert f"<close xmlns='{FRAMING}'/>" in await web.until("close")
    await bob.wait_presence(lambda p: str(p["from"]) == "alice@example.com/browser" and p["type"] == "unavailable")
    await logout(bob)


@async_test(60)
async def test_a_forged_sender_never_reaches_the_c2s_user(server):
    bob = await login(server, "bob@example.com/forged", PASSWORD)
    web = await WSClient.connect(server)
    await web.login("carol", "web")
    await web.send(chat("bob@example.com/forged", "who am i", " from='alice@example.com/desk'"))
    got = await bob.next_message()
    assert str(got["from"]) == "carol@example.com/web" and got["body"] == "who am i"
    await web.close()
    await logout(bob)


@async_test(60)
async def test_stream_management_resumes_on_a_new_websocket(server):
    bob = await login(server, "bob@example.com/sm", PASSWORD)
    web = await WSClient.connect(server)
    await web.login("alice", "tab")
    await web.send(f"<enable xmlns='{SM}' resume='true'/>")
    previd = re.search(r"id='([^']+)'", await web.until("<enabled")).group(1)
    await web.send("<presence xmlns='jabber:client'/>")
    await bob.wait_presence(lambda p: str(p["from"]) == "alice@example.com/tab")
    bob.send_message(mto="alice@example.com/tab", mbody="first", mtype="chat")
    await web.until("first")
    web.socket.transport.abort()  # the network goes, nothing acknowledged
    await asyncio.sleep(0.3)
    bob.send_message(mto="alice@example.com/tab", mbody="second", mtype="chat")
    again = await WSClient.connect(server)
    await again.open()
    assert "<success" in await again.plain("alice")
    await again.open()
    await again.send(f"<resume xmlns='{SM}' previd='{previd}' h='0'/>")
    await again.until("<resumed")
    await again.until("second")
    bodies = [m for m in again.got if "<body>" in m]
    assert [re.search(r"<body>(\w+)</body>", m).group(1) for m in bodies] == ["first", "second"]
    assert not [p for p in bob.presences if str(p["from"]) == "alice@example.com/tab" and p["type"] == "unavailable"]
    await again.close()
    await logout(bob)


# -- what a client may get wrong


@async_test(30)
async def test_the_xmpp_subprotocol_is_required(server):
    for offered in ((), ("chat",)):
        with pytest.raises(InvalidStatus) as refused:
            await WSClient.connect(server, subprotocols=offered)
        assert refused.value.response.status_code == 400


@async_test(30)
async def test_a_foreign_origin_is_refused_and_the_own_one_accepted(server):
    with pytest.raises(InvalidStatus) as refused:
        await WSClient.connect(server, origin="https://evil.example")
    assert refused.value.response.status_code == 403
    own = await WSClient.connect(server, origin=f"http://127.0.0.1:{server.http_port}")
    await own.open()
    await own.close()


@async_test(60)
async def test_bad_messages_get_the_stream_error_and_others_stay_up(server):
    bob = await login(server, "bob@example.com/watch", PASSWORD)
    cases = [
        (lambda c: c.socket.send(b"<open/>"), "unsupported-encoding"),  # a binary frame
        (lambda c: c.send("<message xmlns='jabber:client'><body>unclosed"), "not-well-formed"),
        (lambda c: c.send("<a xmlns='x'/><b xmlns='x'/>"), "not-well-formed"),
        (lambda c: c.send("<!DOCTYPE x [<!ENTITY a 'b'>]><x/>"), "not-well-formed"),
        (lambda c: c.send("<message xmlns='jabber:client'><?evil?></message>"), "restricted-xml"),
        (lambda c: c.send("text<presence xmlns='jabber:client'/>"), "bad-format"),
        (lambda c: c.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>"
                          + "A" * 20000 + "</auth>"), "policy-violation"),  # over the limit before login
    ]
    for send, condition in cases:
        web = await WSClient.connect(server)
        await web.open()
        await send(web)
        got = "".join(await web.closed())
        assert f"<{condition} xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in got, (condition, got)
        assert f"<close xmlns='{FRAMING}'/>" in got
    # a message before <open/>, and a stanza without its namespace
    early = await WSClient.connect(server)
    await early.send(chat("bob@example.com", "too early"))
    assert "<not-authorized" in "".join(await early.closed())
    # over the WebSocket's own limit after login: the stream error, then the close
    big = await WSClient.connect(server)
    await big.login("carol", "big")
    await big.send(chat("bob@example.com/watch", "x" * 40000))
    got = "".join(await big.closed())
    assert "<policy-violation" in got
    # bob heard none of it, and is still served
    await asyncio.sleep(0.3)
    assert bob.messages.empty()
    carol = await WSClient.connect(server)
    await carol.login("carol", "fine")
    await carol.send(chat("bob@example.com/watch", "still here"))
    assert (await bob.next_message())["body"] == "still here"
    await carol.close()
    await logout(bob)


@async_test(60)
async def test_fragmented_messages_are_put_together(server):
    bob = await login(server, "bob@example.com/frag", PASSWORD)
    web = await WSClient.connect(server)
    await web.login("alice", "frag")
    text = chat("bob@example.com/frag", "in three pieces")
    thirds = [text[:20], text[20:50], text[50:]]

    async def pieces():
        for piece in thirds:
            yield piece

    await web.socket.send(pieces())
    assert (await bob.next_message())["body"] == "in three pieces"
    await web.close()
    await logout(bob)


@async_test(60)
async def test_websocket_path_empty_is_not_served(tmp_path):
    off = Server(tmp_path, http={"websocket_path": ""})
    provision(off)
    off.start()
    try:
        with pytest.raises(InvalidStatus) as refused:
            await WSClient.connect(off)
        assert refused.value.response.status_code == 404
    finally:
        off.stop()


@async_test(60)
async def test_a_client_that_stops_reading_is_cut_off_and_others_go_on(server):
    bob = await login(server, "bob@example.com/flood", PASSWORD)
    errors_before = server.log_text().count("stream error policy-violation")
    cut_off = "logout alice@example.com/stuck (websocket)"
    web = await WSClient.connect(server, max_queue=1)
    await web.login("alice", "stuck")
    web.socket.transport.pause_reading()  # the tab hangs: nothing is read any more
    # 15 kB messages until the server gives up on alice: past the socket buffers and then
    # [limits] max_output_buffer (1 MiB); at most 1,000 (15 MB) and 30 s
    deadline = asyncio.get_running_loop().time() + 30
    for n in range(1000):
        bob.send_message(mto="alice@example.com/stuck", mbody=f"{n} " + "y" * 15000, mtype="chat")
        if n % 50 == 49:
            await asyncio.sleep(0.2)
            if cut_off in server.log_text():
                break
        assert asyncio.get_running_loop().time() < deadline, "the stuck client was never cut off"
    assert cut_off in server.log_text()
    assert server.log_text().count("stream error policy-violation") == errors_before + 1
    carol = await WSClient.connect(server)
    await carol.login("carol", "fine2")
    await carol.send(chat("bob@example.com/flood", "bob is still served"))
    while (await bob.next_message())["body"] != "bob is still served":
        pass
    await carol.close()
    await logout(bob)
