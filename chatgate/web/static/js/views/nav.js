// The navigation pane: the domain's people and its aliases, online first,
// with a status dot, a filter box, unread counts and "typing…"; then the team
// rooms the user may enter, with how many are in each once entered.
// Keyboard: ↑/↓/Home/End move, Enter or Space shows the contact, Ctrl+Enter
// (or double click) opens the chat; "/" jumps to the filter. A room: a click
// or Space shows its history (not entering it: the room would see the user
// come and go), Enter or double click enters it.

import { append, avatar, clear, h } from "../dom.js";
import { STATUS } from "../model.js";

export class ContactList {
    constructor(model, { onSelect, onChat, onRoom }) {
        this.model = model;
        this.onSelect = onSelect;
        this.onChat = onChat;
        this.onRoom = onRoom;
        this.list = document.getElementById("contact-list");
        this.filter = document.getElementById("filter");
        this.empty = document.getElementById("contact-empty");
        this.rows = new Map(); // jid → row element
        this.selected = null;
        this.focused = null;
        this.offline = false;
        this.filter.addEventListener("input", () => this.render());
        this.filter.addEventListener("keydown", (e) => {
            if (e.key === "ArrowDown") {
                e.preventDefault();
                this.focusRow(this.visibleRows()[0]);
            } else if (e.key === "Escape" && this.filter.value) {
                e.preventDefault();
                this.filter.value = "";
                this.render();
            } else if (e.key === "Enter") {
                const first = this.visibleRows()[0];
                if (first) {
                    e.preventDefault();
                    this.choose(first);
                }
            }
        });
        this.list.addEventListener("keydown", (e) => this.key(e));
        document.addEventListener("keydown", (e) => {
            const target = e.target;
            const typing = target instanceof HTMLElement && (target.isContentEditable
                || ["INPUT", "TEXTAREA", "SELECT"].includes(target.tagName));
            if (e.key === "/" && !typing && !e.ctrlKey && !e.metaKey && !e.altKey) {
                e.preventDefault();
                this.filter.focus();
            }
        });
        model.addEventListener("roster", () => this.render());
        model.addEventListener("presence-all", () => this.render());
        model.addEventListener("rooms", () => this.scheduleRender());
        model.addEventListener("room", (e) => this.updateRoom(e.detail.jid));
        model.addEventListener("contact", (e) => {
            this.update(e.detail.contact);
            if (e.detail.changed) this.scheduleRender();
        });
    }

    scheduleRender() {
        if (this._pending) return;
        this._pending = requestAnimationFrame(() => {
            this._pending = null;
            this.render();
        });
    }

    setOffline(offline) {
        this.offline = offline;
        this.list.classList.toggle("all-offline", offline);
        for (const contact of this.model.contacts.values()) this.update(contact);
        this.scheduleRender(); // the rooms' counts
    }

    /** A row chosen (click, Enter): a contact's details, or a room's window. */
    choose(row) {
        if (row.dataset.room) this.onRoom(row.dataset.jid);
        else this.onSelect(row.dataset.jid);
    }

    render() {
        const filter = this.filter.value;
        const contacts = this.model.sorted(filter);
        const people = contacts.filter((c) => !c.alias);
        const aliases = contacts.filter((c) => c.alias);
        const keep = document.activeElement;
        clear(this.list);
        const seen = new Set();
        for (const [title, group] of [["People", people], ["Aliases", aliases]]) {
            if (!group.length) continue;
            const id = `group-${title.toLowerCase()}`;
            const online = group.filter((c) => c.online).length;
            const section = h("div", { role: "group", "aria-labelledby": id, class: "contact-group" },
                h("div", { id, class: "group-title", role: "presentation" },
                    h("span", {}, title), h("span", { class: "group-count", "aria-hidden": "true" },
                        this.offline ? `${group.length}` : `${online}/${group.length}`)));
            for (const contact of group) {
                seen.add(contact.jid);
                section.append(this.row(contact));
            }
            this.list.append(section);
        }
        const rooms = this.model.sortedRooms(filter);
        if (rooms.length) {
            const inside = rooms.filter((r) => r.joined).length;
            const section = h("div", { role: "group", "aria-labelledby": "group-rooms", class: "contact-group rooms" },
                h("div", { id: "group-rooms", class: "group-title", role: "presentation" },
                    h("span", {}, "Rooms"), h("span", { class: "group-count", "aria-hidden": "true" },
                        inside ? `${inside}/${rooms.length}` : `${rooms.length}`)));
            for (const room of rooms) {
                seen.add(room.jid);
                section.append(this.roomRow(room));
            }
            this.list.append(section);
        }
        for (const jid of [...this.rows.keys()]) if (!seen.has(jid)) this.rows.delete(jid);
        this.empty.hidden = contacts.length + rooms.length > 0;
        this.empty.textContent = filter
            ? `No contact matches “${filter}”.`
            : "Nobody else is in your domain yet.";
        // roving tabindex: exactly one row can be tabbed to
        const rows = this.visibleRows();
        const current = rows.find((r) => r.dataset.jid === this.focused) || rows.find((r) => r.dataset.jid === this.selected) || rows[0];
        for (const r of rows) r.tabIndex = r === current ? 0 : -1;
        if (keep && keep.classList?.contains("contact") && current && keep.dataset.jid === current.dataset.jid) current.focus();
    }

