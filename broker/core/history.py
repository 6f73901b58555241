"""Event history (WAMP Advanced Profile "Event History"): rules, the store port, a memory store.

Which topics keep history is configured per realm by ``HistoryRule`` s (URI + match
policy + ``limit`` events + ``ttl`` seconds); a topic no rule matches keeps nothing.
``RealmHistory`` is what the broker talks to: ``record`` at publish time (one rule
lookup, cached per topic), ``query`` for ``wamp.subscription.get_events``
(broker/core/history_meta.py).

Storage is behind the ``HistoryStore`` port, called synchronously from the core:
``append`` one event of a topic (the store gives it the topic's next *offset*, a
monotonic integer from 1, and a timestamp) and ``query`` a subscription's events.
``MemoryHistoryStore`` is the in-process implementation, bounded three ways: per topic
by count (``limit``) and age (``ttl``), and per realm by an estimate of the bytes held
(``max_bytes``; the oldest events of the realm go first). A topic whose history becomes
empty is forgotten; its offsets then start again at 1 with a new ``epoch``.

A distributed backend may replace the store by a ``HistoryReader`` (``reader``): the
Redis backend keeps one stream per topic, written by the cross-node publish script
(broker/cluster/history.py), so ``record`` then keeps nothing here and ``query`` is
answered later, through a callback on the event loop (``wamp.subscription.get_events``
returns a ``Deferred``). Every implementation applies the same selection rules to what
it reads: anchors, time bounds, order and limit are the pure function ``select``.
protocol_spec/wamp.md ("Event history") is the prose.

Sans-I/O: the clock is injected (``time.time`` by default), nothing here waits.
"""

from __future__ import annotations

import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from heapq import merge
from typing import TYPE_CHECKING, Any, Protocol

from protocol_spec.uri import MATCH_EXACT, MATCH_POLICIES, is_reserved, is_valid_uri

from .ids import random_id
from .matching import UriMap, pattern_matches

if TYPE_CHECKING:
    from .publication import Publication

__all__ = [
    "DEFAULT_MAX_BYTES",
    "HistoryPage",
    "HistoryQuery",
    "HistoryReader",
    "HistoryRule",
    "HistorySettings",
    "HistoryStore",
    "MemoryHistoryStore",
    "QueryDone",
    "RealmHistory",
    "StoredEvent",
    "estimate_size",
    "in_time",
    "select",
]

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
"""Bytes of history one realm may hold on one node unless configured otherwise."""

EVENT_OVERHEAD = 320
"""Bytes counted per stored event on top of its payload (the objects that hold it)."""

_RULE_CACHE_LIMIT = 10_000
"""Topics whose rule lookup is cached before the cache starts over (bounded memory)."""


@dataclass(frozen=True, slots=True)
class HistoryRule:
    """Keep the last ``limit`` events of each topic ``uri`` matches, for ``ttl`` seconds.

    ``ttl`` None: no age limit (count and the realm's byte bound still apply). Raises
    ``ValueError`` with a reason when a field is invalid.
    """

    uri: str
    match: str = MATCH_EXACT
    limit: int = 1000
    ttl: float | None = None

    def __post_init__(self) -> None:
        if self.match not in MATCH_POLICIES:
            raise ValueError(f"match must be one of {', '.join(sorted(MATCH_POLICIES))}")
        if (self.uri or self.match == MATCH_EXACT) and not is_valid_uri(self.uri, self.match):
            raise ValueError(f"invalid {self.match} topic URI {self.uri!r}")
        if is_reserved(self.uri):
            raise ValueError(f"{self.uri!r}: the router keeps no history of wamp.* topics")
        if type(self.limit) is not int or self.limit <= 0:
            raise ValueError("limit must be a positive number of events")
        if self.ttl is not None and (type(self.ttl) not in (int, float) or self.ttl <= 0):
            raise ValueError("ttl must be a positive number of seconds")


@dataclass(frozen=True, slots=True)
class HistorySettings:
    """A realm's history configuration: its rules and its byte bound (per node)."""

    rules: tuple[HistoryRule, ...] = ()
    max_bytes: int = DEFAULT_MAX_BYTES


