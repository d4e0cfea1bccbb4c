"""An in-memory IDirectory: for tests and throw-away demos, gone at exit.

It keeps the contract of the durable backends (same errors, same sorting,
every mutation told to the watchers) but tells watchers synchronously, right
after the mutation, since there is no other process to hear from.
"""

from __future__ import annotations

import os
import time
from dataclasses import replace

from twisted.internet.defer import Deferred, fail, succeed
from zope.interface import implementer

from chatgate.storage.interfaces import (
    Alias,
    Change,
    Credentials,
    DirectoryWatcher,
    Domain,
    DuplicateDomain,
    DuplicateUser,
    Hold,
    IDirectory,
    RoomRecord,
    Site,
    UnknownAlias,
    UnknownDomain,
    UnknownSite,
    UnknownUser,
    User,
    tell_watchers,
)


@implementer(IDirectory)
class MemoryDirectory:
    """Domains, users, credentials, vCards, blocklists and secrets held in dicts."""

    def __init__(self) -> None:
        self._domains: dict[str, Domain] = {}
        self._users: dict[tuple[str, str], User] = {}
        self._credentials: dict[tuple[str, str], Credentials] = {}
        #: when each user's credentials were last set (Unix time)
        self._credentials_at: dict[tuple[str, str], float] = {}
        self._vcards: dict[tuple[str, str], str] = {}
        #: (domain, localpart) -> namespace -> the XML kept (XEP-0049)
        self._private: dict[tuple[str, str], dict[str, str]] = {}
        #: (domain, localpart) -> PEP node -> its record (XEP-0163)
        self._pep: dict[tuple[str, str], dict[str, str]] = {}
        self._retention: dict[str, int] = {}
        #: (domain, localpart or "") -> the legal hold
        self._holds: dict[tuple[str, str], Hold] = {}
        self._secrets: dict[str, bytes] = {}
        self._aliases: dict[tuple[str, str], Alias] = {}
        self._sites: dict[str, Site] = {}
        self._rooms: dict[tuple[str, str], RoomRecord] = {}
        #: (domain, localpart) -> the JIDs that user blocks (XEP-0191)
        self._blocked: dict[tuple[str, str], set[str]] = {}
        self._watchers: list[DirectoryWatcher] = []

    # -- life cycle and change feed

    def start(self) -> Deferred[None]:
        return succeed(None)

    def stop(self) -> Deferred[None]:
        return succeed(None)

    def poll(self) -> Deferred[None]:
        return succeed(None)  # one process: every change is told as it is made

    def watch(self, watcher: DirectoryWatcher) -> None:
        self._watchers.append(watcher)

    def _tell(self, kind: str, domain: str, localpart: str | None = None) -> None:
        tell_watchers(self._watchers, Change(kind, domain, localpart))

    # -- domains

    def domains(self) -> Deferred[list[Domain]]:
        return succeed(sorted(self._domains.values(), key=lambda d: d.name))

    def add_domain(self, name: str) -> Deferred[Domain]:
        if name in self._domains:
            return fail(DuplicateDomain(f"domain already exists: {name}"))
        domain = self._domains[name] = Domain(name)
        self._tell("domain-added", name)
        return succeed(domain)

    def set_chat_enabled(self, name: str, enabled: bool) -> Deferred[None]:
        if name not in self._domains:
            return fail(UnknownDomain(f"unknown domain: {name}"))
        self._domains[name] = replace(self._domains[name], chat_enabled=enabled)
        self._tell("domain-enabled" if enabled else "domain-disabled", name)
        return succeed(None)

    # -- users

    def users(self, domain: str) -> Deferred[list[User]]:
        if domain not in self._domains:
            return fail(UnknownDomain(f"unknown domain: {domain}"))
        found = [u for (d, _), u in self._users.items() if d == domain]
        return succeed(sorted(found, key=lambda u: u.localpart))

    def user(self, domain: str, localpart: str) -> Deferred[User | None]:
        return succeed(self._users.get((domain, localpart)))

    def add_user(self, user: User, credentials: Credentials) -> Deferred[None]:
        key = (user.domain, user.localpart)
        if user.domain not in self._domains:
            return fail(UnknownDomain(f"unknown domain: {user.domain}"))
        if key in self._users or key in self._aliases:
            return fail(DuplicateUser(f"user already exists: {user.jid}"))
        self._users[key] = user
        self._credentials[key] = dict(credentials)
        self._credentials_at[key] = time.time()
        self._tell("user-added", user.domain, user.localpart)
        return succeed(None)

    def update_user(self, user: User) -> Deferred[None]:
        key = (user.domain, user.localpart)
        if key not in self._users:
            return fail(UnknownUser(f"unknown user: {user.jid}"))
        self._users[key] = user
        self._tell("user-changed", user.domain, user.localpart)
        return succeed(None)

    def remove_user(self, domain: str, localpart: str) -> Deferred[None]:
        key = (domain, localpart)
        if self._users.pop(key, None) is None:
            return fail(UnknownUser(f"unknown user: {localpart}@{domain}"))
        self._credentials.pop(key, None)
        self._credentials_at.pop(key, None)
        self._vcards.pop(key, None)
        self._private.pop(key, None)
        self._pep.pop(key, None)
        self._blocked.pop(key, None)
        self._tell("user-removed", domain, localpart)
        for alias_key, alias in list(self._aliases.items()):
            if alias.domain == domain and localpart in alias.members:
                members = tuple(m for m in alias.members if m != localpart)
                self._aliases[alias_key] = replace(alias, members=members)
                self._tell("alias-changed", domain, alias.localpart)
        return succeed(None)

    # -- credentials and vCards

    def credentials(self, domain: str, localpart: str) -> Deferred[Credentials | None]:
        found = self._credentials.get((domain, localpart))
        return succeed(None if found is None else dict(found))

    def set_credentials(self, domain: str, localpart: str, credentials: Credentials) -> Deferred[None]:
        key = (domain, localpart)
        if key not in self._users:
            return fail(UnknownUser(f"unknown user: {localpart}@{domain}"))
        self._credentials[key] = dict(credentials)
        self._credentials_at[key] = time.time()
        self._tell("credentials-changed", domain, localpart)
        return succeed(None)

    def credentials_changed(self, domain: str, localpart: str) -> Deferred[float | None]:
        return succeed(self._credentials_at.get((domain, localpart)))

    def private_xml(self, domain: str, localpart: str, namespace: str) -> Deferred[str | None]:
        return succeed(self._private.get((domain, localpart), {}).get(namespace))

    def set_private_xml(self, domain: str, localpart: str, namespace: str, xml: str, limit: int) -> Deferred[bool]:
        key = (domain, localpart)
        if key not in self._users:
            return fail(UnknownUser(f"unknown user: {localpart}@{domain}"))
        kept = self._private.setdefault(key, {})
        if namespace not in kept and len(kept) >= limit:
            return succeed(False)
        kept[namespace] = xml
        return succeed(True)

    def retention(self, domain: str) -> Deferred[int | None]:
        return succeed(self._retention.get(domain))

    def set_retention(self, domain: str, days: int | None) -> Deferred[None]:
        if domain not in self._domains:
            return fail(UnknownDomain(f"unknown domain: {domain}"))
        if days is None:
            self._retention.pop(domain, None)
        else:
            self._retention[domain] = days
        return succeed(None)

    def holds(self, domain: str) -> Deferred[list[Hold]]:
        return succeed(sorted((h for (d, _), h in self._holds.items() if d == domain), key=lambda h: h.localpart))

    def put_hold(self, hold: Hold) -> Deferred[None]:
        if hold.domain not in self._domains:
            return fail(UnknownDomain(f"unknown domain: {hold.domain}"))
        self._holds[(hold.domain, hold.localpart)] = hold
        return succeed(None)

    def remove_hold(self, domain: str, localpart: str) -> Deferred[bool]:
        return succeed(self._holds.pop((domain, localpart), None) is not None)

    def pep_nodes(self, domain: str, localpart: str) -> Deferred[dict[str, str]]:
        return succeed(dict(self._pep.get((domain, localpart), {})))

    def set_pep_node(self, domain: str, localpart: str, node: str, record: str | None, max_nodes: int,
                     max_bytes: int) -> Deferred[bool]:
        key = (domain, localpart)
        if key not in self._users:
            return fail(UnknownUser(f"unknown user: {localpart}@{domain}"))
        kept = self._pep.setdefault(key, {})
        if record is None:
            if kept.pop(node, None) is not None:
                self._tell("pep-changed", domain, localpart)
            return succeed(True)
        others = [text for name, text in kept.items() if name != node]
        if len(others) >= max_nodes or sum(map(len, others)) + len(record) > max_bytes:
            return succeed(False)
        kept[node] = record
        self._tell("pep-changed", domain, localpart)
        return succeed(True)

    def vcard(self, domain: str, localpart: str) -> Deferred[str | None]:
        return succeed(self._vcards.get((domain, localpart)))

    def set_vcard(self, domain: str, localpart: str, vcard: str) -> Deferred[None]:
        key = (domain, localpart)
        if key not in self._users:
            return fail(UnknownUser(f"unknown user: {localpart}@{domain}"))
        self._vcards[key] = vcard
        return succeed(None)

    # -- secrets

    def secret(self, name: str) -> Deferred[bytes]:
        return succeed(self._secrets.setdefault(name, os.urandom(32)))

    # -- aliases

    def aliases(self, domain: str) -> Deferred[list[Alias]]:
        if domain not in self._domains:
            return fail(UnknownDomain(f"unknown domain: {domain}"))
        return succeed(sorted((a for a in self._aliases.values() if a.domain == domain), key=lambda a: a.localpart))

    def alias(self, domain: str, localpart: str) -> Deferred[Alias | None]:
        return succeed(self._aliases.get((domain, localpart)))

    def _checked(self, alias: Alias) -> Alias:
        for member in alias.members:
            if (alias.domain, member) not in self._users:
                raise UnknownUser(f"unknown user: {member}@{alias.domain}")
        return replace(alias, members=tuple(sorted(set(alias.members))))

    def add_alias(self, alias: Alias) -> Deferred[None]:
        key = (alias.domain, alias.localpart)
        if alias.domain not in self._domains:
            return fail(UnknownDomain(f"unknown domain: {alias.domain}"))
        if key in self._users or key in self._aliases:
            return fail(DuplicateUser(f"address already in use: {alias.jid}"))
        try:
            self._aliases[key] = self._checked(alias)
        except UnknownUser as e:
            return fail(e)
        self._tell("alias-added", alias.domain, alias.localpart)
        return succeed(None)

    def set_alias(self, alias: Alias) -> Deferred[None]:
        key = (alias.domain, alias.localpart)
        if key not in self._aliases:
            return fail(UnknownAlias(f"unknown alias: {alias.jid}"))
        try:
            self._aliases[key] = self._checked(alias)
        except UnknownUser as e:
            return fail(e)
        self._tell("alias-changed", alias.domain, alias.localpart)
        return succeed(None)

    def remove_alias(self, domain: str, localpart: str) -> Deferred[None]:
        if self._aliases.pop((domain, localpart), None) is None:
            return fail(UnknownAlias(f"unknown alias: {localpart}@{domain}"))
        self._tell("alias-removed", domain, localpart)
        return succeed(None)

    # -- rooms

    def rooms(self, domain: str) -> Deferred[list[RoomRecord]]:
        if domain not in self._domains:
            return fail(UnknownDomain(f"unknown domain: {domain}"))
        return succeed(sorted((r for (d, _), r in self._rooms.items() if d == domain), key=lambda r: r.localpart))

    def put_room(self, room: RoomRecord) -> Deferred[None]:
        if room.domain not in self._domains:
            return fail(UnknownDomain(f"unknown domain: {room.domain}"))
        self._rooms[(room.domain, room.localpart)] = room.normalized()
        self._tell("room-changed", room.domain, room.localpart)
        return succeed(None)

    def remove_room(self, domain: str, localpart: str) -> Deferred[None]:
        if self._rooms.pop((domain, localpart), None) is not None:
            self._tell("room-removed", domain, localpart)
        return succeed(None)

    # -- sites

    def sites(self) -> Deferred[list[Site]]:
        return succeed(sorted(self._sites.values(), key=lambda site: site.host))

    def site(self, host: str) -> Deferred[Site | None]:
        return succeed(self._sites.get(host))

    def put_site(self, site: Site) -> Deferred[None]:
        self._sites[site.host] = site
        return succeed(None)

    def remove_site(self, host: str) -> Deferred[None]:
        if self._sites.pop(host, None) is None:
            return fail(UnknownSite(f"unknown site: {host}"))
        return succeed(None)

    # -- blocklists (XEP-0191)

    def blocklist(self, domain: str, localpart: str) -> Deferred[list[str]]:
        return succeed(sorted(self._blocked.get((domain, localpart), ())))

    def block(self, domain: str, localpart: str, jids: list[str]) -> Deferred[list[str]]:
        key = (domain, localpart)
        if key not in self._users:
            return fail(UnknownUser(f"unknown user: {localpart}@{domain}"))
        held = self._blocked.setdefault(key, set())
        added = [jid for jid in dict.fromkeys(jids) if jid not in held]
        held.update(added)
        if not held:
            del self._blocked[key]
        if added:
            self._tell("blocklist-changed", domain, localpart)
        return succeed(added)

    def unblock(self, domain: str, localpart: str, jids: list[str] | None) -> Deferred[list[str]]:
        key = (domain, localpart)
        if key not in self._users:
            return fail(UnknownUser(f"unknown user: {localpart}@{domain}"))
        held = self._blocked.get(key, set())
        removed = sorted(held if jids is None else held.intersection(jids))
        held.difference_update(removed)
        if not held:
            self._blocked.pop(key, None)
        if removed:
            self._tell("blocklist-changed", domain, localpart)
        return succeed(removed)
