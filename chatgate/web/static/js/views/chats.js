// Chat windows: one tab per open chat (role=tablist, ←/→ between them), each
// with its messages, typing notifications (XEP-0085) both ways, unread
// counts and a composer (Enter sends, Shift+Enter starts a new line; files
// by the attach button or dropped on the window, see attachments.js).
// A team room's window is the same window (rooms.js enters and leaves the
// room): each message with its sender's nickname, the subject and the number
// of people in the header, their list behind a toggle, no typing
// notifications, receipts or corrections.

import { AttachmentError, attachmentOf, attachmentView, upload, uploadsEnabled } from "../attachments.js";
import { append, avatar, clear, friendlyDay, h, icon, linkify, sameDay, timeOf } from "../dom.js";
import { STATUS } from "../model.js";
import { cssId } from "./nav.js";

const PAUSED_AFTER = 5000; // ms without a keystroke before "paused"
const TYPING_EXPIRES = 30000; // a "composing" never followed up is dropped after this
const GROUP_GAP = 5 * 60000; // messages closer than this from one sender form a group
const RENDER_LIMIT = 400; // messages drawn per chat (the rest is in its history)

export class Chats extends EventTarget {
    constructor(model, client, {
        announce, onShowContact, onGoOnline, isOnScreen, onRoomClosed = () => {}, onRoomPeople = () => {},
    }) {
        super();
        this.onRoomClosed = onRoomClosed;
        this.onRoomPeople = onRoomPeople;
        this.model = model;
        this.client = client;
        this.announce = announce;
        this.onShowContact = onShowContact;
        this.onGoOnline = onGoOnline;
        this.isOnScreen = isOnScreen;
        this.tabs = document.getElementById("chat-tabs");
        this.panels = document.getElementById("chat-panels");
        this.views = new Map(); // jid → {tab, panel, log, composer, …}
        this.order = [];
        this.active = null;
        this.connected = false;
        this.offlineByChoice = false;
        this.tabs.addEventListener("keydown", (e) => this.tabKey(e));
        model.addEventListener("contact", (e) => this.header(e.detail.contact.jid));
        model.addEventListener("presence-all", () => this.order.forEach((jid) => this.header(jid)));
        model.addEventListener("roster", () => this.order.forEach((jid) => this.header(jid)));
        const seen = () => this.markRead();
        document.addEventListener("visibilitychange", seen);
        window.addEventListener("focus", seen);
    }

    emit(name, detail = {}) {
        this.dispatchEvent(new CustomEvent(name, { detail }));
    }

    get count() {
        return this.order.length;
    }

    // -- opening, switching, closing

    open(jid, { activate = true, focus = true } = {}) {
        const chat = this.model.chat(jid);
        let view = this.views.get(jid);
        if (!view) {
            view = this.build(jid);
            this.views.set(jid, view);
            this.order.push(jid);
            chat.open = true;
            if (!chat.room) this.loadHistory(jid);
        }
        if (activate || !this.active) this.activate(jid, focus);
        this.emit("changed");
        return view;
    }

    activate(jid, focus = true) {
        this.active = jid;
        for (const [key, view] of this.views) {
            const on = key === jid;
            view.tab.setAttribute("aria-selected", String(on));
            view.tab.tabIndex = on ? 0 : -1;
            view.panel.hidden = !on;
        }
        const view = this.views.get(jid);
        this.scrollDown(view, true);
        if (focus) view.composer.focus();
        this.markRead();
        this.emit("changed");
    }

    close(jid) {
        const view = this.views.get(jid);
        if (!view) return;
        const chat = this.model.chat(jid);
        if (chat.composing) this.client.chatState(jid, "gone");
        if (chat.room) this.onRoomClosed(jid);
        chat.open = false;
        chat.composing = false;
        view.tab.remove();
        view.panel.remove();
        this.views.delete(jid);
        const index = this.order.indexOf(jid);
        this.order.splice(index, 1);
        if (this.active === jid) {
            this.active = null;
            const next = this.order[Math.min(index, this.order.length - 1)];
            if (next) this.activate(next);
        }
        this.emit("changed");
    }

