// Who the pane signs in as, and with what — kept in memory only.
//
// Sign-in comes one of three ways:
//  1. The webmail hands a login token over in the URL fragment:
//     /chat/#token=cg2.…  (the address is inside the token; jid=… may be added).
//     A fragment never reaches a server or its logs; the pane removes it from
//     the address bar and from history at once.
//  2. The standalone form: address and password. The password is traded at
//     once for a login token (POST /chat/token) and dropped; only when tokens
//     are off on the server does it stay, in this module's memory, for
//     reconnecting. It is never written anywhere.
//  3. A page of the pane opened from it (a conversation) asks the pane over a
//     BroadcastChannel (same origin only) for its current credentials.
//
// Tokens live a few minutes; the pane renews its own before they expire
// (POST /chat/token with the current one), and when it can't, asks the
// webmail page that opened it (postMessage "chatgate:need-token", answered by
// loader.js with "chatgate:token").

const CHANNEL = "chatgate-credentials";

export class AuthError extends Error {
    constructor(message, status) {
        super(message);
        this.status = status;
    }
}

function base64(text) {
    const bytes = new TextEncoder().encode(text);
    let binary = "";
    for (const b of bytes) binary += String.fromCharCode(b);
    return btoa(binary);
}

/** The user and expiry inside a cg2 token ("cg2.<b64url(jid|signed_in|expiry)>.<mac>"), or null. */
export function readToken(token) {
    const parts = String(token || "").split(".");
    if (parts.length !== 3 || parts[0] !== "cg2") return null;
    try {
        const text = atob(parts[1].replace(/-/g, "+").replace(/_/g, "/"));
        const bytes = Uint8Array.from(text, (c) => c.charCodeAt(0));
        const payload = new TextDecoder().decode(bytes);
        const last = payload.lastIndexOf("|");
        const cut = payload.lastIndexOf("|", last - 1);
        const expires = Number(payload.slice(last + 1));
        if (cut < 1 || !Number.isFinite(expires)) return null;
        return { jid: payload.slice(0, cut), expires };
    } catch {
        return null;
    }
}

export class Credentials extends EventTarget {
    /** kind: "token" or "password"; *secret* is never stored outside this object. */
    constructor(jid, kind, secret, { tokensEnabled = true } = {}) {
        super();
        this.jid = jid.toLowerCase();
        this.kind = kind;
        this.tokensEnabled = tokensEnabled;
        let current = secret;
        this.secret = () => current;
        this._replace = (value) => { current = value; };
        this.expires = kind === "token" ? readToken(secret)?.expires ?? null : null;
        this._timer = null;
        this._waitingForOpener = null;
    }

    get domain() {
        return this.jid.split("@")[1];
    }

    basic() {
        return "Basic " + base64(`${this.jid}:${this.secret()}`);
    }

    /** Swap in a new token (renewed here, or handed over by the webmail). */
    useToken(token) {
        const info = readToken(token);
        if (!info || info.jid.toLowerCase() !== this.jid) return false;
        this._replace(token);
        this.kind = "token";
        this.expires = info.expires;
        this.dispatchEvent(new Event("changed"));
        this.scheduleRenewal();
        return true;
    }

    /** POST /chat/token with the current credentials; true when a new token came back. */
    async renew() {
        const answer = await fetch("token", {
            method: "POST",
            headers: { Authorization: this.basic() },
            credentials: "omit",
            cache: "no-store",
        });
        if (answer.status === 409) {
            this.tokensEnabled = false;
            return false;
        }
        const body = await answer.json().catch(() => ({}));
        if (!answer.ok) throw new AuthError(body.error || `HTTP ${answer.status}`, answer.status);
        return this.useToken(body.token);
    }

    /** Renew when half the token's life is gone (at most every 5 s), retrying on network trouble. */
    scheduleRenewal() {
        clearTimeout(this._timer);
        if (this.kind !== "token" || !this.tokensEnabled || !this.expires) return;
        const left = this.expires * 1000 - Date.now();
        const delay = Math.max(5000, left / 2);
        this._timer = setTimeout(async () => {
            try {
                if (!(await this.renew()) && this.tokensEnabled) this.scheduleRenewal();
            } catch (error) {
                if (error instanceof AuthError) {
                    this.dispatchEvent(new CustomEvent("expired", { detail: error }));
                    this.askOpener();
                } else if (Date.now() < this.expires * 1000) {
                    clearTimeout(this._timer);
                    this._timer = setTimeout(() => this.scheduleRenewal(), 15000);
                }
            }
        }, delay);
    }

