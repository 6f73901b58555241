"""What a cluster backend may use of the core: the ``ClusterHost`` port.

Kept apart from ``ports`` so that the realm's modules never depend on it, even for the
type checker: only the backend (broker/cluster) and the wiring in server.py use it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .realm import Realm
    from .session import Session

__all__ = ["ClusterHost"]


class ClusterHost(Protocol):
    """What a backend may use of the core (``Router`` is one)."""

    @property
    def realms(self) -> Mapping[str, Realm]:
        """The realms this node serves, by name."""
        ...

    def kill(self, session: Session, reason: str, message: str | None) -> None:
        """End a local session with GOODBYE ``reason`` (meta API kill from another node)."""
        ...
