/*
 * chatgate loader: the one script a webmail page includes to show the chat
 * link where the site and the user's domain allow it.
 *
 *   <script src="https://chat.example.net/chat/loader.js" async
 *           data-user="alice@example.com"
 *           data-token-url="/webmail/chat-token"
 *           data-site="mail.example.com"
 *           data-target="#chat-link"></script>
 *
 * data-user      the signed-in user's address (required)
 * data-token-url the webmail's own endpoint that answers a POST (with the
 *                webmail's session cookie) with {"token": "cg2.…"}, a fresh
 *                chatgate login token for that user; optional
 * data-token     or a token put in the page when it was rendered; optional
 *                (with neither, the pane asks for the password)
 * data-site      the site's host name as chatgate knows it; default: this page's host
 * data-target    where to put the link (a CSS selector); default: a round
 *                button in the lower right corner
 *
 * It asks chatgate GET /api/sites/<site>/chat?user=<user> (the webmail's
 * origin must be in [http] cors_origins) and shows the link only when the
 * answer says {"show": true}. With a token (data-token-url, else data-token)
 * it sends the user's credentials, HTTP Basic with the address and the
 * token, and the answer is for that user (no link where their domain has no
 * chat); without one the answer is the site's setting alone, the same for
 * every address. The link opens the pane in a window of its own
 * (one per browser: a second click brings it forward), handing the token
 * over in the address's fragment (#token=…), which never reaches a server.
 * While the pane is open it may ask this page for a fresh token
 * (postMessage), which the loader fetches from data-token-url.
 *
 * window.chatgate = {open(), refresh()} for pages that want their own button.
 */
(function () {
    "use strict";
    var script = document.currentScript;
    if (!script || window.chatgate && window.chatgate.loader) return;
    var base = new URL(".", script.src); // …/chat/
    var chatOrigin = base.origin;
    var user = (script.getAttribute("data-user") || "").trim();
    var site = (script.getAttribute("data-site") || location.hostname).trim();
    var tokenUrl = script.getAttribute("data-token-url");
    var pageToken = script.getAttribute("data-token");
    var targetSelector = script.getAttribute("data-target");
    var windowName = "chatgate-" + user.replace(/[^A-Za-z0-9]/g, "_");
    var link = null;
    var paneWindow = null;

    function style() {
        if (document.getElementById("chatgate-loader-style")) return;
        var css = document.createElement("style");
        css.id = "chatgate-loader-style";
        css.textContent = [
            ".chatgate-link{display:inline-flex;align-items:center;gap:8px;padding:8px 14px;border-radius:999px;",
            "background:#2356d1;color:#fff;font:600 14px/1.2 system-ui,-apple-system,'Segoe UI',Roboto,sans-serif;",
            "text-decoration:none;border:0;cursor:pointer;box-shadow:0 2px 8px rgba(16,24,40,.2)}",
            ".chatgate-link:hover{background:#1b44a8}",
            ".chatgate-link:focus-visible{outline:3px solid #9bb7ff;outline-offset:2px}",
            ".chatgate-link svg{width:20px;height:20px}",
            ".chatgate-link.chatgate-floating{position:fixed;right:20px;bottom:20px;z-index:2147483000;padding:12px 18px}",
        ].join("");
        document.head.appendChild(css);
    }

    function makeLink() {
        var a = document.createElement("a");
        a.className = "chatgate-link" + (targetSelector ? "" : " chatgate-floating");
        a.href = base.href;
        a.target = windowName;
        a.setAttribute("data-chatgate", "link");
        a.setAttribute("aria-label", "Open chat");
        a.innerHTML = '<svg viewBox="0 0 24 24" aria-hidden="true" fill="none" stroke="currentColor" stroke-width="2" '
            + 'stroke-linecap="round" stroke-linejoin="round"><path d="M21 12a8 8 0 0 1-11.6 7.1L4 20l1.2-4.4A8 8 0 1 1 21 12z"/></svg>';
        a.appendChild(document.createTextNode("Chat"));
        a.addEventListener("click", function (event) {
            event.preventDefault();
            open();
        });
        return a;
    }

    function getToken() {
        if (tokenUrl) {
            return fetch(tokenUrl, { method: "POST", credentials: "same-origin", headers: { Accept: "application/json" } })
                .then(function (r) { return r.ok ? r.json() : {}; })
                .then(function (body) { return body.token || pageToken || null; })
                .catch(function () { return pageToken || null; });
        }
        return Promise.resolve(pageToken || null);
    }

    /** Open the pane (or bring it forward). Must run in a click: the window opens at once, the token follows. */
    function open() {
        var win = window.open("", windowName);
        if (!win) { // a popup blocker: go there in this tab instead
            getToken().then(function (token) { location.href = paneURL(token); });
            return;
        }
        var fresh = true;
        try {
            fresh = win.location.href === "about:blank";
        } catch (e) {
            fresh = false; // the pane's own origin: it is open already
        }
        paneWindow = win;
        if (!fresh) {
            win.focus();
            return;
        }
        getToken().then(function (token) {
            win.location.replace(paneURL(token));
            win.focus();
        });
    }

    function paneURL(token) {
        var url = new URL(base.href);
        if (token) url.hash = "token=" + encodeURIComponent(token) + "&jid=" + encodeURIComponent(user);
        return url.href;
    }

    /** The pane asks for a fresh token when its own could not be renewed. */
    window.addEventListener("message", function (event) {
        if (event.origin !== chatOrigin || !event.data || event.data.type !== "chatgate:need-token") return;
        var source = event.source;
        getToken().then(function (token) {
            if (token && source) source.postMessage({ type: "chatgate:token", token: token }, chatOrigin);
        });
    });

    function place(show) {
        if (!show) {
            if (link && link.parentNode) link.parentNode.removeChild(link);
            return;
        }
        style();
        link = link || makeLink();
        var target = targetSelector ? document.querySelector(targetSelector) : document.body;
        if (target && link.parentNode !== target) target.appendChild(link);
    }

    /** HTTP Basic credentials (RFC 7617, UTF-8) of the user with *token* for the password. */
    function basic(token) {
        var bytes = new TextEncoder().encode(user + ":" + token);
        var text = "";
        for (var i = 0; i < bytes.length; i++) text += String.fromCharCode(bytes[i]);
        return "Basic " + btoa(text);
    }

    /** Ask chatgate whether to show the link (again, e.g. after the site's settings changed). */
    function refresh() {
        if (!user) return Promise.resolve(false);
        var url = new URL("../api/sites/" + encodeURIComponent(site) + "/chat", base);
        url.searchParams.set("user", user);
        return getToken()
            .then(function (token) {
                var headers = token ? { Authorization: basic(token) } : {};
                return fetch(url.href, { mode: "cors", credentials: "omit", cache: "no-store", headers: headers });
            })
            .then(function (r) { return r.ok ? r.json() : { show: false }; })
            .catch(function () { return { show: false }; })
            .then(function (answer) {
                var show = answer.show === true;
                if (document.readyState === "loading") {
                    document.addEventListener("DOMContentLoaded", function () { place(show); });
                } else {
                    place(show);
                }
                return show;
            });
    }

    window.chatgate = { loader: true, open: open, refresh: refresh, pane: function () { return paneWindow; } };
    refresh();
})();
