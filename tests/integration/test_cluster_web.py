"""BOSH and the chat pane behind a load balancer with no sticky sessions, in
front of two chatgate nodes sharing Redis: every HTTP request goes to the next
node in turn, and users must not notice.

- The BOSH test client sending each request to the next node's port (session
  creation on node1, then SASL, bind, presence, polls and messages alternating):
  chat both ways with a slixmpp user on each node, presence, a clean end.
- A session whose node was killed (``kill -9``): the surviving node answers a
  request for it with a terminal ``item-not-found`` within a bounded time, and
  the client starts again there.
- The real pane in Chromium through a small round-robin HTTP proxy written
  here (tests/integration/test_pane.py drives the pane): sign-in, a contact on
  the other node coming online, a message each way; the proxy counts the BOSH
  requests each node served, so the test knows they alternated.
"""

from __future__ import annotations

import asyncio
import http.client
import http.server
import itertools
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.integration.bosh_client import BOSHClient, body, is_message, is_presence, message, post
from tests.integration.cluster import DEAD_AFTER, Cluster
from tests.integration.conftest import PASSWORD
from tests.integration.harness import async_test, login, logout
from tests.integration.test_cluster import ARRIVES, available, received, unavailable
from tests.integration.test_pane import SECRET, _missing, next_body, pane, since, wait_presence

#: the nodes' longest BOSH wait: a held request is answered within this many seconds
MAX_WAIT = 10

USERS = [
    *(f"{u}@rr.example" for u in ("alice", "bob", "carol")),
    *(f"{u}@pane.example" for u in ("alice", "bob")),
]

SECTIONS: dict[str, dict[str, Any]] = {
    "webmail": {"token_secret": SECRET},
    "http": {"bosh_max_wait": MAX_WAIT},
}


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """Two nodes for the tests that leave them running; each test has its own domain."""
    shared = Cluster(tmp_path_factory.mktemp("cluster-web"), **SECTIONS)
    shared.add_users(PASSWORD, *USERS)
    shared.start()
    yield shared
    shared.stop()


class RoundRobinBOSH(BOSHClient):
    """The BOSH test client behind a load balancer without sticky sessions: each
    HTTP request goes to the next of *ports* (the first, session creation, to the
    first port). ``served`` counts the requests each port was sent."""

    def __init__(self, ports: list[int], **options: Any) -> None:
        self.ports = list(ports)
        self.served: Counter[int] = Counter()
        self.failed: list[OSError] = []
        self._turn = itertools.count()
        self._lock = threading.Lock()
        super().__init__(self.ports[0], **options)

    @property  # type: ignore[override]
    def port(self) -> int:
        """The port of the next request (``create`` and every request read it once)."""
        with self._lock:
            chosen = self.ports[next(self._turn) % len(self.ports)]
            self.served[chosen] += 1
            return chosen

    @port.setter
    def port(self, _: int) -> None:
        pass  # BOSHClient's one port; the rotation stands for it

    def send(self, payload: str, **attributes: Any) -> threading.Thread:
        """As BOSHClient's, but a request to a node that died on it is a network error the
        client lives with (a browser's request failing), kept in ``failed``, not a thread's crash."""
        def request() -> None:
            try:
                self.request(payload, **attributes)
            except OSError as e:
                self.failed.append(e)

        thread = threading.Thread(target=request, daemon=True)
        thread.start()
        return thread


async def bosh_login(ports: list[int], user: str, domain: str, resource: str = "web") -> RoundRobinBOSH:
    web = RoundRobinBOSH(ports, domain=domain, wait=5)
    await asyncio.to_thread(web.login, user, PASSWORD, resource=resource)
    return web


async def web_sees(web: BOSHClient, predicate, timeout: float = ARRIVES) -> None:
    await asyncio.to_thread(web.wait_for, predicate, timeout)


def bodies_received(web: BOSHClient, text: str) -> int:
    return sum(1 for stanza in list(web.stanzas) if is_message(text)(stanza))


# -- the BOSH test client, round robin


