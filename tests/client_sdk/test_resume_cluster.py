"""Client resume across cluster nodes: the subscriber comes back on another node.

Two real broker nodes on a real redis-server, both keeping history for
``com.resume.``. The subscriber's socket is cut and its ``url`` switched to the
other node before it reconnects, as a load balancer would route it.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import Iterator

import pytest

from client_sdk import Client, Event, Gap, Session, connect
from tests.client_sdk.test_resume import ACK, FAST, Offline, Received, cut, publish_range
from tests.support.processes import (
    CLUSTER_TIMING,
    BrokerProcess,
    nodes_on_one_redis,
)

if shutil.which("redis-server") is None:  # pragma: no cover - the test command installs it
    pytest.skip("redis-server is not installed", allow_module_level=True)

CONFIG = (
    CLUSTER_TIMING
    + """
[[realm]]
name = "realm1"

[[realm.history]]
uri = "com.resume."
match = "prefix"
limit = 1000
"""
)


@pytest.fixture(scope="module")
def nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BrokerProcess]]:
    """Two nodes sharing one Redis, keeping history for ``com.resume.``."""
    path = tmp_path_factory.mktemp("resume-cluster") / "broker.toml"
    path.write_text(CONFIG, encoding="utf-8")
    with nodes_on_one_redis(path, ("r0", "r1")) as nodes:
        yield nodes


async def test_subscriber_resumes_on_the_node_of_the_publisher(
    nodes: list[BrokerProcess],
) -> None:
    first, second = nodes
    topic = "com.resume.cluster"
    received, gaps = Received(), list[Gap]()
    client = Client(first.url, "realm1", backoff=FAST)
    offline = Offline(client)
    async with client, connect(second.url, "realm1") as publisher:
        sub = await client.subscribe(topic, received, resume=True, on_gap=gaps.append)
        await publish_range(publisher, topic, range(0, 5))
        await received.until(5)

        cut(client.session)
        await asyncio.wait_for(offline.left.wait(), 15)
        client.url = second.url  # the load balancer sends it to the other node
        missed = await publish_range(publisher, topic, range(5, 15))
        await offline.release()
        assert await asyncio.wait_for(sub.recovered(), 15) is True
        await publish_range(publisher, topic, range(15, 20))
        await received.until(20)

    assert received.numbers == list(range(20))
    assert [e.publication for e in received.events if e.replayed] == missed
    assert gaps == []


async def test_subscriber_moved_to_another_node_is_complete_or_told(
    nodes: list[BrokerProcess],
) -> None:
    """Whatever the other node kept: every event once, in order, or a gap reported."""
    first, second = nodes
    topic = "com.resume.cluster.moved"
    received, gaps = Received(), list[Gap]()
    client = Client(first.url, "realm1", backoff=FAST)
    offline = Offline(client)
    async with client, connect(first.url, "realm1") as publisher:
        sub = await client.subscribe(topic, received, resume=True, on_gap=gaps.append)
        await publish_range(publisher, topic, range(0, 5))
        await received.until(5)

        cut(client.session)
        await asyncio.wait_for(offline.left.wait(), 15)
        client.url = second.url
        await publish_range(publisher, topic, range(5, 15))
        await offline.release()
        complete = await asyncio.wait_for(sub.recovered(), 15)
        await publish_range(publisher, topic, range(15, 20))
        await received.until(sum(1 for n in received.numbers if n < 15) + 5)

    numbers = received.numbers
    assert numbers == sorted(set(numbers))  # in order, no duplicates
    assert numbers[:5] == list(range(5)) and numbers[-5:] == list(range(15, 20))
    if complete:
        assert numbers == list(range(20)) and gaps == []
    else:
        assert gaps and sub.complete is False  # told, not silent


async def test_subscriber_cut_repeatedly_under_load_gets_every_acknowledged_event_once(
    nodes: list[BrokerProcess],
) -> None:
    """Publishers on both nodes, the resuming subscriber's connection cut 8 times.

    Its node hands its own publications at once and those of the other node a moment
    later; its channel subscription is dropped and made again on every cut. Every
    acknowledged event arrives once, in order per publisher, with no gap to report.
    """
    first, second = nodes
    topic = "com.resume.cluster.load"
    got: list[tuple[int, int]] = []
    more = asyncio.Event()

    def on_event(event: Event) -> None:
        got.append((event.args[0], event.args[1]))
        more.set()

    gaps: list[Gap] = []
    client = Client(second.url, "realm1", backoff=FAST)
    acked: dict[int, set[int]] = {0: set(), 1: set()}
    stop = asyncio.Event()

    async def publish(session: Session, me: int) -> None:
        n = 0
        while not stop.is_set() and n < 20_000:  # bursts of 5 in flight
            burst = [session.publish(topic, me, n + k, options=ACK) for k in range(5)]
            for k, outcome in enumerate(await asyncio.gather(*burst, return_exceptions=True)):
                if not isinstance(outcome, BaseException):
                    acked[me].add(n + k)
            n += 5

    async with client, connect(first.url, "realm1") as p0, connect(second.url, "realm1") as p1:
        sub = await client.subscribe(topic, on_event, resume=True, on_gap=gaps.append)
        tasks = [asyncio.create_task(publish(p, me)) for me, p in enumerate((p0, p1))]
        try:
            for _ in range(8):
                joins, target = client.joins, len(got) + 100
                async with asyncio.timeout(15):
                    while len(got) < target:  # traffic flows between two cuts
                        more.clear()
                        await more.wait()
                    cut(client.session)
                    while client.joins == joins:
                        more.clear()
                        await more.wait()
                    await sub.recovered()
        finally:
            stop.set()
            await asyncio.gather(*tasks)
        last = {(me, max(ns)) for me, ns in acked.items()}
        async with asyncio.timeout(15):
            while not last <= set(got):
                more.clear()
                await more.wait()

    missing = sorted((me, n) for me, ns in acked.items() for n in ns if (me, n) not in set(got))
    assert missing == [] and gaps == []
    assert len(got) == len(set(got))
    for me in (0, 1):
        mine = [n for p, n in got if p == me]
        assert mine == sorted(mine)
