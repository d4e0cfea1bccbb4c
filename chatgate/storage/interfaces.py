"""The store interfaces: everything chatgate keeps goes through these.

Backends (``memory``, ``sqlite``) implement them; nothing above ``storage/``
imports a backend directly except the composition root (``service.py``) and
the admin command, which pick one from the configuration.

All methods return Deferreds; blocking I/O never runs on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass, replace

from twisted.internet.defer import Deferred
from twisted.logger import Logger
from zope.interface import Interface

log = Logger()


class DirectoryError(Exception):
    """A directory operation was refused; the message is one line for a user."""


class UnknownDomain(DirectoryError):
    pass


class UnknownUser(DirectoryError):
    pass


class DuplicateDomain(DirectoryError):
    pass


class DuplicateUser(DirectoryError):
    """The address is taken, by a user or an alias."""


class UnknownAlias(DirectoryError):
    pass


class UnknownSite(DirectoryError):
    pass


@dataclass(frozen=True)
class Domain:
    name: str
    chat_enabled: bool = True


class _Address:
    """An address of a hosted domain with its name: what users and aliases share."""

    localpart: str
    domain: str
    name: str

    @property
    def jid(self) -> str:
        return f"{self.localpart}@{self.domain}"

    @property
    def display_name(self) -> str:
        return self.name or self.localpart


@dataclass(frozen=True)
class User(_Address):
    """A user of a hosted domain, with the directory's contact details."""

    localpart: str
    domain: str
    name: str = ""
    title: str = ""
    department: str = ""
    phone: str = ""


@dataclass(frozen=True)
class Alias(_Address):
    """A mail alias of a domain (salesteam@example.com), a contact reaching its members.

    Users and aliases share a domain's addresses: one name is one or the other.
    """

    localpart: str
    domain: str
    name: str = ""
    #: localparts of the member users, sorted
    members: tuple[str, ...] = ()


@dataclass(frozen=True)
class Site:
    """A private-label webmail site (its host name), owned by a reseller or a
    direct customer, which may hide the chat link from its users."""

    host: str
    owner: str = ""
    show_chat_link: bool = True


@dataclass(frozen=True)
class RoomRecord:
    """What the directory keeps of a team room (XEP-0045, ``features/muc/``).

    The domain room and the alias rooms exist by ``[muc]`` without a record;
    an administrator's record turns one off or names it. A room a user made
    (XEP-0045 §10.1) exists by its record alone, with its owners and members."""

    domain: str
    localpart: str
    name: str = ""
    enabled: bool = True
    #: made by a user, not by the directory
    made: bool = False
    #: localparts of its owners and of its other members (a made room's), sorted
    owners: tuple[str, ...] = ()
    members: tuple[str, ...] = ()

    def normalized(self) -> RoomRecord:
        """As the stores keep it: owners and members sorted, once each, an owner no member too."""
        owners = tuple(sorted(set(self.owners)))
        return replace(self, owners=owners, members=tuple(sorted(set(self.members) - set(owners))))


@dataclass(frozen=True)
class Hold:
    """A legal hold: a user's history (a whole domain's when ``localpart`` is empty) is
    kept from retention and from erasure, recorded with who set it and when."""

    domain: str
    localpart: str
    by: str
    at: float
    reason: str = ""

    @property
    def target(self) -> str:
        return f"{self.localpart}@{self.domain}" if self.localpart else self.domain


@dataclass(frozen=True)
class ScramKeys:
    """What SCRAM (RFC 5802 §3) needs to verify a password, never the password."""

    salt: bytes
    stored_key: bytes
    server_key: bytes
    iterations: int


#: mechanism name ("SCRAM-SHA-1", "SCRAM-SHA-256") -> its keys
Credentials = dict[str, ScramKeys]


@dataclass(frozen=True)
class Change:
    """One change to the directory, as told to watchers.

    kinds: ``domain-added``, ``domain-enabled``, ``domain-disabled``,
    ``user-added``, ``user-changed``, ``user-removed``,
    ``credentials-changed``, ``alias-added``, ``alias-changed`` (name or
    members, also when a member user is removed), ``alias-removed``,
    ``room-changed`` (a room's record, :class:`RoomRecord`), ``room-removed``,
    ``blocklist-changed`` (the user's XEP-0191 blocklist), ``pep-changed``
    (one of the user's PEP nodes, XEP-0163).
    ``localpart`` is None for domain changes.
    """

    kind: str
    domain: str
    localpart: str | None = None


