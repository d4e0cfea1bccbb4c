// Team rooms (XEP-0045): the rooms the user may enter (listed after every
// sign-in), entering a room when its window opens and leaving it when the
// window closes, who is in it, its subject and messages. The user's
// nickname is their localpart ("alice"); when it is taken by someone else a
// digit is added ("alice2", …). A room that goes away (destroyed, or the user
// removed from its members) says so in its window and leaves the list.

const HISTORY = 20; // messages asked for on entering (the server keeps as many)
const NICK_TRIES = 9;
const LARGE_ROOM_RECOUNT = 60000; // ms between asking a large room how many are in it

const REFUSALS = {
    "registration-required": "You are not a member of this room.",
    forbidden: "You may not enter this room.",
    "item-not-found": "This room does not exist any more.",
    "not-allowed": "This room is closed.",
    "service-unavailable": "This room cannot be entered now.",
};

export class Rooms {
    constructor(model, client, chats, { notifications, announce }) {
        this.model = model;
        this.client = client;
        this.chats = chats;
        this.notifications = notifications;
        this.announce = announce;
        this.base = model.me.split("@")[0];
        client.addEventListener("rooms", (e) => {
            this.model.setRooms(e.detail.items);
            this.rejoin();
        });
        client.addEventListener("state", (e) => this.connection(e.detail.state));
        client.addEventListener("room-presence", (e) => this.presence(e.detail));
        client.addEventListener("room-error", (e) => this.refused(e.detail));
        client.addEventListener("room-subject", (e) => this.subject(e.detail));
        client.addEventListener("room-message", (e) => this.message(e.detail.message));
        client.addEventListener("room-private", (e) => this.private(e.detail));
        // a large room tells nobody's comings and goings: how many are there is asked now and then
        setInterval(() => {
            for (const room of this.model.rooms.values()) if (room.large && room.joined) this.recount(room);
        }, LARGE_ROOM_RECOUNT);
    }

    /**
     * How many the room says are in it: more than the presences that came means a
     * large room (only its owners' comings and goings are told), counted by asking.
     */
    async recount(room) {
        try {
            const count = await this.client.roomOccupantCount(room.jid);
            if (count === null || !room.joined) return;
            room.reported = count;
            if (count > room.occupants.size) room.large = true;
            this.changed(room);
        } catch {
            // the count from presences stays
        }
    }

    /** The list of who is here was opened: a large room is asked who is in it. */
    async people(jid) {
        const room = this.model.room(jid);
        if (!room || !room.large || !room.joined) return;
        try {
            room.listed = await this.client.roomOccupantNicks(jid);
            this.changed(room);
        } catch {
            // the known ones stay listed
        }
        this.recount(room);
    }

    changed(room) {
        this.model.emit("room", { jid: room.jid });
        this.chats.header(room.jid);
    }

    /** The room's window, opened (and the room entered) or brought forward. */
    open(jid) {
        const room = this.model.room(jid);
        if (!room) return null;
        const chat = this.model.chat(jid);
        chat.room = true;
        const existing = this.chats.views.get(jid);
        if (existing && existing.room !== room) existing.room = room; // listed again after it went
        room.wanted = true;
        room.refused = null;
        const view = this.chats.open(jid, { activate: true, focus: false });
        if (!room.joined && !room.entering) this.enter(room);
        this.chats.header(jid);
        return view;
    }

    /** Its window was closed: leave the room. */
    closed(jid) {
        const room = this.model.room(jid) || this.chats.views.get(jid)?.room;
        if (!room) return;
        room.wanted = false;
        if (room.joined || room.entering) this.client.leaveRoom(jid, room.nick);
        this.left(room);
    }

    enter(room, attempt = 0) {
        if (this.client.state !== "online") return; // entered once the session is back (rejoin)
        room.entering = true;
        room.settled = false;
        room.attempt = attempt;
        room.nick = attempt ? `${this.base}${attempt + 1}` : this.base;
        this.client.enterRoom(room.jid, room.nick, HISTORY);
    }

    left(room) {
        this.client.forgetRoom(room.jid);
        room.large = false;
        room.reported = null;
        room.listed = [];
        room.settled = false;
        room.joined = false;
        room.entering = false;
        room.occupants.clear();
        this.model.emit("rooms", {});
        this.chats.header(room.jid);
    }

    /** The session changed: not in any room while offline; back in the wanted ones when online (after the list). */
    connection(state) {
        if (state === "online") return; // the list comes first, then rejoin()
        for (const room of this.model.rooms.values()) {
            if (room.joined || room.entering) this.left(room);
        }
    }

    rejoin() {
        for (const [jid, view] of this.chats.views) {
            if (!view.room) continue;
            const room = this.model.room(jid);
            if (!room) {
                // no longer listed for this user
                if (!view.room.refused) this.gone(view.room, "You are no longer a member of this room.");
                continue;
            }
            if (view.room !== room) continue; // listed again after it went: entered when opened again
            if (room.wanted && !room.joined && !room.entering && !room.refused) this.enter(room);
        }
    }

