"""Redis IArchive and IOfflineStore (txredisapi): history shared by several nodes.

Keys start with ``[storage] redis_prefix`` and the domain, so domains and
deployments never mix (``chatgate:example.com:archive:alice:ids``):

- ``…:archive:<local>:ids`` — sorted set of the owner's archive ids, all with
  score 0 so that it is ordered by id, that is by time (see
  :mod:`chatgate.storage.archive`); paging is ZRANGEBYLEX and counting
  ZLEXCOUNT, both O(log n).
- ``…:archive:<local>:with:<contact>`` and ``…:with:<contact>/<resource>`` —
  the same per contact, and per contact's resource, for ``with`` filters.
- ``…:archive:<local>:messages`` — hash id -> the message (JSON).
- ``…:archive:<local>:contacts`` — sorted set contact -> time of the last message.
- ``…:archive-owners`` (per domain) and ``<prefix>:archive-domains``, to walk
  every archive when expiring.
- ``…:offline:<local>`` — list of waiting messages (JSON), oldest first.

Every write, and every query, is one Lua script: atomic, one round trip.
Writes are acknowledged when Redis has them in memory; what survives a crash
of Redis is what its persistence settings keep (``appendonly yes`` with
``appendfsync everysec`` loses at most about a second; chatgate's own crash
loses nothing acknowledged).

The connection: ``[storage] redis_host``/``redis_port``, or, when ``[cluster]
redis_sentinels`` is set, the master the sentinels name for ``[cluster]
redis_master_name`` (password, TLS and database as in ``[storage]``; the
sentinels themselves are asked over plain TCP, without a password). The
sentinels are asked again before every (re)connection, a connection is taken
only once ``ROLE`` says master, and one that gets ``READONLY`` (a master
demoted under it) is dropped: after a failover every connection ends up on
the new master without a restart (see :class:`_SentinelEndpoint`).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Sequence
from typing import Any

import txredisapi
from twisted.internet import defer
from twisted.internet.defer import Deferred, fail
from twisted.internet.endpoints import HostnameEndpoint, connectProtocol, wrapClientTLS
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.threads import deferToThread
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from chatgate.storage.archive import (
    ERASE_ALL,
    ConversationsMixin,
    check_query,
    id_ceiling,
    id_floor,
    matches,
    named_ids,
    paginate,
    swept,
    time_of,
    unknown,
)
from chatgate.storage.interfaces import (
    ArchiveContact,
    ArchivedMessage,
    ArchiveError,
    ArchivePage,
    ArchiveQuery,
    HistoryHits,
    HistorySearch,
    IArchive,
    IOfflineStore,
    OfflineMessage,
    SearchUnavailable,
)

log = Logger()

NO_SEARCH = ("searching history needs the SQLite or PostgreSQL archive ([archive] backend):"
             " the Redis one keeps no index of words")

#: seconds to reach Redis at start before giving up with a one-line error
CONNECT_TIMEOUT = 5.0
#: messages deleted per script run when expiring
EXPIRE_CHUNK = 2000
#: the longest wait, in seconds, between two attempts to reconnect to Redis (a restart, a failover)
RECONNECT_MAX = 2.0
#: seconds one sentinel has to say where the master is before the next one is asked
SENTINEL_TIMEOUT = 2.0

# KEYS, 7 per message: ids, with, with-resource ('' when none), messages, contacts, owners, domains
# ARGV, 6 per message: id, record, contact, time in microseconds, localpart, domain
_APPEND = """
for i = 0, #KEYS / 7 - 1 do
  local k, a = i * 7, i * 6
  local id = ARGV[a + 1]
  if redis.call('HSETNX', KEYS[k + 4], id, ARGV[a + 2]) == 1 then
    redis.call('ZADD', KEYS[k + 1], 0, id)
    redis.call('ZADD', KEYS[k + 2], 0, id)
    if KEYS[k + 3] ~= '' then redis.call('ZADD', KEYS[k + 3], 0, id) end
    redis.call('ZADD', KEYS[k + 5], 'GT', ARGV[a + 4], ARGV[a + 3])
    redis.call('SADD', KEYS[k + 6], ARGV[a + 5])
    redis.call('SADD', KEYS[k + 7], ARGV[a + 6])
  end
