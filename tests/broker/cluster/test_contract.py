"""One contract, both backends: ``local`` (one node) and ``redis`` (two nodes), the
latter on a single Redis, on Redis Sentinel (``redis+sentinel://``: 1 master,
1 replica, 3 sentinels) and on a Redis Cluster (``redis+cluster://``: 6 servers,
3 masters with a replica each).

Every test gets two URLs: where the "A" clients connect and where the "B" clients
connect. On the local backend both are the same node; on the Redis backend they
are different nodes, so everything crosses Redis. The behaviour must not differ.
"""

from __future__ import annotations

import asyncio
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import client_sdk
from client_sdk import ApplicationError, CallResult, Event, PublishOptions
from tests.support.processes import (
    BrokerProcess,
    RedisProcess,
    broker_nodes,
    start_broker,
    subscriber_protocols,
)
from tests.support.redis_cluster import RedisClusterSet, start_redis_cluster
from tests.support.sentinel import SentinelSet, start_sentinel_set

from .conftest import call_until, eventually, start_node

Urls = tuple[str, str]


@pytest.fixture(scope="module")
def local_node() -> Iterator[BrokerProcess]:
    node = start_broker()
    yield node
    node.stop()


@pytest.fixture(scope="module")
def redis_pair(redis_server: RedisProcess, cluster_config: Path) -> Iterator[list[BrokerProcess]]:
    started = [start_node(redis_server, cluster_config, f"c{i}") for i in range(2)]
    yield started
    for node in started:
        node.stop()


@pytest.fixture(scope="module")
def sentinel_set(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SentinelSet]:
    if shutil.which("redis-sentinel") is None:  # pragma: no cover - the test command installs it
        pytest.skip("redis-sentinel is not installed")
    deployment = start_sentinel_set(tmp_path_factory.mktemp("sentinel"))
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def sentinel_pair(sentinel_set: SentinelSet, cluster_config: Path) -> Iterator[list[BrokerProcess]]:
    with broker_nodes(sentinel_set.url, cluster_config, ("s0", "s1")) as started:
        yield started


@pytest.fixture(scope="module")
def redis_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisClusterSet]:
    deployment = start_redis_cluster(tmp_path_factory.mktemp("rcluster"))
    yield deployment
    deployment.stop()


@pytest.fixture(scope="module")
def cluster_pair(
    redis_cluster: RedisClusterSet, cluster_config: Path
) -> Iterator[list[BrokerProcess]]:
    with broker_nodes(redis_cluster.url, cluster_config, ("k0", "k1")) as started:
        yield started


@pytest.fixture(params=["local", "redis", "sentinel", "cluster"])
def urls(request: pytest.FixtureRequest) -> Urls:
    if request.param == "local":
        node: BrokerProcess = request.getfixturevalue("local_node")
        return node.url, node.url
    pair: list[BrokerProcess] = request.getfixturevalue(f"{request.param}_pair")
    return pair[0].url, pair[1].url


@pytest.fixture
async def sessions() -> AsyncIterator[Callable[[str], Awaitable[client_sdk.Session]]]:
    opened: list[client_sdk.Session] = []

    async def open_one(url: str) -> client_sdk.Session:
        session = await client_sdk.connect(url, "realm1")
        opened.append(session)
        return session

    yield open_one
    for session in opened:
        if session.is_open:
            await session.leave()


Open = Callable[[str], Awaitable[client_sdk.Session]]


def _data_ports(kind: str, request: pytest.FixtureRequest) -> list[int]:
    """The Redis servers a deployment's pub/sub connections go to (its master or masters)."""
    if kind == "redis":
        return [request.getfixturevalue("redis_server").port]
    if kind == "sentinel":
        port = request.getfixturevalue("sentinel_set").master_port()
        assert port is not None
        return [port]
    return list(request.getfixturevalue("redis_cluster").masters())


@pytest.mark.parametrize("kind", ["redis", "sentinel", "cluster"])
async def test_every_pubsub_connection_speaks_resp2(
    kind: str, request: pytest.FixtureRequest
) -> None:
    """RESP2 messages are plain arrays the link reads itself; RESP3 pushes cost twice as
    much through redis-py (broker/cluster/connect.py, ``PUBSUB_PROTOCOL``)."""
    pair: list[BrokerProcess] = request.getfixturevalue(f"{kind}_pair")
    pids = [node.proc.pid for node in pair]
    ports = _data_ports(kind, request)
    found: list[int] = []

    async def all_subscribed() -> bool:
        nonlocal found
        found = [resp for port in ports for resp in subscriber_protocols(port, pids)]
        return len(found) >= len(pair) * len(ports)

    await eventually(all_subscribed, 15, "every node's pub/sub connection on every master")
    assert found == [2] * len(pair) * len(ports)


