// One whole conversation on a page of its own: conversation.html?id=<id>, a
// stable address (from the preview pane's Open). It borrows the credentials
// of the pane open in another window of this browser (BroadcastChannel, same
// origin), or asks for the address and password when there is none.

import { AuthError, askPane, explain, signInWithPassword } from "./auth.js";
import { avatar, clear, duration, h, linkify, longDayOf, plural, sameDay, friendlyDay, timeOf } from "./dom.js";
import { HistoryAPI } from "./history-api.js";

const GROUP_GAP = 5 * 60000;

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

async function show(credentials, config, id) {
    const api = new HistoryAPI(credentials, config.history || "/history");
    let conversation;
    let names = new Map();
    try {
        const [answer, contacts] = await Promise.all([api.conversation(id), api.contacts().catch(() => ({ contacts: [] }))]);
        conversation = answer;
        names = new Map(contacts.contacts.map((c) => [c.jid, c.name]));
    } catch (error) {
        fail(error.status === 404 ? "This conversation is not in your history." : `The conversation can't be loaded (${error.message}).`);
        return;
    }
    credentials.forget();
    const contactName = names.get(conversation.with) || conversation.with;
    const messages = conversation.messages.map((m) => ({ ...m, at: new Date(m.at) }));
    const first = messages[0].at;
    const last = messages[messages.length - 1].at;
    document.title = `${contactName}, ${longDayOf(first)} — Chat`;
    document.getElementById("transcript-title").textContent = `Conversation with ${contactName}`;
    const times = timeOf(first) === timeOf(last) ? timeOf(first) : `${timeOf(first)}–${timeOf(last)}`;
    document.getElementById("transcript-when").textContent =
        `${longDayOf(first)}, ${times} · ${plural(messages.length, "message")}`
        + (last - first >= 60000 ? ` · ${duration(last - first)}` : "");
    document.getElementById("transcript-avatar").replaceWith(avatar({ jid: conversation.with, name: contactName }, "lg"));
    document.getElementById("print").addEventListener("click", () => window.print());
    const log = document.getElementById("transcript");
    log.setAttribute("aria-label", `Messages with ${contactName}`);
    let previous = null;
    messages.forEach((m, i) => {
        const next = messages[i + 1];
        if (previous && !sameDay(previous.at, m.at)) {
            log.append(h("div", { class: "day", role: "separator" }, h("span", {}, friendlyDay(m.at))));
        }
        const sender = m.outgoing ? "You" : names.get(m.from) || m.from;
        const starts = !previous || previous.outgoing !== m.outgoing || m.at - previous.at > GROUP_GAP;
        const ends = !next || next.outgoing !== m.outgoing || next.at - m.at > GROUP_GAP;
        log.append(h("div", { class: `msg ${m.outgoing ? "out" : "in"}${starts ? " group-start" : ""}${ends ? " group-end" : ""}`, "data-id": m.id },
            starts ? h("div", { class: "msg-sender" }, sender) : null,
            h("div", { class: "bubble" },
                h("span", { class: "visually-hidden" }, `${sender}: `),
                h("span", { class: "msg-body" }, linkify(m.body)),
                h("span", { class: "msg-meta" }, h("time", { datetime: m.at.toISOString() }, timeOf(m.at))))));
        previous = m;
    });
    document.getElementById("loading").hidden = true;
    document.getElementById("page").hidden = false;
}

function signIn(config, id) {
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
            await show(credentials, config, id);
        } catch (e) {
            error.textContent = e instanceof AuthError ? e.message : explain(e);
            error.hidden = false;
        }
    };
}

async function main() {
    const id = new URLSearchParams(location.search).get("id");
    const config = await loadConfig();
    if (!id) {
        fail("No conversation was named in the address.");
        return;
    }
    const credentials = await askPane();
    if (credentials) await show(credentials, config, id);
    else signIn(config, id);
}

main();
