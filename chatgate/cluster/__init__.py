"""The bus between chatgate nodes (see ARCHITECTURE.md, "Cluster").

A :class:`Cluster` is what the router tells about its own sessions and what
forwards stanzas to sessions held by other nodes. :class:`Cluster` itself is
one process alone (nothing to tell, nothing remote); the Redis one
(:mod:`chatgate.cluster.redis_cluster`) shares sessions, presence and
delivery between the nodes of one Redis server. The router plugs into it in
one place: its own sessions' lifecycle (``bound``, ``changed``, ``unbound``)
goes out, and what other nodes say comes in through the router's
``remote_*`` and ``relayed`` methods.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

from twisted.internet.defer import Deferred, fail

if TYPE_CHECKING:
    from twisted.application.service import IService
    from twisted.words.xish import domish

    from chatgate.cluster.remote import RemoteSession
    from chatgate.session import Session


class Peer(Protocol):
    """What a cluster needs of its node's router (:class:`chatgate.router.Router`)."""

    def local_resources(self, bare: str) -> Mapping[str, Session]: ...
    def all_sessions(self) -> list[Session]: ...
    def domain_sessions(self, domain: str) -> list[Session]: ...
    def remote_session(self, full: str) -> RemoteSession | None: ...
    def remote_sessions(self, domain: str) -> list[RemoteSession]: ...
    def all_remote_sessions(self) -> list[RemoteSession]: ...
    def remote_bound(self, remote: RemoteSession) -> None: ...
    def remote_presence(self, remote: RemoteSession, stanza: domish.Element, priority: int) -> None: ...
    def remote_state(self, remote: RemoteSession) -> None: ...
    def remote_gone(self, full: str, node: str) -> None: ...
    def replaced(self, session: Session) -> None: ...
    def relayed(self, full: str, text: str) -> None: ...
    def redeliver(self, stanza: domish.Element, local_only: bool = False) -> None: ...
    def emit(self, event: str, *args: Any) -> bool: ...
    def bounce_to_origin(self, stanza: domish.Element, condition: str, text: str | None = None) -> None: ...


class NodeUnreachable(Exception):
    """Another node did not answer (gone, or Redis unreachable)."""


class Cluster:
    """One node alone: every session is local, nothing crosses a process."""

    node_id = "local"
    #: whether other nodes exist (a BOSH sid then names its node)
    clustered = False

    def attach(self, router: Peer) -> None:
        """The router this node delivers with (remote events go to it)."""

    def bound(self, session: Session, joined: bool) -> None:
        """A session of this node was bound; *joined*: the first of its domain here."""

    def changed(self, session: Session) -> None:
        """A session of this node changed what other nodes mirror (presence,
        priority, :data:`chatgate.session.SHARED_STATE`)."""

    def unbound(self, session: Session, left: bool) -> None:
        """A session of this node ended; *left*: the last of its domain here."""

    def stored_offline(self, bare: str) -> None:
        """A message for *bare* was kept offline here: a node where they have
        just become reachable (not mirrored here yet) delivers it."""

    def settling(self, domain: str) -> Deferred[None] | None:
        """While this node reads which sessions other nodes hold in *domain* (its
        first session there just bound): fires once it knows; None when it knows."""
        return None

    def forward(self, node: str, full: str, data: bytes) -> None:
        """Hand a stanza (plain serialization) to *full*'s session on *node*."""
        raise RuntimeError(f"no cluster: cannot forward to {full} on {node}")

    def request(self, node: str, kind: str, payload: dict[str, Any], timeout: float) -> Deferred[dict[str, Any]]:
        """Ask *node* (its handler of *kind*, see :meth:`answer`): fires with its
        answer, fails with :class:`NodeUnreachable` when there is none in *timeout*
        seconds or the node is gone."""
        return fail(NodeUnreachable(f"no cluster: no node {node}"))

    def answer(self, kind: str, handler: Callable[[dict[str, Any]], Deferred[dict[str, Any]]]) -> None:
        """Answer other nodes' requests of *kind* with *handler* (one per kind)."""

    def tell(self, domain: str, kind: str, payload: dict[str, Any]) -> None:
        """Tell every other node with users of *domain* online (its handler of *kind*,
        see :meth:`hear`); nothing comes back, and a node that joins the domain later
        hears only what is told after."""

    def hear(self, kind: str, handler: Callable[[dict[str, Any]], None]) -> None:
        """Handle what other nodes :meth:`tell` of *kind* (one handler per kind)."""

    def service(self) -> IService | None:
        """The service that runs the bus (connects, heartbeats, reads), if any."""
        return None

