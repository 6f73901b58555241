"""One URI-matching structure for both roles: exact, prefix and wildcard entries.

The broker asks for *every* entry matching a topic (an event goes to all matching
subscriptions); the dealer asks for the *best* entry for a procedure, with the
precedence exact > longest prefix > wildcard, and among wildcards the most
specific from the left (a concrete component beats an empty one at the first
position where two patterns differ).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Generic, TypeVar

from protocol_spec.uri import MATCH_EXACT, MATCH_PREFIX, MATCH_WILDCARD, wildcard_matches

__all__ = ["UriMap", "pattern_matches"]

T = TypeVar("T")


class UriMap(Generic[T]):
    """Entries keyed by (match policy, URI or pattern)."""

    __slots__ = ("_exact", "_prefix", "_wildcard")

    def __init__(self) -> None:
        self._exact: dict[str, T] = {}
        self._prefix: dict[str, T] = {}
        # component count → pattern → (components, value)
        self._wildcard: dict[int, dict[str, tuple[tuple[str, ...], T]]] = {}

    def get(self, uri: str, match: str) -> T | None:
        """The entry stored under exactly this (match, uri), if any."""
        if match == MATCH_EXACT:
            return self._exact.get(uri)
        if match == MATCH_PREFIX:
            return self._prefix.get(uri)
        parts = uri.split(".")
        found = self._wildcard.get(len(parts), {}).get(uri)
        return found[1] if found is not None else None

    def set(self, uri: str, match: str, value: T) -> None:
        """Store ``value`` under (match, uri), replacing any previous entry."""
        if match == MATCH_EXACT:
            self._exact[uri] = value
        elif match == MATCH_PREFIX:
            self._prefix[uri] = value
        elif match == MATCH_WILDCARD:
            parts = tuple(uri.split("."))
            self._wildcard.setdefault(len(parts), {})[uri] = (parts, value)
        else:
            raise ValueError(f"unknown match policy {match!r}")

    def remove(self, uri: str, match: str) -> None:
        """Drop the entry under (match, uri); no error if absent."""
        if match == MATCH_EXACT:
            self._exact.pop(uri, None)
        elif match == MATCH_PREFIX:
            self._prefix.pop(uri, None)
        else:
            parts = uri.split(".")
            bucket = self._wildcard.get(len(parts))
            if bucket is not None:
                bucket.pop(uri, None)
                if not bucket:
                    del self._wildcard[len(parts)]

    def matching(self, uri: str) -> list[T]:
        """Every entry whose pattern matches ``uri`` (exact first, then prefix, wildcard)."""
        out: list[T] = []
        exact = self._exact.get(uri)
        if exact is not None:
            out.append(exact)
        if self._prefix:
            for prefix, value in self._prefix.items():
                if uri.startswith(prefix):
                    out.append(value)
        if self._wildcard:
            parts = uri.split(".")
            bucket = self._wildcard.get(len(parts))
            if bucket:
                for pattern, value in bucket.values():
                    if wildcard_matches(pattern, parts):
                        out.append(value)
        return out

    def best(self, uri: str) -> T | None:
        """The entry that wins for ``uri``: exact > longest prefix > most specific wildcard."""
        exact = self._exact.get(uri)
        if exact is not None:
            return exact
        if self._prefix:
            best_len = -1
            best_value: T | None = None
            for prefix, value in self._prefix.items():
                if len(prefix) > best_len and uri.startswith(prefix):
                    best_len = len(prefix)
                    best_value = value
            if best_value is not None:
                return best_value
        if self._wildcard:
            parts = uri.split(".")
            bucket = self._wildcard.get(len(parts))
            if bucket:
                best_key: tuple[bool, ...] | None = None
                winner: T | None = None
                for pattern, value in bucket.values():
                    if wildcard_matches(pattern, parts):
                        key = tuple(bool(c) for c in pattern)
                        if best_key is None or key > best_key:
                            best_key, winner = key, value
                return winner
        return None

    def values(self) -> Iterator[T]:
        """All entries, exact then prefix then wildcard."""
        yield from self._exact.values()
        yield from self._prefix.values()
        for bucket in self._wildcard.values():
            for _, value in bucket.values():
                yield value

    def __len__(self) -> int:
        return (
            len(self._exact)
            + len(self._prefix)
            + sum(len(bucket) for bucket in self._wildcard.values())
        )


def pattern_matches(match: str, pattern: str, uri: str) -> bool:
    """Tell whether one (match, pattern) entry matches ``uri``, as ``UriMap`` would."""
    if match == MATCH_EXACT:
        return uri == pattern
    if match == MATCH_PREFIX:
        return uri.startswith(pattern)
    return wildcard_matches(tuple(pattern.split(".")), uri.split("."))
