"""RedisCluster: chatgate nodes sharing one Redis server (``[cluster] backend = redis``).

Keys, after ``[storage] redis_prefix`` (P):

- ``P:cluster:nodes`` — sorted set: node -> its last heartbeat (ms, Redis's clock).
- ``P:cluster:inbox:<node>`` — a Stream: what other nodes send the node, one
  entry (``m`` -> JSON) per stanza or session event. The node reads it with
  ``XREAD BLOCK`` and deletes what it has handled, so what an inbox holds is
  what its node has not handled: when a node dies, the others take those
  entries (atomically, each entry once) and deliver them again, to the
  recipient's other sessions or to offline storage.
- ``P:cluster:sessions:<domain>`` — hash: full JID -> JSON ``{n: node, q: bind
  order, p: priority, x: presence or "", s: shared state}``: the session
  registry, read whole by a node when its first user of the domain binds.
- ``P:cluster:domain-nodes:<domain>`` — hash: the nodes holding sessions of the
  domain, the ones told of its session events.
- ``P:cluster:node-sessions:<node>`` — set of ``"<domain> <full JID>"`` a node
  registered, for cleaning up after it dies.
- ``P:cluster:seq`` — the bind order counter (a newer bind replaces an older
  session of the same full JID, RFC 6120 §7.7.2.2, whichever nodes they are on).

Why Streams and not pub/sub: a pub/sub message is lost when the reader is not
connected at that moment (a reconnect, a failover); an inbox entry stays until
its node handled it, and a dead node's inbox is handed to the living. A session
event is one Lua script: the registry update and one ``XADD`` per other node of
the domain, atomically, so a node joining a domain either sees a change in the
registry snapshot it reads or receives it in its inbox — never neither. A
presence change costs one inbox entry per node, not one per contact.

Every write goes over one connection, in order; a blocked ``XREAD`` has its own.
While Redis is unreachable, chat between users of one node goes on; a stanza
for another node waits up to ``[cluster] forward_timeout`` and then its sender
gets ``<recipient-unavailable/>``; what was written when the connection broke
is written again (a duplicate is possible, a loss is not). Once Redis answers
again the node registers its sessions again. A node decides others are dead
only after being connected for ``dead_after`` itself, so an outage of Redis is
not taken for the death of every node.
"""

from __future__ import annotations

import itertools
import json
import os
import secrets
import socket
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import txredisapi
from twisted.application.service import Service
from twisted.internet import defer
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.xish import domish

from chatgate import events
from chatgate.cluster import Cluster, NodeUnreachable, Peer
from chatgate.cluster.remote import RemoteSession
from chatgate.jid import jid_of
from chatgate.session import SHARED_STATE, Session
from chatgate.stanza import unavailable
from chatgate.xml import StreamError, parse_document, serialize

if TYPE_CHECKING:
    from chatgate.config import Settings

log = Logger()

#: entries read from the inbox at once
BATCH = 500
#: how long one XREAD blocks (ms); a stop waits at most this for the reader
BLOCK_MS = 1000
#: seconds between attempts to reach Redis again
RETRY = 0.5
#: seconds a stop waits for each connection to close
STOP_WAIT = 2.0
#: seconds of inbox work before the reactor gets a turn
SLICE = 0.02

# A session bound or changed (mode "join": the node's first of the domain, the
# registry comes back whole; "bind"; "change": only if the entry is still this node's).
_PUBLISH = """
local node, full, mode, prefix, domain = ARGV[1], ARGV[2], ARGV[4], ARGV[5], ARGV[6]
local entry = cjson.decode(ARGV[3])
local prev = redis.call('HGET', KEYS[1], full)
if mode == 'change' then
  if not prev then return {0} end
  local p = cjson.decode(prev)
  if p.n ~= node then return {0} end
  entry.q = p.q
else
  entry.q = redis.call('INCR', KEYS[4])
  redis.call('SADD', KEYS[3], domain .. ' ' .. full)
  redis.call('HSET', KEYS[2], node, '1')
end
redis.call('HSET', KEYS[1], full, cjson.encode(entry))
if mode == 'change' then entry.k = 'c' else entry.k = 'b' end
entry.j = full
local event = cjson.encode(entry)
for _, other in ipairs(redis.call('HKEYS', KEYS[2])) do
  if other ~= node then redis.call('XADD', prefix .. ':cluster:inbox:' .. other, '*', 'm', event) end
end
if mode == 'join' then return {entry.q, prev or false, redis.call('HGETALL', KEYS[1])} end
return {entry.q, prev or false}
"""

