"""The bus between chatgate nodes (see ARCHITECTURE.md, "Cluster").

A :class:`Cluster` is what the router tells about its own sessions and what
forwards stanzas to sessions held by other nodes. :class:`LocalCluster` is
one process alone (nothing to tell, nothing remote); the Redis one
(:mod:`chatgate.cluster.redis_cluster`) shares sessions, presence and
delivery between the nodes of one Redis server. The router plugs into it in
one place: its own sessions' lifecycle (``bound``, ``changed``, ``unbound``)
goes out, and what other nodes say comes in through the router's
``remote_*`` and ``relayed`` methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from twisted.application.service import IService

    from chatgate.config import Settings
    from chatgate.session import Session


class Cluster:
    """One node alone: every session is local, nothing crosses a process."""

    node_id = "local"

    def attach(self, router: Any) -> None:
        """The router this node delivers with (remote events go to it)."""

    def bound(self, session: Session, joined: bool) -> None:
        """A session of this node was bound; *joined*: the first of its domain here."""

    def changed(self, session: Session) -> None:
        """A session of this node changed what other nodes mirror (presence,
        priority, :data:`chatgate.session.SHARED_STATE`)."""

    def unbound(self, session: Session, left: bool) -> None:
        """A session of this node ended; *left*: the last of its domain here."""

    def forward(self, node: str, full: str, data: bytes) -> None:
        """Hand a stanza (plain serialization) to *full*'s session on *node*."""
        raise RuntimeError(f"no cluster: cannot forward to {full} on {node}")

    def service(self) -> IService | None:
        """The service that runs the bus (connects, heartbeats, reads), if any."""
        return None


LocalCluster = Cluster


def open_cluster(settings: Settings, reactor: Any = None) -> Cluster:
    """The bus ``[cluster] backend`` names, not started yet."""
    if settings.cluster.backend == "redis":
        from chatgate.cluster.redis_cluster import RedisCluster

        return RedisCluster(settings, reactor)
    return LocalCluster()
