"""Router-side gap repair on real nodes: a node's link to Redis is cut, Redis restarts.

Subscribers are plain SDK sessions (no resume): whatever they get after an outage is
the node's doing. Publishers publish numbered events with acknowledge; every event
answered PUBLISHED must reach every subscriber exactly once, in order, or the
subscriber's node must publish ``wamp.subscription.on_history_gap``.
"""

from __future__ import annotations

import asyncio
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import client_sdk
from broker.cluster.repair import HISTORY_GAP
from client_sdk import ApplicationError, Event, PublishOptions
from tests.support.processes import BrokerProcess, RedisProcess, kill_connections, start_redis

from .conftest import TIMING, start_node
from .test_events import Connect

CONFIG = """
[[realm]]
name = "realm1"

[[realm.history]]
uri = "com.gap."
match = "prefix"
limit = 100000
"""

ACK = PublishOptions(acknowledge=True)


def _config(tmp: Path) -> Path:
    path = tmp / "broker.toml"
    path.write_text(TIMING + CONFIG, encoding="utf-8")
    return path


class Tally:
    """What one subscriber received: (publisher, n) pairs in arrival order, and gaps."""

    def __init__(self) -> None:
        self.got: list[tuple[int, int]] = []
        self.gaps: list[tuple[list[Any], dict[str, Any]]] = []
        self.changed = asyncio.Event()

    def event(self, event: Event) -> None:
        self.got.append((event.args[0], event.args[1]))
        self.changed.set()

    def gap(self, event: Event) -> None:
        self.gaps.append((event.args, event.kwargs))
        self.changed.set()

    async def until(self, check: Callable[[], object], timeout: float) -> None:
        """Wait (at most ``timeout`` s) until ``check()`` holds, re-checking on each event."""
        async with asyncio.timeout(timeout):
            while not check():
                self.changed.clear()
                await self.changed.wait()

    def count(self, acked: dict[int, set[int]]) -> tuple[int, int, int]:
        """(duplicates, out of order, acknowledged events missing)."""
        dup = len(self.got) - len(set(self.got))
        last: dict[int, int] = {}
        disorder = 0
        for pub, n in self.got:
            if n < last.get(pub, -1):
                disorder += 1
            last[pub] = max(n, last.get(pub, -1))
        seen = set(self.got)
        missing = sum(1 for pub, ns in acked.items() for n in ns if (pub, n) not in seen)
        return dup, disorder, missing


async def subscribe(session: client_sdk.Session, topic: str, tally: Tally) -> None:
    await session.subscribe(topic, tally.event)
    await session.subscribe(HISTORY_GAP, tally.gap)


def scrape(node: BrokerProcess) -> str:
    with urllib.request.urlopen(node.http_base + "/metrics", timeout=5) as response:
        return str(response.read().decode())


@pytest.fixture
def pair(redis_server: RedisProcess, tmp_path: Path) -> Iterator[list[BrokerProcess]]:
    started = [start_node(redis_server, _config(tmp_path), f"g{i}") for i in range(2)]
    yield started
    for node in started:
        node.stop()


async def test_events_missed_while_a_nodes_link_was_cut_are_delivered_once_in_order(
    pair: list[BrokerProcess], redis_server: RedisProcess, connect: Connect
) -> None:
    origin, cut = pair
    tally = Tally()
    await subscribe(await connect(cut.url), "com.gap.cut", tally)
    publisher = await connect(origin.url)
    acked: dict[int, set[int]] = {0: set()}
    killed = 0
    for n in range(300):
        await publisher.publish("com.gap.cut", 0, n, options=ACK)
        acked[0].add(n)
        if n % 20 == 10:  # its link dies (unless still reconnecting); the publisher goes on
            killed += kill_connections(redis_server.url, cut.proc.pid) > 0
    assert killed >= 2
    try:
        await tally.until(lambda: len(tally.got) >= 300, 15)
    except TimeoutError:
        missing = sorted(set(range(300)) - {n for _, n in tally.got})
        raise AssertionError(f"missing {missing}; node log:\n{cut.output[-6000:]}") from None
    assert tally.count(acked) == (0, 0, 0)
    assert [n for _, n in tally.got] == list(range(300))
    assert tally.gaps == []


async def test_an_outage_before_the_first_event_is_repaired_from_the_subscription_start(
    pair: list[BrokerProcess], redis_server: RedisProcess, connect: Connect
) -> None:
    origin, stopped = pair
    tally = Tally()
    await subscribe(await connect(stopped.url), "com.gap.fresh", tally)
    publisher = await connect(origin.url)
    await publisher.publish("com.gap.other", 0, -1, options=ACK)  # a round trip: start noted
    stopped.signal(signal.SIGSTOP)  # nothing it could read before the cut
    try:
        assert kill_connections(redis_server.url, stopped.proc.pid) > 0
        for n in range(20):
            await publisher.publish("com.gap.fresh", 0, n, options=ACK)
    finally:
        stopped.signal(signal.SIGCONT)
    await tally.until(lambda: len(tally.got) >= 20, 15)
    assert [n for _, n in tally.got] == list(range(20)) and tally.gaps == []


async def _publish_until_accepted(session: client_sdk.Session, topic: str, n: int) -> None:
    deadline = time.monotonic() + 15
    while True:
        try:
            await session.publish(topic, 0, n, options=ACK)
            return
        except ApplicationError as exc:
            assert exc.uri == "wamp.error.unavailable"
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)


async def test_redis_restarted_without_its_data_is_a_reported_gap(
    tmp_path: Path, connect: Connect
) -> None:
    server = start_redis()
    nodes: list[BrokerProcess] = []
    try:
        nodes = [start_node(server, _config(tmp_path), f"l{i}") for i in range(2)]
        origin, other = nodes
        tally = Tally()
        await subscribe(await connect(other.url), "com.gap.lost", tally)
        publisher = await connect(origin.url)
        for n in range(3):
            await publisher.publish("com.gap.lost", 0, n, options=ACK)
        await tally.until(lambda: len(tally.got) == 3, 5)
        port = server.port
        server.kill()
        server = start_redis(port)  # empty: the topic's history and epoch are gone
        await _publish_until_accepted(publisher, "com.gap.lost", 3)
        await tally.until(lambda: tally.gaps, 15)
        (args, kwargs) = tally.gaps[0]
        assert kwargs["topic"] == "com.gap.lost" and kwargs["reason"] == "lost"
        assert kwargs["missed"] is None and type(args[0]) is int
        await tally.until(lambda: len(tally.got) == 4, 5)
        assert [n for _, n in tally.got] == [0, 1, 2, 3]
        text = await asyncio.to_thread(scrape, other)
        assert 'wamp_history_gaps_total{realm="realm1",reason="lost"} 1.0' in text
    finally:
        for node in nodes:  # off the loop: a node stopping says GOODBYE to open sessions
            await asyncio.to_thread(node.stop)
        server.kill()
