"""A catch-up in many chunks while live events keep coming: each event once, in order.

The Redis backend in-process on a real redis-server, the catch-up's chunk made small.
Events published while the node reads its missed events arrive live (held until the
catch-up ends) and are also read from the stream by the later chunks.
"""

from __future__ import annotations

import asyncio

import pytest

from broker.cluster import repair
from protocol_spec.messages import Subscribe
from tests.support.processes import RedisProcess

from .test_history_window import TOPIC, history_node, joined, own_redis, publish

__all__ = ["own_redis"]

MISSED = 100
LIVE = 10


async def test_live_events_during_a_chunked_catch_up_come_after_it_once(
    own_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repair, "CHUNK", 7)
    async with history_node(own_redis.url, "catch-a") as (router, backend, client):
        peer, session = joined(router)
        subscribed = asyncio.Event()
        peer.on_subscribed = subscribed.set
        router.receive(session, Subscribe(1, {}, TOPIC))
        await asyncio.wait_for(subscribed.wait(), 10)
        publish(client, backend, 0)
        await peer.until(1)
        # the node's pub/sub connection dies; the events after it are missed live
        assert client.execute_command("CLIENT", "KILL", "TYPE", "pubsub") >= 1
        for n in range(1, MISSED + 1):
            publish(client, backend, n)
        during = peer.events

        class Recording(list[object]):
            def append(self, value: object) -> None:
                super().append(value)
                if value == MISSED // 3:  # mid catch-up: more events, live and in the stream
                    for n in range(MISSED + 1, MISSED + LIVE + 1):
                        publish(client, backend, n)

        peer.events = Recording(during)
        try:
            await peer.until(MISSED + LIVE + 1)
        except TimeoutError:
            raise AssertionError(list(peer.events)) from None
        assert list(peer.events) == list(range(MISSED + LIVE + 1))
        assert backend.repair.recovered >= MISSED
