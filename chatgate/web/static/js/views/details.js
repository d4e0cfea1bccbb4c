// The content pane (the selected contact's vCard details and a Chat button)
// and the preview pane under it (recent conversations from the history API,
// each opening whole in a window of its own at a stable address). A team
// room selected shows the same for the room's archive, each conversation with
// its last messages under their senders' nicknames (a room's preview line alone
// would not say who spoke).

import { append, avatar, clear, duration, friendlyDay, h, icon, plural, timeOf } from "../dom.js";
import { conversationURL } from "../history-api.js";
import { STATUS } from "../model.js";

/** messages of a room's conversation shown in the preview (its newest) */
const ROOM_LINES = 4;

export class Details {
    constructor(model, client, history, { onChat }) {
        this.model = model;
        this.client = client;
        this.history = history;
        this.onChat = onChat;
        this.root = document.getElementById("content");
        this.jid = null;
        /** the Room shown (kept when the room leaves the list: the server says why), or null */
        this.room = null;
        this.offline = false;
        this.empty();
        model.addEventListener("contact", (e) => {
            if (e.detail.contact.jid === this.jid) this.presenceLine();
        });
        model.addEventListener("presence-all", () => this.presenceLine());
        model.addEventListener("roster", () => {
            if (this.room) return;
            if (this.jid && !model.contact(this.jid)) this.empty();
            else if (this.jid) this.header();
        });
        model.addEventListener("rooms", () => {
            // a room that left the list (a membership ended, the room closed): ask again, the answer says which
            if (this.room && !model.room(this.room.jid) && !this.unlisted) {
                this.unlisted = true;
                this.enterButton.disabled = true;
                this.before = null;
                this.loadConversations();
            }
        });
    }

    empty() {
        this.jid = null;
        this.room = null;
        clear(this.root).append(h("div", { class: "placeholder" },
            h("div", { class: "placeholder-art", "aria-hidden": "true" }, icon("chat")),
            h("h2", {}, "Your colleagues, one click away"),
            h("p", {}, "Pick someone from your contacts to see their details and your past conversations, or start a chat.")));
    }

    setOffline(offline) {
        this.offline = offline;
        this.presenceLine();
    }

    show(jid) {
        if (this.model.room(jid)) {
            this.showRoom(jid);
            return;
        }
        const contact = this.model.contact(jid);
        if (!contact) return;
        this.jid = jid;
        this.room = null;
        this.before = null;
        clear(this.root);
        this.profile = h("section", { class: "card profile", "aria-labelledby": "details-name" });
        this.conversations = h("section", { class: "card conversations", "aria-labelledby": "conversations-title" });
        this.root.append(this.profile, this.conversations);
        this.header();
        this.loadCard(contact);
        this.conversationsSkeleton();
        this.loadConversations();
    }

    /** A team room: its name, a button to enter it, and its past conversations (the room's archive). */
    showRoom(jid) {
        const room = this.model.room(jid);
        if (!room) return;
        this.jid = jid;
        this.room = room;
        this.unlisted = false;
        this.before = null;
        clear(this.root);
        this.profile = h("section", { class: "card profile", "aria-labelledby": "details-name" });
        this.conversations = h("section", { class: "card conversations", "aria-labelledby": "conversations-title" });
        this.root.append(this.profile, this.conversations);
        append(this.profile, [
            h("div", { class: "profile-head" },
                h("span", { class: "avatar-wrap" }, avatar(room, "xl")),
                h("div", { class: "profile-title" },
                    h("h2", { id: "details-name", tabindex: "-1" }, room.name),
                    h("p", { class: "profile-role" }, "Team room: what its members say there is kept for them"))),
            h("div", { class: "profile-actions" }, this.enterButton = h("button", {
                class: "button primary", type: "button", onclick: () => this.onChat(room.jid),
                "aria-label": `Enter ${room.name}`, "data-action": "open-room",
            }, icon("chat"), "Enter room")),
            h("dl", { class: "facts" }, h("div", { class: "fact" },
                h("dt", {}, icon("at"), "Room address"), h("dd", {}, room.jid))),
        ]);
        this.conversationsSkeleton();
        this.loadConversations();
    }

    header() {
        const contact = this.model.contact(this.jid);
        if (!contact) return;
        const card = contact.vcard || {};
        const role = [card.title, card.department || card.organization].filter(Boolean).join(" · ");
        clear(this.profile);
        this.dot = h("span", { class: "dot dot-lg", "aria-hidden": "true" });
        this.statusText = h("span", {});
        const chatButton = h("button", {
            class: "button primary", type: "button", onclick: () => this.onChat(contact.jid),
            "aria-label": `Chat with ${contact.name}`, "data-action": "chat",
        }, icon("chat"), "Chat");
        const facts = h("dl", { class: "facts" });
        const fact = (label, iconName, value) => {
            if (!value) return;
            facts.append(h("div", { class: "fact" },
                h("dt", {}, icon(iconName), label), h("dd", {}, value)));
        };
        const email = (card.emails && card.emails[0]) || contact.jid;
        fact("Email", "mail", h("a", { href: `mailto:${email}` }, email));
        for (const phone of card.phones || []) fact("Phone", "phone", h("a", { href: `tel:${phone.replace(/[^+\d]/g, "")}` }, phone));
        fact("Chat address", "at", contact.jid);
        if (contact.alias && card.description) fact("Members", "group", card.description);
        append(this.profile, [
            h("div", { class: "profile-head" },
                h("span", { class: "avatar-wrap" }, avatar(contact, "xl"), this.dot),
                h("div", { class: "profile-title" },
                    h("h2", { id: "details-name", tabindex: "-1" }, contact.name),
                    h("p", { class: "profile-status" }, this.statusText),
                    role ? h("p", { class: "profile-role" }, role) : null,
                    contact.alias ? h("p", { class: "profile-role" }, "Mail alias: a message reaches every member who is online") : null)),
            h("div", { class: "profile-actions" }, chatButton,
                h("a", { class: "button", href: `mailto:${email}` }, icon("mail"), "Email")),
            facts,
        ]);
        this.presenceLine();
    }

