"""Team rooms: Multi-User Chat (XEP-0045) at ``conference.<domain>``, following the mail directory.

Each hosted domain has its room service at ``<[muc] subdomain>.<domain>``
(``Router.subdomains``: sealed like the domain, so only its own users reach
it). Its rooms are not made by hand; they follow the directory:

- the **domain room** (``[muc] domain_room``, default ``everyone``; empty:
  none) whose members are every user of the domain;
- a **room per mail alias** (``[muc] alias_rooms``), named like the alias
  (``salesteam@conference.example.com``), whose members are the alias's.

Rooms are members-only and non-anonymous (everyone in them is a contact of
the same domain, with their address shown) and persistent. When the
directory changes, the rooms follow at once: a removed user, or a member
taken off an alias, leaves its rooms with status 321 (§9.4, affiliation
change); a removed alias's room is destroyed (§10.9). An administrator
closes or names a room with a record in the directory (``RoomRecord``).

Users make rooms of their own too (§10.1): entering a free name makes an
instant room whose maker is its owner (status 201), kept as a record in the
directory with its owners and members. Its owners name it (§10.2, the
``muc#roomconfig`` form), make and unmake owners and members (§9.3-§10.7,
``muc#admin``; a member taken off leaves with 321), kick (§8.2, 307) and
destroy it (§10.9); any occupant invites users of the domain (§7.8.2,
mediated: the invitee becomes a member). XEP-0249 direct invitations are
messages between users and pass like any other.

Implemented: §6 discovery (the service's info and its items: the rooms the
asking user may join; a room's info with ``muc#roominfo``); §7.2 entering
(members-only: ``registration-required``; nickname conflicts: ``conflict``;
the occupants' presence, the newcomer's own with statuses 110, 100 and 170,
history as §7.2.15 with ``<history maxstanzas maxchars seconds since/>``,
then the subject, §7.2.16); §7.3 presence updates; §7.4 messages to
everyone (reflected to the sender too); §7.5 private messages; §7.6 nickname
changes (status 303); §7.14 leaving, also when the session ends or goes
unavailable; §8.1 the subject, which any member may set. One nickname may be
used by several resources of the same user (they share the occupant).
XEP-0410: a ping to one's own occupant JID answers whether one is in the room.

**History** (XEP-0313 §5.1.2): every groupchat message is archived once, in
the room's archive (owner = the room's JID, the nickname as resource), with
a ``<stanza-id by='room'/>``; MAM on the room's JID is open to its members
(``Router.archive_readers``). Write-ahead as for one-to-one chat: a message
goes out to the occupants once the archive has it. Each room keeps its last
``[muc] history`` messages in memory, read from the archive when the room is
first entered, for joining; the subject is found among its last
:data:`SUBJECT_SCAN` archived entries.

**Large rooms**: a message is serialized once per transport and each copy
only gets its ``to`` spliced in (:class:`~chatgate.session.Addressed`).

**In a cluster** a room is no process's: every node knows every occupant.
Which rooms a session is in (room -> nickname) is part of its shared state
(``Session.state``, :data:`~chatgate.session.SHARED_STATE`), mirrored by
the cluster with its presence; each node tells its own occupants when
another node's session enters, leaves or changes presence (``remote-state``,
``remote-presence``), and when a node dies its sessions go from every
mirror, so the others see its occupants leave and stay in. A message is
archived by the sender's node (the archive is shared), which then tells
each other node of the domain once (``Cluster.tell``); each node fans it out
to its own occupants. An occupant on another node is shown with its
presence to the server, not what it sent the room alone.

Not yet: bookmarks (XEP-0402, which needs PEP), voice and moderation of
messages, other configuration than the name.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from chatgate import events
from chatgate.config import Settings
from chatgate.jid import jid_of
from chatgate.router import Router
from chatgate.session import Addressed, Session
from chatgate.stanza import (
    DELAY_NS,
    SID_NS,
    StanzaError,
    body_of,
    error_reply,
    iq_result,
    parse_stamp,
    stamp,
)
from chatgate.storage import Stores
from chatgate.storage.archive import ArchiveIds
from chatgate.storage.interfaces import (
    Alias,
    ArchivedMessage,
    ArchiveQuery,
    Change,
    IArchive,
    IDirectory,
    RoomRecord,
    User,
)
from chatgate.xml import CLIENT_NS, Element, StreamError, copy_element, parse_document, serialize

MUC_NS = "http://jabber.org/protocol/muc"
USER_NS = MUC_NS + "#user"
OWNER_NS = MUC_NS + "#owner"
ADMIN_NS = MUC_NS + "#admin"
CONFIG_FORM = MUC_NS + "#roomconfig"
INFO_NS = "http://jabber.org/protocol/disco#info"
ITEMS_NS = "http://jabber.org/protocol/disco#items"
PING_NS = "urn:xmpp:ping"
XDATA_NS = "jabber:x:data"
MAM_NS = "urn:xmpp:mam:2"
#: the name in dispatch keys of the service at [muc] subdomain (Router.subdomains)
SERVICE = "muc"
#: archived entries read back, when a room is first entered, to find its subject
SUBJECT_SCAN = 200
#: longest subject and nickname, in characters
MAX_SUBJECT = 1024
MAX_NICK = 64

log = Logger()


@dataclass(eq=False)
class Occupant:
    """One nickname in a room: a user, with one or more of their resources."""

    nick: str
    bare: str
    #: full JID -> this node's session in the room under this nickname
    sessions: dict[str, Session] = field(default_factory=dict)
    #: full JID -> another node's session in the room under it (from the cluster's mirror)
    remote: dict[str, Session] = field(default_factory=dict)
    #: the presence last sent to the room (its show, status, caps: what others see)
    presence: domish.Element | None = None

    def jid(self) -> str:
        """A full JID it is in the room with (non-anonymous rooms show it, §7.2.4)."""
        return next(iter(self.sessions), None) or next(iter(self.remote), self.bare)


@dataclass(eq=False)
class Room:
    jid: str
    localpart: str
    domain: str
    name: str
    #: an alias's localpart for an alias room; None for the domain room and a room a user made
    alias: str | None
    #: made by a user (§10.1): its owners and members are its record's
    made: bool = False
    occupants: dict[str, Occupant] = field(default_factory=dict)
    #: full JID -> its occupant
    by_full: dict[str, Occupant] = field(default_factory=dict)
    #: the last messages, oldest first: (when, the stanza as archived)
    recent: deque[tuple[float, str]] = field(default_factory=deque)
    #: (text, the nickname that set it)
    subject: tuple[str, str] = ("", "")
    #: fires once history and subject are read from the archive
    loaded: defer.Deferred[None] | None = None
    #: the last message's write: messages go out in the order they came
    last_write: defer.Deferred[Any] | None = None

    def sessions(self) -> Iterator[Session]:
        """This node's sessions in the room."""
        for occupant in self.occupants.values():
            yield from occupant.sessions.values()

    def forget_history(self) -> None:
        """Nobody here is in the room: what other nodes say of it stops reaching this node,
        so history is read again from the archive at the next entry."""
        self.recent.clear()
        self.loaded = None


