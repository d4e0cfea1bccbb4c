"""Which rooms there are and who belongs (XEP-0045 §5.2 affiliations): the directory's
rooms, the records administrators and users keep, and the directory's changes."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID

from chatgate.config import Settings
from chatgate.features.muc.model import USER_NS, Occupant, Room
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import StanzaError
from chatgate.storage.archive import ArchiveIds
from chatgate.storage.interfaces import Alias, Change, IArchive, IDirectory, RoomRecord, User
from chatgate.xml import Element


class RoomDirectory:
    """The room services of every hosted domain: which rooms there are, who belongs,
    and what the directory changes; the other parts of the feature build on it."""

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
        self.large_room = m.large_room
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

    def broadcasts(self, room: Room, occupant: Occupant) -> bool:
        """Whether everyone in *room* is told of *occupant*'s comings, goings and changes:
        always in a room of at most ``[muc] large_room`` occupants, only a moderator's in a
        larger one (presence broadcast by role, ``muc#roomconfig_presencebroadcast``)."""
        return (not self.large_room or len(room.occupants) <= self.large_room
                or self.affiliation(room, occupant.bare) == "owner")

    def told_of(self, room: Room) -> Iterable[Occupant]:
        """The occupants :meth:`broadcasts` is true of, without asking it of every occupant
        of a large room: there only owners are told of, and only a room a user made has any."""
        if not self.large_room or len(room.occupants) <= self.large_room:
            return room.occupants.values()
        if not room.made:
            return ()
        return [o for o in room.occupants.values() if self.affiliation(room, o.bare) == "owner"]

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

    def may_read(self, reader: str, owner: str) -> bool:
        """A room's archive (MAM, XEP-0313 §5.1.2; the webmail's history): its members'."""
        localpart, _, host = owner.partition("@")
        if host != self.service(reader.partition("@")[2]):
            return False
        room = self.room(JID(tuple=(localpart, host, None)))
        return room is not None and self.is_member(room, reader)

    def _entered(self, to: JID, sender: Session) -> Room:
        room = self.room(to)
        if room is None:
            raise StanzaError("item-not-found", "No such room")
        if not self.is_member(room, sender.bare):
            raise StanzaError("registration-required", "Only members of this room may enter it")
        return room

    def _write_record(self, record: RoomRecord) -> defer.Deferred[None]:
        record = record.normalized()
        self._written[(record.domain, record.localpart)] = record
        self._gone.discard((record.domain, record.localpart))
        return self.directory.put_room(record)

    # -- the directory changes

    def directory_changed(self, change: Change, subject: User | Alias | RoomRecord | None) -> None:
        if change.kind in ("room-changed", "room-removed"):
            key = (change.domain, change.localpart or "")
            if change.kind == "room-removed":
                self._gone.discard(key)  # the mirror has seen it go
            # the mirror is as new as this change: what this node wrote or read is its own again
            # (at worst a moment older, until this node's own write comes back through the feed)
            self._written.pop(key, None)
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