@dataclass(frozen=True, slots=True)
class StoredEvent:
    """A publication in its topic's history: its offset, ordering key and timestamp.

    ``order`` sorts events of different topics of one realm in the order the store
    received them (a pattern subscription's history merges topics by it).
    ``timestamp`` is milliseconds since the Unix epoch.
    """

    event: Publication
    offset: int
    order: int
    timestamp: int
    size: int


@dataclass(frozen=True, slots=True)
class HistoryQuery:
    """The events of one subscription (``match``, ``uri``) a caller asks for.

    Times are milliseconds since the epoch, already rounded so that comparing an
    event's millisecond timestamp with them is exact (see history_meta). Publication
    anchors locate an event in the subscription's sequence; see ``select``.
    """

    uri: str
    match: str = MATCH_EXACT
    topic: str | None = None
    reverse: bool = False
    limit: int | None = None
    from_time: int | None = None
    after_time: int | None = None
    before_time: int | None = None
    until_time: int | None = None
    from_publication: int | None = None
    after_publication: int | None = None
    before_publication: int | None = None
    until_publication: int | None = None


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """A query's answer: the events in the order asked for, and what was left out.

    ``anchor_found``: None without ``after_publication`` / ``from_publication``;
    otherwise whether that event was still in the history (false: events between it
    and the oldest one kept may be missing). ``more``: the limit left events out.
    """

    events: tuple[StoredEvent, ...] = ()
    anchor_found: bool | None = None
    more: bool = False


class HistoryStore(Protocol):
    """Where one realm's event history lives; called synchronously by the core."""

    def append(self, rule: HistoryRule, event: Publication) -> int:
        """Keep ``event`` under ``rule``'s bounds; return its per-topic offset."""
        ...

    def query(self, query: HistoryQuery, accept: Callable[[StoredEvent], bool]) -> HistoryPage:
        """The subscription's events ``accept`` lets the caller see, selected by ``query``."""
        ...


QueryDone = Callable[[HistoryPage | str], None]
"""The answer of a ``HistoryReader``: the page, or why the history could not be read."""


class HistoryReader(Protocol):
    """A realm's history kept elsewhere (Redis), read asynchronously.

    ``query`` returns at once and calls ``done`` exactly once, later, on the event loop.
    """

    def query(
        self, query: HistoryQuery, accept: Callable[[StoredEvent], bool], done: QueryDone
    ) -> None:
        """Select the subscription's events ``accept`` lets the caller see; answer ``done``."""
        ...


# --- selection (shared by every store) ------------------------------------------------------
def _position(events: Sequence[StoredEvent], publication: int) -> int | None:
    for index, stored in enumerate(events):
        if stored.event.id == publication:
            return index
    return None


def select(events: Sequence[StoredEvent], query: HistoryQuery) -> HistoryPage:
    """Apply anchors, time bounds, order and limit to a subscription's events (oldest first).

    History is trimmed from its oldest end, so a publication anchor that is not in
    ``events`` is taken to be older than all of them: ``from_``/``after_publication``
    then exclude nothing (``anchor_found`` false) and ``before_``/``until_publication``
    leave nothing.
    """
    start, end = 0, len(events)
    found: bool | None = None
    for anchor, shift, lower in (
        (query.from_publication, 0, True),
        (query.after_publication, 1, True),
        (query.before_publication, 0, False),
        (query.until_publication, 1, False),
    ):
        if anchor is None:
            continue
        index = _position(events, anchor)
        if lower:
            found = (found is not False) and index is not None
            if index is not None:
                start = max(start, index + shift)
        else:
            end = min(end, index + shift) if index is not None else 0
    chosen = [stored for stored in events[start:end] if in_time(stored.timestamp, query)]
    if query.reverse:
        chosen.reverse()
    more = query.limit is not None and len(chosen) > query.limit
    if more:
        del chosen[query.limit :]
    return HistoryPage(tuple(chosen), found, more)


def in_time(ts: int, q: HistoryQuery) -> bool:
    """Whether a timestamp (ms) is within the query's time bounds."""
    return not (
        (q.from_time is not None and ts < q.from_time)
        or (q.after_time is not None and ts <= q.after_time)
        or (q.before_time is not None and ts >= q.before_time)
        or (q.until_time is not None and ts > q.until_time)
    )


