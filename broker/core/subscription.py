"""A subscription: every local subscriber of one (match, topic), sharing one ID."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .clock import now_iso

if TYPE_CHECKING:
    from .session import Session

__all__ = ["Subscription"]


class Subscription:
    """Every subscriber of one (match, topic) pair, sharing one subscription ID."""

    __slots__ = ("created", "id", "match", "subscribers", "topic")

    def __init__(self, sub_id: int, topic: str, match: str) -> None:
        self.id = sub_id
        self.topic = topic
        self.match = match
        self.created = now_iso()
        self.subscribers: dict[int, Session] = {}

    def info(self) -> dict[str, Any]:
        """The subscription's description for the meta API."""
        return {"id": self.id, "created": self.created, "uri": self.topic, "match": self.match}