end
return 0
"""

# Shared by removal and expiry. KEYS: ids, messages, contacts; ARGV[1]: the with-key prefix.
_REMOVE_IDS = """
local function remove(ids)
  local touched = {}
  for _, id in ipairs(ids) do
    local record = redis.call('HGET', KEYS[2], id)
    if record then
      local m = cjson.decode(record)
      redis.call('HDEL', KEYS[2], id)
      redis.call('ZREM', KEYS[1], id)
      redis.call('ZREM', ARGV[1] .. m.c, id)
      if m.r ~= '' then redis.call('ZREM', ARGV[1] .. m.c .. '/' .. m.r, id) end
      touched[m.c] = true
    end
  end
  for contact, _ in pairs(touched) do
    local last = redis.call('ZREVRANGEBYLEX', ARGV[1] .. contact, '+', '-', 'LIMIT', 0, 1)
    if #last == 0 then
      redis.call('ZREM', KEYS[3], contact)
    else
      redis.call('ZADD', KEYS[3], tonumber(string.sub(last[1], 1, 14), 16), contact)
    end
  end
end
"""

# ARGV[2..]: the ids
_REMOVE = _REMOVE_IDS + """
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
remove(ids)
return 0
"""

# ARGV[2]: the cutoff (an id floor), ARGV[3]: how many at most; returns how many went
_EXPIRE = _REMOVE_IDS + """
local ids = redis.call('ZRANGEBYLEX', KEYS[1], '-', '(' .. ARGV[2], 'LIMIT', 0, tonumber(ARGV[3]))
remove(ids)
return #ids
"""

# KEYS: the result set's sorted set, the owner's ids, messages.
# ARGV: low, high (the result set's lexical range), mode (first/after/before),
# the page's own bound (after: its low, before: its high), after: the high to
# count the first index with, max, offset, then the ids that have to exist.
# Returns {count, first index, more (0/1), id, record, id, record, ...}.
_QUERY = """
for i = 8, #ARGV do
  if not redis.call('ZSCORE', KEYS[2], ARGV[i]) then return redis.error_reply('UNKNOWN ' .. ARGV[i]) end
end
local total = redis.call('ZLEXCOUNT', KEYS[1], ARGV[1], ARGV[2])
local max = tonumber(ARGV[6])
local ids, first
if ARGV[3] == 'before' then
  ids = redis.call('ZREVRANGEBYLEX', KEYS[1], ARGV[4], ARGV[1], 'LIMIT', 0, max + 1)
  first = redis.call('ZLEXCOUNT', KEYS[1], ARGV[1], ARGV[4])
elseif ARGV[3] == 'after' then
  ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[4], ARGV[2], 'LIMIT', 0, max + 1)
  first = redis.call('ZLEXCOUNT', KEYS[1], ARGV[1], ARGV[5])
else
  first = tonumber(ARGV[7])
  ids = redis.call('ZRANGEBYLEX', KEYS[1], ARGV[1], ARGV[2], 'LIMIT', first, max + 1)
