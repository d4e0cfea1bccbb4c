"""The Redis IDirectory (txredisapi): one directory shared by every node of a cluster.

Keys start with ``[storage] redis_prefix``, like the archive's; a domain's
keys then name the domain (``chatgate:example.com:directory:users``):

- ``<prefix>:directory:domains`` — hash domain -> ``1`` (chat enabled) or ``0``.
- ``<prefix>:<domain>:directory:users`` — hash localpart -> the user's details
  (JSON: name, title, department, phone).
- ``…:directory:credentials`` — hash localpart -> JSON ``{"at": when set
  (Unix time), "scram": {mechanism: salt, keys (base64), iterations}}``.
- ``…:directory:vcards`` — hash localpart -> the vCard XML the user stored.
- ``…:directory:private:<user>`` — hash namespace -> the XML the user keeps
  there (XEP-0049 private storage).
- ``…:directory:pep:<user>`` — hash PEP node -> its record (XEP-0163).
- ``…:directory:aliases`` — hash alias localpart -> its name;
  ``…:directory:members:<alias>`` the set of its member users, and
  ``…:directory:memberships:<user>`` the set of aliases the user is in (so a
  removal touches only those).
- ``…:directory:blocked:<user>`` — set of the JIDs the user blocks (XEP-0191).
- ``…:directory:rooms`` — hash room localpart -> JSON ``{"name", "enabled",
  "made", "owners", "members"}`` (team rooms' records).
- ``…:directory:holds`` — hash localpart ("" for the domain) -> JSON ``{"by", "at",
  "reason"}`` (legal holds).
- ``<prefix>:directory:retention`` — hash domain -> days of history it keeps.
- ``<prefix>:directory:sites`` — hash host -> JSON ``{"owner", "show_chat_link"}``.
- ``<prefix>:directory:secrets`` — hash name -> 32 bytes, hex.
- ``<prefix>:directory:changes`` — stream of :class:`Change` entries (fields
  ``k`` kind, ``d`` domain, ``l`` localpart when any), capped near
  :data:`CHANGES_KEPT` entries.

Every write that checks or touches more than one key is one Lua script,
atomic, and appends its changes to the stream in that same script: the
stream's order is the order the writes happened in, on every node.

The change feed, like SQLite's, tells every change (this process's own too)
once, from the stream: :meth:`RedisDirectory.poll` reads it without blocking,
and while started a dedicated connection waits in ``XREAD BLOCK`` so a change
reaches the watchers within milliseconds of being written. Both read from the
one last id told and skip entries at or before it, so whichever reply comes
first tells an entry and the other drops it: no change is told twice, none
out of order, and neither read waits for the other.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Sequence
from typing import Any

from twisted.internet.defer import CancelledError, Deferred, fail
from twisted.internet.task import deferLater
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatgate.storage.interfaces import (
    Alias,
    Change,
    Credentials,
    DirectoryError,
    DirectoryWatcher,
    Domain,
    DuplicateDomain,
    DuplicateUser,
    Hold,
    IDirectory,
    RoomRecord,
    ScramKeys,
    Site,
    UnknownAlias,
    UnknownDomain,
    UnknownSite,
    UnknownUser,
    User,
    tell_watchers,
)
from chatgate.storage.redis import CONNECT_TIMEOUT, _RedisStore

log = Logger()

#: about how many changes the stream keeps (XADD MAXLEN ~): far more than a
#: node falls behind by between two reads
CHANGES_KEPT = 100_000
#: entries read from the stream per XREAD
READ_BATCH = 1000
#: seconds the dedicated connection waits in one XREAD BLOCK before asking again
BLOCK = 5.0
#: seconds before the blocking reader tries again after an error (polling goes on meanwhile)
RETRY = 1.0

# Every write script starts with this. KEYS: the domains hash, the change
# stream. ARGV: changes kept, the domain's key stem (``<prefix>:<domain>:directory:``),
# domain, localpart ('' for a domain), then the script's own from ARGV[5].
# A refusal is returned as {reason, subject}, success as {'ok', ...}.
_PROLOGUE = """
local stem, domain, localpart = ARGV[2], ARGV[3], ARGV[4]
local function key(name) return stem .. name end
local function jid(l) return l .. '@' .. domain end
local function tell(kind, l)
  if l then
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'k', kind, 'd', domain, 'l', l)
  else
    redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 'k', kind, 'd', domain)
  end