# A session ended (ARGV[5] = '1': the node's last of the domain).
_UNPUBLISH = """
local node, full, prefix, domain = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local prev = redis.call('HGET', KEYS[1], full)
if prev and cjson.decode(prev).n == node then redis.call('HDEL', KEYS[1], full) end
redis.call('SREM', KEYS[3], domain .. ' ' .. full)
if ARGV[5] == '1' then redis.call('HDEL', KEYS[2], node) end
local event = cjson.encode({k = 'u', n = node, j = full})
for _, other in ipairs(redis.call('HKEYS', KEYS[2])) do
  if other ~= node then redis.call('XADD', prefix .. ':cluster:inbox:' .. other, '*', 'm', event) end
end
return 1
"""

# Tell the other nodes of a domain (ARGV[3], an event).
_NOTIFY = """
for _, other in ipairs(redis.call('HKEYS', KEYS[1])) do
  if other ~= ARGV[1] then redis.call('XADD', ARGV[2] .. ':cluster:inbox:' .. other, '*', 'm', ARGV[3]) end
end
return 1
"""

# The heartbeat: this node's time in the sorted set; every node's comes back, with now.
_HEARTBEAT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local known = redis.call('ZADD', KEYS[1], now, ARGV[1]) == 0
return {tostring(now), redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES'), known and 1 or 0}
"""

# Reap a dead node (once: the caller that removes it from the set does it):
# its registry entries and its place in its domains go. ARGV[3] = '1' forces
# it (a node reaping its own previous run at start).
_REAP = """
local dead, prefix = ARGV[1], ARGV[2]
local score = redis.call('ZSCORE', KEYS[1], dead)
if not score and redis.call('SCARD', KEYS[2]) == 0 then return 0 end
if ARGV[3] ~= '1' then
  if not score then return 0 end
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  if tonumber(score) > now - tonumber(ARGV[4]) then return 0 end
end
redis.call('ZREM', KEYS[1], dead)
for _, item in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  local space = string.find(item, ' ', 1, true)
  local domain, full = string.sub(item, 1, space - 1), string.sub(item, space + 1)
  local key = prefix .. ':cluster:sessions:' .. domain
  local entry = redis.call('HGET', key, full)
  if entry and cjson.decode(entry).n == dead then redis.call('HDEL', key, full) end
  redis.call('HDEL', prefix .. ':cluster:domain-nodes:' .. domain, dead)
end
redis.call('DEL', KEYS[2])
return 1
"""

# Take up to ARGV[1] entries out of a dead node's inbox: each entry goes to one taker.
_CLAIM = """
local entries = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', ARGV[1])
for _, entry in ipairs(entries) do redis.call('XDEL', KEYS[1], entry[1]) end
if #entries == 0 then redis.call('DEL', KEYS[1]) end
return entries
"""


class _Write:
    """One write waiting for, or on, the connection."""

    __slots__ = ("kind", "command", "at", "then", "data")

    def __init__(self, kind: str, command: tuple[Any, ...], at: float, then: Any = None,
                 data: bytes | None = None) -> None:
        #: "s" a stanza for another node (expires), "e" a session event, "x" housekeeping
        self.kind = kind
        self.command = command
        self.at = at
        self.then = then
        self.data = data


class RedisCluster(Cluster):
    """The bus on Redis (see the module's docstring)."""

    clustered = True

    def __init__(self, settings: Settings, reactor: Any = None) -> None:
        if reactor is None:
            from twisted.internet import reactor
        self.reactor = reactor
        c, s = settings.cluster, settings.storage
        self.node_id = c.node_id or f"{socket.gethostname()}-{os.getpid()}"
        #: seconds of the last heartbeat's round trip to Redis (None before the first)
        self.redis_rtt: float | None = None
        self._redis_ahead: float | None = None
        #: called with the seconds an inbox batch's oldest entry waited (/metrics), if set
        self.on_bus_latency: Any = None
        self.heartbeat = c.heartbeat
        self.dead_after = c.dead_after
        #: a node silent this long is dead: its last beat plus the time until the next check here
        #: (up to one heartbeat) stays within dead_after
        self.silence = c.dead_after - c.heartbeat
        self.forward_timeout = c.forward_timeout
        self.prefix = s.redis_prefix
        self._settings = settings
        self.router: Peer | None = None
        self._cmd: Any = None
        self._reader: Any = None
        self._stores: list[Any] = []
        #: the Redis server as logs name it (host:port, or the master through sentinels)
        self._where = ""
        self._outbox: deque[_Write] = deque()
        self._in_flight: deque[_Write] = deque()
        self._up = False
        self._up_since = 0.0
        self._running = False
        #: full JID -> bind order, for this node's sessions whose bind Redis answered
        self._seqs: dict[str, int] = {}
        #: full JID -> another node's bind event that waits for this node's own bind order
        self._undecided: dict[str, dict[str, Any]] = {}
        #: domain -> events that wait for the registry snapshot of a join under way
        self._joining: dict[str, list[dict[str, Any]]] = {}
        #: domain -> what this node's stanzas of the domain wait for, while that snapshot is read
        self._settling: dict[str, defer.Deferred[None]] = {}
        #: nodes alive at the last heartbeat, and those found dead since
        self._alive: set[str] = set()
        self._dead_nodes: set[str] = set()
        self._last_id = "0-0"
        #: heartbeats answered since the start
        self._beats = 0
        #: the process is shutting down (set before the service tree stops)
        self._leaving = False
        self._beat: LoopingCall | None = None
        self._reading: defer.Deferred[None] | None = None
        self._probing = False
        self._shutdown_trigger: Any = None
        #: request id -> (the node asked, the Deferred of its answer)
        self._asked: dict[str, tuple[str, defer.Deferred[dict[str, Any]]]] = {}
        self._handlers: dict[str, Callable[[dict[str, Any]], defer.Deferred[dict[str, Any]]]] = {}
        #: kind -> the handler of what other nodes tell (Cluster.tell)
        self._told: dict[str, Callable[[dict[str, Any]], None]] = {}
        self._request_ids = itertools.count(1)
        #: stanzas this run forwards are numbered (this run's name, a counter), so that a
        #: receiver drops a second copy: the outbox writes again what was on the wire when
        #: Redis went (a failover may have kept the first); sender run -> highest number seen
        self._run = secrets.token_hex(6)
        self._stanza_numbers = itertools.count(1)
        self._seen: dict[str, int] = {}

    # -- the Cluster interface

    def attach(self, router: Peer) -> None:
        self.router = router

    def service(self) -> Service:
        return _BusService(self)

    def bound(self, session: Session, joined: bool) -> None:
        if joined:
            self._joining.setdefault(session.domain, [])
            if session.domain not in self._settling:
                waiting = self._settling[session.domain] = defer.Deferred()
                # bounded: with Redis unreachable the stanzas go on as they would without a cluster
                self.reactor.callLater(self.forward_timeout, self._settled, session.domain, waiting)
        self._event(session, "join" if joined else "bind")

    def settling(self, domain: str) -> defer.Deferred[None] | None:
        return self._settling.get(domain)

    def _settled(self, domain: str, only: defer.Deferred[None] | None = None) -> None:
        """This node knows the other nodes' sessions of *domain* (or gave up waiting for *only*):
        the stanzas that waited go on."""
        waiting = self._settling.get(domain)
        if waiting is not None and (only is None or only is waiting):
            del self._settling[domain]
            waiting.callback(None)

    def changed(self, session: Session) -> None:
        self._event(session, "change")

    def unbound(self, session: Session, left: bool) -> None:
        self._seqs.pop(session.full, None)
        self._undecided.pop(session.full, None)
        if left:
            self._joining.pop(session.domain, None)
            self._settled(session.domain)
        keys = self._keys(session.domain, self.node_id)
        self._write(_Write("e", ("eval", _UNPUBLISH, keys[:3],
                                 [self.node_id, session.full, self.prefix, session.domain, "1" if left else "0"]),
                           self._now()))

    def stored_offline(self, bare: str) -> None:
        domain = bare.partition("@")[2]
        event = json.dumps({"k": "o", "j": bare})
        self._write(_Write("e", ("eval", _NOTIFY, [self._keys(domain, self.node_id)[1]],
                                 [self.node_id, self.prefix, event]), self._now()))

    def forward(self, node: str, full: str, data: bytes) -> None:
        if node in self._dead_nodes:
            self._lost(data)  # its node is gone: deliver it again from here
            return
        self._send(node, {"k": "s", "t": full, "x": data.decode("utf-8"), "r": self._run,
                          "n": next(self._stanza_numbers)}, data)

    def request(self, node: str, kind: str, payload: dict[str, Any], timeout: float) -> defer.Deferred[dict[str, Any]]:
        if node in self._dead_nodes or not self._running:
            return defer.fail(NodeUnreachable(f"node {node} is gone"))
        request_id = f"{self.node_id}:{next(self._request_ids)}"
        d: defer.Deferred[dict[str, Any]] = defer.Deferred(lambda _: self._asked.pop(request_id, None))
        self._asked[request_id] = (node, d)

        def timed_out(failure: Failure) -> Failure:
            self._asked.pop(request_id, None)
            if failure.check(defer.TimeoutError, defer.CancelledError):
                raise NodeUnreachable(f"node {node} did not answer in {timeout:g} s")
            return failure

        d.addTimeout(timeout, self.reactor)
        d.addErrback(timed_out)
        self._send(node, {"k": "q", "i": request_id, "o": self.node_id, "w": kind, "p": payload})
        return d

    def tell(self, domain: str, kind: str, payload: dict[str, Any]) -> None:
        event = json.dumps({"k": "f", "w": kind, "p": payload})
        self._write(_Write("e", ("eval", _NOTIFY, [self._keys(domain, self.node_id)[1]],
                                 [self.node_id, self.prefix, event]), self._now()))

    def hear(self, kind: str, handler: Callable[[dict[str, Any]], None]) -> None:
        if kind in self._told:
            raise ValueError(f"two handlers for cluster news of {kind}")
        self._told[kind] = handler

    def answer(self, kind: str, handler: Callable[[dict[str, Any]], defer.Deferred[dict[str, Any]]]) -> None:
        if kind in self._handlers:
            raise ValueError(f"two handlers for cluster requests of {kind}")
        self._handlers[kind] = handler

    def _asked_by(self, event: dict[str, Any]) -> None:
        handler = self._handlers.get(event.get("w", ""))
        origin, request_id = event.get("o", ""), event.get("i", "")

        def reply(payload: Any) -> None:
            if isinstance(payload, Failure):
                log.failure("cluster: answering {kind} for {node}", payload, kind=event.get("w"), node=origin)
                payload = {"error": "the node holding it failed to answer"}
            self._send(origin, {"k": "a", "i": request_id, "p": payload})

        if handler is None:
            reply({"error": f"no handler for {event.get('w')}"})
            return
        defer.maybeDeferred(handler, event.get("p") or {}).addBoth(reply)

    def _answered(self, event: dict[str, Any]) -> None:
        asked = self._asked.pop(event.get("i", ""), None)
        if asked is not None and not asked[1].called:
            asked[1].callback(event.get("p") or {})

    # -- keys and entries

    def _send(self, node: str, event: dict[str, Any], data: bytes | None = None) -> None:
        """Put *event* in *node*'s inbox; *data*: the stanza it carries, whose sender
        hears of it if it cannot be handed over in time."""
        command = ("execute_command", "XADD", self._inbox(node), "*", "m", json.dumps(event))
        self._write(_Write("s" if data is not None else "x", command, self._now(), data=data))

    def _inbox(self, node: str) -> str:
        return f"{self.prefix}:cluster:inbox:{node}"

    def _keys(self, domain: str, node: str) -> list[str]:
        p = f"{self.prefix}:cluster"
        return [f"{p}:sessions:{domain}", f"{p}:domain-nodes:{domain}", f"{p}:node-sessions:{node}", f"{p}:seq"]

    def _entry(self, session: Session) -> str:
        presence = session.presence
        shared = {key: session.state[key] for key in SHARED_STATE if key in session.state}
        return json.dumps({"n": self.node_id, "p": session.priority,
                           "x": serialize(presence) if presence is not None else "", "s": shared})

    def _event(self, session: Session, mode: str) -> None:
        self._write(self._publishing(session, mode))

    def _publishing(self, session: Session, mode: str) -> _Write:
        """The write of *session*'s entry and its event (mode join, bind or change: see _PUBLISH)."""
        args = [self.node_id, session.full, self._entry(session), mode, self.prefix, session.domain]
        return _Write("e", ("eval", _PUBLISH, self._keys(session.domain, self.node_id), args), self._now(),
                      then=lambda reply: self._published(session, mode, reply))

    def _published(self, session: Session, mode: str, reply: list[Any]) -> None:
        if mode == "change" or self.router is None:
            return
        router = self.router
        held = router.local_resources(session.bare).get(session.jid.resource) is session
        if held:
            self._seqs[session.full] = int(reply[0])
        if mode == "join":
            if held or router.domain_sessions(session.domain):
                applying = defer.Deferred.fromCoroutine(self._apply_snapshot(session.domain, reply[2] or []))
                applying.addErrback(lambda f: log.failure("cluster: reading the sessions of {domain}", f,
                                                          domain=session.domain))
            else:
                self._joining.pop(session.domain, None)
                self._settled(session.domain)
        waiting_event = self._undecided.pop(session.full, None)
        if waiting_event is not None and held:
            self._handle(waiting_event)

    async def _apply_snapshot(self, domain: str, snapshot: list[Any]) -> None:
        """Mirror the registry of *domain* (this node's first session there), a slice of work at a
        time (thousands of sessions, each told to this node's users), then the events that waited."""
        router = self.router
        assert router is not None
        listed = set(snapshot[::2])
        for remote in router.remote_sessions(domain):
            if remote.full not in listed:  # ended while this node could not hear of it
                router.remote_gone(remote.full, remote.node)
        slice_started = time.monotonic()
        for i in range(0, len(snapshot), 2):
            entry = json.loads(snapshot[i + 1])
            if entry["n"] != self.node_id and entry["n"] not in self._dead_nodes:
                entry["j"] = snapshot[i]
                self._mirror(entry, snapshot=True)
            if time.monotonic() - slice_started > SLICE:
                await _sleep(self.reactor, 0)  # heartbeats and clients get their turn
                slice_started = time.monotonic()
        for event in self._joining.pop(domain, None) or ():
            self._handle(event)
        self._settled(domain)
        if not router.domain_sessions(domain):  # the domain's last user here left meanwhile
            for remote in router.remote_sessions(domain):
                router.remote_gone(remote.full, remote.node)

    # -- writing, in order, surviving an outage

    def _now(self) -> float:
        return float(self.reactor.seconds())

    def _write(self, write: _Write) -> None:
        self._outbox.append(write)
        if self._up:
            self._pump()

    def _connected(self) -> bool:
        """Whether the write connection is up now (txredisapi would hold a command until it is)."""
        return bool(self._cmd is not None and self._cmd._factory.size)

    def _pump(self) -> None:
        if self._up and self._outbox and not self._connected():
            self._down()
            return
        while self._up and self._outbox:
            write = self._outbox.popleft()
            self._in_flight.append(write)
            method, *args = write.command
            try:
                d = getattr(self._cmd, method)(*args)
            except Exception:
                d = defer.fail()
            d.addCallbacks(self._written, self._not_written, (write,), None, (write,))

    def _written(self, reply: Any, write: _Write) -> None:
        try:
            self._in_flight.remove(write)
        except ValueError:
            return  # already put back for a retry: it will be written again
        if write.then is not None:
            try:
                write.then(reply)
            except Exception:
                log.failure("handling a cluster write's answer")

    def _not_written(self, failure: Failure, write: _Write) -> None:
        if failure.check(txredisapi.ResponseError) and not failure.check(txredisapi.ConnectionError):
            self._in_flight.remove(write) if write in self._in_flight else None
            log.error("redis refused a cluster write: {error}", error=failure.value)
            if write.kind == "s" and write.data is not None:
                self._refuse(write.data)
            return
        self._down(failure)

    def _down(self, failure: Failure | None = None) -> None:
        """The connection broke: what was on it is written again, first, once Redis answers."""
        if self._in_flight:
            self._outbox.extendleft(reversed(self._in_flight))
            self._in_flight.clear()
        if self._up:
            reason = failure.getErrorMessage() if failure is not None else "no answer"
            log.warn("cluster: redis {where} unreachable ({reason}); retrying", where=self._where, reason=reason)
        self._up = False
        self._probe()

    def _probe(self) -> None:
        if self._probing or not self._running:
            return
        self._probing = True

        def answered(_: Any) -> None:
            self._probing = False
            if self._running and not self._up:
                self._back()

        def failed(_: Failure) -> None:
            self._probing = False
            self._expire()
            if self._running:
                self.reactor.callLater(RETRY, self._probe)

        if not self._connected():
            failed(Failure(ConnectionError("not connected")))
            return
        d = self._cmd.ping()
        d.addTimeout(RETRY * 2, self.reactor)
        d.addCallbacks(answered, failed)

    def _back(self) -> None:
        """Redis answers again: register this node's sessions again (its data may be gone), then go on."""
        log.info("cluster: redis reachable again; registering this node's sessions")
        self._up = True
        self._up_since = self._now()
        self._register_all()
        self._pump()
        self._beat_now()

    def _register_all(self) -> None:
        """Publish every session of this node again, each domain's first reading the registry anew
        (after an outage, or after the other nodes took this node for dead), and deliver what was kept
        offline meanwhile for users who are here."""
        resync: list[_Write] = []
        kept = [w for w in self._outbox if w.kind != "e" or w.command[1] is _UNPUBLISH]
        self._outbox = deque(kept)
        router = self.router
        if router is not None:
            joined: set[str] = set()
            for session in router.all_sessions():
                mode = "bind" if session.domain in joined else "join"
                if mode == "join":
                    self._joining.setdefault(session.domain, [])
                joined.add(session.domain)
                resync.append(self._publishing(session, mode))
        self._outbox.extend(resync)
        if router is not None:
            for bare in {session.bare for session in router.all_sessions()}:
                router.emit(events.OFFLINE_WAITING, bare)

    def _expire(self) -> None:
        """Stanzas for other nodes that waited longer than forward_timeout: their senders get an error."""
        cutoff = self._now() - self.forward_timeout
        kept: deque[_Write] = deque()
        for write in self._outbox:
            if write.kind == "s" and write.at <= cutoff and write.data is not None:
                self._refuse(write.data)
            else:
                kept.append(write)
        self._outbox = kept

    def _refuse(self, data: bytes) -> None:
        """A stanza for another node cannot be handed over: its sender learns it (RFC 6120 §8.3.3.13)."""
        stanza = _parse(data)
        if stanza is not None and self.router is not None and stanza.name != "presence":
            self.router.bounce_to_origin(stanza, "recipient-unavailable",
                                         "The recipient's server node cannot be reached; it was not delivered")

    def _lost(self, data: bytes) -> None:
        """A stanza for a session of a dead node: delivered again from here, to
        this node's sessions or offline (where a node holding the user finds it)."""
        stanza = _parse(data)
        if stanza is not None and stanza.name == "message" and self.router is not None:
            self.router.redeliver(stanza, local_only=True)

    # -- reading this node's inbox

    def _read_loop(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._read_forever())

    async def _read_forever(self) -> None:
        inbox = self._inbox(self.node_id)
        while self._running:
            try:
                reply = await self._reader.execute_command("XREAD", "COUNT", BATCH, "BLOCK", BLOCK_MS,
                                                           "STREAMS", inbox, self._last_id)
            except Exception as e:
                if not self._running:
                    return
                log.debug("cluster: reading the inbox failed ({error}); again soon", error=e)
                await _sleep(self.reactor, RETRY)
                continue
            if not reply:
                continue
            ids = []
            slice_started = time.monotonic()
            observe = self.on_bus_latency
            for _stream, entries in reply:
                if observe is not None and entries and self._redis_ahead is not None:
                    # the oldest entry of the batch: how long it waited between the nodes
                    written = int(str(entries[0][0]).split("-", 1)[0]) / 1000
                    observe(max(0.0, time.time() + self._redis_ahead - written))
                for entry_id, fields in entries:
                    ids.append(entry_id)
                    self._last_id = entry_id
                    self._receive(fields)
                    if time.monotonic() - slice_started > SLICE:
                        # a batch can be seconds of work (presence for thousands of users):
                        # heartbeats and clients get their turn, or the others take this node for dead
                        await _sleep(self.reactor, 0)
                        slice_started = time.monotonic()
            if ids:
                self._write(_Write("x", ("execute_command", "XDEL", inbox, *ids), self._now()))

    def _receive(self, fields: list[Any]) -> None:
        event = _event_of(fields)
        if event is None:
            log.error("cluster: an inbox entry that is not chatgate's; ignored")
            return
        try:
            self._handle(event)
        except Exception:
            log.failure("cluster: handling {kind} from the inbox", kind=event.get("k"))

    def _handle(self, event: dict[str, Any]) -> None:
        router = self.router
        if router is None:
            return
        kind = event.get("k")
        if kind == "s":
            run, number = event.get("r"), event.get("n")
            if run is not None and isinstance(number, int):
                if self._seen.get(run, 0) >= number:
                    return  # written twice by its sender across a Redis outage: delivered already
                self._seen[run] = number
            router.relayed(event["t"], event["x"])
            return
        if kind == "q":
            self._asked_by(event)
            return
        if kind == "a":
            self._answered(event)
            return
        if kind == "o":
            router.emit(events.OFFLINE_WAITING, event.get("j", ""))
            return
        if kind == "f":
            told = self._told.get(event.get("w", ""))
            if told is not None:
                told(event.get("p") or {})
            return
        full = event.get("j", "")
        domain = full.partition("@")[2].partition("/")[0]
        waiting = self._joining.get(domain)
        if waiting is not None:
            waiting.append(event)  # after the registry snapshot under way
            return
        if not router.domain_sessions(domain):
            return  # nobody here needs this domain's sessions
        if kind == "b":
            self._mirror(event)
        elif kind == "c":
            remote = router.remote_session(full)
            if remote is None:
                self._mirror(event)  # its bind was missed (an outage): mirror it now
            elif remote.node == event["n"]:
                self._update(remote, event)
        elif kind == "u":
            router.remote_gone(full, event["n"])

    def _mirror(self, entry: dict[str, Any], snapshot: bool = False) -> None:
        """Another node's session, from its bind event or the registry snapshot."""
        router = self.router
        assert router is not None
        full, seq = entry["j"], int(entry.get("q", 0))
        bare, _, resource = full.partition("/")
        local = router.local_resources(bare).get(resource)
        if local is not None:
            mine = self._seqs.get(full)
            if mine is None:
                if not snapshot:
                    self._undecided[full] = entry  # decided when this node's own bind is answered
                return
            if mine > seq:
                return  # this node's is the newer: the other node closes its own
            router.replaced(local)
        current = router.remote_session(full)
        if current is not None and current.seq > seq:
            return
        try:
            jid = jid_of(full)
        except Exception:
            return
        self._dead_nodes.discard(entry["n"])  # a node binding sessions lives (restarted with its node_id)
        remote = RemoteSession(jid, entry["n"], self, seq)
        router.remote_bound(remote)
        self._update(remote, entry)

    def _update(self, remote: RemoteSession, entry: dict[str, Any]) -> None:
        state = dict(entry.get("s") or {})
        state_changed = state != remote.state
        remote.state = state
        priority = int(entry.get("p", 0))
        text = entry.get("x") or ""
        assert self.router is not None
        if text and text == remote.presence_text and priority == remote.priority:
            if state_changed:  # the same presence: only what features share changed (rooms entered)
                self.router.remote_state(remote)
            return
        remote.presence_text = text
        if text:
            stanza = _parse(text.encode("utf-8"))
            if stanza is None:
                return
        elif remote.available:
            stanza = unavailable(remote.full)
        else:
            remote.priority = priority
            if state_changed:
                self.router.remote_state(remote)
            return
        self.router.remote_presence(remote, stanza, priority)

    # -- heartbeats and the dead

    def _beat_now(self) -> None:
        if not self._up:
            return
        key = f"{self.prefix}:cluster:nodes"
        sent = time.monotonic()
        self._write(_Write("x", ("eval", _HEARTBEAT, [key], [self.node_id]), self._now(),
                           then=lambda reply: self._beaten(reply, sent)))

    def _beaten(self, reply: list[Any], sent: float | None = None) -> None:
        now = int(reply[0])
        if sent is not None:
            #: seconds a heartbeat took to Redis and back (queueing here included), for /metrics
            self.redis_rtt = time.monotonic() - sent
            # Redis's clock against this one, to date inbox entries (their ids are Redis's ms)
            self._redis_ahead = now / 1000 - time.time() - self.redis_rtt / 2
        scores = reply[1]
        if not int(reply[2]) and self._beats:
            # gone from the set while running: the others took this node for dead (a pause
            # longer than dead_after) and reaped it; its sessions are still here
            log.warn("cluster: the other nodes took this node for dead; registering its sessions again")
            self._register_all()
            self._pump()
        self._beats += 1
        alive = set()
        for i in range(0, len(scores), 2):
            if float(scores[i + 1]) >= now - self.silence * 1000:
                alive.add(scores[i])
        stale = {scores[i] for i in range(0, len(scores), 2)} - alive
        left = self._alive - alive - stale  # gone from the set: stopped cleanly, or reaped by another node
        self._alive = alive
        self._dead_nodes -= alive
        if self._up_since > self._now() - self.dead_after or self._leaving:
            # not connected long enough to tell a dead node from an outage; or stopping: its own
            # sessions' last presences keep the others busy, and a leaving node judges nobody
            return
        router = self.router
        if router is None:
            return
        gone = {remote.node for remote in router.all_remote_sessions()} - alive
        for node in (gone | stale | left) - {self.node_id}:
            self._dead(node)

    def _dead(self, node: str) -> None:
        """*node* stopped beating: its sessions end here, and its inbox is delivered again."""
        self._dead_nodes.add(node)
        for request_id, (asked, d) in list(self._asked.items()):
            if asked == node:
                del self._asked[request_id]
                d.errback(NodeUnreachable(f"node {node} is gone"))
        router = self.router
        if router is not None:
            for remote in [r for r in router.all_remote_sessions() if r.node == node]:
                router.remote_gone(remote.full, node)
        def reaped(won: Any) -> None:
            if int(won or 0):
                log.info("cluster: node {node} is gone; its sessions ended", node=node)
            self._claim(node)

        self._write(_Write("x", ("eval", *self._reaping(node, force=False)), self._now(), then=reaped))

    def _reaping(self, node: str, force: bool) -> tuple[str, list[str], list[str]]:
        """The script, keys and arguments that reap *node* (see _REAP)."""
        p = f"{self.prefix}:cluster"
        return _REAP, [f"{p}:nodes", f"{p}:node-sessions:{node}"], [
            node, self.prefix, "1" if force else "0", str(int(self.silence * 1000))]

    def _redeliver(self, entries: list[Any]) -> None:
        """Inbox entries a dead node (or this node's previous run) left: its stanzas delivered again."""
        for _entry_id, fields in entries:
            event = _event_of(fields)
            if event is not None and event.get("k") == "s":
                self._lost(event["x"].encode("utf-8"))

    def _claim(self, node: str) -> None:
        """Deliver again what *node* had not handled (each entry taken by one node)."""

        def claimed(entries: list[Any]) -> None:
            self._redeliver(entries or [])
            if entries:
                self._claim(node)

        self._write(_Write("x", ("eval", _CLAIM, [self._inbox(node)], [BATCH]), self._now(), then=claimed))

    # -- start and stop

    async def start(self) -> None:
        from chatgate.storage import _redis_options
        from chatgate.storage.redis import _RedisStore

        options = _redis_options(self._settings)
        cmd, reader = _RedisStore(**options, poolsize=1), _RedisStore(**options, poolsize=1)  # type: ignore[arg-type]
        await cmd.start()
        await reader.start()
        self._stores = [cmd, reader]
        self._where = cmd.where
        self._cmd, self._reader = cmd._redis, reader._redis
        self._running = True
        self._up = True
        self._up_since = self._now() - self.dead_after  # a start is no outage: the dead are dead
        await self._reap_previous_run()
        self._shutdown_trigger = self.reactor.addSystemEventTrigger("before", "shutdown", self._leave)
        self._beat_now()
        self._beat = LoopingCall(self._tick)
        self._beat.clock = self.reactor
        self._beat.start(self.heartbeat, now=False)
        self._reading = self._read_loop()
        log.info("cluster: node {node} on redis {where}", node=self.node_id, where=self._where)

    async def _reap_previous_run(self) -> None:
        """A previous run of this node (same node_id) is dead: its registry
        entries go and its inbox is delivered again, before this run reads
        the inbox (so nothing is handled twice)."""
        if int(await self._cmd.eval(*self._reaping(self.node_id, force=True)) or 0):
            log.info("cluster: this node's previous run left sessions behind; they ended")
        for _ in range(10_000):  # bounded: BATCH entries each
            entries = await self._cmd.eval(_CLAIM, [self._inbox(self.node_id)], [BATCH])
            if not entries:
                break
            self._redeliver(entries)

    def _tick(self) -> None:
        if self._up and not self._connected():
            self._down()
        if self._up:
            self._beat_now()
        else:
            self._expire()

    def _leave(self) -> None:
        self._leaving = True

    async def stop(self) -> None:
        """Leave: what is written goes out (bounded), the node leaves the set, the connections close."""
        self._leaving = True
        if self._shutdown_trigger is not None:
            try:
                self.reactor.removeSystemEventTrigger(self._shutdown_trigger)
            except (ValueError, KeyError):
                pass  # fired already (the process is shutting down)
            self._shutdown_trigger = None
        if self._beat is not None and self._beat.running:
            self._beat.stop()
        deadline = self._now() + 2 * BLOCK_MS / 1000
        while (self._outbox or self._in_flight) and self._up and self._now() < deadline:
            await _sleep(self.reactor, 0.02)
        if self._up:
            try:
                await self._cmd.zrem(f"{self.prefix}:cluster:nodes", self.node_id)
            except Exception:
                log.failure("cluster: leaving the node set")
        self._running = False
        # bounded: with Redis unreachable txredisapi may wait for a connection forever
        if self._reading is not None:
            reading, self._reading = self._reading, None
            for store in self._stores[1:]:
                await _within(self.reactor, store.stop(), STOP_WAIT)
            await _within(self.reactor, reading, STOP_WAIT)
        for store in self._stores[:1]:
            await _within(self.reactor, store.stop(), STOP_WAIT)
        self._stores = []


class _BusService(Service):
    name = "cluster"

    def __init__(self, cluster: RedisCluster) -> None:
        self.cluster = cluster

    def startService(self) -> defer.Deferred[None]:
        Service.startService(self)
        return defer.Deferred.fromCoroutine(self.cluster.start())

    def stopService(self) -> defer.Deferred[None]:
        Service.stopService(self)
        return defer.Deferred.fromCoroutine(self.cluster.stop())


def _event_of(fields: list[Any]) -> dict[str, Any] | None:
    """The event an inbox entry (field, value, ...) holds, None when it holds none of chatgate's."""
    try:
        event = json.loads(dict(zip(fields[::2], fields[1::2], strict=False))["m"])
    except (KeyError, ValueError, TypeError):
        return None
    return event if isinstance(event, dict) else None


def _parse(data: bytes) -> domish.Element | None:
    try:
        return parse_document(data, len(data) + 1)
    except StreamError:
        log.error("cluster: a stanza that does not parse; dropped")
        return None


async def _within(reactor: Any, d: defer.Deferred[Any], seconds: float) -> None:
    """Wait for *d*, at most *seconds*; whatever it ends with is only logged."""
    d.addTimeout(seconds, reactor)
    try:
        await d
    except Exception as e:
        log.debug("cluster: stopping: {error}", error=e)


def _sleep(reactor: Any, seconds: float) -> defer.Deferred[None]:
    d: defer.Deferred[None] = defer.Deferred()
    reactor.callLater(seconds, d.callback, None)
    return d

