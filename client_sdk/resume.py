"""Resuming a subscription after a reconnection through the router's event history.

A ``Client`` subscription made with ``resume=True`` hands its events to the
application through a ``Resumer``: it remembers the last publication delivered and
a bounded window of recent publication IDs (IDs are random, so they are compared
as a set, never by order) and drops an event it has already delivered. After the
client re-joins (maybe on another node behind a load balancer) and re-subscribes,
the ``Resumer`` buffers live events, pages through ``wamp.subscription.get_events``
(``HistoryFetcher``) for what followed the last delivered publication, delivers
that in order, then the buffered live events (duplicates dropped), then goes live.

Only the spec's procedure and arguments are used (``after_publication``,
``limit``), so this works with any router announcing ``event_history``. Proving
completeness needs the router to say whether the anchor publication was still in
its history: this project's broker answers ``anchor_found`` and ``more`` in the
result's keyword arguments (protocol_spec/wamp.md, "Event history"). When recovery
cannot prove it missed nothing, ``on_gap`` receives a ``Gap`` naming the reason
and ``complete`` is False until the next recovery.

The procedure URI is ``protocol_spec.meta.SUBSCRIPTION_GET_EVENTS`` (re-exported here as
``GET_EVENTS``).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine
from typing import Any, Final, Protocol

from protocol_spec import errors, meta

from .errors import ApplicationError, SessionClosed
from .pubsub import EventHandler, event_from_history
from .values import CallResult, Event, Gap

__all__ = [
    "EVENT_HISTORY",
    "GAP_ANCHOR_LOST",
    "GAP_ANCHOR_UNCONFIRMED",
    "GAP_BUFFER_OVERFLOW",
    "GAP_CALL_FAILED",
    "GAP_HISTORY_EMPTY",
    "GAP_MALFORMED",
    "GAP_NOT_SUPPORTED",
    "GAP_NO_ANCHOR",
    "GAP_PAGE_LIMIT",
    "GET_EVENTS",
    "GapHandler",
    "HistoryFetcher",
    "HistorySession",
    "Resumer",
]

log = logging.getLogger(__name__)

GET_EVENTS: Final = meta.SUBSCRIPTION_GET_EVENTS
"""The spec's event history procedure (Advanced Profile, "Event History")."""
EVENT_HISTORY: Final = "event_history"
"""The broker feature a router announces in WELCOME when it keeps event history."""

GAP_NOT_SUPPORTED: Final = "event_history not supported"
GAP_ANCHOR_LOST: Final = "the last delivered publication is no longer in the history"
GAP_HISTORY_EMPTY: Final = (
    "the router has no history for this subscription (none kept, or all trimmed)"
)
GAP_ANCHOR_UNCONFIRMED: Final = (
    "the router did not say whether the last delivered publication is in the history"
)
GAP_NO_ANCHOR: Final = (
    "no publication was delivered before, so earlier events cannot be proven complete"
)
GAP_PAGE_LIMIT: Final = "page limit reached before the end of the history"
GAP_CALL_FAILED: Final = "get_events failed"
GAP_MALFORMED: Final = "malformed get_events answer"
GAP_BUFFER_OVERFLOW: Final = "live event buffer overflowed during the replay"

GapHandler = Callable[[Gap], object]
"""``on_gap(gap)``: sync or async; its exceptions are logged."""