    row(contact) {
        let row = this.rows.get(contact.jid);
        if (!row) {
            row = h("div", {
                role: "option", class: "contact", "data-jid": contact.jid, id: `contact-${cssId(contact.jid)}`,
                tabindex: "-1",
                onclick: () => {
                    this.focused = contact.jid;
                    this.onSelect(contact.jid);
                },
                ondblclick: () => this.onChat(contact.jid),
                onfocus: () => {
                    this.focused = contact.jid;
                },
            });
            this.rows.set(contact.jid, row);
        }
        this.fill(row, contact);
        return row;
    }

    fill(row, contact) {
        const presence = this.offline ? { status: "offline", text: "" } : contact.presence;
        const chat = this.model.chats.get(contact.jid);
        const unread = chat?.unread || 0;
        const typing = !this.offline && chat?.typing;
        let sub;
        if (typing) {
            sub = h("span", { class: "typing-text" }, contact.alias ? `${this.model.nameOf(chat.typing)} is typing…` : "typing…");
        } else if (contact.alias) {
            sub = presence.text || (presence.status === "offline" ? "No member online" : "Alias");
        } else {
            sub = presence.text ? `${STATUS[presence.status].label} · ${presence.text}` : STATUS[presence.status].label;
        }
        clear(row);
        const wrap = h("span", { class: "avatar-wrap" }, avatar(contact, "md"),
            h("span", { class: `dot status-${presence.status}`, "aria-hidden": "true" }));
        append(row, [
            wrap,
            h("span", { class: "contact-text" },
                h("span", { class: "contact-name" }, contact.name),
                h("span", { class: "contact-sub" }, sub)),
            unread ? h("span", { class: "badge", "aria-hidden": "true" }, unread > 99 ? "99+" : String(unread)) : null,
        ]);
        row.classList.toggle("is-offline", presence.status === "offline");
        row.classList.toggle("has-unread", unread > 0);
        row.setAttribute("aria-selected", String(this.selected === contact.jid));
        const parts = [contact.name, contact.alias ? "alias" : null, STATUS[presence.status].label,
            presence.text || null, typing ? "typing" : null,
            unread ? `${unread} unread ${unread === 1 ? "message" : "messages"}` : null];
        row.setAttribute("aria-label", parts.filter(Boolean).join(", "));
        row.title = contact.jid;
    }

    roomRow(room) {
        let row = this.rows.get(room.jid);
        if (!row) {
            row = h("div", {
                role: "option", class: "contact room", "data-jid": room.jid, "data-room": "true",
                id: `room-${cssId(room.jid)}`, tabindex: "-1",
                onclick: () => {
                    this.focused = room.jid;
                    this.onSelect(room.jid);
                },
                ondblclick: () => this.onRoom(room.jid),
                onfocus: () => {
                    this.focused = room.jid;
                },
            });
            this.rows.set(room.jid, row);
        }
        const chat = this.model.chats.get(room.jid);
        const unread = chat?.unread || 0;
        const inside = room.joined && !this.offline;
        const sub = inside ? `${room.count} ${room.count === 1 ? "person" : "people"} here` : "Team room";
        clear(row);
        append(row, [
            h("span", { class: "avatar-wrap" }, avatar(room, "md")),
            h("span", { class: "contact-text" },
                h("span", { class: "contact-name" }, room.name),
                h("span", { class: "contact-sub room-count" }, sub)),
            unread ? h("span", { class: "badge", "aria-hidden": "true" }, unread > 99 ? "99+" : String(unread)) : null,
        ]);
        row.classList.toggle("is-offline", !inside);
        row.classList.toggle("has-unread", unread > 0);
        row.setAttribute("aria-selected", String(this.selected === room.jid));
        row.setAttribute("aria-label", [room.name, "team room", inside ? sub : null,
            unread ? `${unread} unread ${unread === 1 ? "message" : "messages"}` : null].filter(Boolean).join(", "));
        row.title = room.jid;
        return row;
    }

    /** A room's row again (its count, its unread messages). */
    updateRoom(jid) {
        const room = this.model.room(jid);
        if (room && this.rows.has(jid)) this.roomRow(room);
    }

    update(contact) {
        const row = this.rows.get(contact.jid);
        if (row) this.fill(row, contact);
    }

    select(jid) {
        this.selected = jid;
        for (const [key, row] of this.rows) row.setAttribute("aria-selected", String(key === jid));
    }

    visibleRows() {
        return Array.from(this.list.querySelectorAll(".contact"));
    }

    focusRow(row) {
        if (!row) return;
        for (const r of this.visibleRows()) r.tabIndex = r === row ? 0 : -1;
        row.focus();
        row.scrollIntoView({ block: "nearest" });
    }

    key(e) {
        const rows = this.visibleRows();
        const index = rows.indexOf(document.activeElement);
        if (index < 0) return;
        const row = rows[index];
        switch (e.key) {
            case "ArrowDown":
                e.preventDefault();
                this.focusRow(rows[Math.min(index + 1, rows.length - 1)]);
                break;
            case "ArrowUp":
                e.preventDefault();
                if (index === 0) this.filter.focus();
                else this.focusRow(rows[index - 1]);
                break;
            case "Home":
                e.preventDefault();
                this.focusRow(rows[0]);
                break;
            case "End":
                e.preventDefault();
                this.focusRow(rows[rows.length - 1]);
                break;
            case "Enter":
            case " ":
                e.preventDefault();
                if (row.dataset.room && e.key === "Enter") this.onRoom(row.dataset.jid);
                else if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) this.onChat(row.dataset.jid);
                else this.onSelect(row.dataset.jid);
                break;
            default:
                break;
        }
    }
}

export function cssId(jid) {
    return jid.replace(/[^a-zA-Z0-9_-]/g, "_");
}
