"""OMEMO (XEP-0384) through chatgate between two real slixmpp clients with the
slixmpp-omemo plugin: each publishes its device lists and key bundles in its
own PEP service (the legacy ``eu.siacs.conversations.axolotl`` nodes and the
OMEMO 2 ``urn:xmpp:omemo:2`` ones), learns the other's device list from a
PEP notification (+notify in its capabilities), fetches the other's bundle,
and the two exchange encrypted messages both ways (in the legacy namespace:
slixmpp-omemo 2 encrypts OMEMO 2 only once slixmpp has XEP-0420). What
chatgate keeps (MAM, and the SQLite files themselves) holds the ciphertext
and never the text."""

from __future__ import annotations

import asyncio
import sys
import xml.etree.ElementTree as ET

import slixmpp
from omemo.storage import Just, Maybe, Nothing, Storage
from omemo.types import DeviceInformation, JSONType
from slixmpp.jid import JID
from slixmpp.plugins import register_plugin
from slixmpp_omemo import XEP_0384

from tests.integration.conftest import PASSWORD
from tests.integration.harness import Client, Server, async_test, login, logout
from tests.integration.test_history import forwarded, mam

OLD = "eu.siacs.conversations.axolotl"
TWO = "urn:xmpp:omemo:2"
OLD_DEVICES = f"{OLD}.devicelist"
TWO_DEVICES = f"{TWO}:devices"
TWO_BUNDLES = f"{TWO}:bundles"
SECRET = "the quarterly figures are in the blue folder"
ANSWER = "thanks, opening it now"


class MemoryStorage(Storage):
    """OMEMO keys and sessions of one client, kept for the test's length only."""

    def __init__(self) -> None:
        super().__init__()
        self.data: dict[str, JSONType] = {}

    async def _load(self, key: str) -> Maybe[JSONType]:
        return Just(self.data[key]) if key in self.data else Nothing()

    async def _store(self, key: str, value: JSONType) -> None:
        self.data[key] = value

    async def _delete(self, key: str) -> None:
        self.data.pop(key, None)


class XEP_0384Memory(XEP_0384):  # noqa: N801 (slixmpp's plugin naming)
    """The plugin with in-memory storage and blind trust before verification."""

    def plugin_init(self) -> None:
        self._storage = MemoryStorage()
        super().plugin_init()

    @property
    def storage(self) -> Storage:
        return self._storage

    @property
    def _btbv_enabled(self) -> bool:
        return True

    async def _prompt_manual_trust(self, manually_trusted: frozenset[DeviceInformation],
                                   identifier: str | None) -> None:
        raise AssertionError(f"blind trust asked for a manual decision on {manually_trusted}")


register_plugin(XEP_0384Memory)


async def omemo_client(server: Server, jid: str) -> tuple[Client, asyncio.Queue]:
    """A client with OMEMO, its +notify interests in its capabilities, its keys published;
    with the device lists it is told of (from, namespace, device ids)."""
    client = await login(server, jid, PASSWORD, presence=False)
    told: asyncio.Queue = asyncio.Queue()
    for plugin in ("xep_0004", "xep_0060", "xep_0115", "xep_0163", "xep_0380"):
        client.register_plugin(plugin)
    client.register_plugin("xep_0384", module=sys.modules[__name__])
    for node, event in ((OLD_DEVICES, "oldmemo_device_list_publish"), (TWO_DEVICES, "twomemo_device_list_publish")):
        client.add_event_handler(event, lambda msg, node=node: told.put_nowait(
            (str(msg["from"]), node, device_ids(msg["pubsub_event"]["items"]["item"].xml))))
    info = await client.plugin["xep_0030"].get_info(jid=client.boundjid, local=True)
    assert {f"{OLD_DEVICES}+notify", f"{TWO_DEVICES}+notify"} <= set(info["features"])
    await client.plugin["xep_0115"].update_caps(broadcast=False)
    client.send_presence()
    await asyncio.wait_for(client.plugin["xep_0384"].get_session_manager(), 30)  # generates and uploads
    return client, told


def device_ids(item: ET.Element) -> set[int]:
    """The device ids a device list item names, in either namespace."""
    return {int(d.get("id", "0")) for d in [*item.iter(f"{{{OLD}}}device"), *item.iter(f"{{{TWO}}}device")]}


async def own_device(client: Client) -> int:
    manager = await client.plugin["xep_0384"].get_session_manager()
    return (await manager.get_own_device_information())[0].device_id


