"""The router's events: their names, what a listener is given, and the order listeners run in.

Features follow events with ``router.listen(EVENT, listener, priority=...)``.
Listeners run from the highest priority down, those of equal priority in the
order they were registered; the priorities features use are named below, so
the order of everything that touches a delivery reads from this page, and
each feature states its own place where it listens.

Delivery events (a :class:`chatgate.delivery.Delivery` is the one argument):

- :data:`MESSAGE_DELIVERING`: a message to a user is about to go out to
  ``delivery.targets`` (none when it is to be kept offline or refused). A
  listener may add to the stanza, drop targets, or stop the delivery
  (``delivery.stop(condition)``): no listener after it runs, nothing is sent,
  and the sender gets the error *condition* if one was given.
- :data:`MESSAGE_UNDELIVERABLE`: no session can take it now; a listener that
  returns True took it (offline storage).
- :data:`MESSAGE_REFUSED`: a message told as delivering was bounced after all.
  Besides a message to a user, the router delivers copies (``delivery.copy_of``:
  carbons), messages from offline storage (``delivery.stored``) and stanzas
  another node sent here for one of this node's sessions (``delivery.relayed``:
  the sender's node ran the hooks already) this way: archive and carbons leave
  those alone, filters apply to copies and stored ones, per-target hooks
  (client state) to all.
- :data:`IQ_DELIVERING`: an IQ from one user's resource to another's full JID
  is about to go out (RFC 6120 §8.5.3.1); a listener may stop it (the sender
  of a get or set gets the condition given).
- :data:`PRESENCE_DELIVERING`: a presence stanza is about to go to
  ``delivery.targets`` (a broadcast, a probe's answer, an alias's presence).
  Listeners may drop targets or stop it, as for messages.

Other events:

- :data:`MESSAGE_SENT` (stanza, sender, peer's bare JID): a message a user sent
  that reaches its recipients another way than a Delivery to the peer (an
  alias fan-out), for the sender's archive.
- :data:`SESSION_BOUND` (session), :data:`SESSION_ENDED` (session).
- :data:`SESSION_AVAILABLE` (session): a resource became reachable by messages
  to the bare JID (available, priority >= 0; RFC 6121 §8.5.2.1.1).
- :data:`PRESENCE_CHANGED` (session, whether it was available before).
- :data:`OFFLINE_WAITING` (bare JID): another node kept a message offline
  for this user, who may have become reachable here meanwhile.
- :data:`REMOTE_PRESENCE` (remote session, the presence stanza, whether it was
  available before): a session of another node of the cluster changed its
  presence (or is gone: an unavailable stanza); its node told its own users,
  this node's listeners tell this node's.
- :data:`REMOTE_STATE` (remote session): a session of another node changed
  only the state features share (:data:`chatgate.session.SHARED_STATE`:
  carbons, the rooms it is in), not its presence.
"""

from __future__ import annotations

MESSAGE_DELIVERING = "message-delivering"
MESSAGE_UNDELIVERABLE = "message-undeliverable"
MESSAGE_REFUSED = "message-refused"
MESSAGE_SENT = "message-sent"
PRESENCE_DELIVERING = "presence-delivering"
IQ_DELIVERING = "iq-delivering"
SESSION_BOUND = "session-bound"
SESSION_ENDED = "session-ended"
SESSION_AVAILABLE = "session-available"
PRESENCE_CHANGED = "presence-changed"
REMOTE_PRESENCE = "remote-presence"
OFFLINE_WAITING = "offline-waiting"
REMOTE_STATE = "remote-state"

#: every event there is: listening to another name is an error, not silence
EVENTS = frozenset({
    MESSAGE_DELIVERING, MESSAGE_UNDELIVERABLE, MESSAGE_REFUSED, MESSAGE_SENT, PRESENCE_DELIVERING, IQ_DELIVERING,
    SESSION_BOUND, SESSION_ENDED, SESSION_AVAILABLE, PRESENCE_CHANGED, REMOTE_PRESENCE,
    OFFLINE_WAITING, REMOTE_STATE,
})

# -- priorities, highest first


#: decide whether a stanza may reach anyone at all (blocking, privacy): before
#: anything is archived or copied
FILTER = 300
#: write the message into the archive: it stamps the stanza-ids every copy carries
ARCHIVE = 200
#: send copies of it elsewhere (carbons): after the ids are on it
COPIES = 100
#: the default
NORMAL = 0
#: hold back what a target does not need now (client state indication): last,
#: on the targets the others left
PER_TARGET = -100
