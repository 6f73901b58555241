"""The in-memory history store: offsets, per-topic count and age bounds, the realm byte
bound, rule lookup, and the selection rules every store shares (``select``)."""

from __future__ import annotations

from typing import Any

import pytest

from broker.core.history import (
    EVENT_OVERHEAD,
    HistoryQuery,
    HistoryRule,
    HistorySettings,
    MemoryHistoryStore,
    RealmHistory,
    StoredEvent,
    estimate_size,
    select,
)
from broker.core.publication import DeliveryFilter, Publication


class FakeClock:
    """Wall-clock seconds that move only when a test says so."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def event(topic: str, publication: int, args: list[Any] | None = None) -> Publication:
    return Publication(topic, publication, {}, args if args is not None else [publication])


def everything(stored: StoredEvent) -> bool:
    return True


def pubs(store: MemoryHistoryStore, **query: Any) -> list[int]:
    page = store.query(HistoryQuery(**query), everything)
    return [s.event.id for s in page.events]


RULE = HistoryRule("com.t", limit=5)


def test_offsets_count_from_one_per_topic_and_keep_counting_past_the_limit() -> None:
    store = MemoryHistoryStore()
    other = HistoryRule("com.u", limit=5)
    assert [store.append(RULE, event("com.t", p)) for p in range(1, 9)] == list(range(1, 9))
    assert store.append(other, event("com.u", 100)) == 1
    assert pubs(store, uri="com.t") == [4, 5, 6, 7, 8]
    assert store.count == 6
    position = store.position("com.t")
    assert position is not None and position[1] == 8


def test_ttl_hides_and_then_drops_old_events() -> None:
    clock = FakeClock()
    store = MemoryHistoryStore(clock=clock)
    rule = HistoryRule("com.t", limit=100, ttl=10)
    store.append(rule, event("com.t", 1))
    clock.now += 6
    store.append(rule, event("com.t", 2))
    clock.now += 5  # the first is 11 s old, the second 5 s
    assert pubs(store, uri="com.t") == [2]
    store.append(rule, event("com.t", 3))  # appending trims what expired
    assert store.count == 2
    clock.now += 100
    assert pubs(store, uri="com.t") == []


def test_a_topic_whose_history_expired_starts_a_new_epoch() -> None:
    clock = FakeClock()
    store = MemoryHistoryStore(clock=clock)
    rule = HistoryRule("com.t", limit=100, ttl=1)
    store.append(rule, event("com.t", 1))
    first = store.position("com.t")
    clock.now += 5
    store.append(HistoryRule("com.other", limit=1), event("com.other", 9))  # trims com.t
    assert store.position("com.t") is None and "com.t" not in store.topics()
    assert store.append(rule, event("com.t", 2)) == 1
    second = store.position("com.t")
    assert first is not None and second is not None and first[0] != second[0]


def test_the_byte_bound_drops_the_oldest_events_of_the_realm_first() -> None:
    size = EVENT_OVERHEAD + estimate_size(({}, [1], None))
    store = MemoryHistoryStore(max_bytes=3 * size)
    a, b = HistoryRule("com.a", limit=100), HistoryRule("com.b", limit=100)
    store.append(a, event("com.a", 1))
    store.append(b, event("com.b", 2))
    store.append(a, event("com.a", 3))
    store.append(b, event("com.b", 4))  # over the bound: publication 1 goes
    assert store.bytes <= store.max_bytes and store.count == 3
    assert pubs(store, uri="com.a") == [3]
    assert pubs(store, uri="com.b") == [2, 4]


def test_an_event_larger_than_the_whole_bound_is_not_kept() -> None:
    store = MemoryHistoryStore(max_bytes=2000)
    store.append(RULE, event("com.t", 1))
    assert store.append(RULE, event("com.t", 2, ["x" * 5000])) == 2
    assert pubs(store, uri="com.t") == [1] and store.bytes < 2000


def test_memory_stays_bounded_under_many_topics_and_a_tiny_limit() -> None:
    store = MemoryHistoryStore(max_bytes=50_000)
    rule = HistoryRule("com.", match="prefix", limit=1)
    for n in range(20_000):
        store.append(rule, event(f"com.t{n % 500}", n + 1))
    assert store.bytes <= 50_000
    assert store.count == len(store.topics()) <= 500
    # the bookkeeping of dropped events is compacted, not kept forever
    assert len(store._order) <= 2 * store.count + 1024


def test_pattern_queries_merge_topics_in_arrival_order() -> None:
    store = MemoryHistoryStore()
    rule = HistoryRule("com.log.", match="prefix", limit=10)
    for n, topic in enumerate(["com.log.auth", "com.log.basket", "com.log.basket", "com.x"], 1):
        store.append(rule if topic != "com.x" else HistoryRule("com.x"), event(topic, n))
    assert pubs(store, uri="com.log", match="prefix") == [1, 2, 3]
    assert pubs(store, uri="com..basket", match="wildcard") == [2, 3]
    assert pubs(store, uri="com.log", match="prefix", topic="com.log.auth") == [1]
    assert pubs(store, uri="com.log.auth", topic="com.log.basket") == []


def test_realm_rules_pick_the_most_specific_and_cache_the_answer() -> None:
    broad = HistoryRule("com.", match="prefix", limit=10)
    narrow = HistoryRule("com.ticker.", match="prefix", limit=2)
    exact = HistoryRule("com.ticker.eur", limit=1)
    history = RealmHistory.in_memory(HistorySettings((broad, narrow, exact)))
    assert history.rule_for("com.ticker.eur") is exact
    assert history.rule_for("com.ticker.usd") is narrow
    assert history.rule_for("com.other") is broad
    assert history.rule_for("org.other") is None
    assert history.record(Publication("org.other", 1, {})) is None


def test_a_realm_without_rules_keeps_nothing() -> None:
    history = RealmHistory.in_memory(HistorySettings())
    assert history.record(Publication("com.t", 1, {}, [1])) is None
    assert history.rule_for("com.t") is None


def test_session_id_lists_are_never_kept_authid_and_authrole_lists_are() -> None:
    history = RealmHistory.in_memory(HistorySettings((RULE,)))
    by_session = DeliveryFilter(exclude=frozenset({5}))
    assert history.record(Publication("com.t", 1, {}, filter=by_session)) is None
    only = DeliveryFilter(eligible=frozenset({5}))
    assert history.record(Publication("com.t", 2, {}, filter=only)) is None
    by_role = DeliveryFilter(eligible_authrole=frozenset({"admin"}))
    assert history.record(Publication("com.t", 3, {}, filter=by_role)) == 1
    page = history.query(HistoryQuery("com.t"), everything)
    assert [s.event.id for s in page.events] == [3]


# --- select: the rules every store applies ---------------------------------------------------
def stored(n: int, ts: int | None = None) -> StoredEvent:
    return StoredEvent(event("com.t", 100 + n), n, n, ts if ts is not None else 1000 * n, 0)


EVENTS = [stored(n) for n in range(1, 7)]  # publications 101..106, timestamps 1000..6000


def chosen(**kw: Any) -> tuple[list[int], bool | None, bool]:
    page = select(EVENTS, HistoryQuery("com.t", **kw))
    return [s.event.id for s in page.events], page.anchor_found, page.more


def test_select_order_and_limit() -> None:
    assert chosen() == ([101, 102, 103, 104, 105, 106], None, False)
    assert chosen(reverse=True)[0] == [106, 105, 104, 103, 102, 101]
    assert chosen(limit=2) == ([101, 102], None, True)
    assert chosen(limit=2, reverse=True) == ([106, 105], None, True)
    assert chosen(limit=6) == ([101, 102, 103, 104, 105, 106], None, False)


def test_select_time_bounds_compare_as_the_spec_says() -> None:
    assert chosen(from_time=3000)[0] == [103, 104, 105, 106]
    assert chosen(after_time=3000)[0] == [104, 105, 106]
    assert chosen(before_time=3000)[0] == [101, 102]
    assert chosen(until_time=3000)[0] == [101, 102, 103]
    assert chosen(from_time=2000, until_time=4000, reverse=True)[0] == [104, 103, 102]


def test_select_publication_anchors() -> None:
    assert chosen(from_publication=103) == ([103, 104, 105, 106], True, False)
    assert chosen(after_publication=103) == ([104, 105, 106], True, False)
    assert chosen(before_publication=103)[0] == [101, 102]
    assert chosen(until_publication=103)[0] == [101, 102, 103]
    assert chosen(after_publication=102, before_publication=105)[0] == [103, 104]
    # paging backwards: the last event of the previous page is the next anchor
    assert chosen(before_publication=104, reverse=True, limit=2)[0] == [103, 102]


def test_an_anchor_no_longer_kept_is_older_than_everything() -> None:
    # trimmed from the oldest end: after/from a lost event means everything kept
    assert chosen(after_publication=7) == ([101, 102, 103, 104, 105, 106], False, False)
    assert chosen(from_publication=7, after_publication=103) == ([104, 105, 106], False, False)
    assert chosen(before_publication=7)[0] == []
    assert chosen(until_publication=7)[0] == []


@pytest.mark.parametrize(
    ("rule", "reason"),
    [
        (dict(uri="com.t", match="regex"), "match must be one of"),
        (dict(uri="com.t", limit=0), "limit must be a positive"),
        (dict(uri="com..t"), "invalid exact topic URI"),
        (dict(uri="wamp.session.on_join"), "no history of wamp"),
        (dict(uri="com.t", ttl=0), "ttl must be a positive"),
    ],
)
def test_invalid_rules_say_why(rule: dict[str, Any], reason: str) -> None:
    with pytest.raises(ValueError, match=reason):
        HistoryRule(**rule)
