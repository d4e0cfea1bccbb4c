"""The webmail chat pane in a real browser: Debian's Chromium, headless,
driven by playwright, against a running chatgate, with slixmpp users on the
other side.

Covered: sign-in with a webmail token and with the password form (the
password stored nowhere); the transport: XMPP over WebSocket first, BOSH
when the WebSocket is refused or silent, remembered for the page load; contacts and aliases with live status; vCard
details; chat both ways with typing notifications; carbons from the user's
desktop client; an alias message; the status menu as a slixmpp observer sees
it (Offline leaves the desktop resource alone); conversations and the
conversation page; a notification while the page is hidden; reconnecting
after the session was lost (over WebSocket and over BOSH), with nothing
lost and nothing shown twice; the loader's link per the sites answer; phone and tablet
widths and the keyboard. Screenshots of each state go to test-artifacts/.

``make test`` installs what this needs (chromium via apt-get, Strophe.js via
``make pane``, playwright with the test extras). Run by hand without them the
tests are skipped; with CI=true they fail instead.
"""

from __future__ import annotations

import asyncio
import http.server
import json
import os
import re
import struct
import threading
import xml.etree.ElementTree as ET
import zlib
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlparse

import pytest
import slixmpp

from chatgate.auth.tokens import mint
from chatgate.web.pane import VENDOR
from tests.integration.conftest import PASSWORD
from tests.integration.harness import REPO, Client, Server, async_test, login, logout

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
SECRET = "a-webmail-secret-of-at-least-32-characters"
#: ms for one UI expectation
WAIT = 15000

PEOPLE = {
    "alice": ("Alice Archer", "Product Manager", "Product", "+1 555 0101"),
    "bob": ("Bob Baker", "Accountant", "Finance", "+1 555 0102"),
    "carol": ("Carol Carter", "Support Lead", "Customer Care", ""),
    "dave": ("Dave Dawson", "Engineer", "Platform", ""),
}

# Records the notifications the page shows, around the real API (headless
# Chromium shows none on screen).
RECORD_NOTIFICATIONS = """
(() => {
    const Real = window.Notification;
    if (!Real) return;
    window.__notifications = [];
    class Recorded extends Real {
        constructor(title, options = {}) {
            const entry = { title, body: options.body, tag: options.tag };
            window.__notifications.push(entry);
            super(title, options);
            entry.instance = this;
        }
    }
    Object.defineProperty(Recorded, "permission", { get: () => Real.permission });
    Recorded.requestPermission = (...args) => Real.requestPermission(...args);
    window.Notification = Recorded;
})();
"""

HIDE_PAGE = """
() => {
    Object.defineProperty(document, "visibilityState", { configurable: true, get: () => "hidden" });
    Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
    document.dispatchEvent(new Event("visibilitychange"));
}
"""

SHOW_PAGE = """
() => {
    delete document.visibilityState;
    delete document.hidden;
    document.dispatchEvent(new Event("visibilitychange"));
}
"""


def _missing() -> str | None:
    if not os.path.exists(CHROMIUM):
        return f"{CHROMIUM} is not installed (make test-deps)"
    if not VENDOR.exists():
        return "the pane's Strophe.js is not built (make pane)"
    try:
        import playwright  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -e '.[test]')"
    return None


# -- a webmail on another origin: a page with the loader, and its token endpoint


class Webmail:
    def __init__(self) -> None:
        self.chatgate = ""  # set once the server's port is known
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: object) -> None:
                pass

            def do_GET(self) -> None:
                url = urlparse(self.path)
                query = {k: v[0] for k, v in parse_qs(url.query).items()}
                if url.path != "/inbox":
                    self.send_error(404)
                    return
                user, site = query.get("user", ""), query.get("site", "mail.example.com")
                page = f"""<!doctype html><html lang="en"><head><meta charset="utf-8">
<title>Inbox — Webmail</title><link rel="icon" href="data:,">
<style>body{{margin:0;font:15px system-ui,sans-serif;color:#1d2433}}
header{{display:flex;align-items:center;gap:16px;padding:12px 20px;background:#1d2433;color:#fff}}
header b{{flex:1}} main{{padding:24px}} li{{padding:10px 0;border-bottom:1px solid #e3e6eb}}</style>
<script src="{outer.chatgate}/chat/loader.js" async data-user="{user}" data-site="{site}"
        data-token-url="/token?user={user}" data-target="#chat-slot"></script></head>
<body><header><b>Webmail</b><span>{user}</span><span id="chat-slot"></span></header>
<main><h1>Inbox</h1><ul><li>Quarterly report — Bob Baker</li><li>Lunch on Friday? — Carol Carter</li></ul></main>
</body></html>"""
                self._answer(200, "text/html; charset=utf-8", page.encode())

            def do_POST(self) -> None:
                url = urlparse(self.path)
                user = parse_qs(url.query).get("user", [""])[0]
                if url.path != "/token" or not user:
                    self.send_error(404)
                    return
                token, expires = mint(SECRET.encode(), user, 300)
                self._answer(200, "application/json", json.dumps({"token": token, "expires": expires}).encode())

            def _answer(self, status: int, kind: str, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def inbox(self, user: str, site: str = "mail.example.com") -> str:
        return f"{self.origin}/inbox?user={user}&site={site}"


@pytest.fixture(scope="module")
def webmail() -> Iterator[Webmail]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)
    mail = Webmail()
    mail.thread.start()
    yield mail
    mail.httpd.shutdown()
    mail.httpd.server_close()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, webmail: Webmail) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("pane"), webmail={"token_secret": SECRET},
                 # short waits so that a dropped session is noticed within seconds
                 http={"cors_origins": webmail.origin, "bosh_max_wait": 8, "bosh_inactivity": 6})
    for domain in ("example.com", "closed.net"):
        srv.admin("domain", "add", domain)
    for localpart, (name, title, department, phone) in PEOPLE.items():
        srv.admin("user", "add", f"{localpart}@example.com", "--name", name, "--title", title,
                  "--department", department, "--phone", phone, "--password-stdin", stdin=PASSWORD + "\n")
    srv.admin("user", "add", "erin@closed.net", "--name", "Erin Ellis", "--password-stdin", stdin=PASSWORD + "\n")
    srv.admin("domain", "disable", "closed.net")
    srv.admin("alias", "add", "salesteam@example.com", "alice@example.com", "bob@example.com",
              "carol@example.com", "--name", "Sales team")
    srv.admin("site", "add", "mail.example.com")
    srv.admin("site", "add", "private.example.net", "--hide-chat-link")
    srv.start()
    webmail.chatgate = f"http://127.0.0.1:{srv.http_port}"
    yield srv
    srv.stop()