DirectoryWatcher = Callable[[Change], None]


def tell_watchers(watchers: list[DirectoryWatcher], change: Change) -> None:
    """Call each watcher with *change*; one that fails is logged and the others are still told."""
    for watcher in list(watchers):
        try:
            watcher(change)
        except Exception:
            log.failure("directory watcher {watcher!r} failed on {change}", watcher=watcher, change=change)


class IDirectory(Interface):
    """Hosted domains, their users, credentials, vCards and blocklists.

    Every mutation is seen by every watcher of every process that shares the
    store, the mutating one included (for SQLite: at the next :meth:`poll`,
    which the service runs every ``[storage] poll_interval``).
    Lookups are case-sensitive: callers pass prepared (lower-case) names.
    """

    def start() -> Deferred[None]:
        """Open the store (create its schema when new); changes from now on are told."""

    def stop() -> Deferred[None]:
        """Close the store (call it once no :meth:`poll` is under way)."""

    def poll() -> Deferred[None]:
        """Read the change feed once: tell the watchers what any process changed
        since the last read. A store that tells its changes at once answers at once."""

    def watch(watcher: DirectoryWatcher) -> None:
        """Call *watcher* with each :class:`Change`, in order."""

    def domains() -> Deferred[list[Domain]]:
        """All hosted domains, sorted by name."""

    def add_domain(name: str) -> Deferred[Domain]:
        """Host a new domain (chat enabled). DuplicateDomain if it exists."""

    def set_chat_enabled(name: str, enabled: bool) -> Deferred[None]:
        """Turn a domain's chat on or off. UnknownDomain if absent."""

    def users(domain: str) -> Deferred[list[User]]:
        """The users of *domain*, sorted by localpart. UnknownDomain if absent."""

    def user(domain: str, localpart: str) -> Deferred[User | None]:
        """One user, or None."""

    def add_user(user: User, credentials: Credentials) -> Deferred[None]:
        """Add a user. UnknownDomain, DuplicateUser."""

    def update_user(user: User) -> Deferred[None]:
        """Replace a user's directory details. UnknownUser."""

    def remove_user(domain: str, localpart: str) -> Deferred[None]:
        """Remove a user and their credentials and vCard. UnknownUser."""

    def credentials(domain: str, localpart: str) -> Deferred[Credentials | None]:
        """The user's SCRAM keys by mechanism, or None for an unknown user."""

    def set_credentials(domain: str, localpart: str, credentials: Credentials) -> Deferred[None]:
        """Replace a user's credentials (a new password). UnknownUser."""

    def credentials_changed(domain: str, localpart: str) -> Deferred[float | None]:
        """When the user's credentials were last set (Unix time): the account
        made, or a new password; None for an unknown user. Login tokens from a
        sign-in until then are refused (:mod:`chatgate.auth.tokens`), so a new
        password, a removal or an address made again revokes them."""

    def vcard(domain: str, localpart: str) -> Deferred[str | None]:
        """The vCard XML the user stored, or None."""

    def set_vcard(domain: str, localpart: str, vcard: str) -> Deferred[None]:
        """Store the user's own vCard XML. UnknownUser."""

    def private_xml(domain: str, localpart: str, namespace: str) -> Deferred[str | None]:
        """The XML the user keeps under *namespace* (XEP-0049 private storage: the key is
        the root's namespace and name, ``{storage:bookmarks}storage``), or None."""

    def set_private_xml(domain: str, localpart: str, namespace: str, xml: str, limit: int) -> Deferred[bool]:
        """Keep *xml* under *namespace* for the user, replacing what was there; False
        (nothing kept) when it is a new key and *limit* are kept already. UnknownUser.
        Removing the user removes it."""

    def pep_nodes(domain: str, localpart: str) -> Deferred[dict[str, str]]:
        """The user's personal eventing nodes (XEP-0163): node name -> its record, text
        that chatgate.features.pep writes and reads (configuration and items)."""

    def set_pep_node(domain: str, localpart: str, node: str, record: str | None, max_nodes: int,
                     max_bytes: int) -> Deferred[bool]:
        """Write one node's record, or remove the node with None; False, and nothing
        written, when the user would then keep more than *max_nodes* nodes or more than
        *max_bytes* of records in all. Told as ``pep-changed``. UnknownUser. Removing the
        user removes their nodes."""

    def retention(domain: str) -> Deferred[int | None]:
        """Days of history *domain* keeps (0: always), or None: ``[archive] retention_days``."""

    def set_retention(domain: str, days: int | None) -> Deferred[None]:
        """Set (None: clear) *domain*'s own retention. UnknownDomain."""

    def holds(domain: str) -> Deferred[list[Hold]]:
        """The legal holds in *domain* (its own, localpart "", first), by localpart."""

    def put_hold(hold: Hold) -> Deferred[None]:
        """Set a legal hold (replacing one on the same target). UnknownDomain. It outlives
        the user: what it keeps of a removed user stays kept."""

    def remove_hold(domain: str, localpart: str) -> Deferred[bool]:
        """Lift a legal hold; False if there was none."""

    def secret(name: str) -> Deferred[bytes]:
        """A 32-byte server secret named *name*, made at first use and then kept."""

    def aliases(domain: str) -> Deferred[list[Alias]]:
        """The aliases of *domain*, sorted by localpart. UnknownDomain if absent."""

    def alias(domain: str, localpart: str) -> Deferred[Alias | None]:
        """One alias, or None."""

    def add_alias(alias: Alias) -> Deferred[None]:
        """Add an alias. UnknownDomain; DuplicateUser when the address is taken;
        UnknownUser when a member is not a user of the domain."""

    def set_alias(alias: Alias) -> Deferred[None]:
        """Replace an alias's name and members. UnknownAlias, UnknownUser."""

    def remove_alias(domain: str, localpart: str) -> Deferred[None]:
        """Remove an alias. UnknownAlias."""

    def rooms(domain: str) -> Deferred[list[RoomRecord]]:
        """The room records of *domain*, sorted by localpart. UnknownDomain if absent."""

    def put_room(room: RoomRecord) -> Deferred[None]:
        """Keep *room*'s record, replacing the one of its name (a ``room-changed``
        change). UnknownDomain."""

    def remove_room(domain: str, localpart: str) -> Deferred[None]:
        """Forget a room's record (a ``room-removed`` change; none when there was none)."""

    def sites() -> Deferred[list[Site]]:
        """Every private-label site, sorted by host."""

    def site(host: str) -> Deferred[Site | None]:
        """One site, or None."""

    def put_site(site: Site) -> Deferred[None]:
        """Add a site or replace its owner and chat-link setting."""

    def remove_site(host: str) -> Deferred[None]:
        """Remove a site. UnknownSite."""

    def blocklist(domain: str, localpart: str) -> Deferred[list[str]]:
        """The JIDs the user blocks (XEP-0191), sorted; [] for an unknown user."""

    def block(domain: str, localpart: str, jids: list[str]) -> Deferred[list[str]]:
        """Add prepared *jids* to the user's blocklist; the ones it did not hold
        yet, in the order given (a ``blocklist-changed`` change when any). UnknownUser."""

    def unblock(domain: str, localpart: str, jids: list[str] | None) -> Deferred[list[str]]:
        """Take *jids* off the user's blocklist, every one when None; the ones
        it held, sorted (a ``blocklist-changed`` change when any). UnknownUser."""


