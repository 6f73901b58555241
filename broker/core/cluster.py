"""What the core asks of a cluster backend, and what it knows about other nodes.

The core never waits on the cluster: it *tells* the backend what happened locally
(``Cluster`` methods, all synchronous and cheap) and the backend calls back into the
core when something happens elsewhere (``Broker.deliver_remote``,
``Dealer.add_remote_callee`` …) or when an asynchronous answer is ready (a
registration claim, a Redis subscription becoming active). Both run on the one event
loop, so no locks are needed.

``LocalCluster`` is the in-process backend: nothing is distributed, every answer is
immediate, and the roles skip the cluster entirely on their hot paths
(``distributed`` is false). ``broker.cluster.redis`` overrides every hook of ``Cluster``.
The wire format between nodes is in protocol_spec/cluster.md.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from .ids import random_id
from .matching import UriMap
from .session import Session, SessionState

if TYPE_CHECKING:
    from .interfaces import Peer
    from .registration import Registration
    from .subscription import Subscription

__all__ = [
    "ClaimDone",
    "Cluster",
    "LocalCluster",
    "RemoteSession",
    "RemoteSubscription",
    "RemoteView",
]

ClaimDone = Callable[[str | None, str, int, int], None]
"""Answer to a registration claim: (error URI or None, error text, registration ID, seq)."""


class RemoteSession(Session):
    """A session on another node, as a stand-in for the dealer (callee or caller).

    Its ``peer`` is the backend's: messages the dealer sends to it become envelopes
    to that node. It never joins ``Realm.sessions``.
    """

    __slots__ = ("node",)

    def __init__(self, session_id: int, peer: Peer, node: str) -> None:
        super().__init__(session_id, peer)
        self.node = node
        self.state = SessionState.ESTABLISHED

    def __repr__(self) -> str:
        return f"<RemoteSession {self.id} on {self.node}>"


class RemoteSubscription:
    """A subscription (match, topic) as other nodes hold it: subscriber IDs per node."""

    __slots__ = ("created", "id", "match", "nodes", "topic")

    def __init__(self, sub_id: int, topic: str, match: str, created: str) -> None:
        self.id = sub_id
        self.topic = topic
        self.match = match
        self.created = created
        self.nodes: dict[str, list[int]] = {}

    def subscribers(self) -> list[int]:
        """Every remote subscriber's session ID."""
        return [s for ids in self.nodes.values() for s in ids]

    def info(self) -> dict[str, Any]:
        """The subscription's description for the meta API."""
        return {"id": self.id, "created": self.created, "uri": self.topic, "match": self.match}


class RemoteView:
    """Sessions and subscriptions of one realm on other nodes (filled by the backend)."""

    __slots__ = ("_sub_map", "session_nodes", "sessions", "subscriptions")

    def __init__(self) -> None:
        self.sessions: dict[int, dict[str, Any]] = {}
        self.session_nodes: dict[int, str] = {}
        self.subscriptions: dict[int, RemoteSubscription] = {}
        self._sub_map: UriMap[RemoteSubscription] = UriMap()

    def add_session(self, node: str, info: dict[str, Any]) -> None:
        """Record a remote session (its ``wamp.session.get`` description)."""
        session_id = int(info["session"])
        self.sessions[session_id] = info
        self.session_nodes[session_id] = node

    def remove_session(self, session_id: int) -> dict[str, Any] | None:
        """Forget a remote session; return its description if it was known."""
        self.session_nodes.pop(session_id, None)
        return self.sessions.pop(session_id, None)

    def set_subscription(
        self, node: str, sub_id: int, topic: str, match: str, created: str, subscribers: list[int]
    ) -> None:
        """Record node ``node``'s subscribers of a subscription (none: forget them)."""
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            if not subscribers:
                return
            sub = RemoteSubscription(sub_id, topic, match, created)
            self.subscriptions[sub_id] = sub
            self._sub_map.set(topic, match, sub)
        if subscribers:
            sub.nodes[node] = list(subscribers)
        else:
            sub.nodes.pop(node, None)
            if not sub.nodes:
                del self.subscriptions[sub_id]
                self._sub_map.remove(sub.topic, sub.match)

    def drop_node(self, node: str) -> list[dict[str, Any]]:
        """Forget everything of ``node``; return the descriptions of its sessions."""
        gone = [sid for sid, n in self.session_nodes.items() if n == node]
        infos = [info for sid in gone if (info := self.remove_session(sid)) is not None]
        for sub in list(self.subscriptions.values()):
            if node in sub.nodes:
                self.set_subscription(node, sub.id, sub.topic, sub.match, sub.created, [])
        return infos

    def matching(self, topic: str) -> list[RemoteSubscription]:
        """Remote subscriptions an event on ``topic`` reaches."""
        return self._sub_map.matching(topic)

    def lookup(self, topic: str, match: str) -> RemoteSubscription | None:
        """The remote subscription for exactly (match, topic)."""
        return self._sub_map.get(topic, match)


class Cluster:
    """The backend as the core sees it. Every method returns at once.

    The bodies here are the single-process behaviour (nothing to tell anyone, every
    answer immediate): ``LocalCluster`` is exactly this, and a distributed backend
    overrides every hook.
    """

    distributed: bool = False
    """False for the in-process backend: the roles then skip every cluster call."""

    available: bool = True
    """True while other nodes can be reached (always true when not distributed)."""

    def publish(
        self,
        realm: str,
        topic: str,
        publication: int,
        details: dict[str, Any],
        args: list[Any] | None,
        kwargs: dict[str, Any] | None,
        filter_options: dict[str, Any] | None,
        retain: bool,
    ) -> None:
        """Send an event (already delivered locally) to the other nodes."""

    def watch(self, realm: str, match: str, topic: str, done: Callable[[], None]) -> None:
        """A local subscription (match, topic) is about to exist; ``done`` when live."""
        done()

    def unwatch(self, realm: str, match: str, topic: str) -> None:
        """The local subscription (match, topic) is gone."""

    def subscription_changed(self, realm: str, sub: Subscription) -> None:
        """A local subscription's subscribers changed (none left: it is gone)."""

    def session_joined(self, realm: str, session: Session) -> None:
        """A local session joined ``realm``."""

    def session_left(self, realm: str, session: Session) -> None:
        """A local session left ``realm``."""

    def testaments_changed(self, realm: str, session: Session) -> None:
        """A local session's testaments were added or flushed."""

    def claim(
        self,
        realm: str,
        session: Session,
        procedure: str,
        match: str,
        invoke: str,
        disclose: bool,
        done: ClaimDone,
    ) -> None:
        """Claim (match, procedure) for a local callee cluster-wide; answer via ``done``.

        In one process the dealer checks locally and never asks; granted for completeness.
        """
        done(None, "", random_id(), 0)

    def release(
        self,
        realm: str,
        reg: Registration,
        session: Session,
        done: Callable[[], None] | None = None,
    ) -> None:
        """A local callee left a registration; ``done`` runs once that holds cluster-wide.

        In one process it holds at once.
        """
        if done is not None:
            done()

    def kill(
        self,
        realm: str,
        selector: str,
        value: Any,
        except_session: int,
        reason: str,
        message: str | None,
    ) -> None:
        """Ask the other nodes to end their matching sessions (meta API kill)."""


class LocalCluster(Cluster):
    """The in-process backend: one node, every hook the single-process default."""
