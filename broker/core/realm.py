"""A realm: a routing namespace with its own sessions, broker role and dealer role."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol_spec import meta

from .authorization import Guard
from .cluster import Cluster, LocalCluster, RemoteView
from .dealer import Dealer
from .interfaces import Scheduler
from .pubsub import Broker
from .settings import DISCLOSE_POLICIES, RealmSettings

if TYPE_CHECKING:
    from .session import Session

__all__ = ["DISCLOSE_POLICIES", "Realm", "RealmSettings"]


class Realm:
    """Sessions joined to one realm and the roles that route between them."""

    __slots__ = ("broker", "cluster", "dealer", "guard", "name", "remote", "sessions", "settings")

    def __init__(
        self, settings: RealmSettings, scheduler: Scheduler, cluster: Cluster | None = None
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.sessions: dict[int, Session] = {}
        # the realm's authorization at run time (policy + cached decisions); None: open
        self.guard = Guard(settings.authorization) if settings.authorization else None
        # the backend (server.py replaces the in-process default before serving)
        self.cluster: Cluster = cluster if cluster is not None else LocalCluster()
        # sessions and subscriptions on other nodes (filled by the backend)
        self.remote = RemoteView()
        self.broker = Broker(self)
        self.dealer = Dealer(self, scheduler)

    def join(self, session: Session) -> None:
        """Add an established session and announce it (wamp.session.on_join)."""
        self.sessions[session.id] = session
        session.realm = self
        if self.cluster.distributed:
            self.cluster.session_joined(self.name, session)
        self.broker.publish_meta(meta.SESSION_ON_JOIN, [session.info()])

    def leave(self, session: Session) -> None:
        """Remove a session and everything it owns; announce wamp.session.on_leave."""
        if self.sessions.pop(session.id, None) is None:
            return
        self.dealer.detach(session)
        self.broker.detach(session)
        if self.cluster.distributed:
            self.cluster.session_left(self.name, session)
        self.broker.publish_meta(
            meta.SESSION_ON_LEAVE, [session.id, session.authid, session.authrole]
        )

    def __repr__(self) -> str:
        return f"<Realm {self.name} sessions={len(self.sessions)}>"
