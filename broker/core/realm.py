"""A realm: a routing namespace with its own sessions, broker role and dealer role."""

from __future__ import annotations

from typing import TYPE_CHECKING

from protocol_spec import meta

from .cluster import RemoteView
from .context import RealmContext
from .dealer import Dealer
from .interfaces import Scheduler
from .ports import Cluster, LocalCluster
from .pubsub import Broker
from .settings import DISCLOSE_POLICIES, RealmSettings

if TYPE_CHECKING:
    from .authorization import Guard
    from .session import Session

__all__ = ["DISCLOSE_POLICIES", "Realm", "RealmSettings"]


class Realm:
    """Sessions joined to one realm and the roles that route between them.

    The roles share the realm's ``RealmContext`` (name, settings, sessions, guard,
    cluster); they never reach back to the realm itself.
    """

    __slots__ = ("broker", "context", "dealer", "remote")

    def __init__(
        self, settings: RealmSettings, scheduler: Scheduler, cluster: Cluster | None = None
    ) -> None:
        # the backend (server.py replaces the in-process default before serving)
        self.context = RealmContext(settings, cluster if cluster is not None else LocalCluster())
        # sessions and subscriptions on other nodes (filled by the backend)
        self.remote = RemoteView()
        self.broker = Broker(self.context)
        self.dealer = Dealer(self.context, scheduler, self.broker.publish_meta)

    @property
    def name(self) -> str:
        """The realm's URI."""
        return self.context.name

    @property
    def settings(self) -> RealmSettings:
        """The realm's frozen settings."""
        return self.context.settings

    @property
    def sessions(self) -> dict[int, Session]:
        """Local sessions joined to this realm, by session ID."""
        return self.context.sessions

    @property
    def guard(self) -> Guard | None:
        """The realm's authorization at run time; None for an open realm."""
        return self.context.guard

    @property
    def cluster(self) -> Cluster:
        """The cluster backend the roles report to."""
        return self.context.cluster

    @cluster.setter
    def cluster(self, cluster: Cluster) -> None:
        self.context.cluster = cluster

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
