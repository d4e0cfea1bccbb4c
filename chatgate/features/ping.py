"""XMPP Ping (XEP-0199): answer clients' pings, and ping idle clients.

The server answers pings to itself and to an account (§4.2, §4.3). A client
silent for ``[xmpp] ping_interval`` seconds is pinged (§4.1); one that does
not answer within ``ping_timeout`` is gone, and its session is closed with
<connection-timeout/> so its presence goes unavailable. An error reply still
proves the client alive. One sweep over the sessions runs every few seconds:
no timer per session.
"""

from __future__ import annotations

from twisted.internet import defer, task
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


def register(router: Router, settings: Settings, stores: Stores) -> None:
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
        now = router.clock.seconds()
        for resources in list(router.sessions.values()):
            for session in list(resources.values()):
                if now - session.last_active >= interval and "ping" not in session.state:
                    ping(session)

    loop = task.LoopingCall(sweep)
    loop.clock = router.clock
    router.listen("service-started", lambda: loop.start(min(interval, timeout) / 2, now=False))
    router.listen("service-stopping", lambda: loop.stop() if loop.running else None)
