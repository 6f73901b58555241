"""Prefix and wildcard subscriptions on a Redis Cluster, which has no sharded PSUBSCRIBE.

A node with pattern subscriptions in a realm listens on that realm's *pattern channel*
(``keys.pattern_channel``) and announces the whole set of its patterns there on the
control channel (``PatternsChanged``, op ``pat``). A publisher that knows a pattern
matching its topic (announced, or a remote prefix/wildcard subscription in the realm's
``RemoteView``, loaded from the nodes' ``:subs`` hashes) sends the event on the topic
channel *and* on the pattern channel; receivers filter with WAMP semantics and
deliver each publication once (``events``). No I/O here (protocol_spec/cluster.md,
"Redis Cluster").
"""

from __future__ import annotations

from collections import Counter

from broker.core.host import ClusterHost
from broker.core.matching import pattern_matches
from protocol_spec.cluster import PatternsChanged
from protocol_spec.uri import MATCH_EXACT

__all__ = ["Pattern", "Patterns"]

Pattern = tuple[str, str]
"""(match, uri) of a prefix or wildcard subscription."""


class Patterns:
    """This node's pattern subscriptions per realm, and the other nodes' as announced."""

    def __init__(self, node: str, host: ClusterHost) -> None:
        self.node = node
        self.host = host
        self.local: dict[str, Counter[Pattern]] = {}
        """realm → (match, uri) → local subscriptions needing it."""
        self.remote: dict[str, dict[str, frozenset[Pattern]]] = {}
        """realm → node → its announced patterns."""

    # --- this node's -------------------------------------------------------------------
    def add(self, realm: str, match: str, uri: str) -> bool:
        """Count one local need; True when the realm's set of patterns grew."""
        counts = self.local.setdefault(realm, Counter())
        counts[(match, uri)] += 1
        return counts[(match, uri)] == 1

    def remove(self, realm: str, match: str, uri: str) -> bool:
        """Count one need less; True when the realm's set of patterns shrank."""
        counts = self.local.get(realm)
        if counts is None or counts[(match, uri)] <= 0:
            return False
        counts[(match, uri)] -= 1
        if counts[(match, uri)] > 0:
            return False
        del counts[(match, uri)]
        if not counts:
            del self.local[realm]
        return True

    def needs_channel(self, realm: str) -> bool:
        """Whether a local subscription needs ``realm``'s pattern channel."""
        return realm in self.local

    def announcement(self, realm: str) -> PatternsChanged:
        """The envelope announcing this node's whole set of patterns in ``realm``."""
        return PatternsChanged(self.node, realm, tuple(sorted(self.local.get(realm, ()))))

    def announcements(self) -> list[PatternsChanged]:
        """One announcement per realm with patterns (after a reconnect)."""
        return [self.announcement(realm) for realm in sorted(self.local)]

    # --- the other nodes' --------------------------------------------------------------
    def announced(self, msg: PatternsChanged) -> None:
        """Another node's patterns in a realm (replaces what it announced before)."""
        nodes = self.remote.setdefault(msg.realm, {})
        if msg.patterns:
            nodes[msg.node] = frozenset(msg.patterns)
        else:
            nodes.pop(msg.node, None)

    def drop(self, node: str) -> None:
        """``node`` left: forget its announcements."""
        for nodes in self.remote.values():
            nodes.pop(node, None)

    def reaches(self, realm: str, topic: str) -> bool:
        """Whether some other node may have a pattern subscription matching ``topic``."""
        for patterns in self.remote.get(realm, {}).values():
            for match, uri in patterns:
                if pattern_matches(match, uri, topic):
                    return True
        found = self.host.realms.get(realm)
        if found is None:
            return False
        return any(sub.match != MATCH_EXACT for sub in found.remote.matching(topic))