    tabKey(e) {
        const index = this.order.indexOf(this.active);
        let next = null;
        if (e.key === "ArrowRight") next = this.order[(index + 1) % this.order.length];
        else if (e.key === "ArrowLeft") next = this.order[(index - 1 + this.order.length) % this.order.length];
        else if (e.key === "Home") next = this.order[0];
        else if (e.key === "End") next = this.order[this.order.length - 1];
        else if (e.key === "Delete") {
            e.preventDefault();
            this.close(this.active);
            this.views.get(this.active)?.tab.focus();
            return;
        }
        if (next) {
            e.preventDefault();
            this.activate(next, false);
            this.views.get(next).tab.focus();
        }
    }

    // -- building a chat window

    build(jid) {
        const id = cssId(jid);
        const room = this.model.chat(jid).room ? this.model.room(jid) : null;
        const contact = room || this.model.contact(jid) || { jid, name: jid, presence: { status: "offline" } };
        const tab = h("button", {
            role: "tab", id: `tab-${id}`, class: "chat-tab", type: "button", "aria-controls": `panel-${id}`,
            "aria-selected": "false", tabindex: "-1", "data-jid": jid,
            onclick: () => this.activate(jid),
        });
        const log = h("div", {
            class: "log", role: "log", "aria-live": "off", "aria-label": room ? `Messages in ${room.name}` : `Messages with ${contact.name}`, tabindex: "0",
        });
        const typing = h("div", { class: "typing-line", "aria-hidden": "true" });
        const composer = h("textarea", {
            class: "composer-input", rows: "1", placeholder: `Message ${contact.name}`,
            "aria-label": `Message to ${contact.name}`, "data-label": `Message to ${contact.name}`, "data-jid": jid,
        });
        const send = h("button", { class: "icon-button send", type: "button", "aria-label": "Send", onclick: () => this.submit(jid) },
            icon("send"));
        const offlineNote = h("div", { class: "composer-offline", hidden: true });
        // attachments (XEP-0363): the button opens the file picker; files dropped on the window go the same way
        const fileInput = h("input", {
            type: "file", multiple: true, class: "attach-input", hidden: true, tabindex: "-1", "aria-hidden": "true",
            onchange: () => {
                const files = Array.from(fileInput.files);
                fileInput.value = "";
                this.attach(jid, files);
            },
        });
        const attach = h("button", {
            class: "icon-button attach", type: "button", "aria-label": "Send a file", title: "Send a file",
            "data-action": "attach", hidden: !uploadsEnabled(), onclick: () => fileInput.click(),
        }, icon("attach"));
        const uploadNote = h("div", { class: "composer-upload", hidden: true });
        const title = h("div", { class: "chat-title" });
        // a room: who is in it (behind the header's toggle), and why the user is not (any more)
        const occupants = room ? h("ul", { class: "occupants", id: `occupants-${id}`, hidden: true, "aria-label": `People in ${room.name}` }) : null;
        const notice = room ? h("div", { class: "room-notice", role: "status", hidden: true }) : null;
        const people = room ? h("button", {
            class: "button small subtle people", type: "button", "data-action": "occupants", "aria-expanded": "false",
            "aria-controls": `occupants-${id}`, title: "Who is here",
            onclick: () => {
                occupants.hidden = !occupants.hidden;
                people.setAttribute("aria-expanded", String(!occupants.hidden));
                if (!occupants.hidden) this.onRoomPeople(jid);
            },
        }) : null;
        const panel = h("section", {
            role: "tabpanel", id: `panel-${id}`, class: "chat-panel", "aria-labelledby": `tab-${id}`, hidden: true,
            "data-jid": jid,
        },
        h("header", { class: "chat-head" }, title,
            room ? people : h("button", { class: "icon-button", type: "button", "aria-label": `Details of ${contact.name}`, title: "Details",
                onclick: () => this.onShowContact(jid) }, icon("at")),
            h("button", {
                class: "icon-button", type: "button", title: room ? "Leave" : "Close", "data-action": "close-chat",
                "aria-label": room ? `Leave ${room.name}` : `Close the chat with ${contact.name}`, onclick: () => this.close(jid),
            }, icon("close"))),
        occupants, notice, log, typing,
        h("form", { class: "composer", onsubmit: (e) => { e.preventDefault(); this.submit(jid); } },
            offlineNote, uploadNote, fileInput, attach, composer, send));
        panel.addEventListener("dragover", (e) => {
            if (!uploadsEnabled() || !Array.from(e.dataTransfer?.types || []).includes("Files")) return;
            e.preventDefault();
            e.dataTransfer.dropEffect = this.connected ? "copy" : "none";
            panel.classList.add("dropping");
        });
        panel.addEventListener("dragleave", (e) => {
            if (!panel.contains(e.relatedTarget)) panel.classList.remove("dropping");
        });
        panel.addEventListener("drop", (e) => {
            panel.classList.remove("dropping");
            if (!uploadsEnabled() || !e.dataTransfer?.files?.length) return;
            e.preventDefault();
            this.attach(jid, Array.from(e.dataTransfer.files));
        });
        composer.addEventListener("keydown", (e) => {
            if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
                e.preventDefault();
                this.submit(jid);
            } else if (e.key === "ArrowUp" && !composer.value && this.editLast(jid)) {
                e.preventDefault();
            } else if (e.key === "Escape" && this.views.get(jid)?.editing) {
                e.preventDefault();
                this.stopEditing(this.views.get(jid));
                composer.value = "";
            } else if (e.key === "Escape") {
                e.preventDefault();
                document.getElementById("contact-list").querySelector(".contact[tabindex='0']")?.focus();
            }
        });
        composer.addEventListener("input", () => {
            this.autosize(composer);
            this.typed(jid);
        });
        composer.addEventListener("focus", () => this.markRead());
        this.tabs.append(tab);
        this.panels.append(panel);
        const view = {
            jid, tab, panel, log, typing, composer, send, attach, uploadNote, offlineNote, title, rendered: 0,
            room, occupants, notice, people,
        };
        this.views.set(jid, view);
        this.header(jid);
        this.composerState(view);
        this.render(jid);
        return view;
    }

    header(jid) {
        const view = this.views.get(jid);
        if (!view) return;
        if (view.room) {
            this.roomHeader(view);
            return;
        }
        const contact = this.model.contact(jid) || { jid, name: jid, presence: { status: "offline", text: "" }, alias: false };
        const chat = this.model.chat(jid);
        const presence = this.connected ? contact.presence : { status: "offline", text: "" };
        append(clear(view.tab), [
            h("span", { class: `dot status-${presence.status}`, "aria-hidden": "true" }),
            h("span", { class: "tab-name" }, contact.name),
            chat.unread ? h("span", { class: "badge", "aria-hidden": "true" }, String(chat.unread)) : null,
        ]);
        view.tab.setAttribute("aria-label", `${contact.name}, ${STATUS[presence.status].label}`
            + (chat.unread ? `, ${chat.unread} unread` : ""));
        const typing = chat.typing && this.connected;
        clear(view.title).append(
            h("span", { class: "avatar-wrap" }, avatar(contact, "sm"), h("span", { class: `dot status-${presence.status}`, "aria-hidden": "true" })),
            h("span", { class: "chat-title-text" },
                h("span", { class: "chat-name" }, contact.name),
                h("span", { class: "chat-status" }, typing
                    ? (contact.alias ? `${this.model.nameOf(chat.typing)} is typing…` : "typing…")
                    : presence.text || STATUS[presence.status].label)));
        clear(view.typing);
        if (typing) {
            view.typing.append(h("span", { class: "typing-dots" }, h("i"), h("i"), h("i")),
                `${contact.alias ? this.model.nameOf(chat.typing) : contact.name} is typing…`);
        }
        view.typing.classList.toggle("on", Boolean(typing));
    }

    /** A room's tab, title (name, subject or who is here) and list of occupants. */
    roomHeader(view) {
        const room = view.room;
        const chat = this.model.chat(view.jid);
        const inside = this.connected && room.joined;
        const status = inside ? "available" : "offline";
        const count = `${room.count} ${room.count === 1 ? "person" : "people"} here`;
        append(clear(view.tab), [
            h("span", { class: `dot status-${status}`, "aria-hidden": "true" }),
            h("span", { class: "tab-name" }, room.name),
            chat.unread ? h("span", { class: "badge", "aria-hidden": "true" }, String(chat.unread)) : null,
        ]);
        view.tab.setAttribute("aria-label", `${room.name}, team room` + (chat.unread ? `, ${chat.unread} unread` : ""));
        let line;
        if (room.refused) line = "Not in this room";
        else if (!this.connected) line = "Offline";
        else if (!room.joined) line = "Entering…";
        else line = room.subject || count;
        clear(view.title).append(
            h("span", { class: "avatar-wrap" }, avatar(room, "sm")),
            h("span", { class: "chat-title-text" },
                h("span", { class: "chat-name" }, room.name),
                h("span", { class: "chat-status room-subject", title: room.subject || "" }, line)));
        clear(view.people).append(icon("group"), h("span", { class: "people-count" }, inside ? String(room.count) : "–"));
        view.people.setAttribute("aria-label", inside ? `${count}: show who` : "Who is here");
        view.people.hidden = Boolean(room.refused);
        const occupants = room.people;
        clear(view.occupants);
        if (room.refused) view.occupants.hidden = true;
        for (const o of occupants) {
            const name = o.jid && o.jid !== this.model.me ? this.model.contact(o.jid)?.name : null;
            view.occupants.append(h("li", { class: "occupant", "data-nick": o.nick, title: o.jid || "" },
                h("span", { class: `dot status-${o.show === "dnd" ? "busy" : ["away", "xa"].includes(o.show) ? "away" : "available"}`,
                    "aria-hidden": "true" }),
                h("span", { class: "occupant-nick" }, o.nick),
                o.nick === room.nick ? h("span", { class: "muted" }, " (you)") : name && name !== o.nick ? h("span", { class: "muted" }, ` · ${name}`) : null));
        }
        view.notice.hidden = !room.refused;
        view.notice.textContent = room.refused || "";
        this.composerState(view);
    }

    // -- connection state

    setConnection(state) {
        this.connected = state === "online";
        this.offlineByChoice = state === "offline";
        for (const view of this.views.values()) {
            this.composerState(view);
            this.header(view.jid);
        }
        if (this.connected) {
            for (const jid of this.order) this.loadHistory(jid);
        } else {
            for (const chat of this.model.chats.values()) chat.typing = null;
        }
    }

    composerState(view) {
        if (view.room) {
            const room = view.room;
            const blocked = !this.connected || !room.joined;
            view.send.disabled = blocked;
            view.attach.disabled = blocked || Boolean(view.uploading);
            view.composer.setAttribute("aria-disabled", String(blocked));
            view.composer.disabled = Boolean(room.refused);
            clear(view.offlineNote);
            view.offlineNote.hidden = !blocked || Boolean(room.refused);
            if (this.offlineByChoice) {
                view.offlineNote.append("You're offline. ",
                    h("button", { class: "link-button", type: "button", onclick: () => this.onGoOnline() }, "Go online"),
                    " to write in this room.");
            } else if (!this.connected) {
                view.offlineNote.append("Reconnecting…");
            } else {
                view.offlineNote.append("Entering the room…");
            }
            return;
        }
        const blocked = !this.connected;
        view.send.disabled = blocked;
        view.attach.disabled = blocked || Boolean(view.uploading);
        view.composer.setAttribute("aria-disabled", String(blocked));
        view.offlineNote.hidden = !blocked;
        clear(view.offlineNote);
        if (this.offlineByChoice) {
            view.offlineNote.append("You're offline. ",
                h("button", { class: "link-button", type: "button", onclick: () => this.onGoOnline() }, "Go online"),
                " to send messages.");
        } else if (blocked) {
            view.offlineNote.append("Reconnecting… your message will wait here.");
        }
    }

    // -- messages

    async loadHistory(jid) {
        const chat = this.model.chat(jid);
        if (chat.room || chat.historyLoaded || chat.historyLoading || this.client.state !== "online") return;
        chat.historyLoading = true;
        try {
            const messages = await this.client.recent(jid, 30);
            chat.historyLoaded = true;
            for (const message of messages) this.apply(chat, message);
            this.render(jid);
        } catch {
            // the chat still works; its history is in the conversations list
        } finally {
            chat.historyLoading = false;
        }
    }

    /**
     * A message for the pane (live, from carbons or caught up via MAM): into
     * its chat unless already there. Returns true when it is new and incoming.
     */
    receive(message) {
        const chat = this.model.chat(message.contact);
        if (message.ack || message.replaces) {
            if (this.apply(chat, message)) {
                this.render(message.contact);
                if (message.replaces && !message.outgoing) this.markDisplayedSoon(message.contact); // its new text is seen
            }
            if (!message.replaces || chat.messages.includes(message)) return false;
        } else if (chat.add(message) < 0) return false;
        if (!message.outgoing) this.markDisplayedSoon(message.contact);
        if (!message.outgoing && chat.typing === message.sender) {
            chat.typing = null;
        }
        const incoming = !message.outgoing;
        if (incoming) {
            if (!this.views.has(message.contact)) this.open(message.contact, { activate: !this.active, focus: false });
            if (!this.seen(message.contact) && !(message.room && message.delayed)) chat.unread++;
        }
        this.render(message.contact);
        this.header(message.contact);
        const contact = this.model.contact(message.contact);
        if (contact) this.model.emit("contact", { contact, changed: false }); // its unread count, typing
        if (message.room) this.model.emit("room", { jid: message.contact });
        this.emit("changed");
        return incoming;
    }

    /**
     * A receipt (XEP-0184) sets the state of the outgoing message it names, a
     * marker (XEP-0333) that of every outgoing message up to it; a correction
     * (XEP-0308) replaces the text of the message it names, only when it comes
     * from that message's sender (a forged one is shown as a message of its
     * own). True when something changed.
     */
    apply(chat, message) {
        if (message.ack) {
            if (message.outgoing) return false; // our other device's receipt: nothing to show on their message
            const rank = { sent: 0, delivered: 1, read: 2 };
            const status = message.ack.status;
            const at = chat.messages.findIndex((m) => m.outgoing && (m.id === message.ack.id || m.ids?.includes(message.ack.id)));
            if (at < 0) return false;
            // a receipt is about one message; a marker (XEP-0333 §6) about every one up to it
            const marked = message.ack.upTo ? chat.messages.slice(0, at + 1).filter((m) => m.outgoing) : [chat.messages[at]];
            let changed = false;
            for (const m of marked) {
                if (rank[status] > rank[m.status || "sent"]) {
                    m.status = status;
                    changed = true;
                }
            }
            return changed;
        }
        if (message.replaces) {
            const original = chat.messages.find((m) => m.sender === message.sender && m.outgoing === message.outgoing
                && (m.id === message.replaces || m.ids?.includes(message.replaces)));
            if (original) {
                if (message.key && chat.keys.has(message.key)) return false;
                if (message.key) chat.keys.add(message.key);
                if (message.archiveId) chat.keys.add(`a:${message.archiveId}`);
                original.body = message.body;
                original.edited = true;
                original.ids = [...(original.ids || []), message.id];
                // the new text has been neither delivered nor read yet (storage/archive.fold says the same)
                if (original.outgoing) original.status = "sent";
                else if (message.live) Object.assign(original, { from: message.from, live: true, displayedSent: false });
                return true;
            }
        }
        return chat.add(message) >= 0;
    }

    /** XEP-0333: a displayed marker for the newest markable incoming message, once the user sees the chat. */
    markDisplayedSoon(jid) {
        if (!this.seen(jid)) return;
        const chat = this.model.chat(jid);
        const last = [...chat.messages].reverse().find((m) => !m.outgoing);
        if (!last || !last.markable || !last.id || last.displayedSent || !last.live) return;
        last.displayedSent = true;
        this.client.displayed(last.from, last.ids?.at(-1) || last.id); // a corrected message: its latest stanza
    }

    failed({ contact, id, text }) {
        const chat = this.model.chats.get(contact);
        const message = chat?.messages.find((m) => m.outgoing && m.id === id);
        if (!message) return;
        message.failed = text;
        this.render(contact);
    }

    chatState({ contact, sender, state }) {
        const chat = this.model.chat(contact);
        clearTimeout(chat.typingTimer);
        chat.typing = state === "composing" ? sender : null;
        if (chat.typing) chat.typingTimer = setTimeout(() => this.chatState({ contact, sender, state: "paused" }), TYPING_EXPIRES);
        const c = this.model.contact(contact);
        if (c) {
            c.typing = Boolean(chat.typing);
            this.model.emit("contact", { contact: c, changed: false });
        }
        this.header(contact);
    }

    /** Whether the user sees this chat now (its tab active, on screen, page visible and focused). */
    seen(jid) {
        return this.active === jid && document.visibilityState === "visible" && document.hasFocus() && this.isOnScreen();
    }

    markRead() {
        const jid = this.active;
        if (!jid || !this.seen(jid)) return;
        this.markDisplayedSoon(jid);
        const chat = this.model.chat(jid);
        if (!chat.unread) return;
        chat.unread = 0;
        this.header(jid);
        const contact = this.model.contact(jid);
        if (contact) this.model.emit("contact", { contact, changed: false });
        if (chat.room) this.model.emit("room", { jid });
        this.emit("changed");
    }

    render(jid) {
        const view = this.views.get(jid);
        if (!view) return;
        const chat = this.model.chat(jid);
        const stick = view.log.scrollHeight - view.log.scrollTop - view.log.clientHeight < 60 || view.rendered === 0;
        const contact = view.room || this.model.contact(jid);
        const messages = chat.messages.slice(-RENDER_LIMIT);
        clear(view.log);
        if (!messages.length && view.room) {
            view.log.append(h("div", { class: "log-empty" }, avatar(view.room, "lg"),
                h("p", {}, `This is the start of ${view.room.name}.`),
                h("p", { class: "muted" }, "Messages go to everyone in the room.")));
        } else if (!messages.length) {
            view.log.append(h("div", { class: "log-empty" },
                avatar(contact || { jid, name: jid }, "lg"),
                h("p", {}, `This is the start of your chat with ${contact?.name || jid}.`),
                contact?.alias ? h("p", { class: "muted" }, "Messages go to every member of the alias who is online.") : null));
        }
        let previous = null;
        for (let i = 0; i < messages.length; i++) {
            const m = messages[i];
            const next = messages[i + 1];
            if (!previous || !sameDay(previous.at, m.at)) {
                view.log.append(h("div", { class: "day", role: "separator" }, h("span", {}, friendlyDay(m.at))));
            }
            const startsGroup = !previous || previous.sender !== m.sender || m.at - previous.at > GROUP_GAP || !sameDay(previous.at, m.at);
            const endsGroup = !next || next.sender !== m.sender || next.at - m.at > GROUP_GAP || !sameDay(next.at, m.at);
            view.log.append(this.message(m, contact, startsGroup, endsGroup));
            previous = m;
        }
        view.rendered = messages.length;
        this.scrollDown(view, stick);
    }

    message(m, contact, startsGroup, endsGroup) {
        const who = m.outgoing ? "You" : m.room ? m.nick : this.model.nameOf(m.sender);
        const showSender = !m.outgoing && startsGroup && (contact?.alias || m.room);
        const privately = m.private ? `privately, in ${m.private}` : null; // a room occupant's private message
        const time = h("time", { datetime: m.at.toISOString(), title: m.at.toLocaleString() }, timeOf(m.at));
        const classes = ["msg", m.outgoing ? "out" : "in", startsGroup ? "group-start" : "", endsGroup ? "group-end" : "",
            m.failed ? "failed" : ""].filter(Boolean).join(" ");
        return h("div", {
            class: classes, "data-key": m.key || m.archiveId || "", "data-archive-id": m.archiveId || "",
            "data-nick": m.room ? m.nick : null,
        },
            showSender || privately ? h("div", { class: "msg-sender" }, showSender ? who : null,
                showSender && privately ? " · " : null, privately ? h("span", { class: "msg-private" }, privately) : null) : null,
            h("div", { class: "bubble" },
                h("span", { class: "visually-hidden" }, `${who}: `),
                this.body(m),
                h("span", { class: "msg-meta" }, m.carbon === "sent" ? h("span", { class: "msg-device", title: "Sent from another of your devices" }, "other device · ") : null,
                    m.edited ? h("span", { class: "msg-edited" }, "edited · ") : null, time,
                    m.outgoing && !m.carbon ? this.ticks(m.status || "sent") : null)),
            m.failed ? h("div", { class: "msg-error", role: "alert" }, `Not delivered: ${m.failed}`) : null);
    }

    /** A message's text, or the file it is (an upload URL of this server, or a URL it carries as OOB). */
    body(m) {
        const attachment = attachmentOf(m.body, m.oob);
        return attachment
            ? h("span", { class: "msg-body msg-attachment", "data-url": attachment.url }, attachmentView(attachment))
            : h("span", { class: "msg-body" }, linkify(m.body));
    }

    /** Sent ✓, delivered ✓✓, read ✓✓ (coloured): the words are there for everyone, not the colour alone. */
    ticks(status) {
        const words = { sent: "Sent", delivered: "Delivered", read: "Read" }[status];
        return h("span", { class: `msg-ticks ${status}`, "data-status": status, title: words },
            h("span", { "aria-hidden": "true" }, status === "sent" ? " ✓" : " ✓✓"),
            h("span", { class: "visually-hidden" }, ` ${words}`));
    }

    scrollDown(view, force) {
        if (!view || !force) return;
        view.log.scrollTop = view.log.scrollHeight;
    }

    // -- sending

    autosize(textarea) {
        textarea.style.height = "auto";
        textarea.style.height = `${Math.min(textarea.scrollHeight, 160)}px`;
    }

    /** Up arrow in an empty composer: correct the last message we sent here (XEP-0308). */
    editLast(jid) {
        const view = this.views.get(jid);
        const chat = this.model.chat(jid);
        const last = [...chat.messages].reverse().find((m) => m.outgoing);
        if (chat.room || !last || !last.id || last.carbon) return false;
        view.editing = last;
        view.composer.value = last.body;
        view.composer.classList.add("editing");
        view.composer.setAttribute("aria-label", "Correct your last message");
        this.autosize(view.composer);
        return true;
    }

    stopEditing(view) {
        view.editing = null;
        view.composer.classList.remove("editing");
        view.composer.setAttribute("aria-label", view.composer.dataset.label);
    }

    submit(jid) {
        const view = this.views.get(jid);
        const body = view.composer.value.trim();
        if (!body || !this.connected) return;
        const chat = this.model.chat(jid);
        clearTimeout(chat.pauseTimer);
        chat.composing = false;
        if (view.editing) {
            const original = view.editing;
            this.stopEditing(view);
            if (body !== original.body) {
                const id = this.client.correct(jid, original.id, body);
                original.body = body;
                original.edited = true;
                original.status = "sent";
                original.ids = [...(original.ids || []), id];
                chat.keys.add(`m:${this.model.me}:${id}`); // its carbon or MAM copy is this edit
            }
            view.composer.value = "";
            this.autosize(view.composer);
            this.render(jid);
            return;
        }
        if (view.room && !view.room.joined) return;
        const message = this.sendTo(jid, body);
        chat.add(message);
        view.composer.value = "";
        this.autosize(view.composer);
        this.render(jid);
        this.scrollDown(view, true);
        this.emit("sent", { jid });
    }

    /** A message to a contact, or to a room (groupchat, as the user's nickname there). */
    sendTo(jid, body, options = {}) {
        const room = this.views.get(jid)?.room;
        if (room) return this.client.sendRoom(jid, room.nick, body, options);
        return this.client.send(jid, body, options);
    }

    /**
     * Send *files* to *jid*, one after the other: each is uploaded (XEP-0363),
     * then its message goes out; while it uploads the composer says so, and a
     * refusal is shown there: no message is sent for a file that did not arrive.
     */
    async attach(jid, files) {
        const view = this.views.get(jid);
        if (!view || !files.length) return;
        if (view.uploading) {
            this.uploadNote(view, "error", "Wait until the file being sent has arrived.");
            return;
        }
        view.uploading = true;
        this.composerState(view);
        const errors = [];
        try {
            for (const file of files) {
                if (!this.connected) {
                    errors.push(`"${file.name}" was not sent: you are not connected.`);
                    continue;
                }
                this.uploadNote(view, "sending", `Sending “${file.name}”…`);
                try {
                    const url = await upload(this.client, file);
                    if (!this.connected) throw new AttachmentError(`"${file.name}" was not sent: the connection was lost.`);
                    const message = this.sendTo(jid, url, { oob: url });
                    this.model.chat(jid).add(message);
                    this.render(jid);
                    this.scrollDown(view, true);
                    this.emit("sent", { jid });
                } catch (error) {
                    errors.push(error instanceof AttachmentError ? error.message : `"${file.name}" could not be sent.`);
                }
            }
        } finally {
            view.uploading = false;
            this.composerState(view);
        }
        if (errors.length) this.uploadNote(view, "error", errors.join(" "));
        else this.uploadNote(view, null);
    }

    /** The composer's line about a file: "sending" (a status), "error" (an alert with a close button), or none. */
    uploadNote(view, kind, text = "") {
        const note = view.uploadNote;
        clear(note);
        note.hidden = !kind;
        note.className = `composer-upload${kind ? ` ${kind}` : ""}`;
        note.removeAttribute("role");
        if (kind === "sending") {
            note.setAttribute("role", "status");
            note.append(h("span", { class: "upload-spinner", "aria-hidden": "true" }), text);
        } else if (kind === "error") {
            note.setAttribute("role", "alert");
            note.append(h("span", { class: "upload-error-text" }, text),
                h("button", { class: "link-button", type: "button", onclick: () => this.uploadNote(view, null) }, "Dismiss"));
        }
    }

    typed(jid) {
        const chat = this.model.chat(jid);
        const view = this.views.get(jid);
        if (chat.room) return; // no chat states in rooms
        const hasText = view.composer.value.trim().length > 0;
        clearTimeout(chat.pauseTimer);
        if (!hasText) {
            if (chat.composing) this.client.chatState(jid, "active");
            chat.composing = false;
            return;
        }
        if (!chat.composing) {
            chat.composing = true;
            this.client.chatState(jid, "composing");
        }
        chat.pauseTimer = setTimeout(() => {
            chat.composing = false;
            this.client.chatState(jid, "paused");
        }, PAUSED_AFTER);
    }
}
