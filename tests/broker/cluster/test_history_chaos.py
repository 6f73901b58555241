"""A short chaos run: Redis SIGKILLed mid-run and restarted from its AOF, nodes repair.

Two real nodes, two plain subscribers (no resume) on each, one publisher per node
publishing numbered events with acknowledge at a steady rate. Redis is killed and
restarted from its append-only file while they run. At the end, per subscriber: 0
duplicates, 0 out of order, 0 acknowledged events missing (or the gap was reported).
Bounded: about 6 s of publishing, 15 s to converge.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import client_sdk
from client_sdk import ApplicationError
from tests.support.processes import BrokerProcess, start_redis

from .conftest import start_node
from .test_history_repair import ACK, Tally, _config, subscribe

TOPIC = "com.gap.chaos"
RUN = 6.0
INTERVAL = 0.02
KILL_AFTER = 200


async def _publisher(
    session: client_sdk.Session, me: int, acked: set[int], refused: set[int]
) -> None:
    started = time.monotonic()
    n = 0
    while time.monotonic() - started < RUN and n < int(RUN / INTERVAL):
        try:
            await session.publish(TOPIC, me, n, options=ACK)
            acked.add(n)
        except ApplicationError as exc:
            assert exc.uri == "wamp.error.unavailable", exc
            refused.add(n)
        n += 1
        await asyncio.sleep(INTERVAL)  # the steady rate


async def test_redis_killed_and_restarted_from_its_aof(tmp_path: Path) -> None:
    data = tmp_path / "redis"
    data.mkdir()
    persist = ["--appendonly", "yes", "--appendfsync", "always", "--dir", str(data)]
    server = start_redis(extra=persist)
    nodes: list[BrokerProcess] = []
    sessions: list[client_sdk.Session] = []
    try:
        nodes = [start_node(server, _config(tmp_path), f"x{i}") for i in range(2)]
        tallies = [Tally() for _ in range(4)]
        for index, tally in enumerate(tallies):
            session = await client_sdk.connect(nodes[index % 2].url, "realm1")
            sessions.append(session)
            await subscribe(session, TOPIC, tally)
        publishers = [await client_sdk.connect(node.url, "realm1") for node in nodes]
        sessions += publishers
        acked: dict[int, set[int]] = {0: set(), 1: set()}
        refused: dict[int, set[int]] = {0: set(), 1: set()}
        runs = [
            asyncio.create_task(_publisher(session, me, acked[me], refused[me]))
            for me, session in enumerate(publishers)
        ]
        first = tallies[0]  # mid-run: once the first subscriber has seen a third of it
        await first.until(lambda: len(first.got) >= KILL_AFTER, 10)
        port = server.port
        server.kill()
        server = start_redis(port, persist)  # from its AOF: epochs and streams survive
        await asyncio.gather(*runs)

        total = sum(len(ns) for ns in acked.values())
        for tally in tallies:
            await tally.until(lambda t=tally: t.count(acked)[2] == 0 or t.gaps, 15)
        print(f"\npublished: acked {total}, refused {sum(len(r) for r in refused.values())}")
        for index, tally in enumerate(tallies):
            dup, disorder, missing = tally.count(acked)
            print(
                f"subscriber {index} (node {index % 2}): received {len(tally.got)}, "
                f"duplicates {dup}, out of order {disorder}, acked missing {missing}, "
                f"gaps reported {len(tally.gaps)}"
            )
            assert (dup, disorder) == (0, 0)
            assert missing == 0 or tally.gaps
        # the outage hit both nodes while the publishers ran; it can be shorter than a
        # publisher's 20 ms step, so one publisher may not have been refused
        for node in nodes:
            assert "link to Redis lost" in node.output, f"{node.url}: no outage seen"
        assert any(refused.values()), "Redis was down during the run: some were refused"
        assert total > 100
    finally:
        for session in sessions:
            if session.is_open:
                await session.leave()
        for node in nodes:
            node.stop()
        server.kill()
