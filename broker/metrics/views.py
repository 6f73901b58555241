"""What the collectors read, as narrow ports: no import of the server, router or transport.

The server hands its router, transport and cluster backend to ``BrokerMetrics``;
they fit these protocols structurally. The cluster backend's ``metrics()`` answers
the typed ``ClusterMetrics`` contract, which both the Redis backend and any later
backend fill in the same shape.
"""

from __future__ import annotations

from collections.abc import Mapping, Sized
from typing import Literal, Protocol, TypedDict

from .stats import TransportStats

__all__ = [
    "CLUSTER_STATES",
    "ClusterLinks",
    "ClusterMetrics",
    "ClusterState",
    "ClusterView",
    "RealmView",
    "RouterView",
    "TransportView",
]

ClusterState = Literal["connecting", "up", "degraded", "deaf", "down"]

CLUSTER_STATES: tuple[ClusterState, ...] = ("connecting", "up", "degraded", "deaf", "down")
"""Every value of ``wamp_cluster_state{state}``, each reported (1 for the current one)."""


class ClusterLinks(TypedDict):
    """Whether each connection to Redis is up: commands and pub/sub."""

    redis: bool
    pubsub: bool


class ClusterMetrics(TypedDict):
    """What a cluster backend's ``metrics()`` returns, read at scrape time."""

    links: ClusterLinks
    redis_rtt: float | None
    """Seconds of the last pub/sub probe's round trip; None while unknown."""
    state: ClusterState
    outbox_dropped: int
    """Commands for Redis dropped (outbox full or link lost) since the process started."""
    peer_links: int
    """Direct links to other nodes open now (broker/cluster/peers.py)."""
    peer_failures: int
    """Direct links to or from other nodes that broke since the process started."""
    peer_fallbacks: int
    """Nodes advertising a direct link this node cannot use: reached through Redis."""


class ClusterView(Protocol):
    """A distributed cluster backend, as the metrics see it."""

    def metrics(self) -> ClusterMetrics:
        """The backend's state now."""
        ...


class _Subscriptions(Protocol):
    def subscriptions(self) -> Sized: ...


class _Registrations(Protocol):
    def registrations(self) -> Sized: ...


class RealmView(Protocol):
    """One realm: its name, joined sessions, subscriptions and registrations."""

    @property
    def name(self) -> str: ...
    @property
    def sessions(self) -> Sized: ...
    @property
    def broker(self) -> _Subscriptions: ...
    @property
    def dealer(self) -> _Registrations: ...


class RouterView(Protocol):
    """The router's realms, by name."""

    @property
    def realms(self) -> Mapping[str, RealmView]: ...


class TransportView(Protocol):
    """The WebSocket transport: its counters and open connections."""

    @property
    def stats(self) -> TransportStats: ...
    @property
    def connections(self) -> Sized: ...
    @property
    def slow_consumers(self) -> int: ...