def estimate_size(value: Any) -> int:
    """Bytes ``value`` holds, counting containers and their contents (shared parts twice)."""
    getsizeof = sys.getsizeof
    total = 0
    stack = [value]
    while stack:
        item = stack.pop()
        total += getsizeof(item)
        if type(item) is dict:
            for key, inner in item.items():
                total += getsizeof(key)
                if type(inner) in _CONTAINERS:
                    stack.append(inner)
                else:
                    total += getsizeof(inner)
        elif type(item) in _CONTAINERS:
            for inner in item:
                if type(inner) in _CONTAINERS:
                    stack.append(inner)
                else:
                    total += getsizeof(inner)
    return total


_CONTAINERS = frozenset({dict, list, tuple})


# --- the in-memory store ------------------------------------------------------------------
class _Topic:
    """One topic's kept events, oldest first, and its offset counter."""

    __slots__ = ("epoch", "events", "last_offset", "rule", "topic")

    def __init__(self, topic: str, rule: HistoryRule) -> None:
        self.topic = topic
        self.rule = rule
        self.epoch = random_id()
        self.last_offset = 0
        self.events: deque[StoredEvent] = deque()


class MemoryHistoryStore:
    """A realm's history in this process: gone with it, bounded by count, age and bytes.

    ``bytes`` is the estimate held (payloads by ``estimate_size`` plus
    ``EVENT_OVERHEAD`` per event); appending past ``max_bytes`` drops the realm's
    oldest events first. An event larger than ``max_bytes`` alone is not kept (its
    offset is still used, so the gap shows to a reader of the topic's offsets).
    """

    __slots__ = ("_clock", "_order", "_seq", "_topics", "bytes", "count", "max_bytes")

    def __init__(
        self, max_bytes: int = DEFAULT_MAX_BYTES, clock: Callable[[], float] = time.time
    ) -> None:
        self.max_bytes = max_bytes
        self._clock = clock
        self._topics: dict[str, _Topic] = {}
        # (order, topic) of every event in append order; entries of dropped events are
        # skipped when met and compacted away when they outnumber the live ones
        self._order: deque[tuple[int, _Topic]] = deque()
        self._seq = 0
        self.bytes = 0
        self.count = 0

    def _now(self) -> int:
        return int(self._clock() * 1000)

    # --- HistoryStore ---------------------------------------------------------------------
    def append(self, rule: HistoryRule, event: Publication) -> int:
        """Keep ``event``; return its offset in its topic (from 1, +1 per event)."""
        now = self._now()
        state = self._topics.get(event.topic)
        if state is None or state.rule is not rule:
            state = self._topics[event.topic] = _Topic(event.topic, rule)
        state.last_offset += 1
        offset = state.last_offset
        size = EVENT_OVERHEAD + estimate_size((event.details, event.args, event.kwargs))
        if size <= self.max_bytes:
            self._seq += 1
            state.events.append(StoredEvent(event, offset, self._seq, now, size))
            self._order.append((self._seq, state))
            self.bytes += size
            self.count += 1
            while len(state.events) > rule.limit:
                self._drop_oldest(state)
        elif not state.events:
            del self._topics[event.topic]
        self._trim(now)
        return offset

    def query(self, query: HistoryQuery, accept: Callable[[StoredEvent], bool]) -> HistoryPage:
        """The subscription's unexpired events ``accept`` likes, selected by ``query``."""
        now = self._now()
        states = self._states_for(query)
        streams: list[Iterable[StoredEvent]] = [
            [s for s in state.events if not _expired(s, state.rule, now)] for state in states
        ]
        ordered = streams[0] if len(streams) == 1 else merge(*streams, key=_order_of)
        return select([stored for stored in ordered if accept(stored)], query)

    # --- introspection --------------------------------------------------------------------
    def position(self, topic: str) -> tuple[int, int] | None:
        """(epoch, last offset) of ``topic``'s history, None when it keeps nothing now."""
        state = self._topics.get(topic)
        return (state.epoch, state.last_offset) if state is not None else None

    def topics(self) -> list[str]:
        """Every topic with events kept."""
        return list(self._topics)

    # --- bounds ---------------------------------------------------------------------------
    def _states_for(self, query: HistoryQuery) -> list[_Topic]:
        if query.topic is not None or query.match == MATCH_EXACT:
            topic = query.topic if query.topic is not None else query.uri
            state = self._topics.get(topic)
            ok = state is not None and pattern_matches(query.match, query.uri, topic)
            return [state] if ok and state is not None else []
        return [
            s for s in self._topics.values() if pattern_matches(query.match, query.uri, s.topic)
        ]

    def _drop_oldest(self, state: _Topic) -> None:
        stored = state.events.popleft()
        self.bytes -= stored.size
        self.count -= 1
        if not state.events and self._topics.get(state.topic) is state:
            del self._topics[state.topic]

    def _live(self, order: int, state: _Topic) -> bool:
        return (
            bool(state.events)
            and state.events[0].order <= order
            and self._topics.get(state.topic) is state
        )

    def _trim(self, now: int) -> None:
        """Drop the realm's oldest events while over the byte bound or past their ttl."""
        entries = self._order
        while entries:
            order, state = entries[0]
            if not self._live(order, state):
                entries.popleft()
            elif self.bytes > self.max_bytes or _expired(state.events[0], state.rule, now):
                entries.popleft()
                self._drop_oldest(state)
            else:
                break
        if len(entries) > 2 * self.count + 1024:
            self._order = deque(entry for entry in entries if self._live(*entry))