    presence({ room: jid, nick, available, jid: real, affiliation, role, newNick, codes, self, destroyed, show }) {
        const room = this.model.room(jid) || this.chats.views.get(jid)?.room;
        if (!room) return;
        if (available) {
            room.occupants.set(nick, { nick, jid: real, affiliation, role, show });
            if (real) room.known.set(nick, real);
            if (self) {
                const first = !room.joined;
                room.joined = true;
                room.entering = false;
                room.nick = nick;
                if (first) {
                    this.model.emit("rooms", {});
                    this.recount(room);
                }
            }
        } else {
            room.occupants.delete(nick);
            if (!self) room.known.delete(nick); // gone: the nickname may be someone else's next
            room.listed = room.listed.filter((n) => n !== nick);
            if (codes.includes("303") && newNick) {
                if (self) room.nick = newNick;
            } else if (self) {
                if (destroyed) {
                    this.gone(room, `This room was closed${destroyed.reason ? `: ${destroyed.reason}` : "."}`);
                    return;
                }
                if (codes.includes("321")) {
                    this.gone(room, "You were removed from this room's members.");
                    return;
                }
                if (codes.includes("307") || codes.includes("301")) {
                    this.gone(room, "You were sent out of this room.");
                    return;
                }
                if (!room.entering) this.left(room); // (entering again already: the window was closed and opened)
                return;
            }
        }
        this.model.emit("room", { jid });
        this.chats.header(jid);
    }

    /** Entering was refused: another nickname on a conflict, else a line in the window. */
    refused({ room: jid, condition, text }) {
        const room = this.model.room(jid) || this.chats.views.get(jid)?.room;
        if (!room || !room.entering) return;
        if (condition === "conflict" && room.attempt + 1 < NICK_TRIES) {
            this.enter(room, room.attempt + 1);
            return;
        }
        room.entering = false;
        if (condition === "conflict") {
            this.notice(room, "Your name is in use in this room.");
            return;
        }
        const reason = REFUSALS[condition] || text || "This room cannot be entered.";
        if (["registration-required", "forbidden", "item-not-found", "not-allowed"].includes(condition)) {
            this.gone(room, reason);
        } else {
            this.notice(room, reason);
        }
    }

    /** The user cannot be in *room* any more: one line in its window; it leaves the list. */
    gone(room, why) {
        room.wanted = false;
        this.left(room);
        this.notice(room, why);
        this.model.dropRoom(room.jid);
        this.announce(`${room.name}: ${why}`);
    }

    notice(room, why) {
        room.refused = why;
        this.chats.header(room.jid);
    }

    subject({ room: jid, subject }) {
        const room = this.model.room(jid);
        if (!room) return;
        room.subject = subject.trim();
        room.settled = room.joined; // §7.2.16: the subject comes last when entering, after the history
        this.chats.header(jid);
    }

    /**
     * A private message with an occupant (§7.5): rooms here are not anonymous, so it
     * shows in the chat with that person, a contact (a reply goes to them), marked
     * as from the room; with someone the pane cannot name (never seen in the room), in
     * the room's window if it is open. Who a nickname is comes from the room's own
     * presences only, never from the nickname.
     */
    private({ message }) {
        const room = this.model.room(message.contact);
        if (!room) return;
        const real = room.known.get(message.nick);
        const contact = real && real !== this.model.me ? this.model.contact(real) : null;
        message.private = room.name;
        if (contact) {
            message.contact = contact.jid;
            message.sender = message.outgoing ? this.model.me : contact.jid;
        } else if (this.chats.views.has(room.jid)) {
            Object.assign(message, { room: true, sender: message.outgoing ? room.nick : message.nick });
        } else {
            console.info(`chat: a private message from ${room.jid}/${message.nick}, whom the pane cannot name`);
            return;
        }
        const isNew = this.chats.receive(message);
        if (!isNew || !message.live || message.delayed) return;
        const title = `${contact ? contact.name : message.nick} (privately, in ${room.name})`;
        this.notifications.message({ chatJid: message.contact, title, body: message.body });
        if (!this.chats.seen(message.contact)) this.announce(`New message from ${title}: ${message.body}`);
    }

    message(message) {
        const room = this.model.room(message.contact);
        const view = this.chats.views.get(message.contact);
        if (!room || !view || !room.wanted) return; // a window closed meanwhile: nothing to show it in
        const chat = this.model.chat(room.jid);
        message.outgoing = Boolean(room.nick) && message.nick === room.nick;
        if (message.outgoing) {
            // the room's copy of what this window sent: the message shown already learns its archive id
            const sent = message.id && chat.messages.find((m) => m.outgoing && m.id === message.id && !m.archiveId);
            if (sent) {
                sent.archiveId = message.archiveId;
                sent.status = "delivered";
                if (message.archiveId) chat.keys.add(`a:${message.archiveId}`);
                this.chats.render(room.jid);
                return;
            }
            message.status = "delivered"; // from our other device, or from before: the room has it
        }
        const isNew = this.chats.receive(message);
        if (!isNew || message.outgoing || message.delayed) return;
        const title = `${message.nick} in ${room.name}`;
        this.notifications.message({ chatJid: room.jid, title, body: message.body });
        if (!this.chats.seen(room.jid)) this.announce(`New message from ${title}: ${message.body}`);
    }
}
