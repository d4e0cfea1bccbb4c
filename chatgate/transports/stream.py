"""The XMPP stream as every transport carries it: negotiation, then stanzas.

RFC 6120 §4.3 (stream features), §5 (STARTTLS), §6 (SASL), §7 (resource
binding) and RFC 3921 §3 (the empty session request old clients send). c2s
feeds this class the first-level elements of its TCP stream, BOSH those of its
HTTP bodies (XEP-0206); each supplies a :class:`StreamTransport`. After binding
every stanza goes to the router, which never learns the transport. A
transport given a :class:`~chatgate.transports.sm.Resumption` offers stream
management (XEP-0198, :mod:`chatgate.transports.sm`): after SASL a client
may resume a session instead of binding a new one.
"""

from __future__ import annotations

import base64
import functools
import secrets

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID
from twisted.words.protocols.jabber.xmpp_stringprep import nameprep
from twisted.words.xish import domish

from chatgate.auth.names import resourceprep
from chatgate.auth.sasl import Authenticator, Exchange, SASLFailure, decode
from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import CLIENT_NS, error_reply, first_child, iq_result
from chatgate.transports import sm
from chatgate.xml import Element

STREAMS_NS = "http://etherx.jabber.org/streams"
TLS_NS = "urn:ietf:params:xml:ns:xmpp-tls"
SASL_NS = "urn:ietf:params:xml:ns:xmpp-sasl"
BIND_NS = "urn:ietf:params:xml:ns:xmpp-bind"
SESSION_NS = "urn:ietf:params:xml:ns:xmpp-session"
STREAM_ERRORS_NS = "urn:ietf:params:xml:ns:xmpp-streams"

log = Logger()


def stream_error(condition: str, text: str | None = None,
                 application: domish.Element | None = None) -> domish.Element:
    """A <stream:error/> with its RFC 6120 §4.9.3 *condition*, optional text (§4.9.2)
    and application-specific condition (§4.9.4)."""
    error = Element((STREAMS_NS, "error"))
    if condition == "see-other-host" and text:  # §4.9.3.19: the host is the condition's content
        error.addElement((STREAM_ERRORS_NS, condition), content=text)
        return error
    error.addElement((STREAM_ERRORS_NS, condition))
    if text:
        error.addElement((STREAM_ERRORS_NS, "text"), content=text)
    if application is not None:
        error.addChild(application)
    return error


def features_element(state: tuple[object, ...]) -> domish.Element:
    """The <stream:features/> for a :meth:`XMPPStream.features_state`."""
    features = Element((STREAMS_NS, "features"))
    if state[0] == "sasl":
        _, starttls, tls_needed, mechanisms = state
        if starttls:
            offer = features.addElement((TLS_NS, "starttls"))
            if tls_needed:
                offer.addElement("required")
        if not tls_needed:
            element = features.addElement((SASL_NS, "mechanisms"))
            for name in mechanisms:
                element.addElement("mechanism", content=name)
    elif state[0] == "bind":
        features.addElement((BIND_NS, "bind"))
        features.addElement((SESSION_NS, "session")).addElement("optional")
        for offered in state[1]:
            element = features.addElement(offered[:2])
            for name, value in offered[2] if len(offered) > 2 else ():
                element[name] = value
        if state[2]:
            features.addElement((sm.NS, "sm"))
    return features


def prepared_jid(localpart: str, domain: str, resource: str) -> JID:
    """The full JID of a bound resource, whose parts went through stringprep
    already: ``JID(tuple=...)`` would run nodeprep, nameprep and resourceprep
    on them again, which cost more than the rest of binding. The localpart
    comes from SASL (nodeprep in :meth:`Authenticator.prepare_user`), the
    resource through resourceprep in :meth:`XMPPStream._bind` (or is made by
    us); the domain, one of the few hosted ones, is nameprepped once."""
    jid = JID.__new__(JID)
    jid.user, jid.host, jid.resource = localpart, _hosted_nameprep(domain), resource
    return jid


@functools.lru_cache(maxsize=1024)
def _hosted_nameprep(domain: str) -> str:
    return nameprep.prepare(domain)


class StreamTransport:
    """What a transport offers the stream. c2s and BOSH implement it."""

    name = "?"
    #: "host:port" for logs, and the host alone for per-address limits
    peer = ""
    address = ""
    secure = False
    can_starttls = False

    def send(self, element: domish.Element) -> None:
        raise NotImplementedError

    def fail(self, condition: str, text: str | None = None, application: domish.Element | None = None) -> None:
        """Send a stream error (RFC 6120 §4.9), with an application-specific
        condition if given (§4.9.4), and close."""
        raise NotImplementedError

    def start_tls(self) -> None:
        raise NotImplementedError

    def restart(self, authenticated: bool) -> None:
        """Expect a new stream header (after TLS or SASL success)."""
        raise NotImplementedError

    def make_session(self, jid: JID) -> Session:
        raise NotImplementedError