class ArchiveError(Exception):
    """A history store failed or refused; the message is one line for a log or a user."""


class UnknownMessage(ArchiveError):
    """An archive id a query names is not in the owner's archive (XEP-0313 §4.1.3: item-not-found)."""


class SearchUnavailable(ArchiveError):
    """This archive backend cannot search message text (XEP-0431)."""


class BadCursor(ArchiveError):
    """A paging cursor that is no message of the conversation it pages (a one-line message for a user)."""


@dataclass(frozen=True)
class ArchivedMessage:
    """One message in one user's archive (XEP-0313 §3).

    ``id`` is the archive's id for it, the XEP-0359 stanza-id the owner's
    clients saw (``by`` = the owner's bare JID). Ids made by
    :class:`chatgate.storage.archive.ArchiveIds` sort like the times they were
    made, so the id order is the archive's chronological order.
    """

    owner: str  # bare JID of the user whose archive this is
    id: str
    contact: str  # bare JID of the other party
    resource: str  # the other party's resource, "" when there was none
    outgoing: bool  # the owner sent it
    at: float  # when the server took it (POSIX seconds; the id's own time)
    body: str
    stanza: str  # the <message/> as delivered, serialized


@dataclass(frozen=True)
class ArchiveQuery:
    """What a MAM query (XEP-0313 §4) asks of one archive.

    The filters make the result set: ``contact`` (and ``resource`` for a full
    JID), ``start``/``end`` (inclusive, POSIX seconds), ``after_id``/
    ``before_id`` (exclusive bounds) and ``ids``. RSM (XEP-0059) picks one page
    of it: ``after`` (forward from an id), ``before`` (backward from an id;
    ``""`` is the last page), ``index`` (from a position), else the first page;
    ``max`` items at most. ``text`` (XEP-0431 full-text search) keeps the messages
    whose body has, for each of its words, a word starting with it, in any case
    and accents aside (:func:`chatgate.storage.archive.search_terms`); a backend
    that cannot search raises :class:`SearchUnavailable`.
    """

    contact: str | None = None
    text: str | None = None
    resource: str | None = None
    start: float | None = None
    end: float | None = None
    after_id: str | None = None
    before_id: str | None = None
    ids: tuple[str, ...] | None = None
    after: str | None = None
    before: str | None = None
    index: int | None = None
    max: int = 50


