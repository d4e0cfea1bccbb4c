"""A conversation larger than a page, read the way the webmail reads it: over
real HTTP from a running chatgate (/history/conversation, paged with archive
ids for cursors), and in a real browser (the conversation page, Chromium
driven by playwright), after two slixmpp users wrote it over real sockets."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from urllib.parse import urlencode

import pytest

from tests.integration.conftest import PASSWORD, provision
from tests.integration.harness import Client, Server, async_test, logout
from tests.integration.test_history import connect, http_get, new_users
from tests.integration.test_pane import ARTIFACTS, WAIT, _missing, browser_context, poll

#: the server's conversation gap (seconds): long enough for the HTTP requests between two messages
GAP = 6
#: the history API's cap on a page (chatgate.web.history.MAX_LIMIT) and the conversation page's page size
CAP = 100


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("pages"), archive={"conversation_gap": GAP})
    provision(srv)
    srv.start()
    yield srv
    srv.stop()


async def talk(a: Client, b: Client, a_jid: str, b_jid: str, count: int, tag: str, burst: int = 20) -> list[str]:
    """*count* lines, *burst* from one side then *burst* from the other, each burst received in
    full before the answer starts: the archive's order is the order of the list."""
    lines: list[str] = []
    for n, start in enumerate(range(0, count, burst)):
        sender, receiver, to = (a, b, b_jid) if n % 2 == 0 else (b, a, a_jid)
        texts = [f"{tag} {i}" for i in range(start, min(count, start + burst))]
        for text in texts:
            sender.send_message(mto=to, mbody=text, mtype="chat")
        for text in texts:
            assert (await receiver.next_message())["body"] == text
        lines += texts
    return lines


def conversation(server: Server, user: str, **params: object) -> tuple[int, dict]:
    status, answer, _ = http_get(server, f"/history/conversation?{urlencode(params)}", user)
    return status, answer


def bodies(page: dict) -> list[str]:
    return [m["body"] for m in page["messages"]]


@async_test(timeout=240)
async def test_a_long_conversation_is_walked_page_by_page_over_http(server):
    alice, bob = await new_users(server, "alice", "bob")
    desk, laptop = await connect(server, f"{alice}/desk"), await connect(server, f"{bob}/laptop")
    earlier = await talk(desk, laptop, alice, bob, 3, "earlier")
    await asyncio.sleep(GAP + 1)  # a silence: what follows is another conversation
    lines = await talk(desk, laptop, alice, bob, 250, "line")

    status, listing, _ = await asyncio.to_thread(http_get, server, f"/history/conversations?with={bob}", alice)
    assert status == 200 and [c["count"] for c in listing["conversations"]] == [250, 3]
    conversation_id = listing["conversations"][0]["id"]

    # the newest page, and the conversation's size
    status, newest = await asyncio.to_thread(conversation, server, alice, id=conversation_id, limit=7)
    assert status == 200 and bodies(newest) == lines[-7:]
    assert (newest["with"], newest["count"], newest["earlier"], newest["later"]) == (bob, 250, True, False)
    assert newest["start"] == listing["conversations"][0]["start"]
    # more comes while the reader pages back: no page moves
    more = await talk(desk, laptop, alice, bob, 4, "more")

    pages, page = [newest], newest
    while page["earlier"]:
        status, page = await asyncio.to_thread(
            conversation, server, alice, id=conversation_id, before=page["messages"][0]["id"], limit=7)
        assert status == 200 and 0 < len(page["messages"]) <= 7 and page["later"] and "count" not in page
        pages.insert(0, page)
    walked = [m for p in pages for m in p["messages"]]
    assert [m["body"] for m in walked] == lines  # all of it, in order, nothing of the conversation before
    assert len({m["id"] for m in walked}) == len(walked) == 250 and len(pages) == 36
    assert [(m["from"], m["outgoing"]) for m in walked[:21:20]] == [(alice, True), (bob, False)]
    # and forward from the newest page read first: exactly what came since
    status, page = await asyncio.to_thread(
        conversation, server, alice, id=conversation_id, after=newest["messages"][-1]["id"], limit=7)
    assert status == 200 and bodies(page) == more and (page["earlier"], page["later"]) == (True, False)

    # the cap: a page never holds more than 100 messages; more is refused, not served
    status, page = await asyncio.to_thread(conversation, server, alice, id=conversation_id, limit=CAP)
    assert status == 200 and bodies(page) == (lines + more)[-CAP:] and page["count"] == 254
    status, page = await asyncio.to_thread(conversation, server, alice, id=conversation_id)
    assert status == 200 and len(page["messages"]) == 20
    for limit in (CAP + 1, 100_000, 0, -5, "ten"):
        status, answer = await asyncio.to_thread(conversation, server, alice, id=conversation_id, limit=limit)
        assert status == 400 and answer == {"error": f"limit: a whole number from 1 to {CAP}"}

    # bad cursors: one line naming the parameter
    other_conversation = listing["conversations"][1]["id"]
    _, bobs, _ = await asyncio.to_thread(
        http_get, server, f"/history/conversations?with={alice}", bob)  # bob's ids: nothing in alice's archive
    for params, error in [
        ({"before": "not-an-id"}, "before: not a message id"),
        ({"after": "' OR 1=1 --"}, "after: not a message id"),
        ({"before": "0000000000000f-0123456789"}, "before: 0000000000000f-0123456789 is no message of this"
                                                   " conversation"),
        ({"after": other_conversation}, f"after: {other_conversation} is no message of this conversation"),
        ({"before": bobs["conversations"][0]["id"]}, "is no message of this conversation"),
        ({"before": walked[5]["id"], "after": walked[1]["id"]}, "before and after: give one of them"),
    ]:
        status, answer = await asyncio.to_thread(conversation, server, alice, id=conversation_id, **params)
        assert status == 400 and set(answer) == {"error"} and error in answer["error"], (params, answer)
        assert "\n" not in answer["error"]
    # the conversation before is a conversation of its own, paged the same way
    status, page = await asyncio.to_thread(conversation, server, alice, id=other_conversation, limit=2)
    assert bodies(page) == earlier[1:] and page["earlier"] and page["count"] == 3
    await logout(desk, laptop)


