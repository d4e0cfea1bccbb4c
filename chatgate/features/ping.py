"""XMPP Ping (XEP-0199): answer clients' pings, and ping idle clients.

The server answers pings to itself and to an account (§4.2, §4.3). A client
silent for ``[xmpp] ping_interval`` seconds is pinged (§4.1); one that does
not answer within ``ping_timeout`` is gone, and its session is closed with
<connection-timeout/> so its presence goes unavailable. An error reply still
proves the client alive. One sweep over the idle sessions runs every few
seconds (the ``ping`` TimerService this feature gives the service tree): no
timer per session.
"""

from __future__ import annotations

from twisted.application.internet import TimerService
from twisted.application.service import IService
from twisted.internet import defer
from twisted.python.failure import Failure
from twisted.words.protocols.jabber.jid import JID
from twisted.words.xish import domish

from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import CLIENT_NS, StanzaError, iq_result
from chatgate.storage import Stores
from chatgate.xml import Element

NS = "urn:xmpp:ping"


def register(router: Router, settings: Settings, stores: Stores) -> IService:
    def pong(stanza: domish.Element, sender: Session, to: JID) -> None:
        sender.send(iq_result(stanza))

    router.handle(f"iq-get/host/{NS}:ping", pong)
    router.handle(f"iq-get/bare/{NS}:ping", pong)
    router.server_features.add(NS)
    router.account_features.add(NS)

    interval, timeout = settings.xmpp.ping_interval, settings.xmpp.ping_timeout

    def ping(session: Session) -> None:
        session.state["ping"] = True
        iq = Element((CLIENT_NS, "iq"))
        iq["type"] = "get"
        iq.addElement((NS, "ping"))

        def failed(failure: Failure) -> None:
            session.state.pop("ping", None)
            if failure.check(defer.TimeoutError):
                session.close("connection-timeout", "No answer to ping")
            elif not failure.check(StanzaError):
                failure.raiseException()

        d = router.request(session, iq, timeout)
        d.addCallbacks(lambda _: session.state.pop("ping", None), failed)

    def sweep() -> None:
        for session in router.idle_sessions(router.clock.seconds() - interval):
            if "ping" not in session.state and not session.detached:  # a detached one waits to be resumed
                ping(session)

    sweeping = TimerService(min(interval, timeout) / 2, sweep)
    sweeping.clock = router.clock
    sweeping.setName("ping")
    return sweeping
