"""Attachments in the pane (XEP-0363 upload, XEP-0066 OOB), Chromium on one
side and slixmpp on the other: the pane user picks a file (the attach
button's file input), the slixmpp user gets a message whose body is the URL
with the same URL as OOB, and downloads the same bytes over HTTP; while a
file goes up the composer says "Sending…", and a PUT the network drops is
shown as an error with nothing sent; a picture dropped on the chat window
goes up the same way and shows as an image; the slixmpp user uploads an
image with its xep_0363 plugin and sends its URL, and the pane shows it as a
loaded <img> that opens the file, while a text file shows as a download link
with its name; a file over ``[upload] max_file_size`` is refused in the
window with the server's limit, and nothing is sent; the conversation page
shows the files the same way.
"""

from __future__ import annotations

import asyncio
import urllib.request

import pytest

from tests.integration import test_pane
from tests.integration.conftest import PASSWORD
from tests.integration.harness import Server, async_test, logout
from tests.integration.test_pane import SECRET, WAIT, next_body, pane, png, user

webmail = test_pane.webmail
OOB = "jabber:x:oob"
MAX = 100_000
PANEL = ".chat-panel:not([hidden])"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, webmail) -> Server:
    srv = Server(tmp_path_factory.mktemp("pane-attachments"), webmail={"token_secret": SECRET},
                 upload={"max_file_size": MAX, "daily_quota": 4 * MAX})
    srv.admin("domain", "add", "example.com")
    for localpart, name in (("alice", "Alice Archer"), ("bob", "Bob Baker")):
        srv.admin("user", "add", f"{localpart}@example.com", "--name", name, "--password-stdin",
                  stdin=PASSWORD + "\n")
    srv.start()
    yield srv
    srv.stop()


def download(url: str) -> bytes:
    with urllib.request.urlopen(url, timeout=10) as answer:
        return answer.read()


def oob_url(message) -> str | None:
    url = message.xml.find(f"{{{OOB}}}x/{{{OOB}}}url")
    return None if url is None else url.text