@dataclass(frozen=True)
class ArchivePage:
    """One page of a result set, in chronological order (XEP-0059 §2)."""

    messages: list[ArchivedMessage]
    count: int  # the whole result set's size
    first_index: int | None  # position of messages[0] in the result set; None when empty
    complete: bool  # no more items past this page in the paging direction (XEP-0313 <fin complete/>)


@dataclass(frozen=True)
class ArchiveContact:
    """Someone the owner exchanged messages with, and when last."""

    contact: str
    last_at: float


@dataclass(frozen=True)
class Conversation:
    """A run of messages with one contact without a silence longer than the gap."""

    id: str  # the id of its first message
    contact: str
    start: float
    end: float
    count: int
    preview: str  # the start of its first message's body


@dataclass(frozen=True)
class ConversationPage:
    """One page of a conversation, oldest first; its cursors are its messages' archive ids (XEP-0059 §2)."""

    contact: str
    start: float  # when the conversation's first message was sent
    messages: list[ArchivedMessage]
    earlier: bool  # the conversation has messages before this page
    later: bool  # and after it
    count: int | None = None  # the conversation's size, on the newest page (found by walking it to its end)


@dataclass(frozen=True)
class HistorySearch:
    """An administrator's search through the archives of a domain (not a user's own MAM query).

    ``hosts`` are the domains whose archives are searched: a mail domain and its
    room service (rooms are archived at their own JIDs). ``text`` keeps the
    messages with every one of its words as a word prefix, as XEP-0431 search
    does; ``owner`` keeps one archive (a user's or a room's), ``contact`` the
    messages with one party, ``start``/``end`` (inclusive, POSIX seconds) a
    time span. One of ``text`` and ``owner`` is needed: without either the search
    would read every archive of the hosts. Messages without text (receipts,
    markers) are never hits. ``before`` is the cursor of the page before
    (:attr:`HistoryHits.next`).
    """

    hosts: tuple[str, ...]
    text: str | None = None
    owner: str | None = None
    contact: str | None = None
    start: float | None = None
    end: float | None = None
    before: str | None = None
    max: int = 50


@dataclass(frozen=True)
class HistoryHits:
    """One page of a :class:`HistorySearch`, newest first. A message between two users of
    the searched hosts is in both parties' archives; it is a hit once, as its sender's
    copy (the recipient's when the sender's is gone: erased, or past its retention),
    unless the search is of one archive (``owner``)."""

    messages: list[ArchivedMessage]
    next: str | None  # the cursor of the next (older) page; None at the end


