"""A signed-in user cannot forge what another user receives (SECURITY.md, "Output").

The attacker is a raw socket signed in as alice; everyone else is a real
client (slixmpp over c2s, the BOSH test client), and each of them records
every stanza its own parser reads. The oracle is what those bystanders get:
every message and presence is from the sender's real full JID (or the
server's own addresses), arrives once, and says what was sent — never a
stanza from ``boss@othercorp.org`` or an ``ofrom`` the sender made up.

The namespace attacks break out of a namespace declaration's quotes (a value
holding ``'/></message><message from='boss@…'>``); chatgate refuses such a
namespace name at parse time (``<bad-format/>``) and its serializer escapes
it anyway (tests/unit/test_xml_roundtrip.py proves the writer alone). The
hostile-but-legal message holds the same markup where XML allows it (escaped
text and attribute values) and must reach everyone intact: directly, as a
carbon, from offline storage, through an alias and from MAM.
"""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import slixmpp

from tests.integration.bosh_client import BOSHClient
from tests.integration.conftest import PASSWORD
from tests.integration.harness import Client, RawClient, Server, async_test, logout
from tests.integration.test_history import (
    CARBONS,
    CLIENT,
    FORWARD,
    body,
    connect,
    forwarded,
    inner,
    mam,
    new_users,
    until_quiet,
)

ADDRESS = "http://jabber.org/protocol/address"
FORGED_FROM = "boss@othercorp.org/x"


def namespace_attack(to: str) -> str:
    """The attack of the security review: a namespace value closing its quotes."""
    return (f"<message to='{to}' type='chat'><body>hi</body><x xmlns=\"urn:a'/>&lt;/message>"
            f"&lt;message from='{FORGED_FROM}' to='{to}' type='chat'>&lt;body>FORGED&lt;/body>"
            "&lt;/message>&lt;message type='chat'>&lt;x b='\"/></message>")


def presence_attack() -> str:
    return ("<presence><status>here</status><x xmlns=\"urn:a'/>&lt;/presence>"
            f"&lt;message from='{FORGED_FROM}' type='chat'>&lt;body>FORGED&lt;/body>&lt;/message>"
            "&lt;presence>&lt;x b='\"/></presence>")


def prefix_attack(to: str) -> str:
    """The same through a prefixed declaration, on an element and on an attribute."""
    return (f"<message to='{to}' type='chat'><body>hi</body>"
            f"<p:x xmlns:p=\"urn:a'/>&lt;/message>&lt;message from='{FORGED_FROM}' type='chat'>"
            "&lt;body>FORGED&lt;/body>&lt;/message>&lt;message>&lt;p:x b='\" p:y='1'/></message>")


#: what the hostile-but-legal message carries, as a receiver must read it
HOSTILE_BODY = f"</body></message><message from='{FORGED_FROM}'><body>FAKE</body></message> ]]> &amp; \"'"
HOSTILE_ID = "q'\"<>&"
HOSTILE_ATTR = f"'/><message from='{FORGED_FROM}'>\""


def hostile_message(to: str) -> str:
    """A legal message full of markup in its text and attribute values."""
    return (f"<message to='{to}' type='chat' id='q&apos;&quot;&lt;&gt;&amp;'>"
            f"<body>&lt;/body>&lt;/message>&lt;message from='{FORGED_FROM}'>&lt;body>FAKE&lt;/body>"
            "&lt;/message> ]]&gt; &amp;amp; &quot;&apos;</body>"
            f"<x xmlns='urn:example:x' a=\"&apos;/>&lt;message from='{FORGED_FROM}'>&quot;\"/></message>")


def check_hostile(message: ET.Element, sender: str) -> None:
    assert message.get("from") == sender
    assert message.get("id") == HOSTILE_ID
    assert body(message) == HOSTILE_BODY
    assert message.find("{urn:example:x}x").get("a") == HOSTILE_ATTR


