"""A running chatgate with a few domains and users, shared by a test module."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.harness import Server

PASSWORD = "correct horse 42"

#: jid -> display name; example.com and other.org chat, closed.net has chat disabled
USERS = {
    "alice@example.com": "Alice Archer",
    "bob@example.com": "Bob Baker",
    "carol@example.com": "Carol Carter",
    "dave@other.org": "Dave Dawson",
    "erin@closed.net": "Erin Ellis",
}


def provision(server: Server) -> None:
    for domain in ("example.com", "other.org", "closed.net"):
        server.admin("domain", "add", domain)
    for jid, name in USERS.items():
        server.admin("user", "add", jid, "--name", name, "--password-stdin", stdin=PASSWORD + "\n")
    server.admin("domain", "disable", "closed.net")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("chatgate"))
    provision(srv)
    srv.start()
    yield srv
    srv.stop()
