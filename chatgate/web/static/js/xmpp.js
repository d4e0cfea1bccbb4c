// The pane's XMPP client: Strophe.js over XMPP over WebSocket (RFC 7395) when
// the server offers it (config.json's "websocket" path, on this page's origin:
// ws:// for http, wss:// for https), else over BOSH (XEP-0124/0206) to
// /http-bind, with what a chat pane needs on top:
//
// - one session at a time, under a fresh random resource ("webmail-…");
// - WebSocket first; a WebSocket that cannot be opened (refused, blocked by a
//   proxy, silent) falls back to BOSH in the same attempt, with one console
//   line and nothing on screen; once BOSH worked where the WebSocket never
//   opened, this page load uses BOSH only (see `transports`);
// - roster (RFC 6121) with pushes, presence, chat messages with XEP-0085 chat
//   states, carbons (XEP-0280) enabled so messages of the user's other
//   clients show up too, vCards (XEP-0054), MAM (XEP-0313);
// - staying online by itself: when the session dies (the server ended it,
//   the network dropped, the computer slept) it signs in again with backoff,
//   then asks the archive for everything after the last archive id it saw
//   (RSM "after"), so nothing is missed; the pane drops what it already shows;
// - "offline" on purpose (the status menu) ends this session only: the
//   user's other clients keep their own presence.
//
// - team rooms (XEP-0045) at the domain's room service: the rooms the user
//   may enter (disco#items, after every sign-in), entering, leaving and
//   groupchat messages; what the room says is told as room-* events;
//   invitations to rooms, from the room (§7.8.2) or from a user of the
//   domain (XEP-0249, only to this domain's room service), as room-invitation.
//
// Events (CustomEvent, details in each dispatch): state, roster, roster-item,
// presence-reset, presence, message, chatstate, message-error, rooms,
// room-presence, room-error, room-message, room-subject, room-private,
// room-invitation.

import { $iq, $msg, $pres, Strophe } from "../vendor/strophe.esm.js";
import { randomId } from "./dom.js";

Strophe.setLogLevel(Strophe.LogLevel.WARN);

export const NS = {
    roster: "jabber:iq:roster",
    carbons: "urn:xmpp:carbons:2",
    forward: "urn:xmpp:forward:0",
    mam: "urn:xmpp:mam:2",
    rsm: "http://jabber.org/protocol/rsm",
    xdata: "jabber:x:data",
    delay: "urn:xmpp:delay",
    sid: "urn:xmpp:sid:0",
    chatstates: "http://jabber.org/protocol/chatstates",
    vcard: "vcard-temp",
    ping: "urn:xmpp:ping",
    discoInfo: "http://jabber.org/protocol/disco#info",
    stanzas: "urn:ietf:params:xml:ns:xmpp-stanzas",
    receipts: "urn:xmpp:receipts",
    markers: "urn:xmpp:chat-markers:0",
    correct: "urn:xmpp:message-correct:0",
    upload: "urn:xmpp:http:upload:0",
    oob: "jabber:x:oob",
    conference: "jabber:x:conference",
    discoItems: "http://jabber.org/protocol/disco#items",
    muc: "http://jabber.org/protocol/muc",
    mucUser: "http://jabber.org/protocol/muc#user",
    pubsub: "http://jabber.org/protocol/pubsub",
    pubsubEvent: "http://jabber.org/protocol/pubsub#event",
    caps: "http://jabber.org/protocol/caps",
    avatarData: "urn:xmpp:avatar:data",
    avatarMeta: "urn:xmpp:avatar:metadata",
};

/** What the pane is (XEP-0030) and asks the server to tell it of (avatars: XEP-0163 +notify). */
const IDENTITY = { category: "client", type: "web", name: "chatgate webmail chat" };
const FEATURES = [NS.discoInfo, NS.ping, NS.chatstates, NS.carbons, `${NS.avatarMeta}+notify`];
/** XEP-0115's node for the pane; its ver is the hash of IDENTITY and FEATURES (§5.1). */
const CAPS_NODE = "urn:chatgate:pane";
/** the largest picture the pane publishes (bytes, before base64: the server's stanza limit) */
const MAX_AVATAR = 160 * 1024;

/** XEP-0115 §5.1's verification string, hashed (SHA-1, base64); null where the browser cannot hash. */
async function capsVer() {
    if (!globalThis.crypto?.subtle) return null;
    const text = `${IDENTITY.category}/${IDENTITY.type}//${IDENTITY.name}<`
        + [...FEATURES].sort().map((f) => `${f}<`).join("");
    const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(text));
    return btoa(String.fromCharCode(...new Uint8Array(digest)));
}

function base64Of(buffer) {
    let text = "";
    const bytes = new Uint8Array(buffer);
    for (let i = 0; i < bytes.length; i += 0x8000) text += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
    return btoa(text);
}

const CHAT_STATES = ["active", "composing", "paused", "inactive", "gone"];
/** seconds between reconnect attempts, then the last one over and over */
const BACKOFF = [1, 2, 4, 8, 15, 30];
const IQ_TIMEOUT = 20000;
/** ms a WebSocket has to bring the server's <open/> before BOSH is tried instead */
const WEBSOCKET_OPEN_TIMEOUT = 10000;
/** ms between pings on an idle WebSocket: a dead connection shows no other way (BOSH's requests time out) */
const WEBSOCKET_PING_INTERVAL = 45000;

/**
 * What this page load learned about the WebSocket: "untried", "works" (the
 * server's <open/> came through it once) or "blocked" (it never opened, and
 * BOSH then worked): reconnections do not try a blocked WebSocket again.
 */
export const transports = { websocket: "untried" };

/** The WebSocket URL of *path* on this page's origin: ws:// for an http page, wss:// for https. */
export function websocketURL(path, page = window.location.href) {
    const url = new URL(path, page);
    if (url.protocol === "http:") url.protocol = "ws:";
    else if (url.protocol === "https:") url.protocol = "wss:";
    return url.href;
}

export const bare = (jid) => (jid ? Strophe.getBareJidFromJid(jid).toLowerCase() : jid);
export const resourceOf = (jid) => Strophe.getResourceFromJid(jid);

/** The first child element of *el* with this local name (and namespace, when given). */
export function child(el, name, ns = null) {
    if (!el) return null;
    for (const c of el.children) {
        if (c.localName === name && (ns === null || c.namespaceURI === ns)) return c;
    }
    return null;
}

