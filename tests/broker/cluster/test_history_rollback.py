"""Redis goes back in time: restarted from an older snapshot, the topic's epoch unchanged.

The topic's hash survives with an older offset, so new events reuse offsets a node has
delivered already (as after a failover to a replica that lagged, or an AOF with
``appendfsync everysec``). The subscriber's node must not drop them as delivered: it
reports the gap (``lost``) and delivers the new timeline from where it diverged, each
event once, in order.

Two ways of finding the rollback: the hash's offset is below the delivered one (the node
is back before the new events pass it), or the entry at the delivered offset is another
publication (the node was suspended while the new timeline passed it). Where it diverged:
among the offsets the node remembers (``passed``), else by Redis time (``below-late``:
new events were published before the node was back, below what it remembers).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
from pathlib import Path
from typing import Any

import pytest
import redis

from broker.cluster.repair import GapRepair
from protocol_spec.cluster import EventEnvelope
from tests.support.processes import BrokerProcess, start_redis

from .conftest import start_node
from .test_events import Connect
from .test_history_repair import ACK, Tally, _config, _publish_until_accepted, scrape, subscribe

TOPIC = "com.gap.rollback"


@pytest.mark.parametrize(
    ("saved", "new", "suspended"),
    [(30, 30, False), (30, 20, True), (50, 20, True)],
    ids=["below", "below-late", "passed"],
)
async def test_redis_restored_from_an_older_snapshot_is_a_gap_and_new_events_arrive(
    tmp_path: Path, connect: Connect, saved: int, new: int, suspended: bool
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
        for n in range(60):
            await publisher.publish(TOPIC, 0, n, options=ACK)
            if n + 1 == saved:  # a snapshot at offset ``saved``, kept aside
                await tally.until(lambda: len(tally.got) == saved, 5)
                await asyncio.to_thread(_save, server.url, data, tmp_path / "old.rdb")
        await tally.until(lambda: len(tally.got) == 60, 5)
        if suspended:
            other.signal(signal.SIGSTOP)
        port = server.port
        server.kill()
        shutil.copy(tmp_path / "old.rdb", data / "dump.rdb")
        server = start_redis(port, extra=persist)  # offsets 1..saved, same epoch
        await _publish_until_accepted(publisher, TOPIC, 100)
        for n in range(101, 100 + new):
            await publisher.publish(TOPIC, 0, n, options=ACK)
        other.signal(signal.SIGCONT)
        try:
            await tally.until(lambda: len(tally.got) >= 60 + new and tally.gaps, 10)
        except TimeoutError:
            raise AssertionError(
                f"got {[n for _, n in tally.got[60:]]}, gaps {tally.gaps}; node log:\n"
                f"{other.output[-4000:]}"
            ) from None
        assert [n for _, n in tally.got] == [*range(60), *range(100, 100 + new)]
        (_args, kwargs) = tally.gaps[0]
        assert kwargs["topic"] == TOPIC and kwargs["reason"] == "lost" and len(tally.gaps) == 1
        text = await asyncio.to_thread(scrape, other)
        assert 'wamp_history_gaps_total{realm="realm1",reason="lost"} 1.0' in text
    finally:
        for node in nodes:  # off the loop: a node stopping says GOODBYE to open sessions
            node.signal(signal.SIGCONT)
            await asyncio.to_thread(node.stop)
        server.kill()


def _save(url: str, data: Path, copy: Path) -> None:
    client = redis.Redis.from_url(url)
    try:
        client.save()
    finally:
        client.close()
    shutil.copy(data / "dump.rdb", copy)


class _NoRealms:
    """A host serving no realm: gaps are only logged and counted."""

    realms: dict[str, Any] = {}

    def kill(self, session: Any, reason: str, message: str | None) -> None:
        raise AssertionError("not used")


def test_a_live_event_reusing_a_delivered_offset_is_a_gap_not_a_duplicate() -> None:
    repair = GapRepair("b", _NoRealms())
    got: list[int] = []

    def live(offset: int, publication: int) -> None:
        env = EventEnvelope("a", "realm1", TOPIC, publication, {}, offset=offset, epoch="e1")
        repair.admit(env, lambda e: got.append(e.publication))

    for offset in range(1, 6):
        live(offset, 100 + offset)
    live(5, 105)  # the same event again (another channel): dropped
    assert got == [101, 102, 103, 104, 105] and repair.gaps.counts == {}
    live(3, 903)  # offset 3 again, another publication: Redis went back in time
    live(4, 904)
    live(5, 905)
    assert got == [101, 102, 103, 104, 105, 903, 904, 905]
    assert repair.gaps.counts == {("realm1", "lost"): 1}
    live(5, 905)  # the new timeline's events are not delivered twice either
    assert got[-1] == 905 and len(got) == 8
