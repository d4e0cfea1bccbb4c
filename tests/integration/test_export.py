"""Export and import (XEP-0227): slixmpp users chat, keep a vCard, private XML and
an offline message; ``chatgate-admin export`` writes the domain as XEP-0227 and
as a transcript; a fresh chatgate (a new folder) imports the XEP-0227 file and
the users log in with their old passwords and read the same conversations by
MAM. A billion-laughs file is refused with one line, and so is a user that
exists already (unless --merge). And files a real Prosody wrote: users
registered with ``prosodyctl`` chat (MAM), keep a vCard and bookmarks on a
Prosody of their own, whose data ``prosody-migrator`` converts to its XEP-0227
storage (mod_storage_xep0227; Prosody 0.12 has no XEP-0227 form for offline
messages); chatgate imports them and the users log in with their Prosody
passwords (SCRAM-SHA-1: the keys Prosody keeps) and read the same history."""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from chatgate.tls import ensure_certificate
from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, free_port, login, logout
from tests.integration.test_history import mam

PIE = "{urn:xmpp:pie:0}"
VCARD = "<vCard xmlns='vcard-temp'><FN>Alice Archer</FN><NICKNAME>ali</NICKNAME></vCard>"
BOOKMARKS = "<storage xmlns='storage:bookmarks'><conference jid='team@conference.example.com' name='Team'/></storage>"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("export"))
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


async def iq_set(client, payload: str) -> None:
    iq = client.make_iq_set()
    iq.xml.append(ET.fromstring(payload))
    await iq.send(timeout=10)


async def bodies(server: Server, owner: str, contact: str) -> list[tuple[str, str]]:
    client = await login(server, f"{owner}/reader", PASSWORD)
    page = await mam(client, with_jid=contact)
    await logout(client)
    out = []
    for result in page.results:
        stamp = result.xml.find(".//{urn:xmpp:delay}delay").get("stamp")
        out.append((stamp[:19], result.xml.findtext(".//{jabber:client}body")))
    return out


async def chat(server: Server) -> None:
    alice = await login(server, "alice@example.com/desk", PASSWORD)
    bob = await login(server, "bob@example.com/desk", PASSWORD)
    await iq_set(alice, f"<query xmlns='jabber:iq:private'>{BOOKMARKS}</query>")
    await iq_set(alice, VCARD)
    alice.send_message(mto="bob@example.com", mbody="Hello Bob, ça va?", mtype="chat")
    await bob.next_message()
    bob.send_message(mto="alice@example.com", mbody="Fine <thanks> & you?\nsecond line", mtype="chat")
    await alice.next_message()
    alice.send_message(mto="carol@example.com", mbody="for when you are back", mtype="chat")
    await logout(alice, bob)


