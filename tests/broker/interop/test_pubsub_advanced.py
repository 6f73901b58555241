"""Advanced Profile pub/sub with Autobahn|Python (and raw JSON where Autobahn has no option).

Negative checks never sleep: after the publication that must not arrive, the same
publisher sends a sentinel that must arrive. Events from one publisher reach a
subscriber in order, so a subscriber whose first event is the sentinel did not get
the other one.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from autobahn.wamp.types import EventDetails, PublishOptions, SubscribeOptions

from tests.support.processes import BrokerProcess

from ._autobahn import Client, ClientPool
from ._raw import PUBLISHED, RawClient

TIMEOUT = 5


class Inbox:
    """An Autobahn subscription handler that queues (args, kwargs, details)."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[tuple[tuple[Any, ...], dict[str, Any], EventDetails]] = (
            asyncio.Queue()
        )

    def __call__(self, *args: Any, details: EventDetails, **kwargs: Any) -> None:
        self.queue.put_nowait((args, kwargs, details))

    async def next(self) -> tuple[tuple[Any, ...], dict[str, Any], EventDetails]:
        return await asyncio.wait_for(self.queue.get(), TIMEOUT)

    async def next_args(self) -> tuple[Any, ...]:
        return (await self.next())[0]


async def subscribe(client: Client, topic: str, match: str | None = None, **options: Any) -> Inbox:
    inbox = Inbox()
    await client.subscribe(
        inbox, topic, options=SubscribeOptions(match=match, details=True, **options)
    )
    return inbox


ACK = PublishOptions(acknowledge=True)


# --- publisher_exclusion -----------------------------------------------------------------
async def test_publisher_does_not_receive_its_own_event_by_default(clients: ClientPool) -> None:
    publisher = await clients.connect("json")
    own = await subscribe(publisher, "com.interop.excl.default")

    await publisher.publish("com.interop.excl.default", "excluded", options=ACK)
    await publisher.publish(
        "com.interop.excl.default",
        "sentinel",
        options=PublishOptions(acknowledge=True, exclude_me=False),
    )

    assert await own.next_args() == ("sentinel",)


async def test_publisher_receives_its_own_event_with_exclude_me_false(
    clients: ClientPool,
) -> None:
    publisher = await clients.connect("msgpack")
    other = await clients.connect("cbor")
    own = await subscribe(publisher, "com.interop.excl.false")
    theirs = await subscribe(other, "com.interop.excl.false")

    await publisher.publish(
        "com.interop.excl.false",
        "to all",
        options=PublishOptions(acknowledge=True, exclude_me=False),
    )

    assert await own.next_args() == ("to all",)
    assert await theirs.next_args() == ("to all",)


# --- subscriber_blackwhite_listing -------------------------------------------------------
BLACKWHITE_CASES: dict[str, tuple[dict[str, Any], set[str]]] = {
    # name: (publish options, authids of the subscribers that must receive the event)
    "eligible_session": ({"eligible": ["alice"]}, {"alice"}),
    "exclude_session": ({"exclude": ["alice"]}, {"bob", "carol"}),
    "eligible_two_sessions": ({"eligible": ["alice", "carol"]}, {"alice", "carol"}),
    "eligible_authid": ({"eligible_authid": ["bob"]}, {"bob"}),
    "exclude_authid": ({"exclude_authid": ["bob"]}, {"alice", "carol"}),
    "eligible_authrole": ({"eligible_authrole": ["anonymous"]}, {"alice", "bob", "carol"}),
    "eligible_other_authrole": ({"eligible_authrole": ["admin"]}, set()),
    "exclude_authrole": ({"exclude_authrole": ["anonymous"]}, set()),
    "exclude_wins_over_eligible": (
        {"eligible_authid": ["alice", "bob"], "exclude": ["bob"]},
        {"alice"},
    ),
}


@pytest.mark.parametrize("case", list(BLACKWHITE_CASES))
async def test_blackwhite_listing_selects_receivers(clients: ClientPool, case: str) -> None:
    options, receivers = BLACKWHITE_CASES[case]
    topic = f"com.interop.blackwhite.{case}"
    subscribers: dict[str, Client] = {}
    inboxes: dict[str, Inbox] = {}
    for authid, serializer in (("alice", "json"), ("bob", "msgpack"), ("carol", "cbor")):
        subscribers[authid] = await clients.connect(serializer, authid=authid)
        assert subscribers[authid].welcome.authid == authid  # HELLO authid is honoured
        inboxes[authid] = await subscribe(subscribers[authid], topic)
    publisher = await clients.connect("json", authid="publisher")

    resolved = {
        key: [subscribers[v].id for v in value] if key in ("eligible", "exclude") else value
        for key, value in options.items()
    }
    await publisher.publish(topic, "filtered", options=PublishOptions(acknowledge=True, **resolved))
    await publisher.publish(topic, "sentinel", options=ACK)

    for authid, inbox in inboxes.items():
        first = await inbox.next_args()
        if authid in receivers:
            assert first == ("filtered",), authid
            assert await inbox.next_args() == ("sentinel",), authid
        else:
            assert first == ("sentinel",), authid


