"""A hung Redis (SIGSTOP, not dead): no acknowledged publish may vanish.

Three nodes on a real redis-server, a subscriber and a publisher on every node. Each
publisher sends numbered events with ``acknowledge`` at a steady rate; Redis is stopped
for 3 s in the middle and then continued. Every event acknowledged with PUBLISHED must
reach the subscribers of the two other nodes; the rest must have been answered
``wamp.error.unavailable``. ``/readyz`` must say 503 while Redis is stopped.

The cluster timings are the defaults (heartbeat 1 s, probes every 2 s with a 2 s
timeout) except ``command_timeout`` (1 s, also the default, given explicitly), so only
the command timeout can notice the hang within the 1.5 s asked for. Publishing stops
when Redis is continued: an event published while a *receiving* node is still
reconnecting is the documented receiver-side gap (protocol_spec/cluster.md,
"Non-guarantees"), not what this test is about.
"""

from __future__ import annotations

import asyncio
import itertools
import signal
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

import client_sdk
from client_sdk import ApplicationError, Event, PublishOptions
from tests.support.processes import BrokerProcess, RedisProcess, start_redis

from .conftest import http_status, start_node

Connect = Callable[..., Awaitable[client_sdk.Session]]

TOPIC = "hung.events"
RATE = 100.0
"""Publishes per second per publisher."""
BEFORE, STOPPED = 1.0, 3.0
"""Seconds of publishing before SIGSTOP, and how long Redis stays stopped."""
READY_WITHIN = 1.5
"""Seconds after SIGSTOP by which every node's /readyz must say 503 (asked: ~1.5 s)."""
SLACK = 0.5
"""Allowance for a loaded test machine (two cores, many processes) on READY_WITHIN."""
CONFIG = """
[cluster]
command_timeout = 1.0
"""


@pytest.fixture
def trio(tmp_path: Path) -> Iterator[tuple[RedisProcess, list[BrokerProcess]]]:
    """A Redis of its own (this test stops it) and three nodes with default timings."""
    redis = start_redis()
    config = tmp_path / "broker.toml"
    config.write_text(CONFIG, encoding="utf-8")
    nodes: list[BrokerProcess] = []
    try:
        nodes.extend(start_node(redis, config, f"h{i}") for i in range(3))
        yield redis, nodes
    finally:
        redis.proc.send_signal(signal.SIGCONT)  # never leave it stopped
        for node in nodes:
            node.stop()
        redis.kill()


@dataclass
class Outcome:
    """What one publisher was told, by sequence number."""

    acked: set[int] = field(default_factory=set)
    refused: set[int] = field(default_factory=set)
    other: list[str] = field(default_factory=list)


class Readiness(threading.Thread):
    """Polls every node's /readyz (HTTP, blocking) until stopped; keeps (time, statuses)."""

    def __init__(self, nodes: list[BrokerProcess]) -> None:
        super().__init__(daemon=True)
        self.bases = [node.http_base for node in nodes]
        self.samples: list[tuple[float, list[int]]] = []
        self.halt = threading.Event()

    def run(self) -> None:
        while not self.halt.is_set():
            at = time.monotonic()
            self.samples.append((at, [http_status(base, "/readyz") for base in self.bases]))
            self.halt.wait(0.05)  # the poll period, not synchronisation

    def first_503(self, node: int, after: float) -> float | None:
        """Seconds from ``after`` until node ``node`` first answered 503."""
        for at, statuses in self.samples:
            if at >= after and statuses[node] == 503:
                return at - after
        return None


async def _publish(pub: client_sdk.Session, seq: int, index: int, outcome: Outcome) -> None:
    try:
        await asyncio.wait_for(
            pub.publish(TOPIC, index, seq, options=PublishOptions(acknowledge=True)), 10
        )
    except ApplicationError as exc:
        if exc.uri == "wamp.error.unavailable":
            outcome.refused.add(seq)
        else:
            outcome.other.append(f"{seq}: {exc.uri}")
    else:
        outcome.acked.add(seq)


async def _publish_steadily(
    pub: client_sdk.Session, index: int, outcome: Outcome, stop: asyncio.Event
) -> list[asyncio.Task[None]]:
    """Publish at ``RATE`` on a fixed schedule (not waiting for answers) until ``stop``."""
    tasks: list[asyncio.Task[None]] = []
    start = time.monotonic()
    seq = 0
    limit = int((BEFORE + STOPPED + 2.0) * RATE)  # a bound even if ``stop`` never came
    while not stop.is_set() and seq < limit:
        tasks.append(asyncio.create_task(_publish(pub, seq, index, outcome)))
        seq += 1
        delay = start + seq / RATE - time.monotonic()
        if delay > 0:
            try:
                await asyncio.wait_for(stop.wait(), delay)
            except TimeoutError:
                pass
    return tasks