class HistorySession(Protocol):
    """What a ``Resumer`` needs from a session (``Session`` has it; tests fake it)."""

    def router_features(self, role: str) -> frozenset[str]:
        """The features the router announced for ``role``."""
        ...

    async def call(self, procedure: str, *args: Any, **kwargs: Any) -> CallResult:
        """Call a procedure; ``ApplicationError`` for an ERROR, ``SessionClosed`` if gone."""
        ...

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task the session keeps until it finishes."""
        ...


class HistoryFetcher:
    """Pages through ``get_events`` for what followed publication ``after``.

    Iterating yields, in stream order, lists of replayed ``Event``s and ``str``
    gap reasons (where the gap sits: an anchor that is gone comes before the
    events, a page limit after them). At most ``max_pages`` calls of ``limit``
    events each; the next page starts after the last event of the previous one.
    ``complete`` is True after the iteration when no gap was yielded.
    ``SessionClosed`` (and ``TransportLost``) propagate: the session is gone.
    A call answered ``wamp.error.unavailable`` (the router cannot reach its history
    store for a moment, e.g. a cluster node reconnecting to Redis) is repeated, for at
    most ``retry_for`` seconds, before it counts as a failed call.
    """

    def __init__(
        self,
        session: HistorySession,
        topic: str,
        subscription: int,
        after: int | None,
        *,
        limit: int = 1000,
        max_pages: int = 100,
        retry_for: float = 10.0,
    ) -> None:
        if limit < 1 or max_pages < 1:
            raise ValueError("limit and max_pages must be at least 1")
        self.retry_for = retry_for
        self.session = session
        self.topic = topic
        self.subscription = subscription
        self.after = after
        self.limit = limit
        self.max_pages = max_pages
        self.pages = 0
        self.complete = False

    async def __aiter__(self) -> AsyncIterator[list[Event] | str]:
        anchor = self.after
        gapped = False
        for _ in range(self.max_pages):
            kwargs: dict[str, Any] = {"limit": self.limit}
            if anchor is not None:
                kwargs["after_publication"] = anchor
            try:
                result = await self._call(kwargs)
                self.pages += 1
                events, more, anchor_found = self._parse(result)
            except ApplicationError as exc:
                yield f"{GAP_CALL_FAILED}: {exc.uri}"
                return
            except ValueError as exc:
                yield f"{GAP_MALFORMED}: {exc}"
                return
            if not gapped:
                reason = self._anchor_gap(anchor, anchor_found, bool(events))
                if reason is not None:
                    gapped = True
                    yield reason
            if events:
                anchor = events[-1].publication
                yield events
            if not more:
                self.complete = not gapped
                return
        yield GAP_PAGE_LIMIT

    async def _call(self, kwargs: dict[str, Any]) -> CallResult:
        """One ``get_events`` call, repeated while the router answers unavailable."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.retry_for
        delay = 0.1
        while True:
            try:
                return await self.session.call(GET_EVENTS, self.subscription, **kwargs)
            except ApplicationError as exc:
                if exc.uri != errors.UNAVAILABLE or loop.time() + delay > deadline:
                    raise
            await asyncio.sleep(delay)  # the router's Redis link is coming back
            delay = min(2 * delay, 1.0)

    def _anchor_gap(self, anchor: int | None, found: bool | None, events: bool) -> str | None:
        """The gap reason a page's anchor answer implies, if any."""
        if anchor is None:
            return GAP_NO_ANCHOR if events else None
        if found is None:
            return GAP_ANCHOR_UNCONFIRMED
        if found:
            return None
        return GAP_ANCHOR_LOST if events else GAP_HISTORY_EMPTY

    def _parse(self, result: CallResult) -> tuple[list[Event], bool, bool | None]:
        """(events, more, anchor_found) of one answer; ``ValueError`` if malformed."""
        if not result.args or not isinstance(result.args[0], list):
            raise ValueError("the result is not [[event, ...]]")
        items = result.args[0]
        events = [event_from_history(self.topic, self.subscription, item) for item in items]
        more = result.kwargs.get("more")
        if not isinstance(more, bool):  # a router without our keyword result
            more = len(items) >= self.limit
        found = result.kwargs.get("anchor_found")
        return events, more, found if isinstance(found, bool) else None