const text = (el) => (el ? el.textContent : null);

/** The defined condition of an error stanza (RFC 6120 §8.3.3), e.g. "item-not-found". */
export function errorCondition(stanza) {
    const error = child(stanza, "error");
    const condition = error ? Array.from(error.children).find((e) => e.namespaceURI === NS.stanzas
        && e.localName !== "text") : null;
    return condition ? condition.localName : "error";
}

export class ChatClient extends EventTarget {
    /**
     * credentials: auth.js Credentials; service: the BOSH URL; websocket: the
     * WebSocket path or URL (config.json), null for BOSH only.
     */
    constructor(credentials, service, { wait = 30, websocket = null } = {}) {
        super();
        this.credentials = credentials;
        this.me = credentials.jid;
        this.service = service;
        this.websocket = websocket ? websocketURL(websocket) : null;
        this.wait = wait;
        this.connection = null;
        /** "websocket" or "bosh": what the current (or last) session uses */
        this.transport = null;
        this.generation = 0;
        /** connecting | online | reconnecting | offline | signed-out */
        this.state = "offline";
        this.wanted = false; // the user wants to be online
        this.show = ""; // "", "away", "dnd"
        this.status = "";
        this.attempt = 0;
        this.retryTimer = null;
        this.retryAt = null;
        /** the newest archive id seen live: catching up starts after it */
        this.anchor = null;
        this.lostAt = null;
        this.everConnected = false;
        this._mamCollectors = new Map();
        /** the domain's mail aliases (bare JIDs), from the roster */
        this.aliases = new Set();
        /** the domain's room service (XEP-0045), e.g. conference.example.com, once found */
        this.roomService = null;
        /** the rooms this session is in or entering: room JID → nickname (they get our presence changes) */
        this.inRooms = new Map();
        this._onOnline = () => this.state === "reconnecting" && this.retryNow();
        window.addEventListener("online", this._onOnline);
        // Closing the window ends the session at once (contacts see us go now,
        // not when the server's inactivity timer runs out); coming back from
        // the browser's page cache starts a new one.
        this._onPageHide = () => this._leaving();
        this._onPageShow = (event) => {
            if (event.persisted && this.wanted) this.retryNow();
        };
        window.addEventListener("pagehide", this._onPageHide);
        window.addEventListener("pageshow", this._onPageShow);
    }

    /**
     * The page goes away. Over WebSocket the stream closes cleanly (RFC 7395
     * §3.6: unavailable presence, <close/>, then the socket's close), all
     * written before the page is gone; over BOSH a last request (XEP-0124 §13)
     * that outlives the page, via sendBeacon.
     */
    _leaving() {
        const connection = this.connection;
        if (this.state !== "online" || !connection) return;
        if (this.transport === "websocket") {
            this.generation++; // the ending session's callbacks are ignored from now on
            try {
                connection.disconnect("leaving"); // queued stanzas, the presence and <close/>, sent at once
            } catch {
                // the socket is gone already
            }
            this._abandon(); // closes the socket now: Strophe's own close comes on a timer the page may not see
            this.state = "reconnecting"; // a page restored from the cache reconnects
            return;
        }
        if (!connection._proto?.sid || !navigator.sendBeacon) return;
        // stanzas Strophe has queued but not sent yet go first
        const queued = (connection._data || []).filter((e) => e && e.nodeType === 1).map((e) => Strophe.serialize(e)).join("");
        const body = `<body xmlns='http://jabber.org/protocol/httpbind' rid='${connection._proto.rid}' `
            + `sid='${connection._proto.sid}' type='terminate'>${queued}`
            + "<presence xmlns='jabber:client' type='unavailable'/></body>";
        navigator.sendBeacon(this.service, new Blob([body], { type: "text/plain;charset=UTF-8" }));
        this.generation++;
        this._abandon();
        this.state = "reconnecting"; // a page restored from the cache reconnects
    }

    emit(name, detail = {}) {
        this.dispatchEvent(new CustomEvent(name, { detail }));
    }

    setState(state, reason = null) {
        this.state = state;
        this.emit("state", { state, reason, retryAt: this.retryAt });
    }

    // -- lifecycle

    /** Go online with the current show/status. */
    start() {
        this.wanted = true;
        this.attempt = 0;
        this._connect();
    }

    /** Offline on purpose: this session ends, the user's other clients are untouched. */
    goOffline() {
        this.wanted = false;
        clearTimeout(this.retryTimer);
        this.retryAt = null;
        const connection = this.connection;
        this.generation++; // callbacks of the ending session are ignored from now on
        this.connection = null;
        clearTimeout(this.openTimer);
        clearInterval(this.pingTimer);
        if (connection) {
            try {
                connection.disconnect("offline");
            } catch {
                // already gone
            }
        }
        this.setState("offline");
    }

    /** Sign out altogether: offline, and forget who we are. */
    signOut() {
        this.wanted = false;
        this._leaving(); // the terminate goes out even though the page is about to go
        this.goOffline();
        window.removeEventListener("online", this._onOnline);
        window.removeEventListener("pagehide", this._onPageHide);
        window.removeEventListener("pageshow", this._onPageShow);
        this.setState("signed-out", null);
    }

    retryNow() {
        if (!this.wanted || this.state === "online" || this.state === "connecting") return;
        clearTimeout(this.retryTimer);
        this._connect();
    }

    async _connect() {
        clearTimeout(this.retryTimer);
        this.retryAt = null;
        const generation = ++this.generation;
        this._abandon();
        this.setState("connecting");
        if (this.everConnected) await this.credentials.fresh();
        if (generation !== this.generation) return;
        this._open(generation, this.websocket && transports.websocket !== "blocked" ? "websocket" : "bosh");
    }

