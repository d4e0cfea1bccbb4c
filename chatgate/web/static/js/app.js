// The chat pane: sign-in, then the navigation pane (contacts), the content
// and preview panes (details, conversations), the chat windows and the
// status menu, wired to one ChatClient. No framework: each view is a small
// class over the DOM, the model tells them what changed.

import { configure as configureUploads, summaryOf } from "./attachments.js";
import { AuthError, Credentials, explain, signInWithPassword, takeHandover } from "./auth.js";
import { h, icon } from "./dom.js";
import { HistoryAPI } from "./history-api.js";
import { Model } from "./model.js";
import { Notifications, showUnread } from "./notify.js";
import { Invitations } from "./invitations.js";
import { Rooms } from "./rooms.js";
import { Search } from "./search.js";
import { Chats } from "./views/chats.js";
import { Details } from "./views/details.js";
import { ContactList } from "./views/nav.js";
import { CHOICES, StatusMenu } from "./views/status.js";
import { ChatClient } from "./xmpp.js";

const phone = window.matchMedia("(max-width: 699px)");
/** sessionStorage key of the sign-in form's notice after a sign-out */
const NOTICE = "chatgate.notice";
const narrow = window.matchMedia("(max-width: 1099px)");

async function loadConfig() {
    try {
        const answer = await fetch("config.json", { cache: "no-store", credentials: "omit" });
        if (answer.ok) return await answer.json();
    } catch {
        // defaults below
    }
    return { bosh: "/http-bind", history: "/history", tokens: false };
}

// -- sign-in

function showSignIn(config, message = null) {
    document.getElementById("loading").hidden = true;
    document.getElementById("app").hidden = true;
    const page = document.getElementById("signin");
    const form = document.getElementById("signin-form");
    const error = document.getElementById("signin-error");
    const jidInput = document.getElementById("signin-jid");
    const passwordInput = document.getElementById("signin-password");
    const submit = document.getElementById("signin-submit");
    page.hidden = false;
    document.title = "Sign in — Chat";
    const fail = (text) => {
        error.textContent = text;
        error.hidden = !text;
    };
    fail(message);
    (jidInput.value ? passwordInput : jidInput).focus();
    form.onsubmit = async (event) => {
        event.preventDefault();
        const jid = jidInput.value.trim().toLowerCase();
        const password = passwordInput.value;
        passwordInput.value = ""; // not left in the page
        if (!/^[^@\s]+@[^@\s]+$/.test(jid)) {
            fail("Enter your full email address, like you@example.com.");
            jidInput.focus();
            return;
        }
        if (!password) {
            fail("Enter your password.");
            passwordInput.focus();
            return;
        }
        fail(null);
        submit.disabled = true;
        submit.textContent = "Signing in…";
        try {
            const credentials = await signInWithPassword(jid, password, config);
            page.hidden = true;
            start(config, credentials);
        } catch (e) {
            fail(e instanceof AuthError ? e.message : explain(e));
            passwordInput.focus();
        } finally {
            submit.disabled = false;
            submit.textContent = "Sign in";
        }
    };
}

// -- the pane

