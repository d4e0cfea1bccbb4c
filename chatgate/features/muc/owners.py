"""Rooms users make, administered by their owners (XEP-0045 §7.8.2 invitations, §8.2
kicks, §9-§10: members, owners, the configuration form, destruction)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from chatgate.features.muc.directory import RoomDirectory
from chatgate.features.muc.model import (
    ADMIN_NS,
    CONFIG_FORM,
    MAX_SUBJECT,
    OWNER_NS,
    USER_NS,
    XDATA_NS,
    Occupant,
    Room,
)
from chatgate.jid import jid_of
from chatgate.session import Session
from chatgate.stanza import StanzaError, iq_result
from chatgate.storage.interfaces import RoomRecord
from chatgate.xml import CLIENT_NS, Element


class Ownership(RoomDirectory):
    """Invitations, owners and members."""

    # -- invitations, owners and members of a room a user made

    def _invite(self, room: Room, occupant: Occupant, sender: Session, x: domish.Element) -> Any:
        """§7.8.2: an occupant invites users of the domain; in a room a user made, an
        invitee becomes a member (members-only: or they could not enter)."""
        invitees = []
        for invite in x.elements(USER_NS, "invite"):
            jid = self._user_of(room, invite.getAttribute("to", ""), "item-not-found")
            reason = next(invite.elements(USER_NS, "reason"), None)
            invitees.append((jid.userhost(), str(reason) if reason is not None else ""))
        added = [bare for bare, _ in invitees if not self.is_member(room, bare)]
        if added and not room.made:
            raise StanzaError("forbidden", "Members of this room follow the directory: "
                                           f"{', '.join(added)} cannot be made one here")
        written: defer.Deferred[None] = defer.succeed(None)
        if added:
            record = self.record(room.domain, room.localpart)
            assert record is not None
            written = self._write_record(replace(record, members=record.members
                                                 + tuple(bare.partition("@")[0] for bare in added)))

        def tell(_: object) -> None:
            for bare, reason in invitees:
                invitation = Element((CLIENT_NS, "message"))
                invitation["from"], invitation["to"] = room.jid, bare
                told = invitation.addElement((USER_NS, "x")).addElement("invite")
                told["from"] = sender.full
                if reason:
                    told.addElement("reason", content=reason)
                invitation.addElement("body", content=f"{occupant.nick} invites you to the room {room.name}"
                                                      f" ({room.jid})" + (f": {reason}" if reason else ""))
                self.router.deliver_message(invitation, None, JID(bare))

        return written.addCallback(tell)

    def _user_of(self, room: Room, text: str, condition: str) -> JID:
        """The user of the room's domain *text* names; StanzaError *condition* for anyone else."""
        try:
            jid = jid_of(text)
        except InvalidFormat:
            raise StanzaError("jid-malformed", "Not an address") from None
        if jid.host != room.domain or self.domains.user(jid.host, jid.user) is None:
            raise StanzaError(condition, f"{jid.userhost()} is no user of {room.domain}")
        return jid

    def _owned(self, to: JID, sender: Session) -> tuple[Room, RoomRecord]:
        """The room a user made at *to*, which *sender* owns; StanzaError otherwise (§10)."""
        room = self.room(to)
        if room is None:
            raise StanzaError("item-not-found", "No such room")
        if not room.made:
            raise StanzaError("not-allowed", "This room follows the directory: its administrators set it")
        record = self.record(room.domain, room.localpart)
        if record is None or self.affiliation(room, sender.bare) != "owner":
            raise StanzaError("forbidden", "Only the room's owners may do this")
        return room, record

    def owner_get(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """§10.2: the configuration form (what can change: the name)."""
        room, record = self._owned(to, sender)
        reply = iq_result(stanza)
        form = reply.addElement((OWNER_NS, "query")).addElement((XDATA_NS, "x"))
        form["type"] = "form"
        form.addElement("title", content=f"Configuration of {room.jid}")
        for var, kind, value, label in (
                ("FORM_TYPE", "hidden", CONFIG_FORM, None),
                ("muc#roomconfig_roomname", "text-single", record.name, "Name"),
                ("muc#roomconfig_persistentroom", "boolean", "1", "Kept when empty (always)"),
                ("muc#roomconfig_membersonly", "boolean", "1", "Members only (always)"),
                ("muc#roomconfig_whois", "list-single", "anyone", "Addresses shown to (everyone)")):
            item = form.addElement("field")
            item["var"], item["type"] = var, kind
            if label:
                item["label"] = label
            item.addElement("value", content=value)
        sender.send(reply)

    def owner_set(self, stanza: domish.Element, sender: Session, to: JID) -> Any:
        """§10.2 a submitted (or cancelled) form, §10.9 <destroy/>."""
        room, record = self._owned(to, sender)
        query = stanza.firstChildElement()
        if next(query.elements(OWNER_NS, "destroy"), None) is not None:
            return self._removed(room, stanza, sender)
        form = next(query.elements(XDATA_NS, "x"), None)
        if form is None or form.getAttribute("type") == "cancel":
            sender.send(iq_result(stanza))
            return None
        name = record.name
        for item in form.elements(XDATA_NS, "field"):
            if item.getAttribute("var") == "muc#roomconfig_roomname":
                value = next(item.elements(XDATA_NS, "value"), None)
                name = str(value).strip() if value is not None else ""
        if len(name) > MAX_SUBJECT:
            raise StanzaError("not-acceptable", f"A room's name has at most {MAX_SUBJECT} characters")
        room.name = name or room.localpart
        return self._write_record(replace(record, name=name)).addCallback(lambda _: sender.send(iq_result(stanza)))

    def _removed(self, room: Room, stanza: domish.Element, sender: Session) -> Any:
        self._written.pop((room.domain, room.localpart), None)
        self._gone.add((room.domain, room.localpart))
        removed = self.directory.remove_room(room.domain, room.localpart)
        if room.jid in self.rooms:
            self._destroy(room, "The room's owner destroyed it")
        return removed.addCallback(lambda _: sender.send(iq_result(stanza)))

    def admin_get(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """§9.5, §10.5: the room's members or owners, to its members."""
        room = self.room(to)
        if room is None:
            raise StanzaError("item-not-found", "No such room")
        if not self.is_member(room, sender.bare):
            raise StanzaError("forbidden", "Only the room's members may see who they are")
        wanted = {item.getAttribute("affiliation") for item in stanza.firstChildElement().elements(ADMIN_NS, "item")}
        reply = iq_result(stanza)
        query = reply.addElement((ADMIN_NS, "query"))
        for user in self.domains.users(room.domain):
            affiliation = self.affiliation(room, user.jid)
            if affiliation in wanted:
                item = query.addElement("item")
                item["affiliation"], item["jid"] = affiliation, user.jid
        sender.send(reply)

    def admin_set(self, stanza: domish.Element, sender: Session, to: JID) -> Any:
        """§9.3-§9.8, §10.3-§10.7: owners make and unmake owners and members (``outcast``
        and ``none`` both take membership away: the room is members-only); §8.2 kick."""
        room, record = self._owned(to, sender)
        owners, members = set(record.owners), set(record.members)
        kicked = []
        for item in stanza.firstChildElement().elements(ADMIN_NS, "item"):
            if item.getAttribute("role") == "none" and item.hasAttribute("nick"):
                occupant = room.occupants.get(item["nick"])
                if occupant is None:
                    raise StanzaError("item-not-found", "Nobody by that nickname is in the room")
                kicked.append(occupant)
                continue
            affiliation = item.getAttribute("affiliation")
            jid = self._user_of(room, item.getAttribute("jid", ""), "not-acceptable")
            localpart = jid.user or ""
            owners.discard(localpart)
            members.discard(localpart)
            if affiliation in ("owner", "admin"):
                owners.add(localpart)
            elif affiliation == "member":
                members.add(localpart)
            elif affiliation not in ("none", "outcast"):
                raise StanzaError("bad-request", f"Unknown affiliation {affiliation!r}")
        if not owners:
            raise StanzaError("conflict", "A room keeps at least one owner")  # §10.7
        for occupant in kicked:
            for session in list(occupant.sessions.values()):
                self.leave(room, session, 307)
        written = self._write_record(replace(record, owners=tuple(owners), members=tuple(members)))
        self._members_changed(room)
        return written.addCallback(lambda _: sender.send(iq_result(stanza)))

    def _members_changed(self, room: Room) -> None:
        """Occupants here who are members no more leave, status 321 (§9.4)."""
        for occupant in list(room.occupants.values()):
            if not self.is_member(room, occupant.bare):
                for session in list(occupant.sessions.values()):
                    self.leave(room, session, 321)

