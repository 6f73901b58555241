"""Event history on the Redis backend: what it costs per event, how fast a node catches up.

Two real broker nodes on a real redis-server (started here, loopback only):

1. ``cpu``: router CPU per event publishing to a topic with history (the history
   script: offset, XADD, EXPIRE, PUBLISH) vs a topic without (plain PUBLISH), same
   run, alternating phases. A publisher on node A, one subscriber of both topics on
   node B; CPU of both broker processes (and of redis-server, reported apart).
2. ``recover``: node B is stopped (SIGSTOP), N events are published on node A, B's
   Redis connections are killed and B resumed (SIGCONT); the time until B's subscriber
   (no client resume) has all N: link failure seen, reconnect, XRANGE, delivery.

Usage: ``python -m bench.history_redis [--events 4000] [--rounds 3] [--recover 10000]``
(prints JSON).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import tempfile
import time
from pathlib import Path
from typing import Any

import client_sdk
from bench import procstat
from bench.history_recover import Counter
from tests.support.processes import BrokerProcess, kill_connections, start_broker, start_redis

CONFIG = """
[[realm]]
name = "realm1"

[[realm.history]]
uri = "bench.hist."
match = "prefix"
limit = 20000
ttl = 3600
"""

BATCH = 250


async def _phase(
    publisher: client_sdk.Session, topic: str, counter: Counter, events: int, pids: list[int]
) -> float:
    """Publish ``events`` to ``topic`` in batches (each received before the next)."""
    before = procstat.sample(pids)
    for start in range(0, events, BATCH):
        for n in range(start, min(events, start + BATCH)):
            await publisher.publish(topic, n, {"price": 1.25, "size": n})
        await counter.until(counter.count + min(BATCH, events - start))
    after = procstat.sample(pids)
    return after.cpu_s - before.cpu_s


async def cpu(
    nodes: list[BrokerProcess], redis_pid: int, events: int, rounds: int
) -> dict[str, Any]:
    """Router CPU µs per event, with history vs without, alternating phases."""
    counter = Counter()
    subscriber = await client_sdk.connect(nodes[1].url, "realm1")
    for topic in ("bench.hist.t", "bench.plain.t"):
        await subscriber.subscribe(topic, counter)
    publisher = await client_sdk.connect(nodes[0].url, "realm1")
    pids = [node.proc.pid for node in nodes]
    spent = {"history": 0.0, "plain": 0.0}
    redis_spent = {"history": 0.0, "plain": 0.0}
    await _phase(publisher, "bench.plain.t", counter, BATCH, pids)  # warm up
    for _ in range(rounds):
        for name, topic in (("plain", "bench.plain.t"), ("history", "bench.hist.t")):
            redis_before = procstat.sample([redis_pid]).cpu_s
            spent[name] += await _phase(publisher, topic, counter, events, pids)
            redis_spent[name] += procstat.sample([redis_pid]).cpu_s - redis_before
    await subscriber.leave()
    await publisher.leave()
    total = events * rounds
    per = {name: round(value / total * 1e6, 1) for name, value in spent.items()}
    return {
        "events_per_case": total,
        "router_cpu_us_per_event": per,
        "ratio_history_to_plain": round(per["history"] / per["plain"], 3),
        "redis_cpu_us_per_event": {k: round(v / total * 1e6, 1) for k, v in redis_spent.items()},
    }


async def recover(nodes: list[BrokerProcess], redis_url: str, missed: int) -> dict[str, Any]:
    """Seconds from resuming a node that missed ``missed`` events to its subscriber having all."""
    counter = Counter()
    subscriber = await client_sdk.connect(nodes[1].url, "realm1")
    await subscriber.subscribe("bench.hist.recover", counter)
    publisher = await client_sdk.connect(nodes[0].url, "realm1")
    await publisher.publish("bench.hist.recover", -1)
    await counter.until(1)
    nodes[1].signal(signal.SIGSTOP)
    try:
        ack = client_sdk.PublishOptions(acknowledge=True)
        for n in range(missed):  # every BATCH-th acknowledged: Redis keeps up
            last = (n + 1) % BATCH == 0
            await publisher.publish(
                "bench.hist.recover", n, {"price": 1.25}, options=ack if last else None
            )
        await publisher.publish("bench.hist.recover", "last", options=ack)
        killed = kill_connections(redis_url, nodes[1].proc.pid)
    finally:
        nodes[1].signal(signal.SIGCONT)
    started = time.perf_counter()
    await counter.until(missed + 2, 30)
    elapsed = time.perf_counter() - started
    await subscriber.leave()
    await publisher.leave()
    logged = [line for line in nodes[1].output.splitlines() if "recovered" in line]
    return {
        "missed_events": missed + 1,
        "connections_cut": killed,
        "recover_s": round(elapsed, 3),
        "node_log": logged[-1:],
    }


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    server = start_redis()
    nodes: list[BrokerProcess] = []
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "broker.toml"
        config.write_text(CONFIG, encoding="utf-8")
        try:
            nodes = [
                start_broker("--redis", server.url, "--node-id", f"b{i}", "--config", str(config))
                for i in range(2)
            ]
            result = {"cpu": await cpu(nodes, server.proc.pid, args.events, args.rounds)}
            result["recover"] = await recover(nodes, server.url, args.recover)
            return result
        finally:
            for node in nodes:
                node.stop()
            server.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=4000, help="events per phase")
    parser.add_argument("--rounds", type=int, default=3, help="plain/history phase pairs")
    parser.add_argument("--recover", type=int, default=10_000, help="events a node misses")
    print(json.dumps(asyncio.run(main_async(parser.parse_args())), indent=2))


if __name__ == "__main__":
    main()