class Watched:
    """Every stanza a slixmpp client's own parser read, in order."""

    def __init__(self, client: Client) -> None:
        self.client = client
        self.stanzas: list[ET.Element] = []
        client.add_filter("in", self._record)

    def _record(self, stanza: slixmpp.xmlstream.StanzaBase) -> slixmpp.xmlstream.StanzaBase:
        self.stanzas.append(stanza.xml)
        return stanza


def senders(stanzas: list[ET.Element], kind: str) -> set[str | None]:
    """The 'from' of every <kind/>, those forwarded inside another stanza included."""
    return {element.get("from") for stanza in stanzas for element in stanza.iter(f"{{{CLIENT}}}{kind}")}


def assert_unforged(stanzas: list[ET.Element], allowed: set[str | None], domain: str = "example.com") -> None:
    """Messages only from *allowed*, presence only from the domain's users; no
    address element, no text of a forged stanza."""
    assert senders(stanzas, "message") <= allowed, senders(stanzas, "message") - allowed
    for sender in senders(stanzas, "presence"):
        assert sender is None or sender.split("/")[0].endswith(f"@{domain}"), sender
    for stanza in stanzas:
        assert stanza.find(f".//{{{ADDRESS}}}address") is None, ET.tostring(stanza)
        assert "FORGED" not in "".join(stanza.itertext())


async def attacker(server: Server, localpart: str, resource: str,
                   domain: str = "example.com") -> tuple[RawClient, str]:
    raw = await RawClient.connect(server.port, domain)
    full = await raw.login(localpart, PASSWORD, resource)
    raw.received = b""
    return raw, full


async def attack(raw: RawClient, payload: str) -> bytes:
    """Send *payload*; what the attacker's stream says until it closes (or 3 s pass)."""
    raw.send(payload)
    try:
        return await raw.read_to_end(timeout=3)
    except TimeoutError:
        return raw.received
    finally:
        raw.close()


def assert_refused(answers: list[bytes]) -> None:
    """Each attack ended its stream with <bad-format/>."""
    for answer in answers:
        assert b"<bad-format xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>" in answer, answer


@async_test(timeout=120)
async def test_namespace_attacks_reach_no_one_on_any_transport(server):
    alice, bob, carol = await new_users(server, "alice", "bob", "carol")
    desk = await connect(server, f"{bob}/desk", carbons=True)
    phone = await connect(server, f"{bob}/phone", carbons=True)
    bystander = await connect(server, f"{carol}/desk")
    mirror = await connect(server, f"{alice}/desk", carbons=True)  # gets alice's sent carbons
    watched = [Watched(c) for c in (desk, phone, bystander, mirror)]
    pane = BOSHClient(server.http_port)
    await asyncio.to_thread(pane.login, bob.split("@")[0], PASSWORD, resource="pane")
    await asyncio.sleep(0.5)
    attackers, answers = set(), []
    for payload in (namespace_attack(bob), namespace_attack(f"{bob}/desk"), presence_attack(),
                    prefix_attack(bob)):
        raw, full = await attacker(server, alice.split("@")[0], f"evil{len(attackers)}")
        attackers.add(full)
        answers.append(await attack(raw, payload))
    # the same sender then writes something legal but hostile: it arrives once, intact, everywhere
    raw, full = await attacker(server, alice.split("@")[0], "hostile")
    attackers.add(full)
    raw.send(hostile_message(bob))
    bosh = await asyncio.to_thread(
        pane.wait_for, lambda s: s.tag == f"{{{CLIENT}}}message" and s.get("from") == full)
    await asyncio.sleep(0.5)
    raw.close()
    allowed = attackers | {alice, bob, carol, f"{alice}/desk", f"{bob}/desk", f"{bob}/phone", f"{carol}/desk",
                           pane.jid, None}
    for record in watched:
        assert_unforged(record.stanzas, allowed)
    assert_unforged(pane.stanzas, allowed)
    assert_refused(answers)

    check_hostile(bosh, full)
    for client in (desk, phone):
        got = await until_quiet(client)
        assert len(got) == 1
        check_hostile(got[0].xml, full)
    sent = await until_quiet(mirror)
    assert len(sent) == 1
    check_hostile(inner(sent[0], f"{{{CARBONS}}}sent", f"{{{FORWARD}}}forwarded", f"{{{CLIENT}}}message"), full)
    assert await until_quiet(bystander, 0.2) == []
    # everyone's sessions stayed up
    bystander.send_message(mto=bob, mbody="still here", mtype="chat")
    assert (await desk.next_message())["body"] == "still here"
    pane.close()
    await logout(desk, phone, bystander, mirror)


