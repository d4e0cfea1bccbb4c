"""Protocol features: one module each, each with ``register(router, settings, stores)``.

A feature that is switched off is simply not registered; the core has no
``if`` for it.

Work a feature does on its own, not in answer to a stanza (ping's sweep over
idle sessions, the archive's retention), is a Twisted service: ``register``
returns an :class:`~twisted.application.service.IService` (typically a
:class:`~twisted.application.internet.TimerService` whose ``clock`` is
``router.clock``, named after the work), or None when it has none. The service
(``chatgate/service.py``) makes each one a child of its tree: started once the
stores are open and the directory mirror loaded, stopped (and a call under way
finished) before the stores close. No feature runs a periodic timer of its own.
"""

from __future__ import annotations

from importlib import import_module

from twisted.application.service import IService

from chatgate.config import Settings
from chatgate.router import Router
from chatgate.storage import Stores

#: registration order: disco listings, and listeners of equal priority (the
#: order of the delivery hooks is their priority, chatgate/events.py) and of the
#: directory mirror's changes: aliases tells a removed alias unavailable before
#: roster pushes its removal, and revocation ends a removed user's sessions
#: (unavailable) before it too; muc names its subdomain before mam registers MAM for
#: the archives of every subdomain's entities (a room's); disco comes last, once every
#: feature has announced itself, to hash the server's capabilities (XEP-0115)
FEATURES = ("messages", "presence", "aliases", "revocation", "roster", "domain_switch", "ping", "version",
            "vcard", "archive", "carbons", "offline", "muc", "mam", "blocking", "csi", "upload", "private_storage",
            "pep", "disco")


def register_all(router: Router, settings: Settings, stores: Stores) -> list[IService]:
    """Register every feature, in :data:`FEATURES` order; the services they give, in that order."""
    services = []
    for name in FEATURES:
        given = import_module(f"chatgate.features.{name}").register(router, settings, stores)
        if given is not None:
            services.append(given)
    return services
