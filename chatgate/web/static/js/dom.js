// Small DOM and formatting helpers shared by the pane's views.

/**
 * h("button", {class: "x", onclick: fn, "aria-label": "…"}, "text", child…)
 * Strings become text nodes (never HTML); null/false children are skipped.
 */
export function h(tag, attrs = {}, ...children) {
    const el = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
        if (value === null || value === undefined || value === false) continue;
        if (name.startsWith("on") && typeof value === "function") {
            el.addEventListener(name.slice(2), value);
        } else if (name === "class") {
            el.className = value;
        } else if (name === "text") {
            el.textContent = value;
        } else if (name in el && !name.includes("-") && typeof value !== "string") {
            el[name] = value;
        } else {
            el.setAttribute(name, value === true ? "" : String(value));
        }
    }
    append(el, children);
    return el;
}

export function append(el, children) {
    for (const child of children.flat(Infinity)) {
        if (child === null || child === undefined || child === false) continue;
        el.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return el;
}

export function clear(el) {
    while (el.firstChild) el.firstChild.remove();
    return el;
}

/** Inline SVG icons (stroke icons, 24×24 viewBox), decorative unless labelled. */
const ICONS = {
    chat: "M21 12a8 8 0 0 1-11.6 7.1L4 20l1.2-4.4A8 8 0 1 1 21 12z",
    back: "M15 18l-6-6 6-6",
    close: "M6 6l12 12M18 6L6 18",
    search: "M11 18a7 7 0 1 1 0-14 7 7 0 0 1 0 14zM20 20l-4-4",
    send: "M4 12l16-8-6 16-2.5-6.5L4 12z",
    open: "M14 4h6v6M20 4l-9 9M18 14v5a1 1 0 0 1-1 1H5a1 1 0 0 1-1-1V7a1 1 0 0 1 1-1h5",
    mail: "M4 6h16v12H4zM4 7l8 6 8-6",
    phone: "M6.6 3h2.8l1.4 4-2 1.4a11 11 0 0 0 6 6l1.4-2 4 1.4v2.8A2 2 0 0 1 18 20 15 15 0 0 1 4 6a2 2 0 0 1 2.6-3z",
    at: "M16 12a4 4 0 1 1-8 0 4 4 0 0 1 8 0zm0 0v1.5a2.5 2.5 0 0 0 5 0V12a9 9 0 1 0-3.5 7.1",
    bell: "M6 16V11a6 6 0 1 1 12 0v5l2 2H4zM10 20a2 2 0 0 0 4 0",
    group: "M9 11a4 4 0 1 0 0-8 4 4 0 0 0 0 8zM2 21v-1a6 6 0 0 1 12 0v1M16 3.5a4 4 0 0 1 0 7.5M22 21v-1a6 6 0 0 0-4-5.6",
    caret: "M7 10l5 5 5-5",
    collapse: "M6 6l6 6-6 6M13 6l6 6-6 6",
    history: "M3 12a9 9 0 1 0 3-6.7L3 8M3 3v5h5M12 7v5l3 3",
    print: "M7 9V3h10v6M7 17H4v-7h16v7h-3M7 14h10v7H7z",
    power: "M12 3v9M6.3 6.3a8 8 0 1 0 11.4 0",
    attach: "M20 11.5l-8.2 8.2a5 5 0 0 1-7.1-7.1l8.5-8.5a3.3 3.3 0 0 1 4.7 4.7l-8.5 8.5a1.7 1.7 0 0 1-2.4-2.4l7.8-7.8",
};

export function icon(name, label = null) {
    const ns = "http://www.w3.org/2000/svg";
    const svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("class", `icon icon-${name}`);
    if (label) {
        svg.setAttribute("role", "img");
        svg.setAttribute("aria-label", label);
    } else {
        svg.setAttribute("aria-hidden", "true");
    }
    const path = document.createElementNS(ns, "path");
    path.setAttribute("d", ICONS[name] || "");
    svg.append(path);
    return svg;
}

// -- names and avatars

export function initials(name) {
    const words = String(name || "?").replace(/@.*/, "").split(/[\s._-]+/).filter(Boolean);
    const letters = words.length > 1 ? words[0][0] + words[words.length - 1][0] : (words[0] || "?").slice(0, 2);
    return letters.toUpperCase();
}

/** One of eight avatar tones (all dark enough for white initials, ≥ 4.5:1). */
export function tone(jid) {
    let hash = 0;
    for (const ch of String(jid)) hash = (hash * 31 + ch.codePointAt(0)) >>> 0;
    return hash % 8;
}

export function avatar(contact, size = "md") {
    const el = h("span", { class: `avatar avatar-${size} tone-${tone(contact.jid)}`, "aria-hidden": "true" });
    if (contact.photo) {
        el.append(h("img", { src: contact.photo, alt: "" }));
    } else if (contact.alias) {
        el.append(icon("group"));
    } else {
        el.textContent = initials(contact.name || contact.jid);
    }
    return el;
}

// -- text

const URL_RE = /\bhttps?:\/\/[^\s<>"']+[^\s<>"'.,;:!?)\]]/g;

/** Text with its http(s) links made clickable; never interpreted as HTML. */
export function linkify(text) {
    const fragment = document.createDocumentFragment();
    let last = 0;
    for (const match of text.matchAll(URL_RE)) {
        fragment.append(text.slice(last, match.index));
        fragment.append(h("a", { href: match[0], target: "_blank", rel: "noopener noreferrer" }, match[0]));
        last = match.index + match[0].length;
    }
    fragment.append(text.slice(last));
    return fragment;
}

// -- dates and times, in the browser's language

const LOCALE = undefined;

export function timeOf(date) {
    return date.toLocaleTimeString(LOCALE, { hour: "numeric", minute: "2-digit" });
}

export function dayOf(date, withYear = true) {
    return date.toLocaleDateString(LOCALE, {
        weekday: "short", day: "numeric", month: "short", ...(withYear ? { year: "numeric" } : {}),
    });
}

export function longDayOf(date) {
    return date.toLocaleDateString(LOCALE, { weekday: "long", day: "numeric", month: "long", year: "numeric" });
}

export function sameDay(a, b) {
    return a.getFullYear() === b.getFullYear() && a.getMonth() === b.getMonth() && a.getDate() === b.getDate();
}

/** "Today", "Yesterday" or the date. */
export function friendlyDay(date, now = new Date()) {
    if (sameDay(date, now)) return "Today";
    const yesterday = new Date(now);
    yesterday.setDate(now.getDate() - 1);
    if (sameDay(date, yesterday)) return "Yesterday";
    return dayOf(date, date.getFullYear() !== now.getFullYear());
}

export function duration(ms) {
    const minutes = Math.round(ms / 60000);
    if (minutes < 1) return "under a minute";
    if (minutes < 60) return `${minutes} min`;
    const hours = Math.floor(minutes / 60);
    const rest = minutes % 60;
    return rest ? `${hours} h ${rest} min` : `${hours} h`;
}

export function plural(n, one, many = one + "s") {
    return `${n} ${n === 1 ? one : many}`;
}

/** A random id for messages and resources. */
export function randomId(length = 12) {
    const bytes = crypto.getRandomValues(new Uint8Array(length));
    return Array.from(bytes, (b) => "abcdefghijklmnopqrstuvwxyz0123456789"[b % 36]).join("");
}
