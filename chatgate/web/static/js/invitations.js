// Invitations to team rooms, above the contact list: one card per room with
// who invites, to which room and why, "Enter" and "Dismiss". They come from
// the room (XEP-0045 §7.8.2, mediated: the invitee is made a member) or from
// a user of the domain (XEP-0249, direct; xmpp.js keeps only those to this
// domain's room service). Everything on a card is text, never markup. "Enter"
// asks for the list of rooms again when the room is not in it yet (the
// membership may be newer than the list) and enters it; a room the user
// still may not enter says so on the card, which stays until dismissed.
// Entering the room by any other way takes its card away.

import { h } from "./dom.js";

export class Invitations {
    constructor(model, client, { onEnter, notifications, announce }) {
        this.model = model;
        this.client = client;
        this.onEnter = onEnter;
        this.notifications = notifications;
        this.announce = announce;
        this.el = document.getElementById("invitations");
        this.cards = new Map(); // room jid → card element
        client.addEventListener("room-invitation", (e) => this.invited(e.detail));
        model.addEventListener("rooms", () => {
            for (const jid of [...this.cards.keys()]) if (this.model.room(jid)?.joined) this.remove(jid);
        });
    }

    invited({ room: jid, inviter, reason }) {
        if (this.model.room(jid)?.joined) return; // in it already
        const who = inviter ? this.model.nameOf(inviter) : "Someone";
        const name = this.model.room(jid)?.name || jid.split("@")[0];
        const problem = h("p", { class: "invitation-problem", role: "alert", hidden: true });
        const enter = h("button", { class: "button primary", type: "button", "data-action": "enter" }, "Enter");
        const card = h("section", { class: "invitation", "data-room": jid, "aria-label": `Invitation to ${name}` },
            h("p", { class: "invitation-text" },
                h("span", { class: "invitation-from" }, who), " invites you to ",
                h("span", { class: "invitation-room" }, name)),
            reason ? h("p", { class: "invitation-reason" }, reason) : null,
            problem,
            h("div", { class: "invitation-actions" }, enter,
                h("button", { class: "button", type: "button", "data-action": "dismiss", onclick: () => this.remove(jid) },
                    "Dismiss")));
        enter.addEventListener("click", () => this.enter(jid, enter, problem));
        this.cards.get(jid)?.remove(); // the newer invitation to the same room stands
        this.cards.set(jid, card);
        this.el.prepend(card);
        this.el.hidden = false;
        const title = `${who} invites you to ${name}`;
        this.announce(reason ? `${title}: ${reason}` : title);
        this.notifications.show(`invitation:${jid}`, {
            title, body: reason || "A team room", onClick: () => this.enter(jid, enter, problem),
        });
    }

    async enter(jid, button, problem) {
        button.disabled = true;
        problem.hidden = true;
        try {
            if (!this.model.room(jid)) await this.client.refreshRooms();
        } finally {
            button.disabled = false;
        }
        if (this.client.state !== "online") {
            this.trouble(problem, "You are offline: enter once you are back online.");
        } else if (!this.model.room(jid)) {
            this.trouble(problem, "You are not a member of this room: ask whoever invited you to add you.");
        } else {
            this.remove(jid);
            this.onEnter(jid);
        }
    }

    trouble(problem, text) {
        problem.textContent = text;
        problem.hidden = false;
    }

    remove(jid) {
        this.cards.get(jid)?.remove();
        this.cards.delete(jid);
        this.notifications.read(`invitation:${jid}`);
        this.el.hidden = this.cards.size === 0;
    }
}
