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
only gets its ``to`` spliced in (:class:`~chatgate.session.Addressed`). In a
room of more than ``[muc] large_room`` occupants (500) only the owners'
comings, goings and changes are told to everyone (presence broadcast by
role), so an entry costs a few stanzas, not one per occupant; who is in the
room is listed by disco#items on it (§6.5) to its members.

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

from chatgate import events
from chatgate.config import Settings
from chatgate.features.muc.discovery import Discovery
from chatgate.features.muc.model import ADMIN_NS, INFO_NS, ITEMS_NS, OWNER_NS, PING_NS, SERVICE
from chatgate.features.muc.occupants import Occupancy
from chatgate.features.muc.owners import Ownership
from chatgate.features.muc.talk import Talk
from chatgate.router import Router
from chatgate.storage import Stores


class Rooms(Occupancy, Talk, Ownership, Discovery):
    """The room service of every hosted domain, all its parts together."""


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


