"""Publisher and subscriber roles: ``Subscription`` handles and bounded ``EventStream``s.

Several local handlers may share one router subscription (the router answers the
same subscription ID for the same topic and match policy); UNSUBSCRIBE is sent when
the last local handler goes. Handlers are attached *while* SUBSCRIBED is processed,
so an event right behind it (a retained event) is never missed.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import Any

import protocol_spec as wamp

from .errors import SessionClosed
from .port import SessionPort
from .values import Event, MatchPolicy, PublishOptions, handler_options

__all__ = [
    "EventHandler",
    "EventStream",
    "Subscriber",
    "Subscription",
    "event_from_history",
    "make_event",
]

log = logging.getLogger(__name__)

EventHandler = Callable[[Event], object]
"""A subscription handler: ``def h(event)`` or ``async def h(event)``."""


class Subscription:
    """One local handler attached to a router subscription; ``await sub.unsubscribe()``."""

    def __init__(
        self, owner: Subscriber, id: int, topic: str, match: str, handler: EventHandler
    ) -> None:
        self.id = id
        self.topic = topic
        self.match = match
        self.handler = handler
        self.active = True
        self._owner = owner

    async def unsubscribe(self) -> None:
        """Detach the handler; UNSUBSCRIBE when it was the last one (idempotent)."""
        if self.active:
            await self._owner.unsubscribe(self)

    def __repr__(self) -> str:
        return f"<Subscription {self.id} {self.match} {self.topic!r} active={self.active}>"


class Subscriber:
    """The publisher and subscriber roles of one session."""

    def __init__(self, session: SessionPort) -> None:
        self._session = session
        self._by_id: dict[int, list[Subscription]] = {}
        self._streams: set[EventStream] = set()

    def events(
        self, topic: str, match: MatchPolicy, get_retained: bool, maxsize: int
    ) -> EventStream:
        """An ``EventStream`` on ``topic``, ended by ``close`` with the session."""
        stream = EventStream(maxsize=maxsize)

        async def attach(handler: EventHandler) -> Subscription:
            return await self.subscribe(topic, handler, match, get_retained)

        stream.bind(attach, self._streams)
        return stream

    async def publish(
        self, topic: str, args: list[Any], kwargs: dict[str, Any], options: PublishOptions
    ) -> int | None:
        """Send PUBLISH; wait for PUBLISHED when acknowledged."""
        session = self._session
        msg = wamp.Publish(session.next_request(), options.to_dict(), topic, args, kwargs)
        if not options.acknowledge:
            await session.send(msg)
            return None
        reply = await session.request(msg)
        return int(reply.publication)

    async def subscribe(
        self, topic: str, handler: EventHandler, match: MatchPolicy, get_retained: bool
    ) -> Subscription:
        """Send SUBSCRIBE and attach ``handler`` when SUBSCRIBED arrives."""
        session = self._session
        options = handler_options(handler, match)
        if get_retained:
            options["get_retained"] = True

        def attach(reply: wamp.Subscribed) -> Subscription:
            sub = Subscription(self, reply.subscription, topic, match, handler)
            self._by_id.setdefault(reply.subscription, []).append(sub)
            return sub

        result: Subscription = await session.request(
            wamp.Subscribe(session.next_request(), options, topic), attach
        )
        return result

    async def unsubscribe(self, sub: Subscription) -> None:
        """Detach ``sub``; send UNSUBSCRIBE if no other local handler shares its ID."""
        sub.active = False
        subs = self._by_id.get(sub.id)
        if subs is None or sub not in subs:
            return
        subs.remove(sub)
        if subs:
            return
        del self._by_id[sub.id]
        session = self._session
        if session.is_open:
            await session.request(wamp.Unsubscribe(session.next_request(), sub.id))

    def on_event(self, msg: wamp.Event) -> None:
        """Deliver an EVENT to every local handler of its subscription."""
        subs = self._by_id.get(msg.subscription)
        if not subs:
            log.debug("event for unknown subscription %d", msg.subscription)
            return
        event = make_event(
            subs[0].topic, msg.subscription, msg.publication, msg.details, msg.args, msg.kwargs
        )
        for sub in list(subs):
            try:
                result = sub.handler(event)
            except Exception:
                log.exception("event handler %r for %s failed", sub.handler, event.topic)
                continue
            if inspect.isawaitable(result):
                self._session.spawn(_guard(result, sub, event), f"wamp-event-{event.topic}")

    def on_revoked(self, details: dict[str, Any]) -> None:
        """The router removed a subscription (UNSUBSCRIBED with request 0)."""
        sub_id = details.get("subscription")
        for sub in self._by_id.pop(sub_id, []) if isinstance(sub_id, int) else []:
            sub.active = False
        log.info("router revoked subscription %s (%s)", sub_id, details.get("reason"))

    def close(self, why: SessionClosed, clean: bool) -> None:
        """The session ended: deactivate subscriptions and end the session's streams.

        Streams stop quietly after a ``leave()`` (``clean``) and raise ``why`` otherwise.
        """
        for subs in self._by_id.values():
            for sub in subs:
                sub.active = False
        self._by_id.clear()
        for stream in list(self._streams):
            stream._end(None if clean else why)
        self._streams.clear()


def make_event(
    subscribed: str,
    subscription: int,
    publication: int,
    details: dict[str, Any],
    args: list[Any] | None,
    kwargs: dict[str, Any] | None,
    *,
    replayed: bool = False,
) -> Event:
    """Build an ``Event``; the topic is ``details["topic"]`` if set, else ``subscribed``."""
    topic = details.get("topic")
    return Event(
        topic=topic if isinstance(topic, str) else subscribed,
        args=args or [],
        kwargs=kwargs or {},
        publication=publication,
        subscription=subscription,
        details=details,
        replayed=replayed,
    )


def event_from_history(subscribed: str, subscription: int, item: Any) -> Event:
    """An ``Event`` (``replayed=True``) from one ``wamp.subscription.get_events`` item.

    ``item`` is ``{timestamp, subscription, publication, details, args?, kwargs?}``
    (spec "Event History"); the timestamp stays in ``details["timestamp"]`` unless
    the details already hold one. Raises ``ValueError`` for a malformed item.
    """
    if not isinstance(item, dict):
        raise ValueError(f"history item is not a dict: {item!r}")
    publication = item.get("publication")
    if type(publication) is not int:
        raise ValueError(f"history item without an integer publication: {item!r}")
    details = item.get("details")
    details = dict(details) if isinstance(details, dict) else {}
    if isinstance(item.get("timestamp"), str):
        details.setdefault("timestamp", item["timestamp"])
    args, kwargs = item.get("args"), item.get("kwargs")
    return make_event(
        subscribed,
        subscription,
        publication,
        details,
        args if isinstance(args, list) else None,
        kwargs if isinstance(kwargs, dict) else None,
        replayed=True,
    )


async def _guard(result: Awaitable[object], sub: Subscription, event: Event) -> None:
    try:
        await result
    except Exception:
        log.exception("event handler %r for %s failed", sub.handler, event.topic)


class EventStream:
    """An async iterator over events with a bounded buffer (drop-oldest on overflow).

    Created by ``Session.events`` / ``Client.events``. Subscribes on ``async with``
    entry or on the first ``__anext__``; ``aclose()`` (or leaving the block)
    unsubscribes. ``dropped`` counts events discarded because the consumer was
    slower than the publishers; a warning is logged on the first drop and every
    1000th after it.
    """

    def __init__(self, maxsize: int = 1000) -> None:
        if maxsize < 1:
            raise ValueError("maxsize must be at least 1")
        self.maxsize = maxsize
        self.dropped = 0
        self._buffer: deque[Event] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._attach: Callable[[EventHandler], Awaitable[Any]] | None = None
        self._registry: set[EventStream] | None = None
        self._handle: Any = None
        self._started = False
        self._ended = False
        self._error: BaseException | None = None

    def bind(
        self,
        attach: Callable[[EventHandler], Awaitable[Any]],
        registry: set[EventStream] | None = None,
    ) -> None:
        """Set how to subscribe: ``attach(handler)`` returns a handle with ``unsubscribe()``.

        While subscribed the stream is a member of ``registry``, the set its owner
        ends when it closes (see ``_end``).
        """
        self._attach = attach
        self._registry = registry

    async def start(self) -> None:
        """Subscribe now (idempotent)."""
        if self._started:
            return
        if self._attach is None:
            raise RuntimeError("EventStream is not bound to a session or client")
        self._started = True
        self._handle = await self._attach(self.push)
        if self._registry is not None:
            self._registry.add(self)

    @property
    def subscription(self) -> Any:
        """What subscribing returned (a ``Subscription`` or ``ClientSubscription``), or None."""
        return self._handle

    def push(self, event: Event) -> None:
        """Buffer one event, dropping the oldest when full."""
        if self._ended:
            return
        if len(self._buffer) >= self.maxsize:
            self._buffer.popleft()
            self.dropped += 1
            if self.dropped % 1000 == 1:
                log.warning(
                    "event stream overflow (maxsize %d): %d events dropped",
                    self.maxsize,
                    self.dropped,
                )
        self._buffer.append(event)
        self._wake()

    def _wake(self) -> None:
        if self._waiter is not None and not self._waiter.done():
            self._waiter.set_result(None)

    def _end(self, error: BaseException | None) -> None:
        self._ended = True
        self._error = error
        self._wake()

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> Event:
        if not self._started:
            await self.start()
        while not self._buffer:
            if self._ended:
                if self._error is not None:
                    raise self._error
                raise StopAsyncIteration
            self._waiter = asyncio.get_running_loop().create_future()
            try:
                await self._waiter
            finally:
                self._waiter = None
        return self._buffer.popleft()

    async def aclose(self) -> None:
        """Unsubscribe and end the iteration (idempotent)."""
        self._end(None)
        if self._registry is not None:
            self._registry.discard(self)
        handle, self._handle = self._handle, None
        if handle is not None:
            try:
                await handle.unsubscribe()
            except SessionClosed:
                pass

    async def __aenter__(self) -> EventStream:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()
