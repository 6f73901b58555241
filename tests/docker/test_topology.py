"""The compose topology, run natively: redis-server, three broker nodes, HAProxy in front.

Each node runs with the command and environment compose.yaml gives it (addresses
rewritten for 127.0.0.1, see ``topology``); HAProxy runs docker/haproxy.cfg with
loopback ports. Clients (``client_sdk.Client``, reconnecting) only know HAProxy's
address. The test checks that leastconn spreads them over the nodes, that events
and calls cross nodes, and that when one node is stopped (SIGTERM: graceful drain)
its clients come back through the balancer on the other nodes and everything works
again.

This needs the Redis cluster backend (``broker --redis``); without it the nodes do
not start and this test fails, by design.
"""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import urllib.request
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import client_sdk
from tests.docker.topology import (
    HAPROXY_CFG,
    cluster_nodes,
    load_compose,
    native_broker,
    native_haproxy_cfg,
)
from tests.support.processes import (
    BrokerProcess,
    RedisProcess,
    free_port,
    start_broker,
    start_redis,
)

CLIENTS = 6
TIMEOUT = 20.0
TOPIC = "com.example.topology.tick"
PROCEDURE = "com.example.topology.add"

pytestmark = pytest.mark.skipif(
    shutil.which("haproxy") is None or shutil.which("redis-server") is None,
    reason="haproxy and redis-server are needed (bash .ci/test.sh installs them)",
)


@dataclass
class Cluster:
    redis: RedisProcess
    nodes: dict[str, BrokerProcess]
    haproxy: BrokerProcess
    url: str

    def metrics(self, name: str) -> str:
        with urllib.request.urlopen(self.nodes[name].http_base + "/metrics", timeout=5) as r:
            return r.read().decode()

    def sessions_on(self, name: str) -> int:
        """Joined sessions on one node, from its /metrics."""
        return sum(
            int(float(line.rsplit(" ", 1)[1]))
            for line in self.metrics(name).splitlines()
            if line.startswith("wamp_sessions{")
        )


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    redis = start_redis()
    nodes: dict[str, BrokerProcess] = {}
    haproxy: BrokerProcess | None = None
    try:
        for name, service in cluster_nodes(load_compose()).items():
            native = native_broker(name, service, redis.url)
            nodes[name] = start_broker(*native.args, port=0, env=native.env, timeout=TIMEOUT)
        front = free_port()
        cfg = tmp_path / "haproxy.cfg"
        cfg.write_text(
            native_haproxy_cfg(
                HAPROXY_CFG.read_text(), front, {name: n.port for name, n in nodes.items()}
            )
        )
        check = subprocess.run(
            ["haproxy", "-q", "-c", "-f", str(cfg)], capture_output=True, text=True, timeout=30
        )
        assert check.returncode == 0, check.stdout + check.stderr
        proc = subprocess.Popen(
            ["haproxy", "-db", "-f", str(cfg)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        haproxy = BrokerProcess(proc=proc, url=f"ws://127.0.0.1:{front}/ws", args=proc.args)
        yield Cluster(redis, nodes, haproxy, haproxy.url)
    finally:
        if haproxy is not None:
            haproxy.stop(timeout=5)
        for node in nodes.values():
            node.stop()
        redis.stop()


@dataclass
class Watched:
    """A reconnecting client plus what happened to it."""

    client: client_sdk.Client
    ticks: asyncio.Queue[Any] = field(default_factory=asyncio.Queue)
    lost: asyncio.Event = field(default_factory=asyncio.Event)
    rejoined: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
async def clients(cluster: Cluster) -> AsyncIterator[list[Watched]]:
    watched: list[Watched] = []
    try:
        for _ in range(CLIENTS):
            client = client_sdk.Client(
                cluster.url, "realm1", backoff=client_sdk.Backoff(initial=0.1, maximum=1.0)
            )
            w = Watched(client)
            await client.subscribe(TOPIC, lambda event, w=w: w.ticks.put_nowait(event.args[0]))

            def on_leave(session: Any, why: Any, w: Watched = w) -> None:
                w.lost.set()

            def on_join(session: Any, w: Watched = w) -> None:
                if w.lost.is_set():
                    w.rejoined.set()

            client.on_leave(on_leave)
            client.on_join(on_join)
            await client.start()
            async with asyncio.timeout(TIMEOUT):
                await client.wait_joined()
            watched.append(w)
        yield watched
    finally:
        for w in watched:
            await w.client.stop()


async def _everyone_hears_and_calls(clients: list[Watched], label: str) -> None:
    """A publish from client 0 reaches every client; every client can call the procedure."""
    ack = client_sdk.PublishOptions(acknowledge=True, exclude_me=False)
    await clients[0].client.publish(TOPIC, label, options=ack)
    async with asyncio.timeout(TIMEOUT):
        for w in clients:
            while (got := await w.ticks.get()) != label:
                pass
            assert got == label
        results = await asyncio.gather(
            *(w.client.call(PROCEDURE, i, 1) for i, w in enumerate(clients))
        )
    assert [r.value for r in results] == [i + 1 for i in range(len(clients))]


async def test_clients_through_haproxy_survive_a_node_stop(
    cluster: Cluster, clients: list[Watched]
) -> None:
    callee = clients[-1].client
    await callee.register(PROCEDURE, lambda a, b: a + b)

    per_node = {name: cluster.sessions_on(name) for name in cluster.nodes}
    assert sum(per_node.values()) == CLIENTS
    assert all(count >= 1 for count in per_node.values()), f"leastconn spread: {per_node}"
    for name in cluster.nodes:
        assert 'wamp_cluster_link_up{link="redis"} 1' in cluster.metrics(name)

    await _everyone_hears_and_calls(clients, "before")

    victim = max(per_node, key=lambda name: per_node[name])
    exit_code = await asyncio.to_thread(cluster.nodes[victim].stop)
    assert exit_code == 0, cluster.nodes[victim].output

    async with asyncio.timeout(TIMEOUT):
        while sum(w.lost.is_set() for w in clients) < per_node[victim]:
            await asyncio.wait(
                [asyncio.ensure_future(w.lost.wait()) for w in clients if not w.lost.is_set()],
                return_when=asyncio.FIRST_COMPLETED,
            )
        moved = [w for w in clients if w.lost.is_set()]
        assert len(moved) == per_node[victim]
        await asyncio.gather(*(w.rejoined.wait() for w in moved))

    survivors = {name: cluster.sessions_on(name) for name in cluster.nodes if name != victim}
    assert sum(survivors.values()) == CLIENTS, survivors
    await _everyone_hears_and_calls(clients, "after")