    /**
     * One sign-in over *transport*. A WebSocket that brings nothing (refused,
     * closed, or silent for WEBSOCKET_OPEN_TIMEOUT) hands over to BOSH at once,
     * as part of the same attempt: the pane stays "connecting".
     */
    _open(generation, transport, { fallback = false } = {}) {
        const S = Strophe.Status;
        const websocket = transport === "websocket";
        const token = this.credentials.kind === "token";
        const mechanisms = token ? [Strophe.SASLPlain] : [Strophe.SASLSHA256, Strophe.SASLSHA1, Strophe.SASLPlain];
        const connection = new Strophe.Connection(websocket ? this.websocket : this.service, { mechanisms });
        this.connection = connection;
        this.transport = transport;
        this.httpErrors = 0;
        let heard = false; // anything from the server on this connection
        connection.xmlInput = () => {
            this.httpErrors = 0;
            if (!heard && websocket) transports.websocket = "works";
            heard = true;
        };
        const noWebSocket = (why) => {
            if (websocket && !heard && generation === this.generation) this._noWebSocket(why);
        };
        if (!websocket) {
            connection.maxRetries = 2;
            for (const status of [0, 500, 502, 503, 504]) {
                connection.addProtocolErrorHandler("HTTP", status, () => this._httpError(generation));
            }
        }
        const resource = `webmail-${randomId(6)}`;
        connection.connect(`${this.me}/${resource}`, this.credentials.secret(), (status, condition, element) => {
            if (generation !== this.generation) return;
            if (websocket && !heard && (status === S.CONNFAIL || status === S.DISCONNECTED)) {
                noWebSocket(condition || "failed");
                return;
            }
            // BOSH worked where the WebSocket never opened in this page load: BOSH from now on
            if (status === S.CONNECTED && fallback && transports.websocket !== "works") transports.websocket = "blocked";
            this._status(status, condition, element);
        }, this.wait, 1);
        if (websocket) {
            // Strophe notices only a socket that fails with 1006; one closed otherwise, or
            // accepted and silent (a proxy), would leave it connecting for good
            connection._proto.socket?.addEventListener("close", (event) => noWebSocket(`closed (${event.code})`));
            this.openTimer = setTimeout(() => noWebSocket("no answer"), WEBSOCKET_OPEN_TIMEOUT);
        }
    }

    /** The WebSocket could not be opened: BOSH now, in the same attempt. */
    _noWebSocket(why) {
        console.info(`chat: no WebSocket at ${this.websocket} (${why}); using BOSH`);
        const generation = ++this.generation; // the WebSocket's late callbacks are ignored
        this._abandon();
        this._open(generation, "bosh", { fallback: true });
    }

    /** Network trouble: Strophe retries once at once; a second failure in a row means the session is lost. */
    _httpError(generation) {
        if (generation !== this.generation) return;
        this.httpErrors++;
        if (this.httpErrors >= 2) this._lost("network");
    }

    _abandon() {
        const old = this.connection;
        this.connection = null;
        clearTimeout(this.openTimer);
        clearInterval(this.pingTimer);
        if (!old) return;
        try {
            old._proto._closeSocket?.(); // a WebSocket: closed, its handlers first taken off
            old._proto._abortAllRequests?.();
            old.reset();
            clearTimeout(old._idleTimeout);
        } catch {
            // nothing left to stop
        }
    }

    _status(status, condition, element) {
        const S = Strophe.Status;
        switch (status) {
            case S.CONNECTED:
                this._connected();
                break;
            case S.AUTHFAIL:
                this._authFailed(element);
                break;
            case S.CONNFAIL:
                this.lastCondition = condition;
                break;
            case S.DISCONNECTED:
                if (this.state !== "signed-out") this._lost(this.lastCondition || condition || "disconnected");
                break;
            default:
                break;
        }
    }

    async _authFailed(element) {
        const generation = ++this.generation; // the failed session is over
        this._abandon();
        const disabled = element && element.getElementsByTagName("account-disabled").length > 0;
        if (disabled) {
            this.wanted = false;
            this.setState("signed-out", "Chat is turned off for your domain.");
            return;
        }
        // A token that expired meanwhile: get a fresh one, once, then try again.
        if (!this._retriedAuth && (await this.credentials.fresh()) && generation === this.generation) {
            this._retriedAuth = true;
            this._connect();
            return;
        }
        this.wanted = false;
        this.setState("signed-out", this.everConnected
            ? "Your chat session has expired. Sign in again."
            : "Sign-in failed: wrong address, password or expired sign-in link.");
    }

    _lost(reason) {
        if (this.state === "offline" || this.state === "signed-out") return;
        this.generation++;
        this._abandon();
        if (this.state === "online") this.lostAt = new Date();
        if (!this.wanted) {
            this.setState("offline");
            return;
        }
        const seconds = BACKOFF[Math.min(this.attempt, BACKOFF.length - 1)] * (0.8 + Math.random() * 0.4);
        this.attempt++;
        this.retryAt = Date.now() + seconds * 1000;
        this.retryTimer = setTimeout(() => this._connect(), seconds * 1000);
        this.setState("reconnecting", reason);
    }

    // -- a new session

    async _connected() {
        const connection = this.connection;
        const generation = this.generation;
        const c = connection;
        this._retriedAuth = false;
        this.inRooms.clear(); // a new session is in no room
        c.addHandler((m) => this._message(m), null, "message");
        c.addHandler((p) => this._presence(p), null, "presence");
        c.addHandler((iq) => this._iqRequest(iq), null, "iq", "get");
        c.addHandler((iq) => this._iqRequest(iq), null, "iq", "set");
        try {
            await this.iq($iq({ type: "set" }).c("enable", { xmlns: NS.carbons })).catch(() => null);
            const roster = await this.iq($iq({ type: "get" }).c("query", { xmlns: NS.roster }));
            if (this.capsVer === undefined) this.capsVer = await capsVer().catch(() => null);
            if (generation !== this.generation) return;
            this.emit("presence-reset");
            const items = Array.from(roster.getElementsByTagName("item"), rosterItem);
            this.aliases = new Set(items.filter((i) => i.alias).map((i) => i.jid));
            this.emit("roster", { items });
            // known before the first presence: what comes then (an invitation kept offline) is told apart by it
            if (!this.roomService) this.roomService = await this._findRoomService();
            if (generation !== this.generation) return;
            c.send(this._presenceStanza());
            this._keepAlive(generation);
            const first = !this.everConnected;
            this.everConnected = true;
            this.attempt = 0;
            this.setState("online");
            this._loadRooms(generation);
            try {
                if (first) await this._findAnchor();
                else await this._catchUp();
            } catch (error) {
                // the session itself is fine; what was missed is still in the conversations
                console.warn("catching up from the archive failed", error);
            }
        } catch (error) {
            if (generation === this.generation) {
                console.warn("chat session setup failed", error);
                this._lost("setup failed");
            }
        }
    }