@async_test(timeout=120)
async def test_offline_and_mam_carry_nothing_forged(server):
    alice, bob = await new_users(server, "alice", "bob")
    answers = []
    for payload in (namespace_attack(bob), prefix_attack(bob)):
        raw, _ = await attacker(server, alice.split("@")[0], "evil")
        answers.append(await attack(raw, payload))
    raw, full = await attacker(server, alice.split("@")[0], "hostile")
    raw.send(hostile_message(bob))  # bob is offline: stored for him
    await asyncio.sleep(0.5)
    raw.close()

    laptop = await connect(server, f"{bob}/laptop")
    record = Watched(laptop)
    got = await until_quiet(laptop)
    assert_unforged(record.stanzas, {full, bob, f"{bob}/laptop", alice, None})
    assert len(got) == 1
    check_hostile(got[0].xml, full)

    for reader, owner in ((laptop, bob), (await connect(server, f"{alice}/desk"), alice)):
        page = await mam(reader, with_jid=alice if owner == bob else bob)
        assert_unforged([m.xml for m in page.results], {full, owner, None})
        assert len(page.results) == 1
        check_hostile(forwarded(page.results[0]), full)
        if reader is not laptop:
            await logout(reader)
    assert_unforged(record.stanzas, {full, bob, f"{bob}/laptop", alice, None})
    assert_refused(answers)
    await logout(laptop)


@async_test(timeout=120)
async def test_a_client_cannot_claim_another_sender_with_ofrom(server):
    alice, bob, carol = await new_users(server, "alice", "bob", "carol")
    await asyncio.to_thread(server.admin, "alias", "add", f"team{bob.split('@')[0]}@example.com", alice, bob,
                            carol)
    team = f"team{bob.split('@')[0]}@example.com"
    await asyncio.sleep(0.6)
    desk = await connect(server, f"{alice}/desk")
    laptop = await connect(server, f"{bob}/laptop")
    tablet = await connect(server, f"{carol}/tablet")
    claim = (f"<addresses xmlns='{ADDRESS}'><address type='ofrom' jid='{carol}'/>"
             "<address type='to' jid='boss@othercorp.org'/></addresses>")

    # a direct message: the claim is taken off
    message = desk.make_message(mto=bob, mbody="from carol, honest", mtype="chat")
    message.xml.append(ET.fromstring(claim))
    message.send()
    got = await laptop.next_message()
    assert got["from"] == f"{alice}/desk" and got["body"] == "from carol, honest"
    assert got.xml.find(f"{{{ADDRESS}}}addresses") is None

    # through the alias: only the server's own ofrom, naming the real sender
    message = desk.make_message(mto=team, mbody="to the team", mtype="chat")
    message.xml.append(ET.fromstring(claim))
    message.send()
    for member in (laptop, tablet):
        copy = await member.next_message()
        assert copy["from"] == f"{team}/{alice.split('@')[0]}" and copy["body"] == "to the team"
        addresses = copy.xml.findall(f"{{{ADDRESS}}}addresses/{{{ADDRESS}}}address")
        assert [(a.get("type"), a.get("jid")) for a in addresses] == [("ofrom", alice)]

    # in presence: taken off before the broadcast
    presence = desk.make_presence(pstatus="claims")
    presence.xml.append(ET.fromstring(claim))
    presence.send()
    seen = await laptop.wait_presence(lambda p: p["from"] == f"{alice}/desk" and p["status"] == "claims")
    assert seen.xml.find(f"{{{ADDRESS}}}addresses") is None
    await logout(desk, laptop, tablet)