@async_test(timeout=120)
async def test_files_both_ways_between_the_pane_and_slixmpp(server):
    bob = await user(server, "bob@example.com/desk")
    bob.register_plugin("xep_0363")
    bob.register_plugin("xep_0066")
    async with pane(server, "attachments") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        await view.open_chat("bob@example.com")
        assert await page.is_visible(f"{PANEL} button[data-action=attach]")

        # the pane sends a file: bob gets the URL as body and as OOB, and the same bytes over HTTP
        content = ("Minutes of the Monday meeting\n" * 400).encode()  # 12,000 bytes
        await page.set_input_files(f"{PANEL} input[type=file]",
                                   files=[{"name": "minutes.txt", "mimeType": "text/plain", "buffer": content}])
        got = await next_body(bob)
        url = got["body"]
        assert url.startswith(f"http://127.0.0.1:{server.http_port}/upload/example.com/")
        assert url.endswith("/minutes.txt")
        assert oob_url(got) == url
        assert await asyncio.to_thread(download, url) == content
        link = f"{PANEL} .msg.out .msg-attachment a.attachment-link"
        await page.wait_for_selector(link, timeout=WAIT)
        assert (await page.inner_text(link)).strip().endswith("minutes.txt")
        assert await page.get_attribute(link, "href") == url
        assert await page.is_hidden(f"{PANEL} .composer-upload")  # no error, "sending…" gone

        # while a file goes up the composer says so; a PUT the network drops is an error, and nothing is sent
        release = asyncio.get_running_loop().create_future()

        async def drop_the_put(route) -> None:
            if route.request.method != "PUT":
                await route.continue_()
                return
            await release
            await route.abort("failed")

        await page.route("**/upload/**", drop_the_put)
        await page.set_input_files(f"{PANEL} input[type=file]",
                                   files=[{"name": "draft.txt", "mimeType": "text/plain", "buffer": b"a draft"}])
        sending = f"{PANEL} .composer-upload.sending[role=status]"
        await page.wait_for_selector(sending, timeout=WAIT)
        assert "draft.txt" in await page.inner_text(sending)
        assert await page.is_disabled(f"{PANEL} button[data-action=attach]")
        release.set_result(None)
        note = f"{PANEL} .composer-upload.error[role=alert]"
        await page.wait_for_selector(note, timeout=WAIT)
        assert "draft.txt" in await page.inner_text(note) and "network" in await page.inner_text(note)
        await page.unroute("**/upload/**")
        with pytest.raises(TimeoutError):
            await next_body(bob, timeout=1)
        assert len(await view.bodies("bob@example.com")) == 1

        # a picture dropped on the chat window goes the same way, and shows as an image
        photo = png(30, 20, (200, 60, 60))
        await page.evaluate("""([selector, bytes]) => {
            const data = new DataTransfer();
            data.items.add(new File([new Uint8Array(bytes)], "photo.png", { type: "image/png" }));
            const panel = document.querySelector(selector);
            for (const type of ["dragover", "drop"]) {
                panel.dispatchEvent(new DragEvent(type, { dataTransfer: data, bubbles: true, cancelable: true }));
            }
        }""", [PANEL, list(photo)])
        got = await next_body(bob)
        assert got["body"].endswith("/photo.png") and oob_url(got) == got["body"]
        assert await asyncio.to_thread(download, got["body"]) == photo
        assert await view.wait("sel => Array.from(document.querySelectorAll(sel)).some("
                               "i => i.complete && i.naturalWidth === 30)",
                               f"{PANEL} .msg.out .msg-attachment img.attachment-image")
        assert await page.is_hidden(f"{PANEL} .composer-upload")  # the last error went with the next success

        # bob uploads an image (slixmpp's xep_0363) and sends its URL with OOB: the pane shows the image
        picture = png(64, 40, (40, 120, 200))
        path = server.folder / "chart.png"
        path.write_bytes(picture)
        image_url = await bob.plugin["xep_0363"].upload_file(str(path), content_type="image/png")
        message = bob.make_message(mto="alice@example.com", mbody=image_url, mtype="chat")
        message["oob"]["url"] = image_url
        message.send()
        img = f"{PANEL} .msg.in .msg-attachment img.attachment-image"
        await page.wait_for_selector(img, timeout=WAIT)
        assert await view.wait("sel => { const i = document.querySelector(sel);"
                               " return i.complete && i.naturalWidth === 64 && i.naturalHeight === 40; }", img)
        assert await page.get_attribute(img, "src") == image_url
        assert await page.get_attribute(img, "loading") == "lazy"
        assert await page.evaluate(f"document.querySelector({img!r}).closest('a').href") == image_url
        await view.shot("attachments")

        # too large: the window says so with the server's limit, and nothing is sent
        await page.set_input_files(f"{PANEL} input[type=file]", files=[
            {"name": "video.bin", "mimeType": "application/octet-stream", "buffer": b"\0" * (MAX + 1)}])
        await page.wait_for_selector(note, timeout=WAIT)
        text = await page.inner_text(note)
        assert "video.bin" in text and "too large" in text and "up to 98 KB" in text, text
        await view.shot("attachment-too-large")
        with pytest.raises(TimeoutError):
            await next_body(bob, timeout=1.5)
        assert len(await view.bodies("bob@example.com")) == 3

        # the conversation page shows the file and the image the same way
        await page.click(".contact[data-jid='bob@example.com']")
        await view.wait("document.querySelector('.conversation:not(.skeleton) .conversation-meta')")
        async with page.expect_popup(timeout=WAIT) as popup_info:
            await page.click(".conversation a[data-action=open-conversation]")
        popup = await popup_info.value
        await popup.wait_for_selector("#transcript .msg.in .msg-attachment img.attachment-image", timeout=WAIT)
        assert await popup.get_attribute("#transcript .msg.in .msg-attachment img", "src") == image_url
        assert await popup.get_attribute("#transcript .msg.out .msg-attachment a", "href") == url
        await popup.close()
    await logout(bob)
