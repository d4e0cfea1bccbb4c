"""mcabber, Debian's console client (on loudmouth), run in a detached tmux
session against a real chatgate, read from its screen (``tmux capture-pane``)
and its trace log: it connects with STARTTLS (the test's self-signed
certificate unchecked), gets answers to its private storage queries for
bookmarks and roster notes (XEP-0048 and XEP-0145 on XEP-0049) with no
"Server does not support ... storage" in its log window, and chats both ways
with a slixmpp user.

``make test`` installs mcabber and tmux (apt-get, ``make test-deps``). Run by
hand without them, the test is skipped; in CI it fails instead.
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORD
from tests.integration.harness import Server, async_test, login, logout

#: what mcabber says in its log window when private storage fails it
COMPLAINTS = (
    "Server does not support bookmarks storage",
    "Server does not support roster notes storage",
    "your server doesn't seem to support private storage",
    "Invalid IQ:private result",
)
SESSION = "mcabber"


def require() -> None:
    """Skip (fail with CI set) unless mcabber and tmux are installed."""
    missing = [name for name in ("mcabber", "tmux") if shutil.which(name) is None]
    if missing:
        reason = f"{' and '.join(missing)} not installed (make test-deps)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


@pytest.fixture(scope="module", autouse=True)
def installed() -> None:
    require()  # before the server is started


class Mcabber:
    """mcabber as *jid*/*resource* in a tmux server of its own (its own socket), HOME in *folder*."""

    def __init__(self, folder: Path, server: Server, jid: str, resource: str) -> None:
        self.home = folder / "home"
        config = self.home / ".mcabber"
        config.mkdir(parents=True, mode=0o700)
        self.config = config / "mcabberrc"
        self.trace = folder / "mcabber-trace.log"
        self.socket = folder / "tmux.sock"
        self.config.write_text("\n".join([
            f"set jid = {jid}",
            f'set password = "{PASSWORD}"',
            "set server = 127.0.0.1",
            f"set port = {server.port}",
            f"set resource = {resource}",
            "set disable_random_resource = 1",
            # STARTTLS; the test server's certificate is self-signed
            "set tls = 1",
            "set ssl_ignore_checks = 1",
            # the log window's lines and the XML, to a file
            "set tracelog_level = 3",
            f"set tracelog_file = {self.trace}",
            "set logging = 0",
            "set log_win_height = 12",
        ]) + "\n")
        self.config.chmod(0o600)

    def _tmux(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["tmux", "-S", str(self.socket), *args], capture_output=True, text=True,
                              timeout=10, check=check)

    def start(self) -> None:
        command = f"mcabber -f {shlex.quote(str(self.config))}"
        subprocess.run(["tmux", "-S", str(self.socket), "-f", "/dev/null", "new-session", "-d", "-s", SESSION,
                        "-x", "160", "-y", "48", command],
                       env={**os.environ, "HOME": str(self.home), "LANG": "C.UTF-8"},
                       capture_output=True, text=True, timeout=10, check=True)

    def screen(self) -> str:
        """What the terminal shows now (roster, chat window, log window, status line)."""
        return self._tmux("capture-pane", "-p", "-t", SESSION).stdout

    def keys(self, *keys: str) -> None:
        self._tmux("send-keys", "-t", SESSION, *keys)

    def traced(self) -> str:
        try:
            return self.trace.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def received(self) -> str:
        """The stream from the server as far as mcabber has read it: its trace quotes each read,
        one line a read, a read ending anywhere in a stanza."""
        return "".join(re.findall(r"LM-NET: '(.*)'$", self.traced(), re.M))

    def answered(self, namespace: str) -> bool:
        """Whether the server's answer (result or error) to mcabber's private storage query for
        *namespace* has come."""
        asked = re.search(r'<iq type="get" id="([^"]+)"><query xmlns="jabber:iq:private">'
                          rf'<storage xmlns="{re.escape(namespace)}">', self.traced())
        return asked is not None and re.search(rf"<iq [^>]*id=['\"]{re.escape(asked.group(1))}['\"]",
                                               self.received()) is not None

    def stop(self) -> None:
        if self._tmux("has-session", "-t", SESSION, check=False).returncode == 0:
            self.keys("/quit", "Enter")
            for _ in range(50):
                if self._tmux("has-session", "-t", SESSION, check=False).returncode != 0:
                    break
                time.sleep(0.1)
        self._tmux("kill-server", check=False)  # this test's own tmux server only

    def state(self) -> str:
        """For failure messages."""
        return f"screen:\n{self.screen()}\ntrace ends:\n{self.traced()[-3000:]}"


async def until(console: Mcabber, done: Callable[[], bool], what: str, timeout: float = 20) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not done():
        if loop.time() > deadline:
            raise AssertionError(f"mcabber: {what} not within {timeout}s\n{console.state()}")
        await asyncio.sleep(0.1)


@async_test(timeout=90)
async def test_mcabber_connects_finds_private_storage_and_chats(server, tmp_path):
    bob = await login(server, "bob@example.com/slix", PASSWORD)
    console = Mcabber(tmp_path, server, "alice@example.com", "console")
    console.start()
    try:
        # connected and online: its log window says so, and bob sees its presence
        await until(console, lambda: "Connection established." in console.screen(), "connected")
        await bob.wait_presence(lambda p: str(p["from"]) == "alice@example.com/console"
                                and p["type"] != "unavailable", 20)
        await until(console, lambda: "Your status has been set: [_>o]" in console.traced(), "online")
        # both private storage queries answered, neither answer a complaint
        await until(console, lambda: console.answered("storage:bookmarks"), "the bookmarks answer")
        await until(console, lambda: console.answered("storage:rosternotes"), "the roster notes answer")

        # a message from bob: in its chat window once opened
        bob.send_message(mto="alice@example.com", mbody="hello from slixmpp", mtype="chat")
        await until(console, lambda: "hello from slixmpp" in console.traced(), "bob's message received")
        console.keys("/roster unread_first", "Enter")
        console.keys("Enter")  # an empty line: the chat window of the selected buddy
        await until(console, lambda: "<== hello from slixmpp" in console.screen(), "bob's message shown")
        # and its answer reaches bob
        console.keys("/say_to bob@example.com/slix hello from the console", "Enter")
        got = await bob.next_message(10)
        assert (str(got["from"]), got["body"]) == ("alice@example.com/console", "hello from the console")
        await until(console, lambda: "--> hello from the console" in console.screen(), "its message shown")

        screen, trace = console.screen(), console.traced()
        for complaint in COMPLAINTS:
            assert complaint not in screen and complaint not in trace, f"mcabber says {complaint!r}\n" \
                                                                          f"{console.state()}"
    finally:
        console.stop()
    await logout(bob)
