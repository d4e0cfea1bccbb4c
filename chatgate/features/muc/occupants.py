"""Occupants (XEP-0045 §7.1-§7.6, §7.14, §10.1): entering (history §7.2.15, subject
§7.2.16), presence, nickname changes, leaving, making a room, and the occupants
of other nodes of a cluster."""

from __future__ import annotations

from collections import deque
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.features.muc.directory import RoomDirectory
from chatgate.features.muc.model import (
    MAX_NICK,
    MUC_NS,
    SERVICE,
    SUBJECT_SCAN,
    USER_NS,
    Occupant,
    Room,
    jid_of_room,
    joined,
    shown,
)
from chatgate.session import Addressed, Session
from chatgate.stanza import DELAY_NS, StanzaError, error_reply, parse_stamp, stamp
from chatgate.storage.interfaces import ArchiveQuery, RoomRecord
from chatgate.xml import CLIENT_NS, Element, StreamError, copy_element, parse_document

log = Logger()


class Occupancy(RoomDirectory):
    """Entering, being in and leaving rooms."""

    # -- history and subject, read once per room

    def load(self, room: Room) -> defer.Deferred[None]:
        if room.loaded is None:
            room.loaded = defer.Deferred.fromCoroutine(self._load(room))
            room.loaded.addErrback(self._not_loaded, room)
        return room.loaded

    async def _load(self, room: Room) -> None:
        page = await self.archive.query(room.jid, ArchiveQuery(before="", max=SUBJECT_SCAN))
        live = list(room.recent)  # what was said while the archive was being read
        known = {text for _, text in live}
        archived = []
        for message in page.messages:
            if message.body:
                if message.stanza not in known:
                    archived.append((message.at, message.stanza))
            elif message.stanza not in known:
                subject = self._stored_subject(message.stanza)
                if subject is not None:
                    room.subject = (subject, message.resource)
        room.recent = deque(archived + live, maxlen=self.history)

    def _not_loaded(self, failure: Any, room: Room) -> None:
        log.failure("reading the history of room {room}", failure, room=room.jid)
        room.loaded = None  # tried again at the next entry

    def _stored_subject(self, text: str) -> str | None:
        try:
            stanza = parse_document(text.encode("utf-8"), self.max_size)
        except StreamError:
            return None
        for subject in stanza.elements(CLIENT_NS, "subject"):
            return str(subject)
        return None

    # -- presence

    def presence(self, stanza: domish.Element, sender: Session, to: JID) -> Any:
        """Presence to room/nick: enter, update, change nickname, or leave. A refusal
        carries the MUC element back (§7.2.6-§7.2.9), which is how clients tell it."""
        try:
            return self._presence(stanza, sender, to)
        except StanzaError as refused:
            self._refuse(stanza, sender, refused.condition, refused.text)
            return None

    def _refuse(self, stanza: domish.Element, sender: Session, condition: str, text: str | None) -> None:
        reply = error_reply(stanza, condition, text)
        reply.addElement((MUC_NS, "x"))
        sender.send(reply)

    def _presence(self, stanza: domish.Element, sender: Session, to: JID, fresh: bool = False) -> Any:
        ptype = stanza.getAttribute("type")
        if ptype == "unavailable":
            room = self.rooms.get(to.userhost())
            if room is not None and sender.full in room.by_full:
                self.leave(room, sender)
            return None
        if ptype is not None:
            return None  # subscriptions and probes mean nothing to a room; errors neither
        known = self.room(to)
        if known is None:
            return self._create(stanza, sender, to)
        if known.made and not fresh and not self.is_member(known, sender.bare):
            return self._read_again(stanza, sender, to)
        room = self._entered(to, sender)
        nick = to.resource
        if len(nick) > MAX_NICK:
            raise StanzaError("not-acceptable", f"A nickname has at most {MAX_NICK} characters")
        occupant = room.by_full.get(sender.full)
        taken = room.occupants.get(nick)
        if taken is not None and taken.bare != sender.bare:
            raise StanzaError("conflict", "That nickname is in use in this room")
        if occupant is not None:
            if occupant.nick == nick:
                occupant.presence = shown(stanza)
                self._broadcast(room, occupant)
            else:
                self._rename(room, occupant, sender, nick, stanza)
            return None
        history = next(stanza.elements(MUC_NS, "x"), None)
        loaded = self.load(room)
        loaded.addCallback(lambda _: self._enter(room, sender, nick, stanza, history))
        return loaded

    def _create(self, stanza: domish.Element, sender: Session, to: JID) -> Any:
        """§10.1: entering a room nobody has made makes it, its maker the owner (status 201).
        It is an instant room (§10.1.2), members-only like every room here; a name that is
        the domain room's or a mail alias's is not free, nor a room an administrator closed."""
        domain, localpart = to.host.partition(".")[2], to.user or ""
        if (not localpart or localpart == self.domain_room or self.domains.alias(domain, localpart) is not None
                or self.record(domain, localpart) is not None):
            raise StanzaError("not-allowed", "This room is closed, or the name belongs to the directory")
        if len(to.resource or "") > MAX_NICK:
            raise StanzaError("not-acceptable", f"A nickname has at most {MAX_NICK} characters")
        record = RoomRecord(domain, localpart, "", True, True, (sender.jid.user or "",)).normalized()
        key = (domain, localpart)
        self._written[key] = record  # this node's next entries find it at once
        history = next(stanza.elements(MUC_NS, "x"), None)

        async def make() -> Any:
            # another node may have made it a moment ago, its record not mirrored here yet
            kept = next((r for r in await self.directory.rooms(domain) if r.localpart == localpart), None)
            if kept is not None:
                self._written[key] = kept
                self.rooms.pop(f"{localpart}@{to.host}", None)
                entered = self._presence(stanza, sender, to)  # an entry like any other (or its refusal)
                return await entered if isinstance(entered, defer.Deferred) else entered
            await self._write_record(record)
            room = self.room(to)
            if room is None:
                return None
            room.loaded = defer.succeed(None)  # a new room: no history to read
            return self._enter(room, sender, to.resource or "", stanza, history, created=True)

        return defer.Deferred.fromCoroutine(make()).addErrback(self._refused_later, stanza, sender)

    def _read_again(self, stanza: domish.Element, sender: Session, to: JID) -> Any:
        """A room a user made, which the sender is no member of as this node knows it: an
        invitation through another node may have made them one a moment ago."""
        domain, localpart = to.host.partition(".")[2], to.user or ""

        async def read() -> Any:
            kept = next((r for r in await self.directory.rooms(domain) if r.localpart == localpart), None)
            if kept is not None:
                self._written[(domain, localpart)] = kept
            entered = self._presence(stanza, sender, to, fresh=True)
            return await entered if isinstance(entered, defer.Deferred) else entered

        return defer.Deferred.fromCoroutine(read()).addErrback(self._refused_later, stanza, sender)

    def _refused_later(self, failure: Any, stanza: domish.Element, sender: Session) -> None:
        failure.trap(StanzaError)
        self._refuse(stanza, sender, failure.value.condition, failure.value.text)

    def _enter(self, room: Room, sender: Session, nick: str, stanza: domish.Element,
               muc: domish.Element | None, created: bool = False) -> None:
        if sender.closed or sender.full in room.by_full:
            return
        taken = room.occupants.get(nick)
        if taken is not None and taken.bare != sender.bare:  # taken while the history was read
            self._refuse(stanza, sender, "conflict", "That nickname is in use in this room")
            return
        occupant = taken or Occupant(nick, sender.bare)
        occupant.presence = shown(stanza)
        occupant.sessions[sender.full] = sender
        room.by_full[sender.full] = occupant
        room.occupants[nick] = occupant
        self._share(sender, room.jid, nick)
        # §7.2.3: everyone else's presence first, then the newcomer's own, to everyone (a large room:
        # the moderators' only, and the newcomer's to nobody but itself)
        current = [(None, Addressed(self._presence_of(room, other))) for other in self.told_of(room)
                   if other is not occupant]
        if current:
            self.router.deliver_presences(sender, current)
        if taken is None and not self.broadcasts(room, occupant):
            pass  # a participant of a large room comes in quietly
        elif taken is None:
            others = [s for s in room.sessions() if s is not sender]
            self.router.deliver_presence(Addressed(self._presence_of(room, occupant)), None, others)
        else:
            occupant_sessions = [s for s in occupant.sessions.values() if s is not sender]
            self.router.deliver_presence(Addressed(self._presence_of(room, occupant, 110)), None, occupant_sessions)
        self._send(sender, self._presence_of(room, occupant, 110, 100, 170, *((201,) if created else ())))
        self._history(room, sender, muc)
        subject = Element((CLIENT_NS, "message"))
        subject["from"] = f"{room.jid}/{room.subject[1]}" if room.subject[1] else room.jid
        subject["type"] = "groupchat"
        subject.addElement("subject", content=room.subject[0])
        self._send(sender, subject)

    def _history(self, room: Room, sender: Session, muc: domish.Element | None) -> None:
        """§7.2.15: the recent messages, each with its delay, as the newcomer asked."""
        wanted = next(muc.elements(MUC_NS, "history"), None) if muc is not None else None
        entries = list(room.recent)
        if wanted is not None:
            try:
                if wanted.hasAttribute("since"):
                    since = parse_stamp(wanted["since"])
                    entries = [e for e in entries if e[0] >= since]
                if wanted.hasAttribute("seconds"):
                    since = self.router.clock.seconds() - int(wanted["seconds"])
                    entries = [e for e in entries if e[0] >= since]
                if wanted.hasAttribute("maxstanzas"):
                    count = max(0, int(wanted["maxstanzas"]))
                    entries = entries[len(entries) - count:] if count else []
                if wanted.hasAttribute("maxchars"):
                    budget, kept = int(wanted["maxchars"]), []
                    for entry in reversed(entries):
                        budget -= len(entry[1])
                        if budget < 0:
                            break
                        kept.append(entry)
                    entries = kept[::-1]
            except ValueError:
                pass  # a request that does not parse gets the default history
        for at, text in entries:
            try:
                message = parse_document(text.encode("utf-8"), self.max_size)
            except StreamError:
                continue
            delay = message.addElement((DELAY_NS, "delay"))
            delay["from"], delay["stamp"] = room.jid, stamp(at)
            self._send(sender, message)

    def _rename(self, room: Room, occupant: Occupant, sender: Session, nick: str, stanza: domish.Element) -> None:
        """§7.6: unavailable from the old nickname with status 303, then available from the new one."""
        gone = self._presence_of(room, occupant, 303, kind="unavailable", new_nick=nick)
        self._tell_room(room, gone, occupant)
        del room.occupants[occupant.nick]
        occupant.nick = nick
        occupant.presence = shown(stanza)
        room.occupants[nick] = occupant
        self._broadcast(room, occupant)

    def _broadcast(self, room: Room, occupant: Occupant) -> None:
        self._tell_room(room, self._presence_of(room, occupant), occupant)

    def _tell_room(self, room: Room, presence: domish.Element, occupant: Occupant) -> None:
        """*presence* of *occupant* to everyone in the room, its own sessions with status 110."""
        if self.broadcasts(room, occupant):
            others = [s for s in room.sessions() if s.full not in occupant.sessions]
            self.router.deliver_presence(Addressed(presence), None, others)
        own = copy_element(presence)
        next(own.elements(USER_NS, "x")).addElement("status")["code"] = "110"
        self.router.deliver_presence(Addressed(own), None, list(occupant.sessions.values()))

    def leave(self, room: Room, session: Session, *codes: int, destroy: domish.Element | None = None,
              ending: bool = False) -> None:
        """§7.14: *session* leaves; the others see the occupant go once its last session has."""
        occupant = room.by_full.pop(session.full, None)
        if occupant is None:
            return
        occupant.sessions.pop(session.full, None)
        if not ending:
            self._share(session, room.jid, None)
        gone = self._presence_of(room, occupant, *codes, kind="unavailable")
        if destroy is not None:
            next(gone.elements(USER_NS, "x")).addChild(destroy)
        if not occupant.sessions and not occupant.remote:
            told = self.broadcasts(room, occupant)
            del room.occupants[occupant.nick]
            if told:
                self.router.deliver_presence(Addressed(gone), None, list(room.sessions()))
        if not any(room.sessions()):
            room.forget_history()
        own = copy_element(gone)
        next(own.elements(USER_NS, "x")).addElement("status")["code"] = "110"
        if not session.closed:
            self._send(session, own)

    def _presence_of(self, room: Room, occupant: Occupant, *codes: int, kind: str | None = None,
                     new_nick: str | None = None) -> domish.Element:
        """The room's presence for *occupant* (§7.2.3): from room/nick, with its muc#user item."""
        presence = Element((CLIENT_NS, "presence"))
        presence["from"] = f"{room.jid}/{occupant.nick}"
        if kind is not None:
            presence["type"] = kind
        elif occupant.presence is not None:
            for child in occupant.presence.children:
                presence.addChild(copy_element(child) if isinstance(child, domish.Element) else child)
        x = presence.addElement((USER_NS, "x"))
        item = x.addElement("item")
        affiliation = self.affiliation(room, occupant.bare)
        item["affiliation"] = affiliation
        item["role"] = "none" if kind == "unavailable" else "moderator" if affiliation == "owner" else "participant"
        item["jid"] = occupant.jid()  # non-anonymous (§7.2.4)
        if new_nick is not None:
            item["nick"] = new_nick
        for code in codes:
            x.addElement("status")["code"] = str(code)
        return presence

    def _send(self, session: Session, stanza: domish.Element) -> None:
        stanza["to"] = session.full
        session.send(stanza)

    def session_gone(self, session: Session) -> None:
        for jid in list(joined(session)):
            room = self.rooms.get(jid)
            if room is not None:
                self.leave(room, session, ending=True)

    def presence_changed(self, session: Session, was_available: bool) -> None:
        """RFC 6121 §4.6.3: unavailable to the server is unavailable to the rooms too."""
        if was_available and not session.available:
            for jid in list(joined(session)):
                room = self.rooms.get(jid)
                if room is not None:
                    self.leave(room, session)

    def _share(self, session: Session, room: str, nick: str | None) -> None:
        """Which rooms *session* is in, under which nickname, as other nodes mirror it
        (``Session.state``, a :data:`~chatgate.session.SHARED_STATE` key)."""
        rooms = dict(joined(session))
        if nick is None:
            rooms.pop(room, None)
        else:
            rooms[room] = nick
        session.state[SERVICE] = rooms
        self.router.session_changed(session)

    # -- the cluster: occupants on other nodes, messages they send

    def remote_presence(self, remote: Session, stanza: domish.Element, was_available: bool) -> None:
        self._mirror(remote, presence_changed=True)

    def remote_state(self, remote: Session) -> None:
        self._mirror(remote, presence_changed=False)

    def _mirror(self, remote: Session, presence_changed: bool) -> None:
        """Another node's session entered, left or changed in rooms (its shared state and
        presence, mirrored by the cluster): this node tells its own occupants. A node that
        died tells nobody: its sessions go, and every node sees them leave here."""
        gone = self.router.resources(remote.bare).get(remote.jid.resource or "") is not remote
        now = {} if gone or not remote.available else dict(joined(remote))
        before = self._remote_in.pop(remote.full, {})
        if now:
            self._remote_in[remote.full] = now
        for jid, nick in before.items():
            if now.get(jid) != nick:
                room = self.rooms.get(jid)
                if room is not None:
                    self._remote_left(room, remote, nick)
        for jid, nick in now.items():
            if before.get(jid) == nick and not presence_changed:
                continue
            room = self.room(jid_of_room(jid))
            if room is not None and room.domain == remote.domain:
                self._remote_entered(room, remote, nick)

    def _remote_entered(self, room: Room, remote: Session, nick: str) -> None:
        occupant = room.occupants.get(nick)
        if occupant is not None and occupant.bare != remote.bare:
            log.warn("room {room}: {jid} took the nickname {nick} on another node, in use here",
                     room=room.jid, jid=remote.full, nick=nick)
            return
        if occupant is None:
            occupant = room.occupants[nick] = Occupant(nick, remote.bare)
        occupant.remote[remote.full] = remote
        if not occupant.sessions:
            occupant.presence = shown(remote.presence) if remote.presence is not None else None
        if self.broadcasts(room, occupant):
            self.router.deliver_presence(Addressed(self._presence_of(room, occupant)), None,
                                         [s for s in room.sessions() if s.full not in occupant.sessions])

    def _remote_left(self, room: Room, remote: Session, nick: str) -> None:
        occupant = room.occupants.get(nick)
        if occupant is None or occupant.remote.pop(remote.full, None) is None:
            return
        if not occupant.sessions and not occupant.remote:
            told = self.broadcasts(room, occupant)
            del room.occupants[nick]
            if told:
                gone = self._presence_of(room, occupant, kind="unavailable")
                self.router.deliver_presence(Addressed(gone), None, list(room.sessions()))

