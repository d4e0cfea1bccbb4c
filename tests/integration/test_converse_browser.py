"""Converse.js, unmodified, over XMPP over WebSocket (RFC 7395) in a real
browser: the npm package as published (tests/browser/converse.html starts it
with ``websocket_url`` set to chatgate's ``[http] websocket_path``), in
Debian's headless Chromium driven by playwright, from a page of another origin
(accepted through ``[http] cors_origins``, the server's own WebSocket Origin
check). A user signs in through Converse.js's own login form, sees the
domain's people in its roster with the directory's names, and chats both ways
with a slixmpp user on c2s; the server's log shows the session was a
WebSocket one, with stream management (XEP-0198) negotiated by Converse.js.

``make test`` installs what this needs (chromium via apt-get, Converse.js via
``npm ci`` in tests/browser, playwright with the test extras). Run by hand
without them, the test is skipped; in CI it fails instead.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, login, logout
from tests.integration.test_bosh_browser import (
    ARTIFACTS,
    CHROMIUM,
    CHROMIUM_ARGS,
    PAGES,
    require,
    served_pages,
)

CONVERSE = PAGES / "node_modules" / "converse.js" / "dist" / "converse.min.js"
#: ms for one expectation in the page
WAIT = 20000


@pytest.fixture(scope="module")
def pages() -> Iterator[str]:
    require(CONVERSE, "Converse.js")
    with served_pages() as origin:
        yield origin


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pages: str) -> Iterator[Server]:
    # the page's origin is not the listener's: the WebSocket's Origin check lets it in by configuration
    srv = Server(tmp_path_factory.mktemp("converse"), http={"cors_origins": pages})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


def websocket_url(server: Server) -> str:
    return f"ws://127.0.0.1:{server.http_port}/xmpp-websocket"


async def texts(page: Any, selector: str) -> list[str]:
    return await page.evaluate("s => Array.from(document.querySelectorAll(s), e => e.textContent.trim())", selector)


async def wait_text(page: Any, selector: str, text: str) -> None:
    await page.wait_for_function(
        "([s, text]) => Array.from(document.querySelectorAll(s)).some(e => e.textContent.trim() === text)",
        arg=[selector, text], timeout=WAIT)


@dataclass
class Browser:
    """A Chromium page with what it told: console lines, uncaught errors, WebSocket URLs opened."""

    page: Any
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    sockets: list[str] = field(default_factory=list)


@asynccontextmanager
async def converse_signed_in(server: Server, pages: str, jid: str, shot: str) -> AsyncIterator[Browser]:
    """Chromium on tests/browser/converse.html, *jid* signed in through Converse.js's own login
    form; a screenshot ``<shot>.png`` in test-artifacts at the end (``<shot>-failed.png``, the
    browser's console and the server's log printed, when the block fails)."""
    from playwright.async_api import async_playwright

    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page(viewport={"width": 1280, "height": 800})
        seen = Browser(page)
        page.on("console", lambda m: seen.console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: seen.errors.append(str(e)))
        page.on("websocket", lambda ws: seen.sockets.append(ws.url))
        try:
            await page.goto(f"{pages}/converse.html?websocket={websocket_url(server)}")
            await page.wait_for_selector("#converse-login-jid", state="visible", timeout=WAIT)
            await page.fill("#converse-login-jid", jid)
            await page.fill("#converse-login-password", PASSWORD)
            await page.click("#converse-login button[type=submit]")
            yield seen
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / f"{shot}.png"))
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / f"{shot}-failed.png"))
            print("browser console:", *seen.console[-80:], sep="\n  ")
            print("server log:", server.log_text()[-4000:])
            raise
        finally:
            await browser.close()


@async_test(timeout=150)
async def test_converse_signs_in_over_websocket_and_chats_with_a_c2s_user(server, pages):
    bob = await login(server, "bob@example.com/desk", PASSWORD)
    async with converse_signed_in(server, pages, "alice@example.com", "converse-websocket") as seen:
        page = seen.page
        # the roster: the domain's other people, with the directory's names
        await wait_text(page, ".open-chat .contact-name", "Bob Baker")
        await wait_text(page, ".open-chat .contact-name", "Carol Carter")
        names = await texts(page, ".open-chat .contact-name")
        # Converse.js lists the user too, as "(me)"
        assert sorted(n for n in names if not n.endswith("(me)")) == ["Bob Baker", "Carol Carter"], names

        # over the WebSocket, to this server's endpoint, and nothing else (no BOSH)
        log = server.log_text()
        assert "(websocket)" in next(line for line in log.splitlines() if "login alice@example.com via" in line)
        assert seen.sockets == [websocket_url(server)], seen.sockets
        # Converse.js's available presence reaches bob on c2s
        presence = await bob.wait_presence(lambda p: str(p["from"]).startswith("alice@example.com/"), timeout=15)
        alice = str(presence["from"])

        # Converse.js writes, bob reads
        await page.click(".open-chat:has-text('Bob Baker')")
        composer = page.locator(".chatbox:not(.hidden) .chat-textarea")
        await composer.wait_for(state="visible", timeout=WAIT)
        await composer.fill("hello from Converse.js")
        await composer.press("Enter")
        message = await next_body(bob)
        assert (message["body"], str(message["from"])) == ("hello from Converse.js", alice)

        # bob writes, Converse.js shows it in the open chat, and again in order
        bob.send_message(mto="alice@example.com", mbody="hello, Converse", mtype="chat")
        await wait_text(page, ".chat-msg__text", "hello, Converse")
        for n in range(3):
            bob.send_message(mto=alice, mbody=f"burst {n}", mtype="chat")
        await wait_text(page, ".chat-msg__text", "burst 2")
        shown = [t for t in await texts(page, ".chat-msg__text") if t.startswith("burst")]
        assert shown == ["burst 0", "burst 1", "burst 2"], shown
        await composer.fill("and back again")
        await composer.press("Enter")
        assert (await next_body(bob))["body"] == "and back again"
    # the browser went away without closing the stream: Converse.js had enabled stream management
    # (XEP-0198), so the session waits to be resumed and alice still shows available to bob
    lost = f"connection of {alice} lost (websocket); it may resume"
    for _ in range(100):
        if lost in server.log_text():
            break
        await asyncio.sleep(0.1)
    assert lost in server.log_text(), server.log_text()[-2000:]
    assert not [p for p in bob.presences if str(p["from"]) == alice and p["type"] == "unavailable"]
    await logout(bob)
    assert not seen.errors, seen.errors
    assert server.alive()


async def next_body(client: Any, timeout: float = 15) -> Any:
    """The next message with a body (Converse.js sends chat states too)."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        message = await client.next_message(max(0.1, deadline - asyncio.get_running_loop().time()))
        if message["body"]:
            return message
