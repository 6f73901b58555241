"""Subscription and registration meta API, and testaments, with Autobahn|Python."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import RegisterOptions, SubscribeOptions

from ._autobahn import Client, ClientPool

TIMEOUT = 5

MetaEvent = tuple[str, list[Any]]


async def watch(client: Client, prefix: str, names: list[str]) -> asyncio.Queue[MetaEvent]:
    """Subscribe ``client`` to ``prefix + name`` for each name; events go to one queue."""
    queue: asyncio.Queue[MetaEvent] = asyncio.Queue()
    for name in names:
        await client.subscribe(
            lambda *args, _name=name: queue.put_nowait((_name, list(args))), prefix + name
        )
    return queue


async def next_event(
    queue: asyncio.Queue[MetaEvent], accept: Callable[[MetaEvent], bool] = lambda e: True
) -> MetaEvent:
    """The next event ``accept`` likes; others (say, from sessions of earlier tests) are skipped."""
    while True:
        event = await asyncio.wait_for(queue.get(), TIMEOUT)
        if accept(event):
            return event


# --- subscription_meta_api -----------------------------------------------------------------
async def test_subscription_meta_events_follow_a_subscription_life(clients: ClientPool) -> None:
    observer = await clients.connect("json")
    events = await watch(
        observer, "wamp.subscription.", ["on_create", "on_subscribe", "on_unsubscribe", "on_delete"]
    )
    first = await clients.connect("msgpack")
    second = await clients.connect("cbor")
    topic = "com.interop.meta.sub.life"
    mine = {first.id, second.id}

    def ours(event: MetaEvent) -> bool:
        return bool(event[1][0] in mine)

    sub1 = await first.subscribe(lambda *a: None, topic)
    name, args = await next_event(events, ours)
    assert name == "on_create" and args[0] == first.id
    assert args[1]["id"] == sub1.id
    assert args[1]["uri"] == topic and args[1]["match"] == "exact"
    assert "created" in args[1]
    assert await next_event(events, ours) == ("on_subscribe", [first.id, sub1.id])

    sub2 = await second.subscribe(lambda *a: None, topic)
    assert sub2.id == sub1.id
    assert await next_event(events, ours) == ("on_subscribe", [second.id, sub1.id])

    await sub2.unsubscribe()
    assert await next_event(events, ours) == ("on_unsubscribe", [second.id, sub1.id])
    await sub1.unsubscribe()
    assert await next_event(events, ours) == ("on_unsubscribe", [first.id, sub1.id])
    assert await next_event(events, ours) == ("on_delete", [first.id, sub1.id])


async def test_subscription_meta_procedures_describe_live_subscriptions(
    clients: ClientPool,
) -> None:
    first = await clients.connect("json")
    second = await clients.connect("cbor")
    topic = "com.interop.meta.sub.procs"
    exact = await first.subscribe(lambda *a: None, topic)
    await second.subscribe(lambda *a: None, topic)
    prefix = await second.subscribe(
        lambda *a: None, "com.interop.meta.sub.", options=SubscribeOptions(match="prefix")
    )
    wildcard = await first.subscribe(
        lambda *a: None, "com.interop.meta..procs", options=SubscribeOptions(match="wildcard")
    )
    caller = await clients.connect("msgpack")

    listing = await caller.call("wamp.subscription.list")
    assert exact.id in listing["exact"]
    assert prefix.id in listing["prefix"]
    assert wildcard.id in listing["wildcard"]

    assert await caller.call("wamp.subscription.lookup", topic) == exact.id
    assert (
        await caller.call("wamp.subscription.lookup", "com.interop.meta.sub.", {"match": "prefix"})
        == prefix.id
    )
    assert await caller.call("wamp.subscription.lookup", "com.interop.meta.sub.none") is None

    matched = await caller.call("wamp.subscription.match", topic)
    assert sorted(matched) == sorted([exact.id, prefix.id, wildcard.id])
    assert await caller.call("wamp.subscription.match", "com.interop.nothing.here") is None

    info = await caller.call("wamp.subscription.get", exact.id)
    assert info["id"] == exact.id and info["uri"] == topic and info["match"] == "exact"
    assert isinstance(info["created"], str)
    assert (await caller.call("wamp.subscription.get", prefix.id))["match"] == "prefix"

    subscribers = await caller.call("wamp.subscription.list_subscribers", exact.id)
    assert sorted(subscribers) == sorted([first.id, second.id])
    assert await caller.call("wamp.subscription.count_subscribers", exact.id) == 2
    assert await caller.call("wamp.subscription.count_subscribers", prefix.id) == 1

    await exact.unsubscribe()
    assert await caller.call("wamp.subscription.list_subscribers", exact.id) == [second.id]
    await second.leave()
    await asyncio.wait_for(second.disconnected, TIMEOUT)
    for procedure in ("get", "list_subscribers", "count_subscribers"):
        with pytest.raises(ApplicationError) as info_error:
            await caller.call(f"wamp.subscription.{procedure}", exact.id)
        assert info_error.value.error == "wamp.error.no_such_subscription", procedure


# --- registration_meta_api -----------------------------------------------------------------
async def test_registration_meta_events_follow_a_registration_life(clients: ClientPool) -> None:
    observer = await clients.connect("cbor")
    events = await watch(
        observer, "wamp.registration.", ["on_create", "on_register", "on_unregister", "on_delete"]
    )
    first = await clients.connect("json")
    second = await clients.connect("msgpack")
    procedure = "com.interop.meta.reg.life"
    mine = {first.id, second.id}

    def ours(event: MetaEvent) -> bool:
        return bool(event[1][0] in mine)

    opts = RegisterOptions(invoke="roundrobin")
    reg1 = await first.register(lambda: 1, procedure, options=opts)
    name, args = await next_event(events, ours)
    assert name == "on_create" and args[0] == first.id
    assert args[1]["id"] == reg1.id and args[1]["uri"] == procedure
    assert args[1]["match"] == "exact" and args[1]["invoke"] == "roundrobin"
    assert "created" in args[1]
    assert await next_event(events, ours) == ("on_register", [first.id, reg1.id])

    reg2 = await second.register(lambda: 2, procedure, options=opts)
    assert reg2.id == reg1.id
    assert await next_event(events, ours) == ("on_register", [second.id, reg1.id])

    await reg2.unregister()
    assert await next_event(events, ours) == ("on_unregister", [second.id, reg1.id])
    await reg1.unregister()
    assert await next_event(events, ours) == ("on_unregister", [first.id, reg1.id])
    assert await next_event(events, ours) == ("on_delete", [first.id, reg1.id])


async def test_registration_meta_events_fire_when_a_callee_disconnects(
    clients: ClientPool,
) -> None:
    observer = await clients.connect("json")
    events = await watch(observer, "wamp.registration.", ["on_unregister", "on_delete"])
    callee = await clients.connect("cbor")
    reg = await callee.register(lambda: 1, "com.interop.meta.reg.drop")

    callee.drop()

    def ours(event: MetaEvent) -> bool:
        return bool(event[1][0] == callee.id)

    assert await next_event(events, ours) == ("on_unregister", [callee.id, reg.id])
    assert await next_event(events, ours) == ("on_delete", [callee.id, reg.id])


async def test_registration_meta_procedures_describe_live_registrations(
    clients: ClientPool,
) -> None:
    first = await clients.connect("msgpack")
    second = await clients.connect("json")
    procedure = "com.interop.meta.reg.procs"
    shared = RegisterOptions(invoke="last")
    exact = await first.register(lambda: 1, procedure, options=shared)
    await second.register(lambda: 2, procedure, options=shared)
    prefix = await second.register(
        lambda: 3, "com.interop.meta.reg.", options=RegisterOptions(match="prefix")
    )
    wildcard = await first.register(
        lambda: 4, "com.interop.meta..procs", options=RegisterOptions(match="wildcard")
    )
    caller = await clients.connect("cbor")

    listing = await caller.call("wamp.registration.list")
    assert exact.id in listing["exact"]
    assert prefix.id in listing["prefix"]
    assert wildcard.id in listing["wildcard"]

    assert await caller.call("wamp.registration.lookup", procedure) == exact.id
    assert (
        await caller.call("wamp.registration.lookup", "com.interop.meta.reg.", {"match": "prefix"})
        == prefix.id
    )
    assert await caller.call("wamp.registration.lookup", "com.interop.meta.reg.none") is None

    # match: the registration a call would reach (precedence), not every match
    assert await caller.call("wamp.registration.match", procedure) == exact.id
    assert await caller.call("wamp.registration.match", "com.interop.meta.reg.x") == prefix.id
    assert await caller.call("wamp.registration.match", "com.interop.meta.x.procs") == wildcard.id
    assert await caller.call("wamp.registration.match", "com.interop.nothing") is None

    info = await caller.call("wamp.registration.get", exact.id)
    assert info["id"] == exact.id and info["uri"] == procedure
    assert info["match"] == "exact" and info["invoke"] == "last"
    assert isinstance(info["created"], str)

    callees = await caller.call("wamp.registration.list_callees", exact.id)
    assert sorted(callees) == sorted([first.id, second.id])
    assert await caller.call("wamp.registration.count_callees", exact.id) == 2

    await first.leave()
    await asyncio.wait_for(first.disconnected, TIMEOUT)
    assert await caller.call("wamp.registration.list_callees", exact.id) == [second.id]
    for name in ("get", "list_callees", "count_callees"):
        with pytest.raises(ApplicationError) as error:
            await caller.call(f"wamp.registration.{name}", wildcard.id)
        assert error.value.error == "wamp.error.no_such_registration", name


# --- testament_meta_api --------------------------------------------------------------------
async def _testament_watch(observer: Client, topic: str) -> Callable[[Client], Any]:
    """Merge the testament topic and on_leave into one ordered stream for ``observer``.

    Testaments are published before the router announces on_leave, both to the same
    observer, so "on_leave came first" proves no testament was published.
    """
    queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
    await observer.subscribe(
        lambda *args, **kwargs: queue.put_nowait(("testament", (args, kwargs))), topic
    )
    await observer.subscribe(
        lambda sid, *rest: queue.put_nowait(("leave", sid)), "wamp.session.on_leave"
    )

    async def stream(subject: Client) -> list[tuple[str, Any]]:
        """Everything about ``subject`` up to and including its on_leave."""
        seen: list[tuple[str, Any]] = []
        while True:
            kind, value = await asyncio.wait_for(queue.get(), TIMEOUT)
            if kind == "leave" and value != subject.id:
                continue
            seen.append((kind, value))
            if kind == "leave":
                return seen

    return stream


async def test_testament_is_published_when_the_connection_is_lost(clients: ClientPool) -> None:
    observer = await clients.connect("json")
    topic = "com.interop.testament.lost"
    stream = await _testament_watch(observer, topic)
    subject = await clients.connect("cbor")
    await subject.call("wamp.session.add_testament", topic, ["bye", b"\x01"], {"who": "subject"})
    await subject.call(
        "wamp.session.add_testament", topic, ["second"], {}, publish_options={}, scope="destroyed"
    )

    subject.drop()

    assert await stream(subject) == [
        ("testament", (("bye", b"\x01"), {"who": "subject"})),
        ("testament", (("second",), {})),
        ("leave", subject.id),
    ]


async def test_flushed_testaments_are_not_published(clients: ClientPool) -> None:
    observer = await clients.connect("msgpack")
    topic = "com.interop.testament.flushed"
    stream = await _testament_watch(observer, topic)
    subject = await clients.connect("json")
    await subject.call("wamp.session.add_testament", topic, ["flushed"], {})
    await subject.call("wamp.session.add_testament", topic, ["kept"], {}, scope="detached")
    await subject.call("wamp.session.flush_testaments")  # scope defaults to destroyed

    subject.drop()

    assert await stream(subject) == [
        ("testament", (("kept",), {})),
        ("leave", subject.id),
    ]


async def test_clean_leave_does_not_publish_testaments(clients: ClientPool) -> None:
    observer = await clients.connect("json")
    topic = "com.interop.testament.clean"
    stream = await _testament_watch(observer, topic)
    subject = await clients.connect("msgpack")
    await subject.call("wamp.session.add_testament", topic, ["should not"], {})

    subject.leave()

    assert await stream(subject) == [("leave", subject.id)]


async def test_detached_testaments_are_published_before_destroyed_ones(
    clients: ClientPool,
) -> None:
    # WAMP spec (testament): "A Router that does not allow Session Resumption MUST send
    # detached-scope Testaments before destroyed-scope Testaments."
    observer = await clients.connect("cbor")
    topic = "com.interop.testament.order"
    stream = await _testament_watch(observer, topic)
    subject = await clients.connect("json")
    await subject.call("wamp.session.add_testament", topic, ["destroyed"], {})
    await subject.call("wamp.session.add_testament", topic, ["detached"], {}, scope="detached")

    subject.drop()

    assert await stream(subject) == [
        ("testament", (("detached",), {})),
        ("testament", (("destroyed",), {})),
        ("leave", subject.id),
    ]


async def test_testament_honours_its_publish_options(clients: ClientPool) -> None:
    chosen = await clients.connect("json", authid="chosen")
    other = await clients.connect("msgpack", authid="other")
    topic = "com.interop.testament.options"
    chosen_stream = await _testament_watch(chosen, topic)
    other_stream = await _testament_watch(other, topic)
    subject = await clients.connect("cbor")
    await subject.call(
        "wamp.session.add_testament",
        topic,
        ["only for chosen"],
        {},
        publish_options={"eligible_authid": ["chosen"]},
    )

    subject.drop()

    assert await chosen_stream(subject) == [
        ("testament", (("only for chosen",), {})),
        ("leave", subject.id),
    ]
    assert await other_stream(subject) == [("leave", subject.id)]