@async_test(timeout=60)
async def test_a_bosh_user_whose_requests_alternate_between_nodes_chats_with_users_on_both(cluster):
    node1, node2 = cluster.nodes
    d = "rr.example"
    alice = await login(node1, f"alice@{d}/desk", PASSWORD)
    bob = await login(node2, f"bob@{d}/laptop", PASSWORD)
    web = await bosh_login([node1.http_port, node2.http_port], "carol", d)
    try:
        assert web.sid is not None and web.sid.endswith(".node1"), web.sid  # created on node1
        # presence: both see the webmail user, the webmail user sees both
        await alice.wait_presence(available(f"carol@{d}/web"), ARRIVES)
        await bob.wait_presence(available(f"carol@{d}/web"), ARRIVES)
        await web_sees(web, is_presence(f"alice@{d}/desk"))
        await web_sees(web, is_presence(f"bob@{d}/laptop"))
        # chat both ways with each
        web.send(message(f"alice@{d}", "to alice on node1"))
        await received(alice, "to alice on node1", f"carol@{d}/web")
        web.send(message(f"bob@{d}", "to bob on node2"))
        await received(bob, "to bob on node2", f"carol@{d}/web")
        alice.send_message(mto=f"carol@{d}", mbody="from alice on node1", mtype="chat")
        bob.send_message(mto=f"carol@{d}", mbody="from bob on node2", mtype="chat")
        await web_sees(web, is_message("from alice on node1", f"alice@{d}/desk"))
        await web_sees(web, is_message("from bob on node2", f"bob@{d}/laptop"))
        # a few more each way, in order and once
        for n in range(4):
            web.send(message(f"bob@{d}", f"line {n}"))
            await received(bob, f"line {n}", f"carol@{d}/web")
            alice.send_message(mto=f"carol@{d}", mbody=f"reply {n}", mtype="chat")
            await web_sees(web, is_message(f"reply {n}", f"alice@{d}/desk"))
        # a presence change of bob (node2) reaches the webmail user
        bob.send_presence(pshow="away", pstatus="coffee")
        await web_sees(web, is_presence(f"bob@{d}/laptop", show="away"))
        await asyncio.sleep(0.5)  # anything arriving twice is here by now
        for text in ("from alice on node1", "from bob on node2", *(f"reply {n}" for n in range(4))):
            assert bodies_received(web, text) == 1, (text, bodies_received(web, text))
        assert web.ended is None and web.failed == [], (web.ended and web.ended.raw, web.failed)

        # both nodes took a fair share of the session's requests
        assert web.served[node1.http_port] >= 5 and web.served[node2.http_port] >= 5, web.served
        # a clean end: the terminate answer, and both users see the webmail user go
        ended = await asyncio.to_thread(web.terminate)
        assert ended.terminated and ended.condition is None, ended.raw
        await alice.wait_presence(unavailable(f"carol@{d}/web"), ARRIVES)
        await bob.wait_presence(unavailable(f"carol@{d}/web"), ARRIVES)
        # the sid is gone on both nodes
        for node in (node1, node2):
            web.rid += 1
            gone = await asyncio.to_thread(post, node.http_port, body(rid=web.rid, sid=web.sid))
            assert (gone.terminated, gone.condition) == (True, "item-not-found"), (node.folder.name, gone.raw)
    finally:
        await asyncio.to_thread(web.close)
        await logout(alice, bob)


@async_test(timeout=90)
async def test_a_session_on_a_killed_node_is_item_not_found_on_the_survivor_and_starts_again(tmp_path):
    d = "killed.example"
    cluster = Cluster(tmp_path, **SECTIONS)
    await asyncio.to_thread(cluster.add_users, PASSWORD, f"alice@{d}", f"carol@{d}")
    await asyncio.to_thread(cluster.start)
    try:
        node1, node2 = cluster.nodes
        alice = await login(node2, f"alice@{d}/desk", PASSWORD)
        web = await bosh_login([node1.http_port, node2.http_port], "carol", d)
        assert web.sid is not None and web.sid.endswith(".node1"), web.sid
        await alice.wait_presence(available(f"carol@{d}/web"), ARRIVES)
        web.send(message(f"alice@{d}", "before the kill"))
        await received(alice, "before the kill", f"carol@{d}/web")

        killed = time.monotonic()
        await asyncio.to_thread(cluster.kill, node1)
        web.ports = [node2.http_port]  # the load balancer takes node1 out of the rotation

        # right after the kill (node1 not declared dead yet): answered when node2 sees it dead
        web.rid += 10  # past whatever the poller had in flight
        first = await asyncio.to_thread(post, node2.http_port, body(rid=web.rid, sid=web.sid), timeout=30)
        first_after = time.monotonic() - killed
        assert (first.status, first.terminated, first.condition) == (200, True, "item-not-found"), first.raw
        assert first_after < DEAD_AFTER + 3, f"item-not-found {first_after:.1f}s after the kill"
        # once node1 is known dead: at once
        asked = time.monotonic()
        web.rid += 1
        second = await asyncio.to_thread(post, node2.http_port, body(rid=web.rid, sid=web.sid), timeout=30)
        assert (second.terminated, second.condition) == (True, "item-not-found"), second.raw
        assert time.monotonic() - asked < 1, time.monotonic() - asked
        await alice.wait_presence(unavailable(f"carol@{d}/web"), DEAD_AFTER + 2)
        await asyncio.to_thread(web.close)

        # the client starts again, on the survivor, same resource: it works both ways
        mark = since(alice)
        again = await bosh_login([node2.http_port], "carol", d)
        try:
            assert again.sid is not None and again.sid.endswith(".node2"), again.sid
            await wait_presence(alice, mark, available(f"carol@{d}/web"), ARRIVES)
            again.send(message(f"alice@{d}", "started again"))
            await received(alice, "started again", f"carol@{d}/web")
            alice.send_message(mto=f"carol@{d}", mbody="welcome back", mtype="chat")
            await web_sees(again, is_message("welcome back", f"alice@{d}/desk"))
        finally:
            await asyncio.to_thread(again.close)
        print(f"item-not-found from the survivor {first_after:.2f}s after the kill")
        await logout(alice)
    finally:
        await asyncio.to_thread(cluster.stop)