    /** Over WebSocket, a ping (XEP-0199) to the server now and then: no answer in time means the connection is dead. */
    _keepAlive(generation) {
        clearInterval(this.pingTimer);
        if (this.transport !== "websocket") return;
        this.pingTimer = setInterval(() => {
            if (generation !== this.generation || this.state !== "online") return;
            this.iq($iq({ type: "get", to: this.credentials.domain }).c("ping", { xmlns: NS.ping })).catch((error) => {
                if (generation === this.generation && !error.stanza) this._lost("network"); // no answer at all
            });
        }, WEBSOCKET_PING_INTERVAL);
    }

    _presenceStanza() {
        const p = $pres();
        if (this.show) p.c("show").t(this.show).up();
        if (this.status) p.c("status").t(this.status).up();
        if (this.capsVer) p.c("c", { xmlns: NS.caps, hash: "sha-1", node: CAPS_NODE, ver: this.capsVer }).up();
        return p;
    }

    // -- avatars (XEP-0084 over PEP; the vCard's PHOTO, XEP-0153, where there is none)

    /** A contact's avatar as a data: URL, or null: their PEP avatar, else their vCard's photo. */
    async avatar(jid) {
        try {
            const result = await this.iq($iq({ type: "get", to: jid }).c("pubsub", { xmlns: NS.pubsub })
                .c("items", { node: NS.avatarMeta, max_items: "1" }));
            const info = result.getElementsByTagNameNS(NS.avatarMeta, "info")[0];
            if (info) return await this._avatarData(jid, info);
        } catch {
            // no avatar published: the vCard may have one
        }
        try {
            return (await this.vcard(jid)).photo;
        } catch {
            return null;
        }
    }

    async _avatarData(jid, info) {
        const id = info.getAttribute("id");
        const type = info.getAttribute("type") || "image/png";
        if (!id || !/^image\/(png|jpeg|gif|webp)$/.test(type)) return null;
        const result = await this.iq($iq({ type: "get", to: jid }).c("pubsub", { xmlns: NS.pubsub })
            .c("items", { node: NS.avatarData }).c("item", { id }));
        const data = result.getElementsByTagNameNS(NS.avatarData, "data")[0];
        const binval = data ? data.textContent.replace(/\s+/g, "") : "";
        return /^[A-Za-z0-9+/=]+$/.test(binval) ? `data:${type};base64,${binval}` : null;
    }

    /** A PEP notification of a contact's avatar metadata: fetch the picture it names. */
    async _avatarEvent(jid, items) {
        const info = items.getElementsByTagNameNS(NS.avatarMeta, "info")[0];
        let photo = null;
        try {
            photo = info ? await this._avatarData(jid, info) : null;
        } catch {
            return;
        }
        this.emit("avatar", { jid, photo });
    }

    /** Publish *file* as the user's avatar (data, then metadata: XEP-0084 §4.1-4.2). */
    async setAvatar(file) {
        if (!/^image\/(png|jpeg|gif|webp)$/.test(file.type)) throw new Error("Choose a PNG, JPEG, GIF or WebP picture");
        if (file.size > MAX_AVATAR) throw new Error(`The picture is over ${MAX_AVATAR / 1024} KB`);
        const bytes = await file.arrayBuffer();
        const id = Array.from(new Uint8Array(await crypto.subtle.digest("SHA-1", bytes)),
            (b) => b.toString(16).padStart(2, "0")).join("");
        await this.iq($iq({ type: "set" }).c("pubsub", { xmlns: NS.pubsub })
            .c("publish", { node: NS.avatarData }).c("item", { id })
            .c("data", { xmlns: NS.avatarData }).t(base64Of(bytes)));
        await this.iq($iq({ type: "set" }).c("pubsub", { xmlns: NS.pubsub })
            .c("publish", { node: NS.avatarMeta }).c("item", { id })
            .c("metadata", { xmlns: NS.avatarMeta })
            .c("info", { id, type: file.type, bytes: String(file.size) }));
        this.emit("avatar", { jid: this.me, photo: `data:${file.type};base64,${base64Of(bytes)}` });
    }

    /** Available ("" ), away or dnd, with an optional text; goes online first if needed. */
    setPresence(show, status) {
        this.show = show;
        this.status = status || "";
        if (this.state === "online") {
            this.connection.send(this._presenceStanza());
            // XEP-0045 §7.7: the rooms we are in hear of it from us
            for (const [room, nick] of this.inRooms) this.connection.send(this._presenceStanza().attrs({ to: `${room}/${nick}` }));
        } else if (!this.wanted || this.state === "offline") {
            this.start();
        }
    }

    // -- IQ

    /** Send an IQ; resolves with the result, rejects with the error stanza (or a timeout). */
    iq(stanza, timeout = IQ_TIMEOUT) {
        const connection = this.connection;
        if (!connection || !connection.connected) return Promise.reject(new Error("not connected"));
        return new Promise((resolve, reject) => {
            connection.sendIQ(stanza, resolve, (error) => {
                const condition = error ? errorCondition(error) : "timeout";
                reject(Object.assign(new Error(`IQ failed: ${condition || "error"}`), { stanza: error }));
            }, timeout);
        });
    }

    _iqRequest(iq) {
        const from = iq.getAttribute("from");
        const query = iq.firstElementChild;
        const reply = (build) => {
            const answer = $iq({ type: "result", id: iq.getAttribute("id"), ...(from ? { to: from } : {}) });
            if (build) build(answer);
            this.connection?.send(answer);
        };
        if (query?.namespaceURI === NS.roster && iq.getAttribute("type") === "set") {
            // RFC 6121 §2.1.6: only from our own account
            if (from && bare(from) !== this.me && from.toLowerCase() !== this.credentials.domain) return true;
            for (const item of query.getElementsByTagName("item")) {
                const parsed = rosterItem(item);
                const removed = item.getAttribute("subscription") === "remove";
                if (parsed.alias && !removed) this.aliases.add(parsed.jid);
                else this.aliases.delete(parsed.jid);
                this.emit("roster-item", { item: parsed, removed: item.getAttribute("subscription") === "remove" });
                if (parsed.alias) this._roomsChanged(); // an alias's members changed: so may the rooms we may enter
            }
            reply();
        } else if (query?.namespaceURI === NS.ping && iq.getAttribute("type") === "get") {
            reply();
        } else if (query?.namespaceURI === NS.discoInfo && iq.getAttribute("type") === "get") {
            const node = query.getAttribute("node");
            reply((answer) => {
                answer.c("query", { xmlns: NS.discoInfo, ...(node ? { node } : {}) }).c("identity", IDENTITY).up();
                for (const feature of FEATURES) answer.c("feature", { var: feature }).up();
            });
        } else {
            const error = $iq({ type: "error", id: iq.getAttribute("id"), ...(from ? { to: from } : {}) })
                .c("error", { type: "cancel" }).c("service-unavailable", { xmlns: NS.stanzas });
            this.connection?.send(error);
        }
        return true;
    }

