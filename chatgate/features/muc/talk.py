"""What occupants say (XEP-0045 §7.4, §7.5, §8.1): groupchat messages archived once in the
room's archive (XEP-0313 §5.1.2) before they go out, private messages, and the
messages other nodes tell."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.features.muc.directory import RoomDirectory
from chatgate.features.muc.model import MAX_SUBJECT, SERVICE, USER_NS, Room
from chatgate.session import Addressed, Session
from chatgate.stanza import SID_NS, StanzaError, body_of
from chatgate.storage.interfaces import ArchivedMessage
from chatgate.xml import CLIENT_NS, StreamError, copy_element, parse_document, serialize

log = Logger()


class Talk(RoomDirectory):
    """Messages to a room and to its occupants."""

    # -- messages

    def message(self, stanza: domish.Element, sender: Session, to: JID) -> Any:
        """§7.4 (and §8.1 for the subject): a groupchat message to the room."""
        mtype = stanza.getAttribute("type", "normal")
        if mtype == "error":
            return None
        room = self.rooms.get(to.userhost())
        occupant = room.by_full.get(sender.full) if room is not None else None
        if room is None or occupant is None:
            self._entered(to, sender)  # item-not-found or registration-required for who cannot enter at all
            raise StanzaError("not-acceptable", "Enter the room before sending it messages")
        if mtype != "groupchat":
            x = next(stanza.elements(USER_NS, "x"), None)
            if x is not None and next(x.elements(USER_NS, "invite"), None) is not None:
                return self._invite(room, occupant, sender, x)
            raise StanzaError("bad-request", "Messages to a room are of type groupchat")
        if not self.is_member(room, sender.bare):
            raise StanzaError("forbidden", "You are no longer a member of this room")
        body = body_of(stanza)
        subject = next(stanza.elements(CLIENT_NS, "subject"), None)
        if body is None and subject is None:
            return None  # chat states and the like: not kept, not worth a room's fan-out
        if subject is not None and len(str(subject)) > MAX_SUBJECT:
            raise StanzaError("not-acceptable", f"A subject has at most {MAX_SUBJECT} characters")
        outgoing = copy_element(stanza)
        outgoing["from"] = f"{room.jid}/{occupant.nick}"
        del outgoing["to"]
        # what only the room may say: its stanza-id, and who sent it (a client's claims are dropped)
        outgoing.children = [c for c in outgoing.children if not (
            isinstance(c, domish.Element) and ((c.uri == SID_NS and c.name == "stanza-id") or c.uri == USER_NS))]
        # a non-anonymous room names the sender's address in every message, so the archive and any
        # client reading it back know who wrote what (XEP-0313 §5.1.2, XEP-0045 §7.2.4)
        outgoing.addElement((USER_NS, "x")).addElement("item")["jid"] = sender.bare
        archive_id, at = self.ids.make(self.router.clock.seconds())
        sid = outgoing.addElement((SID_NS, "stanza-id"))
        sid["by"], sid["id"] = room.jid, archive_id
        text = serialize(outgoing)
        written = self.archive.append([ArchivedMessage(room.jid, archive_id, room.jid, occupant.nick, False, at,
                                                       body or "", text)])
        written.addErrback(self._not_written, room, archive_id)
        # write-ahead, in order: out once it is archived and everything before it went out
        previous, done = room.last_write, defer.Deferred()
        room.last_write = done

        def after_previous(_: object) -> None:
            written.addCallback(lambda _: self._deliver(room, outgoing, body, subject, occupant.nick, at, text))
            written.addErrback(lambda f: log.failure("room {room}: delivering", f, room=room.jid))
            written.addBoth(lambda _: done.callback(None))

        if previous is None:
            after_previous(None)
        else:
            previous.addCallback(after_previous)
        return None

    def _not_written(self, failure: Any, room: Room, archive_id: str) -> None:
        # delivered all the same: the occupants are waiting; the log says what history lacks
        log.failure("archiving message {id} of room {room}", failure, id=archive_id, room=room.jid)

    def _deliver(self, room: Room, outgoing: domish.Element, body: str | None, subject: domish.Element | None,
                 nick: str, at: float, text: str, told: bool = False) -> None:
        if body is not None:
            room.recent.append((at, text))
        if subject is not None:
            room.subject = (str(subject), nick)
        addressed = Addressed(outgoing)
        for session in list(room.sessions()):
            addressed.send(session)
        if not told:  # once per other node, after the archive has it (write-ahead)
            self.router.cluster.tell(room.domain, SERVICE, {"r": room.jid, "t": text, "a": at, "n": nick})

    def private(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """§7.5: a private message to one occupant, from the sender's nickname."""
        mtype = stanza.getAttribute("type", "normal")
        if mtype == "error":
            return
        room = self.rooms.get(to.userhost())
        occupant = room.by_full.get(sender.full) if room is not None else None
        if room is None or occupant is None:
            raise StanzaError("not-acceptable", "Enter the room before writing to its occupants")
        if mtype == "groupchat":
            raise StanzaError("bad-request", "A private message is of type chat")
        target = room.occupants.get(to.resource)
        if target is None:
            raise StanzaError("item-not-found", "Nobody by that nickname is in the room")
        for full in [*target.sessions, *target.remote]:  # its resources on every node
            copy = copy_element(stanza)
            copy["from"], copy["to"] = f"{room.jid}/{occupant.nick}", full
            copy.addElement((USER_NS, "x"))
            self.router.deliver_message(copy, None, JID(full))

    def heard(self, news: dict[str, Any]) -> None:
        """A message another node sent to a room, archived there: to this node's occupants."""
        room = self.rooms.get(str(news.get("r", "")))
        if room is None or not any(room.sessions()):
            return
        text = str(news.get("t", ""))
        try:
            outgoing = parse_document(text.encode("utf-8"), self.max_size)
        except StreamError:
            return
        subject = next(outgoing.elements(CLIENT_NS, "subject"), None)
        self._deliver(room, outgoing, body_of(outgoing), subject, str(news.get("n", "")),
                      float(news.get("a", 0)), text, told=True)