# -- driving the pane


class Pane:
    def __init__(self, server: Server, page: Any, errors: list[str], console: list[str] | None = None) -> None:
        self.server = server
        self.page = page
        self.errors = errors
        #: the page's console, "type: text" per line
        self.console = console if console is not None else []

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.http_port}/chat/"

    async def wait(self, expression: str, arg: Any = None, timeout: float = WAIT) -> Any:
        return await poll(self.page, expression, arg, timeout)

    async def sign_in_with_token(self, jid: str) -> None:
        token, _ = mint(SECRET.encode(), jid, 300)
        await self.page.goto(f"{self.url}#token={token}")
        await self.online()
        assert token not in self.page.url, "the token stays out of the address bar"

    async def sign_in_with_password(self, jid: str, password: str) -> None:
        await self.page.goto(self.url)
        await self.page.fill("#signin-jid", jid)
        await self.page.fill("#signin-password", password)
        await self.page.click("#signin-submit")

    async def online(self) -> None:
        await self.wait("window.chatgate && chatgate.client.state === 'online' && document.querySelector('.contact')")

    async def resource(self) -> str:
        return await self.page.evaluate("chatgate.client.connection.jid")

    async def transport(self) -> str:
        """What the pane's session uses: "websocket" or "bosh"."""
        return await self.page.evaluate("chatgate.client.transport")

    @property
    def websocket_url(self) -> str:
        return f"ws://127.0.0.1:{self.server.http_port}/xmpp-websocket"

    async def wait_status(self, jid: str, status: str) -> None:
        await self.wait("([jid, s]) => document.querySelector(`.contact[data-jid='${jid}'] .dot`)"
                        "?.classList.contains('status-' + s)", [jid, status])

    async def open_chat(self, jid: str) -> None:
        # the contact list re-renders on every presence; a click that lands on a
        # row being replaced opens nothing, so click again (a few times at most)
        for _ in range(3):
            await self.page.click(f".contact[data-jid='{jid}']")
            try:
                await self.page.wait_for_selector("#content button[data-action=chat]", timeout=WAIT / 3)
                break
            except Exception as e:  # playwright's TimeoutError
                if "Timeout" not in str(e):
                    raise
        await self.page.click("#content button[data-action=chat]")
        await self.wait("jid => chatgate.chats.active === jid && document.activeElement.dataset.jid === jid", jid)

    async def send(self, text: str) -> None:
        composer = self.page.locator(".chat-panel:not([hidden]) textarea")
        await composer.fill(text)
        await composer.press("Enter")

    async def bodies(self, jid: str) -> list[str]:
        return await self.page.evaluate(
            "jid => Array.from(document.querySelectorAll(`.chat-panel[data-jid='${jid}'] .msg-body`),"
            " e => e.textContent)", jid)

    async def wait_body(self, jid: str, text: str, outgoing: bool | None = None) -> None:
        side = "" if outgoing is None else (".out" if outgoing else ".in")
        await self.wait("([jid, text, side]) => Array.from(document.querySelectorAll("
                        "`.chat-panel[data-jid='${jid}'] .msg${side} .msg-body`)).some(e => e.textContent === text)",
                        [jid, text, side])

    async def choose_status(self, value: str, text: str | None = None) -> None:
        if await self.page.get_attribute("#status-button", "aria-expanded") != "true":
            await self.page.click("#status-button")
        if text is not None:
            await self.page.fill("#status-text", text)
        await self.page.click(f"label.choice-{value}")

    async def shot(self, name: str, full_page: bool = False) -> None:
        ARTIFACTS.mkdir(exist_ok=True)
        await self.page.wait_for_timeout(350)  # let transitions settle
        await self.page.screenshot(path=str(ARTIFACTS / f"pane-{name}.png"), full_page=full_page)


async def poll(page: Any, expression: str, arg: Any = None, timeout: float = WAIT) -> Any:
    """Evaluate *expression* until it is truthy (at most *timeout* ms). Not
    wait_for_function: that evaluates strings in the page, which the pane's
    Content-Security-Policy forbids, as it should."""
    deadline = asyncio.get_running_loop().time() + timeout / 1000
    while True:
        try:
            value = await page.evaluate(expression, arg)
        except Exception as e:  # the page is navigating, or the pane has not set itself up yet
            if "Execution context was destroyed" not in str(e) and "is not defined" not in str(e) \
                    and "Cannot read properties of" not in str(e):
                raise
            value = None
        if value:
            return value
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"still false after {timeout} ms: {expression}")
        await asyncio.sleep(0.1)


@asynccontextmanager
async def browser_context(**options: Any) -> AsyncIterator[Any]:
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = await browser.new_context(**{"viewport": {"width": 1360, "height": 840}, **options})
            await context.add_init_script(RECORD_NOTIFICATIONS)
            yield context
        finally:
            await browser.close()


@asynccontextmanager
async def pane(server: Server, name: str, **options: Any) -> AsyncIterator[Pane]:
    """A browser page on the pane; on failure a screenshot and the console go to test-artifacts/."""
    async with browser_context(**options) as context:
        page = await context.new_page()
        errors: list[str] = []
        console: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        # what the pane's own Content-Security-Policy refuses is a bug of the pane
        page.on("console", lambda m: "Content Security Policy" in m.text and errors.append(m.text))
        view = Pane(server, page, errors, console)
        try:
            yield view
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            if not page.is_closed():
                await page.screenshot(path=str(ARTIFACTS / f"pane-{name}-failed.png"))
            print("browser console:", *console[-60:], sep="\n  ")
            print("server log:", server.log_text()[-3000:])
            raise
        assert not errors, errors