end
local more = 0
if #ids > max then
  more = 1
  ids[#ids] = nil
end
if ARGV[3] == 'before' then
  first = first - #ids
  local n = #ids
  for i = 1, math.floor(n / 2) do ids[i], ids[n + 1 - i] = ids[n + 1 - i], ids[i] end
end
local out = {total, first, more}
if #ids > 0 then
  local records = redis.call('HMGET', KEYS[3], unpack(ids))
  for i = 1, #ids do
    out[#out + 1] = ids[i]
    out[#out + 1] = records[i]
  end
end
return out
"""

# KEYS: the list; ARGV: record, quota ('' for none)
_PUSH = """
if ARGV[2] ~= '' and redis.call('LLEN', KEYS[1]) >= tonumber(ARGV[2]) then return 0 end
redis.call('RPUSH', KEYS[1], ARGV[1])
return 1
"""

_POP = """
local waiting = redis.call('LRANGE', KEYS[1], 0, -1)
redis.call('DEL', KEYS[1])
return waiting
"""


# -- lexical range bounds ('-', '+', '[value', '(value')


def _higher_low(a: str, b: str) -> str:
    """The tighter of two low bounds."""
    if a == "-":
        return b
    if b == "-":
        return a
    if a[1:] != b[1:]:
        return a if a[1:] > b[1:] else b
    return a if a[0] == "(" else b


def _lower_high(a: str, b: str) -> str:
    """The tighter of two high bounds."""
    if a == "+":
        return b
    if b == "+":
        return a
    if a[1:] != b[1:]:
        return a if a[1:] < b[1:] else b
    return a if a[0] == "(" else b


def _range(query: ArchiveQuery) -> tuple[str, str]:
    low, high = "-", "+"
    if query.start is not None:
        low = "[" + id_floor(query.start)
    if query.after_id is not None:
        low = _higher_low(low, "(" + query.after_id)
    if query.end is not None:
        high = "(" + id_ceiling(query.end)
    if query.before_id is not None:
        high = _lower_high(high, "(" + query.before_id)
    return low, high


def _record(message: ArchivedMessage) -> str:
    return json.dumps(
        {"c": message.contact, "r": message.resource, "o": int(message.outgoing), "b": message.body,
         "s": message.stanza},
        separators=(",", ":"),
        ensure_ascii=False,
    )


def _message(owner: str, archive_id: str, record: str) -> ArchivedMessage:
    m = json.loads(record)
    return ArchivedMessage(owner, archive_id, m["c"], m["r"], bool(m["o"]), time_of(archive_id), m["b"], m["s"])


class _RedisStore:
    """A txredisapi connection pool to the configured server, or to the master *sentinels* name."""

    #: what its failures raise, one line naming the server (the directory's subclass: DirectoryError)
    error: type[Exception] = ArchiveError

    def __init__(self, host: str = "127.0.0.1", port: int = 6379, db: int = 0, password: str = "",
                 tls: bool = False, tls_ca: str = "", prefix: str = "chatgate", poolsize: int = 4,
                 connect_timeout: float = CONNECT_TIMEOUT, sentinels: Sequence[tuple[str, int]] = (),
                 master_name: str = "mymaster") -> None:
        self.host, self.port, self.db = host, port, db
        self.connect_timeout = connect_timeout
        self.prefix = prefix
        #: (host, port) of each sentinel; when any, *host* and *port* are not used
        self.sentinels = tuple(sentinels)
        self.master_name = master_name
        self._password = password or None
        self._tls_wanted, self._tls_ca = tls, tls_ca
        self._poolsize = poolsize
        self._redis: Any = None
        self._master: _SentinelEndpoint | None = None

    @property
    def where(self) -> str:
        """The server as errors name it: host:port, or the master and the sentinels asked for it."""
        if self.sentinels:
            return f"master {self.master_name} via sentinels {', '.join(_address(s) for s in self.sentinels)}"
        return f"{self.host}:{self.port}"

    def start(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._start())

    async def _start(self) -> None:
        from twisted.internet import reactor

        if self.sentinels:
            self._redis = await self._sentinel_pool()
        else:
            tls = False
            if self._tls_wanted:  # reads the CA file: off the reactor thread
                tls = await deferToThread(_tls_options, self.host, self._tls_ca, self.error)
            self._redis = txredisapi.lazyConnectionPool(
                self.host, self.port, dbid=self.db, poolsize=self._poolsize, password=self._password,
                ssl_context_factory=tls, connectTimeout=self.connect_timeout, convertNumbers=False,
            )
            # txredisapi backs off up to 10 s between reconnections: Redis back is used within RECONNECT_MAX
            self._redis._factory.maxDelay = RECONNECT_MAX
        # Ready when a PING is answered; failed at once when txredisapi gives
        # up (wrong password, bad database), else after the timeout.
        ready: Deferred[None] = Deferred()

        def settle(outcome: Any) -> None:
            if not ready.called:
                ready.callback(None) if not isinstance(outcome, Failure) else ready.errback(outcome)

        self._redis.ping().addBoth(settle)
        connected = getattr(self._redis, "_connected", None)  # the factory's first-connection Deferred
        if isinstance(connected, Deferred):
            connected.addErrback(settle)
        ready.addTimeout(self.connect_timeout, reactor)
        try:
            await ready
        except Exception as e:
            reason = "no answer" if isinstance(e, defer.TimeoutError) else str(e).replace("Redis error: ", "")
            if isinstance(e, defer.TimeoutError) and self._master is not None and self._master.last_error:
                reason = self._master.last_error  # which sentinel or master did not answer, and how
            await self._disconnect()
            raise self.error(f"redis {self.where}: cannot connect ({reason})") from None

    async def _sentinel_pool(self) -> Any:
        """A pool whose connections go to the master the sentinels name at each (re)connection."""
        trust = None
        if self._tls_wanted and self._tls_ca:  # reads the CA file: off the reactor thread
            trust = await deferToThread(_trust_root, self._tls_ca, self.error)
        tls = (lambda host: _client_tls(host, trust)) if self._tls_wanted else None
        self._master = _SentinelEndpoint(self.sentinels, self.master_name, self.connect_timeout, tls)
        factory = _MasterFactory(None, self.db, self._poolsize, isLazy=True, password=self._password,
                                 convertNumbers=False)
        self._master.factory = factory
        factory.startConnecting(self._master)
        return factory.handler

    def stop(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._disconnect())

    async def _disconnect(self) -> None:
        if self._redis is not None:
            redis, self._redis = self._redis, None
            try:
                await redis.disconnect()
            except Exception:
                log.failure("closing the redis connection")

    def _unavailable(self) -> Exception | None:
        """Why no command can go to Redis now, if so.

        txredisapi holds a command until a connection is back: a login's
        lookup, an archive write that a delivery waits for, a poll, and the
        service's stop behind them, would wait for the whole outage. Refused
        at once instead, in one line (the archive keeps what it could not
        write and writes it when Redis is back).
        """
        if self._redis is None:
            return self.error(f"redis {self.where}: the store is not started")
        if not self._redis._factory.size:  # every connection of the pool lost, reconnecting
            return self.error(f"redis {self.where}: not connected")
        return None

    def _eval(self, script: str, keys: list[str], args: list[Any]) -> Deferred[Any]:
        error = self._unavailable()
        if error is not None:
            return fail(error)
        d = self._redis.eval(script, keys, args)
        d.addErrback(self._failed)
        return d

    def _failed(self, failure: Any) -> Any:
        if failure.check(txredisapi.ResponseError) and str(failure.value).startswith("UNKNOWN "):
            raise unknown(str(failure.value)[len("UNKNOWN "):])
        if failure.check(txredisapi.RedisError, ConnectionError):
            raise self.error(f"redis {self.where}: {failure.value}")
        return failure

    def _base(self, owner: str, kind: str) -> tuple[str, str, str]:
        """(key stem, localpart, domain) of *owner*'s *kind* keys."""
        localpart, _, domain = owner.partition("@")
        return f"{self.prefix}:{domain}:{kind}:{localpart}", localpart, domain


def _tls_options(host: str, ca_path: str, error: type[Exception] = ArchiveError) -> Any:
    return _client_tls(host, _trust_root(ca_path, error) if ca_path else None)


def _trust_root(ca_path: str, error: type[Exception] = ArchiveError) -> Any:
    """The CA certificate in *ca_path* (blocking: reads the file)."""
    from twisted.internet.ssl import Certificate

    try:
        with open(ca_path, "rb") as f:
            return Certificate.loadPEM(f.read())
    except OSError as e:
        raise error(f"{ca_path}: cannot read the Redis CA certificate: {e.strerror}") from None
    except Exception:
        raise error(f"{ca_path}: not a PEM certificate") from None


def _client_tls(host: str, trust: Any) -> Any:
    """TLS options checking that the server's certificate names *host*, issued by *trust* (None: the system's CAs)."""
    from twisted.internet.ssl import optionsForClientTLS

    return optionsForClientTLS(host) if trust is None else optionsForClientTLS(host, trustRoot=trust)


# -- Sentinel: txredisapi has Sentinel/master_for, but its connections to the
# master drop TLS, a wrong password leaves them hanging unready (AUTH is not
# waited for before ROLE), a master that is being failed over stalls discovery
# for its 10 s timeout, and nothing reacts to READONLY. Hence these few pieces
# on txredisapi's own factory and pool (which do the reconnecting and backing off).

#: error replies telling that this connection's server is no longer the master
_DEMOTED = ("READONLY", "UNBLOCKED")


def _address(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class _Master(txredisapi.RedisProtocol):
    """A connection to the master the sentinels named.

    Given to the pool only once ``ROLE`` says master (the sentinels may not
    know of a failover yet); dropped when a reply says the server was demoted
    while this connection stayed open (sentinels kill such connections, this
    covers what they miss), so that its slot reconnects and asks again.
    """

    #: the (host, port) the sentinels gave for it
    address: tuple[str, int] | None = None

    def connectionMade(self) -> Deferred[None]:
        return Deferred.fromCoroutine(self._check_role())

    async def _check_role(self) -> None:
        base = txredisapi.RedisProtocol.connectionMade
        try:
            if self.password is not None:  # ROLE needs AUTH first
                try:
                    await self.auth(self.password, self.username)
                except txredisapi.ResponseError:
                    await base(self)  # asks again, then stops retrying and says why in one line
                    return
            try:
                role = await self.role()
            except txredisapi.ResponseError:
                role = ["master"]  # ROLE refused (ACL): READONLY replies still catch a replica
        except txredisapi.ConnectionError:
            return  # lost: the slot reconnects
        if not role or role[0] != "master":
            self.transport.loseConnection()  # the slot reconnects, asking the sentinels again
            return
        await base(self)

    def replyReceived(self, reply: Any) -> None:
        if isinstance(reply, txredisapi.ResponseError) and str(reply).startswith(_DEMOTED):
            self.transport.loseConnection()
        super().replyReceived(reply)


class _MasterFactory(txredisapi.RedisFactory):
    """txredisapi's pool, its connections :class:`_Master`."""

    protocol = _Master
    initialDelay = 0.1
    #: the longest wait between attempts: a failover's new master is found at most this long after its promotion
    maxDelay = RECONNECT_MAX

    #: where the connection being built goes (set by _Bound.buildProtocol just before)
    building_for: tuple[str, int] | None = None

    def retryDelay(self, attempt: int) -> float:
        # the first retry at once: the sentinels may already name a new master
        return 0.0 if attempt <= 1 else float(super().retryDelay(attempt))

    def buildProtocol(self, addr: Any) -> Any:
        protocol = super().buildProtocol(addr)
        protocol.address = self.building_for
        return protocol


@implementer(IProtocolFactory)
class _Bound:
    """A protocol factory whose protocols learn the master address they were made for.

    (ClientService hands back a proxy of the protocol, not the pool's own
    object: the address is given to the latter while it is built.)
    """

    def __init__(self, factory: Any, pool: _MasterFactory, address: tuple[str, int]) -> None:
        self._factory, self._pool, self._address = factory, pool, address

    def buildProtocol(self, addr: Any) -> Any:
        self._pool.building_for = self._address
        return self._factory.buildProtocol(addr)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._factory, name)


@implementer(IStreamClientEndpoint)
class _SentinelEndpoint:
    """Connects to the master *name* as the sentinels name it now: asked again at every (re)connection.

    The sentinels are asked in turn (the one that answered first next time,
    as Redis's guidelines for Sentinel clients say) with ``SENTINEL
    get-master-addr-by-name``, each on a connection of its own closed after.
    When the answer changes, the pool's connections to the former master are
    dropped: nothing more is written there.
    """

    def __init__(self, sentinels: Sequence[tuple[str, int]], name: str, timeout: float,
                 tls: Callable[[str], Any] | None) -> None:
        self.sentinels = list(sentinels)
        self.name = name
        self.timeout = timeout
        self._tls = tls
        #: the pool (set before it starts connecting)
        self.factory: _MasterFactory | None = None
        self.master: tuple[str, int] | None = None
        #: why the last attempt failed (for the start-up error)
        self.last_error = ""

    def connect(self, protocolFactory: IProtocolFactory) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, protocol_factory: IProtocolFactory) -> Any:
        from twisted.internet import reactor

        assert self.factory is not None, "the pool sets itself before connecting"
        address = await self._discover()
        if address != self.master:
            if self.master is not None:
                log.warn("redis: master {name} is now {new} (was {old})", name=self.name, new=_address(address),
                         old=_address(self.master))
            self.master = address
        for conn in list(self.factory.pool):
            if conn.address != address:
                conn.transport.loseConnection()
        host, port = address
        endpoint: Any = HostnameEndpoint(reactor, host, port, timeout=self.timeout)
        if self._tls is not None:
            endpoint = wrapClientTLS(self._tls(host), endpoint)
        try:
            protocol = await endpoint.connect(_Bound(protocol_factory, self.factory, address))
        except Exception as e:
            self.last_error = f"master {_address(address)}: {_reason(e, self.timeout)}"
            raise
        self.last_error = ""
        return protocol

    async def _discover(self) -> tuple[str, int]:
        from twisted.internet import error as net

        reasons = []
        timeout = min(self.timeout, SENTINEL_TIMEOUT)
        for sentinel in list(self.sentinels):
            try:
                address = await _ask_sentinel(sentinel, self.name, timeout)
            except (defer.CancelledError, net.ConnectingCancelledError):
                raise  # the pool is closing
            except Exception as e:
                reasons.append(f"{_address(sentinel)} {_reason(e, timeout)}")
                continue
            if address is None:
                reasons.append(f"{_address(sentinel)} knows no master {self.name}")
                continue
            self.sentinels.remove(sentinel)
            self.sentinels.insert(0, sentinel)
            return address
        self.last_error = "; ".join(reasons)
        raise txredisapi.ConnectionError(f"no sentinel names the master: {self.last_error}")


async def _ask_sentinel(sentinel: tuple[str, int], name: str, timeout: float) -> tuple[str, int] | None:
    """Where *sentinel* says master *name* is (None: it knows no such master), within *timeout* seconds
    to connect and as many to answer (a cancellation is the caller's: it stays one)."""
    from twisted.internet import reactor

    host, port = sentinel
    endpoint = HostnameEndpoint(reactor, host, port, timeout=timeout)
    protocol = await connectProtocol(endpoint, txredisapi.RedisProtocol(convertNumbers=False, replyTimeout=timeout))
    try:
        reply = await protocol.execute_command("SENTINEL", "get-master-addr-by-name", name)
    finally:
        protocol.transport.loseConnection()
    return (str(reply[0]), int(reply[1])) if reply else None


def _reason(e: BaseException, timeout: float) -> str:
    """*e* in a few words, for a one-line error."""
    from twisted.internet import error as net

    if isinstance(e, defer.TimeoutError | net.TimeoutError | txredisapi.TimeoutError):
        return f"no answer in {timeout:g} s"
    if isinstance(e, net.ConnectionRefusedError):
        return "connection refused"
    if isinstance(e, net.DNSLookupError):
        return "unknown host"
    return str(e).replace("Redis error: ", "") or type(e).__name__


@implementer(IArchive)
class RedisArchive(ConversationsMixin, _RedisStore):
    """IArchive in Redis sorted sets and hashes (see the module's docstring)."""

    #: no full-text search (XEP-0431): Redis keeps no index of words
    searchable = False

    def append(self, messages: list[ArchivedMessage]) -> Deferred[None]:
        keys: list[str] = []
        args: list[Any] = []
        for m in messages:
            base, localpart, domain = self._base(m.owner, "archive")
            keys += [
                f"{base}:ids",
                f"{base}:with:{m.contact}",
                f"{base}:with:{m.contact}/{m.resource}" if m.resource else "",
                f"{base}:messages",
                f"{base}:contacts",
                f"{self.prefix}:{domain}:archive-owners",
                f"{self.prefix}:archive-domains",
            ]
            args += [m.id, _record(m), m.contact, int(round(m.at * 1_000_000)), localpart, domain]
        if not keys:
            return defer.succeed(None)
        return self._eval(_APPEND, keys, args).addCallback(lambda _: None)

    def remove(self, owner: str, ids: list[str]) -> Deferred[None]:
        if not ids:
            return defer.succeed(None)
        base, _, _ = self._base(owner, "archive")
        keys = [f"{base}:ids", f"{base}:messages", f"{base}:contacts"]
        return self._eval(_REMOVE, keys, [f"{base}:with:", *ids]).addCallback(lambda _: None)

    def search(self, search: HistorySearch) -> Deferred[HistoryHits]:
        return fail(SearchUnavailable(NO_SEARCH))

    def query(self, owner: str, query: ArchiveQuery) -> Deferred[ArchivePage]:
        try:
            check_query(query)
        except ValueError as e:
            return fail(e)
        if query.text is not None:  # XEP-0431: Redis keeps no index of words
            return fail(SearchUnavailable(NO_SEARCH))
        if query.ids is not None:
            return Deferred.fromCoroutine(self._query_ids(owner, query))
        base, _, _ = self._base(owner, "archive")
        if query.contact is None:
            result_set = f"{base}:ids"
        elif query.resource is None:
            result_set = f"{base}:with:{query.contact}"
        else:
            result_set = f"{base}:with:{query.contact}/{query.resource}"
        low, high = _range(query)
        mode, bound, count_high = "first", "", ""
        if query.before is not None:
            mode = "before"
            bound = _lower_high(high, "(" + query.before) if query.before else high
        elif query.after is not None:
            mode = "after"
            bound = _higher_low(low, "(" + query.after)
            count_high = _lower_high(high, "[" + query.after)
        args = [low, high, mode, bound, count_high, query.max, query.index or 0, *named_ids(query)]
        d = self._eval(_QUERY, [result_set, f"{base}:ids", f"{base}:messages"], args)
        return d.addCallback(self._page, owner)

    def between(
        self, owner: str, contact: str, after: str | None = None, before: str | None = None, limit: int = 50,
        newest: bool = False,
    ) -> Deferred[list[ArchivedMessage]]:
        """The query script on the contact's sorted set: ranges and counts by lexical range, O(log n + limit)."""
        base, _, _ = self._base(owner, "archive")
        low = "-" if after is None else "(" + after
        high = "+" if before is None else "(" + before
        mode, bound = ("before", high) if newest else ("first", "")
        args = [low, high, mode, bound, "", limit, 0]
        d = self._eval(_QUERY, [f"{base}:with:{contact}", f"{base}:ids", f"{base}:messages"], args)
        return d.addCallback(lambda reply: self._page(reply, owner).messages)

    @staticmethod
    def _page(reply: list[Any], owner: str) -> ArchivePage:
        total, first, more = (int(x) for x in reply[:3])
        pairs = reply[3:]
        messages = [_message(owner, pairs[i], pairs[i + 1]) for i in range(0, len(pairs), 2) if pairs[i + 1]]
        return ArchivePage(messages, total, first if messages else None, not more)

    async def _query_ids(self, owner: str, query: ArchiveQuery) -> ArchivePage:
        """``ids`` queries name their messages: fetch them, then filter and page here."""
        base, _, _ = self._base(owner, "archive")
        for archive_id in named_ids(query):
            if await self._redis.zscore(f"{base}:ids", archive_id) is None:
                raise unknown(archive_id)
        wanted = sorted(set(query.ids or ()))
        records = await self._redis.hmget(f"{base}:messages", wanted) if wanted else []
        found = [_message(owner, i, r) for i, r in zip(wanted, records, strict=True) if r]
        return paginate([m for m in found if matches(m, query)], query)

    def contacts(self, owner: str) -> Deferred[list[ArchiveContact]]:
        if self._redis is None:
            return fail(ArchiveError(f"redis {self.where}: the store is not started"))
        base, _, _ = self._base(owner, "archive")
        d = self._redis.zrevrange(f"{base}:contacts", 0, -1, withscores=True)
        return d.addCallback(lambda pairs: [ArchiveContact(c, float(score) / 1_000_000) for c, score in pairs])

    def expire(self, before: float, domain: str | None = None, spare: Collection[str] = ()) -> Deferred[int]:
        return Deferred.fromCoroutine(self._expire(id_floor(before), domain, spare))

    def erase(self, owner: str) -> Deferred[int]:
        return Deferred.fromCoroutine(self._expire_owner(owner, ERASE_ALL))

    async def _expire(self, cutoff: str, domain: str | None, spare: Collection[str]) -> int:
        removed = 0
        domains = [domain] if domain is not None else await self._redis.smembers(f"{self.prefix}:archive-domains")
        for name in sorted(domains):
            for localpart in sorted(await self._redis.smembers(f"{self.prefix}:{name}:archive-owners")):
                owner = f"{localpart}@{name}"
                if swept(owner, None, spare):
                    removed += await self._expire_owner(owner, cutoff)
        return removed

    async def _expire_owner(self, owner: str, cutoff: str) -> int:
        base, _, _ = self._base(owner, "archive")
        keys = [f"{base}:ids", f"{base}:messages", f"{base}:contacts"]
        removed = 0
        while True:
            count = int(await self._eval(_EXPIRE, keys, [f"{base}:with:", cutoff, EXPIRE_CHUNK]))
            removed += count
            if count < EXPIRE_CHUNK:
                return removed


@implementer(IOfflineStore)
class RedisOfflineStore(_RedisStore):
    """IOfflineStore in one Redis list per user."""

    def push(self, owner: str, message: OfflineMessage, quota: int | None) -> Deferred[bool]:
        base, _, _ = self._base(owner, "offline")
        record = json.dumps({"at": message.at, "s": message.stanza}, separators=(",", ":"), ensure_ascii=False)
        d = self._eval(_PUSH, [base], [record, "" if quota is None else quota])
        return d.addCallback(lambda stored: int(stored) == 1)

    def pop(self, owner: str) -> Deferred[list[OfflineMessage]]:
        base, _, _ = self._base(owner, "offline")
        d = self._eval(_POP, [base], [])
        return d.addCallback(lambda records: [_offline(r) for r in records or ()])

    def count(self, owner: str) -> Deferred[int]:
        if self._redis is None:
            return fail(ArchiveError(f"redis {self.where}: the store is not started"))
        base, _, _ = self._base(owner, "offline")
        return self._redis.llen(base).addCallback(int)


def _offline(record: str) -> OfflineMessage:
    m = json.loads(record)
    return OfflineMessage(float(m["at"]), m["s"])