async def told_of(told: asyncio.Queue, owner: str, node: str, device: int, timeout: float = 15) -> None:
    """Wait until a PEP notification has told *owner*'s device list *node* with *device* in it
    (what the queue holds stays there for the next question)."""
    seen: list = []
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        while not told.empty():
            seen.append(told.get_nowait())
        if any(event[:2] == (owner, node) and device in event[2] for event in seen):
            break
        remaining = deadline - asyncio.get_running_loop().time()
        try:
            seen.append(await asyncio.wait_for(told.get(), max(remaining, 0)))
        except TimeoutError:
            raise AssertionError(f"not told of {owner}'s {node} with {device}; told {seen}") from None
    for event in seen:
        told.put_nowait(event)


async def relay_encrypted(sender: Client, receiver: Client, text: str, sender_device: int) -> None:
    """*sender* encrypts *text* to *receiver*, which gets ciphertext only and decrypts it, from *sender_device*."""
    frm, to = sender.boundjid.bare, receiver.boundjid.bare
    message = sender.make_message(mto=to, mtype="chat")
    message["body"] = text
    encrypted, errors = await sender.plugin["xep_0384"].encrypt_message(message, JID(to))
    assert not errors, errors
    assert encrypted is not None and text not in str(encrypted)
    encrypted.send()
    while True:  # key-only OMEMO messages have no body, and slixmpp tells no message without one
        received = await receiver.next_message(15)
        if received["from"].bare == frm and received.xml.find(f"{{{OLD}}}encrypted") is not None:
            break
    assert text not in str(received)
    decrypted, device = await receiver.plugin["xep_0384"].decrypt_message(received)
    assert decrypted["body"] == text
    assert (device.bare_jid, device.device_id) == (frm, sender_device)


def items_of(answer: slixmpp.Iq) -> dict[str, ET.Element]:
    return {item["id"]: item.xml for item in answer["pubsub"]["items"]}


@async_test(timeout=120)
async def test_two_omemo_clients_publish_keys_and_chat_encrypted_while_the_archive_keeps_ciphertext(server):
    alice, alice_told = await omemo_client(server, "alice@example.com/omemo")
    bob, bob_told = await omemo_client(server, "bob@example.com/omemo")
    alice_device, bob_device = await own_device(alice), await own_device(bob)

    # each is told of the other's device lists through PEP (+notify): bob of alice's
    # on coming online (the last items), alice of bob's when he publishes them
    for node in (OLD_DEVICES, TWO_DEVICES):
        await told_of(bob_told, "alice@example.com", node, alice_device)
        await told_of(alice_told, "bob@example.com", node, bob_device)

    # both device lists and both bundles of each are readable from the other's PEP service
    for owner, client, device in (("alice@example.com", bob, alice_device), ("bob@example.com", alice, bob_device)):
        xep_0060 = client.plugin["xep_0060"]
        for node in (OLD_DEVICES, TWO_DEVICES):
            items = items_of(await xep_0060.get_items(owner, node, timeout=10))
            assert list(items) == ["current"] and device in device_ids(items["current"]), (node, items)
        old_bundle = items_of(await xep_0060.get_items(owner, f"{OLD}.bundles:{device}", timeout=10))
        assert old_bundle["current"].find(f"{{{OLD}}}bundle/{{{OLD}}}prekeys") is not None
        two_bundles = items_of(await xep_0060.get_items(owner, TWO_BUNDLES, timeout=10))
        assert two_bundles[str(device)].find(f"{{{TWO}}}bundle/{{{TWO}}}prekeys") is not None

    # alice writes to bob encrypted, bob reads it; he answers encrypted, she reads it
    await relay_encrypted(alice, bob, SECRET, alice_device)
    await relay_encrypted(bob, alice, ANSWER, bob_device)

    # bob's archive holds both messages as OMEMO ciphertext, never their text
    page = await mam(bob, with_jid="alice@example.com")
    archived = [m for m in (forwarded(r) for r in page.results) if m is not None]
    encrypted = [m for m in archived if m.find(f"{{{OLD}}}encrypted") is not None]
    assert [m.get("from", "").split("/")[0] for m in encrypted if m.findtext("{jabber:client}body")] == [
        "alice@example.com", "bob@example.com"]
    for message in archived:
        text = ET.tostring(message, encoding="unicode")
        assert SECRET not in text and ANSWER not in text, text
    for message in encrypted:
        assert message.find(f"{{{OLD}}}encrypted/{{{OLD}}}payload").text
    # and so do the files it is stored in
    stored = b"".join(p.read_bytes() for p in server.folder.glob("chatgate.sqlite*"))
    assert stored and SECRET.encode() not in stored and ANSWER.encode() not in stored
    await logout(alice, bob)