class Rooms:
    """The room services of every hosted domain."""

    def __init__(self, router: Router, archive: IArchive, directory: IDirectory, settings: Settings) -> None:
        self.router = router
        self.domains = router.domains
        self.archive = archive
        self.directory = directory
        #: (domain, room) -> the record this node wrote last, until the mirror has it
        self._written: dict[tuple[str, str], RoomRecord] = {}
        #: (domain, room) of the records this node removed, until the mirror has seen it
        self._gone: set[tuple[str, str]] = set()
        m = settings.muc
        self.subdomain = m.subdomain
        self.domain_room = m.domain_room
        self.alias_rooms = m.alias_rooms
        self.history = m.history
        self.max_size = settings.limits.max_stanza_size + 4096
        self.ids = ArchiveIds()
        #: room JID -> the room, once somebody used it
        self.rooms: dict[str, Room] = {}
        #: another node's session -> the rooms it is in and its nickname there, as last mirrored
        self._remote_in: dict[str, dict[str, str]] = {}

    # -- which rooms there are, and who belongs

    def service(self, domain: str) -> str:
        return f"{self.subdomain}.{domain}"

    def room(self, jid: JID) -> Room | None:
        """The room at *jid* (its bare part), if the directory has it."""
        bare = jid.userhost()
        room = self.rooms.get(bare)
        if room is not None:
            return room
        domain = jid.host.partition(".")[2]
        localpart = jid.user or ""
        if not self.domains.is_hosted(domain):
            return None
        record = self.record(domain, localpart)
        if record is not None and not record.enabled:
            return None
        if localpart == self.domain_room:
            room = Room(bare, localpart, domain, f"Everyone at {domain}", None)
        elif self.alias_rooms and (alias := self.domains.alias(domain, localpart)) is not None:
            room = Room(bare, localpart, domain, alias.display_name, localpart)
        elif record is not None and record.made:
            room = Room(bare, localpart, domain, localpart, None, made=True)
        else:
            return None
        room.name = record.name if record is not None and record.name else self._default_name(room)
        room.recent = deque(maxlen=self.history)
        self.rooms[bare] = room
        return room

    def _default_name(self, room: Room) -> str:
        """A room's name when nobody gave it one: the domain's, the alias's, its own."""
        if room.alias is not None:
            alias = self.domains.alias(room.domain, room.alias)
            return alias.display_name if alias is not None else room.localpart
        return room.localpart if room.made else f"Everyone at {room.domain}"

    def record(self, domain: str, localpart: str) -> RoomRecord | None:
        """A room's record: what this node wrote last, or what the directory has."""
        key = (domain, localpart)
        if key in self._gone:
            return None
        return self._written.get(key) or self.domains.room(domain, localpart)

    def affiliation(self, room: Room, bare: str) -> str:
        """§5.2: ``owner`` or ``member`` of a room a user made (its record), ``member`` of
        the directory's rooms (every user of the domain, or of the alias), else ``none``."""
        localpart, _, domain = bare.partition("@")
        if domain != room.domain or self.domains.user(domain, localpart) is None:
            return "none"
        if room.made:
            record = self.record(room.domain, room.localpart)
            if record is None:
                return "none"
            return "owner" if localpart in record.owners else "member" if localpart in record.members else "none"
        if room.alias is None:
            return "member"
        alias = self.domains.alias(domain, room.alias)
        return "member" if alias is not None and localpart in alias.members else "none"

    def is_member(self, room: Room, bare: str) -> bool:
        return self.affiliation(room, bare) != "none"

    def rooms_of(self, domain: str, localpart: str) -> list[tuple[str, str]]:
        """(room JID, name) of every room the user may enter."""
        service = self.service(domain)
        names = [self.domain_room] if self.domain_room else []
        if self.alias_rooms:
            names += [name for name in sorted(self.domains.aliases_of(domain, localpart)) if name != self.domain_room]
        made = {r.localpart: r for r in self.domains.rooms(domain) if r.made}
        made.update((lp, r) for (d, lp), r in self._written.items() if d == domain and r.made)
        names += sorted(lp for lp, r in made.items() if localpart in r.owners or localpart in r.members)
        found = []
        for name in names:
            room = self.room(JID(tuple=(name, service, None)))
            if room is not None:
                found.append((room.jid, room.name))
        return found

    def may_read(self, session: Session, owner: str) -> bool:
        """MAM on a room: its members (XEP-0313 §5.1.2)."""
        localpart, _, host = owner.partition("@")
        if host != self.service(session.domain):
            return False
        room = self.room(JID(tuple=(localpart, host, None)))
        return room is not None and self.is_member(room, session.bare)

    def _entered(self, to: JID, sender: Session) -> Room:
        room = self.room(to)
        if room is None:
            raise StanzaError("item-not-found", "No such room")
        if not self.is_member(room, sender.bare):
            raise StanzaError("registration-required", "Only members of this room may enter it")
        return room

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

    def _presence(self, stanza: domish.Element, sender: Session, to: JID) -> Any:
        ptype = stanza.getAttribute("type")
        if ptype == "unavailable":
            room = self.rooms.get(to.userhost())
            if room is not None and sender.full in room.by_full:
                self.leave(room, sender)
            return None
        if ptype is not None:
            return None  # subscriptions and probes mean nothing to a room; errors neither
        if self.room(to) is None:
            return self._create(stanza, sender, to)
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
                occupant.presence = _shown(stanza)
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
        record = RoomRecord(domain, localpart, "", True, True, (sender.jid.user or "",))
        written = self._write_record(record)
        history = next(stanza.elements(MUC_NS, "x"), None)

        def made(_: object) -> Any:
            room = self.room(to)
            if room is None:
                return None
            room.loaded = defer.succeed(None)  # a new room: no history to read
            return self._enter(room, sender, to.resource or "", stanza, history, created=True)

        return written.addCallback(made)

    def _write_record(self, record: RoomRecord) -> defer.Deferred[None]:
        record = record.normalized()
        self._written[(record.domain, record.localpart)] = record
        self._gone.discard((record.domain, record.localpart))
        return self.directory.put_room(record)

    def _enter(self, room: Room, sender: Session, nick: str, stanza: domish.Element,
               muc: domish.Element | None, created: bool = False) -> None:
        if sender.closed or sender.full in room.by_full:
            return
        taken = room.occupants.get(nick)
        if taken is not None and taken.bare != sender.bare:  # taken while the history was read
            self._refuse(stanza, sender, "conflict", "That nickname is in use in this room")
            return
        occupant = taken or Occupant(nick, sender.bare)
        occupant.presence = _shown(stanza)
        occupant.sessions[sender.full] = sender
        room.by_full[sender.full] = occupant
        room.occupants[nick] = occupant
        self._share(sender, room.jid, nick)
        # §7.2.3: everyone else's presence first, then the newcomer's own, to everyone
        current = [(None, Addressed(self._presence_of(room, other))) for other in room.occupants.values()
                   if other is not occupant]
        if current:
            self.router.deliver_presences(sender, current)
        if taken is None:
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
        occupant.presence = _shown(stanza)
        room.occupants[nick] = occupant
        self._broadcast(room, occupant)

    def _broadcast(self, room: Room, occupant: Occupant) -> None:
        self._tell_room(room, self._presence_of(room, occupant), occupant)

    def _tell_room(self, room: Room, presence: domish.Element, occupant: Occupant) -> None:
        """*presence* of *occupant* to everyone in the room, its own sessions with status 110."""
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
            del room.occupants[occupant.nick]
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
        for jid in list(_joined(session)):
            room = self.rooms.get(jid)
            if room is not None:
                self.leave(room, session, ending=True)

    def presence_changed(self, session: Session, was_available: bool) -> None:
        """RFC 6121 §4.6.3: unavailable to the server is unavailable to the rooms too."""
        if was_available and not session.available:
            for jid in list(_joined(session)):
                room = self.rooms.get(jid)
                if room is not None:
                    self.leave(room, session)

    def _share(self, session: Session, room: str, nick: str | None) -> None:
        """Which rooms *session* is in, under which nickname, as other nodes mirror it
        (``Session.state``, a :data:`~chatgate.session.SHARED_STATE` key)."""
        joined = dict(_joined(session))
        if nick is None:
            joined.pop(room, None)
        else:
            joined[room] = nick
        session.state[SERVICE] = joined
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
        now = {} if gone or not remote.available else dict(_joined(remote))
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
            occupant.presence = _shown(remote.presence) if remote.presence is not None else None
        self.router.deliver_presence(Addressed(self._presence_of(room, occupant)), None,
                                     [s for s in room.sessions() if s.full not in occupant.sessions])

    def _remote_left(self, room: Room, remote: Session, nick: str) -> None:
        occupant = room.occupants.get(nick)
        if occupant is None or occupant.remote.pop(remote.full, None) is None:
            return
        if not occupant.sessions and not occupant.remote:
            del room.occupants[nick]
            gone = self._presence_of(room, occupant, kind="unavailable")
            self.router.deliver_presence(Addressed(gone), None, list(room.sessions()))

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
        outgoing.children = [c for c in outgoing.children
                             if not (isinstance(c, domish.Element) and c.uri == SID_NS and c.name == "stanza-id")]
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
        for full in list(target.sessions):
            copy = copy_element(stanza)
            copy["from"], copy["to"] = f"{room.jid}/{occupant.nick}", full
            copy.addElement((USER_NS, "x"))
            self.router.deliver_message(copy, None, JID(full))

    # -- invitations, owners and members of a room a user made

    def _invite(self, room: Room, occupant: Occupant, sender: Session, x: domish.Element) -> Any:
        """§7.8.2: an occupant invites users of the domain; in a room a user made, an
        invitee becomes a member (members-only: or they could not enter)."""
        invitees = []
        for invite in x.elements(USER_NS, "invite"):
            try:
                jid = jid_of(invite.getAttribute("to", ""))
            except InvalidFormat:
                raise StanzaError("jid-malformed", "An invitation names an address") from None
            if jid.host != room.domain or self.domains.user(jid.host, jid.user) is None:
                raise StanzaError("item-not-found", f"{jid.userhost()} is no user of {room.domain}")
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
            try:
                jid = jid_of(item.getAttribute("jid", ""))
            except InvalidFormat:
                raise StanzaError("jid-malformed", "An item names an address") from None
            if jid.host != room.domain or self.domains.user(jid.host, jid.user) is None:
                raise StanzaError("not-acceptable", f"{jid.userhost()} is no user of {room.domain}")
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

    # -- discovery and self-ping

    def service_info(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        reply, query = _disco(stanza, INFO_NS)
        identity = query.addElement("identity")
        identity["category"], identity["type"], identity["name"] = "conference", "text", "Team rooms"
        for var in (INFO_NS, ITEMS_NS, MUC_NS):
            query.addElement("feature")["var"] = var
        sender.send(reply)

    def service_items(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        reply, query = _disco(stanza, ITEMS_NS)
        for jid, name in self.rooms_of(sender.domain, sender.jid.user or ""):
            item = query.addElement("item")
            item["jid"], item["name"] = jid, name
        sender.send(reply)

    def room_info(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        room = self.room(to)
        if room is None:
            raise StanzaError("item-not-found", "No such room")
        reply, query = _disco(stanza, INFO_NS)
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
        if self.room(to) is None:
            raise StanzaError("item-not-found", "No such room")
        sender.send(_disco(stanza, ITEMS_NS)[0])  # occupants are not listed (§6.5)

    def self_ping(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """XEP-0410 §3: answered for the occupant itself; not-acceptable when it is not in the room."""
        room = self.rooms.get(to.userhost())
        occupant = room.by_full.get(sender.full) if room is not None else None
        if occupant is None or occupant.nick != to.resource:
            raise StanzaError("not-acceptable", "Not in this room under that nickname")
        sender.send(iq_result(stanza))

    # -- the directory changes

    def directory_changed(self, change: Change, subject: User | Alias | RoomRecord | None) -> None:
        if change.kind in ("room-changed", "room-removed"):
            key = (change.domain, change.localpart or "")
            if change.kind == "room-removed":
                self._gone.discard(key)  # the mirror has seen it go
            elif self._written.get(key) == subject:
                del self._written[key]  # the mirror has what this node wrote
            room = self.rooms.get(f"{change.localpart}@{self.service(change.domain)}")
            record = self.record(*key)  # the latest, whatever order the changes came in
            if room is None:
                return
            if record is not None and not record.enabled:
                self._destroy(room, "An administrator closed this room")
            elif record is None and room.made:
                self._destroy(room, "The room's owner destroyed it")
            elif record is not None:
                room.name = record.name or self._default_name(room)
                if room.made:
                    self._members_changed(room)
            return
        if change.kind in ("user-removed", "alias-changed"):
            for room in [r for r in self.rooms.values() if r.domain == change.domain]:
                self._members_changed(room)
        elif change.kind == "alias-removed":
            room = self.rooms.get(f"{change.localpart}@{self.service(change.domain)}")
            if room is not None and room.alias is not None:  # (not the domain room named like it)
                self._destroy(room, "The mail alias of this room was removed")

    def _destroy(self, room: Room, reason: str) -> None:
        """§10.9: everyone here leaves with <destroy/>; the room is forgotten (its archive stays)."""
        self.rooms.pop(room.jid, None)
        destroy = Element((USER_NS, "destroy"))
        destroy.addElement("reason", content=reason)
        for session in list(room.sessions()):
            self.leave(room, session, destroy=destroy)


def _joined(session: Session) -> dict[str, str]:
    """The rooms *session* is in: room JID -> its nickname there."""
    joined = session.state.get(SERVICE)
    return joined if isinstance(joined, dict) else {}


def jid_of_room(jid: str) -> JID:
    localpart, _, host = jid.partition("@")
    return JID(tuple=(localpart, host, None))


def _shown(stanza: domish.Element) -> domish.Element:
    """What of an occupant's presence others see: everything but the MUC join element."""
    kept = Element((CLIENT_NS, "presence"))
    for child in stanza.children:
        if isinstance(child, domish.Element) and child.uri in (MUC_NS, USER_NS):
            continue
        if isinstance(child, domish.Element):
            kept.addChild(copy_element(child))
    return kept


def _disco(stanza: domish.Element, ns: str) -> tuple[domish.Element, domish.Element]:
    if stanza.firstChildElement().getAttribute("node"):
        raise StanzaError("item-not-found")
    reply = iq_result(stanza)
    return reply, reply.addElement((ns, "query"))


def register(router: Router, settings: Settings, stores: Stores) -> None:
    if not settings.muc.enabled:
        return
    rooms = Rooms(router, stores.archive, stores.directory, settings)
    router.subdomains[settings.muc.subdomain] = SERVICE
    router.archive_readers.append(rooms.may_read)
    router.handle(f"presence/{SERVICE}-full", rooms.presence)
    router.handle(f"message/{SERVICE}-bare", rooms.message)
    router.handle(f"message/{SERVICE}-full", rooms.private)
    router.handle(f"iq-get/{SERVICE}-host/{INFO_NS}:query", rooms.service_info)
    router.handle(f"iq-get/{SERVICE}-host/{ITEMS_NS}:query", rooms.service_items)
    router.handle(f"iq-get/{SERVICE}-bare/{INFO_NS}:query", rooms.room_info)
    router.handle(f"iq-get/{SERVICE}-bare/{ITEMS_NS}:query", rooms.room_items)
    router.handle(f"iq-get/{SERVICE}-full/{PING_NS}:ping", rooms.self_ping)
    router.handle(f"iq-get/{SERVICE}-bare/{OWNER_NS}:query", rooms.owner_get)
    router.handle(f"iq-set/{SERVICE}-bare/{OWNER_NS}:query", rooms.owner_set)
    router.handle(f"iq-get/{SERVICE}-bare/{ADMIN_NS}:query", rooms.admin_get)
    router.handle(f"iq-set/{SERVICE}-bare/{ADMIN_NS}:query", rooms.admin_set)
    router.listen(events.SESSION_ENDED, rooms.session_gone)
    router.listen(events.PRESENCE_CHANGED, rooms.presence_changed)
    router.listen(events.REMOTE_PRESENCE, rooms.remote_presence)
    router.listen(events.REMOTE_STATE, rooms.remote_state)
    router.cluster.hear(SERVICE, rooms.heard)
    router.domains.listen(rooms.directory_changed)

