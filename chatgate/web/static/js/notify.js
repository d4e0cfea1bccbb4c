// HTML5 notifications and the title-bar unread count.
//
// Permission is asked only from a user's action (the banner's "Turn on"
// button or the setting in the status menu), as browsers require. A message
// that arrives while the tab is hidden or the window is not focused shows a
// notification with the sender and the text; clicking it brings the window
// forward and opens that chat (an invitation to a room: enters the room).
// The setting (kept in localStorage; it holds no secret) turns them off.

const SETTING = "chatgate.notifications";
const BASE_TITLE = "Chat";

export class Notifications {
    constructor({ onOpen }) {
        this.onOpen = onOpen;
        this.supported = "Notification" in window;
        this.open = new Map(); // chat jid → Notification
    }

    get permission() {
        return this.supported ? Notification.permission : "denied";
    }

    get wanted() {
        return localStorage.getItem(SETTING) !== "off";
    }

    get enabled() {
        return this.wanted && this.permission === "granted";
    }

    /** Whether to offer the "Turn on notifications" banner. */
    get shouldOffer() {
        return this.supported && this.permission === "default" && localStorage.getItem(SETTING) !== "dismissed"
            && localStorage.getItem(SETTING) !== "off";
    }

    dismissOffer() {
        localStorage.setItem(SETTING, "dismissed");
    }

    /** From a click: turn notifications on (asking for permission) or off. */
    async setEnabled(on) {
        if (!on) {
            localStorage.setItem(SETTING, "off");
            return;
        }
        localStorage.setItem(SETTING, "on");
        if (this.supported && Notification.permission === "default") {
            try {
                await Notification.requestPermission();
            } catch {
                // an old callback-only implementation: nothing more to do
            }
        }
    }

    hint() {
        if (!this.supported) return "This browser can't show notifications.";
        if (this.permission === "denied") return "Blocked in the browser's site settings for this page.";
        if (!this.wanted) return "Off: new messages only show in this window.";
        if (this.permission === "default") return "Your browser will ask for permission.";
        return "Shown when a message arrives while this window is in the background.";
    }

    /** A new incoming message: notify when the user can't see the window. */
    message({ chatJid, title, body }) {
        this.show(chatJid, { title, body, onClick: () => this.onOpen(chatJid) });
    }

    /**
     * A notification under *key* (one at a time per key: a newer one replaces it)
     * when the user can't see the window; a click brings the window forward and
     * calls *onClick*.
     */
    show(key, { title, body, onClick }) {
        if (!this.enabled || (document.visibilityState === "visible" && document.hasFocus())) return;
        this.open.get(key)?.close();
        let notification;
        try {
            notification = new Notification(title, {
                body: body.length > 180 ? `${body.slice(0, 177)}…` : body,
                tag: `chatgate:${key}`,
                icon: new URL("icon.svg", location.href).href,
            });
        } catch {
            return; // e.g. Android Chrome, where only a service worker may notify
        }
        notification.onclick = (event) => {
            event?.preventDefault?.();
            window.focus();
            onClick();
            notification.close();
        };
        notification.onclose = () => {
            if (this.open.get(key) === notification) this.open.delete(key);
        };
        this.open.set(key, notification);
    }

    /** Close the notifications of a chat the user is now reading (or under any other *key*). */
    read(key) {
        this.open.get(key)?.close();
        this.open.delete(key);
    }
}

/** "(3) Chat" while messages are unread. */
export function showUnread(count) {
    document.title = count > 0 ? `(${count}) ${BASE_TITLE}` : BASE_TITLE;
}
