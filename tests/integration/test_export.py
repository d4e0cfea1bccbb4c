"""Export and import (XEP-0227): slixmpp users chat, keep a vCard, private XML and
an offline message; ``chatgate-admin export`` writes the domain as XEP-0227 and
as a transcript; a fresh chatgate (a new folder) imports the XEP-0227 file and
the users log in with their old passwords and read the same conversations by
MAM. A billion-laughs file is refused with one line, and so is a user that
exists already (unless --merge). A file a real Prosody exported
(``prosodyctl``'s mod_storage_xep0227) imports too."""

from __future__ import annotations

import os
import re
import stat
import xml.etree.ElementTree as ET
from collections.abc import Iterator

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Server, async_test, login, logout
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


def _require(what: str) -> None:
    if os.environ.get("CI") == "1":
        pytest.fail(f"{what} (CI=1: the test system packages must be installed)")
    pytest.skip(what)