end
local function has_domain() return redis.call('HEXISTS', KEYS[1], domain) == 1 end
local function is_user(l) return redis.call('HEXISTS', key('users'), l) == 1 end
local function is_alias(l) return redis.call('HEXISTS', key('aliases'), l) == 1 end
"""

_ADD_DOMAIN = _PROLOGUE + """
if redis.call('HSETNX', KEYS[1], domain, '1') == 0 then return {'duplicate-domain', domain} end
tell('domain-added')
return {'ok'}
"""

# ARGV[5]: '1' to enable, '0' to disable
_SET_CHAT_ENABLED = _PROLOGUE + """
if not has_domain() then return {'unknown-domain', domain} end
redis.call('HSET', KEYS[1], domain, ARGV[5])
tell(ARGV[5] == '1' and 'domain-enabled' or 'domain-disabled')
return {'ok'}
"""

# ARGV[5]: details, ARGV[6]: credentials record
_ADD_USER = _PROLOGUE + """
if not has_domain() then return {'unknown-domain', domain} end
if is_user(localpart) or is_alias(localpart) then return {'duplicate-user', jid(localpart)} end
redis.call('HSET', key('users'), localpart, ARGV[5])
redis.call('HSET', key('credentials'), localpart, ARGV[6])
tell('user-added', localpart)
return {'ok'}
"""

# One field of a user's: details, credentials or vCard. ARGV[5]: the hash
# (users, credentials, vcards), ARGV[6]: the value, ARGV[7]: the change to tell
# ('' for none: nothing watches vCards)
_SET_USER_FIELD = _PROLOGUE + """
if not is_user(localpart) then return {'unknown-user', jid(localpart)} end
redis.call('HSET', key(ARGV[5]), localpart, ARGV[6])
if ARGV[7] ~= '' then tell(ARGV[7], localpart) end
return {'ok'}
"""

# The user goes with their credentials, vCard, blocklist and memberships;
# each alias they were in is told changed, by name.
_REMOVE_USER = _PROLOGUE + """
if redis.call('HDEL', key('users'), localpart) == 0 then return {'unknown-user', jid(localpart)} end
redis.call('HDEL', key('credentials'), localpart)
redis.call('HDEL', key('vcards'), localpart)
redis.call('DEL', key('private:' .. localpart))
redis.call('DEL', key('pep:' .. localpart))
redis.call('DEL', key('blocked:' .. localpart))
local groups = redis.call('SMEMBERS', key('memberships:' .. localpart))
table.sort(groups)
for _, alias in ipairs(groups) do redis.call('SREM', key('members:' .. alias), localpart) end
redis.call('DEL', key('memberships:' .. localpart))
tell('user-removed', localpart)
for _, alias in ipairs(groups) do tell('alias-changed', alias) end
return {'ok'}
"""

# ARGV[5]: the alias's name, ARGV[6..]: its members
_ALIAS_PROLOGUE = _PROLOGUE + """
local function missing_member()
  for i = 6, #ARGV do if not is_user(ARGV[i]) then return ARGV[i] end end
end
local function add_members()
  for i = 6, #ARGV do
    redis.call('SADD', key('members:' .. localpart), ARGV[i])
    redis.call('SADD', key('memberships:' .. ARGV[i]), localpart)
  end
end
local function drop_members()
  for _, member in ipairs(redis.call('SMEMBERS', key('members:' .. localpart))) do
    redis.call('SREM', key('memberships:' .. member), localpart)
  end
  redis.call('DEL', key('members:' .. localpart))