    // -- presence

    _presence(p) {
        const from = p.getAttribute("from");
        if (!from) return true;
        if (this._fromRooms(from)) {
            this._roomPresence(p);
            return true;
        }
        const type = p.getAttribute("type");
        if (type && type !== "unavailable") return true; // subscriptions: the server answers those
        this.emit("presence", {
            jid: bare(from),
            resource: resourceOf(from) || "",
            available: type !== "unavailable",
            show: text(child(p, "show")) || "",
            status: text(child(p, "status")) || "",
            own: bare(from) === this.me,
            mine: from === this.connection?.jid,
        });
        return true;
    }

    // -- messages

    _message(m) {
        const from = m.getAttribute("from");
        const trusted = !from || bare(from) === this.me; // from our own account (carbons, MAM)
        const result = child(m, "result", NS.mam);
        if (result) {
            if (trusted) this._mamResult(result);
            return true;
        }
        const event = child(m, "event", NS.pubsubEvent);
        if (event) {
            // PEP (XEP-0163): from a contact's bare JID; only avatars are asked for
            const items = child(event, "items");
            if (from && !from.includes("/") && items?.getAttribute("node") === NS.avatarMeta) {
                this._avatarEvent(bare(from), items);
            }
            return true;
        }
        if (this._fromRooms(from) && (m.getAttribute("type") || "normal") !== "chat") {
            this._roomMessage(m); // a room's groupchat, error or invitation; private messages (chat) go on below
            return true;
        }
        for (const kind of ["sent", "received"]) {
            const carbon = child(m, kind, NS.carbons);
            if (carbon) {
                const inner = child(child(carbon, "forwarded", NS.forward), "message");
                if (trusted && inner) this._deliver(inner, { carbon: kind, live: true });
                return true;
            }
        }
        this._deliver(m, { live: true });
        return true;
    }

    _deliver(stanza, flags) {
        const type = stanza.getAttribute("type") || "normal";
        if (type === "groupchat" || type === "headline") return;
        const message = parseMessage(stanza, this.me, { ...flags, aliases: this.aliases });
        if (type === "error") {
            this.emit("message-error", {
                contact: message.contact, id: stanza.getAttribute("id"),
                text: text(child(child(stanza, "error"), "text", NS.stanzas)) || errorCondition(stanza),
            });
            return;
        }
        if (flags.live && message.archiveId) this._advance(message.archiveId);
        if (this._fromRooms(message.contact)) {
            this._private(message);
            return;
        }
        if (flags.live && !flags.carbon && !message.outgoing && this._directInvitation(stanza)) return;
        // XEP-0184: a receipt for a live message that asks, to the full JID it came from (never for carbons
        // or history: the resource that got it answers)
        if (flags.live && !flags.carbon && !message.outgoing && message.body !== null && message.receiptRequested
            && message.id && type !== "groupchat") {
            this.connection.send($msg({ to: message.from, id: randomId(16) })
                .c("received", { xmlns: NS.receipts, id: message.id }).up()
                .c("store", { xmlns: "urn:xmpp:hints" }));
        }
        if (message.ack) this.emit("acknowledgement", { message });
        if (message.state && !message.outgoing) {
            this.emit("chatstate", { contact: message.contact, sender: message.sender, state: message.state });
        }
        if (message.body !== null) this.emit("message", { message });
    }

    _advance(archiveId) {
        if (!this.anchor || archiveId > this.anchor) this.anchor = archiveId; // archive ids sort by time
    }

    /** Send a chat message (with an *oob* URL: a file, XEP-0066); returns what the pane shows for it. */
    send(to, body, { oob = null } = {}) {
        const id = randomId(16);
        const stanza = $msg({ to, type: "chat", id }).c("body").t(body).up();
        if (oob) stanza.c("x", { xmlns: NS.oob }).c("url").t(oob).up().up();
        this.connection.send(
            stanza.c("active", { xmlns: NS.chatstates }).up()
                .c("request", { xmlns: NS.receipts }).up() // XEP-0184
                .c("markable", { xmlns: NS.markers }).up() // XEP-0333
                .c("origin-id", { xmlns: NS.sid, id }),
        );
        return {
            id, key: `m:${this.me}:${id}`, archiveId: null, contact: bare(to), sender: this.me, outgoing: true,
            body, oob, at: new Date(), delayed: false, carbon: null, live: true, status: "sent",
        };
    }

    /**
     * XEP-0363 §3: an upload slot from our own domain. Resolves {put, get,
     * headers} (only the §5 headers a client may pass on); rejects as iq() does.
     */
    async uploadSlot(filename, size, contentType) {
        const result = await this.iq($iq({ type: "get", to: this.credentials.domain })
            .c("request", { xmlns: NS.upload, filename, size: String(size), "content-type": contentType }));
        const slot = child(result, "slot", NS.upload);
        const put = child(slot, "put");
        const headers = {};
        for (const header of put ? put.children : []) {
            const name = header.getAttribute("name") || "";
            if (header.localName === "header" && ["authorization", "cookie", "expires"].includes(name.toLowerCase())) {
                headers[name] = header.textContent.replace(/[\r\n]/g, "");
            }
        }
        return { put: put?.getAttribute("url"), get: child(slot, "get")?.getAttribute("url"), headers };
    }

    /** XEP-0308: a correction of our message *id* to *to*; returns its new id. */
    correct(to, id, body) {
        const newId = randomId(16);
        this.connection.send(
            $msg({ to, type: "chat", id: newId }).c("body").t(body).up()
                .c("replace", { xmlns: NS.correct, id }).up()
                .c("request", { xmlns: NS.receipts }).up()
                .c("markable", { xmlns: NS.markers }).up()
                .c("origin-id", { xmlns: NS.sid, id: newId }),
        );
        return newId;
    }

    /** XEP-0333: the user has seen message *id* of *to* (the full JID it came from). */
    displayed(to, id) {
        if (this.state !== "online") return;
        this.connection.send($msg({ to, type: "chat", id: randomId(16) })
            .c("displayed", { xmlns: NS.markers, id }).up()
            .c("store", { xmlns: "urn:xmpp:hints" }));
    }

