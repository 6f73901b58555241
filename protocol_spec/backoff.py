"""Reconnection delays: exponential backoff with jitter.

One policy for every reconnecting party: the client SDK (to its router) and a broker
node (to Redis). It lives here because both may import protocol_spec and nothing else
of each other.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from dataclasses import dataclass

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True)
class Backoff:
    """Exponential backoff with jitter.

    Attempt ``n`` (0-based) waits ``base = min(maximum, initial * multiplier**n)``
    reduced by a random fraction up to ``jitter``: a delay in
    ``[base * (1 - jitter), base]``. ``jitter=1`` is "full jitter", ``0`` none.
    Jitter spreads the reconnections of many clients after a router restart.
    """

    initial: float = 0.5
    maximum: float = 30.0
    multiplier: float = 2.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.initial < 0 or self.maximum < self.initial or self.multiplier < 1:
            raise ValueError("need 0 <= initial <= maximum and multiplier >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be within 0..1")

    def base(self, attempt: int) -> float:
        """The delay before attempt ``attempt`` without jitter."""
        if attempt <= 0:
            return self.initial
        # Avoid float overflow for large attempt counts.
        delay = self.initial
        for _ in range(attempt):
            delay *= self.multiplier
            if delay >= self.maximum:
                return self.maximum
        return delay

    def delay(self, attempt: int, rng: random.Random | None = None) -> float:
        """The jittered delay before attempt ``attempt`` (0-based)."""
        base = self.base(attempt)
        return base * (1.0 - self.jitter * (rng or random).random())

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """An endless iterator of delays for attempts 0, 1, 2, …"""
        attempt = 0
        while True:
            yield self.delay(attempt, rng)
            attempt += 1