@async_test(timeout=240)
async def test_a_domain_exported_and_imported_into_a_fresh_server_keeps_logins_and_history(server, tmp_path):
    await chat(server)
    before = await bodies(server, "alice@example.com", "bob@example.com")
    assert [b for _, b in before] == ["Hello Bob, ça va?", "Fine <thanks> & you?\nsecond line"]

    pie, text = tmp_path / "example.xml", tmp_path / "example.txt"
    done = server.admin("export", "domain", "example.com", "--format", "xep0227", "--out", str(pie))
    assert "3 users of example.com" in done.stdout
    server.admin("export", "domain", "example.com", "--format", "transcript", "--out", str(text))
    assert stat.S_IMODE(os.stat(pie).st_mode) == 0o600 == stat.S_IMODE(os.stat(text).st_mode)

    # the transcript: one heading per conversation, one line per message, UTC
    transcript = text.read_text(encoding="utf-8")
    assert transcript.count("== alice@example.com with bob@example.com ==") == 1
    assert "bob@example.com with alice@example.com" not in transcript  # written once for the domain
    lines = [line for line in transcript.splitlines() if line.startswith("[")]
    assert re.fullmatch(r"\[\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\] Alice Archer: Hello Bob, ça va\?", lines[0])
    assert lines[0][1:20] == before[0][0].replace("T", " ")
    assert lines[1].endswith("] Bob Baker: Fine <thanks> & you? ↵ second line")
    assert "Alice Archer: for when you are back" in transcript  # alice's conversation with carol

    # the XEP-0227 document
    root = ET.parse(pie).getroot()
    assert root.tag == f"{PIE}server-data"
    host = root.find(f"{PIE}host")
    assert host.get("jid") == "example.com"
    users = {u.get("name"): u for u in host.findall(f"{PIE}user")}
    assert set(users) == {"alice", "bob", "carol"}
    alice = users["alice"]
    assert alice.get("password") is None and "correct horse" not in pie.read_text()
    scram = alice.findall("{urn:xmpp:pie:0#scram}scram-credentials")
    assert {s.get("mechanism") for s in scram} >= {"SCRAM-SHA-1", "SCRAM-SHA-256"}
    assert all(s.findtext("{urn:xmpp:pie:0#scram}iter-count") or s.findtext("iter-count") for s in scram)
    roster = alice.find("{jabber:iq:roster}query")
    assert {(i.get("jid"), i.get("subscription")) for i in roster} == {
        ("bob@example.com", "both"), ("carol@example.com", "both")}
    assert alice.find("{vcard-temp}vCard").findtext("{vcard-temp}NICKNAME") == "ali"
    assert alice.find("{jabber:iq:private}query/{storage:bookmarks}storage") is not None
    results = alice.findall("{urn:xmpp:pie:0#mam}archive/{urn:xmpp:mam:2}result")
    assert [r.findtext(".//{jabber:client}body") for r in results] == [
        "Hello Bob, ça va?", "Fine <thanks> & you?\nsecond line", "for when you are back"]
    offline = users["carol"].findall("{urn:xmpp:pie:0}offline-messages/{jabber:client}message")
    assert [m.findtext("{jabber:client}body") for m in offline] == ["for when you are back"]

    # a user's own export holds only them
    one = tmp_path / "bob.xml"
    server.admin("export", "user", "bob@example.com", "--format", "xep0227", "--out", str(one))
    assert [u.get("name") for u in ET.parse(one).getroot().iter(f"{PIE}user")] == ["bob"]
    # carol's offline message is still waiting for her
    carol = await login(server, "carol@example.com/desk", PASSWORD)
    assert (await carol.next_message())["body"] == "for when you are back"
    await logout(carol)

    # errors are one line
    bad = server.admin("export", "domain", "nowhere.example", "--format", "xep0227", "--out", str(one), check=False)
    assert bad.returncode == 1 and bad.stderr == "chatgate-admin: unknown domain: nowhere.example\n"

    # a fresh chatgate imports it
    (tmp_path / "fresh").mkdir()
    fresh = Server(tmp_path / "fresh")
    imported = fresh.admin("import", str(pie))
    assert "3 users" in imported.stdout
    again = fresh.admin("import", str(pie), check=False)
    assert again.returncode == 1
    assert again.stderr.startswith("chatgate-admin: ") and "alice@example.com" in again.stderr
    assert again.stderr.count("\n") == 1
    fresh.start()
    try:
        assert await bodies(fresh, "alice@example.com", "bob@example.com") == before
        assert [b for _, b in await bodies(fresh, "bob@example.com", "alice@example.com")] == [
            b for _, b in before]
        alice = await login(fresh, "alice@example.com/desk", PASSWORD)
        iq = alice.make_iq_get()
        iq.xml.append(ET.fromstring("<vCard xmlns='vcard-temp'/>"))
        reply = await iq.send(timeout=10)
        iq = alice.make_iq_get()
        iq.xml.append(ET.fromstring("<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>"))
        private = await iq.send(timeout=10)
        await logout(alice)
        assert reply.xml.findtext("{vcard-temp}vCard/{vcard-temp}NICKNAME") == "ali"
        assert private.xml.find(".//{storage:bookmarks}conference").get("name") == "Team"
        carol = await login(fresh, "carol@example.com/desk", PASSWORD)
        assert (await carol.next_message())["body"] == "for when you are back"
        await logout(carol)
        # the merge keeps what is there and adds no second copy of a message
        merged = fresh.admin("import", "--merge", str(pie))
        assert merged.returncode == 0
        assert await bodies(fresh, "alice@example.com", "bob@example.com") == before
    finally:
        fresh.stop()