    /** XEP-0085: tell *to* we are composing, paused, active, inactive or gone. */
    chatState(to, state) {
        if (this.state !== "online" || !CHAT_STATES.includes(state)) return;
        this.connection.send($msg({ to, type: "chat" }).c(state, { xmlns: NS.chatstates }).up()
            .c("no-store", { xmlns: "urn:xmpp:hints" }));
    }

    // -- team rooms (XEP-0045)

    /** Whether *from* is the room service or one of its rooms (room, room/nick). */
    _fromRooms(from) {
        return Boolean(this.roomService && from && Strophe.getDomainFromJid(from).toLowerCase() === this.roomService);
    }

    /**
     * The domain's room service: the item of the domain's disco#items whose
     * identity is a conference service (§6.1), else conference.<domain>.
     */
    async _findRoomService() {
        const domain = this.credentials.domain;
        try {
            const items = await this.iq($iq({ type: "get", to: domain }).c("query", { xmlns: NS.discoItems }));
            for (const item of child(items, "query", NS.discoItems)?.children || []) {
                const jid = item.getAttribute("jid");
                if (item.localName !== "item" || !jid || jid.includes("@") || jid.includes("/")) continue;
                const info = await this.iq($iq({ type: "get", to: jid }).c("query", { xmlns: NS.discoInfo }));
                const identities = Array.from(child(info, "query", NS.discoInfo)?.children || [])
                    .filter((c) => c.localName === "identity");
                if (identities.some((i) => i.getAttribute("category") === "conference")) return jid.toLowerCase();
            }
        } catch {
            // the usual name below
        }
        return `conference.${domain}`;
    }

    /** After every sign-in: the rooms this user may enter (§6.3), told as "rooms" ({items: [{jid, name}]}). */
    async _loadRooms(generation) {
        try {
            if (!this.roomService) this.roomService = await this._findRoomService();
            if (generation !== this.generation) return;
            const result = await this.iq($iq({ type: "get", to: this.roomService }).c("query", { xmlns: NS.discoItems }));
            if (generation !== this.generation) return;
            const items = Array.from(child(result, "query", NS.discoItems)?.children || [])
                .filter((i) => i.localName === "item" && i.getAttribute("jid"))
                .map((i) => {
                    const jid = bare(i.getAttribute("jid"));
                    return { jid, name: i.getAttribute("name") || Strophe.getNodeFromJid(jid) || jid };
                });
            this.emit("rooms", { items });
        } catch (error) {
            if (generation === this.generation) {
                console.info("chat: no team rooms", error.message);
                this.emit("rooms", { items: [] });
            }
        }
    }

    /**
     * A XEP-0249 invitation in *stanza*, told as room-invitation when it comes from
     * a user of this domain to a room of its room service (anything else is no
     * invitation the pane follows: false, the message goes on as any other).
     */
    _directInvitation(stanza) {
        const x = child(stanza, "x", NS.conference);
        if (!x) return false;
        const room = bare(x.getAttribute("jid") || "").toLowerCase();
        const inviter = bare(stanza.getAttribute("from") || "");
        if (!room.includes("@") || !this._fromRooms(room)
            || Strophe.getDomainFromJid(inviter).toLowerCase() !== this.credentials.domain.toLowerCase()) {
            console.info(`chat: an invitation to ${room || "no room"} from ${inviter}, not to this domain's rooms`);
            return false;
        }
        this._invited(room, inviter, x.getAttribute("reason") || "");
        return true;
    }

    /** An invitation to *room*: told as room-invitation, and the list asked again (it may come with a membership). */
    _invited(room, inviter, reason) {
        this._roomsChanged();
        this.emit("room-invitation", { room, inviter, reason });
    }

    /** The list of rooms now (an invitation accepted); resolves once it is told. */
    refreshRooms() {
        return this.state === "online" ? this._loadRooms(this.generation) : Promise.resolve();
    }

    /** The list of rooms again, soon (several roster pushes make one query). */
    _roomsChanged() {
        clearTimeout(this._roomsTimer);
        const generation = this.generation;
        this._roomsTimer = setTimeout(() => {
            if (generation === this.generation && this.state === "online") this._loadRooms(generation);
        }, 300);
    }

    /** Enter *room* as *nick* (§7.2), asking for its last *history* messages. */
    enterRoom(room, nick, history = 20) {
        if (this.state !== "online") return;
        this.inRooms.set(room, nick);
        const p = $pres({ to: `${room}/${nick}` });
        if (this.show) p.c("show").t(this.show).up();
        p.c("x", { xmlns: NS.muc }).c("history", { maxstanzas: String(history) });
        this.connection.send(p);
    }

    /** Leave *room* (§7.14). */
    leaveRoom(room, nick) {
        this.inRooms.delete(room);
        if (this.state !== "online" || !nick) return;
        this.connection.send($pres({ to: `${room}/${nick}`, type: "unavailable" }));
    }

    /**
     * A groupchat message to *room* (§7.4); returns what the pane shows for it
     * until the room's copy comes back (same id, from room/*nick*).
     */
    sendRoom(room, nick, body, { oob = null } = {}) {
        const id = randomId(16);
        const stanza = $msg({ to: room, type: "groupchat", id }).c("body").t(body).up();
        if (oob) stanza.c("x", { xmlns: NS.oob }).c("url").t(oob).up().up();
        this.connection.send(stanza.c("origin-id", { xmlns: NS.sid, id }));
        return {
            id, key: `m:${room}/${nick}:${id}`, archiveId: null, contact: room, sender: nick, nick, room: true,
            outgoing: true, body, oob, at: new Date(), delayed: false, carbon: null, live: true, status: "sent",
        };
    }

    /** How many are in *room* (disco#info's muc#roominfo_occupants, §6.4), or null. */
    async roomOccupantCount(room) {
        const result = await this.iq($iq({ type: "get", to: room }).c("query", { xmlns: NS.discoInfo }));
        const form = child(child(result, "query", NS.discoInfo), "x", NS.xdata);
        for (const field of form?.children || []) {
            if (field.getAttribute("var") === "muc#roominfo_occupants") {
                const count = Number.parseInt(text(child(field, "value")), 10);
                return Number.isFinite(count) ? count : null;
            }
        }
        return null;
    }