class ConnectionSession(Session):
    """A session written to one connection of a stream transport (c2s, WebSocket),
    which stream management may move to another (XEP-0198 resumption)."""

    def __init__(self, jid: JID, connection: StreamTransport) -> None:
        super().__init__(jid, connection.peer)
        self.connection = connection

    def _write(self, data: bytes) -> None:
        self.connection.write(data)  # type: ignore[attr-defined]

    def _end(self, condition: str | None, text: str | None) -> None:
        self.connection.fail(condition, text) if condition else self.connection.close()  # type: ignore

    def backlog(self) -> int:
        return self.connection.backlog()  # type: ignore[attr-defined]

    def move_to(self, transport: StreamTransport) -> None:
        self.connection = transport
        self.peer = transport.peer


class XMPPStream:
    """One client's stream through negotiation into a bound Session."""

    def __init__(self, router: Router, authenticator: Authenticator, settings: Settings,
                 transport: StreamTransport, resumption: sm.Resumption | None = None) -> None:
        self.router = router
        #: stream management (XEP-0198) is offered when given
        self.resumption = resumption
        self.authenticator = authenticator
        self.settings = settings
        self.transport = transport
        self.domain = ""
        self.localpart: str | None = None
        #: when SASL succeeded, on the router's clock (see features/revocation.py)
        self.signed_in_at = 0.0
        self.session: Session | None = None
        self._exchange: Exchange | None = None
        self._failures = 0
        self._busy = False  # a SASL step or a bind is waiting on the store
        self._over = False  # ended() was called

    # -- negotiation

    @property
    def tls_needed(self) -> bool:
        return self.settings.xmpp.require_encryption and not self.transport.secure

    def features_state(self) -> tuple[object, ...]:
        """Everything :meth:`features` depends on, as a hashable value: streams
        in equal states are offered equal features, so a transport may keep the
        serialized form per state. The stage (SASL, bind, bound), whether
        STARTTLS is offered and required, and the SASL mechanisms offered;
        once authenticated, the features the router's ``stream_features`` name."""
        if self.localpart is None:
            starttls = self.transport.can_starttls and not self.transport.secure
            tls_needed = self.tls_needed
            mechanisms = () if tls_needed else tuple(self.authenticator.mechanisms(
                self.transport.secure, self.settings.xmpp.allow_plain_without_tls
            ))
            return ("sasl", starttls, tls_needed, mechanisms)
        if self.session is None:
            return ("bind", tuple(self.router.stream_features), self.resumption is not None)
        return ("bound",)

    def features(self) -> domish.Element:
        """The <stream:features/> for the current stage (RFC 6120 §4.3.2), made
        from :meth:`features_state` alone."""
        return features_element(self.features_state())

    def receive(self, element: domish.Element) -> None:
        """Handle one first-level element from the client."""
        if self.session is not None:
            self._bound(element)
        elif element.uri == TLS_NS and element.name == "starttls":
            self._starttls()
        elif element.uri == SASL_NS:
            self._sasl(element)
        elif self._busy:
            self.transport.fail("policy-violation", "Wait for the answer to your last request")
        elif self.localpart is not None and element.uri == CLIENT_NS and element.name == "iq":
            self._bind(element)
        elif self.localpart is not None and element.uri == sm.NS:
            if element.name == "resume" and self.resumption is not None:
                self._resume(element)
            else:  # enabling comes after binding (XEP-0198 §3)
                self.transport.send(sm.failed("unexpected-request"))
        elif element.uri in (TLS_NS, SASL_NS, CLIENT_NS):
            self.transport.fail("not-authorized")
        else:
            self.transport.fail("unsupported-stanza-type")

    def _starttls(self) -> None:
        if not self.transport.can_starttls or self.transport.secure or self.localpart is not None:
            self.transport.send(Element((TLS_NS, "failure")))
            self.transport.fail("undefined-condition", "STARTTLS is not available now")
            return
        self.transport.send(Element((TLS_NS, "proceed")))
        self.transport.start_tls()
        self.transport.restart(authenticated=False)

    # -- SASL (RFC 6120 §6.4)

    def _sasl(self, element: domish.Element) -> None:
        if self.localpart is not None:
            self.transport.fail("policy-violation", "Already authenticated")
            return
        if self._busy:
            self.transport.fail("policy-violation", "One SASL step at a time")
            return
        if self.tls_needed:
            self._sasl_failed(SASLFailure("encryption-required", "Use STARTTLS first"))
            return
        try:
            if element.name == "auth":
                self._exchange = self.authenticator.exchange(
                    element.getAttribute("mechanism", ""),
                    self.domain,
                    self.transport.secure,
                    self.settings.xmpp.allow_plain_without_tls,
                    self.transport.address,
                )
            elif element.name == "abort":
                self._exchange = None
                self._sasl_failed(SASLFailure("aborted"))
                return
            elif element.name != "response" or self._exchange is None:
                raise SASLFailure("malformed-request")
            data = decode(str(element))
        except SASLFailure as failure:
            self._sasl_failed(failure)
            return
        self._busy = True
        exchange = self._exchange
        d = defer.maybeDeferred(exchange.step, data)
        d.addCallbacks(self._sasl_step, self._sasl_error, callbackArgs=(exchange,), errbackArgs=(exchange,))

    def _sasl_step(self, step, exchange: Exchange) -> None:
        self._busy = False
        data = base64.b64encode(step.data).decode() if step.data else ""
        if not step.done:
            challenge = Element((SASL_NS, "challenge"))
            if data:
                challenge.addContent(data)
            self.transport.send(challenge)
            return
        self.localpart = exchange.localpart
        self.signed_in_at = self.router.clock.seconds()
        self._exchange = None
        success = Element((SASL_NS, "success"))
        if data:
            success.addContent(data)
        log.info(
            "login {user}@{domain} via {mechanism} from {peer} ({transport})",
            user=self.localpart, domain=self.domain, mechanism=exchange.mechanism,
            peer=self.transport.peer, transport=self.transport.name, event="login",
            jid=f"{self.localpart}@{self.domain}",
        )
        if self.authenticator.logins is not None:
            self.authenticator.logins.login_succeeded(self.transport.name, exchange.mechanism)
        self.transport.send(success)
        self.transport.restart(authenticated=True)

    def _sasl_error(self, failure: Failure, exchange: Exchange) -> None:
        self._busy = False
        if failure.check(SASLFailure):
            self._sasl_failed(failure.value, exchange)
            return
        log.failure("SASL step failed", failure)
        self._sasl_failed(SASLFailure("temporary-auth-failure"), exchange)

    def _sasl_failed(self, failure: SASLFailure, exchange: Exchange | None = None) -> None:
        exchange, self._exchange = exchange or self._exchange, None
        element = Element((SASL_NS, "failure"))
        element.addElement(failure.condition)
        if failure.text:
            element.addElement("text", content=failure.text)
        self.transport.send(element)
        if failure.condition == "aborted":
            return
        self._failures += 1
        if self.authenticator.logins is not None:
            self.authenticator.logins.login_failed(self.transport.name, exchange.mechanism if exchange else "",
                                                   failure.condition, failure.text)
        log.info(
            "refused login to {domain} from {peer} ({transport}): {condition}",
            domain=self.domain, peer=self.transport.peer, transport=self.transport.name,
            condition=failure.condition, event="login-refused",
            mechanism=exchange.mechanism if exchange else "",
        )
        if self._failures >= self.settings.auth.max_attempts:
            self.transport.fail("policy-violation", "Too many failed authentication attempts")

    # -- binding (RFC 6120 §7)

    def _bind(self, iq: domish.Element) -> None:
        payload = first_child(iq)
        if iq.getAttribute("type") != "set" or payload is None or (payload.uri, payload.name) != (BIND_NS, "bind"):
            self.transport.fail("not-authorized", "Bind a resource first")
            return
        requested = ""
        for child in payload.elements(BIND_NS, "resource"):
            requested = str(child).strip()
        try:
            resource = resourceprep.prepare(requested) if requested else ""
        except UnicodeError:
            resource = None
        if resource is None or len(resource.encode()) > 1023:
            self.transport.send(error_reply(iq, "bad-request", "Invalid resource"))
            return
        if not self.router.domains.chat_enabled(self.domain):
            self.transport.fail("policy-violation", f"Chat is disabled for {self.domain}")
            return
        if self.router.domains.user(self.domain, self.localpart) is None:
            # An account made a moment ago may not have reached the mirror yet.
            self._busy = True
            d = self.router.domains.refresh_user(self.domain, self.localpart)
            d.addCallbacks(self._bind_known, self._bind_failed, callbackArgs=(iq, resource))
            return
        self._bind_known(True, iq, resource)

    def _bind_failed(self, failure: Failure) -> None:
        log.failure("binding a resource for {user}@{domain}", failure, user=self.localpart, domain=self.domain)
        self.transport.fail("internal-server-error")

    def _bind_known(self, user: object, iq: domish.Element, resource: str) -> None:
        self._busy = False
        if user is None:
            self.transport.fail("not-authorized", "The account no longer exists")
            return
        resource = resource or f"chatgate-{secrets.token_hex(6)}"
        jid = prepared_jid(self.localpart, self.domain, resource)
        self.session = self.transport.make_session(jid)
        self.session.signed_in_at = self.signed_in_at
        self.router.bind(self.session)
        result = iq_result(iq)
        result.addElement((BIND_NS, "bind")).addElement("jid", content=jid.full())
        self.transport.send(result)

    # -- stream management (XEP-0198 §5)

    def _resume(self, request: domish.Element) -> None:
        assert self.resumption is not None and self.localpart is not None
        h = sm.parse_h(request)
        previd = request.getAttribute("previd", "")
        bare = prepared_jid(self.localpart, self.domain, "").userhost()
        found = None if h is None else self.resumption.find(previd, bare)
        if found is not None and found.session.transport_name == self.transport.name:
            self._resumed(found, h)
            return
        if found is None and h is not None and self.resumption.elsewhere(previd):
            self._busy = True  # another node hands it over
            d = self.resumption.fetch(previd, bare, self.transport.name)
            d.addCallback(self._fetched, previd, h, bare)
            d.addErrback(self._not_fetched, bare)
            return
        self._not_resumed(bare)

    def _fetched(self, state: dict | None, previd: str, h: int, bare: str) -> None:
        self._busy = False
        if state is None or state.get("transport") != self.transport.name:
            self._not_resumed(bare)
            return
        if self._over:
            return  # the stream ended meanwhile: the session's node ends it when the hand-over times out
        found = self.resumption.adopt(self, state, previd)
        self.session = found.session
        self._resumed(found, h)

    def _not_fetched(self, failure: Failure, bare: str) -> None:
        self._busy = False
        log.failure("resuming a session of {bare} held by another node", failure, bare=bare)
        self._not_resumed(bare)

    def _not_resumed(self, bare: str) -> None:
        log.info("{bare} could not resume a session from {peer} ({transport})", bare=bare,
                 peer=self.transport.peer, transport=self.transport.name)
        self.transport.send(sm.failed("item-not-found"))

    def _resumed(self, found: sm.StreamManagement, h: int) -> None:
        """Go on with *found*'s session on this stream: §5's <resumed/>, then what the client has not acknowledged."""
        if found.stream is not self:
            if (h - found.acked) % sm.MODULO > len(found.queue):
                self.transport.fail("undefined-condition", None, sm.too_high(h, found.sent))
                return
            found.attach(self)
        session = self.session = found.session
        if not found.acknowledge(h):
            return
        session.signed_in_at = self.signed_in_at
        session.last_active = self.router.clock.seconds()
        log.info("resumed {jid} from {peer} ({transport})", jid=session.full, peer=self.transport.peer,
                 transport=self.transport.name)
        resumed = Element((sm.NS, "resumed"))
        resumed["previd"], resumed["h"] = found.id, str(found.handled)
        self.transport.send(resumed)
        found.resend()

    def _manage(self, element: domish.Element, session: Session) -> None:
        """A stream management nonza once bound (XEP-0198 §3, §4)."""
        if session.sm is not None:
            session.sm.received(element)
        elif element.name == "enable" and self.resumption is not None:
            self.transport.send(self.resumption.enable(session, self, element))
        else:
            condition = "feature-not-implemented" if self.resumption is None else "unexpected-request"
            self.transport.send(sm.failed(condition))

    def _bound(self, element: domish.Element) -> None:
        session = self.session
        if element.uri != CLIENT_NS or element.name not in ("message", "presence", "iq"):
            if element.uri == sm.NS:
                self._manage(element, session)
            elif not self.router.nonza(element, session):
                self.transport.fail("unsupported-stanza-type")
            return
        if session.sm is not None:
            session.sm.handled = (session.sm.handled + 1) % sm.MODULO
        if element.name == "iq" and element.getAttribute("type") == "set":
            payload = first_child(element)
            if payload is not None and payload.uri == SESSION_NS:
                session.send(iq_result(element))
                return
            if payload is not None and payload.uri == BIND_NS:
                element["from"] = session.full
                self.router.bounce(element, session, "not-allowed", "A resource is bound already")
                return
        self.router.route(element, session)

    def ended(self, lost: bool = False) -> None:
        """The stream is over, cleanly or not: the session leaves the router now,
        without waiting for the transport to finish closing. Idempotent.

        *lost*: the connection dropped, or stopped answering, without either
        side closing the stream. A session with resumable stream management
        then stays, waiting for its client (XEP-0198 §5)."""
        self._over = True
        session, self.session = self.session, None
        if session is None:
            return
        manager = session.sm
        if manager is not None and lost and manager.resumable and not session.closed:
            log.info("connection of {jid} lost ({transport}); it may resume within {timeout:.0f} s",
                     jid=session.full, transport=self.transport.name, timeout=manager.timeout)
            manager.detach()
            return
        log.info("logout {jid} ({transport})", jid=session.full, transport=self.transport.name, event="logout")
        session.closed = True
        if manager is not None:
            manager.forget()
        self.router.unbind(session)
        if manager is not None:
            manager.keep_unacknowledged()
