"""Redis goes back in time: restarted from an older snapshot, the topic's epoch unchanged.

The topic's hash survives with an older offset, so new events reuse offsets a node has
delivered already (as after a failover to a replica that lagged, or an AOF with
``appendfsync everysec``). The subscriber's node must not drop them as delivered: it
reports the gap (``lost``) and delivers the new timeline from where it diverged, each
event once, in order.
"""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import redis

from tests.support.processes import BrokerProcess, start_redis

from .conftest import start_node
from .test_events import Connect
from .test_history_repair import ACK, Tally, _config, _publish_until_accepted, scrape, subscribe

TOPIC = "com.gap.rollback"


async def test_redis_restored_from_an_older_snapshot_is_a_gap_and_new_events_arrive(
    tmp_path: Path, connect: Connect
) -> None:
    data = tmp_path / "redis"
    data.mkdir()
    persist = ["--dir", str(data)]  # no AOF, no automatic snapshots: only the SAVE below
    server = start_redis(extra=persist)
    nodes: list[BrokerProcess] = []
    try:
        nodes = [start_node(server, _config(tmp_path), f"r{i}") for i in range(2)]
        origin, other = nodes
        tally = Tally()
        await subscribe(await connect(other.url), TOPIC, tally)
        publisher = await connect(origin.url)
        for n in range(30):
            await publisher.publish(TOPIC, 0, n, options=ACK)
        await tally.until(lambda: len(tally.got) == 30, 5)
        client = redis.Redis.from_url(server.url)
        try:
            client.save()
        finally:
            client.close()
        shutil.copy(data / "dump.rdb", tmp_path / "old.rdb")
        for n in range(30, 60):
            await publisher.publish(TOPIC, 0, n, options=ACK)
        await tally.until(lambda: len(tally.got) == 60, 5)
        port = server.port
        server.kill()
        shutil.copy(tmp_path / "old.rdb", data / "dump.rdb")
        server = start_redis(port, extra=persist)  # offsets 1..30, same epoch
        await _publish_until_accepted(publisher, TOPIC, 100)
        for n in range(101, 130):
            await publisher.publish(TOPIC, 0, n, options=ACK)
        try:
            await tally.until(lambda: len(tally.got) >= 90 and tally.gaps, 10)
        except TimeoutError:
            raise AssertionError(
                f"got {[n for _, n in tally.got[60:]]}, gaps {tally.gaps}; node log:\n"
                f"{other.output[-4000:]}"
            ) from None
        assert [n for _, n in tally.got] == [*range(60), *range(100, 130)]
        (_args, kwargs) = tally.gaps[0]
        assert kwargs["topic"] == TOPIC and kwargs["reason"] == "lost"
        text = await asyncio.to_thread(scrape, other)
        assert 'wamp_history_gaps_total{realm="realm1",reason="lost"} 1.0' in text
    finally:
        for node in nodes:  # off the loop: a node stopping says GOODBYE to open sessions
            await asyncio.to_thread(node.stop)
        server.kill()
