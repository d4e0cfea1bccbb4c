"""Avatars in the pane (Chromium): XEP-0084 over PEP, with a slixmpp user on the
other side. The pane announces in its capabilities (XEP-0115, hashed in the
browser) that it wants avatar metadata, so chatgate tells it bob's picture as
it signs in and again when bob changes it; the contact list shows it. The
user sets their own picture from the status menu: it is published as PEP
data and metadata, and bob's client, which asked for avatars, is told and
fetches the same bytes."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import xml.etree.ElementTree as ET

from slixmpp.plugins.xep_0084 import MetaData

from tests.integration import test_pane
from tests.integration.harness import async_test, logout
from tests.integration.test_pane import pane
from tests.integration.test_pep import METADATA, pep_client

# the same Chromium setup and server as the pane's own tests
webmail, server = test_pane.webmail, test_pane.server

DATA = "urn:xmpp:avatar:data"
BLUE = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAQAAAC1HAwCAAAAC0lEQVR42mNkYAAAAAYAAjCB0C8AAAAASUVORK5CYII=")
RED = base64.b64decode("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQ"
                       "AAAABJRU5ErkJggg==")


async def publish_avatar(client, png: bytes) -> str:
    item_id = hashlib.sha1(png).hexdigest()
    data = ET.fromstring(f"<data xmlns='{DATA}'>{base64.b64encode(png).decode()}</data>")
    await client.plugin["xep_0060"].publish(client.boundjid.bare, DATA, id=item_id, payload=data, timeout=10)
    metadata = MetaData()
    metadata.add_info(item_id, "image/png", str(len(png)), height="1", width="1")
    await client.plugin["xep_0163"].publish(metadata, node=METADATA, id=item_id, timeout=10)
    return item_id


def photo_of(jid: str) -> str:
    return f"document.querySelector(\".contact[data-jid='{jid}'] .avatar img\")?.getAttribute('src') || ''"


@async_test(timeout=120)
async def test_avatars_reach_the_pane_and_the_panes_reach_others(server, tmp_path):
    bob, bob_events = await pep_client(server, "bob@example.com/desk", (METADATA,))
    await publish_avatar(bob, BLUE)
    await bob_events.next()  # his own client is told too

    async with pane(server, "avatars") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        blue = "data:image/png;base64," + base64.b64encode(BLUE).decode()
        await view.wait(f"({photo_of('bob@example.com')}) === {blue!r}")
        # bob changes it: the pane is told at once
        await publish_avatar(bob, RED)
        red = "data:image/png;base64," + base64.b64encode(RED).decode()
        await view.wait(f"({photo_of('bob@example.com')}) === {red!r}")
        await bob_events.next()

        # alice sets her own picture from the status menu
        picture = tmp_path / "me.png"
        picture.write_bytes(BLUE)
        await page.click("#status-button")
        await page.set_input_files("#avatar-input", str(picture))
        await view.wait("document.getElementById('avatar-hint').textContent === 'Your picture is saved.'")
        await view.wait("document.querySelector('#me-avatar img')?.getAttribute('src')?.startsWith('data:image/png')")
        kind, msg = await bob_events.next()
        assert (kind, str(msg["from"])) == ("publish", "alice@example.com")
        info = msg["pubsub_event"]["items"]["item"]["payload"].find(f"{{{METADATA}}}info")
        assert info.get("id") == hashlib.sha1(BLUE).hexdigest() and info.get("type") == "image/png"
        items = await bob.plugin["xep_0060"].get_items("alice@example.com", DATA, item_ids=[info.get("id")],
                                                       timeout=10)
        data = list(items["pubsub"]["items"])[0]["payload"]
        assert base64.b64decode(data.text) == BLUE

        # a file that is no picture is refused in the menu, saying why
        text = tmp_path / "notes.txt"
        text.write_text("not a picture")
        await page.set_input_files("#avatar-input", str(text))
        await view.wait("document.getElementById('avatar-hint').textContent.startsWith('Your picture was not saved')")
        assert view.errors == []
    await logout(bob)
    await asyncio.sleep(0)