class Network:
    """The page's way to chatgate's web listener, under the test's control
    (playwright's routing, installed before the pane opens a WebSocket).

    WebSockets go through to chatgate (*websocket* "pass"), or are blocked:
    "refuse" closes each at once, before it opens (a proxy or firewall that
    refuses the upgrade), "silent" accepts each and never answers (a proxy
    that swallows it). :meth:`cut` drops the open WebSockets and fails every
    BOSH request and new WebSocket, as a lost network does, until
    :meth:`restore`. ``attempts`` counts the WebSockets the page opened."""

    def __init__(self, page: Any, websocket: str = "pass") -> None:
        assert websocket in ("pass", "refuse", "silent")
        self.page = page
        self.websocket = websocket
        self.down = False
        self.attempts = 0
        self._through: list[tuple[Any, Any]] = []  # (the page's side, chatgate's side)

    async def install(self) -> Network:
        await self.page.route_web_socket("**/xmpp-websocket", self._socket)
        return self

    async def _socket(self, route: Any) -> None:
        self.attempts += 1
        if self.down or self.websocket == "refuse":
            await route.close(code=1011, reason="refused")
        elif self.websocket == "pass":
            self._through.append((route, route.connect_to_server()))
        # silent: left open, nothing ever comes

    async def cut(self) -> None:
        self.down = True
        await self.page.route("**/http-bind", lambda route: route.abort())
        through, self._through = self._through, []
        for page_side, server_side in through:
            await server_side.close()
            await page_side.close()

    async def restore(self) -> None:
        self.down = False
        await self.page.unroute("**/http-bind")


def logins(server: Server, jid: str) -> list[str]:
    """The transport of each sign-in of *jid* in the server's log, in order: websocket, bosh, c2s."""
    return re.findall(rf"login {re.escape(jid)} via \S+ from \S+ \((\w+)\)", server.log_text())


def since(client: Client) -> int:
    return len(client.presences)


async def wait_presence(client: Client, start: int, predicate: Callable[[slixmpp.Presence], bool],
                        timeout: float = 15) -> slixmpp.Presence:
    """A presence received after the first *start* ones that matches."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        for presence in client.presences[start:]:
            if predicate(presence):
                return presence
        client.presence_changed.clear()
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            raise AssertionError(f"no such presence; got {[str(p) for p in client.presences[start:]]}")
        try:
            await asyncio.wait_for(client.presence_changed.wait(), remaining)
        except TimeoutError:
            pass


async def next_body(client: Client, timeout: float = 10) -> slixmpp.Message:
    """The next message with a body (chat states alone are skipped)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = await client.next_message(max(0.1, deadline - asyncio.get_running_loop().time()))
        if message["body"]:
            return message


async def next_chat_state(client: Client, state: str, timeout: float = 10) -> slixmpp.Message:
    """The next XEP-0085 notification *state* (slixmpp's "message" event is for bodies only)."""
    deadline = asyncio.get_running_loop().time() + timeout
    queue: asyncio.Queue[slixmpp.Message] = client.chat_states  # type: ignore[attr-defined]
    while True:
        message = await asyncio.wait_for(queue.get(), max(0.1, deadline - asyncio.get_running_loop().time()))
        if message["chat_state"] == state:
            return message


