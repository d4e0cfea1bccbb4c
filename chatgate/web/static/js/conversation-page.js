// One conversation on a page of its own: conversation.html?id=<id>, a stable
// address (from the preview pane's Open). It borrows the credentials of the
// pane open in another window of this browser (BroadcastChannel, same
// origin), or asks for the address and password when there is none.
//
// The history API answers a conversation a page at a time: the page opens on
// the newest page and loads the earlier ones (before = the oldest message
// shown) when the reader scrolls up to them or clicks "Earlier messages";
// Print loads them all first. The credentials are kept until the whole
// conversation is here, then dropped.
//
// A team room's conversation (&room=<room JID>&name=<its name>) is read from
// the room's archive; its senders are the room's nicknames.
//
// A search result opens the page at its message (&msg=<message id>): the
// pages back to it are loaded, and it is brought into view and marked.

import { attachmentOf, attachmentView, configure as configureUploads } from "./attachments.js";
import { AuthError, askPane, explain, signInWithPassword } from "./auth.js";
import { avatar, clear, duration, h, linkify, longDayOf, plural, sameDay, friendlyDay, timeOf } from "./dom.js";
import { HistoryAPI } from "./history-api.js";

const GROUP_GAP = 5 * 60000;
/** messages a request (the history API's cap) */
const PAGE = 100;

/** The history API's state of an outgoing message (XEP-0184/0333) as ticks, with the word for everyone. */
function ticks(state) {
    const words = { sent: "Sent", delivered: "Delivered", read: "Read" }[state] || state;
    return h("span", { class: `msg-ticks ${state}`, "data-status": state, title: words },
        h("span", { "aria-hidden": "true" }, state === "sent" ? " ✓" : " ✓✓"),
        h("span", { class: "visually-hidden" }, ` ${words}`));
}

/** A message's text, or the file it is (an upload URL of this server): an image or a download link. */
function body(text) {
    const attachment = attachmentOf(text);
    return attachment
        ? h("span", { class: "msg-body msg-attachment", "data-url": attachment.url }, attachmentView(attachment))
        : h("span", { class: "msg-body" }, linkify(text));
}

async function loadConfig() {
    try {
        const answer = await fetch("config.json", { cache: "no-store", credentials: "omit" });
        if (answer.ok) return await answer.json();
    } catch {
        // defaults below
    }
    return { history: "/history", tokens: false };
}

function fail(text) {
    document.getElementById("loading").hidden = true;
    const page = document.getElementById("page");
    page.hidden = false;
    clear(page).append(h("p", { class: "transcript-error", role: "alert" }, text));
}

async function show(credentials, config, id, room = null) {
    const api = new HistoryAPI(credentials, config.history || "/history");
    let newest;
    let names = new Map();
    try {
        const [answer, contacts] = await Promise.all([api.conversation(id, { limit: PAGE, room: room?.jid }),
            room ? { contacts: [] } : api.contacts().catch(() => ({ contacts: [] }))]);
        newest = answer;
        names = new Map(contacts.contacts.map((c) => [c.jid, c.name]));
    } catch (error) {
        fail(room && error.status === 403 ? "You are not a member of this room: its conversations are for its members only."
            : error.status === 404 ? "This conversation is not in your history." : `The conversation can't be loaded (${error.message}).`);
        return;
    }
    const contactName = room ? room.name : names.get(newest.with) || newest.with;
    const first = new Date(newest.start);
    const last = newest.messages.length ? new Date(newest.messages[newest.messages.length - 1].at) : first; // a page may list none
    document.title = `${contactName}, ${longDayOf(first)} — Chat`;
    document.getElementById("transcript-title").textContent = `Conversation ${room ? "in" : "with"} ${contactName}`;
    const times = timeOf(first) === timeOf(last) ? timeOf(first) : `${timeOf(first)}–${timeOf(last)}`;
    document.getElementById("transcript-when").textContent =
        `${longDayOf(first)}, ${times} · ${plural(newest.count, "message")}`
        + (last - first >= 60000 ? ` · ${duration(last - first)}` : "");
    document.getElementById("transcript-avatar").replaceWith(avatar({ jid: newest.with, name: contactName, alias: Boolean(room) }, "lg"));
    document.getElementById("loading").hidden = true;
    document.getElementById("page").hidden = false;
    const transcript = new Transcript(api, id, names, newest, room);
    const target = new URLSearchParams(location.search).get("msg");
    if (target) transcript.reveal(target);
    document.getElementById("print").addEventListener("click", async () => {
        if (await transcript.loadAll()) window.print();
    });
    if (!transcript.earlier) credentials.forget();
    else transcript.addEventListener("complete", () => credentials.forget(), { once: true });
}

/** The log of one conversation, from its newest page back to as far as was loaded. */
class Transcript extends EventTarget {
    constructor(api, id, names, newest, room) {
        super();
        this.api = api;
        this.id = id;
        this.names = names;
        this.room = room;
        this.messages = [];
        this.earlier = false;
        this.loading = null;
        this.log = document.getElementById("transcript");
        this.log.setAttribute("aria-label", room ? `Messages in ${room.name}` : `Messages with ${names.get(newest.with) || newest.with}`);
        this.observer = "IntersectionObserver" in window
            ? new IntersectionObserver((entries) => {
                if (entries.some((e) => e.isIntersecting)) this.loadEarlier();
            }, { rootMargin: "400px 0px 0px 0px" })
            : null;
        this.add(newest);
        window.scrollTo(0, document.documentElement.scrollHeight);
    }

