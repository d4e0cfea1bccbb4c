"""The per-domain chat switch: disabling a domain's chat closes its sessions.

New logins are refused by SASL (<account-disabled/>, see auth/sasl.py); the
sessions already open end with <policy-violation/> and a text saying why, as
soon as the directory's change feed tells this process.
"""

from __future__ import annotations

from twisted.logger import Logger

from chatgate.config import Settings
from chatgate.router import Router
from chatgate.storage import Stores
from chatgate.storage.interfaces import Change, User

log = Logger()


def register(router: Router, settings: Settings, stores: Stores) -> None:
    def changed(change: Change, user: User | None) -> None:
        if change.kind in ("domain-enabled", "domain-disabled"):
            log.info("chat {state} for {domain}", state=change.kind.partition("-")[2], domain=change.domain,
                     event="domain-switch")
        if change.kind == "domain-disabled":
            router.close_sessions(change.domain, None, "policy-violation", f"Chat is disabled for {change.domain}")

    router.domains.listen(changed)
