"""Publish/subscribe through a real broker process."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest

from client_sdk import ApplicationError, Event, PublishOptions, Session, SessionClosed
from protocol_spec import errors

OpenSession = Callable[..., Awaitable[Session]]
ACK = PublishOptions(acknowledge=True)


def collector() -> tuple[list[Event], Callable[[Event], None], Callable[[int], Awaitable[None]]]:
    """A handler that records events and a coroutine waiting until N arrived."""
    events: list[Event] = []
    changed = asyncio.Event()

    def handler(event: Event) -> None:
        events.append(event)
        changed.set()

    async def wait_for(count: int) -> None:
        async with asyncio.timeout(5):
            while len(events) < count:
                changed.clear()
                await changed.wait()

    return events, handler, wait_for


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
async def test_event_carries_args_kwargs_and_bytes(
    open_session: OpenSession, serializer: str
) -> None:
    subscriber = await open_session(serializer)
    publisher = await open_session("json" if serializer != "json" else "cbor")
    events, handler, wait_for = collector()
    await subscriber.subscribe("com.sdk.basic", handler)
    publication = await publisher.publish(
        "com.sdk.basic", 1, "two", b"\x00\x01", options=ACK, key=[3]
    )
    await wait_for(1)
    event = events[0]
    assert (event.args, event.kwargs) == ([1, "two", b"\x00\x01"], {"key": [3]})
    assert event.topic == "com.sdk.basic"
    assert event.publication == publication


async def test_async_handler_and_unsubscribe(open_session: OpenSession) -> None:
    subscriber = await open_session()
    publisher = await open_session()
    got: asyncio.Queue[Event] = asyncio.Queue()

    async def handler(event: Event) -> None:
        await got.put(event)

    sub = await subscriber.subscribe("com.sdk.unsub", handler)
    await publisher.publish("com.sdk.unsub", 1, options=ACK)
    assert (await asyncio.wait_for(got.get(), 5)).args == [1]
    await sub.unsubscribe()
    assert not sub.active
    await sub.unsubscribe()  # idempotent
    # A second subscriber proves the later event was published and delivered elsewhere.
    _events, other, wait_for = collector()
    await subscriber.subscribe("com.sdk.unsub.other", other)
    await publisher.publish("com.sdk.unsub", 2, options=ACK)
    await publisher.publish("com.sdk.unsub.other", 3, options=ACK)
    await wait_for(1)
    assert got.empty()


async def test_two_local_handlers_share_one_router_subscription(open_session: OpenSession) -> None:
    subscriber = await open_session()
    publisher = await open_session()
    first, h1, _wait1 = collector()
    second, h2, wait2 = collector()
    s1 = await subscriber.subscribe("com.sdk.shared", h1)
    s2 = await subscriber.subscribe("com.sdk.shared", h2)
    assert s1.id == s2.id
    await s1.unsubscribe()
    await publisher.publish("com.sdk.shared", "x", options=ACK)
    await wait2(1)
    assert first == [] and second[0].args == ["x"]


async def test_publisher_is_excluded_by_default_and_can_include_itself(
    open_session: OpenSession,
) -> None:
    session = await open_session()
    events, handler, wait_for = collector()
    await session.subscribe("com.sdk.self", handler)
    await session.publish("com.sdk.self", "excluded", options=ACK)
    await session.publish(
        "com.sdk.self", "included", options=PublishOptions(acknowledge=True, exclude_me=False)
    )
    await wait_for(1)
    assert [e.args for e in events] == [["included"]]


async def test_eligible_and_exclude_select_receivers(open_session: OpenSession) -> None:
    a, b, publisher = await open_session(), await open_session(), await open_session()
    got_a, ha, wait_a = collector()
    got_b, hb, wait_b = collector()
    await a.subscribe("com.sdk.select", ha)
    await b.subscribe("com.sdk.select", hb)
    await publisher.publish(
        "com.sdk.select", "only-a", options=PublishOptions(acknowledge=True, eligible=[a.id])
    )
    await publisher.publish(
        "com.sdk.select", "not-a", options=PublishOptions(acknowledge=True, exclude=[a.id])
    )
    await wait_a(1)
    await wait_b(1)
    assert [e.args for e in got_a] == [["only-a"]]
    assert [e.args for e in got_b] == [["not-a"]]


async def test_disclose_me_reveals_the_publisher(open_session: OpenSession) -> None:
    subscriber, publisher = await open_session(), await open_session()
    events, handler, wait_for = collector()
    await subscriber.subscribe("com.sdk.disclose", handler)
    await publisher.publish(
        "com.sdk.disclose", options=PublishOptions(acknowledge=True, disclose_me=True)
    )
    await wait_for(1)
    assert events[0].publisher == publisher.id
    assert events[0].publisher_authid == publisher.authid


async def test_prefix_and_wildcard_subscriptions_report_the_concrete_topic(
    open_session: OpenSession,
) -> None:
    subscriber, publisher = await open_session(), await open_session()
    prefix, hp, wait_p = collector()
    wildcard, hw, wait_w = collector()
    await subscriber.subscribe("com.sdk.match", hp, match="prefix")
    await subscriber.subscribe("com.sdk..update", hw, match="wildcard")
    await publisher.publish("com.sdk.match.deep.topic", options=ACK)
    await publisher.publish("com.sdk.item.update", options=ACK)
    await wait_p(1)
    await wait_w(1)
    assert prefix[0].topic == "com.sdk.match.deep.topic"
    assert wildcard[0].topic == "com.sdk.item.update"


async def test_retained_event_is_delivered_on_subscribe(open_session: OpenSession) -> None:
    publisher, subscriber = await open_session(), await open_session()
    await publisher.publish(
        "com.sdk.retained", "kept", options=PublishOptions(acknowledge=True, retain=True)
    )
    events, handler, wait_for = collector()
    await subscriber.subscribe("com.sdk.retained", handler, get_retained=True)
    await wait_for(1)
    assert events[0].args == ["kept"] and events[0].retained


async def test_acknowledged_publish_to_an_invalid_topic_raises(open_session: OpenSession) -> None:
    session = await open_session()
    with pytest.raises(ApplicationError) as info:
        await session.publish("com..bad topic", options=ACK)
    assert info.value.uri == errors.INVALID_URI


async def test_event_stream_iterates_in_order(open_session: OpenSession) -> None:
    subscriber, publisher = await open_session(), await open_session()
    async with subscriber.events("com.sdk.stream") as stream:
        for i in range(5):
            await publisher.publish("com.sdk.stream", i)
        await publisher.publish("com.sdk.stream", 5, options=ACK)
        received: list[Any] = []
        async with asyncio.timeout(5):
            async for event in stream:
                received.append(event.args[0])
                if len(received) == 6:
                    break
    assert received == [0, 1, 2, 3, 4, 5]
    assert stream.dropped == 0


async def test_event_stream_overflow_drops_the_oldest_and_counts(open_session: OpenSession) -> None:
    subscriber, publisher = await open_session(), await open_session()
    stream = subscriber.events("com.sdk.overflow", maxsize=3)
    await stream.start()
    for i in range(10):
        await publisher.publish("com.sdk.overflow", i)
    # A marker on another subscription proves the ten events were delivered first.
    _marker, handler, wait_for = collector()
    await subscriber.subscribe("com.sdk.overflow.done", handler)
    await publisher.publish("com.sdk.overflow.done", options=ACK)
    await wait_for(1)
    async with asyncio.timeout(5):
        kept = [(await anext(stream)).args[0] for _ in range(3)]
    assert kept == [7, 8, 9]
    assert stream.dropped == 7
    await stream.aclose()
    with pytest.raises(StopAsyncIteration):
        await anext(stream)


async def test_event_stream_ends_when_the_session_leaves(open_session: OpenSession) -> None:
    subscriber = await open_session()
    stream = subscriber.events("com.sdk.end")
    await stream.start()
    next_event = asyncio.ensure_future(anext(stream))
    await subscriber.leave()
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(next_event, 5)
    with pytest.raises(SessionClosed):
        await subscriber.subscribe("com.sdk.end", lambda e: None)


async def test_decorator_subscription_is_confirmed_by_flush(open_session: OpenSession) -> None:
    subscriber, publisher = await open_session(), await open_session()
    got: asyncio.Queue[Event] = asyncio.Queue()

    @subscriber.subscribe("com.sdk.decorated")
    def on_event(event: Event) -> None:
        got.put_nowait(event)

    await subscriber.flush()
    await publisher.publish("com.sdk.decorated", "hi", options=ACK)
    assert (await asyncio.wait_for(got.get(), 5)).args == ["hi"]


async def test_failing_handler_is_logged_and_does_not_stop_delivery(
    open_session: OpenSession, caplog: pytest.LogCaptureFixture
) -> None:
    subscriber, publisher = await open_session(), await open_session()
    _events, handler, wait_for = collector()

    def broken(event: Event) -> None:
        raise RuntimeError("handler bug")

    await subscriber.subscribe("com.sdk.broken", broken)
    await subscriber.subscribe("com.sdk.broken", handler)
    await publisher.publish("com.sdk.broken", 1, options=ACK)
    await publisher.publish("com.sdk.broken", 2, options=ACK)
    await wait_for(2)
    assert "handler bug" in caplog.text