def test_a_billion_laughs_file_is_refused_in_one_line(tmp_path):
    bomb = tmp_path / "laughs.xml"
    entities = "".join(f"<!ENTITY lol{i} '{f'&lol{i - 1};' * 10}'>" for i in range(1, 10))
    bomb.write_text(f"<?xml version='1.0'?><!DOCTYPE lolz [<!ENTITY lol0 'lol'>{entities}]>"
                    "<server-data xmlns='urn:xmpp:pie:0'><host jid='example.com'>"
                    "<user name='x'>&lol9;</user></host></server-data>")
    (tmp_path / "bomb").mkdir()
    fresh = Server(tmp_path / "bomb")
    result = fresh.admin("import", str(bomb), check=False)
    assert result.returncode == 1
    assert result.stderr.startswith("chatgate-admin: ") and result.stderr.count("\n") == 1
    assert "DOCTYPE" in result.stderr


# -- a file a real Prosody wrote

MIGRATOR = "/usr/bin/prosody-migrator"
PROSODY_CONFIG = """\
data_path = "{folder}/data"
pidfile = "{folder}/prosody.pid"
log = {{ info = "{folder}/prosody.log" }}
c2s_ports = {{ {port} }}
c2s_interfaces = {{ "127.0.0.1" }}
s2s_ports = {{}}
http_ports = {{}}
https_ports = {{}}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "private"; "vcard"; "offline"; "mam"; "posix" }}
modules_disabled = {{ "s2s" }}
authentication = "internal_hashed"
storage = "internal"
archive_expires_after = "never"
default_archive_policy = true
ssl = {{ certificate = "{folder}/cert.pem"; key = "{folder}/key.pem" }}
VirtualHost "example.com"
"""
#: prosody-migrator: Prosody's internal files of example.com to XEP-0227, one file per user
MIGRATOR_CONFIG = """\
input {{
    hosts = {{ ["example.com"] = {{ "accounts", "roster", "vcard", "private", "archive-archive" }} }};
    type = "internal";
    path = "{folder}/data";
}}
output {{ type = "xep0227"; }}
"""


def require_prosody() -> None:
    """Skip (fail with CI set) unless Prosody and its migrator are installed (make test-deps)."""
    missing = [name for name in ("prosody", "prosodyctl", "lua5.4") if shutil.which(name) is None]
    if missing or not os.path.exists(MIGRATOR):
        reason = f"{', '.join(missing) or MIGRATOR} not installed (make test-deps: the prosody package)"
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


