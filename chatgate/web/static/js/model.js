// What the pane knows: contacts with their presence, the team rooms, and the
// chats with their messages. Views listen for "contact", "roster" and "rooms"
// events and redraw what changed.

export const STATUS = {
    available: { label: "Available", rank: 3 },
    busy: { label: "Busy", rank: 2 },
    away: { label: "Away", rank: 1 },
    offline: { label: "Offline", rank: 0 },
};

/** XMPP <show/> → the pane's four statuses (DESIGN: Away is away or xa, Busy is dnd). */
export function statusOfShow(show) {
    if (show === "dnd") return "busy";
    if (show === "away" || show === "xa") return "away";
    return "available";
}

export class Contact {
    constructor({ jid, name, alias = false, groups = [] }) {
        this.jid = jid;
        this.name = name || jid;
        this.alias = alias;
        this.groups = groups;
        /** resource → {status, text} */
        this.resources = new Map();
        this.vcard = null;
        this.photo = null;
        this.typing = false;
    }

    /** The best status across resources (Available > Busy > Away), with that resource's text. */
    get presence() {
        let best = { status: "offline", text: "" };
        for (const p of this.resources.values()) {
            if (STATUS[p.status].rank > STATUS[best.status].rank) best = p;
        }
        return best;
    }

    get online() {
        return this.presence.status !== "offline";
    }
}

export class Chat {
    constructor(jid) {
        this.jid = jid;
        /** oldest first */
        this.messages = [];
        this.keys = new Set();
        this.unread = 0;
        this.open = false;
        this.historyLoaded = false;
        this.typing = null; // sender jid while they type
        this.typingTimer = null;
        this.draft = "";
    }

    /**
     * Add a message unless it is here already (same archive id, or same
     * sender and message id): returns its index, or -1 for a duplicate.
     */
    add(message) {
        const archiveKey = message.archiveId ? `a:${message.archiveId}` : null;
        if ((archiveKey && this.keys.has(archiveKey)) || (message.key && this.keys.has(message.key))) {
            if (archiveKey && message.key && this.keys.has(message.key) && !this.keys.has(archiveKey)) {
                this.keys.add(archiveKey); // the copy we show learns its archive id
            }
            return -1;
        }
        if (archiveKey) this.keys.add(archiveKey);
        if (message.key) this.keys.add(message.key);
        let index = this.messages.length;
        while (index > 0 && this.messages[index - 1].at > message.at) index--;
        this.messages.splice(index, 0, message);
        return index;
    }
}

/** A team room (XEP-0045) the user may enter; its chat is model.chat(jid), marked as a room's. */
export class Room {
    constructor({ jid, name }) {
        this.jid = jid;
        this.name = name || jid;
        this.room = true;
        this.alias = true; // drawn like a group (avatar)
        /** nick → {nick, jid, affiliation, role, show} */
        this.occupants = new Map();
        /** our nickname once in (status 110), or the one being tried */
        this.nick = null;
        this.joined = false;
        this.entering = false;
        /** in, and the history of entering has all come (the subject follows it) */
        this.settled = false;
        /** the user wants to be in it (its window is open) */
        this.wanted = false;
        this.subject = "";
        /** why the user cannot be in it (refused, removed, destroyed), or null */
        this.refused = null;
        /**
         * A large room tells nobody's comings and goings but its owners': how many are
         * in it is what the room says (disco#info), who is in it what it lists (disco#items).
         */
        this.large = false;
        this.reported = null;
        /** nicknames the room listed, for a large room */
        this.listed = [];
        /** nickname → bare JID of everyone seen in the room (its presences): who wrote a private message */
        this.known = new Map();
    }

    get count() {
        return this.large ? Math.max(this.reported || 0, this.occupants.size) : this.occupants.size;
    }

    /** Everyone known to be here, by nickname: those whose presence came, and those a large room listed. */
    get people() {
        const all = new Map(this.occupants);
        if (this.large) for (const nick of this.listed) if (!all.has(nick)) all.set(nick, { nick, jid: null, show: "" });
        return [...all.values()].sort((a, b) => a.nick.localeCompare(b.nick));
    }
}

