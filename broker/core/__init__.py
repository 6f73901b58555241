"""The sans-I/O routing core: realms, sessions, the broker and dealer roles, meta API.

Nothing here imports asyncio, websockets or redis (a test enforces it). Adapters
feed decoded messages in through ``Router`` and receive output through the ``Peer``
and ``Scheduler`` interfaces they implement (see ``interfaces``).
"""

from __future__ import annotations

from .interfaces import Peer, Scheduler, TimerHandle
from .realm import Realm
from .router import Router
from .session import Session, SessionState
from .settings import RealmSettings, SessionLimits

__all__ = [
    "Peer",
    "Realm",
    "RealmSettings",
    "Router",
    "Scheduler",
    "Session",
    "SessionLimits",
    "SessionState",
    "TimerHandle",
]
