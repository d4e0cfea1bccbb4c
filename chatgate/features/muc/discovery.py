"""Discovery (XEP-0045 §6, XEP-0030) of the room service and its rooms, and XEP-0410
self-pings."""

from __future__ import annotations

from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.features.muc.directory import RoomDirectory
from chatgate.features.muc.model import INFO_NS, ITEMS_NS, MAM_NS, MUC_NS, XDATA_NS, disco_reply
from chatgate.session import Session
from chatgate.stanza import StanzaError, iq_result

#: occupants a room's disco#items lists at most
MAX_LISTED = 1000


class Discovery(RoomDirectory):
    """disco#info and disco#items, self-ping."""

    # -- discovery and self-ping

    def service_info(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        reply, query = disco_reply(stanza, INFO_NS)
        identity = query.addElement("identity")
        identity["category"], identity["type"], identity["name"] = "conference", "text", "Team rooms"
        for var in (INFO_NS, ITEMS_NS, MUC_NS):
            query.addElement("feature")["var"] = var
        sender.send(reply)

    def service_items(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        reply, query = disco_reply(stanza, ITEMS_NS)
        for jid, name in self.rooms_of(sender.domain, sender.jid.user or ""):
            item = query.addElement("item")
            item["jid"], item["name"] = jid, name
        sender.send(reply)

    def room_info(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        room = self.room(to)
        if room is None:
            raise StanzaError("item-not-found", "No such room")
        reply, query = disco_reply(stanza, INFO_NS)
        identity = query.addElement("identity")
        identity["category"], identity["type"], identity["name"] = "conference", "text", room.name
        for var in (INFO_NS, MUC_NS, MAM_NS, "muc_membersonly", "muc_nonanonymous", "muc_persistent",
                    "muc_public", "muc_unmoderated", "muc_unsecured"):
            query.addElement("feature")["var"] = var
        form = query.addElement((XDATA_NS, "x"))
        form["type"] = "result"
        for var, value in (("FORM_TYPE", "http://jabber.org/protocol/muc#roominfo"),
                           ("muc#roominfo_occupants", str(len(room.occupants))),
                           ("muc#roominfo_subject", room.subject[0]),
                           ("muc#roomconfig_roomname", room.name)):
            found = form.addElement("field")
            found["var"] = var
            if var == "FORM_TYPE":
                found["type"] = "hidden"
            found.addElement("value", content=value)
        sender.send(reply)

    def room_items(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """§6.5: who is in the room (the first :data:`MAX_LISTED` by nickname), to its members:
        how an occupant of a large room, told of nobody's comings and goings, learns it."""
        room = self.room(to)
        if room is None:
            raise StanzaError("item-not-found", "No such room")
        reply, query = disco_reply(stanza, ITEMS_NS)
        if self.is_member(room, sender.bare):
            for nick in sorted(room.occupants)[:MAX_LISTED]:
                item = query.addElement("item")
                item["jid"], item["name"] = f"{room.jid}/{nick}", nick
        sender.send(reply)

    def self_ping(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """XEP-0410 §3: answered for the occupant itself; not-acceptable when it is not in the room."""
        room = self.rooms.get(to.userhost())
        occupant = room.by_full.get(sender.full) if room is not None else None
        if occupant is None or occupant.nick != to.resource:
            raise StanzaError("not-acceptable", "Not in this room under that nickname")
        sender.send(iq_result(stanza))

