"""What the core knows about other nodes: stand-in sessions and the remote view.

A distributed backend fills these (through the ``ClusterHost`` port of
``broker.core.ports``); the dealer routes to ``RemoteSession`` stand-ins like to
local sessions, and the meta API answers from each realm's ``RemoteView``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .matching import UriMap
from .session import Session, SessionState

if TYPE_CHECKING:
    from .interfaces import Peer

__all__ = ["RemoteSession", "RemoteSubscription", "RemoteView"]


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
