"""The in-memory router: who is online where, and where each stanza goes.

Implements the server side of RFC 6120 §8.1 (addressing, 'from' stamping),
§8.3 (stanza errors) and §10 (server rules for processing XML stanzas), and
the delivery rules of RFC 6121 §8 for chatgate's sealed domains: nothing
crosses from one hosted domain to another.

Dispatch: each stanza gets one key, looked up in a dict — O(1) whatever the
number of features. IQ get/set keys name the payload
(``iq-get/host/urn:xmpp:ping:ping``); message and presence keys name the
addressing only (``message/bare``, ``presence/broadcast``). The addressing is
``host``, ``bare``, ``full``, ``broadcast`` (presence without 'to'), or
``alias`` for a mail alias of the domain, bare or with a resource; a
service of the sender's domain at its own host (:attr:`Router.subdomains`:
team rooms at ``conference.<domain>``) has ``<name>-host``, ``<name>-bare``
and ``<name>-full`` (``muc-bare`` for a room, ``muc-full`` for an occupant). Features register
handlers for keys with :meth:`Router.handle` and follow events with
:meth:`Router.listen`; the router itself knows no feature.

What a client says about who sent a stanza is never passed on: 'from' is
stamped with the sender's bound JID, and XEP-0033 ``<addresses/>`` (whose
``ofrom`` names an original sender) is taken off every message and presence a
client sends (an ``ofrom`` is only as true as the server that wrote it, and
chatgate offers no multicast). Only the server adds ``ofrom``, on a mail
alias's copies.

In a cluster (:mod:`chatgate.cluster`) the router also mirrors the sessions
other nodes hold in the domains that have users here, as
:class:`~chatgate.cluster.remote.RemoteSession` objects: :meth:`Router.resources`
shows a user's sessions on every node, so delivery, carbons and directed
presence reach them wherever they are; :meth:`Router.local_resources`,
``all_sessions``, ``idle_sessions`` and ``domain_sessions`` are this node's
only. What another node sends one of this node's sessions comes in through
:meth:`Router.relayed`.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID, InvalidFormat
from twisted.words.xish import domish

from chatgate import events
from chatgate.cluster import Cluster
from chatgate.cluster.remote import RemoteSession
from chatgate.delivery import Delivery
from chatgate.jid import jid_of
from chatgate.mirror import DirectoryMirror
from chatgate.session import Addressed, Session
from chatgate.stanza import ADDRESS_NS, StanzaError, error_reply, first_child, unavailable
from chatgate.xml import StreamError, parse_document

Handler = Callable[[domish.Element, Session, JID], Any]
#: a handler of a first-level element that is no stanza (a nonza: XEP-0352's <active/>)
NonzaHandler = Callable[[domish.Element, Session], Any]

log = Logger()
_NONE: dict[str, Session] = {}  # what resources() views for a user with no session


def _drop_addresses(stanza: domish.Element) -> None:
    """Take client-supplied XEP-0033 addressing off *stanza* (see the module docstring)."""
    for child in stanza.children:
        if getattr(child, "uri", None) == ADDRESS_NS:
            stanza.children = [c for c in stanza.children
                               if not (getattr(c, "uri", None) == ADDRESS_NS and c.name == "addresses")]
            return


class Router:
    """Sessions by bare JID and resource, per-domain online sets, delivery."""

    def __init__(self, domains: DirectoryMirror, clock: Any = None) -> None:
        if clock is None:
            from twisted.internet import reactor as clock
        self.domains = domains
        self.clock = clock
        #: bare JID -> resource -> Session
        self._sessions: dict[str, dict[str, Session]] = {}
        #: domain -> bare JIDs with at least one bound resource
        self._online: dict[str, set[str]] = {}
        #: the cluster's mirror: bare JID -> resource -> a session of another node
        self._remote: dict[str, dict[str, RemoteSession]] = {}
        #: domain -> full JID -> the same RemoteSession
        self._remote_domains: dict[str, dict[str, RemoteSession]] = {}
        self.cluster: Cluster = Cluster()
        self._handlers: dict[str, Handler] = {}
        self._listeners: dict[str, list[Callable[..., Any]]] = {}
        #: what disco#info announces for the server and for accounts (XEP-0030)
        self.server_features: set[str] = set()
        self.account_features: set[str] = set()
        #: the server's identities beside server/im (category, type, name), and XEP-0128 forms
        self.server_identities: list[tuple[str, str, str]] = []
        #: private XML (XEP-0049) another feature keeps in its own form, by the element's
        #: ``{namespace}name``: (read(session, kept element or None) -> Deferred[element],
        #: written(session, element) -> Deferred) (bookmarks: XEP-0402 §4, kept in PEP)
        self.private_bridges: dict[str, tuple[Callable[..., Any], Callable[..., Any]]] = {}
        #: an account's identities beside account/registered (pubsub/pep: XEP-0163 §8.1)
        self.account_identities: list[tuple[str, str, str]] = []
        self.server_forms: list[domish.Element] = []
        #: (namespace, name[, ((attribute, value), ...)]) of the childless features a stream
        #: offers once authenticated, beside binding (RFC 6120 §4.3.2; XEP-0352's <csi/>,
        #: the server's XEP-0115 capabilities)
        self.stream_features: list[tuple[Any, ...]] = []
        self._nonzas: dict[tuple[str, str], NonzaHandler] = {}
        #: a service every hosted domain has at <label>.<domain> -> its name in dispatch keys
        #: (``conference`` -> ``muc``: ``message/muc-bare``, ``presence/muc-full``, ``iq-get/muc-host/…``)
        self.subdomains: dict[str, str] = {}
        #: may this session read this bare JID's archive? (beside its own: a room's occupants and members)
        self.archive_readers: list[Callable[[str, str], bool]] = []
        #: id of a server-originated IQ -> (full JID asked, its Deferred)
        self._pending: dict[str, tuple[str, defer.Deferred[domish.Element]]] = {}
        self._ids = itertools.count(1)

    # -- registration

    def handle(self, key: str, handler: Handler) -> None:
        """Make *handler* the one for stanzas whose dispatch key is *key*."""
        if key in self._handlers:
            raise ValueError(f"two handlers for {key}")
        self._handlers[key] = handler

    def may_read_archive(self, reader: str, owner: str) -> bool:
        """Whether the user *reader* (a bare JID) may read the archive of the bare JID
        *owner*: their own, or one a feature opens to them (:attr:`archive_readers`)."""
        return owner == reader or any(allows(reader, owner) for allows in self.archive_readers)

    def handle_nonza(self, uri: str, name: str, handler: NonzaHandler) -> None:
        """Make *handler* the one for the first-level element {*uri*}*name* a
        bound session sends that is no stanza (XEP-0352's <active/>)."""
        if (uri, name) in self._nonzas:
            raise ValueError(f"two handlers for {{{uri}}}{name}")
        self._nonzas[(uri, name)] = handler

    def nonza(self, element: domish.Element, session: Session) -> bool:
        """Hand a bound session's non-stanza element to its handler; False when there is none."""
        handler = self._nonzas.get((element.uri, element.name))
        if handler is None:
            return False
        handler(element, session)
        return True

    def listen(self, event: str, listener: Callable[..., Any], priority: int = events.NORMAL) -> None:
        """Follow *event* (one of :data:`chatgate.events.EVENTS`, which says what
        each listener is given): listeners run from the highest *priority*
        down, in registration order within one priority (the named
        priorities are in :mod:`chatgate.events`)."""
        if event not in events.EVENTS:
            raise ValueError(f"no router event {event!r}")
        listeners = self._listeners.setdefault(event, [])
        listeners.append((-priority, len(listeners), listener))
        listeners.sort(key=lambda entry: entry[:2])

    def emit(self, event: str, *args: Any) -> bool:
        """Tell every listener of *event*; True when one of them returned True."""
        taken = False
        for _, _, listener in self._listeners.get(event, ()):
            try:
                taken = bool(listener(*args)) or taken
            except Exception:
                log.failure("listener of {event} failed", event=event)
        return taken

    def _tell(self, event: str, delivery: Delivery) -> None:
        """Tell the listeners of a delivery event in order, until one stops it."""
        for _, _, listener in self._listeners.get(event, ()):
            try:
                listener(delivery)
            except Exception:
                log.failure("listener of {event} failed", event=event)
            if delivery.stopped:
                return

    def attach_cluster(self, cluster: Cluster) -> None:
        """Deliver through *cluster* to sessions of other nodes, and tell it of this node's."""
        self.cluster = cluster
        cluster.attach(self)

    # -- sessions

    def bind(self, session: Session) -> None:
        """Make *session* reachable; an older session on the same resource is
        replaced and closed with <conflict/> (RFC 6120 §7.7.2.2), here or, through
        the cluster, on the node that holds it."""
        resources = self._sessions.setdefault(session.bare, {})
        old = resources.get(session.jid.resource)
        if old is not None:
            self.unbind(old)
            old.close("conflict", "Replaced by a new login on the same resource")
            resources = self._sessions.setdefault(session.bare, {})
        self._forget_remote(session.full)
        resources[session.jid.resource] = session
        domain_online = self._online.setdefault(session.domain, set())
        joined = not domain_online
        domain_online.add(session.bare)
        self.cluster.bound(session, joined)
        self.emit(events.SESSION_BOUND, session)

    def unbind(self, session: Session) -> None:
        """Forget *session*; listeners see it go (presence sends unavailable)."""
        resources = self._sessions.get(session.bare)
        if not resources or resources.get(session.jid.resource) is not session:
            return
        del resources[session.jid.resource]
        left = False
        if not resources:
            del self._sessions[session.bare]
            domain_online = self._online.get(session.domain)
            if domain_online is not None:
                domain_online.discard(session.bare)
                if not domain_online:
                    del self._online[session.domain]
                    left = True
        self.emit(events.SESSION_ENDED, session)
        self.cluster.unbound(session, left)
        if left:
            # nobody here needs the other nodes' sessions of this domain any more
            for remote in list(self._remote_domains.get(session.domain, {}).values()):
                self._forget_remote(remote.full)

    def stored_offline(self, bare: str) -> None:
        """A message for *bare* went to offline storage (other nodes may hold a
        session of theirs this node does not know of yet)."""
        self.cluster.stored_offline(bare)

    def session_changed(self, session: Session) -> None:
        """*session*'s presence, priority or shared state changed: other nodes mirror it."""
        self.cluster.changed(session)

    def resources(self, bare: str) -> Mapping[str, Session]:
        """The bound sessions of *bare* by resource, on every node of the
        cluster, read-only (empty when none)."""
        return MappingProxyType(self._everywhere(bare))

    def _everywhere(self, bare: str) -> Mapping[str, Session]:
        """*bare*'s sessions on every node (not to be changed: it may be the router's own dict)."""
        remote = self._remote.get(bare)
        if remote is None:
            return self._sessions.get(bare, _NONE)
        return {**remote, **self._sessions.get(bare, _NONE)}

    def local_resources(self, bare: str) -> Mapping[str, Session]:
        """The sessions of *bare* this node holds, by resource, read-only."""
        return MappingProxyType(self._sessions.get(bare, _NONE))

    def remote_sessions(self, domain: str) -> list[RemoteSession]:
        """The sessions other nodes hold in *domain*, as mirrored here."""
        return list(self._remote_domains.get(domain, _NONE).values())  # type: ignore[arg-type]

    def all_sessions(self) -> list[Session]:
        """Every bound session, of every domain."""
        return [s for resources in self._sessions.values() for s in resources.values()]

    def idle_sessions(self, before: float) -> list[Session]:
        """The bound sessions whose client last spoke at or before *before* (a ``clock.seconds()`` time)."""
        return [s for resources in self._sessions.values() for s in resources.values() if s.last_active <= before]

    def domain_sessions(self, domain: str) -> list[Session]:
        """Every bound session of *domain*."""
        return [s for bare in self._online.get(domain, ()) for s in self._sessions[bare].values()]

    def close_sessions(self, domain: str, localpart: str | None, condition: str, text: str) -> None:
        """Close the sessions of a user, or of a whole domain when *localpart* is None."""
        if localpart is None:
            victims = self.domain_sessions(domain)
        else:
            victims = list(self.local_resources(f"{localpart}@{domain}").values())
        for session in victims:
            session.close(condition, text)

    def redirect_all(self, host: str, uri: str) -> None:
        """Send every bound session elsewhere (:meth:`Session.redirect`): the node is stopping."""
        for session in self.all_sessions():
            session.redirect(host, uri)

    # -- routing

    def route(self, stanza: domish.Element, sender: Session) -> None:
        """Route one stanza a client sent (RFC 6120 §8.1, §10; RFC 6121 §8).

        In a cluster, a stanza from the first session of its domain on this
        node waits (milliseconds) until the node has read which sessions other
        nodes hold there: before that, every user on another node would look
        offline."""
        settling = self.cluster.settling(sender.domain)
        if settling is not None:
            settling.addCallback(lambda _: None if sender.closed else self.route(stanza, sender))
            settling.addErrback(self._failed, stanza, sender)
            return
        stanza["from"] = sender.full
        kind = stanza.name
        if kind != "iq":
            _drop_addresses(stanza)
        stype = stanza.getAttribute("type")
        raw_to = stanza.getAttribute("to")
        if raw_to is None:
            to = None
        else:
            try:
                to = jid_of(raw_to)
            except InvalidFormat:
                self._bounce(stanza, sender, "jid-malformed")
                return
        service = None
        if to is not None and to.host != sender.domain:
            # Hosted domains are sealed from each other and from the world; a
            # service of the sender's own domain (rooms at conference.<domain>) is its own
            label, _, parent = to.host.partition(".")
            service = self.subdomains.get(label) if parent == sender.domain else None
            if service is None:
                self._bounce(stanza, sender, "service-unavailable")
                return

        if service is not None:
            # the service's host, one of its entities (a room), or an entity's resource (an occupant)
            addr = f"{service}-{'host' if to.user is None else 'full' if to.resource else 'bare'}"
        elif to is None:
            if kind == "presence":
                addr = "broadcast"
            else:
                # RFC 6120 §10.3: no 'to' means the sender's own account.
                addr = "bare"
                to = JID(tuple=(sender.jid.user, sender.domain, None))
        elif to.user is None:
            addr = "host"
        else:
            addr = "full" if to.resource else "bare"
            if self.domains.user(to.host, to.user) is None:
                if self.domains.alias(to.host, to.user) is not None:
                    addr = "alias"  # a mail alias: the aliases feature fans it out
                else:
                    # RFC 6121 §8.5.1: no such user.
                    if kind != "presence":
                        self._bounce(stanza, sender, "service-unavailable")
                    return

        if kind == "iq":
            if stype in ("get", "set"):
                payload = first_child(stanza)
                if payload is None:
                    self._bounce(stanza, sender, "bad-request")
                    return
                key = f"iq-{stype}/{addr}/{payload.uri}:{payload.name}"
                handler = self._handlers.get(key)
                if handler is None:
                    if addr == "full":
                        handler = self.deliver_iq
                    else:
                        self._bounce(stanza, sender, "service-unavailable")
                        return
            elif stype in ("result", "error"):
                if addr == "host":
                    self._answered(stanza)
                elif addr == "full":
                    self.deliver_iq(stanza, sender, to)
                return
            else:
                self._bounce(stanza, sender, "bad-request")
                return
        else:
            handler = self._handlers.get(f"{kind}/{addr}")
            if handler is None:
                if stype != "error":
                    self._bounce(stanza, sender, "service-unavailable")
                return
        self._call(handler, stanza, sender, to)

    def _call(self, handler: Handler, stanza: domish.Element, sender: Session, to: JID) -> None:
        try:
            result = handler(stanza, sender, to)
        except Exception:
            self._failed(Failure(), stanza, sender)
            return
        if isinstance(result, defer.Deferred):
            result.addErrback(self._failed, stanza, sender)

    def _failed(self, failure: Failure, stanza: domish.Element, sender: Session) -> None:
        if failure.check(StanzaError):
            error = failure.value
            self._bounce(stanza, sender, error.condition, error.text, error.application)
        else:
            log.failure("handling {kind} from {sender}", failure, kind=stanza.name, sender=sender.full)
            self._bounce(stanza, sender, "internal-server-error")

    def _bounce(self, stanza: domish.Element, sender: Session, condition: str, text: str | None = None,
                application: domish.Element | None = None) -> None:
        """Answer *stanza* with an error, never an error with an error (§8.3.1)."""
        if stanza.getAttribute("type") != "error":
            reply = error_reply(stanza, condition, text, application)
            if not reply.hasAttribute("from"):
                reply["from"] = sender.domain
            sender.send(reply)

    def bounce(self, stanza: domish.Element, sender: Session, condition: str, text: str | None = None) -> None:
        """Public form of :meth:`_bounce`, for features."""
        self._bounce(stanza, sender, condition, text)

    def bounce_to_origin(self, stanza: domish.Element, condition: str, text: str | None = None) -> None:
        """Answer *stanza*, whose delivery failed after its sender's turn was over (an offline box
        full, another node unreachable), with an error for the resource its 'from' names, if that
        is still bound on any node; never an error for an error or a result (RFC 6120 §8.3.1)."""
        if stanza.getAttribute("type") in ("error", "result"):
            return
        try:
            origin = jid_of(stanza.getAttribute("from", ""))
        except (InvalidFormat, RuntimeError):
            return
        sender = self.resources(origin.userhost()).get(origin.resource or "")
        if sender is not None:
            self._bounce(stanza, sender, condition, text)

    # -- delivery (RFC 6121 §8.5)

    def deliver_iq(self, stanza: domish.Element, sender: Session, to: JID) -> None:
        """An IQ to a full JID reaches that resource or bounces (§8.5.3.1)."""
        target = self.resources(to.userhost()).get(to.resource)
        if target is None:
            self._bounce(stanza, sender, "service-unavailable")
            return
        if self._listeners.get(events.IQ_DELIVERING):
            delivery = Delivery(stanza, sender, target.bare, [target], self._hold_parties)
            self._tell(events.IQ_DELIVERING, delivery)
            if delivery.stopped:
                self._stopped(delivery)
                return
        target.send(stanza)

    def deliver_message(self, stanza: domish.Element, sender: Session | None, to: JID) -> None:
        """A message to a user of the sender's domain (§8.5.2, §8.5.3), as one
        :class:`~chatgate.delivery.Delivery` told to every hook."""
        mtype = stanza.getAttribute("type", "normal")
        bare = to.userhost()
        resources = self._everywhere(bare)
        if to.resource:
            target = resources.get(to.resource)
            if target is not None:
                self._send(self._message(stanza, sender, to, [target]))
                return
            if mtype not in ("normal", "chat"):
                if mtype == "groupchat" and sender is not None:
                    self._bounce(stanza, sender, "service-unavailable")
                return
        if mtype == "error":
            return
        if mtype == "groupchat":
            if sender is not None:
                self._bounce(stanza, sender, "service-unavailable")
            return
        targets = [s for s in resources.values() if s.available and s.priority >= 0]
        if targets:
            self._send(self._message(stanza, sender, to, targets))
        elif mtype != "headline":
            delivery = self._message(stanza, sender, to, [])
            self._tell(events.MESSAGE_DELIVERING, delivery)
            if delivery.stopped:
                self._stopped(delivery)
            elif not self.emit(events.MESSAGE_UNDELIVERABLE, delivery):
                self.emit(events.MESSAGE_REFUSED, delivery)
                if sender is not None:
                    self._bounce(stanza, sender, "service-unavailable")

    def _message(self, stanza: domish.Element, sender: Session | None, to: JID, targets: list[Session]) -> Delivery:
        delivery = Delivery(stanza, sender, to.userhost(), targets, self._hold_parties)
        delivery.again = lambda: self.deliver_message(stanza, sender, to)
        return delivery

    def _send(self, delivery: Delivery) -> None:
        self._tell(events.MESSAGE_DELIVERING, delivery)
        if delivery.stopped:
            self._stopped(delivery)
            return
        text = delivery.known_text()
        for target in delivery.targets:
            target.send(delivery.stanza, text)

    def _stopped(self, delivery: Delivery) -> None:
        if delivery.condition is not None and delivery.sender is not None:
            self._bounce(delivery.stanza, delivery.sender, delivery.condition, application=delivery.application)

    def deliver_copy(self, stanza: domish.Element, of: Delivery, bare: str, targets: list[Session]) -> None:
        """A copy the server sends of *of*'s message to other sessions (XEP-0280
        carbons), through the same hooks; archive and carbons know a copy by
        ``delivery.copy_of`` and leave it alone."""
        self._send(Delivery(stanza, None, bare, targets, self._hold_parties, copy_of=of))

    def deliver_stored(self, stanza: domish.Element, target: Session) -> None:
        """A message kept offline (XEP-0160), now delivered to *target*, through
        the same hooks (``delivery.stored``: archive and carbons leave it alone;
        a filter such as blocking still applies)."""
        delivery = Delivery(stanza, None, target.bare, [target], self._hold_parties, stored=True)
        delivery.again = lambda: self.deliver_stored(stanza, target)
        self._send(delivery)

    def deliver_presence(self, addressed: Addressed, sender: Session | None, targets: list[Session]) -> None:
        """One presence stanza to *targets*, each copy addressed to its session
        (RFC 6121 §4.2.2), through the ``presence-delivering`` hooks."""
        if self._listeners.get(events.PRESENCE_DELIVERING):
            delivery = Delivery(addressed.element, sender, "", targets, self._hold_parties)
            self._tell(events.PRESENCE_DELIVERING, delivery)
            if delivery.stopped:
                return
            targets = delivery.targets
        for target in targets:
            addressed.send(target)

    def deliver_presences(self, target: Session, current: list[tuple[Session | None, Addressed]]) -> None:
        """Several senders' presence to one session in one write (a newcomer
        learning the domain's presence), each through the hooks."""
        hooked = bool(self._listeners.get(events.PRESENCE_DELIVERING))
        copies = []
        for sender, addressed in current:
            if hooked:
                delivery = Delivery(addressed.element, sender, "", [target], self._hold_parties)
                self._tell(events.PRESENCE_DELIVERING, delivery)
                if delivery.stopped or not delivery.targets:
                    continue
            copies.append(addressed.serialized_for(target))
        if copies:
            target.send_serialized(b"".join(copies))

    # -- the cluster: what other nodes say

    def remote_bound(self, remote: RemoteSession) -> None:
        """Mirror a session another node bound (the cluster settled any conflict
        with a session of this node first: see :meth:`replaced`)."""
        self._forget_remote(remote.full)
        self._remote.setdefault(remote.bare, {})[remote.jid.resource] = remote
        self._remote_domains.setdefault(remote.domain, {})[remote.full] = remote

    def remote_session(self, full: str) -> RemoteSession | None:
        """The mirrored session of another node with this full JID, if any."""
        bare, _, resource = full.partition("/")
        return self._remote.get(bare, {}).get(resource)

    def replaced(self, session: Session) -> None:
        """A newer login on another node took *session*'s full JID (RFC 6120 §7.7.2.2)."""
        self.unbind(session)
        session.close("conflict", "Replaced by a new login on the same resource")

    def remote_presence(self, remote: RemoteSession, stanza: domish.Element, priority: int) -> None:
        """A session of another node sent broadcast presence (*stanza*, from its full JID)."""
        was_available = remote.available
        remote.set_presence(None if stanza.getAttribute("type") == "unavailable" else stanza, priority)
        if was_available or remote.available:
            self.emit(events.REMOTE_PRESENCE, remote, stanza, was_available)

    def remote_state(self, remote: RemoteSession) -> None:
        """A session of another node changed its shared state (``Session.state``'s
        :data:`~chatgate.session.SHARED_STATE` keys) and nothing else."""
        self.emit(events.REMOTE_STATE, remote)

    def remote_gone(self, full: str, node: str) -> None:
        """A session of *node* ended, or *node* died: forget it, and tell who saw it available."""
        remote = self.remote_session(full)
        if remote is None or remote.node != node:
            return
        self._forget_remote(full)
        if remote.available:
            remote.set_presence(None, remote.priority)
            self.emit(events.REMOTE_PRESENCE, remote, unavailable(full), True)

    def all_remote_sessions(self) -> list[RemoteSession]:
        """Every session of another node mirrored here."""
        return [s for domain in self._remote_domains.values() for s in domain.values()]

    def _forget_remote(self, full: str) -> None:
        remote = self.remote_session(full)
        if remote is None:
            return
        resources = self._remote[remote.bare]
        del resources[remote.jid.resource]
        if not resources:
            del self._remote[remote.bare]
        domain = self._remote_domains[remote.domain]
        del domain[full]
        if not domain:
            del self._remote_domains[remote.domain]

    def relayed(self, full: str, text: str) -> None:
        """A stanza (plain serialization) another node's router delivered to
        *full*, a session of this node: its node ran the delivery hooks already
        (``delivery.relayed``, with no sender: the filters that need one ran
        there), the per-target ones run here. A message whose session is gone
        is delivered again (:meth:`redeliver`)."""
        try:
            data = text.encode("utf-8")
            stanza = parse_document(data, len(data) + 1)
        except (StreamError, UnicodeError):
            log.error("a stanza from another node for {full} does not parse; dropped", full=full)
            return
        bare, _, resource = full.partition("/")
        target = self._sessions.get(bare, _NONE).get(resource)
        if target is None:
            if stanza.name == "message":
                self.redeliver(stanza, local_only=True)
            return
        delivery = Delivery(stanza, None, bare, [target], self._hold_parties, relayed=True)
        delivery.keep_text(text)
        delivery.again = lambda: self.relayed(full, text)
        if stanza.name == "message":
            self._send(delivery)
            return
        self._tell(events.PRESENCE_DELIVERING if stanza.name == "presence" else events.IQ_DELIVERING, delivery)
        if not delivery.stopped:
            for session in delivery.targets:
                session.send(stanza, text)

    def redeliver(self, stanza: domish.Element, local_only: bool = False) -> None:
        """A message a session could not take after all (it ended, its node
        died): to the recipient's available resources (this node's only with
        *local_only*), else offline storage; archived already, never again.
        A copy the server made for the user's own clients (a carbon) is not
        delivered again."""
        if stanza.getAttribute("type", "normal") not in ("chat", "normal"):
            return
        try:
            to, origin = jid_of(stanza.getAttribute("to", "")), jid_of(stanza.getAttribute("from", ""))
        except InvalidFormat:
            return
        bare = to.userhost()
        if origin.userhost() == bare:
            return
        sessions = self.local_resources(bare) if local_only else self.resources(bare)
        targets = [s for s in sessions.values() if s.available and s.priority >= 0]
        delivery = Delivery(stanza, None, bare, targets, self._hold_parties, relayed=True)
        delivery.again = lambda: self.redeliver(stanza, local_only)
        if targets:
            self._send(delivery)
        elif not self.emit(events.MESSAGE_UNDELIVERABLE, delivery):
            log.warn("a message for {bare} from another node could not be kept offline", bare=bare)

    def unacknowledged(self, session: Session, stanzas: list[domish.Element]) -> None:
        """Messages *session*'s client was sent and never acknowledged
        (XEP-0198) when the session ended: to offline storage, for the user's
        next login; archived already, never again. Copies the server made for
        the user's own clients (carbons, MAM results: from the user's bare
        JID) are not kept; MAM has them. An IQ request gets its sender
        ``service-unavailable`` (RFC 6120 §8.5.3.2.1: the resource is gone)."""
        for stanza in stanzas:
            if stanza.name == "iq":
                self.bounce_to_origin(stanza, "service-unavailable")
                continue
            if stanza.getAttribute("type", "normal") not in ("chat", "normal"):
                continue
            sender = stanza.getAttribute("from")
            try:
                origin = jid_of(sender) if sender else None
            except InvalidFormat:
                continue
            if origin is None or origin.userhost() == session.bare or not origin.user:
                continue
            delivery = Delivery(stanza, None, session.bare, [], self._hold_parties, relayed=True)
            if not self.emit(events.MESSAGE_UNDELIVERABLE, delivery):
                log.warn("a message {jid} did not acknowledge could not be kept offline", jid=session.full)

    def _hold_parties(self, delivery: Delivery, written: defer.Deferred[Any]) -> None:
        """Write-ahead (see :meth:`Delivery.wait_for`): every session of both
        parties keeps what it is sent from now on until *written* fires, so
        neither the message nor its carbons reach a client before it is in both
        archives, and a crash cannot lose a message someone has read."""
        for party in delivery.parties:
            for session in self._everywhere(party).values():
                session.hold(written)

    # -- server-originated requests

    def request(self, session: Session, iq: domish.Element, timeout: float) -> defer.Deferred[domish.Element]:
        """Send an IQ from the server to *session*; fires with the result,
        fails with StanzaError for an error reply or TimeoutError."""
        iq_id = f"cg{next(self._ids)}"
        iq["id"] = iq_id
        iq["from"] = session.domain
        iq["to"] = session.full
        d: defer.Deferred[domish.Element] = defer.Deferred(lambda _: self._pending.pop(iq_id, None))
        self._pending[iq_id] = (session.full, d)
        d.addTimeout(timeout, self.clock)
        session.send(iq)
        return d

    def _answered(self, stanza: domish.Element) -> None:
        iq_id = stanza.getAttribute("id", "")
        pending = self._pending.get(iq_id)
        if pending is None or pending[0] != stanza["from"]:
            return
        del self._pending[iq_id]
        d = pending[1]
        if stanza.getAttribute("type") == "result":
            d.callback(stanza)
        else:
            d.errback(StanzaError("undefined-condition", "the client answered with an error"))