class IArchive(Interface):
    """Every user's message history (XEP-0313 user archives).

    Appends are acknowledged once durable as far as the backend goes (see
    each backend). A query sees every append made before it by this process.
    """

    def start() -> Deferred[None]:
        """Open the store (create its schema when new)."""

    def stop() -> Deferred[None]:
        """Write out whatever is pending, then close."""

    def append(messages: list[ArchivedMessage]) -> Deferred[None]:
        """Add messages (to one archive or several). Ids are unique per owner."""

    def remove(owner: str, ids: list[str]) -> Deferred[None]:
        """Take messages back out (a message refused after all). Unknown ids are ignored."""

    def query(owner: str, query: ArchiveQuery) -> Deferred[ArchivePage]:
        """One page of the owner's archive. UnknownMessage when an id the query
        names (after, before, after_id, before_id, ids) is not in the archive."""

    def contacts(owner: str) -> Deferred[list[ArchiveContact]]:
        """Everyone the owner has history with, the most recent first."""

    def conversations(
        owner: str, contact: str, gap: float, before: str | None = None, limit: int = 20
    ) -> Deferred[list[Conversation]]:
        """The owner's conversations with *contact*, newest first: messages
        split wherever more than *gap* seconds passed. *before* is a
        conversation id: list only the older ones."""

    def between(
        owner: str, contact: str, after: str | None = None, before: str | None = None, limit: int = 50,
        newest: bool = False,
    ) -> Deferred[list[ArchivedMessage]]:
        """Up to *limit* of the owner's messages with *contact* whose ids lie
        strictly between *after* and *before* (None: no bound), oldest first:
        the oldest of them, or the newest when *newest*. The ids need not be
        in the archive. SQLite and Redis read at most *limit* messages by the
        contact's index, whatever the archive's size."""

    def conversation(
        owner: str, conversation_id: str, gap: float, before: str | None = None, after: str | None = None,
        limit: int = 20,
    ) -> Deferred[ConversationPage]:
        """One page of at most *limit* messages of a conversation (its messages
        from *conversation_id* on, up to the first silence longer than *gap*):
        the newest page, or the page just before the message *before*, or just
        after the message *after* (XEP-0059 §2.5, §2.3, §2.2). A page never
        crosses a silence. UnknownMessage if there is no message
        *conversation_id*; BadCursor when the cursor is not a message with the
        same contact from *conversation_id* on, or when a page before it
        meets a silence (it belongs to a later conversation: only a page that
        reaches the silence can tell, so that is checked page by page)."""

    def search(search: HistorySearch) -> Deferred[HistoryHits]:
        """One page of an administrator's search (:class:`HistorySearch`); ValueError for a
        search without words or owner, or whose words are none or too many (a one-line
        message); SearchUnavailable where the backend cannot search text."""

    def expire(before: float, domain: str | None = None, spare: Collection[str] = ()) -> Deferred[int]:
        """Delete every message older than *before* (POSIX seconds) of the owners of *domain*
        (every owner when None) but those in *spare* (bare JIDs: a legal hold); return how many."""

    def erase(owner: str) -> Deferred[int]:
        """Delete every message of *owner*'s archive (the user was removed); return how many.
        The other parties' copies are theirs and stay."""


@dataclass(frozen=True)
class OfflineMessage:
    """A message kept for a user who had no available resource (XEP-0160)."""

    at: float  # when the server took it (POSIX seconds)
    stanza: str  # the <message/>, serialized


class IOfflineStore(Interface):
    """Messages waiting for their recipient's next available presence."""

    def start() -> Deferred[None]:
        """Open the store."""

    def stop() -> Deferred[None]:
        """Write out whatever is pending, then close."""

    def push(owner: str, message: OfflineMessage, quota: int | None) -> Deferred[bool]:
        """Keep *message* for the bare JID *owner*, unless *quota* (when not
        None) messages wait already: then False."""

    def pop(owner: str) -> Deferred[list[OfflineMessage]]:
        """Take every message kept for *owner*, oldest first."""

    def count(owner: str) -> Deferred[int]:
        """How many messages wait for *owner*."""


class IFileStore(Interface):
    """Files users shared (XEP-0363), with what the daily quota needs
    (``chatgate.storage.files.StoredFile`` describes one)."""

    def start() -> Deferred[None]:
        """Open the store."""

    def stop() -> Deferred[None]:
        """Close it."""

    def put(domain: str, file_id: str, source: object, meta: object) -> Deferred[bool]:
        """Keep the bytes of the file object *source* as *domain*/*file_id*, whole
        or not at all; False when that id is taken."""

    def get(domain: str, file_id: str) -> Deferred[tuple[object, str] | None]:
        """The file's description and the path of its bytes, or None."""

    def usage(domain: str, localpart: str, now: float) -> Deferred[tuple[int, float | None]]:
        """Bytes the user uploaded in the 24 hours before *now*, and when the
        oldest of those uploads stops counting (None: none)."""

    def erase(domain: str, localpart: str) -> Deferred[int]:
        """Remove every file the user uploaded (the user was removed); how many went."""

    def expire(before: float, batch: int) -> Deferred[int]:
        """Remove up to *batch* files stored before *before*; how many went."""
