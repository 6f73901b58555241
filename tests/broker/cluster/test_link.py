"""The Redis backend in-process: link states, metrics, malformed envelopes, outbox drops.

A real redis-server; the backend is driven by the test's own event loop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import msgpack
import pytest
from redis.asyncio import Redis

from broker.cluster.keys import CONTROL, inbox
from broker.cluster.link import ClusterTiming, Lane, PubSubLink
from broker.cluster.outbox import MAX_OUTBOX, Outbox
from broker.cluster.redis import RedisCluster
from broker.cluster.state import TRANSITIONS, LinkState, LinkStateMachine
from broker.core.realm import RealmSettings
from broker.core.router import Router
from broker.server import AsyncioScheduler
from protocol_spec import cluster as wire
from tests.support.processes import RedisProcess, start_redis

from .conftest import eventually

TIMING = ClusterTiming(
    heartbeat_interval=0.25, node_timeout=2.0, probe_interval=0.3, probe_timeout=0.5
)
METRIC_KEYS = {
    "links",
    "redis_rtt",
    "state",
    "outbox_dropped",
    "peer_links",
    "peer_failures",
    "peer_fallbacks",
}


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisProcess]:
    server = start_redis()
    yield server
    server.kill()


async def _backend(url: str, node: str) -> tuple[Router, RedisCluster]:
    router = Router((RealmSettings("realm1"),), AsyncioScheduler())
    backend = RedisCluster(url, node, router, TIMING)
    for realm in router.realms.values():
        realm.cluster = backend
    await backend.start()
    return router, backend


async def test_metrics_follow_the_link_from_up_to_degraded_to_down(own_redis: RedisProcess) -> None:
    _router, backend = await _backend(own_redis.url, "links-a")
    try:
        report = backend.metrics()
        assert set(report) == METRIC_KEYS
        assert report["links"] == {"redis": True, "pubsub": True}
        assert report["state"] == "up" and backend.available
        assert isinstance(report["redis_rtt"], float)
        assert report["outbox_dropped"] == 0
        own_redis.kill()

        async def lost() -> bool:
            return backend.metrics()["state"] in ("degraded", "deaf", "connecting")

        await eventually(lost, timeout=10.0, what="the backend notices Redis is gone")
        report = backend.metrics()
        assert report["links"]["redis"] is False and report["redis_rtt"] is None
        assert not backend.available
    finally:
        await backend.close()
    assert backend.metrics()["state"] == "down"


async def test_malformed_envelopes_are_dropped_with_a_reason_and_the_node_keeps_going(
    own_redis: RedisProcess, caplog: pytest.LogCaptureFixture
) -> None:
    router, backend = await _backend(own_redis.url, "strict-a")
    client = Redis.from_url(own_redis.url)
    try:
        caplog.set_level(logging.WARNING, logger="broker.cluster.redis")
        await client.publish(CONTROL, b"\xc1 not msgpack")
        bad_leave = {"v": 1, "op": "leave", "n": "x", "r": "realm1", "s": "not-an-int"}
        await client.publish(CONTROL, msgpack.packb(bad_leave))
        await client.publish(inbox("strict-a"), b"\x81\xa1v\x01")  # {v: 1}, no op
        joined = wire.SessionJoined("other", "realm1", {"session": 77, "authid": "z"})
        await client.publish(CONTROL, joined.pack())

        async def applied() -> bool:
            return 77 in router.realms["realm1"].remote.sessions

        await eventually(applied, timeout=5.0, what="the valid envelope after the bad ones")
        dropped = [r.getMessage() for r in caplog.records if "malformed envelope" in r.getMessage()]
        assert dropped and "undecodable envelope" in dropped[0]
        assert backend.available
    finally:
        await client.aclose()
        await backend.close()


def test_every_state_has_a_row_and_down_is_final() -> None:
    assert set(TRANSITIONS) == set(LinkState)
    assert TRANSITIONS[LinkState.DOWN] == frozenset()
    assert [s for s in LinkState if s.available] == [LinkState.UP]


def test_a_transition_outside_the_table_is_refused_and_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    machine = LinkStateMachine()
    assert machine.move(LinkState.UP)
    with caplog.at_level(logging.WARNING, logger="broker.cluster.state"):
        assert not machine.move(LinkState.CONNECTING, "skipping degraded")
    assert machine.state is LinkState.UP
    assert "up -> connecting refused" in caplog.text
    assert machine.move(LinkState.DEAF, "probe lost")
    assert machine.text == "deaf: probe lost"
    assert machine.move(LinkState.CONNECTING) and machine.move(LinkState.DOWN)
    assert not machine.move(LinkState.UP)


def test_a_full_outbox_counts_its_drops_and_logs_the_first(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = Outbox()
    replies: list[object] = []
    with caplog.at_level(logging.WARNING, logger="broker.cluster.outbox"):
        for i in range(MAX_OUTBOX + 3):
            outbox.push(("PUBLISH", b"c", b"%d" % i), replies.append)
    assert outbox.dropped == 3
    assert len(replies) == 3  # the dropped commands' replies got LinkLost
    assert [r.getMessage() for r in caplog.records].count(
        f"cluster: outbox full ({MAX_OUTBOX} commands): 1 dropped so far"
    ) == 1
    assert len(caplog.records) == 1


def test_reconnection_uses_the_shared_jittered_backoff() -> None:
    backend = RedisCluster("redis://127.0.0.1:1/0", "b", Router((), AsyncioScheduler()), TIMING)
    assert backend.backoff.initial == 0.1 and backend.backoff.maximum == TIMING.backoff_max
    assert backend.backoff.jitter > 0
    assert backend.metrics() == {
        "links": {"redis": False, "pubsub": False},
        "redis_rtt": None,
        "state": "connecting",
        "outbox_dropped": 0,
        "peer_links": 0,
        "peer_failures": 0,
        "peer_fallbacks": 0,
    }


async def test_a_channel_watched_again_before_its_unsubscribe_is_confirmed_stays_subscribed(
    own_redis: RedisProcess,
) -> None:
    """The last local subscriber leaves and a new one comes at once: still subscribed."""
    link = PubSubLink("relink-a", TIMING)
    client = Redis.from_url(own_redis.url)
    pubsub = client.pubsub()
    got: asyncio.Queue[tuple[bytes, bytes]] = asyncio.Queue()
    await pubsub.subscribe(b"unused")  # redis-py reads a pub/sub connection once subscribed
    lane = Lane(pubsub, b"wamp:probe:relink-a")
    tasks = [
        asyncio.create_task(link.read(lane, lambda *message: got.put_nowait(message))),
        asyncio.create_task(link.subscriber(lane)),
    ]
    target = (False, b"wamp:ev:test")
    try:
        link.relink([lane], ())
        first = asyncio.Event()
        link.watch(target, first.set)
        await asyncio.wait_for(first.wait(), 5)
        link.unwatch(target)  # the UNSUBSCRIBE is queued, not confirmed yet …
        again = asyncio.Event()
        link.watch(target, again.set)  # … when the next local subscriber comes
        await asyncio.wait_for(again.wait(), 5)
        for n in range(20):  # whatever Redis applied meanwhile, the channel stays live
            await client.publish(target[1], b"%d" % n)
        assert await asyncio.wait_for(got.get(), 5) == (target[1], b"0")
        # the same before even the SUBSCRIBE is confirmed: subscribe, leave, subscribe
        other = (False, b"wamp:ev:test2")
        link.watch(other, lambda: None)
        link.unwatch(other)
        third = asyncio.Event()
        link.watch(other, third.set)
        await asyncio.wait_for(third.wait(), 5)
        await client.publish(other[1], b"live")
        async with asyncio.timeout(5):
            while (message := await got.get())[0] != other[1]:
                pass
        assert message == (other[1], b"live")
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await pubsub.aclose()  # type: ignore[no-untyped-call]
        await client.aclose()