end
"""

_ADD_ALIAS = _ALIAS_PROLOGUE + """
if not has_domain() then return {'unknown-domain', domain} end
if is_user(localpart) or is_alias(localpart) then return {'address-in-use', jid(localpart)} end
local missing = missing_member()
if missing then return {'unknown-user', jid(missing)} end
redis.call('HSET', key('aliases'), localpart, ARGV[5])
add_members()
tell('alias-added', localpart)
return {'ok'}
"""

_SET_ALIAS = _ALIAS_PROLOGUE + """
if not is_alias(localpart) then return {'unknown-alias', jid(localpart)} end
local missing = missing_member()
if missing then return {'unknown-user', jid(missing)} end
redis.call('HSET', key('aliases'), localpart, ARGV[5])
drop_members()
add_members()
tell('alias-changed', localpart)
return {'ok'}
"""

_REMOVE_ALIAS = _ALIAS_PROLOGUE + """
if redis.call('HDEL', key('aliases'), localpart) == 0 then return {'unknown-alias', jid(localpart)} end
drop_members()
tell('alias-removed', localpart)
return {'ok'}
"""

# ARGV[5..]: the JIDs; returns {'ok', the ones added, in the order given}
_BLOCK = _PROLOGUE + """
if not is_user(localpart) then return {'unknown-user', jid(localpart)} end
local out = {'ok'}
for i = 5, #ARGV do
  if redis.call('SADD', key('blocked:' .. localpart), ARGV[i]) == 1 then out[#out + 1] = ARGV[i] end
end
if #out > 1 then tell('blocklist-changed', localpart) end
return out
"""

# ARGV[5]: 'all' or 'some', ARGV[6..]: the JIDs when some; returns {'ok', the ones removed}
_UNBLOCK = _PROLOGUE + """
if not is_user(localpart) then return {'unknown-user', jid(localpart)} end
local blocked = key('blocked:' .. localpart)
local out = {'ok'}
if ARGV[5] == 'all' then
  for _, j in ipairs(redis.call('SMEMBERS', blocked)) do out[#out + 1] = j end
  redis.call('DEL', blocked)
else
  for i = 6, #ARGV do
    if redis.call('SREM', blocked, ARGV[i]) == 1 then out[#out + 1] = ARGV[i] end
  end
end
if #out > 1 then tell('blocklist-changed', localpart) end
return out
"""

# Reads that need one consistent view. KEYS: the domains hash, the domain's
# users or aliases hash; ARGV: the domain, the members key stem (aliases).
# nil for an unknown domain.
_USERS = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
return redis.call('HGETALL', KEYS[2])
"""

# ARGV[5]: the room's record (JSON)
_PUT_ROOM = _PROLOGUE + """
if not has_domain() then return {'unknown-domain', domain} end
redis.call('HSET', key('rooms'), localpart, ARGV[5])
tell('room-changed', localpart)
return {'ok'}
"""

_REMOVE_ROOM = _PROLOGUE + """
if redis.call('HDEL', key('rooms'), localpart) == 1 then tell('room-removed', localpart) end
return {'ok'}
"""

# ARGV[5]: namespace, ARGV[6]: the XML, ARGV[7]: namespaces kept at most. Nothing is told.
_SET_PRIVATE = _PROLOGUE + """
if not is_user(localpart) then return {'unknown-user', jid(localpart)} end
local kept = key('private:' .. localpart)
if redis.call('HEXISTS', kept, ARGV[5]) == 0 and redis.call('HLEN', kept) >= tonumber(ARGV[7]) then
  return {'ok', '0'}
end
redis.call('HSET', kept, ARGV[5], ARGV[6])
return {'ok', '1'}
"""

# ARGV[5]: the hold's target localpart, ARGV[6]: its record. Nothing is told.
_PUT_HOLD = _PROLOGUE + """
if not has_domain() then return {'unknown-domain', domain} end
redis.call('HSET', key('holds'), ARGV[5], ARGV[6])
return {'ok'}
"""

# ARGV[5]: days ('' clears). Nothing is told.
_SET_RETENTION = _PROLOGUE + """
if not has_domain() then return {'unknown-domain', domain} end
if ARGV[5] == '' then redis.call('HDEL', KEYS[3], domain) else redis.call('HSET', KEYS[3], domain, ARGV[5]) end
return {'ok'}
"""

# ARGV[5]: node, ARGV[6]: its record ('' removes it), ARGV[7]: nodes kept at most, ARGV[8]: bytes in all
_SET_PEP = _PROLOGUE + """
if not is_user(localpart) then return {'unknown-user', jid(localpart)} end
local kept = key('pep:' .. localpart)
if ARGV[6] == '' then
  if redis.call('HDEL', kept, ARGV[5]) == 1 then tell('pep-changed', localpart) end
  return {'ok', '1'}
end
local count, size = 0, string.len(ARGV[6])
local all = redis.call('HGETALL', kept)
for i = 1, #all, 2 do
  if all[i] ~= ARGV[5] then count = count + 1; size = size + string.len(all[i + 1]) end
end
if count >= tonumber(ARGV[7]) or size > tonumber(ARGV[8]) then return {'ok', '0'} end
redis.call('HSET', kept, ARGV[5], ARGV[6])
tell('pep-changed', localpart)
return {'ok', '1'}
"""

_ALIASES = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return false end
local out = {}
local all = redis.call('HGETALL', KEYS[2])
for i = 1, #all, 2 do
  out[#out + 1] = {all[i], all[i + 1], redis.call('SMEMBERS', ARGV[2] .. all[i])}
end
return out
"""

# KEYS: the aliases hash, the alias's members set; ARGV: its localpart
_ALIAS = """
local name = redis.call('HGET', KEYS[1], ARGV[1])
if not name then return false end
return {name, redis.call('SMEMBERS', KEYS[2])}
"""

# HSETNX then HGET: nodes racing to make a secret all get the first one made
_SECRET = """
redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2])
return redis.call('HGET', KEYS[1], ARGV[1])
"""

#: a script's refusal -> (the error, its message given the subject)
_REFUSALS: dict[str, tuple[type[DirectoryError], str]] = {
    "unknown-domain": (UnknownDomain, "unknown domain: {}"),
    "duplicate-domain": (DuplicateDomain, "domain already exists: {}"),
    "unknown-user": (UnknownUser, "unknown user: {}"),
    "duplicate-user": (DuplicateUser, "user already exists: {}"),
    "address-in-use": (DuplicateUser, "address already in use: {}"),
    "unknown-alias": (UnknownAlias, "unknown alias: {}"),
}


class _DirectoryConnection(_RedisStore):
    """A connection pool whose failures are DirectoryErrors."""

    error = DirectoryError


@implementer(IDirectory)
class RedisDirectory(_DirectoryConnection):
    """IDirectory in Redis hashes and sets, its change feed a Redis stream
    (see the module's docstring).

    The connection settings are :class:`chatgate.storage.redis.RedisArchive`'s;
    *block* is the seconds one ``XREAD BLOCK`` waits before asking again.
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, db: int = 0, password: str = "",
                 tls: bool = False, tls_ca: str = "", prefix: str = "chatgate", poolsize: int = 4,
                 connect_timeout: float = CONNECT_TIMEOUT, block: float = BLOCK,
                 sentinels: Sequence[tuple[str, int]] = (), master_name: str = "mymaster") -> None:
        super().__init__(host, port, db, password, tls, tls_ca, prefix, poolsize, connect_timeout, sentinels,
                         master_name)
        # XREAD BLOCK holds its connection: it gets one of its own, away from the pool
        self._listener = _DirectoryConnection(host, port, db, password, tls, tls_ca, prefix, 1, connect_timeout,
                                              sentinels, master_name)
        self._block_ms = int(block * 1000)
        self._domains_key = f"{prefix}:directory:domains"
        self._stream = f"{prefix}:directory:changes"
        self._retention_key = f"{prefix}:directory:retention"
        self._watchers: list[DirectoryWatcher] = []
        self._last_id = "0-0"
        self._listening = False
        self._listen_done: Deferred[None] | None = None
        #: what the blocking reader waits for now (a read or a pause); cancelled by stop
        self._waiting: Deferred[Any] | None = None
        #: an outage is logged once by the blocking reader and once by poll
        self._feed_failing = self._poll_failing = False

    # -- life cycle

    async def _start(self) -> None:
        await super()._start()
        try:
            await self._listener._start()
            latest = await self._command("XREVRANGE", self._stream, "+", "-", "COUNT", 1)
        except DirectoryError:
            await self._listener.stop()
            await self._disconnect()
            raise
        # changes before now are already in the data: the feed starts after them
        self._last_id = latest[0][0] if latest else "0-0"
        self._listening = True
        self._listen_done = Deferred.fromCoroutine(self._listen())

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self._listening = False
        if self._waiting is not None:
            self._waiting.cancel()
        if self._listen_done is not None:
            done, self._listen_done = self._listen_done, None
            await done
        await self._listener.stop()
        await self._disconnect()

    # -- change feed

    def watch(self, watcher: DirectoryWatcher) -> None:
        self._watchers.append(watcher)

    def poll(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._poll())

    async def _poll(self) -> None:
        """Tell the watchers what the stream holds past the last id told, reading until it is all read."""
        while True:
            try:
                reply = await self._command("XREAD", "COUNT", READ_BATCH, "STREAMS", self._stream, self._last_id)
            except DirectoryError as e:
                if not self._poll_failing:  # one line an outage, not one a poll
                    log.warn("cannot read the directory's change feed: {error}", error=str(e))
                    self._poll_failing = True
                return  # the next poll tries again
            self._poll_failing = False
            if self._tell(reply) < READ_BATCH:
                return

    async def _listen(self) -> None:
        """While started: wait in XREAD BLOCK on the dedicated connection, tell what comes."""
        while self._listening:
            read = self._listener._redis.execute_command(
                "XREAD", "BLOCK", self._block_ms, "COUNT", READ_BATCH, "STREAMS", self._stream,
                self._last_id)
            read.addErrback(self._listener._failed)
            try:
                reply = await self._wait_for(read)
            except CancelledError:
                return  # stopped
            except DirectoryError as e:
                if not self._listening:
                    return
                if not self._feed_failing:  # one line an outage, not one a retry
                    log.warn("the directory's change feed waits ({error}); polling goes on", error=str(e))
                    self._feed_failing = True
                try:
                    await self._wait_for(deferLater(self._reactor(), RETRY, lambda: None))
                except CancelledError:
                    return
                continue
            if self._feed_failing:
                log.info("the directory's change feed is back")
                self._feed_failing = False
            self._tell(reply)

    def _wait_for(self, d: Deferred[Any]) -> Deferred[Any]:
        """*d*'s outcome, through a Deferred that stop can cancel whatever *d* is waiting for."""
        waiter: Deferred[Any] = Deferred(lambda _: d.cancel())

        def settle(outcome: Any) -> None:  # returns None: an outcome after the cancel goes nowhere
            if not waiter.called:
                waiter.errback(outcome) if isinstance(outcome, Failure) else waiter.callback(outcome)

        d.addBoth(settle)
        self._waiting = waiter
        return waiter

    @staticmethod
    def _reactor() -> Any:
        from twisted.internet import reactor

        return reactor

    def _tell(self, reply: Any) -> int:
        """Tell the watchers each stream entry of an XREAD *reply* past the last id told; the entries read."""
        read = 0
        for _stream, entries in reply or ():
            read += len(entries)
            for entry_id, fields in entries:
                if _stream_id(entry_id) <= _stream_id(self._last_id):
                    continue  # told already, from the other read
                self._last_id = entry_id
                change = dict(zip(fields[::2], fields[1::2], strict=True))
                tell_watchers(self._watchers, Change(change["k"], change["d"], change.get("l")))
        return read

    # -- talking to Redis

    def _command(self, *args: Any) -> Deferred[Any]:
        error = self._unavailable()
        if error is not None:
            return fail(error)
        return self._redis.execute_command(*args).addErrback(self._failed)

    def _stem(self, domain: str) -> str:
        """The start of *domain*'s directory keys."""
        return f"{self.prefix}:{domain}:directory:"

    def _write(self, script: str, domain: str, localpart: str, *args: Any) -> Deferred[list[str]]:
        """Run a write script; what it returns past 'ok', or its refusal raised."""
        argv = [CHANGES_KEPT, self._stem(domain), domain, localpart, *args]
        return self._eval(script, [self._domains_key, self._stream], argv).addCallback(_accepted)

    # -- domains

    def domains(self) -> Deferred[list[Domain]]:
        d = self._command("HGETALL", self._domains_key)
        return d.addCallback(lambda pairs: sorted(
            (Domain(name, enabled == "1") for name, enabled in _pairs(pairs)), key=lambda d: d.name))

    def add_domain(self, name: str) -> Deferred[Domain]:
        return self._write(_ADD_DOMAIN, name, "").addCallback(lambda _: Domain(name))

    def set_chat_enabled(self, name: str, enabled: bool) -> Deferred[None]:
        return self._done(self._write(_SET_CHAT_ENABLED, name, "", "1" if enabled else "0"))

    # -- users

    def users(self, domain: str) -> Deferred[list[User]]:
        d = self._eval(_USERS, [self._domains_key, self._stem(domain) + "users"], [domain])

        def found(pairs: list[str] | None) -> list[User]:
            if pairs is None:
                raise UnknownDomain(f"unknown domain: {domain}")
            return sorted((_user(domain, lp, details) for lp, details in _pairs(pairs)), key=lambda u: u.localpart)

        return d.addCallback(found)

    def user(self, domain: str, localpart: str) -> Deferred[User | None]:
        d = self._command("HGET", self._stem(domain) + "users", localpart)
        return d.addCallback(lambda details: None if details is None else _user(domain, localpart, details))

    def add_user(self, user: User, credentials: Credentials) -> Deferred[None]:
        return self._done(self._write(_ADD_USER, user.domain, user.localpart, _details(user),
                                      _credentials_record(credentials)))

    def update_user(self, user: User) -> Deferred[None]:
        return self._done(self._write(_SET_USER_FIELD, user.domain, user.localpart, "users", _details(user),
                                      "user-changed"))

    def remove_user(self, domain: str, localpart: str) -> Deferred[None]:
        return self._done(self._write(_REMOVE_USER, domain, localpart))

    # -- credentials and vCards

    def _credentials(self, domain: str, localpart: str) -> Deferred[dict[str, Any] | None]:
        d = self._command("HGET", self._stem(domain) + "credentials", localpart)
        return d.addCallback(lambda record: None if record is None else json.loads(record))

    def credentials(self, domain: str, localpart: str) -> Deferred[Credentials | None]:
        return self._credentials(domain, localpart).addCallback(
            lambda record: None if record is None else {
                mechanism: ScramKeys(base64.b64decode(k["salt"]), base64.b64decode(k["stored_key"]),
                                     base64.b64decode(k["server_key"]), int(k["iterations"]))
                for mechanism, k in record["scram"].items()
            })

    def set_credentials(self, domain: str, localpart: str, credentials: Credentials) -> Deferred[None]:
        return self._done(self._write(_SET_USER_FIELD, domain, localpart, "credentials",
                                      _credentials_record(credentials), "credentials-changed"))

    def credentials_changed(self, domain: str, localpart: str) -> Deferred[float | None]:
        return self._credentials(domain, localpart).addCallback(
            lambda record: None if record is None else float(record["at"]))

    def private_xml(self, domain: str, localpart: str, namespace: str) -> Deferred[str | None]:
        return self._command("HGET", self._stem(domain) + f"private:{localpart}", namespace)

    def set_private_xml(self, domain: str, localpart: str, namespace: str, xml: str, limit: int) -> Deferred[bool]:
        d = self._write(_SET_PRIVATE, domain, localpart, namespace, xml, str(limit))
        return d.addCallback(lambda rest: rest[0] == "1")

    def retention(self, domain: str) -> Deferred[int | None]:
        d = self._command("HGET", self._retention_key, domain)
        return d.addCallback(lambda days: None if days is None else int(days))

    def set_retention(self, domain: str, days: int | None) -> Deferred[None]:
        argv = [CHANGES_KEPT, self._stem(domain), domain, "", "" if days is None else str(days)]
        d = self._eval(_SET_RETENTION, [self._domains_key, self._stream, self._retention_key], argv)
        return self._done(d.addCallback(_accepted))

    def holds(self, domain: str) -> Deferred[list[Hold]]:
        d = self._command("HGETALL", self._stem(domain) + "holds")
        return d.addCallback(lambda pairs: sorted(
            (_hold(domain, localpart, record) for localpart, record in _pairs(pairs)), key=lambda h: h.localpart))

    def put_hold(self, hold: Hold) -> Deferred[None]:
        record = json.dumps({"by": hold.by, "at": hold.at, "reason": hold.reason})
        return self._done(self._write(_PUT_HOLD, hold.domain, "", hold.localpart, record))

    def remove_hold(self, domain: str, localpart: str) -> Deferred[bool]:
        return self._command("HDEL", self._stem(domain) + "holds", localpart).addCallback(lambda n: int(n) > 0)

    def pep_nodes(self, domain: str, localpart: str) -> Deferred[dict[str, str]]:
        d = self._command("HGETALL", self._stem(domain) + f"pep:{localpart}")
        return d.addCallback(lambda pairs: dict(_pairs(pairs)))

    def set_pep_node(self, domain: str, localpart: str, node: str, record: str | None, max_nodes: int,
                     max_bytes: int) -> Deferred[bool]:
        d = self._write(_SET_PEP, domain, localpart, node, record or "", str(max_nodes), str(max_bytes))
        return d.addCallback(lambda rest: rest[0] == "1")

    def vcard(self, domain: str, localpart: str) -> Deferred[str | None]:
        return self._command("HGET", self._stem(domain) + "vcards", localpart)

    def set_vcard(self, domain: str, localpart: str, vcard: str) -> Deferred[None]:
        return self._done(self._write(_SET_USER_FIELD, domain, localpart, "vcards", vcard, ""))

    # -- secrets

    def secret(self, name: str) -> Deferred[bytes]:
        d = self._eval(_SECRET, [f"{self.prefix}:directory:secrets"], [name, os.urandom(32).hex()])
        return d.addCallback(bytes.fromhex)

    # -- aliases

    def aliases(self, domain: str) -> Deferred[list[Alias]]:
        stem = self._stem(domain)
        d = self._eval(_ALIASES, [self._domains_key, stem + "aliases"], [domain, stem + "members:"])

        def found(rows: list[list[Any]] | None) -> list[Alias]:
            if rows is None:
                raise UnknownDomain(f"unknown domain: {domain}")
            return sorted((_alias(domain, lp, name, members) for lp, name, members in rows),
                          key=lambda a: a.localpart)

        return d.addCallback(found)

    def alias(self, domain: str, localpart: str) -> Deferred[Alias | None]:
        stem = self._stem(domain)
        d = self._eval(_ALIAS, [stem + "aliases", f"{stem}members:{localpart}"], [localpart])
        return d.addCallback(lambda row: None if row is None else _alias(domain, localpart, *row))

    def add_alias(self, alias: Alias) -> Deferred[None]:
        return self._done(self._write(_ADD_ALIAS, alias.domain, alias.localpart, alias.name, *alias.members))

    def set_alias(self, alias: Alias) -> Deferred[None]:
        return self._done(self._write(_SET_ALIAS, alias.domain, alias.localpart, alias.name, *alias.members))

    def remove_alias(self, domain: str, localpart: str) -> Deferred[None]:
        return self._done(self._write(_REMOVE_ALIAS, domain, localpart))

    # -- rooms

    def rooms(self, domain: str) -> Deferred[list[RoomRecord]]:
        d = self._eval(_USERS, [self._domains_key, self._stem(domain) + "rooms"], [domain])

        def found(pairs: list[str] | None) -> list[RoomRecord]:
            if pairs is None:
                raise UnknownDomain(f"unknown domain: {domain}")
            return sorted((_room(domain, lp, record) for lp, record in _pairs(pairs)), key=lambda r: r.localpart)

        return d.addCallback(found)

    def put_room(self, room: RoomRecord) -> Deferred[None]:
        room = room.normalized()
        record = json.dumps({"name": room.name, "enabled": room.enabled, "made": room.made,
                             "owners": room.owners, "members": room.members}, ensure_ascii=False)
        return self._done(self._write(_PUT_ROOM, room.domain, room.localpart, record))

    def remove_room(self, domain: str, localpart: str) -> Deferred[None]:
        return self._done(self._write(_REMOVE_ROOM, domain, localpart))

    # -- sites (one hash: each write is one command, atomic by itself)

    def sites(self) -> Deferred[list[Site]]:
        d = self._command("HGETALL", f"{self.prefix}:directory:sites")
        return d.addCallback(lambda pairs: sorted(
            (_site(host, record) for host, record in _pairs(pairs)), key=lambda s: s.host))

    def site(self, host: str) -> Deferred[Site | None]:
        d = self._command("HGET", f"{self.prefix}:directory:sites", host)
        return d.addCallback(lambda record: None if record is None else _site(host, record))

    def put_site(self, site: Site) -> Deferred[None]:
        record = json.dumps({"owner": site.owner, "show_chat_link": site.show_chat_link}, ensure_ascii=False)
        return self._done(self._command("HSET", f"{self.prefix}:directory:sites", site.host, record))

    def remove_site(self, host: str) -> Deferred[None]:
        def removed(count: int) -> None:
            if int(count) == 0:
                raise UnknownSite(f"unknown site: {host}")

        return self._command("HDEL", f"{self.prefix}:directory:sites", host).addCallback(removed)

    # -- blocklists (XEP-0191)

    def blocklist(self, domain: str, localpart: str) -> Deferred[list[str]]:
        return self._command("SMEMBERS", f"{self._stem(domain)}blocked:{localpart}").addCallback(sorted)

    def block(self, domain: str, localpart: str, jids: list[str]) -> Deferred[list[str]]:
        return self._write(_BLOCK, domain, localpart, *jids)

    def unblock(self, domain: str, localpart: str, jids: list[str] | None) -> Deferred[list[str]]:
        which = ["all"] if jids is None else ["some", *jids]
        return self._write(_UNBLOCK, domain, localpart, *which).addCallback(sorted)

    @staticmethod
    def _done(d: Deferred[Any]) -> Deferred[None]:
        return d.addCallback(lambda _: None)


def _accepted(reply: list[str]) -> list[str]:
    """A write script's reply past its 'ok'; its refusal raised as the DirectoryError it names."""
    status, *rest = reply
    if status != "ok":
        error, message = _REFUSALS[status]
        raise error(message.format(*rest))
    return rest


def _stream_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id (``<ms>-<seq>``) as a pair that sorts like the stream."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


def _hold(domain: str, localpart: str, record: str) -> Hold:
    data = json.loads(record)
    return Hold(domain, localpart, str(data["by"]), float(data["at"]), str(data.get("reason", "")))


def _pairs(flat: list[Any] | None) -> list[tuple[Any, Any]]:
    """HGETALL's field, value, field, value ... as pairs."""
    flat = flat or []
    return list(zip(flat[::2], flat[1::2], strict=True))


def _details(user: User) -> str:
    return json.dumps({"name": user.name, "title": user.title, "department": user.department, "phone": user.phone},
                      ensure_ascii=False, separators=(",", ":"))


def _user(domain: str, localpart: str, details: str) -> User:
    return User(localpart, domain, **json.loads(details))


def _credentials_record(credentials: Credentials) -> str:
    """The credentials and the time they are set at: a new password revokes older login tokens."""
    def b64(value: bytes) -> str:
        return base64.b64encode(value).decode("ascii")

    scram = {
        mechanism: {"salt": b64(k.salt), "stored_key": b64(k.stored_key), "server_key": b64(k.server_key),
                    "iterations": k.iterations}
        for mechanism, k in credentials.items()
    }
    return json.dumps({"at": time.time(), "scram": scram}, separators=(",", ":"))


def _alias(domain: str, localpart: str, name: str, members: list[str]) -> Alias:
    return Alias(localpart, domain, name, tuple(sorted(members)))


def _room(domain: str, localpart: str, record: str) -> RoomRecord:
    fields = json.loads(record)
    return RoomRecord(domain, localpart, str(fields.get("name", "")), bool(fields.get("enabled", True)),
                      bool(fields.get("made", False)), tuple(fields.get("owners", ())),
                      tuple(fields.get("members", ())))


def _site(host: str, record: str) -> Site:
    fields = json.loads(record)
    return Site(host, fields["owner"], bool(fields["show_chat_link"]))
