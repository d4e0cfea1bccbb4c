// The search box in the top bar: the user's own history (the history API's
// search), newest first. Each hit shows its contact's name (or the room's),
// when it was said and the message with the words found marked; "More
// results" pages back. A hit opens its conversation's own page at that
// message (&msg=<id>). With team rooms listed, the results can be narrowed to
// one room's archive instead (a room's messages are kept there, not in the
// user's own history).
// Keyboard: Enter searches; ↓ goes to the results, ↑/↓ move between them;
// Escape closes the results (and, when closed, the field's own Escape clears it).
//
// A message's words are marked by the server's rule (storage/archive.py,
// search_terms): each word searched for is the start of a word of the
// message, in any case, accents aside.

import { avatar, clear, friendlyDay, h, icon, plural, timeOf } from "./dom.js";
import { conversationURL } from "./history-api.js";

/** hits a request */
const PAGE = 20;
/** a word as written: letters and digits, with their combining accents */
const WORD = /[\p{L}\p{N}_][\p{L}\p{M}\p{N}_]*/gu;

/** Lowercase without accents: how the server compares both sides of a search. */
function fold(text) {
    return text.normalize("NFKD").toLowerCase().replace(/\p{M}/gu, "");
}

/** The words of a search, folded (none: there is nothing to look for). */
export function searchTerms(text) {
    return Array.from(fold(text).matchAll(/[\p{L}\p{N}_]+/gu), (m) => m[0]);
}

/** *text* as text nodes, the start of each word that a term begins in <mark> (never HTML). */
export function marked(text, terms) {
    const fragment = document.createDocumentFragment();
    let last = 0;
    for (const match of text.matchAll(WORD)) {
        const word = match[0];
        const folded = fold(word);
        const term = terms.filter((t) => folded.startsWith(t)).sort((a, b) => b.length - a.length)[0];
        if (!term) continue;
        // as much of the word as written as the term covers, with the accents of its last letter
        let end = 0;
        let covered = 0;
        for (const ch of word) {
            if (covered >= term.length) break;
            covered += fold(ch).length;
            end += ch.length;
        }
        while (end < word.length && /\p{M}/u.test(word[end])) end++;
        fragment.append(text.slice(last, match.index), h("mark", {}, word.slice(0, end)));
        last = match.index + end;
    }
    fragment.append(text.slice(last));
    return fragment;
}

export class Search {
    constructor(history, model, { announce }) {
        this.history = history;
        this.model = model;
        this.announce = announce;
        this.root = document.getElementById("search");
        this.form = document.getElementById("search-form");
        this.input = document.getElementById("search-input");
        this.panel = document.getElementById("search-results");
        /** the latest request: answers to earlier ones are dropped */
        this.seq = 0;
        /** what is shown: {q, terms, room, before} */
        this.query = null;

        this.scope = h("select", { id: "search-scope", class: "search-scope", onchange: () => this.run() });
        this.status = h("p", { id: "search-status", class: "search-status" });
        this.list = h("ol", { class: "search-list", "aria-labelledby": "search-title" });
        this.more = h("button", {
            class: "button subtle small search-more", type: "button", "data-action": "search-more", hidden: true,
            onclick: () => this.load(true),
        }, "More results");
        this.panel.append(
            h("div", { class: "search-head" },
                h("h2", { id: "search-title", class: "search-title" }, "Search results"),
                h("label", { class: "visually-hidden", for: "search-scope" }, "Search in"),
                this.scope,
                h("button", {
                    class: "icon-button", type: "button", "aria-label": "Close search results",
                    "data-action": "search-close", onclick: () => this.close(),
                }, icon("close"))),
            this.status, this.list, this.more);

        this.form.addEventListener("submit", (e) => {
            e.preventDefault();
            this.run();
        });
        this.input.addEventListener("keydown", (e) => {
            if (e.key === "Escape" && !this.panel.hidden) {
                e.preventDefault();
                this.close();
            } else if (e.key === "ArrowDown" && !this.panel.hidden && this.links().length) {
                e.preventDefault();
                this.links()[0].focus();
            }
        });
        this.panel.addEventListener("keydown", (e) => this.key(e));
        // a click or the focus elsewhere closes the results
        document.addEventListener("pointerdown", (e) => {
            if (!this.panel.hidden && !this.root.contains(e.target)) this.close(false);
        });
        this.root.addEventListener("focusout", (e) => {
            if (e.relatedTarget && !this.root.contains(e.relatedTarget)) this.close(false);
        });
    }

    links() {
        return Array.from(this.list.querySelectorAll("a.search-hit-link"));
    }

    key(e) {
        if (e.key === "Escape") {
            e.preventDefault();
            this.close();
            return;
        }
        const links = this.links();
        const i = links.indexOf(document.activeElement);
        if (i < 0 || (e.key !== "ArrowDown" && e.key !== "ArrowUp")) return;
        e.preventDefault();
        if (e.key === "ArrowUp" && i === 0) this.input.focus();
        else links[Math.max(0, Math.min(links.length - 1, i + (e.key === "ArrowDown" ? 1 : -1)))].focus();
    }