def _expired(stored: StoredEvent, rule: HistoryRule, now: int) -> bool:
    return rule.ttl is not None and now - stored.timestamp > rule.ttl * 1000


def _order_of(stored: StoredEvent) -> int:
    return stored.order


# --- the realm's view -----------------------------------------------------------------------
@dataclass(slots=True)
class RealmHistory:
    """A realm's history rules and store: what the broker records into and queries.

    ``record`` costs one attribute check for a realm without rules, and one cached
    rule lookup per publish otherwise.
    """

    settings: HistorySettings
    store: HistoryStore
    reader: HistoryReader | None = None
    """Set by a backend that keeps the history itself: ``record`` keeps nothing then."""
    _rules: UriMap[HistoryRule] | None = field(default=None, init=False)
    _cache: dict[str, HistoryRule | None] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        if self.settings.rules:
            rules: UriMap[HistoryRule] = UriMap()
            for rule in self.settings.rules:
                if rules.get(rule.uri, rule.match) is None:
                    rules.set(rule.uri, rule.match, rule)
            self._rules = rules

    @classmethod
    def in_memory(
        cls, settings: HistorySettings, clock: Callable[[], float] = time.time
    ) -> RealmHistory:
        """The realm's history kept by a ``MemoryHistoryStore`` (the local backend)."""
        return cls(settings, MemoryHistoryStore(settings.max_bytes, clock))

    def rule_for(self, topic: str) -> HistoryRule | None:
        """The rule that keeps ``topic``'s history: exact > longest prefix > wildcard."""
        if self._rules is None:
            return None
        try:
            return self._cache[topic]
        except KeyError:
            pass
        rule = self._rules.best(topic)
        if len(self._cache) >= _RULE_CACHE_LIMIT:
            self._cache.clear()
        self._cache[topic] = rule
        return rule

    def record(self, publication: Publication) -> int | None:
        """Keep a publication if a rule covers its topic; return its offset (None: not kept).

        A publication black/whitelisted by session ID is never kept (spec: session IDs
        change on every join, so the list means nothing to a later reader).
        """
        if self._rules is None or self.reader is not None:
            return None
        rule = self.keeping(publication)
        return None if rule is None else self.store.append(rule, publication)

    def keeping(self, publication: Publication) -> HistoryRule | None:
        """The rule under which ``publication`` is kept; None: it is not kept."""
        if self._rules is None:
            return None
        rule = self.rule_for(publication.topic)
        if rule is None:
            return None
        delivery_filter = publication.filter
        if delivery_filter is not None and (
            delivery_filter.exclude or delivery_filter.eligible is not None
        ):
            return None
        return rule

    def query(self, query: HistoryQuery, accept: Callable[[StoredEvent], bool]) -> HistoryPage:
        """The events of a subscription a caller may see (see ``HistoryStore.query``)."""
        if self._rules is None:
            return HistoryPage(anchor_found=_no_anchor(query))
        return self.store.query(query, accept)


def _no_anchor(query: HistoryQuery) -> bool | None:
    if query.from_publication is None and query.after_publication is None:
        return None
    return False