async def test_subscribed_means_events_published_afterwards_arrive(
    urls: Urls, sessions: Open
) -> None:
    sub = await sessions(urls[1])
    got: asyncio.Queue[Event] = asyncio.Queue()
    await sub.subscribe("contract.ev", got.put_nowait)
    pub = await sessions(urls[0])
    await pub.publish("contract.ev", "x", k=1)
    event = await asyncio.wait_for(got.get(), 5)
    assert (event.args, event.kwargs, event.topic) == (["x"], {"k": 1}, "contract.ev")


async def test_publish_acknowledged_and_order_kept(urls: Urls, sessions: Open) -> None:
    sub = await sessions(urls[1])
    got: asyncio.Queue[Event] = asyncio.Queue()
    await sub.subscribe("contract.order", got.put_nowait, match="prefix")
    pub = await sessions(urls[0])
    for i in range(50):
        await pub.publish("contract.order.t", i)
    publication = await pub.publish(
        "contract.order.t", "end", options=PublishOptions(acknowledge=True)
    )
    assert isinstance(publication, int)
    seen = [(await asyncio.wait_for(got.get(), 5)).args[0] for _ in range(51)]
    assert seen == [*range(50), "end"]


async def test_call_result_error_and_unknown_procedure(urls: Urls, sessions: Open) -> None:
    callee = await sessions(urls[0])

    def divide(a: int, b: int) -> CallResult:
        if b == 0:
            raise ApplicationError("contract.div_by_zero", a)
        return CallResult([a // b], {"rest": a % b})

    await callee.register("contract.divide", divide)
    caller = await sessions(urls[1])
    result = await call_until(caller, "contract.divide", 7, 2)
    assert (result.args, result.kwargs) == ([3], {"rest": 1})
    with pytest.raises(ApplicationError) as info:
        await caller.call("contract.divide", 1, 0)
    assert info.value.uri == "contract.div_by_zero" and info.value.args == (1,)
    with pytest.raises(ApplicationError) as info:
        await caller.call("contract.nobody")
    assert info.value.uri == "wamp.error.no_such_procedure"


async def test_single_registration_conflict(urls: Urls, sessions: Open) -> None:
    first = await sessions(urls[0])
    await first.register("contract.single", lambda: 1)
    second = await sessions(urls[1])
    with pytest.raises(ApplicationError) as info:
        await second.register("contract.single", lambda: 2)
    assert info.value.uri == "wamp.error.procedure_already_exists"


async def test_unregister_frees_the_procedure_for_another_callee(
    urls: Urls, sessions: Open
) -> None:
    first = await sessions(urls[0])
    second = await sessions(urls[1])
    # UNREGISTERED means free everywhere: registering right after it, from the other
    # node, never meets procedure_already_exists (10 hand-overs back and forth).
    holder, other = first, second
    for _ in range(10):
        registration = await holder.register("contract.handover", lambda: "held")
        await registration.unregister()
        holder, other = other, holder
    await second.register("contract.handover", lambda: "second")
    caller = await sessions(urls[0])

    async def served_by_second() -> bool:
        try:
            return (await caller.call("contract.handover")).args == ["second"]
        except ApplicationError:
            return False

    await eventually(served_by_second, what="the new callee serves")


async def test_session_meta_sees_both_sessions(urls: Urls, sessions: Open) -> None:
    a = await sessions(urls[0])
    b = await sessions(urls[1])

    async def both() -> bool:
        listed = (await a.call("wamp.session.list")).args[0]
        return {a.id, b.id} <= set(listed)

    await eventually(both, what="both sessions listed")
    info = (await a.call("wamp.session.get", b.id)).args[0]
    assert info["session"] == b.id


async def test_resubscribing_in_quick_turns_still_gets_events(urls: Urls, sessions: Open) -> None:
    sub = await sessions(urls[1])
    got: asyncio.Queue[Event] = asyncio.Queue()
    for _ in range(20):  # subscribe and unsubscribe back to back, then subscribe again
        subscription = await sub.subscribe("contract.turns", got.put_nowait)
        await subscription.unsubscribe()
    await sub.subscribe("contract.turns", got.put_nowait)
    pub = await sessions(urls[0])
    await pub.publish("contract.turns", "x", options=PublishOptions(acknowledge=True))
    assert (await asyncio.wait_for(got.get(), 5)).args == ["x"]
