"""Broker nodes on a real Redis Cluster (6 servers: 3 masters, each with a replica).

Events whose channels live on different shards cross nodes through sharded pub/sub
(each event reaches only the shard owning its channel); calls cross nodes through the
control slot; a killed shard master is replaced by its replica and traffic resumes.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis
from redis.crc import key_slot

import client_sdk
from broker.cluster import keys
from client_sdk import ApplicationError, Event, PublishOptions
from tests.support.processes import BrokerProcess, broker_nodes
from tests.support.redis_cluster import RedisClusterSet, start_redis_cluster

from .conftest import HISTORY, TIMING, call_until

REALM = "realm1"


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterSet]:
    found = start_redis_cluster(tmp_path_factory.mktemp("rcluster"))
    yield found
    found.stop()


@pytest.fixture(scope="module")
def pair(
    deployment: RedisClusterSet, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[BrokerProcess]]:
    config: Path = tmp_path_factory.mktemp("rcluster-config") / "broker.toml"
    config.write_text(TIMING + HISTORY, encoding="utf-8")
    with broker_nodes(deployment.url, config, ("ra", "rb")) as started:
        yield started


def topics_per_master(deployment: RedisClusterSet, prefix: str) -> dict[int, str]:
    """One topic per master port, each topic's event channel in that master's slots."""
    found: dict[int, str] = {}
    masters = deployment.masters()
    for n in range(10_000):
        topic = f"{prefix}.t{n}"
        slot = key_slot(keys.event_channel(REALM, topic))
        owner = next(p for p, ranges in masters.items() if any(a <= slot <= b for a, b in ranges))
        found.setdefault(owner, topic)
        if len(found) == len(masters):
            return found
    raise AssertionError("no topic for every master")


def spublish_calls(port: int) -> int:
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        stats = client.info("commandstats")
    finally:
        client.close()
    return int(stats.get("cmdstat_spublish", {}).get("calls", 0))


@contextlib.asynccontextmanager
async def _sub_pub(
    pair: list[BrokerProcess],
) -> AsyncIterator[tuple[client_sdk.Session, client_sdk.Session]]:
    """A subscriber session on the second node and a publisher on the first; left after."""
    sub = await client_sdk.connect(pair[1].url, REALM)
    pub = await client_sdk.connect(pair[0].url, REALM)
    try:
        yield sub, pub
    finally:
        await sub.leave()
        await pub.leave()


async def test_events_across_shards_reach_only_their_shard_and_calls_cross_nodes(
    deployment: RedisClusterSet, pair: list[BrokerProcess]
) -> None:
    topics = topics_per_master(deployment, "rc.shard")
    async with _sub_pub(pair) as (sub, pub):
        got: asyncio.Queue[Event] = asyncio.Queue()
        for topic in topics.values():
            await sub.subscribe(topic, got.put_nowait)
        before = {port: spublish_calls(port) for port in topics}
        count = 200
        loud_port, loud = next(iter(topics.items()))
        for i in range(count):
            await pub.publish(loud, i)
        for topic in topics.values():
            await pub.publish(topic, "last", options=PublishOptions(acknowledge=True))
        seen: dict[str, list[object]] = {topic: [] for topic in topics.values()}
        for _ in range(count + len(topics)):
            event = await asyncio.wait_for(got.get(), 10)
            seen[event.topic].append(event.args[0])
        assert seen[loud] == [*range(count), "last"]
        assert all(seen[t] == ["last"] for t in topics.values() if t != loud)
        grew = {port: spublish_calls(port) - before[port] for port in topics}
        # the loud topic's events went to its shard only (others: probes, control, 1 event)
        assert grew[loud_port] >= count
        assert all(grew[port] < count // 2 for port in grew if port != loud_port), grew

        await pub.register("rc.shard.echo", lambda x: x)
        assert (await call_until(sub, "rc.shard.echo", 41)).args == [41]


async def test_pattern_subscriptions_get_every_matching_event_once_on_every_shard(
    deployment: RedisClusterSet, pair: list[BrokerProcess]
) -> None:
    spread = list(topics_per_master(deployment, "rc.pat").values())
    async with _sub_pub(pair) as (sub, pub):
        got: dict[str, asyncio.Queue[Event]] = {}
        wanted = [
            ("rc.pat", "prefix"),
            ("rc..w", "wildcard"),
            (spread[0], "exact"),  # also reached by the prefix: one copy each
            ("hist.pat", "prefix"),  # a topic with history: the script's copy
        ]
        for uri, match in wanted:
            got[uri] = asyncio.Queue()
            await sub.subscribe(uri, got[uri].put_nowait, match=match)
        ack = PublishOptions(acknowledge=True)
        published = [*spread, "rc.x.w", "hist.pat.a", "rc.nobody"]
        for topic in published:
            for n in range(3):
                await pub.publish(topic, n, options=ack)
        await pub.publish("rc.pat.end", "end", options=ack)
        await pub.publish("hist.pat.end", "end", options=ack)
        await pub.publish("rc.w.w", "end", options=ack)

        async def drain(uri: str) -> list[tuple[str, object]]:
            seen = []
            while not seen or seen[-1][1] != "end":
                event = await asyncio.wait_for(got[uri].get(), 10)
                seen.append((event.topic, event.args[0]))
            return seen

        assert await drain("rc.pat") == [
            *((t, n) for t in spread for n in range(3)),
            ("rc.pat.end", "end"),
        ]
        assert await drain("rc..w") == [*(("rc.x.w", n) for n in range(3)), ("rc.w.w", "end")]
        assert await drain("hist.pat") == [
            *(("hist.pat.a", n) for n in range(3)),
            ("hist.pat.end", "end"),
        ]
        assert [(await got[spread[0]].get()).args[0] for _ in range(3)] == [0, 1, 2]
        assert all(q.empty() for q in got.values())


async def test_subscribing_and_unsubscribing_in_quick_turns_keeps_the_link(
    pair: list[BrokerProcess],
) -> None:
    mark = len(pair[1].lines)
    async with _sub_pub(pair) as (sub, pub):
        got: asyncio.Queue[Event] = asyncio.Queue()
        for _ in range(20):  # SSUBSCRIBE/SUNSUBSCRIBE of one channel, back to back
            subscription = await sub.subscribe("rc.turns", got.put_nowait)
            await subscription.unsubscribe()
        await sub.subscribe("rc.turns", got.put_nowait)
        await pub.publish("rc.turns", "x", options=PublishOptions(acknowledge=True))
        assert (await asyncio.wait_for(got.get(), 5)).args == ["x"]
        assert not [line for line in pair[1].lines[mark:] if "link to Redis lost" in line]


async def _resumed(
    pub: client_sdk.Session,
    caller: client_sdk.Session,
    got: asyncio.Queue[Event],
    topics: list[str],
    procedure: str,
) -> None:
    """Publish (acknowledged) and call until both work again; events of every topic arrive."""
    pending = set(topics)
    marker = 0
    while pending:
        marker += 1
        for topic in sorted(pending):
            try:
                await pub.publish(topic, marker, options=PublishOptions(acknowledge=True))
            except ApplicationError:
                pass  # wamp.error.unavailable while the link reconnects
        try:
            while True:
                event = await asyncio.wait_for(got.get(), 0.2)
                pending.discard(event.topic)
        except TimeoutError:
            pass
    while True:
        try:
            assert (await caller.call(procedure, "x")).args == ["x"]
            return
        except ApplicationError as exc:
            if exc.uri not in ("wamp.error.unavailable", "wamp.error.no_such_procedure"):
                raise
        await asyncio.sleep(0.1)  # between round trips while the link reconnects


async def _flowing(
    pub: client_sdk.Session, sub: client_sdk.Session, topics: list[str], echo: str
) -> asyncio.Queue[Event]:
    """``sub`` subscribes to ``topics``, ``pub`` registers ``echo``; both work across nodes."""
    got: asyncio.Queue[Event] = asyncio.Queue()
    for topic in topics:
        await sub.subscribe(topic, got.put_nowait)
    await pub.register(echo, lambda x: x)
    await asyncio.wait_for(_resumed(pub, sub, got, topics, echo), 10)
    return got


async def _wait_for(check: Callable[[], bool], what: str, timeout: float = 30.0) -> float:
    """Poll the deployment until ``check()``; ``time.monotonic()`` when it was first true."""
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not seen within {timeout} s")
        await asyncio.sleep(0.05)  # polling external processes, not synchronising test logic
    return time.monotonic()


async def test_a_slot_migration_and_a_manual_failover_are_survived(
    deployment: RedisClusterSet, pair: list[BrokerProcess]
) -> None:
    by_master = topics_per_master(deployment, "rc.move")
    ports, topics = list(by_master), list(by_master.values())
    async with _sub_pub(pair) as (sub, pub):
        got = await _flowing(pub, sub, topics, "rc.move.echo")
        # the slot of the first topic's channel moves to the second master: Redis
        # unsubscribes the shard channel there, the subscriber's node reconnects
        slot = key_slot(keys.event_channel(REALM, topics[0]))
        assert slot != key_slot(keys.CONTROL)
        mark = len(pair[1].lines)
        deployment.move_empty_slot(slot, ports[1])
        await _wait_for(lambda: deployment.master_of_slot(slot) == ports[1], "the slot moved")
        await asyncio.wait_for(_resumed(pub, sub, got, topics, "rc.move.echo"), 30)
        # the third master hands over to its replica (both stay up)
        pair[1].wait_for_output(r"Redis moved .*rc\.move\.t\d+.* to another shard", start=mark)
        mark = len(pair[1].lines)
        new = deployment.manual_failover(ports[2])
        await _wait_for(lambda: new in deployment.masters(), "the replica promoted")
        await asyncio.wait_for(_resumed(pub, sub, got, topics, "rc.move.echo"), 30)
        pair[1].wait_for_output("link to Redis lost", start=mark)  # it did notice


async def test_a_killed_shard_master_is_replaced_by_its_replica_and_traffic_resumes(
    deployment: RedisClusterSet, pair: list[BrokerProcess]
) -> None:
    topics = list(topics_per_master(deployment, "rc.fail").values())
    async with _sub_pub(pair) as (sub, pub):
        got = await _flowing(pub, sub, topics, "rc.fail.echo")
        # the master of the control slot: control, inboxes and node state all move
        victim = deployment.master_of_slot(key_slot(keys.CONTROL))
        killed = time.monotonic()
        deployment.server(victim).kill()
        promoted = deployment.wait_ok(timeout=30, without=victim)
        await asyncio.wait_for(_resumed(pub, sub, got, topics, "rc.fail.echo"), 30)
        resumed = time.monotonic()
        print(
            f"\nfailover: replica promoted {promoted - killed:.2f} s after the kill, "
            f"events and calls across nodes again after {resumed - killed:.2f} s"
        )
        assert victim not in deployment.masters()