def png(width: int = 48, height: int = 48, rgb: tuple[int, int, int] = (226, 125, 45)) -> bytes:
    """A small one-colour PNG, for a vCard photo."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def pane_resource(jid: str) -> Callable[[slixmpp.Presence], bool]:
    return lambda p: str(p["from"]).startswith(f"{jid}/webmail-")


async def user(server: Server, jid: str, show: str | None = None, status: str | None = None) -> Client:
    client = await login(server, jid, PASSWORD, presence=False)
    client.register_plugin("xep_0085")  # chat states
    client.chat_states = asyncio.Queue()  # type: ignore[attr-defined]
    client.add_event_handler("chatstate", client.chat_states.put_nowait)  # type: ignore[attr-defined]
    client.send_presence(pshow=show, pstatus=status)
    return client


# -- the tests


@async_test(timeout=120)
async def test_password_sign_in_and_live_contacts(server):
    bob = await user(server, "bob@example.com/desk")
    carol = await user(server, "carol@example.com/laptop", "away", "At lunch")
    async with pane(server, "contacts") as view:
        page = view.page
        await page.goto(view.url)
        await page.wait_for_selector("#signin-form", state="visible", timeout=WAIT)
        await view.shot("sign-in")
        # a wrong password is refused with a message, the form stays
        await view.sign_in_with_password("alice@example.com", "not the password")
        await view.wait("document.querySelector('#signin-error').textContent.includes('Wrong address or password')")
        await view.shot("sign-in-error")
        await view.sign_in_with_password("alice@example.com", PASSWORD)
        await view.online()
        assert "login alice@example.com via PLAIN" in server.log_text()  # with a token bought by the password

        # the domain's people and its alias, names from the directory, online first
        await view.wait_status("bob@example.com", "available")
        await view.wait_status("carol@example.com", "away")
        people = await page.evaluate(
            "Array.from(document.querySelectorAll('#group-people ~ .contact'), e => e.dataset.jid)")
        assert people == ["bob@example.com", "carol@example.com", "dave@example.com"]
        aliases = await page.evaluate(
            "Array.from(document.querySelectorAll('#group-aliases ~ .contact .contact-name'), e => e.textContent)")
        assert aliases == ["Sales team"]
        assert "Away · At lunch" in await page.inner_text(".contact[data-jid='carol@example.com']")
        await view.wait_status("salesteam@example.com", "available")
        await view.shot("contacts")

        # live: a status change, a new resource, a departure; the list re-sorts
        bob.send_presence(pshow="dnd", pstatus="In a meeting")
        await view.wait_status("bob@example.com", "busy")
        assert "Busy · In a meeting" in await page.inner_text(".contact[data-jid='bob@example.com']")
        # the best status across resources: bob's phone is available, so bob is
        bob_phone = await user(server, "bob@example.com/phone")
        await view.wait_status("bob@example.com", "available")
        await logout(bob_phone)
        await view.wait_status("bob@example.com", "busy")
        dave = await user(server, "dave@example.com/desk")
        await view.wait_status("dave@example.com", "available")
        await logout(dave)
        await view.wait_status("dave@example.com", "offline")
        await logout(bob)
        await view.wait_status("bob@example.com", "offline")
        await view.wait("document.querySelector('#group-people ~ .contact').dataset.jid === 'carol@example.com'")

        # the filter box
        await page.fill("#filter", "car")
        await view.wait("document.querySelectorAll('.contact').length === 1")
        await page.fill("#filter", "zzz")
        await view.wait("document.querySelector('#contact-empty').textContent.includes('No contact matches')")
        await page.fill("#filter", "")

        # roster pushes: a colleague added to the domain appears, removed disappears
        server.admin("user", "add", "frank@example.com", "--name", "Frank Fischer", "--password-stdin",
                     stdin=PASSWORD + "\n")
        await view.wait("document.querySelector(`.contact[data-jid='frank@example.com']`)"
                        "?.textContent.includes('Frank Fischer')")
        server.admin("user", "remove", "frank@example.com")
        await view.wait("!document.querySelector(`.contact[data-jid='frank@example.com']`)")

        # nowhere in the browser's storage or the page is the password kept
        kept = await page.evaluate(
            "JSON.stringify(localStorage) + JSON.stringify(sessionStorage) + document.cookie"
            " + document.documentElement.outerHTML")
        assert PASSWORD not in kept
        cookies = await page.context.cookies()
        assert not cookies
    await logout(carol)


@async_test(timeout=120)
async def test_token_sign_in_details_and_chat_both_ways(server):
    bob = await user(server, "bob@example.com/desk")
    alice_desk = await user(server, "alice@example.com/desk")
    card = bob.plugin["xep_0054"].make_vcard()  # bob sets a photo; the directory fills the rest
    card["PHOTO"]["TYPE"] = "image/png"
    card["PHOTO"]["BINVAL"] = png()
    await bob.plugin["xep_0054"].publish_vcard(card)
    async with pane(server, "chat") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        assert "login alice@example.com via PLAIN" in server.log_text()
        await view.wait_status("bob@example.com", "available")

        # details from the vCard: name, title, department, phone, address
        await page.click(".contact[data-jid='bob@example.com']")
        await view.wait("document.querySelector('#content .profile-role')?.textContent === 'Accountant · Finance'")
        details = await page.inner_text("#content .profile")
        for text in ("Bob Baker", "Available", "+1 555 0102", "bob@example.com"):
            assert text in details
        assert await page.get_attribute(".contact[data-jid='bob@example.com']", "aria-selected") == "true"
        photo = await page.get_attribute("#content .profile .avatar img", "src")
        assert photo.startswith("data:image/png;base64,")

        # a chat: the pane writes, bob reads; typing notifications on the way
        await view.open_chat("bob@example.com")
        await page.locator(".chat-panel:not([hidden]) textarea").press_sequentially("Hello Bob")
        composing = await next_chat_state(bob, "composing")
        assert str(composing["from"]).startswith("alice@example.com/webmail-")
        await page.locator(".chat-panel:not([hidden]) textarea").press("Enter")
        message = await next_body(bob)
        assert message["body"] == "Hello Bob" and str(message["from"]).startswith("alice@example.com/webmail-")
        assert message["chat_state"] == "active"
        await view.wait_body("bob@example.com", "Hello Bob", outgoing=True)

        # bob types, then answers
        state = bob.make_message(mto="alice@example.com", mtype="chat")
        state["chat_state"] = "composing"
        state.send()
        await view.wait("document.querySelector('.chat-panel:not([hidden]) .typing-line').textContent"
                        ".includes('Bob Baker is typing')")
        assert "typing…" in await page.inner_text(".contact[data-jid='bob@example.com'] .contact-sub")
        await view.shot("typing")
        bob.send_message(mto="alice@example.com", mbody="Hi Alice! The Q3 numbers: https://example.com/q3",
                         mtype="chat")
        await view.wait_body("bob@example.com", "Hi Alice! The Q3 numbers: https://example.com/q3", outgoing=False)
        await view.wait("!document.querySelector('.chat-panel:not([hidden]) .typing-line').textContent")
        assert await page.get_attribute(".chat-panel:not([hidden]) .msg.in a", "href") == "https://example.com/q3"

        # a message from alice's desktop client shows in the pane too (carbons)
        alice_desk.send_message(mto="bob@example.com", mbody="Sent from my desktop", mtype="chat")
        assert (await next_body(bob))["body"] == "Sent from my desktop"
        await view.wait_body("bob@example.com", "Sent from my desktop", outgoing=True)

        # a message from someone whose chat is not open opens it without taking the focus, unread
        carol = await user(server, "carol@example.com/laptop")
        carol.send_message(mto="alice@example.com", mbody="Lunch on Friday?", mtype="chat")
        await view.wait("document.querySelector(`.contact[data-jid='carol@example.com'] .badge`)?.textContent === '1'")
        assert await page.evaluate("chatgate.chats.active") == "bob@example.com"
        assert await page.title() == "(1) Chat"
        await view.shot("chat")
        await page.click(".chat-tab[data-jid='carol@example.com']")
        await view.wait_body("carol@example.com", "Lunch on Friday?")
        await view.wait("document.title === 'Chat' && !document.querySelector('.contact .badge')")
        await view.send("Sure, noon?")
        assert (await next_body(carol))["body"] == "Sure, noon?"

        # no message is shown twice in either chat
        for jid in ("bob@example.com", "carol@example.com"):
            bodies = await view.bodies(jid)
            assert len(bodies) == len(set(bodies)), bodies
        await logout(carol)
    await logout(bob, alice_desk)


@async_test(timeout=120)
async def test_keyboard_only(server):
    bob = await user(server, "bob@example.com/desk")
    async with pane(server, "keyboard") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        await view.wait_status("bob@example.com", "available")
        await page.keyboard.press("/")
        assert await page.evaluate("document.activeElement.id") == "filter"
        await page.keyboard.type("bob")
        await page.keyboard.press("ArrowDown")
        assert await page.evaluate("document.activeElement.dataset.jid") == "bob@example.com"
        await page.keyboard.press("Enter")  # shows the details
        await view.wait("document.querySelector('#details-name')?.textContent === 'Bob Baker'")
        await page.keyboard.press("Control+Enter")  # opens the chat, the composer takes the focus
        await view.wait("document.activeElement.dataset.jid === 'bob@example.com' && "
                        "document.activeElement.tagName === 'TEXTAREA'")
        await page.keyboard.type("typed without a mouse")
        await page.keyboard.press("Enter")
        assert (await next_body(bob))["body"] == "typed without a mouse"
        # every control has a name for screen readers
        unnamed = await page.evaluate("""
            Array.from(document.querySelectorAll('button, [role=option], [role=tab], textarea, input'))
            .filter(e => e.offsetParent !== null)
            .filter(e => !(e.getAttribute('aria-label') || e.textContent.trim() || e.labels?.length
                           || e.getAttribute('aria-labelledby')))
            .map(e => e.outerHTML.slice(0, 80))""")
        assert not unnamed, unnamed
        # the status menu by keyboard: open, arrow to Away, Escape gives the focus back
        await page.focus("#status-button")
        await page.keyboard.press("Enter")
        await view.wait("document.activeElement.name === 'my-status'")
        await page.keyboard.press("ArrowDown")
        await view.wait("chatgate.client.show === 'away'")
        await page.keyboard.press("Escape")
        assert await page.evaluate("document.activeElement.id") == "status-button"
        # the same in the dark
        await page.emulate_media(color_scheme="dark")
        await view.shot("dark")
    await logout(bob)


@async_test(timeout=120)
async def test_sign_in_links_that_no_longer_work(server):
    async with pane(server, "bad-links") as view:
        page = view.page
        expired, _ = mint(SECRET.encode(), "alice@example.com", -5)
        await page.goto(f"{view.url}#token={expired}")
        await page.wait_for_selector("#signin-error", state="visible", timeout=WAIT)
        assert "expired sign-in link" in await page.inner_text("#signin-error")
        assert expired not in page.url
        closed, _ = mint(SECRET.encode(), "erin@closed.net", 300)
        await page.goto("about:blank")
        await page.goto(f"{view.url}#token={closed}")
        await view.wait("document.querySelector('#signin-error').textContent.includes('turned off for your domain')")


@pytest.mark.parametrize("transport", ["websocket", "bosh"])
@async_test(timeout=120)
async def test_signing_out_and_closing_the_window_end_the_session_at_once(server, transport):
    bob = await user(server, "bob@example.com/desk")
    async with pane(server, f"closing-{transport}") as view:
        # BOSH: the WebSocket refused, so the pane falls back (and closing the window is sendBeacon's)
        await Network(view.page, "pass" if transport == "websocket" else "refuse").install()
        start = since(bob)
        await view.sign_in_with_token("alice@example.com")
        assert await view.transport() == transport
        resource = await view.resource()
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["type"] == "available")
        start = since(bob)
        page = view.page
        # Sign out (status menu): the session ends at once, the sign-in form is back
        await page.click("#status-button")
        await page.click(".popover-foot button")
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["type"] == "unavailable",
                            timeout=3)
        await page.wait_for_selector("#signin-form", state="visible", timeout=WAIT)
        assert await page.evaluate("window.chatgate === undefined")

        # closing the window: sooner than the server's inactivity limit (6 s here) would notice
        start = since(bob)
        await view.sign_in_with_token("alice@example.com")
        resource = await view.resource()
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["type"] == "available")
        start = since(bob)
        await page.close(run_before_unload=True)
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["type"] == "unavailable",
                            timeout=3)
    await logout(bob)


@async_test(timeout=120)
async def test_alias_messages(server):
    bob = await user(server, "bob@example.com/desk")
    carol = await user(server, "carol@example.com/laptop")
    async with pane(server, "alias") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        await view.wait_status("salesteam@example.com", "available")
        await page.click(".contact[data-jid='salesteam@example.com']")
        await view.wait("document.querySelector('#content').textContent.includes('Mail alias')")
        await view.open_chat("salesteam@example.com")
        await view.send("Who can take the Acme call?")
        for member in (bob, carol):
            message = await next_body(member)
            assert message["body"] == "Who can take the Acme call?"
            assert str(message["from"]) == "salesteam@example.com/alice"
        bob.send_message(mto="salesteam@example.com", mbody="I can, after 3", mtype="chat")
        assert (await next_body(carol))["body"] == "I can, after 3"
        await view.wait_body("salesteam@example.com", "I can, after 3", outgoing=False)
        # who in the alias wrote it
        sender = await page.inner_text(".chat-panel[data-jid='salesteam@example.com'] .msg.in .msg-sender")
        assert sender == "Bob Baker"
        await view.shot("alias")
    await logout(bob, carol)


@async_test(timeout=150)
async def test_status_menu_as_others_see_it(server):
    bob = await user(server, "bob@example.com/desk")
    alice_desk = await user(server, "alice@example.com/desk")
    async with pane(server, "status") as view:
        page = view.page
        start = since(bob)
        await view.sign_in_with_token("alice@example.com")
        first = await wait_presence(bob, start, pane_resource("alice@example.com"))
        resource = str(first["from"])
        assert resource == await view.resource()

        start = since(bob)
        await view.choose_status("away", "In a meeting")
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["show"] == "away"
                            and p["status"] == "In a meeting")
        await view.shot("status-menu")
        start = since(bob)
        await view.choose_status("busy")
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["show"] == "dnd")
        assert "Busy — In a meeting" in await page.inner_text("#status-button")

        # Offline: the pane's session ends, alice's desktop stays available, every contact greys
        start, desk_start = since(bob), since(alice_desk)
        await view.choose_status("offline")
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["type"] == "unavailable")
        await view.wait("chatgate.client.state === 'offline'")
        await view.wait("Array.from(document.querySelectorAll('.contact .dot'))"
                        ".every(d => d.classList.contains('status-offline'))")
        await page.keyboard.press("Escape")
        await view.shot("offline")
        await asyncio.sleep(1)
        assert not [p for p in bob.presences[start:] if str(p["from"]) == "alice@example.com/desk"]
        assert not [p for p in alice_desk.presences[desk_start:] if str(p["from"]) == "alice@example.com/desk"
                    and p["type"] == "unavailable"]
        bob.send_message(mto="alice@example.com", mbody="still there?", mtype="chat")
        assert (await next_body(alice_desk))["body"] == "still there?"  # the desktop still gets messages
        # composing is blocked while offline, with a way back
        await page.click(".contact[data-jid='bob@example.com']")
        await page.click("#content button[data-action=chat]")
        assert await page.is_disabled(".chat-panel:not([hidden]) .send")

        # Available again: a new session, seen by bob; the message of meanwhile is there
        start = since(bob)
        await view.choose_status("available")
        await wait_presence(bob, start, lambda p: pane_resource("alice@example.com")(p) and p["type"] == "available"
                            and not p["show"])
        await view.online()
        await view.wait_status("bob@example.com", "available")
        await view.wait_body("bob@example.com", "still there?")
    await logout(bob, alice_desk)


@async_test(timeout=120)
async def test_conversations_and_the_conversation_page(server):
    dave = await user(server, "dave@example.com/desk")
    async with pane(server, "conversations") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        await view.wait_status("dave@example.com", "available")
        await view.open_chat("dave@example.com")
        lines = ["Is the deploy done?", "Almost, five more minutes", "Thanks, ping me when it is"]
        await view.send(lines[0])
        assert (await next_body(dave))["body"] == lines[0]
        dave.send_message(mto="alice@example.com", mbody=lines[1], mtype="chat")
        await view.wait_body("dave@example.com", lines[1])
        await view.send(lines[2])
        assert (await next_body(dave))["body"] == lines[2]

        # the preview pane: date, duration, count and first line
        await page.click(".contact[data-jid='dave@example.com']")
        await view.wait("document.querySelector('.conversation:not(.skeleton) .conversation-meta')"
                        "?.textContent.startsWith('3 messages')")
        row = await page.inner_text(".conversation")
        assert "Today" in row and lines[0] in row
        await view.shot("conversations")

        # Open: a window of its own at a stable address, the whole conversation
        async with page.expect_popup(timeout=WAIT) as popup_info:
            await page.click(".conversation a[data-action=open-conversation]")
        popup = await popup_info.value
        await popup.wait_for_selector("#transcript .msg", timeout=WAIT)
        assert "/chat/conversation.html?id=" in popup.url
        texts = await popup.evaluate(
            "Array.from(document.querySelectorAll('#transcript .msg-body'), e => e.textContent)")
        assert texts == lines
        assert await popup.inner_text("#transcript-title") == "Conversation with Dave Dawson"
        assert "3 messages" in await popup.inner_text("#transcript-when")
        await popup.set_viewport_size({"width": 760, "height": 640})
        await popup.screenshot(path=str(ARTIFACTS / "pane-conversation-page.png"))
        address = popup.url
        await popup.close()

        # the same address later, in another browser (no pane open there): sign in, then the conversation
        async with browser_context() as other:
            alone = await other.new_page()
            await alone.goto(address)
            await alone.wait_for_selector("#signin-form", state="visible", timeout=WAIT)
            await alone.fill("#signin-jid", "alice@example.com")
            await alone.fill("#signin-password", PASSWORD)
            await alone.click("#signin-submit")
            await alone.wait_for_selector("#transcript .msg", timeout=WAIT)
            assert await alone.evaluate("document.querySelectorAll('#transcript .msg').length") == 3
            # and not as someone else
            await alone.goto(address)
            await alone.wait_for_selector("#signin-form", state="visible", timeout=WAIT)
            await alone.fill("#signin-jid", "bob@example.com")
            await alone.fill("#signin-password", PASSWORD)
            await alone.click("#signin-submit")
            await alone.wait_for_selector(".transcript-error", timeout=WAIT)
            assert "not in your history" in await alone.inner_text(".transcript-error")
    await logout(dave)


@async_test(timeout=120)
async def test_notifications_while_hidden(server):
    bob = await user(server, "bob@example.com/desk")
    carol = await user(server, "carol@example.com/laptop")
    async with pane(server, "notifications") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        # asked from a click on the banner's button; the browser's prompt is answered "Allow"
        assert await page.evaluate("Notification.permission") == "default"
        await page.wait_for_selector("[data-action=enable-notifications]", timeout=WAIT)
        await view.shot("notification-offer")
        await page.context.grant_permissions(["notifications"])
        await page.click("[data-action=enable-notifications]")
        await view.wait("chatgate.notifications.enabled"
                        " && !document.querySelector('[data-action=enable-notifications]')")
        await view.open_chat("carol@example.com")

        # visible and focused: no notification
        bob.send_message(mto="alice@example.com", mbody="you see this one here", mtype="chat")
        await view.wait("chatgate.model.chats.get('bob@example.com')?.messages.length > 0")
        await page.wait_for_timeout(300)
        assert await page.evaluate("window.__notifications.length") == 0

        # hidden: a notification with sender and text, and the count in the title
        await page.evaluate(HIDE_PAGE)
        bob.send_message(mto="alice@example.com", mbody="Did you see the report?", mtype="chat")
        await view.wait("window.__notifications.some(n => n.body === 'Did you see the report?')")
        shown = await page.evaluate("window.__notifications.map(n => [n.title, n.body, n.tag])")
        assert ["Bob Baker", "Did you see the report?", "chatgate:bob@example.com"] in shown
        await view.wait("document.title === '(2) Chat'")

        # clicking it brings that chat forward
        await page.evaluate(SHOW_PAGE)
        await page.evaluate("window.__notifications.at(-1).instance.onclick(new Event('click'))")
        await view.wait("chatgate.chats.active === 'bob@example.com'")
        await view.wait("document.title === 'Chat'")

        # the setting turns them off
        await page.click("#status-button")
        assert await page.is_checked("#notify-setting")
        await page.click("label.switch")
        await view.wait("!chatgate.notifications.enabled")
        await page.keyboard.press("Escape")
        await page.evaluate(HIDE_PAGE)
        count = await page.evaluate("window.__notifications.length")
        carol.send_message(mto="alice@example.com", mbody="not notified", mtype="chat")
        await view.wait_body("carol@example.com", "not notified")
        assert await page.evaluate("window.__notifications.length") == count
        await page.evaluate(SHOW_PAGE)
    await logout(bob, carol)


@pytest.mark.parametrize("transport", ["websocket", "bosh"])
@async_test(timeout=180)
async def test_reconnects_after_the_session_dies_without_gap_or_duplicates(server, transport):
    bob = await user(server, "bob@example.com/desk")
    async with pane(server, f"reconnect-{transport}") as view:
        page = view.page
        # BOSH: the WebSocket refused from the start, so the pane falls back to BOSH, and stays there
        network = await Network(page, "pass" if transport == "websocket" else "refuse").install()
        start = since(bob)
        await view.sign_in_with_token("alice@example.com")
        assert await view.transport() == transport
        # the module's archive keeps the other transport's run: its texts told apart
        said = f"{{}} ({transport})".format
        await view.open_chat("bob@example.com")
        bob.send_message(mto="alice@example.com", mbody=said("before the drop"), mtype="chat")
        await view.wait_body("bob@example.com", said("before the drop"))
        await view.send(said("me too, before"))
        assert (await next_body(bob))["body"] == said("me too, before")

        async def drop_and_return(messages: list[str], phase: str) -> None:
            resource = await view.resource()
            mark = since(bob)
            await network.cut()
            # the server ends the session it no longer hears from (BOSH) or whose connection
            # dropped (WebSocket): bob sees the pane's resource go
            await wait_presence(bob, mark, lambda p: str(p["from"]) == resource and p["type"] == "unavailable",
                                timeout=40)
            for text in messages:
                bob.send_message(mto="alice@example.com", mbody=text, mtype="chat")
                await asyncio.sleep(0.05)
            await view.wait("chatgate.client.state === 'reconnecting'")
            await view.wait("document.querySelector('#banner').textContent.includes('Reconnecting')")
            await view.shot(f"reconnecting-{phase}-{transport}")
            await network.restore()
            # by itself, within the backoff, on the same transport
            await view.wait("chatgate.client.state === 'online'", timeout=45000)
            assert await view.resource() != resource
            assert await view.transport() == transport
            for text in messages:
                await view.wait_body("bob@example.com", text)

        # 1. nobody else of alice's online: bob's messages wait offline, and MAM has them too
        await drop_and_return([said(f"while away {n}") for n in (1, 2, 3)], "offline-store")
        # 2. alice's desktop is online: they went there, the pane fetches them from the archive
        alice_desk = await user(server, "alice@example.com/desk")
        await drop_and_return([said("desk saw 1"), said("desk saw 2")], "archive")
        await page.wait_for_timeout(1500)  # anything arriving twice would be here by now
        bodies = await view.bodies("bob@example.com")
        expected = [said(text) for text in ("before the drop", "me too, before", "while away 1", "while away 2",
                                            "while away 3", "desk saw 1", "desk saw 2")]
        assert [b for b in bodies if b in expected] == expected, bodies
        await view.shot(f"reconnected-{transport}")
        # the pane works after it: both ways
        await view.send(said("back again"))
        assert (await next_body(bob))["body"] == said("back again")
        bob.send_message(mto="alice@example.com", mbody=said("welcome back"), mtype="chat")
        if transport == "bosh":
            # the refused WebSocket was tried once in this page load, not on every reconnection
            assert network.attempts == 1
        await view.wait_body("bob@example.com", said("welcome back"))
        await logout(alice_desk)
    await logout(bob)
    assert start >= 0


@async_test(timeout=120)
async def test_the_pane_prefers_the_websocket(server):
    """config.json names the WebSocket: the pane signs in over it (one
    WebSocket to this origin, the server logs a WebSocket login), chats, and
    closes the stream cleanly (RFC 7395 §3.6) when going offline on purpose and
    when the page goes away."""
    bob = await user(server, "bob@example.com/desk")
    alice_desk = await user(server, "alice@example.com/desk")
    async with pane(server, "websocket") as view:
        page = view.page
        sockets: list[str] = []
        sent: list[str] = []  # what the pane wrote on its WebSockets
        page.on("websocket", lambda ws: (sockets.append(ws.url), ws.on("framesent", lambda frame: sent.append(frame))))
        before = len(logins(server, "alice@example.com"))
        start = since(bob)
        await view.sign_in_with_token("alice@example.com")
        assert await view.transport() == "websocket"
        assert logins(server, "alice@example.com")[before:] == ["websocket"]
        assert sockets == [view.websocket_url]
        resource = await view.resource()
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["type"] == "available")

        await view.open_chat("bob@example.com")
        await view.send("over the WebSocket")
        message = await next_body(bob)
        assert (message["body"], str(message["from"])) == ("over the WebSocket", resource)
        bob.send_message(mto="alice@example.com", mbody="and back over it", mtype="chat")
        await view.wait_body("bob@example.com", "and back over it", outgoing=False)

        # offline on purpose: unavailable presence and <close/>; alice's desktop stays
        start, desk_start = since(bob), since(alice_desk)
        await view.choose_status("offline")
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["type"] == "unavailable",
                            timeout=3)
        assert any("unavailable" in frame and "<presence" in frame for frame in sent), sent[-3:]
        assert "<close xmlns=\"urn:ietf:params:xml:ns:xmpp-framing\"/>" in sent[-1], sent[-3:]
        assert not [p for p in alice_desk.presences[desk_start:] if str(p["from"]) == "alice@example.com/desk"]
        await page.keyboard.press("Escape")

        # back: a WebSocket again
        start = since(bob)
        await view.choose_status("available")
        await view.online()
        assert await view.transport() == "websocket" and len(sockets) == 2
        resource = await view.resource()
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["type"] == "available")

        # the page is hidden to go away (or into the browser's page cache): the stream is closed
        # cleanly at once; shown again from the cache, the pane signs in again
        sent.clear()
        start = since(bob)
        await page.evaluate("window.dispatchEvent(new PageTransitionEvent('pagehide', { persisted: true }))")
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["type"] == "unavailable",
                            timeout=3)
        assert any("unavailable" in frame and "<presence" in frame for frame in sent), sent
        assert sent[-1].startswith("<close "), sent
        await page.evaluate("window.dispatchEvent(new PageTransitionEvent('pageshow', { persisted: true }))")
        await view.online()
        assert await view.transport() == "websocket" and len(sockets) == 3
        resource = await view.resource()

        # really leaving: bob sees the pane go at once
        start = since(bob)
        await page.goto("about:blank")
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["type"] == "unavailable",
                            timeout=3)
    await logout(bob, alice_desk)


@pytest.mark.parametrize("blocked", ["refuse", "silent"])
@async_test(timeout=120)
async def test_the_pane_falls_back_to_bosh_when_the_websocket_is_blocked(server, blocked):
    """A WebSocket refused at once, or accepted and never answered (the pane
    waits 10 s for it): the pane signs in over BOSH by itself, with nothing
    on screen but a console line, chats, and does not try the WebSocket again
    in this page load."""
    bob = await user(server, "bob@example.com/desk")
    async with pane(server, f"websocket-{blocked}") as view:
        page = view.page
        network = await Network(page, blocked).install()
        before = len(logins(server, "alice@example.com"))
        start = since(bob)
        await view.sign_in_with_token("alice@example.com")
        assert await view.transport() == "bosh"
        assert logins(server, "alice@example.com")[before:] == ["bosh"]
        assert network.attempts == 1
        assert [line for line in view.console if f"no WebSocket at {view.websocket_url}" in line], view.console
        assert await page.locator("#banner.warn").count() == 0  # no "Connection lost" for the user
        resource = await view.resource()
        await wait_presence(bob, start, lambda p: str(p["from"]) == resource and p["type"] == "available")

        await view.open_chat("bob@example.com")
        await view.send("over BOSH")
        message = await next_body(bob)
        assert (message["body"], str(message["from"])) == ("over BOSH", resource)
        bob.send_message(mto="alice@example.com", mbody="and back over BOSH", mtype="chat")
        await view.wait_body("bob@example.com", "and back over BOSH", outgoing=False)

        # a new session of the same page load goes straight to BOSH
        await view.choose_status("offline")
        await view.wait("chatgate.client.state === 'offline'")
        await page.keyboard.press("Escape")
        await view.choose_status("available")
        await view.online()
        assert await view.transport() == "bosh"
        assert network.attempts == 1
        assert logins(server, "alice@example.com")[before:] == ["bosh", "bosh"]
    await logout(bob)


@async_test(timeout=120)
async def test_the_loader_shows_the_link_per_the_sites_answer(server, webmail):
    async with browser_context() as context:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        await page.goto(webmail.inbox("alice@example.com"))
        await page.wait_for_selector("#chat-slot .chatgate-link", timeout=WAIT)
        await page.screenshot(path=str(ARTIFACTS / "pane-webmail-loader.png"))

        # the link opens the pane in a window of its own, signed in with the webmail's token
        async with page.expect_popup(timeout=WAIT) as popup_info:
            await page.click(".chatgate-link")
        popup = await popup_info.value
        await poll(popup, "window.chatgate && chatgate.client.state === 'online'")
        assert "token" not in popup.url
        assert await popup.evaluate("chatgate.client.me") == "alice@example.com"
        # a second click brings the same window forward, no second sign-in
        logins = server.log_text().count("login alice@example.com via PLAIN")
        await page.click(".chatgate-link")
        await page.wait_for_timeout(1000)
        assert len(context.pages) == 2
        assert server.log_text().count("login alice@example.com via PLAIN") == logins
        # the pane asks the webmail for a fresh token when its own can't be renewed
        assert await popup.evaluate("chatgate.client.credentials.askOpener()")

        # hidden where the site hides it, or where the domain has chat off
        await page.goto(webmail.inbox("alice@example.com", site="private.example.net"))
        assert await page.evaluate("window.chatgate.refresh()") is False
        assert await page.locator(".chatgate-link").count() == 0
        await page.goto(webmail.inbox("erin@closed.net"))
        assert await page.evaluate("window.chatgate.refresh()") is False
        assert await page.locator(".chatgate-link").count() == 0

        # the site's setting changes: the link follows
        await page.goto(webmail.inbox("bob@example.com"))
        await page.wait_for_selector(".chatgate-link", timeout=WAIT)
        server.admin("site", "hide", "mail.example.com")
        try:
            assert await page.evaluate("window.chatgate.refresh()") is False
            assert await page.locator(".chatgate-link").count() == 0
        finally:
            server.admin("site", "show", "mail.example.com")
        assert await page.evaluate("window.chatgate.refresh()") is True
        assert await page.locator(".chatgate-link").count() == 1
        assert not errors, errors


@async_test(timeout=120)
async def test_phone_and_tablet_widths(server):
    bob = await user(server, "bob@example.com/desk")
    async with pane(server, "phone", viewport={"width": 390, "height": 780}, has_touch=True, is_mobile=True) as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        await view.wait_status("bob@example.com", "available")
        await page.evaluate("localStorage.setItem('chatgate.notifications', 'dismissed')")
        await view.shot("phone-contacts")
        # one pane at a time: contacts → details → chat, and back
        await page.click(".contact[data-jid='bob@example.com']")
        await view.wait("document.querySelector('#app').dataset.view === 'details'")
        assert not await page.is_visible("#nav")
        await view.shot("phone-details")
        await page.click("#content button[data-action=chat]")
        await view.wait("document.querySelector('#app').dataset.view === 'chat'")
        bob.send_message(mto="alice@example.com", mbody="Are you on your phone?", mtype="chat")
        await view.wait_body("bob@example.com", "Are you on your phone?")
        await view.send("Yes, on the train")
        assert (await next_body(bob))["body"] == "Yes, on the train"
        await view.shot("phone-chat")
        await page.click("#back")
        await view.wait("document.querySelector('#app').dataset.view === 'details'")
        await page.click("#back")
        await view.wait("document.querySelector('#app').dataset.view === 'contacts'")
        assert await page.is_visible("#nav")
        # nothing wider than the screen
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390

        # a tablet: the chats come as a drawer over the details
        await page.set_viewport_size({"width": 834, "height": 1112})
        await page.click(".contact[data-jid='bob@example.com']")
        await page.click("#content button[data-action=chat]")
        await view.wait("getComputedStyle(document.querySelector('#chats')).position === 'fixed'")
        await view.shot("tablet-chat")
        await page.click("#chats-hide")
        await view.wait("!document.querySelector('#chats-show').hidden")
        await view.shot("tablet-details")
        assert await page.evaluate("document.documentElement.scrollWidth") <= 834
    await logout(bob)


@async_test(timeout=120)
async def test_the_pane_names_a_sender_from_the_stanzas_from_only(server):
    """A XEP-0033 ofrom never names the sender (SECURITY.md, "Output"): the
    server takes client-supplied addresses off, and the pane would not believe
    one anyway; an alias's member is the resource of the alias's 'from'."""
    async with pane(server, "ofrom") as view:
        await view.sign_in_with_token("alice@example.com")
        await view.wait("chatgate.client.aliases.has('salesteam@example.com')")
        senders = await view.page.evaluate("""async () => {
            const { parseMessage } = await import('./js/xmpp.js');
            const claim = "<addresses xmlns='http://jabber.org/protocol/address'>"
                + "<address type='ofrom' jid='carol@example.com'/></addresses>";
            const read = (from) => new DOMParser().parseFromString(
                `<message xmlns='jabber:client' from='${from}' to='alice@example.com/pane' type='chat'>`
                + `<body>hi</body>${claim}</message>`, 'text/xml').documentElement;
            const options = { aliases: chatgate.client.aliases };
            return [
                parseMessage(read('bob@example.com/desk'), 'alice@example.com', options).sender,
                parseMessage(read('bob@example.com/carol'), 'alice@example.com', options).sender,
                parseMessage(read('salesteam@example.com/dave'), 'alice@example.com', options).sender,
            ];
        }""")
        assert senders == ["bob@example.com", "bob@example.com", "dave@example.com"]

        # end to end: bob claims to be carol, directly and through the alias
        bob = await user(server, "bob@example.com/desk")
        for to, text in (("alice@example.com", "direct, claiming carol"),
                         ("salesteam@example.com", "to the team, claiming carol")):
            message = bob.make_message(mto=to, mbody=text, mtype="chat")
            message.xml.append(ET.fromstring("<addresses xmlns='http://jabber.org/protocol/address'>"
                                             "<address type='ofrom' jid='carol@example.com'/></addresses>"))
            message.send()
        await view.open_chat("salesteam@example.com")
        await view.wait_body("salesteam@example.com", "to the team, claiming carol", outgoing=False)
        names = await view.page.evaluate(
            "Array.from(document.querySelectorAll(`.chat-panel[data-jid='salesteam@example.com'] .msg-sender`),"
            " e => e.textContent)")
        assert names and all("Carol" not in name for name in names), names
        assert any("Bob" in name for name in names), names
        await logout(bob)