# -- the conversation page in a browser


@pytest.fixture(scope="module")
def browser() -> None:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(reason)
        pytest.skip(reason)


TEXTS = "Array.from(document.querySelectorAll('#transcript .msg-body'), e => e.textContent)"
IN_VIEW = ("id => { const r = document.querySelector(`#transcript .msg[data-id='${id}']`).getBoundingClientRect();"
           " return r.bottom > 0 && r.top < window.innerHeight; }")


@async_test(timeout=240)
async def test_the_conversation_page_opens_on_the_newest_page_and_reaches_the_first_message(server, browser):
    alice, bob = await new_users(server, "alice", "bob")
    desk, laptop = await connect(server, f"{alice}/desk"), await connect(server, f"{bob}/laptop")
    lines = await talk(desk, laptop, alice, bob, 2 * CAP + 30, "line")
    _, listing, _ = await asyncio.to_thread(http_get, server, f"/history/conversations?with={bob}", alice)
    conversation_id = listing["conversations"][0]["id"]
    _, whole = await asyncio.to_thread(conversation, server, alice, id=conversation_id, limit=1)
    async with browser_context() as context:
        page = await context.new_page()
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: "Content Security Policy" in m.text and errors.append(m.text))
        try:
            await page.goto(f"http://127.0.0.1:{server.http_port}/chat/conversation.html?id={conversation_id}")
            await page.wait_for_selector("#signin-form", state="visible", timeout=WAIT)
            await page.fill("#signin-jid", alice)
            await page.fill("#signin-password", PASSWORD)
            await page.click("#signin-submit")
            await page.wait_for_selector("#transcript .msg", timeout=WAIT)

            # the newest page, scrolled to its end; the header tells the whole conversation
            assert await page.evaluate(TEXTS) == lines[-CAP:]
            assert f"{len(lines)} messages" in await page.inner_text("#transcript-when")
            newest = await page.evaluate("document.querySelector('#transcript .msg:last-child').dataset.id")
            assert newest == whole["messages"][-1]["id"] and await page.evaluate(IN_VIEW, newest)

            # "Earlier messages": the page before comes in above, the reader stays where they were
            await page.evaluate("document.querySelector('#transcript [data-action=earlier]').click()")
            await poll(page, f"document.querySelectorAll('#transcript .msg').length === {2 * CAP}")
            assert await page.evaluate(TEXTS) == lines[-2 * CAP:] and await page.evaluate(IN_VIEW, newest)

            # scrolling up to the top loads the rest by itself, down to the first message
            oldest_shown = await page.evaluate("document.querySelector('#transcript .msg').dataset.id")
            await page.evaluate("window.scrollTo(0, 0)")
            await poll(page, f"document.querySelectorAll('#transcript .msg').length === {len(lines)}")
            assert await page.evaluate(TEXTS) == lines
            assert await page.evaluate(IN_VIEW, oldest_shown)  # still in view: the rest came in above it
            assert await page.query_selector("#transcript [data-action=earlier]") is None
            first = await page.evaluate("document.querySelector('#transcript .msg').dataset.id")
            assert first == conversation_id
            await page.evaluate("window.scrollTo(0, 0)")
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "pane-conversation-pages.png"))
        except BaseException:
            ARTIFACTS.mkdir(exist_ok=True)
            await page.screenshot(path=str(ARTIFACTS / "pane-conversation-pages-failed.png"))
            print("server log:", server.log_text()[-3000:])
            raise
        assert not errors, errors
    await logout(desk, laptop)
