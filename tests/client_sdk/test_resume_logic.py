"""``HistoryFetcher`` and ``Resumer`` against a scripted stand-in for a session.

The stand-in answers ``wamp.subscription.get_events`` from a list of publications
the way protocol_spec/wamp.md ("Event history") describes (``after_publication``,
``limit``, keyword result ``more`` and ``anchor_found``), with random publication
IDs, so paging, de-duplication and every gap reason are checked without a network.
End-to-end behaviour against a real broker is in test_resume.py.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Coroutine
from typing import Any

import pytest

from client_sdk import ApplicationError, CallResult, Event, Gap, SessionClosed
from client_sdk.resume import (
    EVENT_HISTORY,
    GAP_ANCHOR_LOST,
    GAP_ANCHOR_UNCONFIRMED,
    GAP_BUFFER_OVERFLOW,
    GAP_CALL_FAILED,
    GAP_MALFORMED,
    GAP_NO_ANCHOR,
    GAP_NOT_SUPPORTED,
    GAP_PAGE_LIMIT,
    GET_EVENTS,
    HistoryFetcher,
    Resumer,
)

TOPIC = "com.example.feed"
SUB = 77


class FakeHistory:
    """A session stand-in whose router keeps ``kept`` (publication IDs, oldest first)."""

    def __init__(self, kept: list[int], *, extended: bool = True, features: bool = True) -> None:
        self.kept = kept
        self.extended = extended  # answer `more` and `anchor_found`
        self.features = frozenset({EVENT_HISTORY}) if features else frozenset()
        self.calls: list[dict[str, Any]] = []
        self.fail: BaseException | None = None
        self.answer: CallResult | None = None
        self.tasks: list[asyncio.Task[Any]] = []

    def router_features(self, role: str) -> frozenset[str]:
        return self.features if role == "broker" else frozenset()

    async def call(self, procedure: str, *args: Any, **kwargs: Any) -> CallResult:
        assert procedure == GET_EVENTS and args == (SUB,)
        self.calls.append(kwargs)
        await asyncio.sleep(0)
        if self.fail is not None:
            raise self.fail
        if self.answer is not None:
            return self.answer
        after = kwargs.get("after_publication")
        found = after in self.kept
        start = self.kept.index(after) + 1 if found else 0
        limit = kwargs["limit"]
        page = self.kept[start : start + limit]
        items = [item(publication) for publication in page]
        info: dict[str, Any] = {}
        if self.extended:
            info["more"] = start + limit < len(self.kept)
            if after is not None:
                info["anchor_found"] = found
        return CallResult([items], info)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        task = asyncio.ensure_future(coro)
        self.tasks.append(task)
        return task


def item(publication: int) -> dict[str, Any]:
    return {
        "timestamp": "2026-01-01T00:00:00.000Z",
        "subscription": SUB,
        "publication": publication,
        "details": {},
        "args": [publication],
    }


def live(publication: int) -> Event:
    return Event(TOPIC, [publication], {}, publication, SUB)


def ids(count: int, seed: int = 1) -> list[int]:
    """Distinct random publication IDs (never ordered, like the router's)."""
    return random.Random(seed).sample(range(1, 2**53), count)


async def steps(fetcher: HistoryFetcher) -> list[list[int] | str]:
    out: list[list[int] | str] = []
    async for step in fetcher:
        out.append(step if isinstance(step, str) else [e.publication for e in step])
    return out


# --- HistoryFetcher -----------------------------------------------------------------


async def test_fetcher_pages_after_the_anchor_until_the_router_has_no_more() -> None:
    kept = ids(2500)
    session = FakeHistory(kept)
    fetcher = HistoryFetcher(session, TOPIC, SUB, kept[99], limit=1000)
    got = await steps(fetcher)
    assert got == [kept[100:1100], kept[1100:2100], kept[2100:]]
    assert fetcher.complete and fetcher.pages == 3
    anchors = [call["after_publication"] for call in session.calls]
    assert anchors == [kept[99], kept[1099], kept[2099]]


async def test_fetcher_events_are_replayed_and_keep_payload_and_timestamp() -> None:
    kept = ids(3)
    fetcher = HistoryFetcher(FakeHistory(kept), TOPIC, SUB, kept[0])
    events = [event async for step in fetcher if not isinstance(step, str) for event in step]
    assert [e.args for e in events] == [[kept[1]], [kept[2]]]
    assert all(e.replayed and e.topic == TOPIC and e.subscription == SUB for e in events)
    assert events[0].details["timestamp"] == "2026-01-01T00:00:00.000Z"


async def test_fetcher_stops_at_the_page_limit_and_says_so() -> None:
    kept = ids(50)
    fetcher = HistoryFetcher(FakeHistory(kept), TOPIC, SUB, kept[0], limit=10, max_pages=2)
    got = await steps(fetcher)
    assert got == [kept[1:11], kept[11:21], GAP_PAGE_LIMIT]
    assert not fetcher.complete


async def test_fetcher_reports_a_lost_anchor_before_the_events() -> None:
    kept = ids(5)
    fetcher = HistoryFetcher(FakeHistory(kept[2:]), TOPIC, SUB, kept[0])
    assert await steps(fetcher) == [GAP_ANCHOR_LOST, kept[2:]]
    assert not fetcher.complete


async def test_fetcher_without_anchor_fetches_everything_and_cannot_prove_completeness() -> None:
    kept = ids(4)
    fetcher = HistoryFetcher(FakeHistory(kept), TOPIC, SUB, None)
    assert await steps(fetcher) == [GAP_NO_ANCHOR, kept]
    assert "after_publication" not in fetcher.session.calls[0]  # type: ignore[attr-defined]
    empty = HistoryFetcher(FakeHistory([]), TOPIC, SUB, None)
    assert await steps(empty) == []
    assert empty.complete


async def test_fetcher_on_a_router_without_anchor_found_pages_by_size_and_reports() -> None:
    kept = ids(25)
    fetcher = HistoryFetcher(FakeHistory(kept, extended=False), TOPIC, SUB, kept[4], limit=10)
    got = await steps(fetcher)
    assert got == [GAP_ANCHOR_UNCONFIRMED, kept[5:15], kept[15:25]]
    assert not fetcher.complete and fetcher.pages == 3  # the last, empty page ends it


async def test_fetcher_reports_a_failed_call_and_a_malformed_answer() -> None:
    session = FakeHistory(ids(3))
    session.fail = ApplicationError("wamp.error.not_authorized")
    assert await steps(HistoryFetcher(session, TOPIC, SUB, 5)) == [
        f"{GAP_CALL_FAILED}: wamp.error.not_authorized"
    ]
    session.fail = None
    session.answer = CallResult([{"not": "a list"}])
    (reason,) = await steps(HistoryFetcher(session, TOPIC, SUB, 5))
    assert isinstance(reason, str) and reason.startswith(GAP_MALFORMED)


class Flaky(FakeHistory):
    """Answers ``wamp.error.unavailable`` to the first ``refusals`` calls."""

    def __init__(self, kept: list[int], refusals: int) -> None:
        super().__init__(kept)
        self.refusals = refusals

    async def call(self, procedure: str, *args: Any, **kwargs: Any) -> CallResult:
        if self.refusals:
            self.refusals -= 1
            self.calls.append(kwargs)
            raise ApplicationError("wamp.error.unavailable")
        return await super().call(procedure, *args, **kwargs)


async def test_fetcher_repeats_a_call_the_router_answered_unavailable() -> None:
    kept = ids(5)
    session = Flaky(kept, refusals=2)  # then the router has its history back
    fetcher = HistoryFetcher(session, TOPIC, SUB, kept[1], retry_for=5.0)
    assert await steps(fetcher) == [kept[2:]]
    assert fetcher.complete and len(session.calls) == 3


async def test_fetcher_reports_unavailable_after_retry_for() -> None:
    session = FakeHistory(ids(3))
    session.fail = ApplicationError("wamp.error.unavailable")
    got = await steps(HistoryFetcher(session, TOPIC, SUB, 5, retry_for=0.25))
    assert got == [f"{GAP_CALL_FAILED}: wamp.error.unavailable"]
    assert 2 <= len(session.calls) <= 4


async def test_fetcher_lets_the_end_of_the_session_through() -> None:
    session = FakeHistory(ids(3))
    session.fail = SessionClosed("wamp.close.normal", "gone")
    with pytest.raises(SessionClosed):
        await steps(HistoryFetcher(session, TOPIC, SUB, 5))


# --- Resumer ------------------------------------------------------------------------


def resumer(**kwargs: Any) -> tuple[Resumer, list[Event], list[Gap]]:
    got: list[Event] = []
    gaps: list[Gap] = []
    return Resumer(TOPIC, got.append, gaps.append, **kwargs), got, gaps


async def test_resumer_delivers_history_then_buffered_live_events_each_once() -> None:
    kept = ids(30)
    r, got, gaps = resumer(page_limit=7)
    for publication in kept[:10]:
        r.deliver(live(publication))
    assert r.last_publication == kept[9]
    r.begin()
    for publication in kept[25:]:  # live events arriving during the replay (also in history)
        r.deliver(live(publication))
    assert len(got) == 10 and r.recovering
    session = FakeHistory(kept[:28])  # the history was read before the last two arrived
    await r.recover(session, SUB)
    assert [e.publication for e in got] == kept
    assert [e.replayed for e in got] == [False] * 10 + [True] * 18 + [False] * 2
    assert r.duplicates == 3 and gaps == [] and r.complete and not r.recovering
    r.deliver(live(kept[-1]))  # a late duplicate after going live
    assert len(got) == 30 and r.duplicates == 4
    assert r.last_publication == kept[-1]


async def test_resumer_replays_events_that_came_before_the_last_one_handed() -> None:
    """A node hands its own publication before earlier ones from other nodes arrive."""
    kept = ids(10)
    r, got, gaps = resumer(rewind=4)
    for publication in [*kept[:5], kept[7]]:  # kept[5], kept[6] were still on their way
        r.deliver(live(publication))
    r.begin()  # the connection dropped; the replay starts 4 handed publications back
    await r.recover(FakeHistory(kept), SUB)
    assert [e.publication for e in got] == [*kept[:5], kept[7], kept[5], kept[6], *kept[8:]]
    assert gaps == [] and r.complete and r.duplicates == 0 and r.replayed == 4


class Stalled(FakeHistory):
    """Never answers: a recovery waiting on it is still running when it is replaced."""

    def __init__(self, kept: list[int]) -> None:
        super().__init__(kept)
        self.called = asyncio.Event()

    async def call(self, procedure: str, *args: Any, **kwargs: Any) -> CallResult:
        self.called.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_replaced_recovery_unwinding_late_leaves_the_new_one_buffering() -> None:
    kept = ids(6)
    r, got, gaps = resumer()
    r.deliver(live(kept[0]))
    r.begin()  # a re-join; its recovery waits on the router …
    stalled = Stalled(kept)
    old = asyncio.ensure_future(r.recover(stalled, SUB))
    await asyncio.wait_for(stalled.called.wait(), 5)
    old.cancel()  # … when the session dies and the next join starts over (kept.py's order)
    r.abandon()
    r.begin()
    with pytest.raises(asyncio.CancelledError):
        await old  # the old recovery unwinds only now
    r.deliver(live(kept[5]))  # live during the new recovery: buffered, not handed
    assert [e.publication for e in got] == [kept[0]] and r.recovering
    await r.recover(FakeHistory(kept[:5]), SUB)
    assert [e.publication for e in got] == kept and gaps == [] and r.complete


async def test_resumer_reports_a_router_without_event_history_and_goes_live() -> None:
    r, got, gaps = resumer()
    r.deliver(live(11))
    r.begin()
    r.deliver(live(12))
    await r.recover(FakeHistory([], features=False), SUB)
    assert [e.publication for e in got] == [11, 12]
    assert gaps == [Gap(TOPIC, SUB, 11, GAP_NOT_SUPPORTED, 0)]
    assert not r.complete and await r.recovered() is False


async def test_resumer_reports_a_buffer_overflow() -> None:
    kept = ids(10)
    r, got, gaps = resumer(max_buffer=2)
    r.deliver(live(kept[0]))
    r.begin()
    for publication in kept[5:]:
        r.deliver(live(publication))
    await r.recover(FakeHistory(kept[:3]), SUB)
    assert [e.publication for e in got] == kept[:3] + kept[5:7]
    assert [gap.reason for gap in gaps] == [GAP_BUFFER_OVERFLOW]
    assert gaps[0].replayed == 2 and not r.complete


async def test_resumer_gives_up_quietly_when_the_session_ends() -> None:
    kept = ids(5)
    r, got, gaps = resumer()
    r.deliver(live(kept[0]))
    r.begin()
    r.deliver(live(kept[4]))
    session = FakeHistory(kept)
    session.fail = SessionClosed("wamp.close.normal", "gone")
    with pytest.raises(SessionClosed):
        await r.recover(session, SUB)
    # nothing reported, nothing buffered delivered: the next recovery starts from kept[0]
    assert [e.publication for e in got] == [kept[0]] and gaps == []
    assert r.last_publication == kept[0] and not r.recovering
    r.begin()
    await r.recover(FakeHistory(kept), SUB)
    assert [e.publication for e in got] == kept and r.complete


async def test_resumer_drops_buffered_events_the_history_delivered_beyond_the_window() -> None:
    kept = ids(12)
    r, got, gaps = resumer(window=2, page_limit=3)
    r.deliver(live(kept[0]))
    r.begin()
    for publication in kept[3:]:  # 9 buffered, all also in the history: overlap > window
        r.deliver(live(publication))
    await r.recover(FakeHistory(kept), SUB)
    assert [e.publication for e in got] == kept
    assert r.duplicates == 9 and r.complete and gaps == []


async def test_resumer_forgets_ids_beyond_its_window() -> None:
    r, got, _ = resumer(window=3)
    for publication in (1, 2, 3, 4):
        r.deliver(live(publication))
    r.deliver(live(4))
    r.deliver(live(1))  # out of the window: handed over again
    assert [e.publication for e in got] == [1, 2, 3, 4, 1]


async def test_resumer_runs_async_handlers_of_replayed_events_in_order() -> None:
    kept = ids(20)
    seen: list[int] = []

    async def handler(event: Event) -> None:
        seen.append(event.publication)

    r = Resumer(TOPIC, handler)
    r.begin()
    r.last_publication = kept[0]
    session = FakeHistory(kept)
    await r.recover(session, SUB)
    await asyncio.gather(*session.tasks)
    assert seen == kept[1:]


async def test_resumer_anchor_takes_the_newest_kept_publication() -> None:
    kept = ids(4)
    r, _, _ = resumer()

    class Newest(FakeHistory):
        async def call(self, procedure: str, *args: Any, **kwargs: Any) -> CallResult:
            assert kwargs == {"reverse": True, "limit": 1}
            return CallResult([[item(p) for p in self.kept[-1:]]], {"more": len(self.kept) > 1})

    await r.anchor(Newest(kept), SUB)
    assert r.last_publication == kept[-1]
    r1, _, _ = resumer()
    await r1.anchor(Newest([]), SUB)  # nothing kept: no anchor, no error
    assert r1.last_publication is None
    r2, _, _ = resumer()
    r2.deliver(live(9))
    await r2.anchor(Newest(kept), SUB)
    assert r2.last_publication == 9  # an event already delivered wins


async def test_resumer_awaits_an_async_on_gap_before_going_live() -> None:
    order: list[str] = []

    async def on_gap(gap: Gap) -> None:
        await asyncio.sleep(0)
        order.append(f"gap {gap.reason}")

    r = Resumer(TOPIC, lambda event: order.append(f"event {event.publication}"), on_gap)
    r.deliver(live(1))
    r.begin()
    r.deliver(live(5))
    await r.recover(FakeHistory([], features=False), SUB)
    assert order == ["event 1", f"gap {GAP_NOT_SUPPORTED}", "event 5"]
