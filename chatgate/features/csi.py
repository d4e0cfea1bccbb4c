"""Client State Indication (XEP-0352, ``urn:xmpp:csi:0``): less chatter for a client in the background.

An authenticated stream is offered ``<csi/>`` among its features (§3, the
router's ``stream_features``; c2s and BOSH alike); a bound session then sends
the nonzas ``<inactive/>`` and ``<active/>`` (§4), handled per session
(the router's ``handle_nonza``). A session starts active.

While a session is inactive, a PER_TARGET hook (last, on the targets the
other hooks left) holds back for it what it can learn later (§5 leaves the
choice to the server):

- presence: only the latest stanza per sender full JID is kept;
- messages carrying only XEP-0085 chat states (no body, and nothing but
  hints, ids and a thread beside them: ``stanza.chat_state_only``): only the
  latest per sender is kept (a carbon of one counts as one, by the message it
  copies).

Anything else for it goes at once, what is held going first in one write so
the order of what the client sees is kept: a message with a body, an error,
and a XEP-0184 receipt or XEP-0333 marker even when a client sends it with a
chat state in the same message (held as a chat state, the sender's next one
would replace it and the marker would be lost). ``<active/>`` sends
everything held in one write. What is held per session is bounded: at most
one presence and one chat state per sender, so never more than twice the
senders of its domain. What the server
sends a session directly (IQs, roster pushes, offline messages) is not held.
"""

from __future__ import annotations

from collections.abc import Callable

from twisted.words.xish import domish

from chatgate import events
from chatgate.config import Settings
from chatgate.delivery import Delivery
from chatgate.router import Router
from chatgate.session import Addressed, Session
from chatgate.stanza import CHATSTATES_NS, chat_state_only
from chatgate.storage import Stores

NS = "urn:xmpp:csi:0"
#: the key of Session.state: present (the held stanzas) while the session is inactive
STATE = "csi"


def _only_chat_states(stanza: domish.Element) -> bool:
    return chat_state_only(stanza) and any(child.uri == CHATSTATES_NS for child in stanza.elements())


def held(session: Session) -> dict[tuple[str, str], bytes] | None:
    """What is held for *session* ((kind, sender) -> the stanza as its transport writes it), None while active."""
    return session.state.get(STATE)  # type: ignore[return-value]


def flush(session: Session) -> None:
    """Send what is held for *session*, oldest change first, in one write."""
    waiting = held(session)
    if waiting:
        data = b"".join(waiting.values())
        waiting.clear()
        session.send_serialized(data)


def _keep(waiting: dict[tuple[str, str], bytes], key: tuple[str, str], data: bytes) -> None:
    waiting.pop(key, None)  # the newest goes last: the order of the changes is kept
    waiting[key] = data


def _hold(delivery: Delivery, key: tuple[str, str], serialized_for: Callable[[Session], bytes]) -> None:
    """Keep the stanza, as *serialized_for* the target makes it, for each inactive target, under *key*."""
    keep = []
    for target in delivery.targets:
        waiting = held(target)
        if waiting is None:
            keep.append(target)
        else:
            _keep(waiting, key, serialized_for(target))
    delivery.targets = keep


def inactive(element: domish.Element, session: Session) -> None:
    """§4: the client is in the background."""
    session.state.setdefault(STATE, {})


def active(element: domish.Element, session: Session) -> None:
    """§4: the client is in the foreground again: everything held, at once."""
    flush(session)
    session.state.pop(STATE, None)


def presence(delivery: Delivery) -> None:
    """PER_TARGET on presence-delivering: keep the latest per sender for inactive sessions."""
    for target in delivery.targets:
        if STATE in target.state:
            break
    else:  # no target is inactive
        return
    addressed = Addressed(delivery.stanza)
    _hold(delivery, ("presence", delivery.stanza.getAttribute("from", "")), addressed.serialized_for)


def message(delivery: Delivery) -> None:
    """PER_TARGET on message-delivering: hold chat states, flush before anything else."""
    targets = delivery.targets
    for target in targets:
        if STATE in target.state:
            break
    else:  # no target is inactive: the common case, as cheap as it can be
        return
    original = delivery.copy_of.stanza if delivery.copy_of is not None else delivery.stanza
    if not _only_chat_states(original):
        for target in targets:
            flush(target)
        return
    text = delivery.text()

    def serialized_for(target: Session) -> bytes:
        data = target.from_text(text)
        return data if data is not None else target.serialize(delivery.stanza)

    _hold(delivery, ("chat-state", original.getAttribute("from", "")), serialized_for)


def register(router: Router, settings: Settings, stores: Stores) -> None:
    router.stream_features.append((NS, "csi"))
    router.server_features.add(NS)
    router.handle_nonza(NS, "inactive", inactive)
    router.handle_nonza(NS, "active", active)
    router.listen(events.PRESENCE_DELIVERING, presence, events.PER_TARGET)
    router.listen(events.MESSAGE_DELIVERING, message, events.PER_TARGET)