    /** The nicknames of who is in *room* (disco#items on it, §6.5: a large room tells no comings and goings). */
    async roomOccupantNicks(room) {
        const result = await this.iq($iq({ type: "get", to: room }).c("query", { xmlns: NS.discoItems }));
        return Array.from(child(result, "query", NS.discoItems)?.children || [])
            .filter((i) => i.localName === "item" && i.getAttribute("jid"))
            .map((i) => i.getAttribute("name") || resourceOf(i.getAttribute("jid")) || "")
            .filter(Boolean);
    }

    /**
     * A private message with an occupant of a room (§7.5), from them or (a carbon, the
     * archive) to them from another of our clients: told as "room-private" with
     * the occupant's nickname; what is not a message (states, receipts) is dropped.
     */
    _private(message) {
        if (message.body === null || message.replaces) return;
        message.nick = resourceOf(message.outgoing ? message.to : message.from) || "";
        if (message.nick) this.emit("room-private", { message });
    }

    /** Not in *room* any more (refused, removed, destroyed): it hears no more of our presence. */
    forgetRoom(room) {
        this.inRooms.delete(room);
    }

    _roomPresence(p) {
        const from = p.getAttribute("from");
        const room = bare(from);
        const nick = resourceOf(from) || "";
        const type = p.getAttribute("type");
        if (type === "error") {
            this.emit("room-error", {
                room, nick, condition: errorCondition(p), text: text(child(child(p, "error"), "text", NS.stanzas)) || "",
            });
            return;
        }
        if (type && type !== "unavailable") return;
        const x = child(p, "x", NS.mucUser);
        const item = child(x, "item");
        const codes = x ? Array.from(x.children).filter((c) => c.localName === "status").map((c) => c.getAttribute("code")) : [];
        const destroy = child(x, "destroy");
        const real = item?.getAttribute("jid") || null;
        this.emit("room-presence", {
            room,
            nick,
            available: type !== "unavailable",
            jid: real ? bare(real) : null,
            affiliation: item?.getAttribute("affiliation") || "none",
            role: item?.getAttribute("role") || "none",
            newNick: item?.getAttribute("nick") || null,
            codes,
            self: codes.includes("110") || (real !== null && real === this.connection?.jid),
            destroyed: destroy ? { reason: text(child(destroy, "reason")) || "" } : null,
            show: text(child(p, "show")) || "",
        });
    }

    _roomMessage(m) {
        const from = m.getAttribute("from");
        const type = m.getAttribute("type") || "normal";
        const room = bare(from);
        if (type === "error") {
            this.emit("message-error", {
                contact: room, id: m.getAttribute("id"),
                text: text(child(child(m, "error"), "text", NS.stanzas)) || errorCondition(m),
            });
            return;
        }
        const nick = resourceOf(from) || "";
        const body = child(m, "body");
        if (type !== "groupchat") {
            // an invitation (§7.8.2): a room this user may enter now, so the list again
            const invite = child(child(m, "x", NS.mucUser), "invite");
            if (invite && room.includes("@")) {
                const inviter = invite.getAttribute("from");
                this._invited(room, inviter ? bare(inviter) : null, text(child(invite, "reason")) || "");
            }
            return;
        }
        const subject = child(m, "subject");
        if (subject) this.emit("room-subject", { room, nick, subject: subject.textContent });
        if (!body || !nick) return;
        let archiveId = null;
        for (const c of m.children) {
            if (c.localName === "stanza-id" && c.namespaceURI === NS.sid && bare(c.getAttribute("by")) === room) {
                archiveId = c.getAttribute("id");
            }
        }
        const delay = child(m, "delay", NS.delay)?.getAttribute("stamp");
        const id = m.getAttribute("id");
        const oob = text(child(child(m, "x", NS.oob), "url"));
        this.emit("room-message", {
            message: {
                id, from, key: id ? `m:${room}/${nick}:${id}` : null, archiveId, contact: room, sender: nick, nick,
                room: true, outgoing: false, body: body.textContent, oob: oob ? oob.trim() : null,
                at: delay ? new Date(delay) : new Date(), delayed: Boolean(delay), carbon: null, live: true,
                markable: false, ack: null, replaces: null, state: null,
            },
        });
    }

    // -- vCard

    async vcard(jid) {
        const result = await this.iq($iq({ type: "get", to: jid }).c("vCard", { xmlns: NS.vcard }));
        return parseVCard(child(result, "vCard", NS.vcard));
    }

    // -- MAM

    /**
     * One MAM query (XEP-0313) on our archive: *form* fields (with, start) and
     * *rsm* paging (after, before, max). Resolves {messages, complete, last}.
     */
    mam({ form = {}, rsm = {} } = {}) {
        const queryid = randomId(10);
        const iq = $iq({ type: "set" }).c("query", { xmlns: NS.mam, queryid });
        iq.c("x", { xmlns: NS.xdata, type: "submit" })
            .c("field", { var: "FORM_TYPE", type: "hidden" }).c("value").t(NS.mam).up().up();
        for (const [name, value] of Object.entries(form)) {
            if (value) iq.c("field", { var: name }).c("value").t(value).up().up();
        }
        iq.up().c("set", { xmlns: NS.rsm });
        iq.c("max").t(String(rsm.max || 50)).up();
        if (rsm.after) iq.c("after").t(rsm.after).up();
        if (rsm.before !== undefined) iq.c("before").t(rsm.before || "").up();
        const collected = [];
        this._mamCollectors.set(queryid, collected);
        return this.iq(iq, 30000).then((result) => {
            const fin = child(result, "fin", NS.mam);
            const set = child(fin, "set", NS.rsm);
            return {
                messages: collected,
                complete: fin?.getAttribute("complete") === "true",
                first: text(child(set, "first")),
                last: text(child(set, "last")),
            };
        }).finally(() => this._mamCollectors.delete(queryid));
    }

    _mamResult(result) {
        const collected = this._mamCollectors.get(result.getAttribute("queryid"));
        const forwarded = child(result, "forwarded", NS.forward);
        const inner = child(forwarded, "message");
        if (!collected || !inner) return;
        const stamp = child(forwarded, "delay", NS.delay)?.getAttribute("stamp");
        const message = parseMessage(inner, this.me, {
            mam: true, stamp, archiveId: result.getAttribute("id"), aliases: this.aliases,
        });
        if (message.body !== null || message.ack) collected.push(message);
    }