    expired() {
        return this.kind === "token" && this.expires !== null && this.expires * 1000 <= Date.now();
    }

    /** Make sure the token is valid now: renew it, else ask the webmail. Resolves true when usable. */
    async fresh() {
        if (!this.expired() && !(this.kind === "token" && this.expires * 1000 - Date.now() < 10000)) return true;
        try {
            if (await this.renew()) return true;
        } catch {
            // expired for good: only the webmail can help
        }
        return this.askOpener();
    }

    /** Ask the webmail page that opened the pane (loader.js) for a new token; resolves true if one came. */
    askOpener(timeout = 5000) {
        const opener = window.opener && !window.opener.closed ? window.opener : window.parent !== window ? window.parent : null;
        if (!opener) return Promise.resolve(false);
        if (this._waitingForOpener) return this._waitingForOpener;
        this._waitingForOpener = new Promise((resolve) => {
            const done = (ok) => {
                window.removeEventListener("message", listener);
                clearTimeout(timer);
                this._waitingForOpener = null;
                resolve(ok);
            };
            const listener = (event) => {
                if (event.source !== opener || event.data?.type !== "chatgate:token") return;
                done(this.useToken(event.data.token));
            };
            const timer = setTimeout(() => done(false), timeout);
            window.addEventListener("message", listener);
            opener.postMessage({ type: "chatgate:need-token", jid: this.jid }, "*");
        });
        return this._waitingForOpener;
    }

    /** Answer the pane's other pages (conversation windows) asking for credentials. */
    serve() {
        if (!("BroadcastChannel" in window)) return;
        this._channel = new BroadcastChannel(CHANNEL);
        this._channel.onmessage = (event) => {
            if (event.data?.type === "ask") {
                this._channel.postMessage({
                    type: "credentials", nonce: event.data.nonce, jid: this.jid, kind: this.kind,
                    secret: this.secret(), tokensEnabled: this.tokensEnabled,
                });
            }
        };
    }

    forget() {
        clearTimeout(this._timer);
        this._replace(null);
        this._channel?.close();
        this._channel = null;
    }
}

/** Take #token=…[&jid=…] from the address, and remove it from the address bar and history. */
export function takeHandover() {
    const params = new URLSearchParams(location.hash.slice(1));
    const token = params.get("token");
    if (!token) return null;
    history.replaceState(null, "", location.pathname + location.search);
    const info = readToken(token);
    const jid = params.get("jid") || info?.jid;
    return jid ? { jid, token } : null;
}

/** Ask an open pane (same origin) for its credentials; null when none answers in time. */
export function askPane(timeout = 1500) {
    if (!("BroadcastChannel" in window)) return Promise.resolve(null);
    return new Promise((resolve) => {
        const channel = new BroadcastChannel(CHANNEL);
        const nonce = Math.random().toString(36).slice(2);
        const done = (value) => {
            clearTimeout(timer);
            channel.close();
            resolve(value);
        };
        const timer = setTimeout(() => done(null), timeout);
        channel.onmessage = (event) => {
            const data = event.data;
            if (data?.type !== "credentials" || data.nonce !== nonce || !data.secret) return;
            done(new Credentials(data.jid, data.kind, data.secret, { tokensEnabled: data.tokensEnabled }));
        };
        channel.postMessage({ type: "ask", nonce });
    });
}

/**
 * The standalone form's sign-in: trade the password for a token when the
 * server has tokens on. Throws AuthError with a message for the user.
 */
export async function signInWithPassword(jid, password, config) {
    const credentials = new Credentials(jid, "password", password, { tokensEnabled: config.tokens });
    if (!config.tokens) return credentials;
    try {
        await credentials.renew();
    } catch (error) {
        if (error instanceof AuthError) throw new AuthError(explain(error), error.status);
        throw new AuthError("The chat server can't be reached. Check your connection and try again.", 0);
    }
    return credentials;
}

export function explain(error) {
    switch (error.status) {
        case 401: return "Wrong address or password.";
        case 403: return error.message && /disabled/i.test(error.message)
            ? "Chat is turned off for your domain." : "Sign-in was refused: " + error.message;
        case 429: return "Too many failed attempts. Wait a few minutes and try again.";
        default: return error.message || "Sign-in failed.";
    }
}