function start(config, credentials) {
    const app = document.getElementById("app");
    const loading = document.getElementById("loading");
    document.getElementById("signin").hidden = true;
    loading.hidden = false;
    credentials.scheduleRenewal();
    credentials.serve();
    configureUploads(config.upload); // before the first chat window: its attach button

    const model = new Model(credentials.jid);
    const client = new ChatClient(credentials, config.bosh, { wait: 30, websocket: config.websocket });
    const history = new HistoryAPI(credentials, config.history || "/history");
    const announcer = h("div", { class: "visually-hidden", "aria-live": "polite", id: "announcer" });
    document.body.append(announcer);
    const announce = (text) => {
        announcer.textContent = "";
        setTimeout(() => { announcer.textContent = text; }, 50);
    };

    // phone: one pane at a time; tablet: chats in a drawer; desktop: all side by side
    const setView = (view) => {
        app.dataset.view = view;
        document.getElementById("back").hidden = view === "contacts";
        chats.markRead();
    };
    const chatsOnScreen = () => {
        if (!chats || chats.count === 0) return false;
        if (phone.matches) return app.dataset.view === "chat";
        return app.dataset.chatsOpen === "true";
    };

    const notifications = new Notifications({
        onOpen: (jid) => openChat(jid),
    });
    const list = new ContactList(model, {
        onSelect: (jid) => selectContact(jid),
        onChat: (jid) => openChat(jid),
        onRoom: (jid) => openChat(jid),
    });
    const details = new Details(model, client, history, { onChat: (jid) => openChat(jid) });
    new Search(history, model, { announce }); // the top bar's search box over the user's history
    const chats = new Chats(model, client, {
        announce,
        onShowContact: (jid) => selectContact(jid, true),
        onGoOnline: () => menu.choose("available"),
        isOnScreen: chatsOnScreen,
        onRoomClosed: (jid) => rooms.closed(jid),
        onRoomPeople: (jid) => rooms.people(jid),
    });
    const rooms = new Rooms(model, client, chats, { notifications, announce });
    new Invitations(model, client, { onEnter: (jid) => openChat(jid), notifications, announce });
    const menu = new StatusMenu({
        me: credentials.jid,
        name: credentials.jid,
        notifications,
        onStatus: (value, text) => {
            const choice = CHOICES.find((c) => c.value === value);
            if (value === "offline") client.goOffline();
            else client.setPresence(choice.show, text);
            banner();
        },
        onSignOut: () => client.signOut(),
        onAvatar: (file) => client.setAvatar(file),
    });

    function selectContact(jid, fromChat = false) {
        list.select(jid);
        details.show(jid);
        if (phone.matches || fromChat) {
            setView("details");
            if (phone.matches) document.getElementById("details-name")?.focus();
        }
    }

    /** A contact's chat window, or a team room's (entering the room). */
    function openChat(jid) {
        const view = model.room(jid) ? rooms.open(jid) : chats.open(jid, { activate: true, focus: false });
        if (!view) return;
        app.dataset.chatsOpen = "true";
        if (phone.matches) setView("chat");
        layout(); // the chats column shows: its composer can take the focus
        view.composer.focus();
        chats.markRead();
        notifications.read(jid);
    }

    function layout() {
        app.dataset.chats = String(chats.count);
        const hidden = chats.count === 0 || app.dataset.chatsOpen !== "true";
        const showButton = document.getElementById("chats-show");
        showButton.hidden = !(chats.count > 0 && hidden && !phone.matches);
        const unread = model.unread;
        const count = document.getElementById("chats-show-count");
        count.hidden = unread === 0;
        count.textContent = String(unread);
        showButton.setAttribute("aria-label", unread ? `Show chats, ${unread} unread` : "Show chats");
    }

    document.getElementById("back").addEventListener("click", () => {
        if (app.dataset.view === "chat" && details.jid) setView("details");
        else setView("contacts");
    });
    document.getElementById("back").append(icon("back"));
    document.getElementById("chats-hide").append(icon("collapse"));
    document.getElementById("chats-hide").addEventListener("click", () => {
        if (phone.matches) {
            setView(details.jid ? "details" : "contacts");
        } else {
            app.dataset.chatsOpen = "false";
            layout();
            document.getElementById("chats-show").focus();
        }
    });
    document.getElementById("chats-show").addEventListener("click", () => {
        app.dataset.chatsOpen = "true";
        layout();
        const active = chats.active && chats.views.get(chats.active);
        active?.composer.focus();
        chats.markRead();
    });
    narrow.addEventListener("change", () => {
        // on narrow screens the chats drawer covers the details: start closed
        if (narrow.matches && chats.count) app.dataset.chatsOpen = "false";
        layout();
    });
    phone.addEventListener("change", () => {
        setView(phone.matches ? (chats.active ? "chat" : "contacts") : "contacts");
        layout();
    });

    chats.addEventListener("changed", () => {
        layout();
        showUnread(model.unread);
        if (chats.active && chats.seen(chats.active)) notifications.read(chats.active);
    });
    chats.addEventListener("sent", (e) => details.refreshSoon(e.detail.jid));
    // a room shown in the preview: what is said there while the pane is in it
    client.addEventListener("room-message", (e) => details.refreshSoon(e.detail.message.contact));

    // -- banner: connection trouble, offline by choice, the offer of notifications

    const bannerEl = document.getElementById("banner");
    let countdown = null;
    function banner() {
        clearInterval(countdown);
        bannerEl.replaceChildren();
        bannerEl.className = "banner";
        const state = client.state;
        if (state === "reconnecting") {
            const text = h("span", {});
            const tick = () => {
                const seconds = Math.max(0, Math.ceil((client.retryAt - Date.now()) / 1000));
                text.textContent = seconds > 0 ? `Connection lost. Reconnecting in ${seconds} s…` : "Connection lost. Reconnecting…";
            };
            tick();
            countdown = setInterval(tick, 1000);
            bannerEl.classList.add("warn", "shown");
            bannerEl.append(text, h("span", { class: "banner-actions" },
                h("button", { class: "button small", type: "button", onclick: () => client.retryNow() }, "Reconnect now")));
        } else if (state === "offline") {
            bannerEl.classList.add("info", "shown");
            bannerEl.append(h("span", {}, "You're offline in chat. Your contacts see you as offline here; your other devices are not affected."),
                h("span", { class: "banner-actions" },
                    h("button", { class: "button small primary", type: "button", onclick: () => menu.choose("available") }, "Go online")));
        } else if (state === "online" && notifications.shouldOffer) {
            bannerEl.classList.add("offer", "shown");
            bannerEl.append(h("span", {}, "Get a desktop notification when a message arrives while this window is in the background."),
                h("span", { class: "banner-actions" },
                    h("button", {
                        class: "button small primary", type: "button", "data-action": "enable-notifications",
                        onclick: async () => { await notifications.setEnabled(true); banner(); },
                    }, "Turn on"),
                    h("button", { class: "button small subtle", type: "button", onclick: () => { notifications.dismissOffer(); banner(); } }, "Not now")));
        }
    }

    // -- the client's events

    let shown = false;
    client.addEventListener("state", async (e) => {
        const { state, reason } = e.detail;
        menu.setConnection(state);
        list.setOffline(state !== "online");
        details.setOffline(state !== "online");
        chats.setConnection(state);
        app.dataset.connection = state;
        banner();
        if (state === "signed-out") {
            // start again from a clean page; only the reason survives (not a secret)
            credentials.forget();
            if (reason) sessionStorage.setItem(NOTICE, reason);
            location.replace(location.pathname);
            return;
        }
        if (!shown && (state === "online" || state === "reconnecting")) {
            shown = true;
            loading.hidden = true;
            app.hidden = false;
        }
        if (state === "online" && !menu.nameLoaded) {
            menu.nameLoaded = true;
            try {
                const card = await client.vcard(credentials.jid);
                if (card.name) {
                    menu.setName(card.name);
                    menu.name = card.name;
                }
            } catch {
                // the address stays as the name
            }
        }
    });
    client.addEventListener("roster", (e) => model.setRoster(e.detail.items));
    client.addEventListener("roster-item", (e) => {
        if (e.detail.removed) model.remove(e.detail.item.jid);
        else model.upsert(e.detail.item);
    });
    client.addEventListener("presence-reset", () => model.resetPresence());
    client.addEventListener("avatar", (e) => {
        if (e.detail.jid === credentials.jid) menu.setAvatar(e.detail.photo);
        else model.setPhoto(e.detail.jid, e.detail.photo);
    });
    client.addEventListener("presence", (e) => model.presence(e.detail));
    client.addEventListener("chatstate", (e) => chats.chatState(e.detail));
    client.addEventListener("message-error", (e) => chats.failed(e.detail));
    client.addEventListener("acknowledgement", (e) => chats.receive(e.detail.message));
    client.addEventListener("message", (e) => {
        const message = e.detail.message;
        const isNew = chats.receive(message);
        details.refreshSoon(message.contact);
        if (!isNew || message.outgoing) return;
        const contact = model.contact(message.contact);
        const from = model.nameOf(message.sender);
        const title = contact?.alias ? `${from} in ${contact.name}` : from;
        if (message.live && !message.delayed) {
            notifications.message({ chatJid: message.contact, title, body: summaryOf(message) });
        }
        if (!chats.seen(message.contact)) announce(`New message from ${title}: ${summaryOf(message)}`);
    });
    client.addEventListener("caught-up", (e) => {
        const count = e.detail.count;
        if (count) announce(`${count} ${count === 1 ? "message" : "messages"} arrived while you were disconnected.`);
    });
    credentials.addEventListener("expired", () => {
        // the token could not be renewed: the next reconnect will ask the webmail, or the user
    });

    // the pane's state, for the browser tests and for debugging in the console
    window.chatgate = { model, client, chats, rooms, details, list, notifications };

    client.start();
}

async function main() {
    const config = await loadConfig();
    let started = false;
    const begin = () => {
        const handover = takeHandover();
        if (!handover || started) return false;
        started = true;
        start(config, new Credentials(handover.jid, "token", handover.token, { tokensEnabled: config.tokens }));
        return true;
    };
    // a webmail may also hand a token over to a pane already showing the form
    window.addEventListener("hashchange", begin);
    if (!begin()) {
        const notice = sessionStorage.getItem(NOTICE);
        sessionStorage.removeItem(NOTICE);
        showSignIn(config, notice);
    }
}

main();
