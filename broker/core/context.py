"""What the broker and dealer roles need of their realm, handed to them explicitly.

The roles never see the ``Realm``: it builds one ``RealmContext`` and gives it (and, to
the dealer, a way to publish meta events) to both roles, so realm → roles is the only
direction of dependency.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .authorization import Guard
from .history import RealmHistory

if TYPE_CHECKING:
    from .ports import Cluster
    from .session import Session
    from .settings import RealmSettings

__all__ = ["RealmContext"]


class RealmContext:
    """A realm's name, settings, joined sessions, authorization and cluster backend.

    ``sessions`` is the realm's own dict (shared, not copied). ``cluster`` is replaced
    once by the server before serving; ``Realm.cluster`` writes through to here.
    """

    __slots__ = ("cluster", "guard", "history", "name", "sessions", "settings")

    def __init__(self, settings: RealmSettings, cluster: Cluster) -> None:
        self.name = settings.name
        self.settings = settings
        self.sessions: dict[int, Session] = {}
        self.cluster = cluster
        # the realm's authorization at run time (policy + cached decisions); None: open
        self.guard = Guard(settings.authorization) if settings.authorization else None
        # event history: in memory (a distributed backend may replace the store)
        self.history = RealmHistory.in_memory(settings.history)
