"""Searching one's own history from the pane (Chromium), with slixmpp users
on the other side: alice's search for "cafe" lists, newest first, her own
"cafeteria" and bob's "Café" under Bob Baker's name with the words' starts
marked, and never carol's "Café crème" to dave; the keyboard moves through
the results; a result opens its conversation's page at that message (on the
conversation's earlier page: loaded, brought into view, marked, focused);
"More results" pages back; a team room's messages are searched with the
room chosen; no match, a server that cannot search (501) and a lost network
each say so, never a blank; at a phone's width the results stay on the
screen. Screenshots: test-artifacts/pane-search-*.png."""

from __future__ import annotations

import asyncio
import re

from tests.integration import test_pane
from tests.integration.harness import async_test, logout
from tests.integration.test_pane import WAIT, next_body, pane, user
from tests.integration.test_pane_rooms import occupant

# the same Chromium setup and server as the pane's own tests
webmail, server = test_pane.webmail, test_pane.server

EVERYONE = "everyone@conference.example.com"
#: notes bob sends after the café: the conversation's page opens on its newest 100 messages
NOTES = 120
#: [name, sender prefix, text, marked words] of each result listed
HITS = ("Array.from(document.querySelectorAll('#search-results .search-hit'), e => ["
        " e.querySelector('.search-hit-name').textContent,"
        " e.querySelector('.search-hit-from')?.textContent || '',"
        " e.querySelector('.search-hit-text').textContent.replace(e.querySelector('.search-hit-from')?.textContent"
        " || '', ''),"
        " Array.from(e.querySelectorAll('mark'), m => m.textContent)])")
STATUS = "document.querySelector('#search-status')"
SEARCH = re.compile(r"/history/search\?")


async def search(view, words: str, state: str = "done") -> None:
    """Type *words* in the search field, Enter, and wait for the answer shown (*state*)."""
    await view.page.fill("#search-input", words)
    await view.page.press("#search-input", "Enter")
    await view.wait(f"arg => {STATUS}.dataset.state === arg && !document.querySelector('#search-results').hidden",
                    state)


