"""WAMP IDs: random global-scope IDs, sequential counters, deterministic subscription IDs."""

from __future__ import annotations

import hashlib
import secrets

from protocol_spec.messages import MAX_ID

__all__ = ["Counter", "random_id", "stable_id"]


def random_id() -> int:
    """A random ID in 1..2^53 (sessions, publications, registrations)."""
    return secrets.randbelow(MAX_ID) + 1


def stable_id(*parts: str) -> int:
    """A deterministic ID in 1..2^53 derived from ``parts``.

    Subscription IDs use it (realm, match, topic) so that every cluster node
    gives the same subscription the same ID without coordination.
    """
    digest = hashlib.blake2b("\x1f".join(parts).encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % MAX_ID + 1


class Counter:
    """Sequential IDs 1, 2, 3 … wrapping before 2^53 (request IDs, router scope)."""

    __slots__ = ("_last",)

    def __init__(self) -> None:
        self._last = 0

    def next(self) -> int:
        self._last = self._last + 1 if self._last < MAX_ID else 1
        return self._last
