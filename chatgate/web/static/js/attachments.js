// Attachments (XEP-0363 HTTP File Upload, XEP-0066 Out of Band Data): sending
// a file from the pane, and showing a message that is a file.
//
// Sending: a slot from the user's own domain (ChatClient.uploadSlot), the
// bytes PUT with the slot's content type, then a message whose body is the
// GET URL with the same URL in <x xmlns='jabber:x:oob'>, as Conversations
// and other clients send files. Nothing is sent before the PUT succeeded.
//
// Showing: a message whose body is an upload URL of this server (the slot
// URL shape under [upload] http_path or base_url, from config.json), or whose
// body is the URL it carries as OOB, is an attachment: images (png, jpeg,
// gif, webp) as a lazy, bounded <img> that opens the file when clicked, any
// other file as a download link with its name. Built from DOM nodes only,
// http(s) URLs only. This server's files are shown from the pane's own
// origin (the web listener serves the pane and the uploads alike), so the
// pages' Content-Security-Policy needs no other origin; images elsewhere are
// links.

import { h, icon } from "./dom.js";
import { NS, child, errorCondition } from "./xmpp.js";

const IMAGE = /\.(png|jpe?g|gif|webp)$/i;
const FILE_ID = /^[A-Za-z0-9_-]{22}$/;
const TOKEN = /^[a-z0-9!#$&^_.+-]+\/[a-z0-9!#$&^_.+-]+$/;

let uploads = { path: "/upload", base: "" };

/** The upload settings of config.json ({path, base}); null when uploads are off. */
export function configure(config) {
    uploads = config ? { path: config.path || "/upload", base: config.base || "" } : null;
}

export const uploadsEnabled = () => uploads !== null;

/** The content type the server keeps for *type* (features/upload.py clean_type): the PUT must carry it. */
export function slotType(type) {
    const value = String(type || "").trim().toLowerCase();
    return value.length <= 100 && TOKEN.test(value) ? value : "application/octet-stream";
}

function parseUrl(text) {
    try {
        const url = new URL(text);
        return url.protocol === "http:" || url.protocol === "https:" ? url : null;
    } catch {
        return null;
    }
}

function decoded(segment) {
    try {
        return decodeURIComponent(segment);
    } catch {
        return segment;
    }
}

/**
 * The path below the upload prefix (<domain>/<file id>/<name>) when *url* is
 * an upload of this server, else null.
 */
function ourUpload(url) {
    if (!uploads) return null;
    let rest = null;
    if (uploads.base) {
        const base = uploads.base.replace(/\/+$/, "");
        if (url.href.startsWith(`${base}/`)) rest = url.href.slice(base.length + 1).split(/[?#]/)[0];
    } else if (url.pathname.startsWith(`${uploads.path}/`)) {
        rest = url.pathname.slice(uploads.path.length + 1);
    }
    const parts = rest === null ? [] : rest.split("/");
    if (parts.length !== 3 || !FILE_ID.test(parts[1]) || !parts[2]) return null;
    // the default slot URL is http(s)://<the user's domain>:<port><path>/<domain>/…; a base URL names its host
    if (!uploads.base && url.hostname !== location.hostname && url.hostname !== decoded(parts[0]).toLowerCase()) {
        return null;
    }
    return rest;
}

/**
 * What a message shows as a file: {url, href, name, image}, or null for a
 * message of text. *body* is its text, *oob* the URL of its XEP-0066 <x/>.
 */
export function attachmentOf(body, oob = null) {
    const text = String(body || "").trim();
    if (!text || /\s/.test(text)) return null;
    const url = parseUrl(text);
    if (!url) return null;
    const rest = ourUpload(url);
    if (rest === null && (oob || "").trim() !== text) return null;
    const segments = url.pathname.split("/");
    const name = decoded(segments[segments.length - 1]) || url.hostname;
    // ours: from this origin (the same web listener); others: the URL as sent
    const href = rest !== null && url.origin !== location.origin ? `${location.origin}${uploads.path}/${rest}` : url.href;
    return { url: url.href, href, name, image: IMAGE.test(name) && new URL(href).origin === location.origin };
}

/** What a notification says of a message: its text, or the file it is. */
export function summaryOf(message) {
    const attachment = attachmentOf(message.body, message.oob);
    if (!attachment) return message.body;
    return `${attachment.image ? "Sent a picture" : "Sent a file"}: ${attachment.name}`;
}

/** The DOM of an attachment: an image that opens the file, or a download link with the file name. */
export function attachmentView(attachment) {
    const link = (content) => h("a", {
        class: "attachment-link", href: attachment.href, target: "_blank", rel: "noopener noreferrer",
        download: attachment.image ? null : attachment.name, title: attachment.name,
    }, content);
    const fileLink = () => link([icon("attach"), h("span", { class: "attachment-name" }, attachment.name)]);
    if (!attachment.image) return h("span", { class: "attachment file" }, fileLink());
    const img = h("img", {
        class: "attachment-image", src: attachment.href, alt: attachment.name, loading: "lazy", decoding: "async",
    });
    const view = h("span", { class: "attachment image" }, link(img));
    img.addEventListener("error", () => view.replaceChildren(fileLink()), { once: true });
    return view;
}

/** An error the user reads in the chat window. */
export class AttachmentError extends Error {}

function size(bytes) {
    if (bytes >= 1024 * 1024) return `${(bytes / (1024 * 1024)).toFixed(bytes % (1024 * 1024) ? 1 : 0)} MB`;
    if (bytes >= 1024) return `${Math.round(bytes / 1024)} KB`;
    return `${bytes} bytes`;
}

/** The slot request's refusal (XEP-0363 §4) in words. */
function slotRefused(error, file) {
    const stanza = error.stanza;
    if (!stanza) return new AttachmentError(`"${file.name}" could not be sent: no answer from the server.`);
    const condition = errorCondition(stanza);
    const element = child(stanza, "error");
    const tooLarge = child(element, "file-too-large", NS.upload);
    if (tooLarge || condition === "not-acceptable") {
        const max = Number(child(tooLarge, "max-file-size")?.textContent);
        return new AttachmentError(`"${file.name}" is too large to send`
            + (max ? `: files may be up to ${size(max)}.` : "."));
    }
    if (condition === "resource-constraint") {
        const stamp = child(element, "retry", NS.upload)?.getAttribute("stamp");
        const when = stamp ? new Date(stamp) : null;
        return new AttachmentError(`"${file.name}" was not sent: you have reached your daily upload limit`
            + (when && !Number.isNaN(when.getTime()) ? `; you can send files again after ${when.toLocaleString()}.` : "."));
    }
    if (condition === "service-unavailable" || condition === "feature-not-implemented") {
        return new AttachmentError("Sending files is not available on this server.");
    }
    return new AttachmentError(`"${file.name}" could not be sent (${condition}).`);
}

/** The PUT's refusal (web/upload.py) in words. */
async function putRefused(answer, file) {
    let text = "";
    try {
        text = (await answer.text()).trim();
    } catch {
        // no text
    }
    if (answer.status === 413 && /quota/i.test(text)) {
        return new AttachmentError(`"${file.name}" was not sent: you have reached your daily upload limit.`);
    }
    if (answer.status === 413) return new AttachmentError(`"${file.name}" is too large to send.`);
    return new AttachmentError(`"${file.name}" could not be sent: ${text || `the server answered ${answer.status}`}.`);
}

/**
 * Upload *file* with *client* (a ChatClient): resolves with the GET URL once
 * the server has stored it; rejects with an AttachmentError.
 */
export async function upload(client, file) {
    if (!uploads) throw new AttachmentError("Sending files is not available on this server.");
    if (!file.size) throw new AttachmentError(`"${file.name}" is empty.`);
    const type = slotType(file.type);
    let slot;
    try {
        slot = await client.uploadSlot(file.name, file.size, type);
    } catch (error) {
        throw slotRefused(error, file);
    }
    const put = parseUrl(slot.put || "");
    const get = parseUrl(slot.get || "");
    if (!put || !get) throw new AttachmentError(`"${file.name}" could not be sent: the server's answer was not usable.`);
    const rest = ourUpload(put);
    // this server's PUT goes to the listener that serves the pane (the slot's signature does not name a host)
    const target = rest !== null && put.origin !== location.origin ? `${location.origin}${uploads.path}/${rest}${put.search}` : put.href;
    let answer;
    try {
        answer = await fetch(target, {
            method: "PUT", body: file, headers: { ...slot.headers, "Content-Type": type },
            credentials: "omit", cache: "no-store",
        });
    } catch {
        throw new AttachmentError(`"${file.name}" could not be sent: the network failed. Try again.`);
    }
    if (answer.status !== 200 && answer.status !== 201) throw await putRefused(answer, file);
    return get.href;
}
