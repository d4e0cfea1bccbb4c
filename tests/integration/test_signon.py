"""Webmail sign-on: a login token stands in for the password, for its user only."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from tests.integration.conftest import provision
from tests.integration.harness import LoginFailed, Server, async_test, login, logout

SECRET = "a-webmail-secret-of-at-least-32-characters"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("signon"), webmail={"token_secret": SECRET})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


def token(server: Server, jid: str, *extra: str) -> str:
    return server.admin("token", jid, *extra).stdout.strip()


@async_test()
async def test_token_logs_its_user_in(server):
    alice = await login(server, "alice@example.com/webmail", token(server, "alice@example.com"), mechanism="PLAIN")
    bob = await login(server, "bob@example.com/desk", token(server, "bob@example.com"), mechanism="PLAIN")
    alice.send_message(mto="bob@example.com", mbody="signed in by the webmail", mtype="chat")
    assert (await bob.next_message())["body"] == "signed in by the webmail"
    await logout(alice, bob)
    assert token(server, "alice@example.com") not in server.log_text()


@async_test()
async def test_bad_tokens_are_refused(server):
    alices = token(server, "alice@example.com")
    with pytest.raises(LoginFailed):  # another user's token
        await login(server, "bob@example.com/x", alices, mechanism="PLAIN")
    tampered = alices[:-3] + ("AAA" if not alices.endswith("AAA") else "BBB")
    with pytest.raises(LoginFailed):
        await login(server, "alice@example.com/x", tampered, mechanism="PLAIN")
    short = token(server, "carol@example.com", "--lifetime", "1")
    await asyncio.sleep(2.1)
    with pytest.raises(LoginFailed):
        await login(server, "carol@example.com/x", short, mechanism="PLAIN")


def test_token_command_errors(server):
    result = server.admin("token", "nobody@example.com", check=False)
    assert (result.returncode, result.stderr) == (1, "chatgate-admin: unknown user: nobody@example.com\n")
    result = server.admin("token", "alice@example.com", "--lifetime", "86400", check=False)
    assert (result.returncode, result.stderr) == (
        1, "chatgate-admin: the lifetime must not exceed [webmail] token_max_age (43200 s)\n")