# --- publisher_identification --------------------------------------------------------------
async def test_disclose_me_puts_publisher_identity_in_event_details(
    broker: BrokerProcess, clients: ClientPool
) -> None:
    subscriber = await clients.connect("cbor")
    inbox = await subscribe(subscriber, "com.interop.disclose")
    async with await RawClient.open(broker.url) as raw:
        await raw.hello(authid="raw-publisher")
        reply = await raw.publish("com.interop.disclose", ["shown"], disclose_me=True)
        assert reply[0] == PUBLISHED
        reply = await raw.publish("com.interop.disclose", ["hidden"])
        assert reply[0] == PUBLISHED

        args, _, details = await inbox.next()
        assert args == ("shown",)
        assert details.publisher == raw.session_id
        assert details.publisher_authid == "raw-publisher"
        assert details.publisher_authrole == "anonymous"

        args, _, details = await inbox.next()
        assert args == ("hidden",)
        assert details.publisher is None
        assert details.publisher_authid is None
        assert details.publisher_authrole is None


# --- pattern_based_subscription ----------------------------------------------------------
async def test_prefix_subscription_receives_matching_topics_with_the_concrete_topic(
    clients: ClientPool,
) -> None:
    subscriber = await clients.connect("msgpack")
    publisher = await clients.connect("json")
    inbox = await subscribe(subscriber, "com.interop.prefix.", match="prefix")

    await publisher.publish("com.interop.other.x", "outside", options=ACK)
    await publisher.publish("com.interop.prefix.a.b", "deep", options=ACK)
    await publisher.publish("com.interop.prefix.c", "flat", options=ACK)

    args, _, details = await inbox.next()
    assert (args, details.topic) == (("deep",), "com.interop.prefix.a.b")
    args, _, details = await inbox.next()
    assert (args, details.topic) == (("flat",), "com.interop.prefix.c")


async def test_wildcard_subscription_matches_exactly_one_component_per_empty_slot(
    clients: ClientPool,
) -> None:
    subscriber = await clients.connect("cbor")
    publisher = await clients.connect("msgpack")
    inbox = await subscribe(subscriber, "com.interop.wild..update", match="wildcard")

    await publisher.publish("com.interop.wild.a.b.update", "too deep", options=ACK)
    await publisher.publish("com.interop.wild.update", "too shallow", options=ACK)
    await publisher.publish("com.interop.wild.item7.update", "match", options=ACK)

    args, _, details = await inbox.next()
    assert args == ("match",)
    assert details.topic == "com.interop.wild.item7.update"


async def test_subscribers_of_the_same_pattern_share_one_subscription_id(
    clients: ClientPool,
) -> None:
    first = await clients.connect("json")
    second = await clients.connect("cbor")
    sub_a = await first.subscribe(
        lambda *a: None, "com.interop.shared.", options=SubscribeOptions(match="prefix")
    )
    sub_b = await second.subscribe(
        lambda *a: None, "com.interop.shared.", options=SubscribeOptions(match="prefix")
    )
    exact = await second.subscribe(lambda *a: None, "com.interop.shared.x")
    wild = await second.subscribe(
        lambda *a: None, "com.interop.shared..x", options=SubscribeOptions(match="wildcard")
    )
    assert sub_a.id == sub_b.id
    assert len({sub_a.id, exact.id, wild.id}) == 3


async def test_event_matching_exact_and_pattern_subscriptions_is_delivered_per_subscription(
    clients: ClientPool,
) -> None:
    subscriber = await clients.connect("json")
    publisher = await clients.connect("msgpack")
    exact = await subscribe(subscriber, "com.interop.both.t")
    prefix = await subscribe(subscriber, "com.interop.both.", match="prefix")
    await publisher.publish("com.interop.both.t", "once each", options=ACK)
    assert await exact.next_args() == ("once each",)
    assert await prefix.next_args() == ("once each",)


# --- event_retention -----------------------------------------------------------------------
async def test_get_retained_delivers_the_last_retained_event_marked_retained(
    clients: ClientPool,
) -> None:
    publisher = await clients.connect("cbor")
    topic = "com.interop.retain.last"
    retain = PublishOptions(acknowledge=True, retain=True)
    await publisher.publish(topic, "old", options=retain)
    await publisher.publish(topic, "latest", b"\x01", options=retain, k=1)
    await publisher.publish(topic, "not retained", options=ACK)

    late = await clients.connect("json")
    inbox = await subscribe(late, topic, get_retained=True)

    args, kwargs, details = await inbox.next()
    assert args == ("latest", b"\x01") and kwargs == {"k": 1}
    assert details.retained is True
    await publisher.publish(topic, "live", options=ACK)
    args, _, details = await inbox.next()
    assert args == ("live",)
    assert not details.retained


async def test_subscribe_without_get_retained_gets_no_retained_event(
    clients: ClientPool,
) -> None:
    publisher = await clients.connect("msgpack")
    topic = "com.interop.retain.optin"
    await publisher.publish(topic, "kept", options=PublishOptions(acknowledge=True, retain=True))

    late = await clients.connect("json")
    inbox = await subscribe(late, topic)
    await publisher.publish(topic, "sentinel", options=ACK)
    assert await inbox.next_args() == ("sentinel",)


async def test_prefix_subscription_with_get_retained_receives_retained_events_with_topic(
    clients: ClientPool,
) -> None:
    publisher = await clients.connect("json")
    await publisher.publish(
        "com.interop.retainp.a", "from a", options=PublishOptions(acknowledge=True, retain=True)
    )
    late = await clients.connect("cbor")
    inbox = await subscribe(late, "com.interop.retainp.", match="prefix", get_retained=True)
    args, _, details = await inbox.next()
    assert args == ("from a",)
    assert details.retained is True
    assert details.topic == "com.interop.retainp.a"