    /**
     * The last *count* messages with *jid* (for a chat window being opened), oldest first, with the
     * receipts, markers and corrections among them: the archive keeps those too, so it is read back
     * page by page until *count* messages are in (*pages* pages at most).
     */
    async recent(jid, count = 30, pages = 4) {
        let collected = [];
        let before = "";
        for (let i = 0; i < pages; i++) {
            const page = await this.mam({ form: { with: jid }, rsm: { before, max: count } });
            collected = [...page.messages, ...collected];
            const messages = collected.filter((m) => m.body !== null && !m.replaces).length;
            if (page.complete || !page.first || messages >= count) break;
            before = page.first;
        }
        return collected;
    }

    /** First session: where the archive ends now; later sessions catch up from there. */
    async _findAnchor() {
        try {
            const result = await this.iq($iq({ type: "get", to: this.me }).c("metadata", { xmlns: NS.mam }));
            const end = child(child(result, "metadata", NS.mam), "end", NS.mam);
            if (end) this._advance(end.getAttribute("id"));
        } catch {
            // no metadata: catching up will go by time
        }
        this.connectedAt = new Date();
    }

    /** Everything archived after the anchor (what happened while the session was gone). */
    async _catchUp() {
        const generation = this.generation;
        const missed = [];
        let after = this.anchor;
        let since = null;
        if (!after) {
            since = new Date((this.lostAt || this.connectedAt || new Date()).getTime() - 60000).toISOString();
        }
        for (let page = 0; page < 20; page++) {
            let answer;
            try {
                answer = await this.mam({ form: since ? { start: since } : {}, rsm: { after, max: 100 } });
            } catch (error) {
                if (after && error.message.includes("item-not-found")) { // the anchor was deleted (retention)
                    after = null;
                    since = new Date((this.lostAt || new Date()).getTime() - 60000).toISOString();
                    continue;
                }
                throw error;
            }
            if (generation !== this.generation) return;
            for (const message of answer.messages) {
                message.catchup = true;
                missed.push(message);
                this._advance(message.archiveId);
            }
            if (answer.complete || !answer.last) break;
            after = answer.last;
        }
        for (const message of missed) {
            if (this._fromRooms(message.contact)) this._private(message);
            else this.emit("message", { message });
        }
        this.emit("caught-up", { count: missed.filter((m) => m.body !== null && !m.replaces).length }); // receipts are no messages
    }
}

function rosterItem(item) {
    const groups = Array.from(item.getElementsByTagName("group"), (g) => g.textContent);
    return {
        jid: bare(item.getAttribute("jid")),
        name: item.getAttribute("name") || item.getAttribute("jid"),
        groups,
        alias: groups.includes("Aliases"),
    };
}

/**
 * A <message/> as the pane keeps it. The sender comes from the server-stamped
 * 'from' only: a message from a mail alias comes from alias@domain/<member's
 * localpart>; a client-supplied element (XEP-0033 ofrom) is never believed.
 */
export function parseMessage(el, me, {
    carbon = null, live = false, mam = false, stamp = null, archiveId = null, aliases = new Set(),
} = {}) {
    const from = el.getAttribute("from") || me;
    const to = el.getAttribute("to") || me;
    const outgoing = bare(from) === me;
    const contact = outgoing ? bare(to) : bare(from);
    let ownId = archiveId;
    if (!ownId) {
        for (const c of el.children) {
            if (c.localName === "stanza-id" && c.namespaceURI === NS.sid && bare(c.getAttribute("by")) === me) {
                ownId = c.getAttribute("id");
            }
        }
    }
    let sender = outgoing ? me : contact;
    const member = Strophe.getResourceFromJid(from);
    if (!outgoing && member && aliases.has(contact)) {
        sender = `${member}@${Strophe.getDomainFromJid(contact)}`.toLowerCase();
    }
    const delay = stamp || child(el, "delay", NS.delay)?.getAttribute("stamp");
    const state = Array.from(el.children).find((c) => c.namespaceURI === NS.chatstates && CHAT_STATES.includes(c.localName));
    const id = el.getAttribute("id");
    const body = child(el, "body");
    // XEP-0184 receipts and XEP-0333 markers: what they say of the message they name
    let ack = null;
    for (const c of el.children) {
        const named = c.getAttribute("id");
        if (!named) continue;
        if (c.namespaceURI === NS.receipts && c.localName === "received") ack = { id: named, status: "delivered" };
        // XEP-0333 §6: a marker marks every message up to and including the one it names
        else if (c.namespaceURI === NS.markers && c.localName === "received") ack = { id: named, status: "delivered", upTo: true };
        else if (c.namespaceURI === NS.markers && ["displayed", "acknowledged"].includes(c.localName)) {
            ack = { id: named, status: "read", upTo: true };
        }
    }
    const replace = child(el, "replace", NS.correct);
    const oob = text(child(child(el, "x", NS.oob), "url"));
    return {
        id,
        from,
        to,
        ack: body ? null : ack,
        replaces: body && replace ? replace.getAttribute("id") : null,
        receiptRequested: Boolean(child(el, "request", NS.receipts)),
        markable: Boolean(child(el, "markable", NS.markers)),
        key: id ? `m:${bare(from)}:${id}` : null,
        archiveId: ownId,
        contact,
        sender,
        outgoing,
        body: body ? body.textContent : null,
        at: delay ? new Date(delay) : new Date(),
        delayed: Boolean(delay) && !mam,
        carbon,
        live,
        mam,
        state: state ? state.localName : null,
        oob: oob ? oob.trim() : null,
    };
}

function parseVCard(card) {
    if (!card) return {};
    const get = (...path) => {
        let el = card;
        for (const name of path) el = child(el, name);
        return el ? el.textContent.trim() : "";
    };
    const tels = Array.from(card.children).filter((c) => c.localName === "TEL")
        .map((t) => text(child(t, "NUMBER"))).filter(Boolean);
    const emails = Array.from(card.children).filter((c) => c.localName === "EMAIL")
        .map((e) => text(child(e, "USERID"))).filter(Boolean);
    let photo = null;
    const type = get("PHOTO", "TYPE");
    const binval = get("PHOTO", "BINVAL").replace(/\s+/g, "");
    if (binval && /^image\/(png|jpeg|gif|webp)$/.test(type) && /^[A-Za-z0-9+/=]+$/.test(binval)) {
        photo = `data:${type};base64,${binval}`;
    }
    return {
        name: get("FN"),
        title: get("TITLE"),
        organization: get("ORG", "ORGNAME"),
        department: get("ORG", "ORGUNIT"),
        phones: tels,
        emails,
        description: get("DESC"),
        photo,
    };
}
