"""Event history on cluster nodes: kept in Redis, read from any node.

Two real nodes on a real Redis. Both nodes answer from the topic's Redis stream;
``get_events`` resolves a subscription that lives only on another node.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest

from client_sdk import ApplicationError, Event, PublishOptions
from tests.support.processes import BrokerProcess, RedisProcess

from .conftest import HISTORY, TIMING, eventually, start_node
from .test_events import Connect


@pytest.fixture(scope="module")
def history_nodes(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[BrokerProcess]]:
    path: Path = tmp_path_factory.mktemp("history-cluster") / "broker.toml"
    path.write_text(TIMING + HISTORY, encoding="utf-8")
    started = [start_node(redis_server, path, f"h{i}") for i in range(2)]
    yield started
    for node in started:
        node.stop()


async def test_both_nodes_keep_events_published_on_one_of_them(
    history_nodes: list[BrokerProcess], connect: Connect
) -> None:
    origin, other = history_nodes
    subscriber = await connect(other.url)
    received: asyncio.Queue[Event] = asyncio.Queue()
    sub = await subscriber.subscribe("hist.remote", received.put_nowait)
    publisher = await connect(origin.url)
    ack = PublishOptions(acknowledge=True)
    ids = [await publisher.publish("hist.remote", n, options=ack) for n in range(3)]
    for _ in ids:  # the other node has delivered (and so kept) all three
        await asyncio.wait_for(received.get(), 5)

    result = await subscriber.call("wamp.subscription.get_events", sub.id)
    assert [e["publication"] for e in result.args[0]] == ids

    # on the origin node the subscription exists only remotely: it is still resolved
    async def origin_knows_the_subscription() -> bool:
        try:
            await publisher.call("wamp.subscription.get_events", sub.id)
        except ApplicationError as exc:
            assert exc.uri == "wamp.error.no_such_subscription"
            return False
        return True

    await eventually(origin_knows_the_subscription, what="subscription known on the origin")
    result = await publisher.call("wamp.subscription.get_events", sub.id, reverse=True)
    assert [e["args"][0] for e in result.args[0]] == [2, 1, 0]
    assert result.kwargs == {"more": False}


async def test_get_events_sees_what_this_node_published_just_before(
    history_nodes: list[BrokerProcess], connect: Connect
) -> None:
    """Its local subscribers got those at once: a resume here must not miss them."""
    session = await connect(history_nodes[0].url)
    sub = await session.subscribe("hist.own", lambda _event: None)
    for burst in range(5):
        last = 0
        for n in range(40):  # queued in the node's writer, not yet in Redis …
            last = 100 * burst + n
            await session.publish("hist.own", last, options=PublishOptions(exclude_me=True))
        # … when the same session asks (its messages are handled in order)
        result = await session.call("wamp.subscription.get_events", sub.id, reverse=True, limit=1)
        assert [e["args"][0] for e in result.args[0]] == [last]
