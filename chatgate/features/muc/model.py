"""What a team room is made of: namespaces, limits, the room and its occupants."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.session import Session
from chatgate.stanza import StanzaError, iq_result
from chatgate.xml import CLIENT_NS, Element, copy_element

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



def joined(session: Session) -> dict[str, str]:
    """The rooms *session* is in: room JID -> its nickname there."""
    joined = session.state.get(SERVICE)
    return joined if isinstance(joined, dict) else {}


def jid_of_room(jid: str) -> JID:
    localpart, _, host = jid.partition("@")
    return JID(tuple=(localpart, host, None))


def shown(stanza: domish.Element) -> domish.Element:
    """What of an occupant's presence others see: everything but the MUC join element."""
    kept = Element((CLIENT_NS, "presence"))
    for child in stanza.children:
        if isinstance(child, domish.Element) and child.uri in (MUC_NS, USER_NS):
            continue
        if isinstance(child, domish.Element):
            kept.addChild(copy_element(child))
    return kept


def disco_reply(stanza: domish.Element, ns: str) -> tuple[domish.Element, domish.Element]:
    if stanza.firstChildElement().getAttribute("node"):
        raise StanzaError("item-not-found")
    reply = iq_result(stanza)
    return reply, reply.addElement((ns, "query"))