    /** Put a page's messages before the ones shown (each once) and redraw, keeping the reader's place. */
    add(page) {
        const known = new Set(this.messages.map((m) => m.id));
        const fresh = page.messages.filter((m) => !known.has(m.id)).map((m) => ({ ...m, at: new Date(m.at) }));
        this.messages = [...fresh, ...this.messages];
        this.earlier = page.earlier;
        // the page's first entry (maybe a receipt or a correction, not listed): where the earlier page ends
        this.cursor = page.first || this.messages[0]?.id;
        const fromBottom = document.documentElement.scrollHeight - window.scrollY;
        this.draw();
        window.scrollTo(0, document.documentElement.scrollHeight - fromBottom);
        if (!this.earlier) this.dispatchEvent(new Event("complete"));
    }

    /** Load the page before the oldest message shown; resolves false when it could not. */
    loadEarlier() {
        if (!this.earlier) return Promise.resolve(true);
        if (!this.loading) {
            this.button.disabled = true;
            this.button.textContent = "Loading earlier messages…";
            this.loading = this.api.conversation(this.id, { before: this.cursor, limit: PAGE, room: this.room?.jid })
                .then((page) => {
                    this.loading = null;
                    this.add(page);
                    return true;
                }, (error) => {
                    this.loading = null;
                    this.observer?.disconnect();  // no retrying by itself: the button does
                    this.button.disabled = false;
                    this.button.textContent = `Earlier messages can't be loaded (${error.message}). Try again`;
                    return false;
                });
        }
        return this.loading;
    }

    /** Load the pages back to a message (a search result's), then bring it into view, marked. */
    async reveal(id) {
        this.target = id;
        while (this.earlier && !this.messages.some((m) => m.id === id)) {
            if (!(await this.loadEarlier())) return;
        }
        const shown = this.mark();
        shown?.scrollIntoView({ block: "center" });
        shown?.focus({ preventScroll: true });
    }

    /** The message named in the address, marked (again on every redraw); null when not shown. */
    mark() {
        const shown = this.target ? this.log.querySelector(`.msg[data-id="${CSS.escape(this.target)}"]`) : null;
        if (shown) {
            shown.classList.add("msg-target");
            shown.tabIndex = -1;
        }
        return shown;
    }

    /** Every earlier page (for printing); false if one could not be loaded. */
    async loadAll() {
        while (this.earlier) {
            if (!(await this.loadEarlier())) return false;
        }
        return true;
    }

    draw() {
        this.observer?.disconnect();
        clear(this.log);
        if (this.earlier) {
            this.button = h("button", { class: "button small", type: "button", "data-action": "earlier",
                onclick: () => this.loadEarlier() }, "Earlier messages");
            this.log.append(h("div", { class: "transcript-earlier" }, this.button));
            this.observer?.observe(this.button);
        }
        let previous = null;
        this.messages.forEach((m, i) => {
            const next = this.messages[i + 1];
            if (previous && !sameDay(previous.at, m.at)) {
                this.log.append(h("div", { class: "day", role: "separator" }, h("span", {}, friendlyDay(m.at))));
            }
            // in a room everyone, the user too, is their nickname there
            const sender = this.room ? m.nick : m.outgoing ? "You" : this.names.get(m.from) || m.from;
            const starts = !previous || previous.from !== m.from || m.at - previous.at > GROUP_GAP;
            const ends = !next || next.from !== m.from || next.at - m.at > GROUP_GAP;
            this.log.append(h("div", { class: `msg ${m.outgoing ? "out" : "in"}${starts ? " group-start" : ""}${ends ? " group-end" : ""}`, "data-id": m.id },
                starts ? h("div", { class: "msg-sender" }, sender) : null,
                h("div", { class: "bubble" },
                    h("span", { class: "visually-hidden" }, `${sender}: `),
                    body(m.body),
                    h("span", { class: "msg-meta" }, m.edited ? h("span", { class: "msg-edited" }, "edited · ") : null,
                        h("time", { datetime: m.at.toISOString() }, timeOf(m.at)),
                        m.outgoing && m.state ? ticks(m.state) : null))));
            previous = m;
        });
        this.mark();
    }
}

function signIn(config, id, room) {
    document.getElementById("loading").hidden = true;
    const form = document.getElementById("signin-form");
    const error = document.getElementById("signin-error");
    document.getElementById("signin").hidden = false;
    document.getElementById("signin-jid").focus();
    form.onsubmit = async (event) => {
        event.preventDefault();
        const jid = document.getElementById("signin-jid").value.trim().toLowerCase();
        const passwordInput = document.getElementById("signin-password");
        const password = passwordInput.value;
        passwordInput.value = "";
        try {
            const credentials = await signInWithPassword(jid, password, config);
            document.getElementById("signin").hidden = true;
            document.getElementById("loading").hidden = false;
            await show(credentials, config, id, room);
        } catch (e) {
            error.textContent = e instanceof AuthError ? e.message : explain(e);
            error.hidden = false;
        }
    };
}

async function main() {
    const params = new URLSearchParams(location.search);
    const id = params.get("id");
    const room = params.get("room") ? { jid: params.get("room"), name: params.get("name") || params.get("room") } : null;
    const config = await loadConfig();
    configureUploads(config.upload);
    if (!id) {
        fail("No conversation was named in the address.");
        return;
    }
    const credentials = await askPane();
    if (credentials) await show(credentials, config, id, room);
    else signIn(config, id, room);
}

main();
