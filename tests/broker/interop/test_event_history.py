"""Event history with Autobahn|Python: ``wamp.subscription.get_events`` on a real broker.

One broker for the module, configured with history rules for ``com.hist.`` topics
(prefix) and a short exact-topic buffer; publishers, subscribers and readers use
different serializers.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallResult, PublishOptions, SubscribeOptions

from tests.support.processes import BrokerProcess, start_broker

from ._autobahn import Client, ClientPool

CONFIG = """
[[realm]]
name = "realm1"

[[realm.history]]
uri = "com.hist."
match = "prefix"
limit = 100
ttl = 600

[[realm.history]]
uri = "com.short"
limit = 3
"""

GET_EVENTS = "wamp.subscription.get_events"
RFC3339_MS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")


@pytest.fixture(scope="module")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    """A broker keeping history for the topics of CONFIG (overrides the default broker)."""
    path = tmp_path_factory.mktemp("history") / "broker.toml"
    path.write_text(CONFIG, encoding="utf-8")
    proc = start_broker("--config", str(path))
    yield proc
    proc.stop()


async def publish(client: Client, topic: str, *args: Any, **options: Any) -> int:
    """Publish with acknowledge; return the publication ID."""
    published = await client.publish(
        topic, *args, options=PublishOptions(acknowledge=True, **options)
    )
    assert published is not None
    return int(published.id)


async def history(
    client: Client, sub_id: int, **kwargs: Any
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Call get_events; return (events, keyword result)."""
    result = await client.call(GET_EVENTS, sub_id, **kwargs)
    assert isinstance(result, CallResult), result
    (events,) = result.results
    return events, result.kwresults


def payloads(events: list[dict[str, Any]]) -> list[Any]:
    return [event["args"][0] for event in events]


async def test_welcome_announces_event_history(clients: ClientPool) -> None:
    client = await clients.connect("json")
    welcome = client.frames.of_type(2)[0]
    assert welcome[2]["roles"]["broker"]["features"]["event_history"] is True


async def test_get_events_returns_what_was_published_before_and_after_subscribing(
    clients: ClientPool,
) -> None:
    publisher = await clients.connect("msgpack")
    subscriber = await clients.connect("cbor")
    reader = await clients.connect("json")
    topic = "com.hist.ticker.eur"
    published = await publisher.publish(
        topic, "early", price=1, options=PublishOptions(acknowledge=True)
    )
    before = published.id
    sub = await subscriber.subscribe(lambda *a, **kw: None, topic)
    later = [await publish(publisher, topic, n) for n in range(3)]
    events, info = await history(reader, sub.id)
    assert [e["publication"] for e in events] == [before, *later]
    assert payloads(events) == ["early", 0, 1, 2]
    assert events[0]["kwargs"] == {"price": 1}
    assert all(e["subscription"] == sub.id for e in events)
    assert all(RFC3339_MS.match(e["timestamp"]) for e in events)
    assert info == {"more": False}


async def test_recovery_after_a_publication_says_whether_it_is_complete(
    clients: ClientPool,
) -> None:
    publisher = await clients.connect("json")
    reader = await clients.connect("msgpack")
    sub = await reader.subscribe(lambda *a: None, "com.short")
    ids = [await publish(publisher, "com.short", n) for n in range(5)]  # keeps 2, 3, 4
    events, info = await history(reader, sub.id, after_publication=ids[3])
    assert payloads(events) == [4] and info["anchor_found"] is True
    events, info = await history(reader, sub.id, after_publication=ids[0])
    assert payloads(events) == [2, 3, 4] and info["anchor_found"] is False


async def test_every_keyword_argument(clients: ClientPool) -> None:
    publisher = await clients.connect("cbor")
    reader = await clients.connect("json")
    topic = "com.hist.kw"
    sub = await reader.subscribe(lambda *a: None, topic)
    ids = [await publish(publisher, topic, n) for n in range(6)]
    events, info = await history(reader, sub.id, reverse=True, limit=2)
    assert payloads(events) == [5, 4] and info == {"more": True}
    assert payloads((await history(reader, sub.id, from_publication=ids[4]))[0]) == [4, 5]
    assert payloads((await history(reader, sub.id, before_publication=ids[2]))[0]) == [0, 1]
    assert payloads((await history(reader, sub.id, until_publication=ids[1]))[0]) == [0, 1]
    all_events = (await history(reader, sub.id))[0]
    stamp = all_events[3]["timestamp"]
    for key in ("from_time", "until_time"):
        assert ids[3] in [
            e["publication"] for e in (await history(reader, sub.id, **{key: stamp}))[0]
        ]
    after = (await history(reader, sub.id, after_time=stamp))[0]
    before = (await history(reader, sub.id, before_time=stamp))[0]
    assert ids[3] not in [e["publication"] for e in after + before]
    assert len(after) + len(before) + sum(e["timestamp"] == stamp for e in all_events) == 6


async def test_pattern_subscription_history_with_topic(clients: ClientPool) -> None:
    publisher = await clients.connect("msgpack")
    reader = await clients.connect("cbor")
    sub = await reader.subscribe(
        lambda *a, **kw: None,
        "com.hist.fx.",
        options=SubscribeOptions(match="prefix", details=True),
    )
    await publish(publisher, "com.hist.fx.eur", "e")
    await publish(publisher, "com.hist.fx.usd", "u")
    events, _ = await history(reader, sub.id)
    assert [(e["details"]["topic"], e["args"][0]) for e in events] == [
        ("com.hist.fx.eur", "e"),
        ("com.hist.fx.usd", "u"),
    ]
    events, _ = await history(reader, sub.id, topic="com.hist.fx.usd")
    assert payloads(events) == ["u"]


async def test_authid_lists_filter_history_and_session_lists_are_not_kept(
    clients: ClientPool,
) -> None:
    publisher = await clients.connect("json")
    bob = await clients.connect("msgpack", authid="bob")
    alice = await clients.connect("cbor", authid="alice")
    topic = "com.hist.private"
    sub = await bob.subscribe(lambda *a: None, topic)
    await publish(publisher, topic, "everyone")
    await publish(publisher, topic, "not bob", exclude_authid=["bob"])
    await publish(publisher, topic, "bob by session", eligible=[bob.id])
    assert payloads((await history(bob, sub.id))[0]) == ["everyone"]
    assert payloads((await history(alice, sub.id))[0]) == ["everyone", "not bob"]


async def test_bad_arguments_and_unknown_subscriptions_are_errors(clients: ClientPool) -> None:
    reader = await clients.connect("json")
    sub = await reader.subscribe(lambda *a: None, "com.hist.errors")
    with pytest.raises(ApplicationError) as raised:
        await reader.call(GET_EVENTS, sub.id, limit=-1)
    assert raised.value.error == "wamp.error.invalid_argument"
    assert "limit must be a positive integer" in raised.value.args[0]
    with pytest.raises(ApplicationError) as raised:
        await reader.call(GET_EVENTS, sub.id, from_time="noon")
    assert raised.value.error == "wamp.error.invalid_argument"
    with pytest.raises(ApplicationError) as raised:
        await reader.call(GET_EVENTS, 123456789)
    assert raised.value.error == "wamp.error.no_such_subscription"
