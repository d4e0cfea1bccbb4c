// The status menu in the upper right corner: Available, Away, Busy, Offline
// with an optional status text, the notification setting and Sign out.
// A popover dialog of native radio buttons (arrow keys move between them);
// Escape or a click outside closes it and gives the focus back.

import { avatar, clear, h, icon } from "../dom.js";

export const CHOICES = [
    { value: "available", label: "Available", show: "" },
    { value: "away", label: "Away", show: "away" },
    { value: "busy", label: "Busy", show: "dnd" },
    { value: "offline", label: "Offline", show: null, hint: "Signs this window out of chat; your other devices stay as they are" },
];

export class StatusMenu {
    constructor({ me, name, onStatus, onSignOut, onAvatar, notifications }) {
        this.me = me;
        this.onStatus = onStatus;
        this.onAvatar = onAvatar;
        this.photo = null;
        this.onSignOut = onSignOut;
        this.notifications = notifications;
        this.button = document.getElementById("status-button");
        this.popover = document.getElementById("status-popover");
        this.dot = document.getElementById("me-dot");
        this.label = document.getElementById("me-status-label");
        this.value = "available";
        this.text = "";
        this.connection = "connecting";
        this.setName(name || me);
        this.button.addEventListener("click", () => (this.popover.hidden ? this.openMenu() : this.closeMenu()));
        this.popover.addEventListener("keydown", (e) => {
            if (e.key === "Escape") {
                e.preventDefault();
                this.closeMenu(true);
            }
        });
        document.addEventListener("pointerdown", (e) => {
            if (!this.popover.hidden && !this.popover.contains(e.target) && !this.button.contains(e.target)) this.closeMenu();
        });
        this.build();
        this.paint();
    }

    setName(name) {
        this.name = name;
        document.getElementById("me-name").textContent = name;
        document.getElementById("me-avatar").replaceWith(Object.assign(
            avatar({ jid: this.me, name, photo: this.photo }, "sm"), { id: "me-avatar" }));
    }

    build() {
        clear(this.popover);
        const radios = CHOICES.map((choice) => h("label", { class: `status-choice choice-${choice.value}` },
            h("input", {
                type: "radio", name: "my-status", value: choice.value, checked: choice.value === this.value,
                onchange: () => this.choose(choice.value),
            }),
            h("span", { class: `dot status-${choice.value}`, "aria-hidden": "true" }),
            h("span", { class: "choice-text" }, h("span", { class: "choice-label" }, choice.label),
                choice.hint ? h("span", { class: "choice-hint" }, choice.hint) : null)));
        this.textInput = h("input", {
            id: "status-text", type: "text", maxlength: "140", placeholder: "What are you up to?", value: this.text,
            autocomplete: "off",
            onkeydown: (e) => {
                if (e.key === "Enter") {
                    e.preventDefault();
                    this.saveText();
                    this.closeMenu(true);
                }
            },
        });
        this.notifyBox = h("input", {
            id: "notify-setting", type: "checkbox", checked: this.notifications.enabled,
            onchange: async () => {
                await this.notifications.setEnabled(this.notifyBox.checked);
                this.notifyBox.checked = this.notifications.enabled;
                this.notifyHint.textContent = this.notifications.hint();
            },
        });
        this.notifyHint = h("p", { class: "setting-hint", id: "notify-hint" }, this.notifications.hint());
        this.avatarHint = h("p", { class: "setting-hint", id: "avatar-hint", role: "status" },
            "PNG, JPEG, GIF or WebP, up to 160 KB; everyone of your domain sees it.");
        this.avatarImage = h("span", { class: "avatar avatar-md", id: "my-avatar", "aria-hidden": "true" },
            this.photo ? h("img", { src: this.photo, alt: "" }) : null);
        const avatarInput = h("input", {
            id: "avatar-input", type: "file", accept: "image/png,image/jpeg,image/gif,image/webp",
            onchange: async () => {
                const file = avatarInput.files[0];
                if (!file) return;
                this.avatarHint.textContent = "Saving your picture…";
                try {
                    await this.onAvatar(file);
                    this.avatarHint.textContent = "Your picture is saved.";
                } catch (error) {
                    this.avatarHint.textContent = `Your picture was not saved: ${error.message || error}`;
                }
            },
        });
        this.popover.append(
            h("fieldset", { class: "status-choices" }, h("legend", {}, "Your status"), radios),
            h("div", { class: "status-text" },
                h("label", { for: "status-text" }, "Status message"),
                h("div", { class: "status-text-row" }, this.textInput,
                    h("button", { class: "button small", type: "button", onclick: () => { this.saveText(); this.closeMenu(true); } }, "Set"))),
            h("div", { class: "setting avatar-setting" },
                this.avatarImage,
                h("label", { for: "avatar-input" }, "Your picture"), avatarInput, this.avatarHint),
            h("div", { class: "setting" },
                h("label", { class: "switch" }, this.notifyBox, h("span", { class: "switch-track", "aria-hidden": "true" }),
                    h("span", {}, icon("bell"), "Desktop notifications")),
                this.notifyHint),
            h("div", { class: "popover-foot" },
                h("span", { class: "muted signed-in-as" }, this.me),
                h("button", { class: "button subtle small", type: "button", onclick: () => this.onSignOut() }, icon("power"), "Sign out")),
        );
        this.notifyBox.setAttribute("aria-describedby", "notify-hint");
    }

    /** The user's own picture (a data: URL), as the menu shows it. */
    setAvatar(photo) {
        this.photo = photo;
        this.setName(this.name || this.me);
        if (this.avatarImage) {
            this.avatarImage.replaceChildren(...(photo ? [h("img", { src: photo, alt: "" })] : []));
        }
    }

    openMenu() {
        this.build();
        this.popover.hidden = false;
        this.button.setAttribute("aria-expanded", "true");
        this.popover.querySelector("input[name=my-status]:checked")?.focus();
    }

    closeMenu(returnFocus = false) {
        if (this.popover.hidden) return;
        this.popover.hidden = true;
        this.button.setAttribute("aria-expanded", "false");
        if (returnFocus) this.button.focus();
    }

    choose(value) {
        this.value = value;
        this.text = this.textInput.value.trim();
        this.onStatus(value, this.text);
        this.paint();
    }

    saveText() {
        const text = this.textInput.value.trim();
        if (text === this.text) return;
        this.text = text;
        if (this.value !== "offline") this.onStatus(this.value, this.text);
        this.paint();
    }

    /** The connection's state changed (connecting, online, reconnecting, offline). */
    setConnection(state) {
        this.connection = state;
        if (state === "offline") this.value = "offline";
        this.paint();
    }

    paint() {
        let dot = this.value;
        let label = CHOICES.find((c) => c.value === this.value).label;
        if (this.value !== "offline" && this.connection !== "online") {
            dot = "offline";
            label = this.connection === "reconnecting" ? "Reconnecting…" : "Connecting…";
        } else if (this.text && this.value !== "offline") {
            label = `${label} — ${this.text}`;
        }
        this.dot.className = `dot status-${dot}`;
        this.label.textContent = label;
        this.button.setAttribute("aria-label", `Your status: ${label}. Change status or settings`);
    }
}
