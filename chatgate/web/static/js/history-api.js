// The history API (/history/…, JSON, HTTP Basic with the address and the
// login token or password): conversations grouped by contact and time gap.

export class HistoryAPI {
    constructor(credentials, base = "/history") {
        this.credentials = credentials;
        this.base = base;
    }

    async get(name, params = {}) {
        const url = new URL(`${this.base}/${name}`, location.origin);
        for (const [key, value] of Object.entries(params)) {
            if (value !== undefined && value !== null && value !== "") url.searchParams.set(key, value);
        }
        for (let attempt = 0; ; attempt++) {
            // credentials: "omit" — the Authorization header is ours; no browser login prompt on a 401
            const answer = await fetch(url, {
                headers: { Authorization: this.credentials.basic(), Accept: "application/json" },
                credentials: "omit",
                cache: "no-store",
            });
            if (answer.status === 401 && attempt === 0 && (await this.credentials.fresh())) continue;
            const body = await answer.json().catch(() => ({}));
            if (!answer.ok) {
                const error = new Error(body.error || `HTTP ${answer.status}`);
                error.status = answer.status;
                throw error;
            }
            return body;
        }
    }

    contacts() {
        return this.get("contacts");
    }

    /** The conversations with a contact ({with: jid}, or the bare address) or in a team room ({room: jid}). */
    conversations(target, { before, limit = 10 } = {}) {
        const { with: contact, room } = typeof target === "string" ? { with: target } : target;
        return this.get("conversations", { with: contact, room, before, limit });
    }

    /**
     * One page of a conversation: the newest, or the one before (after) a message id.
     * A room's conversation is in the room's archive: name the room.
     */
    conversation(id, { before, after, limit, room } = {}) {
        return this.get("conversation", { id, room, before, after, limit });
    }

    /**
     * The user's messages with every word of q (each the start of a word, any case, accents
     * aside), newest first, each with its conversation; narrowed to a contact ({with}) or
     * searching a team room's archive ({room}); older ones with before = the answer's last.
     */
    search(q, { with: contact, room, before, limit } = {}) {
        return this.get("search", { q, with: contact, room, before, limit });
    }
}

/**
 * The stable address of one conversation's own page; a room's names the room
 * (its archive is read there) and its name (the page has no other way to know it).
 */
export function conversationURL(id, room = null) {
    const url = new URL(`conversation.html?id=${encodeURIComponent(id)}`, location.href);
    if (room) {
        url.searchParams.set("room", room.jid);
        url.searchParams.set("name", room.name);
    }
    return url.href;
}