    presenceLine() {
        const contact = this.jid && this.model.contact(this.jid);
        if (!contact || !this.dot) return;
        const presence = this.offline ? { status: "offline", text: "" } : contact.presence;
        this.dot.className = `dot dot-lg status-${presence.status}`;
        this.statusText.textContent = contact.alias && presence.text
            ? presence.text
            : presence.text ? `${STATUS[presence.status].label} — ${presence.text}` : STATUS[presence.status].label;
    }

    async loadCard(contact) {
        if (contact.vcard || this.client.state !== "online") return;
        try {
            const card = await this.client.vcard(contact.jid);
            contact.vcard = card;
            const photo = contact.photo || await this.client.avatar(contact.jid);
            if (photo) contact.photo = photo;
            if (this.jid === contact.jid) this.header();
        } catch {
            // the directory's name is shown without the card
        }
    }

    conversationsSkeleton() {
        clear(this.conversations);
        this.list = h("ol", { class: "conversation-list", "aria-busy": "true" },
            [0, 1, 2].map(() => h("li", { class: "conversation skeleton", "aria-hidden": "true" })));
        this.more = h("button", { class: "button subtle", type: "button", hidden: true, onclick: () => this.loadConversations(true) },
            "Show older conversations");
        this.conversations.append(
            h("div", { class: "section-head" },
                h("h3", { id: "conversations-title" }, icon("history"), "Recent conversations")),
            this.list, this.more);
    }

    /** Reload the list soon (a message was just exchanged with the contact shown). */
    refreshSoon(jid) {
        if (jid !== this.jid) return;
        clearTimeout(this._refresh);
        this._refresh = setTimeout(() => {
            if (jid === this.jid) {
                this.before = null;
                this.loadConversations();
            }
        }, 1500);
    }

    async loadConversations(older = false) {
        const jid = this.jid;
        const room = this.room;
        let answer;
        try {
            answer = await this.history.conversations(room ? { room: jid } : { with: jid },
                { before: older ? this.before : undefined, limit: 10 });
        } catch (error) {
            if (jid !== this.jid) return;
            this.list.setAttribute("aria-busy", "false");
            this.more.hidden = true;
            const text = room && error.status === 403
                ? "You are not a member of this room: its conversations are for its members only."
                : `Conversations can't be loaded now (${error.message}).`;
            clear(this.list).append(h("li", { class: "empty-note", "data-status": error.status }, text));
            return;
        }
        if (jid !== this.jid) return;
        if (!older) clear(this.list);
        this.list.setAttribute("aria-busy", "false");
        const contact = room || this.model.contact(jid);
        for (const c of answer.conversations) this.list.append(this.conversation(c, contact));
        if (!this.list.children.length) {
            this.list.append(h("li", { class: "empty-note" }, room
                ? `Nothing has been said in ${room.name} yet.`
                : `No conversations with ${contact?.name || jid} yet. Start one with the Chat button.`));
        }
        const last = answer.conversations[answer.conversations.length - 1];
        this.before = last ? last.id : null;
        this.more.hidden = !answer.more;
    }

    conversation(c, contact) {
        const start = new Date(c.start);
        const end = new Date(c.end);
        const room = contact?.room ? contact : null;
        const url = conversationURL(c.id, room);
        const span = end - start;
        const when = `${friendlyDay(start)}, ${timeOf(start)}${timeOf(start) !== timeOf(end) ? `–${timeOf(end)}` : ""}`;
        const open = h("a", {
            class: "button small", href: url, target: "_blank", "data-action": "open-conversation",
            "aria-label": `Open the conversation of ${when} ${room ? "in" : "with"} ${contact?.name || ""}`,
            onclick: (e) => {
                const win = window.open(url, `conversation-${c.id}`, "popup,width=760,height=820");
                if (win) e.preventDefault();
            },
        }, icon("open"), "Open");
        const preview = h("p", { class: "conversation-preview" }, c.preview || "…");
        if (room) this.roomLines(c, room, preview);
        return h("li", { class: "conversation", "data-id": c.id },
            h("div", { class: "conversation-main" },
                h("div", { class: "conversation-when" }, when),
                preview,
                h("div", { class: "conversation-meta" },
                    plural(c.count, "message"), " · ", duration(span))),
            open);
    }

    /** In place of a room conversation's first line, its newest messages, each under its sender's nickname. */
    async roomLines(c, room, preview) {
        let page;
        try {
            page = await this.history.conversation(c.id, { room: room.jid, limit: ROOM_LINES });
        } catch {
            return; // the first line stays
        }
        if (!page.messages.length || !preview.isConnected) return;
        preview.replaceWith(h("div", { class: "conversation-lines" }, page.messages.map((m) =>
            h("p", { class: `conversation-preview conversation-line${m.outgoing ? " out" : ""}`, "data-id": m.id },
                h("b", { class: "conversation-nick" }, m.nick), ": ",
                h("span", { class: "conversation-text" }, m.body)))));
    }
}