# -- the pane in Chromium behind a round-robin proxy

#: headers that concern one connection, not the request (RFC 9110 §7.6.1), and those the proxy sets itself
HOP_BY_HOP = {"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade",
              "content-length", "server", "date"}


class RoundRobinProxy:
    """A reverse proxy on 127.0.0.1 sending each HTTP request (method, path,
    headers, body) to the next of *ports*, as a load balancer without sticky
    sessions: one rotation for BOSH (``/http-bind``), another for the rest (the
    pane's files, /history, /chat/token), as two balancer backends would.
    One request per connection (HTTP/1.0, no keep-alive); a BOSH long-poll is
    one request like any other, waited for as long as the nodes may hold it.
    ``bosh`` counts the BOSH requests each port served."""

    def __init__(self, ports: list[int], timeout: float) -> None:
        self.ports = ports
        self.timeout = timeout
        self.bosh: Counter[int] = Counter()
        self.other: Counter[int] = Counter()
        self._turns = {"bosh": itertools.count(), "other": itertools.count()}
        self._lock = threading.Lock()
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: object) -> None:
                pass

            def forward(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                data = self.rfile.read(length) if length else None
                port = outer.next_port(self.path)
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                if data is not None:
                    headers["Content-Length"] = str(len(data))
                upstream = http.client.HTTPConnection("127.0.0.1", port, timeout=outer.timeout)
                try:
                    upstream.request(self.command, self.path, body=data, headers=headers)
                    answer = upstream.getresponse()
                    payload = answer.read()
                except OSError as e:
                    self.send_error(502, f"node on port {port}: {e}")
                    return
                finally:
                    upstream.close()
                try:
                    self.send_response(answer.status, answer.reason)
                    for name, value in answer.getheaders():
                        if name.lower() not in HOP_BY_HOP:
                            self.send_header(name, value)
                    self.send_header("Content-Length", str(len(payload)))
                    self.send_header("Connection", "close")
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                except OSError:
                    pass  # the browser went away (closed with a long-poll open)

            do_GET = do_POST = do_HEAD = do_OPTIONS = do_PUT = do_DELETE = forward

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        #: what the pane is told is "the server" (tests/integration/test_pane.py's Pane reads these)
        self.http_port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.log_text = lambda: ""

    def next_port(self, path: str) -> int:
        kind = "bosh" if path.split("?", 1)[0].startswith("/http-bind") else "other"
        with self._lock:
            port = self.ports[next(self._turns[kind]) % len(self.ports)]
            (self.bosh if kind == "bosh" else self.other)[port] += 1
        return port

    def __enter__(self) -> RoundRobinProxy:
        self.thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def chromium() -> None:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@async_test(timeout=90)
async def test_the_pane_through_a_round_robin_proxy_chats_with_a_user_on_the_other_node(cluster, chromium):
    node1, node2 = cluster.nodes
    d = "pane.example"
    with RoundRobinProxy([node1.http_port, node2.http_port], timeout=MAX_WAIT + 30) as proxy:
        proxy.log_text = lambda: cluster.logs(3000)  # what the pane helper prints on a failure
        async with pane(proxy, "cluster-round-robin") as view:  # type: ignore[arg-type]
            await view.sign_in_with_token(f"alice@{d}")
            # the first BOSH request (the session's creation) went to node1: it holds the session
            sid = await view.page.evaluate("chatgate.client.connection._proto.sid")
            assert sid.endswith(".node1"), sid
            await view.wait_status(f"bob@{d}", "offline")
            # bob logs in on node2: the pane (whichever node holds its session) shows him online
            bob = await login(node2, f"bob@{d}/desk", PASSWORD)
            try:
                await view.wait_status(f"bob@{d}", "available")
                await bob.wait_presence(lambda p: str(p["from"]).startswith(f"alice@{d}/")
                                        and p["type"] != "unavailable", ARRIVES)
                await view.open_chat(f"bob@{d}")
                await view.send("hello from the pane")
                got = await next_body(bob)
                assert (got["body"], got["from"].bare) == ("hello from the pane", f"alice@{d}"), got
                bob.send_message(mto=f"alice@{d}", mbody="hello from node2", mtype="chat")
                await view.wait_body(f"bob@{d}", "hello from node2", outgoing=False)
                await view.send("and once more")
                assert (await next_body(bob))["body"] == "and once more"
                await view.page.wait_for_timeout(500)  # a second copy would show by now
                shown = await view.bodies(f"bob@{d}")
                assert shown == ["hello from the pane", "hello from node2", "and once more"], shown
                assert await view.page.evaluate("chatgate.client.state") == "online"
            finally:
                await logout(bob)
        # the proxy really alternated: both nodes served the pane's BOSH requests
        ports = (node1.http_port, node2.http_port)
        assert all(proxy.bosh[port] >= 3 for port in ports), (proxy.bosh, proxy.other)
        print(f"BOSH requests served: node1 {proxy.bosh[ports[0]]}, node2 {proxy.bosh[ports[1]]}")
