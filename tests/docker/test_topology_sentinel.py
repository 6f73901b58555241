"""The compose "sentinel" profile, run natively: 1 master, 1 replica, 3 sentinels, 2 nodes.

Each broker service of the profile runs with the command and environment compose.yaml
gives it (its ``redis+sentinel://`` URL pointed at local sentinels, see ``topology``),
so the profile's nodes run as supervisors of two workers each. The test checks that
events and calls cross the nodes, then fails the master over (``SENTINEL FAILOVER``)
and checks that they cross again and every node follows the new master.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import client_sdk
from client_sdk import ApplicationError, Event, PublishOptions
from tests.docker.topology import cluster_nodes, load_compose, native_broker
from tests.support.processes import BrokerProcess, start_broker
from tests.support.sentinel import SentinelSet, start_sentinel_set

TIMEOUT = 20.0
pytestmark = pytest.mark.skipif(
    shutil.which("redis-sentinel") is None or shutil.which("redis-server") is None,
    reason="redis-server and redis-sentinel are needed (bash .ci/test.sh installs them)",
)

ACK = PublishOptions(acknowledge=True)


@pytest.fixture
def deployment(tmp_path: Path) -> Iterator[tuple[SentinelSet, dict[str, BrokerProcess]]]:
    sentinels = start_sentinel_set(tmp_path)
    nodes: dict[str, BrokerProcess] = {}
    try:
        services = cluster_nodes(load_compose(), "sentinel")
        assert len(services) == 2, sorted(services)
        for name, service in services.items():
            native = native_broker(name, service, sentinels.url)
            native.env.pop("BROKER_LOG_FORMAT", None)  # text logs: the lines we wait for
            broker = start_broker(*native.args, port=0, env=native.env, timeout=TIMEOUT)
            nodes[name] = broker
        for broker in nodes.values():
            broker.wait_for_output(r"all \d+ workers ready", TIMEOUT)
        yield sentinels, nodes
    finally:
        for broker in nodes.values():
            broker.stop(30)
        sentinels.stop()


async def _crosses(pub: client_sdk.Session, events: asyncio.Queue[Event], label: str) -> None:
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            await pub.publish("topology.sentinel", label, options=ACK)
            while (await asyncio.wait_for(events.get(), 0.5)).args != [label]:
                pass
            return
        except (ApplicationError, TimeoutError):
            assert time.monotonic() < deadline, f"{label!r} did not cross nodes"


async def test_sentinel_profile_nodes_share_realms_and_follow_a_failover(
    deployment: tuple[SentinelSet, dict[str, BrokerProcess]],
) -> None:
    sentinels, nodes = deployment
    first, second = nodes.values()
    pub = await client_sdk.connect(first.url, "realm1")
    sub = await client_sdk.connect(second.url, "realm1")
    try:
        events: asyncio.Queue[Event] = asyncio.Queue()
        await sub.subscribe("topology.sentinel", events.put_nowait)
        await sub.register("topology.add", lambda a, b: a + b)
        await _crosses(pub, events, "before")
        old = sentinels.master_port()
        assert old is not None
        await asyncio.to_thread(sentinels.failover)
        new, _ = await asyncio.to_thread(sentinels.wait_promoted, old)
        await _crosses(pub, events, "after")
        deadline = time.monotonic() + TIMEOUT
        while True:
            try:
                assert (await pub.call("topology.add", 2, 3)).args == [5]
                break
            except ApplicationError:
                assert time.monotonic() < deadline, "call did not cross nodes after the failover"
                await asyncio.sleep(0.1)  # between round trips
        for broker in nodes.values():  # every worker of every node is on the new master
            for worker in ("w0", "w1"):
                pattern = rf"\[\S+-{worker}\] .*connected to \S+ \(master 127\.0\.0\.1:{new}\)"
                broker.wait_for_output(pattern, TIMEOUT)
                assert re.search(pattern, broker.output)
    finally:
        for session in (pub, sub):
            if session.is_open:
                await asyncio.wait_for(session.leave(), 5)
