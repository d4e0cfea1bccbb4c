"""The audit trail: admin API and chatgate-admin changes are logged with their
operation, target and caller and never with a password, token or key; failed
/history and /chat/token sign-ins are logged like failed XMPP logins."""

from __future__ import annotations

import base64
import os
import pwd
import re
import stat
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

from tests.integration import test_admin_api
from tests.integration.harness import RawClient, Server, async_test
from tests.integration.test_admin_api import KEY, call

#: the admin API tests' chatgate (admin API and login tokens on), a fresh one for this module
server = test_admin_api.server

#: what an administrator types: none of it may reach a log
API_PASSWORDS = ("api-first-Secret-pw", "api-second-Secret-pw")
CLI_PASSWORDS = ("cli-stdin-Secret-pw", "cli-argument-Secret-pw", "cli-csv-Secret-pw")
OS_USER = pwd.getpwuid(os.getuid()).pw_name

#: a failed sign-in line, XMPP's wording: domain, peer, transport, condition
REFUSED = re.compile(r"refused login to (\S+) from (\S+) \(([^)]+)\): (\S+)$")


def web(server: Server, method: str, path: str, user: str, password: str) -> int:
    """A request to the web listener with HTTP Basic credentials; its status."""
    request = urllib.request.Request(f"http://127.0.0.1:{server.http_port}{path}", method=method,
                                     data=b"" if method == "POST" else None)
    request.add_header("Authorization", "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode())
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as e:
        return e.code


def wait_for_lines(read: Callable[[], str], wanted: list[str], timeout: float = 10) -> list[str]:
    """The lines of read() once every one of *wanted* is found in one of them (bounded wait)."""
    deadline = time.monotonic() + timeout
    while True:
        lines = read().splitlines()
        missing = [w for w in wanted if not any(w in line for line in lines)]
        if not missing:
            return lines
        if time.monotonic() > deadline:
            raise AssertionError(f"not logged: {missing}\n" + "\n".join(lines[-30:]))
        time.sleep(0.1)


def changes(lines: list[str], via: str) -> list[str]:
    return [line.split(" admin-change ", 1)[1] for line in lines if " admin-change " in line and f"via={via}" in line]


def test_admin_api_changes_name_the_operation_target_and_caller(server: Server) -> None:
    assert call(server, "POST", "/api/domains", {"name": "Audit.Example"})[0] == 201
    assert call(server, "POST", "/api/domains", {"name": "audit.example"})[0] == 409  # refused: no change
    assert call(server, "GET", "/api/domains")[0] == 200  # a read: no change
    assert call(server, "POST", "/api/users", {"jid": "Gina@audit.example", "password": API_PASSWORDS[0]})[0] == 201
    assert call(server, "PUT", "/api/users/gina@audit.example/password", {"password": API_PASSWORDS[1]})[0] == 204
    members = {"members": ["gina@audit.example"]}
    assert call(server, "POST", "/api/aliases/team@audit.example/members", members)[0] == 200
    assert call(server, "DELETE", "/api/aliases/team@audit.example")[0] == 204
    assert call(server, "PUT", "/api/sites/Mail.Audit.Example", {"owner": "Reseller"})[0] == 200
    assert call(server, "DELETE", "/api/sites/mail.audit.example")[0] == 204
    status, minted = call(server, "POST", "/api/tokens", {"user": "gina@audit.example"})
    assert status == 201
    assert call(server, "PATCH", "/api/domains/audit.example", {"chat_enabled": False})[0] == 200
    assert call(server, "DELETE", "/api/users/gina@audit.example")[0] == 204

    expected = [
        "operation=domain.add target=audit.example",
        "operation=user.add target=gina@audit.example",
        "operation=user.passwd target=gina@audit.example",
        "operation=alias.add target=team@audit.example",
        "operation=alias.remove target=team@audit.example",
        "operation=site.put target=mail.audit.example",
        "operation=site.remove target=mail.audit.example",
        "operation=token.mint target=gina@audit.example",
        "operation=domain.disable target=audit.example",
        "operation=user.remove target=gina@audit.example",
    ]
    lines = wait_for_lines(server.log_text, [f"{e} caller=127.0.0.1 via=api" for e in expected])
    assert changes(lines, "api") == [f"{e} caller=127.0.0.1 via=api" for e in expected]  # one each, in order
    assert all("[chatgate.audit#info]" in line for line in lines if " admin-change " in line)
    text = server.log_text()
    for secret in (*API_PASSWORDS, KEY, minted["token"]):
        assert secret not in text


def test_a_wrong_admin_key_is_logged_without_the_key(server: Server) -> None:
    assert call(server, "DELETE", "/api/users/alice@example.com", key="a-guessed-admin-key")[0] == 401
    wait_for_lines(server.log_text, [
        "refused admin API call DELETE /api/users/alice@example.com from 127.0.0.1: missing or wrong key"])
    assert "a-guessed-admin-key" not in server.log_text()
    assert not any("target=alice@example.com" in line for line in changes(server.log_text().splitlines(), "api"))


def test_chatgate_admin_changes_go_to_its_audit_log(server: Server) -> None:
    audit_log = server.folder / "admin-audit.log"  # beside the database
    provisioned = len(changes(audit_log.read_text().splitlines(), "cli"))  # the fixture's own commands
    assert provisioned == 3 + 5 + 1
    outputs = [
        server.admin("domain", "add", "CLI.Example"),
        server.admin("user", "add", "Hal@cli.example", "--name", "Hal", "--password-stdin",
                     stdin=CLI_PASSWORDS[0] + "\n"),
        server.admin("user", "passwd", "hal@cli.example", "--password", CLI_PASSWORDS[1]),
        server.admin("user", "list", "cli.example"),  # a read: no line
        server.admin("alias", "add", "desk@cli.example", "hal@cli.example"),
        server.admin("alias", "members", "desk@cli.example"),  # a read
        server.admin("site", "add", "mail.cli.example"),
        server.admin("site", "hide", "mail.cli.example"),
        server.admin("token", "hal@cli.example"),
    ]
    token = outputs[-1].stdout.strip()
    csv = server.folder / "users.csv"
    csv.write_text(f"jid,name,password\nivy@cli.example,Ivy,{CLI_PASSWORDS[2]}\n")
    outputs += [
        server.admin("user", "import", str(csv)),
        server.admin("user", "remove", "ivy@cli.example"),
        server.admin("domain", "disable", "cli.example"),
    ]
    by = f"caller={OS_USER} via=cli"
    assert changes(audit_log.read_text().splitlines(), "cli")[provisioned:] == [
        f"operation=domain.add target=cli.example {by}",
        f"operation=user.add target=hal@cli.example {by}",
        f"operation=user.passwd target=hal@cli.example {by}",
        f"operation=alias.add target=desk@cli.example {by}",
        f"operation=site.add target=mail.cli.example {by}",
        f"operation=site.hide target=mail.cli.example {by}",
        f"operation=token.mint target=hal@cli.example {by}",
        f"operation=user.import target={csv} {by}",
        f"operation=user.remove target=ivy@cli.example {by}",
        f"operation=domain.disable target=cli.example {by}",
    ]
    assert stat.S_IMODE(audit_log.stat().st_mode) == 0o600
    everything = audit_log.read_text() + server.log_text() + "".join(o.stdout + o.stderr for o in outputs[:-4])
    for secret in (*CLI_PASSWORDS, token):
        assert secret not in everything


def test_chatgate_admin_changes_nothing_when_it_cannot_write_its_audit_log(tmp_path: Path):
    server = Server(tmp_path)
    (tmp_path / "admin-audit.log").mkdir()  # unwritable as a file, even for root
    result = server.admin("domain", "add", "example.com", check=False)
    assert result.returncode == 1
    assert result.stderr == (
        f"chatgate-admin: cannot write the audit log {tmp_path / 'admin-audit.log'}: Is a directory\n")
    assert server.admin("domain", "list").stdout == ""  # reads need no audit log


@async_test()
async def test_failed_history_and_token_sign_ins_are_logged_like_xmpp_logins(server: Server) -> None:
    raw = await RawClient.connect(server.port)
    await raw.starttls()
    name, _ = await raw.plain("alice", "wrong-xmpp-password")
    assert name == "failure"
    raw.close()
    assert web(server, "GET", "/history/contacts", "bob@example.com", "wrong-history-password") == 401
    assert web(server, "POST", "/chat/token", "carol@example.com", "wrong-token-password") == 401
    assert web(server, "GET", "/history/contacts", "mallory@nowhere.example", "anything-at-all") == 401

    lines = wait_for_lines(server.log_text, ["(c2s): not-authorized", "(http /history/contacts): not-authorized",
                                             "(http /chat/token): not-authorized", "to nowhere.example from"])
    # the same fields in the same words: domain, the client as address:port, transport, SASL condition
    refused = {(domain, re.sub(r":\d+$", ":port", peer), transport, condition)
               for line in lines if (m := REFUSED.search(line)) for domain, peer, transport, condition in [m.groups()]}
    assert {
        ("example.com", "127.0.0.1:port", "c2s", "not-authorized"),
        ("example.com", "127.0.0.1:port", "http /history/contacts", "not-authorized"),
        ("example.com", "127.0.0.1:port", "http /chat/token", "not-authorized"),
        ("nowhere.example", "127.0.0.1:port", "http /history/contacts", "not-authorized"),
    } <= refused, refused
    text = server.log_text()
    for secret in ("wrong-xmpp-password", "wrong-history-password", "wrong-token-password", "anything-at-all"):
        assert secret not in text
