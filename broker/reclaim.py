"""Giving memory back to the operating system after a burst.

A broker that once held 3,000 sessions or a slow consumer's megabytes of queued frames
frees all of it (nothing leaks: rounds of bursts stay flat), but the process keeps the
pages: CPython's small-object allocator (pymalloc) keeps an arena while any object in it
lives, and glibc's malloc keeps freed heap until it is trimmed. ``Reclaimer`` watches the
session count (and the bytes dropped with slow consumers) and, once a burst has passed,
collects garbage and asks glibc to return its free pages (``malloc_trim``).

What it can return depends on the allocator: with the default pymalloc, objects of up to
512 bytes live in 1 MiB arenas that CPython 3.11 frees only when empty, so part of a
burst's peak stays resident; run the broker with ``PYTHONMALLOC=malloc`` to let every
freed block go back through glibc (README, "Memory", gives the measured cost and gain).
On platforms without glibc only the garbage collection runs.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import gc
import logging
from collections.abc import Callable

__all__ = ["Reclaimer", "malloc_trim"]

log = logging.getLogger(__name__)


def _load_trim() -> Callable[[int], int] | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        libc = ctypes.CDLL(name)
        trim: Callable[[int], int] = libc.malloc_trim
    except (OSError, AttributeError):
        return None
    return trim


_TRIM = _load_trim()


def malloc_trim() -> bool:
    """Ask glibc to return free heap pages to the system; False where there is no glibc."""
    if _TRIM is None:
        return False
    _TRIM(0)
    return True


class Reclaimer:
    """Decides when a burst is over and memory should be returned.

    Call ``observe(sessions, now)`` periodically (the server's sweeper does, once a
    second) and ``released(nbytes, now)`` when a large buffer was dropped (a slow
    consumer closed). A reclaim runs when the session count has fallen to at most
    ``1 - drop_fraction`` of its peak since the last reclaim, by at least ``min_drop``
    sessions, or when at least ``min_bytes`` of buffers were released; never more often
    than every ``min_interval`` seconds (a full collection costs a few milliseconds per
    100,000 live objects).
    """

    def __init__(
        self,
        *,
        drop_fraction: float = 0.5,
        min_drop: int = 500,
        min_bytes: int = 16 * 1024 * 1024,
        min_interval: float = 10.0,
        reclaim: Callable[[], None] | None = None,
    ) -> None:
        if not 0 < drop_fraction <= 1 or min_drop < 1 or min_bytes < 1 or min_interval < 0:
            raise ValueError("need 0 < drop_fraction <= 1, min_drop >= 1, min_bytes >= 1")
        self.drop_fraction = drop_fraction
        self.min_drop = min_drop
        self.min_bytes = min_bytes
        self.min_interval = min_interval
        self._reclaim = reclaim or _collect_and_trim
        self._peak = 0
        self._current = 0
        self._released = 0
        self._last = float("-inf")
        self.runs = 0
        """How many reclaims ran (for /metrics and tests)."""

    def released(self, nbytes: int, now: float) -> bool:
        """``nbytes`` of buffers were freed (e.g. a slow consumer dropped); maybe reclaim."""
        self._released += max(0, nbytes)
        return self._maybe(now)

    def observe(self, sessions: int, now: float) -> bool:
        """The current session count; return whether a reclaim ran."""
        self._peak = max(self._peak, sessions)
        self._current = sessions
        return self._maybe(now)

    def _due(self) -> bool:
        if self._released >= self.min_bytes:
            return True
        dropped = self._peak - self._current
        return dropped >= self.min_drop and self._current <= self._peak * (1 - self.drop_fraction)

    def _maybe(self, now: float) -> bool:
        if now - self._last < self.min_interval or not self._due():
            return False
        self._last = now
        self._peak = self._current
        self._released = 0
        self.runs += 1
        self._reclaim()
        return True


def _collect_and_trim() -> None:
    collected = gc.collect()
    trimmed = malloc_trim()
    log.debug("memory reclaimed: %d objects collected, malloc_trim %s", collected, trimmed)
