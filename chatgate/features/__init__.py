"""Protocol features: one module each, each with ``register(router, settings, stores)``.

A feature that is switched off is simply not registered; the core has no
``if`` for it.
"""

from __future__ import annotations

from importlib import import_module

from chatgate.config import Settings
from chatgate.router import Router
from chatgate.storage import Stores

#: registration order matters for disco listings, and for the listeners of one
#: event: archive stamps stanza-ids before carbons copies the message; aliases
#: tells a removed alias unavailable before roster pushes its removal, and
#: revocation ends a removed user's sessions (unavailable) before it too
FEATURES = ("messages", "presence", "aliases", "revocation", "roster", "domain_switch", "disco", "ping", "version",
            "vcard", "archive", "carbons", "offline", "mam")


def register_all(router: Router, settings: Settings, stores: Stores) -> None:
    for name in FEATURES:
        import_module(f"chatgate.features.{name}").register(router, settings, stores)