    /** The rooms the results can be narrowed to, kept as chosen while the room is listed. */
    scopes() {
        const chosen = this.scope.value;
        const rooms = this.model.sortedRooms();
        clear(this.scope).append(h("option", { value: "" }, "All chats"),
            ...rooms.map((r) => h("option", { value: r.jid }, `Room: ${r.name}`)));
        this.scope.value = rooms.some((r) => r.jid === chosen) ? chosen : "";
        this.scope.hidden = !rooms.length;
    }

    open() {
        this.scopes();
        this.panel.hidden = false;
    }

    close(focus = true) {
        this.panel.hidden = true;
        if (focus) this.input.focus();
    }

    /** Search for what the field says, from the newest message. */
    run() {
        const q = this.input.value.trim();
        if (!q) {
            this.close();
            return;
        }
        this.open();
        const terms = searchTerms(q);
        const jid = this.scope.value;
        const room = jid ? this.model.room(jid) || { jid, name: jid } : null;
        this.query = { q, terms, room, before: null };
        if (!terms.length) {
            this.seq++;
            clear(this.list);
            this.more.hidden = true;
            this.say("Type a word, or the start of one, to search your messages.", "hint");
            return;
        }
        this.load(false);
    }

    /** The first page of the query's hits, or the next older one. */
    async load(older) {
        const query = this.query;
        const seq = ++this.seq;
        this.list.setAttribute("aria-busy", "true");
        this.more.disabled = true;
        if (older) {
            this.more.textContent = "Loading more results…";
        } else {
            clear(this.list);
            this.more.hidden = true;
            this.say("Searching…", "busy");
        }
        let answer;
        try {
            answer = await this.history.search(query.q, {
                room: query.room?.jid, before: older ? query.before : undefined, limit: PAGE,
            });
        } catch (error) {
            if (seq === this.seq) this.failed(error, older);
            return;
        }
        if (seq !== this.seq) return;
        this.list.setAttribute("aria-busy", "false");
        for (const m of answer.messages) this.list.append(this.hit(m, query));
        if (answer.last) query.before = answer.last;
        this.more.hidden = !answer.more;
        this.more.disabled = false;
        this.more.textContent = "More results";
        const count = this.list.children.length;
        if (!count) {
            this.say(`No messages match “${query.q}”.`, "empty");
        } else {
            this.say(`${plural(count, "message")}${answer.more ? " so far" : ""}, newest first`, "done",
                older ? null : `${plural(count, "message")} found for “${query.q}”${answer.more ? ", and more" : ""}.`);
        }
    }

    failed(error, older) {
        this.list.setAttribute("aria-busy", "false");
        this.more.disabled = false;
        // no status: the request never reached the server (fetch threw), or its answer did not come back
        const text = error.status === 501 ? "Search is not available on this server."
            : error.status === 403 ? "You are not a member of this room: its messages are for its members only."
                : error.status === undefined ? "Search can't reach the server. Check your connection."
                    : `Search failed (${error.message}).`;
        if (older) {
            // the hits shown stay; the button at their end says so
            this.more.textContent = "More results can't be loaded. Try again";
            this.announce(text);
            return;
        }
        this.more.hidden = true;
        const retry = error.status === 501 || error.status === 403 ? null
            : h("button", { class: "link-button", type: "button", "data-action": "search-retry",
                onclick: () => this.load(older) }, "Try again");
        this.say(text, "error", text, retry);
    }

    /** The line above the results (and, told, what a screen reader hears). */
    say(text, state, spoken = text, action = null) {
        this.status.dataset.state = state;
        clear(this.status).append(text);
        if (action) this.status.append(" ", action);
        if (spoken && state !== "busy") this.announce(spoken);
    }

    hit(m, { terms, room }) {
        const at = new Date(m.at);
        const contact = room || this.model.contact(m.with);
        const name = contact?.name || m.with;
        // in a room everyone, the user too, is their nickname there
        const sender = room ? m.nick : m.outgoing ? "You" : null;
        const url = new URL(conversationURL(m.conversation, room));
        url.searchParams.set("msg", m.id);
        return h("li", { class: "search-hit", "data-id": m.id, "data-with": room ? room.jid : m.with },
            h("a", {
                class: "search-hit-link", href: url.href, target: "_blank", "data-action": "open-hit",
                onclick: (e) => {
                    // the window a conversation opens in from the preview pane, if it is open
                    const win = window.open(url.href, `conversation-${m.conversation}`, "popup,width=760,height=820");
                    if (win) e.preventDefault();
                },
            },
            avatar(contact || { jid: m.with, name }, "sm"),
            h("span", { class: "search-hit-main" },
                h("span", { class: "search-hit-top" },
                    h("span", { class: "search-hit-name" }, name),
                    h("time", { class: "search-hit-when", datetime: at.toISOString() }, `${friendlyDay(at)}, ${timeOf(at)}`)),
                h("span", { class: "search-hit-text" },
                    sender ? h("span", { class: "search-hit-from" }, `${sender}: `) : null,
                    marked(m.body, terms)))));
    }
}
