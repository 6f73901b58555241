"""``get_events`` after a publication on Redis reads newest first to the anchor: same answers.

The Redis backend in-process on a real redis-server. A resume query (one topic,
``after_publication``, forward) is answered from the entries after the anchor only;
every answer must equal ``select`` over the whole stream (what other queries read),
including anchors that are gone, trimmed or not visible to the caller.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis
from redis.asyncio import Redis

from broker.cluster import history as redis_history
from broker.cluster import keys
from broker.cluster.events import event_envelope
from broker.cluster.history import RedisHistoryReader, parse_entries
from broker.cluster.link import ClusterTiming
from broker.cluster.redis import RedisCluster
from broker.core.history import (
    HistoryPage,
    HistoryQuery,
    HistoryRule,
    HistorySettings,
    StoredEvent,
    select,
)
from broker.core.ids import random_id
from broker.core.publication import Publication
from broker.core.realm import RealmSettings
from broker.core.router import Router
from broker.server import AsyncioScheduler
from tests.support.processes import RedisProcess, start_redis

TIMING = ClusterTiming(
    heartbeat_interval=0.25, node_timeout=2.0, probe_interval=0.3, probe_timeout=0.5
)
KEPT = HistoryRule("com.anchor.", "prefix", 1000)
SHORT = HistoryRule("com.short.", "prefix", 50)


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisProcess]:
    server = start_redis()
    yield server
    server.kill()


def publish(
    client: redis.Redis, backend: RedisCluster, rule: HistoryRule, topic: str, n: int
) -> None:
    publication = Publication(topic, random_id(), {}, [n], None)
    data = event_envelope("other", "realm1", publication).pack()
    channel = keys.event_channel("realm1", topic)
    for command in backend.history.commands("realm1", topic, channel, data, rule):
        client.execute_command(*command)


def visible(stored: StoredEvent) -> bool:
    assert stored.event.args is not None
    return bool(stored.event.args[0] % 7 != 3)  # some events the caller may not see


def summary(page: HistoryPage) -> tuple[list[int], bool | None, bool]:
    return [s.offset for s in page.events], page.anchor_found, page.more


async def test_answers_after_an_anchor_equal_the_whole_stream_selection(
    own_redis: RedisProcess, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(redis_history, "SCAN", 16)  # several reads per search
    answered: list[bool] = []  # whether the search after the anchor answered, per query
    original = redis_history._page_after

    def page_after(*args: Any) -> HistoryPage | None:
        page = original(*args)
        answered.append(page is not None)
        return page

    monkeypatch.setattr(redis_history, "_page_after", page_after)
    settings = RealmSettings("realm1", history=HistorySettings(rules=(KEPT, SHORT)))
    router = Router((settings,), AsyncioScheduler())
    backend = RedisCluster(own_redis.url, "anchor-a", router, TIMING)
    for realm in router.realms.values():
        realm.cluster = backend
    client = redis.Redis.from_url(own_redis.url)
    cmd = Redis.from_url(own_redis.url)
    await backend.start()
    try:
        reader = router.realms["realm1"].context.history.reader
        assert isinstance(reader, RedisHistoryReader)
        for topic, rule in (("com.anchor.t", KEPT), ("com.short.t", SHORT)):
            for n in range(300):
                publish(client, backend, rule, topic, n)
            whole = (await reader.read(cmd, HistoryQuery(topic), visible)).events
            everything = (await reader.read(cmd, HistoryQuery(topic), lambda _s: True)).events
            ids = [s.event.id for s in everything]
            oldest = everything[0].timestamp
            anchors = [ids[0], ids[1], ids[3], ids[len(ids) // 2], ids[-2], ids[-1], random_id()]
            stream = redis_history.history_stream_key("realm1", topic)
            first = parse_entries(client.xrange(stream, count=1))[0]
            if topic == "com.short.t":  # still in the stream, no longer kept (rule limit)
                assert first[0] <= 300 - SHORT.limit
            anchors.append(first[2].publication)
            for anchor in anchors:
                for limit in (None, 1, 10, 149, 1000):
                    query = HistoryQuery(topic, after_publication=anchor, limit=limit)
                    for asked in (query, dataclasses.replace(query, after_time=oldest + 1)):
                        got = await reader.read(cmd, asked, visible)
                        assert summary(got) == summary(select(whole, asked)), (anchor, asked)
        assert answered.count(True) > 100 and False in answered  # both ways were taken
    finally:
        client.close()
        await cmd.aclose()
        await backend.close()