def _count(received: list[int], acked: set[int]) -> tuple[int, int, int]:
    """(acknowledged but missing, duplicated, out of order) for one subscriber/publisher."""
    lost = len(acked - set(received))
    duplicated = len(received) - len(set(received))
    out_of_order = sum(1 for a, b in itertools.pairwise(received) if b <= a)
    return lost, duplicated, out_of_order


async def test_acknowledged_publishes_survive_a_hung_redis_and_readyz_says_503(
    trio: tuple[RedisProcess, list[BrokerProcess]], connect: Connect
) -> None:
    redis, nodes = trio
    # received[subscriber node][publisher index] = sequence numbers in arrival order
    received: list[list[list[int]]] = [[[] for _ in nodes] for _ in nodes]
    arrived = asyncio.Event()
    for at, node in enumerate(nodes):
        sub = await connect(node.url)

        def on_event(event: Event, at: int = at) -> None:
            index, seq = event.args
            received[at][index].append(seq)
            arrived.set()

        await sub.subscribe(TOPIC, on_event)
    publishers = [await connect(node.url) for node in nodes]
    outcomes = [Outcome() for _ in nodes]
    stop = asyncio.Event()
    readiness = Readiness(nodes)
    readiness.start()
    try:
        publishing = [
            asyncio.create_task(_publish_steadily(pub, i, outcomes[i], stop))
            for i, pub in enumerate(publishers)
        ]
        await asyncio.sleep(BEFORE)  # publishing runs meanwhile (a schedule, not a sync)
        redis.proc.send_signal(signal.SIGSTOP)
        stopped_at = time.monotonic()
        await asyncio.sleep(STOPPED)
        redis.proc.send_signal(signal.SIGCONT)
        continued_at = time.monotonic()
        stop.set()
        answers = [task for tasks in await asyncio.gather(*publishing) for task in tasks]
        await asyncio.wait_for(asyncio.gather(*answers), 15)  # every publish answered
        await _all_ready(readiness, continued_at, timeout=15.0)
    finally:
        readiness.halt.set()
        readiness.join(5)

    # every node said 503 soon after the stop, and before Redis came back
    delays = [readiness.first_503(i, stopped_at) for i in range(len(nodes))]
    print(f"\n/readyz 503 after SIGSTOP: {delays} s (asked: within {READY_WITHIN} s)")
    assert all(d is not None and d < continued_at - stopped_at for d in delays), delays
    assert max(d for d in delays if d is not None) <= READY_WITHIN + SLACK, delays

    # wait (bounded) until every acknowledged event reached every remote subscriber
    def missing() -> int:
        return sum(
            len(outcomes[p].acked - set(received[s][p]))
            for s in range(len(nodes))
            for p in range(len(nodes))
            if s != p
        )

    deadline = time.monotonic() + 10.0
    while missing() and time.monotonic() < deadline:
        arrived.clear()
        try:
            await asyncio.wait_for(arrived.wait(), max(0.0, deadline - time.monotonic()))
        except TimeoutError:
            break
    totals = {"lost": 0, "duplicated": 0, "out_of_order": 0}
    for p, outcome in enumerate(outcomes):
        line = [f"publisher {p}: {len(outcome.acked)} acked, {len(outcome.refused)} unavailable"]
        for s in range(len(nodes)):
            if s == p:
                continue
            lost, duplicated, out_of_order = _count(received[s][p], outcome.acked)
            late = len(outcome.refused & set(received[s][p]))
            totals["lost"] += lost
            totals["duplicated"] += duplicated
            totals["out_of_order"] += out_of_order
            line.append(
                f"at node {s}: lost {lost}, duplicated {duplicated}, "
                f"out of order {out_of_order}, unavailable yet delivered {late}"
            )
        print("; ".join(line))
        assert not outcome.other, outcome.other
        assert outcome.refused, "the stop should have made some publishes unavailable"
        assert outcome.acked
    assert totals == {"lost": 0, "duplicated": 0, "out_of_order": 0}, totals


async def _all_ready(readiness: Readiness, since: float, timeout: float) -> None:
    """Wait until a /readyz sample taken after ``since`` shows every node at 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(at > since and set(st) == {200} for at, st in list(readiness.samples)):
            return
        await asyncio.sleep(0.05)  # the poller thread samples every 50 ms
    raise AssertionError(f"the nodes were not ready again within {timeout} s")