export class Model extends EventTarget {
    constructor(me) {
        super();
        this.me = me;
        /** jid → Contact */
        this.contacts = new Map();
        /** jid → Chat */
        this.chats = new Map();
        /** our own other resources: resource → status */
        this.ownResources = new Map();
        /** jid → Room: the team rooms this user may enter */
        this.rooms = new Map();
    }

    emit(name, detail) {
        this.dispatchEvent(new CustomEvent(name, { detail }));
    }

    // -- contacts

    setRoster(items) {
        const seen = new Set();
        for (const item of items) {
            if (item.jid === this.me) continue;
            seen.add(item.jid);
            this.upsert(item, false);
        }
        for (const jid of [...this.contacts.keys()]) {
            if (!seen.has(jid)) this.contacts.delete(jid);
        }
        this.emit("roster", {});
    }

    upsert(item, announce = true) {
        let contact = this.contacts.get(item.jid);
        if (!contact) {
            contact = new Contact(item);
            this.contacts.set(item.jid, contact);
        } else {
            contact.name = item.name || contact.name;
            contact.alias = item.alias;
            contact.groups = item.groups;
        }
        if (announce) this.emit("roster", {});
        return contact;
    }

    remove(jid) {
        if (this.contacts.delete(jid)) this.emit("roster", {});
    }

    contact(jid) {
        return this.contacts.get(jid) || null;
    }

    nameOf(jid) {
        if (jid === this.me) return "You";
        return this.contacts.get(jid)?.name || jid;
    }

    resetPresence() {
        for (const contact of this.contacts.values()) {
            contact.resources.clear();
            contact.typing = false;
        }
        this.ownResources.clear();
        this.emit("presence-all", {});
    }

    presence({ jid, resource, available, show, status, own }) {
        if (own) {
            if (available) this.ownResources.set(resource, statusOfShow(show));
            else this.ownResources.delete(resource);
            return;
        }
        const contact = this.contacts.get(jid);
        if (!contact) return;
        const before = contact.presence.status;
        if (available) contact.resources.set(resource, { status: statusOfShow(show), text: status });
        else contact.resources.delete(resource);
        this.emit("contact", { contact, changed: before !== contact.presence.status });
    }

    /** A contact's picture (a data: URL) came or went. */
    setPhoto(jid, photo) {
        const contact = this.contacts.get(jid);
        if (!contact || contact.photo === photo) return;
        contact.photo = photo;
        this.emit("contact", { contact, changed: false });
    }

    sorted(filter = "") {
        const needle = filter.trim().toLowerCase();
        const list = [...this.contacts.values()].filter((c) => !needle
            || c.name.toLowerCase().includes(needle) || c.jid.includes(needle));
        list.sort((a, b) => (b.online - a.online) || a.name.localeCompare(b.name));
        return list;
    }

    // -- team rooms

    /** The rooms the server lists (disco#items), kept with what is known of each. */
    setRooms(items) {
        const seen = new Set();
        for (const item of items) {
            seen.add(item.jid);
            const room = this.rooms.get(item.jid);
            if (room) room.name = item.name || room.name;
            else this.rooms.set(item.jid, new Room(item));
        }
        for (const [jid, room] of [...this.rooms]) if (!seen.has(jid) && !room.joined) this.rooms.delete(jid);
        this.emit("rooms", {});
    }

    room(jid) {
        return this.rooms.get(jid) || null;
    }

    /** A room the user can no longer be in leaves the list. */
    dropRoom(jid) {
        if (this.rooms.delete(jid)) this.emit("rooms", {});
    }

    sortedRooms(filter = "") {
        const needle = filter.trim().toLowerCase();
        return [...this.rooms.values()].filter((r) => !needle || r.name.toLowerCase().includes(needle) || r.jid.includes(needle))
            .sort((a, b) => a.name.localeCompare(b.name));
    }

    // -- chats

    chat(jid) {
        let chat = this.chats.get(jid);
        if (!chat) {
            chat = new Chat(jid);
            this.chats.set(jid, chat);
        }
        return chat;
    }

    get unread() {
        let total = 0;
        for (const chat of this.chats.values()) total += chat.unread;
        return total;
    }
}
