"""What the core needs from the outside world, as small protocols adapters implement.

The core never performs I/O. It *pushes* output through these interfaces instead of
returning action lists, so a fan-out to thousands of subscribers allocates nothing
per recipient beyond the adapter's queue entry.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from protocol_spec.errors import CloseCode
from protocol_spec.messages import Message

__all__ = ["EncodeCache", "Peer", "Scheduler", "TimerHandle"]

EncodeCache = dict[str, Any]
"""Shared by all recipients of one message: serializer name → encoded frame."""


class Peer(Protocol):
    """One transport connection, as seen by the core."""

    def send(self, message: Message, cache: EncodeCache | None = None) -> bool | None:
        """Queue ``message`` for this peer.

        Recipients of the same message get the same ``cache`` so it is encoded
        once per serializer, not once per recipient. Never raises for a value the
        peer's serializer cannot carry: it returns ``False`` (that message only was
        dropped, and logged); ``True`` or ``None`` otherwise. The dealer answers a
        caller with ERROR when its RESULT or INVOCATION comes back ``False``.
        """

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Flush what is queued, then close the transport."""

    @property
    def transport_info(self) -> dict[str, Any]:
        """Facts about the transport for the meta API (type, peer address, serializer)."""
        ...


class TimerHandle(Protocol):
    """A scheduled callback that can be cancelled."""

    def cancel(self) -> None:
        """Cancel the callback if it has not run yet."""


class Scheduler(Protocol):
    """Runs callbacks later (call timeouts); the asyncio adapter wraps ``call_later``."""

    def call_later(self, delay: float, callback: Callable[[], None]) -> TimerHandle:
        """Run ``callback`` after ``delay`` seconds."""
        ...
