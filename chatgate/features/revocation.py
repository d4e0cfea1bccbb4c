"""Credentials change, access ends: a new password or a removed account closes the user's sessions.

Told by the directory's change feed, so on every process that shares the
store, within ``[storage] poll_interval``; whichever process (or
``chatgate-admin``) made the change. New logins are refused by SASL: the old
password no longer matches the stored keys, and a login token from a sign-in
before the change is refused (:mod:`chatgate.auth.tokens`, checked against
``IDirectory.credentials_changed`` in the store itself).

The stream error says which; BOSH carries it in ``<body type='terminate'
condition='remote-stream-error'>`` (XEP-0206 §7, XEP-0124 §17.2), the terminal
condition for every stream error:

- a new password: ``<reset/>`` (RFC 6120 §4.9.3.16), the condition for "the
  keys used to establish a secure context have been revoked during the life of
  the stream": the client SHOULD open a new stream, so one that holds the new
  password (or a fresh token) is back at once, and one that does not fails SASL
  with ``<not-authorized/>`` and asks its user;
- a removed account: ``<not-authorized/>`` (RFC 6120 §4.9.3.12): the account
  is gone and reconnecting cannot help.

A stream that authenticated before this process learnt of a new password but
binds its resource only after is reset as soon as it binds: the feature keeps,
per user, when the last credentials change reached this process (one float per
user who ever changed a password) and compares it with
``Session.signed_in_at``. A stream that signed in with the new password in
the moment before this process learnt of it is reset too, and signs in again.

Prosody's mod_c2s makes the same choice. It comes before the roster feature,
so the others see the removed user go unavailable before the roster push
removes them.
"""

from __future__ import annotations

from chatgate import events
from chatgate.config import Settings
from chatgate.router import Router
from chatgate.session import Session
from chatgate.storage import Stores
from chatgate.storage.interfaces import Alias, Change, User

#: change kind -> (stream error condition, text)
ENDINGS = {
    "credentials-changed": ("reset", "The password was changed; sign in again"),
    "user-removed": ("not-authorized", "The account was removed"),
}


def register(router: Router, settings: Settings, stores: Stores) -> None:
    #: (domain, localpart) -> when this process learnt of the user's last new password
    learnt: dict[tuple[str, str], float] = {}

    def changed(change: Change, subject: User | Alias | None) -> None:
        ending = ENDINGS.get(change.kind)
        if ending is None or not change.localpart:
            return
        if change.kind == "credentials-changed":
            learnt[(change.domain, change.localpart)] = router.clock.seconds()
        else:
            learnt.pop((change.domain, change.localpart), None)
        router.close_sessions(change.domain, change.localpart, *ending)

    def bound(session: Session) -> None:
        if session.signed_in_at <= learnt.get((session.domain, session.jid.user), -1.0):
            # after the bind result has gone out, so the client sees why
            router.clock.callLater(0, session.close, *ENDINGS["credentials-changed"])

    router.domains.listen(changed)
    router.listen(events.SESSION_BOUND, bound)