class Prosody:
    """A Prosody of its own in a folder of its own (its user's when run by root: Prosody refuses root)."""

    def __init__(self) -> None:
        self.folder = Path(tempfile.mkdtemp(prefix="chatgate-prosody-"))
        self.port = free_port()
        self.user = "prosody" if os.geteuid() == 0 else None
        (self.folder / "data").mkdir()
        (self.folder / "out").mkdir()
        ensure_certificate(str(self.folder / "cert.pem"), str(self.folder / "key.pem"), ["example.com"])
        self.config = self.folder / "prosody.cfg.lua"
        self.config.write_text(PROSODY_CONFIG.format(folder=self.folder, port=self.port))
        (self.folder / "migrator.cfg.lua").write_text(MIGRATOR_CONFIG.format(folder=self.folder))
        # prosody-migrator writes XEP-0227 files into its compiled-in data folder (/var/lib/prosody):
        # the same script with this folder's out/ in its place
        script = Path(MIGRATOR).read_text()
        (self.folder / "migrator.lua").write_text(
            re.sub(r"(?m)^CFG_DATADIR=.*$", f"CFG_DATADIR='{self.folder}/out';", script))
        if self.user:
            for path in [self.folder, *self.folder.rglob("*")]:
                shutil.chown(path, self.user, self.user)
        self.process: subprocess.Popen[bytes] | None = None

    def run(self, *command: str) -> str:
        result = subprocess.run(command, user=self.user, capture_output=True, text=True, timeout=60,
                                cwd=self.folder)
        assert result.returncode == 0, f"{command} failed: {result.stdout}{result.stderr}"
        return result.stdout

    def start(self) -> None:
        self.process = subprocess.Popen(["prosody", "--config", str(self.config), "-F"], user=self.user,
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=self.folder)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            assert self.process.poll() is None, f"prosody exited: {self.log_text()}"
            try:
                socket.create_connection(("127.0.0.1", self.port), 1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise AssertionError(f"prosody did not start: {self.log_text()}")

    stop = Server.stop  # SIGTERM, SIGKILL after 15 s

    def log_text(self) -> str:
        try:
            return (self.folder / "prosody.log").read_text()
        except OSError:
            return ""

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@async_test(timeout=240)
async def test_a_file_prosody_exported_imports_into_chatgate(tmp_path):
    require_prosody()
    prosody = Prosody()
    try:
        for name in ("alice", "bob"):
            prosody.run("prosodyctl", "--config", str(prosody.config), "register", name, "example.com",
                        f"prosody {name} secret")
        prosody.start()
        alice = await login(prosody, "alice@example.com/desk", "prosody alice secret")
        bob = await login(prosody, "bob@example.com/desk", "prosody bob secret")
        await iq_set(alice, VCARD)
        await iq_set(alice, f"<query xmlns='jabber:iq:private'>{BOOKMARKS}</query>")
        alice.send_message(mto="bob@example.com", mbody="hi from Prosody", mtype="chat")
        await bob.next_message()
        bob.send_message(mto="alice@example.com", mbody="hello back, ünïcode", mtype="chat")
        await alice.next_message()
        await logout(alice, bob)
        await asyncio.sleep(0.5)  # Prosody's archive is written as it goes
        prosody.stop()
        # Prosody's own storage conversion tool, to its XEP-0227 storage driver
        prosody.run("lua5.4", str(prosody.folder / "migrator.lua"),
                    f"--config={prosody.folder / 'migrator.cfg.lua'}", "input", "output")
        files = sorted((prosody.folder / "out").glob("*@example.com.xml"))
        assert [f.name for f in files] == ["alice@example.com.xml", "bob@example.com.xml"]
        for f in files:
            shutil.copy(f, tmp_path / f.name)
    finally:
        prosody.cleanup()

    (tmp_path / "chatgate").mkdir()
    chatgate = Server(tmp_path / "chatgate")
    for f in ("alice@example.com.xml", "bob@example.com.xml"):
        done = chatgate.admin("import", str(tmp_path / f))
        assert "imported 1 user, 2 archived" in done.stdout
    chatgate.start()
    try:
        # Prosody keeps SCRAM-SHA-1 keys only: the old password logs in with that mechanism
        alice = await login(chatgate, "alice@example.com/desk", "prosody alice secret", mechanism="SCRAM-SHA-1")
        page = await mam(alice, with_jid="bob@example.com")
        assert [r.xml.findtext(".//{jabber:client}body") for r in page.results] == [
            "hi from Prosody", "hello back, ünïcode"]
        iq = alice.make_iq_get()
        iq.xml.append(ET.fromstring("<vCard xmlns='vcard-temp'/>"))
        reply = await iq.send(timeout=10)
        assert reply.xml.findtext("{vcard-temp}vCard/{vcard-temp}NICKNAME") == "ali"
        iq = alice.make_iq_get()
        iq.xml.append(ET.fromstring("<query xmlns='jabber:iq:private'><storage xmlns='storage:bookmarks'/></query>"))
        private = await iq.send(timeout=10)
        assert private.xml.find(".//{storage:bookmarks}conference").get("name") == "Team"
        await logout(alice)
        bob = await login(chatgate, "bob@example.com/desk", "prosody bob secret", mechanism="SCRAM-SHA-1")
        page = await mam(bob, with_jid="alice@example.com")
        assert [r.xml.findtext(".//{jabber:client}body") for r in page.results] == [
            "hi from Prosody", "hello back, ünïcode"]
        await logout(bob)
    finally:
        chatgate.stop()