class Resumer:
    """Delivers a resuming subscription's events: once each, history first after a re-join.

    ``deliver`` is the handler registered with the session. ``begin`` (before
    re-subscribing) starts buffering live events, ``recover`` fetches the history
    and then delivers the buffer and goes live. ``window`` publication IDs are
    remembered for de-duplication; at most ``max_buffer`` live events wait during
    a replay (more is a gap). ``on_gap`` runs where a gap sits in the stream.

    A replay starts ``rewind`` publications before the last one handed (``_rewound``)
    and drops what was handed already: a router may hand its own node's publications
    before earlier ones from other nodes (a cluster node delivers what its sessions
    publish at once, Redis orders it a moment later), so events still on their way
    when the connection dropped can sit before the last one handed in the history.
    """

    def __init__(
        self,
        topic: str,
        handler: EventHandler,
        on_gap: GapHandler | None = None,
        *,
        window: int = 4096,
        max_buffer: int = 10_000,
        page_limit: int = 5000,
        max_pages: int = 40,
        rewind: int = 256,
    ) -> None:
        self.topic = topic
        self.handler = handler
        self.on_gap = on_gap
        self.window = window
        self.rewind = min(rewind, window - 1)
        self._start: int | None = None  # the anchor taken at the first subscribe
        self.max_buffer = max_buffer
        self.page_limit = page_limit
        self.max_pages = max_pages
        self.last_publication: int | None = None
        self.complete = True
        self.recoveries = 0
        self.replayed = 0
        self.duplicates = 0
        self.gaps: list[Gap] = []
        self._recent: deque[int] = deque()
        self._seen: set[int] = set()
        self._buffer: deque[Event] | None = None
        self._buffered: set[int] = set()  # IDs in the buffer
        self._replayed_buffered: set[int] = set()  # … that the history delivered already
        self._overflow = False
        self._idle = asyncio.Event()
        self._generation = 0  # ``begin`` calls so far
        self._idle.set()

    @property
    def recovering(self) -> bool:
        """True while a recovery runs (live events are being buffered)."""
        return not self._idle.is_set()

    async def recovered(self) -> bool:
        """Wait until no recovery runs; return ``complete``."""
        await self._idle.wait()
        return self.complete

    # --- delivery -------------------------------------------------------------------

    def deliver(self, event: Event) -> object:
        """The session's handler: buffer during a recovery, else hand over once."""
        buffer = self._buffer
        if buffer is None:
            return self._hand(event)
        if len(buffer) >= self.max_buffer:
            self._overflow = True
        else:
            buffer.append(event)
            self._buffered.add(event.publication)
        return None

    def _hand(self, event: Event) -> object:
        """Call the handler unless ``event`` was delivered already; return its result."""
        publication = event.publication
        if publication in self._seen:
            self.duplicates += 1
            return None
        self._seen.add(publication)
        self._recent.append(publication)
        if len(self._recent) > self.window:
            self._seen.discard(self._recent.popleft())
        self.last_publication = publication
        return self.handler(event)

    def _hand_from_task(self, event: Event, session: HistorySession) -> None:
        """``_hand`` outside the session's dispatch: run an async handler as a task."""
        try:
            result = self._hand(event)
        except Exception:
            log.exception("event handler %r for %s failed", self.handler, event.topic)
            return
        if inspect.isawaitable(result):
            session.spawn(_guarded(result, self.handler, event.topic), f"wamp-event-{event.topic}")

    # --- recovery -------------------------------------------------------------------

    def begin(self) -> None:
        """Buffer live events from now on (call before re-subscribing)."""
        self._generation += 1  # an older recovery still unwinding must not touch this one
        self._buffer = deque()
        self._buffered.clear()
        self._replayed_buffered.clear()
        self._overflow = False
        self._idle.clear()

    def abandon(self) -> None:
        """Stop buffering without delivering: the session ended before the recovery did.

        The buffered events were not handed over, so the next recovery fetches them.
        """
        self._buffer = None
        self._buffered.clear()
        self._replayed_buffered.clear()
        self._idle.set()

    async def anchor(self, session: HistorySession, subscription: int) -> None:
        """Take the newest kept publication as the anchor if nothing was delivered yet.

        Run after a first subscribe: a subscription that receives nothing before its
        connection drops can then still resume after that publication. The answer
        comes after every EVENT the router sent before it, so an event delivered
        meanwhile wins. Failures only log: there is nothing to recover yet.
        """
        if EVENT_HISTORY not in session.router_features("broker"):
            return
        try:
            result = await session.call(GET_EVENTS, subscription, reverse=True, limit=1)
            items = result.args[0] if result.args and isinstance(result.args[0], list) else []
            newest = event_from_history(self.topic, subscription, items[0]) if items else None
        except (ApplicationError, ValueError) as exc:
            log.info("no history anchor for %s: %s", self.topic, exc)
            return
        if newest is not None and self.last_publication is None:
            self.last_publication = self._start = newest.publication

    def _rewound(self) -> int | None:
        """The replay's anchor: ``rewind`` publications before the last one handed."""
        recent = self._recent
        if len(recent) > self.rewind:
            return recent[-1 - self.rewind]
        if self._start is not None:
            return self._start
        return recent[0] if recent else self.last_publication

    async def recover(self, session: HistorySession, subscription: int) -> None:
        """Replay what followed the rewound anchor (not handed yet), then the buffer; go live.

        Needs ``begin`` first. If the session ends meanwhile nothing is reported
        (the next join recovers again).
        """
        self.recoveries += 1
        self.complete = False
        generation = self._generation
        last, after = self.last_publication, self._rewound()
        replayed = 0
        gapped = False

        async def gap(reason: str) -> None:
            nonlocal gapped
            gapped = True
            await self._report(Gap(self.topic, subscription, last, reason, replayed))

        try:
            if EVENT_HISTORY not in session.router_features("broker"):
                await gap(GAP_NOT_SUPPORTED)
            else:
                fetcher = HistoryFetcher(
                    session,
                    self.topic,
                    subscription,
                    after,
                    limit=self.page_limit,
                    max_pages=self.max_pages,
                )
                async for step in fetcher:
                    if isinstance(step, str):
                        await gap(step)
                        continue
                    fresh = [e for e in step if e.publication not in self._seen]  # rewound
                    for event in fresh:
                        if event.publication in self._buffered:
                            self._replayed_buffered.add(event.publication)
                        self._hand_from_task(event, session)
                    replayed += len(fresh)
                    self.replayed += len(fresh)
        except (SessionClosed, asyncio.CancelledError):
            if generation == self._generation:  # not replaced by a newer ``begin``
                self.abandon()
            raise
        except Exception as exc:  # a bug: report it as a gap and go live
            log.exception("recovery of %s failed", self.topic)
            await gap(f"recovery failed: {exc!r}")
        if self._overflow:
            await gap(GAP_BUFFER_OVERFLOW)
        self._go_live(session)
        self.complete = not gapped
        self._idle.set()
        log.info(
            "resumed %s after publication %s: %d replayed, %s",
            self.topic,
            after,
            replayed,
            "with a gap" if gapped else "complete",
        )

    def _go_live(self, session: HistorySession) -> None:
        """Deliver the buffered live events (duplicates dropped) and stop buffering.

        An event the history delivered is dropped even when it left the ``window``
        meanwhile (a long replay while events kept arriving).
        """
        buffer, self._buffer = self._buffer, None
        replayed, self._replayed_buffered = self._replayed_buffered, set()
        self._buffered = set()
        for event in buffer or ():
            if event.publication in replayed:
                self.duplicates += 1
                continue
            self._hand_from_task(event, session)

    async def _report(self, gap: Gap) -> None:
        self.gaps.append(gap)
        log.warning(
            "subscription %d to %s: possible gap after publication %s: %s",
            gap.subscription,
            gap.topic,
            gap.after_publication,
            gap.reason,
        )
        if self.on_gap is None:
            return
        try:
            result = self.on_gap(gap)
            if inspect.isawaitable(result):
                await result
        except Exception:
            log.exception("on_gap handler %r failed", self.on_gap)


async def _guarded(result: Awaitable[object], handler: object, topic: str) -> None:
    try:
        await result
    except Exception:
        log.exception("event handler %r for %s failed", handler, topic)
