"""The directory mirror: hosted domains, their users and aliases, as the router sees them.

An in-memory mirror of the directory (IDirectory), loaded at start and kept
current by the directory's change feed, so that routing a stanza, building a
roster, fanning presence out or expanding an alias never waits on the store.
Credentials and vCards are not mirrored: they are read when a login or a
vCard asks for them.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.internet import defer
from twisted.logger import Logger

from chatgate.storage.interfaces import Alias, Change, Domain, IDirectory, RoomRecord, User

log = Logger()

#: told each change once the mirror reflects it: (change, the user, alias or room record concerned, or None)
ChangeListener = Callable[[Change, "User | Alias | RoomRecord | None"], None]


class DirectoryMirror:
    """Domains -> users, mirrored from an IDirectory."""

    def __init__(self, directory: IDirectory) -> None:
        self.directory = directory
        self._domains: dict[str, Domain] = {}
        self._users: dict[str, dict[str, User]] = {}
        self._aliases: dict[str, dict[str, Alias]] = {}
        #: (domain, member localpart) -> localparts of the aliases they belong to
        self._memberships: dict[tuple[str, str], set[str]] = {}
        #: (domain, room localpart) -> its record (team rooms, features/muc/)
        self._rooms: dict[tuple[str, str], RoomRecord] = {}
        self._listeners: list[ChangeListener] = []
        # Changes are applied one after another, in the order the feed told them.
        self._queue = defer.DeferredLock()

    @defer.inlineCallbacks
    def load(self):
        """Read every domain and user, then follow the change feed."""
        self.directory.watch(self._changed)
        for domain in (yield self.directory.domains()):
            self._domains[domain.name] = domain
            users = yield self.directory.users(domain.name)
            self._users[domain.name] = {u.localpart: u for u in users}
            for alias in (yield self.directory.aliases(domain.name)):
                self._put_alias(alias)
            for room in (yield self.directory.rooms(domain.name)):
                self._rooms[(room.domain, room.localpart)] = room

    def listen(self, listener: ChangeListener) -> None:
        self._listeners.append(listener)

    # -- queries (synchronous, in memory)

    def is_hosted(self, domain: str) -> bool:
        return domain in self._domains

    def chat_enabled(self, domain: str) -> bool:
        d = self._domains.get(domain)
        return d is not None and d.chat_enabled

    def user(self, domain: str, localpart: str | None) -> User | None:
        return self._users.get(domain, {}).get(localpart or "")

    def users(self, domain: str) -> list[User]:
        """Users of *domain*, sorted by localpart."""
        return sorted(self._users.get(domain, {}).values(), key=lambda u: u.localpart)

    def names(self) -> list[str]:
        return sorted(self._domains)

    def alias(self, domain: str, localpart: str | None) -> Alias | None:
        return self._aliases.get(domain, {}).get(localpart or "")

    def aliases(self, domain: str) -> list[Alias]:
        """Aliases of *domain*, sorted by localpart."""
        return sorted(self._aliases.get(domain, {}).values(), key=lambda a: a.localpart)

    def room(self, domain: str, localpart: str) -> RoomRecord | None:
        """The record of a team room (an administrator's, or a room a user made), if any."""
        return self._rooms.get((domain, localpart))

    def rooms(self, domain: str) -> list[RoomRecord]:
        """The room records of *domain*."""
        return [r for (d, _), r in self._rooms.items() if d == domain]

    def aliases_of(self, domain: str, localpart: str) -> set[str]:
        """Localparts of the aliases the user belongs to."""
        return self._memberships.get((domain, localpart), set())

    def _put_alias(self, alias: Alias) -> None:
        self._drop_alias(alias.domain, alias.localpart)
        self._aliases.setdefault(alias.domain, {})[alias.localpart] = alias
        for member in alias.members:
            self._memberships.setdefault((alias.domain, member), set()).add(alias.localpart)

    def _drop_alias(self, domain: str, localpart: str) -> Alias | None:
        old = self._aliases.get(domain, {}).pop(localpart, None)
        for member in old.members if old else ():
            groups = self._memberships.get((domain, member), set())
            groups.discard(localpart)
            if not groups:
                self._memberships.pop((domain, member), None)
        return old

    @defer.inlineCallbacks
    def refresh_user(self, domain: str, localpart: str):
        """Read one user from the directory into the mirror, ahead of the change
        feed (a login right after the account was made); None if absent."""
        user = yield self.directory.user(domain, localpart)
        if user is not None and domain in self._users:
            self._users[domain][localpart] = user
        return user

    # -- the change feed

    def _changed(self, change: Change) -> None:
        self._queue.run(self._apply, change).addErrback(
            lambda f: log.failure("applying directory change {change}", f, change=change)
        )

    @defer.inlineCallbacks
    def _apply(self, change: Change):
        user = None
        kind, name = change.kind, change.domain
        if kind == "domain-added":
            self._domains[name] = Domain(name, True)
            self._users.setdefault(name, {})
        elif kind in ("domain-enabled", "domain-disabled"):
            if name in self._domains:
                self._domains[name] = Domain(name, kind == "domain-enabled")
        elif kind in ("user-added", "user-changed"):
            user = yield self.directory.user(name, change.localpart)
            if user is None:  # removed again since; the removal follows in the feed
                return
            self._users.setdefault(name, {})[user.localpart] = user
        elif kind == "user-removed":
            user = self._users.get(name, {}).pop(change.localpart or "", None)
            if user is None:
                return
        elif kind in ("alias-added", "alias-changed"):
            user = yield self.directory.alias(name, change.localpart)
            if user is None:  # removed again since; the removal follows in the feed
                return
            self._put_alias(user)
        elif kind == "room-changed":
            rooms = yield self.directory.rooms(name)
            user = next((r for r in rooms if r.localpart == change.localpart), None)
            if user is None:
                return
            self._rooms[(name, user.localpart)] = user
        elif kind == "room-removed":
            user = self._rooms.pop((name, change.localpart or ""), None)
            if user is None:
                return
        elif kind == "alias-removed":
            user = self._drop_alias(name, change.localpart or "")
            if user is None:
                return
        for listener in self._listeners:
            try:
                listener(change, user)
            except Exception:
                log.failure("listener of directory change {change}", change=change)
