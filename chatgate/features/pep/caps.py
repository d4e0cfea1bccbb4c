"""Entity capabilities (XEP-0115) of clients: which PEP nodes each asks to be told of.

A client announces what it supports in its presence, ``<c node ver hash/>``,
``ver`` being the hash of its disco#info answer (§5). The server asks the
client once for that answer (disco#info on ``node#ver``, §6.2) and keeps it
by ``(node, ver, hash)`` for every client that announces the same, but only
when the answer hashes back to ``ver`` (§5.1 and §5.4): a client that answers
something else is believed for its own session alone, so nobody can make the
server think another client asks for less or more. An answer with duplicate
identities, features or forms is treated the same way (§5.4 3.3-3.5). A
client without caps, or whose answer does not come, asks for nothing.

The features ending in ``+notify`` are the nodes the client wants
notifications of (XEP-0163 §4.3, filtered notifications, XEP-0060 §9.2).
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any

from twisted.internet import defer
from twisted.logger import Logger
from twisted.words.xish import domish

from chatgate.router import Router
from chatgate.session import Session
from chatgate.stanza import caps_hash, caps_verification
from chatgate.xml import Element

log = Logger()

CAPS_NS = "http://jabber.org/protocol/caps"
INFO_NS = "http://jabber.org/protocol/disco#info"
NOTIFY = "+notify"
#: seconds a client has to answer the disco#info query
ANSWER_WITHIN = 15.0
#: verified answers kept (one per client version seen)
KEPT = 4096

Key = tuple[str, str, str]


def caps_of(presence: domish.Element | None) -> Key | None:
    """The ``(node, ver, hash)`` a presence announces, if any."""
    if presence is None:
        return None
    for c in presence.elements(CAPS_NS, "c"):
        node, ver = c.getAttribute("node", ""), c.getAttribute("ver", "")
        if node and ver:
            return node, ver, c.getAttribute("hash", "")
    return None


def notify_nodes(features: frozenset[str]) -> frozenset[str]:
    """The nodes named by ``<node>+notify`` features."""
    return frozenset(f[: -len(NOTIFY)] for f in features if f.endswith(NOTIFY) and len(f) > len(NOTIFY))


class Capabilities:
    """What clients support, asked once per client version and kept (bounded)."""

    def __init__(self, router: Router, kept: int = KEPT) -> None:
        self.router = router
        self._kept = kept
        self._known: OrderedDict[Key, frozenset[str]] = OrderedDict()
        #: questions asked and not yet answered, with the sessions waiting for the same answer
        self._asking: dict[Key, list[tuple[Session, defer.Deferred[frozenset[str]]]]] = {}

    def features(self, session: Session) -> defer.Deferred[frozenset[str]]:
        """The features *session*'s client announces in its presence (empty when none)."""
        key = caps_of(session.presence)
        if key is None:
            return defer.succeed(frozenset())
        known = self._known.get(key)
        if known is not None:
            self._known.move_to_end(key)
            return defer.succeed(known)
        d: defer.Deferred[frozenset[str]] = defer.Deferred()
        waiting = self._asking.get(key)
        if waiting is not None:
            waiting.append((session, d))
            return d
        self._asking[key] = []
        self._ask(session, key).addCallback(self._answered, key, session, d)
        return d

    def _ask(self, session: Session, key: Key) -> defer.Deferred[tuple[frozenset[str], bool]]:
        """(its features, whether the answer hashes to ``ver``) of *session*'s client."""
        node, ver, algorithm = key
        iq = Element((None, "iq"))
        iq["type"] = "get"
        iq.addElement((INFO_NS, "query"))["node"] = f"{node}#{ver}"
        d = self.router.request(session, iq, ANSWER_WITHIN)

        def read(reply: domish.Element) -> tuple[frozenset[str], bool]:
            query = next(reply.elements(INFO_NS, "query"), None)
            if query is None:
                return frozenset(), False
            features = frozenset(f.getAttribute("var", "") for f in query.elements(INFO_NS, "feature"))
            text = caps_verification(query)
            return features, bool(algorithm) and text is not None and caps_hash(algorithm, text) == ver

        def unanswered(failure: Any) -> tuple[frozenset[str], bool]:
            log.debug("{full} did not tell its capabilities: {why}", full=session.full,
                      why=failure.getErrorMessage())
            return frozenset(), False

        return d.addCallbacks(read, unanswered)

    def _answered(self, answer: tuple[frozenset[str], bool], key: Key, session: Session,
                  d: defer.Deferred[frozenset[str]]) -> None:
        features, verified = answer
        waiting = self._asking.pop(key, [])
        if verified:
            self._known[key] = features
            while len(self._known) > self._kept:
                self._known.popitem(last=False)
            for _, other in waiting:
                other.callback(features)
        else:
            for other_session, other in waiting:  # each asked on its own, believed for itself alone
                self._ask(other_session, key).addCallback(lambda a, o=other: o.callback(a[0]))
        d.callback(features)
