"""Personal eventing (XEP-0163 on XEP-0060): every account is a publish-subscribe service.

What modern clients keep on the server lives here: OMEMO device lists and key
bundles, avatars (XEP-0084), nicknames (XEP-0172), bookmarks (XEP-0402) and
other private data (XEP-0223). The account's bare JID is the service; its
owner publishes, retracts, creates, configures, purges and deletes nodes;
everyone of the domain reads the nodes whose access model lets them.

Implemented (XEP-0060 sections): §7.1 publish, auto-creating the node
(§7.1.4, ``auto-create``) with the publish-options as its configuration, and
the options of an existing node checked as preconditions (§7.1.5: ``<conflict/>``
+ ``<precondition-not-met/>``); §7.2 retract (``notify``); §6.5 items, the
last N (``max_items``) or by id; §8.1 create (with a ``configure`` form),
§8.2 configure (get and set), §8.3 default configuration, §8.4 delete and §8.5
purge, each told to the interested clients; §5.7 affiliations (the owner's
own nodes). Access models (§4.5): ``presence`` (everyone of a domain is a
contact of everyone, so: the domain), ``open`` (sealed like the rest of
chatgate: the domain too) and ``whitelist`` (the owner alone: private data,
XEP-0223, read and told only to the owner's clients, closed-node to anyone
else). Explicit subscriptions are not offered (``feature-not-implemented``):
XEP-0163 §4.3 notifications follow presence and entity capabilities.

Notifications (XEP-0163 §4.3): a change of a node is sent, as a headline
message from the owner's bare JID, to every available session of the domain
(the owner's own for a whitelist node) whose client announced
``<node>+notify`` (XEP-0115 capabilities, :mod:`.caps`; kept in the
session's shared state so every node of a cluster knows it), each through
the router's delivery (so blocking, XEP-0191, applies). The last item of
each node (``send_last_published_item`` = ``on_sub_and_presence``, the
default) goes, with its XEP-0203 delay, (1) to a client as soon as its
capabilities are known, from every user of the domain online at that moment
and from its own account, and (2) from a user whose first client comes
online, to the domain's clients that want it: the same fan-out as presence,
so a large domain costs what its presence costs, and items of users who are
offline are read on demand (``items``), as clients do when a chat opens.

Limits (``[pep]``): nodes per user and bytes per user (``<resource-constraint/>``
beyond; an item larger than all of it ``<payload-too-big/>``), items per node
(``pubsub#max_items``, ``max`` = the limit). Stored behind
``IDirectory.pep_nodes`` / ``set_pep_node`` (one record per node, cached per
user and dropped on every ``pep-changed`` the directory tells, from any
process); removing the user removes their nodes.

Bookmarks (:mod:`.bookmarks`, XEP-0402 §4): the rooms a user keeps through
private storage (XEP-0048, older clients) and through the PEP node (XEP-0402)
are one list, whichever client wrote it.
"""

from __future__ import annotations

from chatgate import events
from chatgate.config import Settings
from chatgate.features.pep.bookmarks import COMPAT, LEGACY_KEY, Bookmarks
from chatgate.features.pep.service import FEATURES, OWNER_NS, PUBSUB_NS, Pep
from chatgate.router import Router
from chatgate.storage import Stores


def register(router: Router, settings: Settings, stores: Stores) -> None:
    if not settings.pep.enabled:
        return
    pep = Pep(router, stores.directory, settings.pep, settings.limits.max_stanza_size)
    router.handle(f"iq-set/bare/{PUBSUB_NS}:pubsub", pep.set)
    router.handle(f"iq-get/bare/{PUBSUB_NS}:pubsub", pep.get)
    router.handle(f"iq-set/bare/{OWNER_NS}:pubsub", pep.owner_set)
    router.handle(f"iq-get/bare/{OWNER_NS}:pubsub", pep.owner_get)
    router.account_identities.append(("pubsub", "pep", ""))
    router.account_features.add(PUBSUB_NS)
    router.account_features.update(f"{PUBSUB_NS}#{feature}" for feature in FEATURES)
    bookmarks = Bookmarks(pep)
    router.private_bridges[LEGACY_KEY] = (bookmarks.read, bookmarks.written)
    router.account_features.add(COMPAT)
    router.listen(events.PRESENCE_CHANGED, pep.presence_changed)
    router.domains.listen(pep.directory_changed)