@async_test(timeout=180)
async def test_searching_the_history_from_the_pane(server):
    alice = await user(server, "alice@example.com/desk")
    bob = await occupant(server, "bob@example.com/desk")
    carol = await user(server, "carol@example.com/desk")
    dave = await user(server, "dave@example.com/desk")
    clients = {"alice@example.com": alice, "bob@example.com": bob, "dave@example.com": dave}
    said = [(bob, "alice@example.com", "Shall we meet at the Café Lumière?"),
            (alice, "bob@example.com", "Yes, the cafeteria is too loud"),
            (carol, "dave@example.com", "Café crème at noon, dave?")]  # not alice's: never found by her
    for sender, to, text in said:  # one after another: the archive's order is the order said
        sender.send_message(mto=to, mbody=text, mtype="chat")
        assert (await next_body(clients[to]))["body"] == text
    for n in range(1, NOTES + 1):
        bob.send_message(mto="alice@example.com", mbody=f"note {n} of the roadmap", mtype="chat")
    for n in range(1, NOTES + 1):
        assert (await next_body(alice))["body"] == f"note {n} of the roadmap"
    await bob.plugin["xep_0045"].join_muc_wait(EVERYONE, "bob", timeout=10)
    bob.send_message(mto=EVERYONE, mbody="Café au lait for everyone", mtype="groupchat")
    assert (await asyncio.wait_for(bob.said.get(), 10))["body"] == "Café au lait for everyone"

    async with pane(server, "search") as view:
        page = view.page
        await view.sign_in_with_token("alice@example.com")
        assert await page.evaluate("document.querySelector('#search-input').labels[0].textContent") \
            == "Search your messages"

        # another case, no accent, a word's start: newest first, bob's name, the words' starts marked
        started = asyncio.get_running_loop().time()
        await search(view, "cafe")
        took = asyncio.get_running_loop().time() - started
        assert await page.evaluate(HITS) == [
            ["Bob Baker", "You: ", "Yes, the cafeteria is too loud", ["cafe"]],
            ["Bob Baker", "", "Shall we meet at the Café Lumière?", ["Café"]]]
        assert await page.inner_text("#search-status") == "2 messages, newest first"
        assert await page.evaluate("document.querySelector('#search-results [data-action=search-more]').hidden")
        await view.shot("search-results")

        # the keyboard: ↓ into the results and between them, ↑ back to the field, Escape closes
        await page.keyboard.press("ArrowDown")
        assert await page.evaluate("document.activeElement.closest('.search-hit')?.dataset.with") \
            == "bob@example.com"
        await page.keyboard.press("ArrowDown")
        assert "Café Lumière" in await page.evaluate("document.activeElement.textContent")
        await page.keyboard.press("ArrowUp")
        await page.keyboard.press("ArrowUp")
        assert await page.evaluate("document.activeElement.id") == "search-input"
        await page.keyboard.press("Escape")
        assert await page.is_hidden("#search-results")
        assert await page.evaluate("document.activeElement.id") == "search-input"
        await page.keyboard.press("Enter")
        await view.wait(f"!document.querySelector('#search-results').hidden && {STATUS}.dataset.state === 'done'")

        # bob's café opens its conversation's page at it: on the earlier page, loaded, in view, marked
        hit_id = await page.get_attribute("#search-results .search-hit:nth-child(2)", "data-id")
        async with page.expect_popup(timeout=WAIT) as popup_info:
            await page.click("#search-results .search-hit:nth-child(2) a.search-hit-link")
        popup = await popup_info.value
        assert f"msg={hit_id}" in popup.url and "/chat/conversation.html?id=" in popup.url
        await test_pane.poll(popup, "document.activeElement?.classList.contains('msg-target')")
        target = await popup.evaluate("""(() => {
            const m = document.querySelector('#transcript .msg.msg-target');
            const box = m.getBoundingClientRect();
            return [m.dataset.id, m.querySelector('.msg-body').textContent, m.classList.contains('in'),
                    box.top >= 0 && box.bottom <= innerHeight,
                    document.querySelectorAll('#transcript .msg.msg-target').length,
                    document.querySelectorAll('#transcript .msg').length];
        })()""")
        assert target == [hit_id, "Shall we meet at the Café Lumière?", True, True, 1, 2 + NOTES]
        assert await popup.inner_text("#transcript-title") == "Conversation with Bob Baker"
        await popup.screenshot(path=str(test_pane.ARTIFACTS / "pane-search-conversation-page.png"))
        await popup.close()

        # carol's café crème to dave is theirs: alice's search finds nothing, and says so
        await search(view, "crème", "empty")
        assert await page.inner_text("#search-status") == "No messages match “crème”."
        assert await page.evaluate("document.querySelectorAll('#search-results .search-hit').length") == 0
        await view.shot("search-no-match")

        # many hits: a page of 20, "More results" the 20 before
        await search(view, "ROADMAP note")
        notes = [f"note {n} of the roadmap" for n in range(NOTES, 0, -1)]
        hits = await page.evaluate(HITS)
        assert [h[2] for h in hits] == notes[:20] and hits[0][3] == ["note", "roadmap"]
        assert await page.inner_text("#search-status") == "20 messages so far, newest first"
        await page.click("#search-results [data-action=search-more]")
        await view.wait("document.querySelectorAll('#search-results .search-hit').length === 40")
        assert [h[2] for h in await page.evaluate(HITS)] == notes[:40]

        # a team room's archive, the room chosen: the room's name, bob's nickname
        await page.select_option("#search-scope", EVERYONE)
        await search(view, "cafe")
        assert await page.evaluate(HITS) == [
            ["Everyone at example.com", "bob: ", "Café au lait for everyone", ["Café"]]]
        async with page.expect_popup(timeout=WAIT) as popup_info:
            await page.click("#search-results .search-hit a.search-hit-link")
        popup = await popup_info.value
        await test_pane.poll(popup, "document.activeElement?.classList.contains('msg-target')")
        assert await popup.inner_text("#transcript .msg-target .msg-body") == "Café au lait for everyone"
        await popup.close()
        await page.select_option("#search-scope", "")

        # a server whose archive cannot search: 501, said so, nothing to retry
        await page.route(SEARCH, lambda route: route.fulfill(
            status=501, content_type="application/json", body='{"error": "this archive cannot search"}'))
        await search(view, "cafe", "error")
        assert await page.inner_text("#search-status") == "Search is not available on this server."
        assert await page.evaluate("document.querySelectorAll('#search-results .search-hit').length") == 0
        assert not await page.query_selector("#search-results [data-action=search-retry]")
        await page.unroute(SEARCH)

        # the network lost: said so, and Try again finds them once it is back
        await page.route(SEARCH, lambda route: route.abort())
        await search(view, "cafe", "error")
        assert (await page.inner_text("#search-status")).startswith("Search can't reach the server.")
        await view.shot("search-offline")
        await page.unroute(SEARCH)
        await page.click("#search-results [data-action=search-retry]")
        await view.wait(f"{STATUS}.dataset.state === 'done'")
        assert len(await page.evaluate(HITS)) == 2

        # a phone's width: the field in the top bar, the results within the screen
        await page.set_viewport_size({"width": 390, "height": 780})
        await search(view, "cafe")
        box = await page.evaluate("(() => { const r = document.querySelector('#search-results')"
                                  ".getBoundingClientRect(); return [r.left, r.right]; })()")
        assert box[0] >= 0 and box[1] <= 390, box
        assert await page.evaluate("document.documentElement.scrollWidth") <= 390
        await view.shot("search-phone")
    print(f"search answered in the pane in {took:.2f} s")
    await logout(alice, bob, carol, dave)
