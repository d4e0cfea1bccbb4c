"""An independent BOSH client in a real browser: Strophe.js (from npm) in
headless Chromium (Debian's), driven by playwright, logs in to chatgate over
BOSH from a page of another origin (CORS), gets its roster and presence, and
chats both ways with a slixmpp user on c2s.

``make test`` installs what this needs (chromium via apt-get, Strophe.js via
``npm ci`` in tests/browser, playwright with the test extras). Run by hand
without them, the test is skipped; in CI it fails instead.
"""

from __future__ import annotations

import functools
import http.server
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import REPO, Server, async_test, login, logout

CHROMIUM = "/usr/bin/chromium"
PAGES = REPO / "tests" / "browser"
STROPHE = PAGES / "node_modules" / "strophe.js" / "dist" / "strophe.umd.min.js"
ARTIFACTS = REPO / "test-artifacts"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]


def require(script: Path, name: str) -> None:
    """Skip (fail with CI set) unless Chromium, playwright and *script*, the
    client *name* from tests/browser's node_modules, are installed."""
    reason = None
    if not os.path.exists(CHROMIUM):
        reason = f"{CHROMIUM} is not installed (make test-deps)"
    elif not script.exists():
        reason = f"{name} is not installed (make browser-deps)"
    else:
        try:
            import playwright  # noqa: F401
        except ImportError:
            reason = "playwright is not installed (pip install -e '.[test]')"
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@contextmanager
def served_pages() -> Iterator[str]:
    """tests/browser served on its own port: an origin other than chatgate's."""

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(PAGES)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}"
    finally:
        httpd.shutdown()
        httpd.server_close()


@pytest.fixture(scope="module")
def pages() -> Iterator[str]:
    require(STROPHE, "Strophe.js")
    with served_pages() as origin:
        yield origin


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, pages: str) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("bosh-browser"), http={"cors_origins": pages})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


@async_test(timeout=120)
async def test_strophe_in_chromium_chats_with_a_c2s_user(server, pages):
    from playwright.async_api import async_playwright

    bob = await login(server, "bob@example.com/desk", PASSWORD)
    console: list[str] = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = await browser.new_page()
        page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: console.append(f"error: {e}"))
        try:
            await page.goto(f"{pages}/bosh.html")
            await page.evaluate("([url, jid, password]) => chat.connect(url, jid, password)",
                                [server.bosh_url, "alice@example.com/browser", PASSWORD])
            await page.wait_for_function("chat.status.some(s => s[0] === 'CONNECTED')", timeout=20000)
            assert await page.evaluate("chat.jid") == "alice@example.com/browser"
            assert "login alice@example.com via SCRAM-SHA-256" in server.log_text()

            # the roster is the domain, with the directory's names
            await page.wait_for_function("chat.roster.length >= 2", timeout=10000)
            roster = await page.evaluate("chat.roster")
            assert sorted((r["jid"], r["name"]) for r in roster) == [
                ("bob@example.com", "Bob Baker"), ("carol@example.com", "Carol Carter")]

            # presence both ways
            await page.wait_for_function(
                "chat.presences.some(p => p.from === 'bob@example.com/desk' && !p.type)", timeout=10000)
            await bob.wait_presence(lambda p: p["from"] == "alice@example.com/browser")
            await page.evaluate("chat.setShow('away')")
            await bob.wait_presence(lambda p: p["from"] == "alice@example.com/browser" and p["show"] == "away")

            # chat both ways
            bob.send_message(mto="alice@example.com", mbody="hello, browser", mtype="chat")
            await page.wait_for_function(
                "chat.messages.some(m => m.body === 'hello, browser' && m.from === 'bob@example.com/desk')",
                timeout=10000)
            await page.evaluate("chat.send('bob@example.com', 'hello from Strophe')")
            reply = await bob.next_message()
            assert (reply["body"], str(reply["from"])) == ("hello from Strophe", "alice@example.com/browser")

            # several messages in a row arrive in order
            for n in range(5):
                bob.send_message(mto="alice@example.com/browser", mbody=f"burst {n}", mtype="chat")
            await page.wait_for_function("chat.messages.filter(m => m.body.startsWith('burst')).length === 5",
                                         timeout=10000)
            bodies = await page.evaluate("chat.messages.map(m => m.body).filter(b => b.startsWith('burst'))")
            assert bodies == [f"burst {n}" for n in range(5)]

            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "bosh-browser.png"))

            # logging out ends the BOSH session; bob sees alice go
            await page.evaluate("chat.disconnect()")
            await page.wait_for_function("chat.status.some(s => s[0] === 'DISCONNECTED')", timeout=10000)
            await bob.wait_presence(lambda p: p["from"] == "alice@example.com/browser" and p["type"] == "unavailable")
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "bosh-browser.png"))
            print("browser console:", *console, sep="\n  ")
            print("server log:", server.log_text()[-3000:])
            raise
        finally:
            await browser.close()
    await logout(bob)
    assert not [line for line in console if line.startswith("error")], console
    assert server.alive()

