"""The store interfaces: everything chatgate keeps goes through these.

Backends (``memory``, ``sqlite``) implement them; nothing above ``storage/``
imports a backend directly except the composition root (``service.py``) and
the admin command, which pick one from the configuration.

All methods return Deferreds; blocking I/O never runs on the reactor thread.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from twisted.internet.defer import Deferred
from zope.interface import Interface


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


@dataclass(frozen=True)
class User:
    """A user of a hosted domain, with the directory's contact details."""

    localpart: str
    domain: str
    name: str = ""
    title: str = ""
    department: str = ""
    phone: str = ""

    @property
    def jid(self) -> str:
        return f"{self.localpart}@{self.domain}"

    @property
    def display_name(self) -> str:
        return self.name or self.localpart


@dataclass(frozen=True)
class Alias:
    """A mail alias of a domain (salesteam@example.com), a contact reaching its members.

    Users and aliases share a domain's addresses: one name is one or the other.
    """

    localpart: str
    domain: str
    name: str = ""
    #: localparts of the member users, sorted
    members: tuple[str, ...] = ()

    @property
    def jid(self) -> str:
        return f"{self.localpart}@{self.domain}"

    @property
    def display_name(self) -> str:
        return self.name or self.localpart


@dataclass(frozen=True)
class Site:
    """A private-label webmail site (its host name), owned by a reseller or a
    direct customer, which may hide the chat link from its users."""

    host: str
    owner: str = ""
    show_chat_link: bool = True


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
    members, also when a member user is removed), ``alias-removed``.
    ``localpart`` is None for domain changes.
    """

    kind: str
    domain: str
    localpart: str | None = None


DirectoryWatcher = Callable[[Change], None]


class IDirectory(Interface):
    """Hosted domains, their users, credentials and vCards.

    Every mutation is seen by every watcher of every process that shares the
    store, the mutating one included (for SQLite: within ``poll_interval``).
    Lookups are case-sensitive: callers pass prepared (lower-case) names.
    """

    def start() -> Deferred[None]:
        """Open the store (create its schema when new) and start the change feed."""

    def stop() -> Deferred[None]:
        """Stop the change feed and close the store."""

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

    def vcard(domain: str, localpart: str) -> Deferred[str | None]:
        """The vCard XML the user stored, or None."""

    def set_vcard(domain: str, localpart: str, vcard: str) -> Deferred[None]:
        """Store the user's own vCard XML. UnknownUser."""

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

    def sites() -> Deferred[list[Site]]:
        """Every private-label site, sorted by host."""

    def site(host: str) -> Deferred[Site | None]:
        """One site, or None."""

    def put_site(site: Site) -> Deferred[None]:
        """Add a site or replace its owner and chat-link setting."""

    def remove_site(host: str) -> Deferred[None]:
        """Remove a site. UnknownSite."""


@dataclass
class Stores:
    """The stores a running service uses, handed to every feature's register()."""

    directory: IDirectory
