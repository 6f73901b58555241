"""Event history on the Redis backend: one stream per topic, the same answer on every node.

Real redis-server, two real broker nodes. The Autobahn history contract
(tests/broker/interop/test_event_history.py) runs with its clients spread over both
nodes, so every publish, subscription and ``get_events`` crosses Redis.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest
import redis

from broker.cluster.history import history_stream_key, parse_entries
from client_sdk import Event, PublishOptions
from tests.broker.interop import test_event_history as contract
from tests.broker.interop._autobahn import Client, ClientPool, connect
from tests.support.processes import BrokerProcess, RedisProcess

from .conftest import TIMING, start_node
from .test_events import Connect


class SpreadPool(ClientPool):
    """Autobahn clients connected to the nodes in turn (first to node 0, then node 1 …)."""

    def __init__(self, urls: list[str]) -> None:
        super().__init__(urls[0])
        self.urls = urls

    async def connect(
        self,
        serializer: str = "json",
        *,
        url: str | None = None,
        realm: str = "realm1",
        authid: str | None = None,
    ) -> Client:
        target = url or self.urls[len(self.clients) % len(self.urls)]
        client = await connect(target, serializer, realm=realm, authid=authid)
        self.clients.append(client)
        return client


@pytest.fixture(scope="module")
def history_pair(
    redis_server: RedisProcess, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[BrokerProcess]]:
    path: Path = tmp_path_factory.mktemp("redis-history") / "broker.toml"
    path.write_text(TIMING + contract.CONFIG, encoding="utf-8")
    started = [start_node(redis_server, path, f"rh{i}") for i in range(2)]
    yield started
    for node in started:
        node.stop()


@pytest.fixture
async def spread(history_pair: list[BrokerProcess]) -> AsyncIterator[SpreadPool]:
    pool = SpreadPool([node.url for node in history_pair])
    yield pool
    await pool.close_all()


CASES = [
    contract.test_welcome_announces_event_history,
    contract.test_get_events_returns_what_was_published_before_and_after_subscribing,
    contract.test_recovery_after_a_publication_says_whether_it_is_complete,
    contract.test_every_keyword_argument,
    contract.test_pattern_subscription_history_with_topic,
    contract.test_authid_lists_filter_history_and_session_lists_are_not_kept,
    contract.test_bad_arguments_and_unknown_subscriptions_are_errors,
]


@pytest.mark.parametrize("case", CASES, ids=[case.__name__[5:] for case in CASES])
async def test_autobahn_history_contract_across_two_nodes(
    case: Callable[[ClientPool], Awaitable[None]], spread: SpreadPool
) -> None:
    await case(spread)


async def test_both_nodes_answer_the_same_and_offsets_follow_the_stream(
    history_pair: list[BrokerProcess], redis_server: RedisProcess, connect: Connect
) -> None:
    topic = "com.hist.same"
    queues: list[asyncio.Queue[Event]] = [asyncio.Queue(), asyncio.Queue()]
    subscribers = [await connect(node.url) for node in history_pair]
    subs = [
        await session.subscribe(topic, queue.put_nowait)
        for session, queue in zip(subscribers, queues, strict=True)
    ]
    publishers = [await connect(node.url) for node in history_pair]
    ack = PublishOptions(acknowledge=True)
    ids = [await publishers[n % 2].publish(topic, n, options=ack) for n in range(10)]
    received = [
        [(await asyncio.wait_for(queue.get(), 5)).publication for _ in ids] for queue in queues
    ]
    # every node delivered all ten; live order is per publisher only (a node delivers its
    # own publications at once, the other node's when they come through Redis)
    assert sorted(received[0]) == sorted(received[1]) == sorted(ids)

    answers = [
        await session.call("wamp.subscription.get_events", sub.id)
        for session, sub in zip(subscribers, subs, strict=True)
    ]
    assert answers[0].args == answers[1].args  # timestamps included: Redis wrote them
    assert [e["publication"] for e in answers[0].args[0]] == ids

    client = redis.Redis.from_url(redis_server.url)
    try:
        entries = parse_entries(client.xrange(history_stream_key("realm1", topic)))
    finally:
        client.close()
    assert [offset for offset, _, _ in entries] == list(range(1, 11))
    assert [env.offset for _, _, env in entries] == list(range(1, 11))
    assert [env.publication for _, _, env in entries] == ids
    assert len({env.epoch for _, _, env in entries}) == 1
