"""A realm: a routing namespace with its own sessions, broker role and dealer role."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .auth import AnonymousAuthenticator, Authenticator
from .cluster import RemoteView
from .dealer import Dealer
from .history import HistorySettings, RealmHistory
from .interfaces import Scheduler
from .ports import Cluster, LocalCluster
from .pubsub import Broker

if TYPE_CHECKING:
    from .session import Session

__all__ = ["DISCLOSE_POLICIES", "Realm", "RealmSettings"]

DISCLOSE_POLICIES = frozenset({"client", "always", "never"})


@dataclass(frozen=True, slots=True)
class RealmSettings:
    """How one realm behaves; built by broker.config from TOML/flags.

    ``disclose_publisher`` / ``disclose_caller``: ``client`` honours the client's
    ``disclose_me`` option, ``always`` and ``never`` override it.
    """

    name: str
    anonymous: bool = True
    anonymous_role: str = "anonymous"
    disclose_publisher: str = "client"
    disclose_caller: str = "client"
    authenticators: tuple[Authenticator, ...] = ()
    history: HistorySettings = field(default_factory=HistorySettings)
    extra: dict[str, Any] = field(default_factory=dict)

    def authenticator(self, method: str) -> Authenticator | None:
        """The authenticator for ``method`` in this realm, if offered."""
        for auth in self.authenticators:
            if auth.authmethod == method:
                return auth
        if method == "anonymous" and self.anonymous:
            return AnonymousAuthenticator(self.anonymous_role)
        return None


class Realm:
    """Sessions joined to one realm and the roles that route between them."""

    __slots__ = (
        "broker",
        "cluster",
        "dealer",
        "history",
        "name",
        "remote",
        "sessions",
        "settings",
    )

    def __init__(
        self, settings: RealmSettings, scheduler: Scheduler, cluster: Cluster | None = None
    ) -> None:
        self.name = settings.name
        self.settings = settings
        self.sessions: dict[int, Session] = {}
        # the backend (server.py replaces the in-process default before serving)
        self.cluster: Cluster = cluster if cluster is not None else LocalCluster()
        # sessions and subscriptions on other nodes (filled by the backend)
        self.remote = RemoteView()
        # event history: in memory (a distributed backend may replace the store)
        self.history = RealmHistory.in_memory(settings.history)
        self.broker = Broker(self)
        self.dealer = Dealer(self, scheduler)

    def join(self, session: Session) -> None:
        """Add an established session and announce it (wamp.session.on_join)."""
        self.sessions[session.id] = session
        session.realm = self
        if self.cluster.distributed:
            self.cluster.session_joined(self.name, session)
        self.broker.publish_meta("wamp.session.on_join", [session.info()])

    def leave(self, session: Session) -> None:
        """Remove a session and everything it owns; announce wamp.session.on_leave."""
        if self.sessions.pop(session.id, None) is None:
            return
        self.dealer.detach(session)
        self.broker.detach(session)
        if self.cluster.distributed:
            self.cluster.session_left(self.name, session)
        self.broker.publish_meta(
            "wamp.session.on_leave", [session.id, session.authid, session.authrole]
        )

    def __repr__(self) -> str:
        return f"<Realm {self.name} sessions={len(self.sessions)}>"
