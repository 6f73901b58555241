"""The HTTP API on a 2-node cluster through a real Redis: fan-out, remote calls, webhooks once.

The shared tests run on a single Redis and on a Redis Cluster (6 servers).
"""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from broker.httpapi.auth import sign_request
from tests.broker.interop._autobahn import ClientPool
from tests.support.processes import BrokerProcess, start_broker, start_redis
from tests.support.redis_cluster import start_redis_cluster

from ._support import SIGNER_SECRET, Api, Receiver, config_text, metric, write_config

if shutil.which("redis-server") is None:  # pragma: no cover - the test command installs it
    pytest.skip("redis-server is not installed", allow_module_level=True)

TIMING = """
[cluster]
heartbeat_interval = 0.25
node_timeout = 2.0
probe_interval = 0.5
probe_timeout = 1.0
"""


@dataclass
class Cluster:
    stop_redis: Callable[[], None]
    nodes: list[BrokerProcess]
    receiver: Receiver


@pytest.fixture(scope="module", params=["single", "redis-cluster"])
def cluster(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    receiver = Receiver()
    hook = f"""
[[realm.webhook]]
name = "all"
topic = "com.cl.hook."
match = "prefix"
url = "{receiver.start()}"
queue = 10000
"""
    path = write_config(tmp_path_factory.mktemp("cluster"), TIMING + config_text(webhooks=hook))
    if request.param == "single":
        single = start_redis()
        url, stop_redis = single.url, single.kill
    else:
        deployment = start_redis_cluster(tmp_path_factory.mktemp("rcluster"))
        url, stop_redis = deployment.url, deployment.stop
    nodes = [
        start_broker("--redis", url, "--node-id", name, "--config", str(path))
        for name in ("a", "b")
    ]
    yield Cluster(stop_redis, nodes, receiver)
    for node in nodes:
        node.stop()
    stop_redis()
    receiver.stop()


@pytest.fixture
async def pool(cluster: Cluster) -> AsyncIterator[ClientPool]:
    clients = ClientPool(cluster.nodes[0].url)
    yield clients
    await clients.close_all()


async def post(node: BrokerProcess, path: str, body: Any) -> Any:
    api = Api(node.http_base)
    try:
        return await asyncio.to_thread(api.post, path, body)
    finally:
        api.close()


async def test_http_publish_reaches_autobahn_subscribers_on_both_nodes(
    cluster: Cluster, pool: ClientPool
) -> None:
    queues: list[asyncio.Queue[Any]] = []
    for node in cluster.nodes:
        client = await pool.connect(url=node.url)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        await client.subscribe(lambda *a, q=queue: q.put_nowait(a), "com.cl.news")
        queues.append(queue)
    # the subscription on b reaches a's view of the cluster asynchronously: publish
    # until b's subscriber saw one (bounded), then check one more reaches both
    deadline = time.monotonic() + 10
    while queues[1].empty():
        assert time.monotonic() < deadline, "b's subscriber never got an event"
        assert (
            await post(cluster.nodes[0], "/publish", {"topic": "com.cl.news", "args": [0]})
        ).status == 200
        try:
            await asyncio.wait_for(queues[1].get(), 0.2)
            break
        except TimeoutError:
            continue
    for queue in queues:
        while not queue.empty():
            queue.get_nowait()
    reply = await post(cluster.nodes[0], "/publish", {"topic": "com.cl.news", "args": ["both"]})
    assert reply.status == 200
    for queue in queues:
        assert await asyncio.wait_for(queue.get(), 5) == ("both",)


async def test_http_call_reaches_a_callee_on_the_other_node(
    cluster: Cluster, pool: ClientPool
) -> None:
    callee = await pool.connect(url=cluster.nodes[1].url)
    await callee.register(lambda x: f"from b: {x}", "com.cl.where")
    deadline = time.monotonic() + 10
    while True:
        reply = await post(cluster.nodes[0], "/call", {"procedure": "com.cl.where", "args": [7]})
        if reply.status != 404 or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.05)  # the registration is on its way to a's directory
    assert reply.status == 200, reply.body
    assert reply.json() == {"args": ["from b: 7"], "kwargs": {}}


def scrape(node: BrokerProcess) -> str:
    with urllib.request.urlopen(node.http_base + "/metrics", timeout=5) as response:
        return str(response.read().decode())


async def test_each_event_is_delivered_by_exactly_one_node(cluster: Cluster) -> None:
    per_node = 20
    expected: set[int] = set()
    for index, node in enumerate(cluster.nodes):
        batch = [{"topic": f"com.cl.hook.n{index}", "args": [i]} for i in range(per_node)]
        reply = await post(node, "/publish", batch)
        assert reply.status == 200
        expected.update(reply.json()["publications"])
    total = per_node * len(cluster.nodes)
    posts = await asyncio.to_thread(cluster.receiver.wait_posts, total)
    # every node saw every event: each was delivered by one node and skipped by the
    # other, so once both counters add up no duplicate can still be on its way
    for _ in range(200):  # bounded: about 10 s of scrapes
        texts = [await asyncio.to_thread(scrape, node) for node in cluster.nodes]
        delivered = sum(metric(t, "wamp_webhook_delivered_total", webhook="all") for t in texts)
        skipped = sum(metric(t, "wamp_webhook_skipped_total", webhook="all") for t in texts)
        if delivered + skipped >= total * len(cluster.nodes):
            break
        await asyncio.sleep(0.05)  # between scrapes, not as synchronisation
    assert (delivered, skipped) == (total, total)
    posts = list(cluster.receiver.posts)
    publications = [p.json()["publication"] for p in posts]
    assert sorted(publications) == sorted(expected)
    assert len(set(publications)) == len(publications) == total


async def test_a_signed_request_replayed_to_the_other_node_is_refused(cluster: Cluster) -> None:
    body = b'{"topic": "com.cl.signed"}'
    query = sign_request("cron", SIGNER_SECRET, body, seq=1, nonce=int(time.time() * 1000))
    replies = []
    for node in cluster.nodes:
        api = Api(node.http_base, token=None)
        try:
            replies.append(await asyncio.to_thread(api.post, "/publish", raw=body, query=query))
        finally:
            api.close()
    assert replies[0].status == 200
    assert replies[1].status == 401
    assert replies[1].json()["args"] == ["signed request: nonce replayed"]


async def test_publish_while_redis_is_down_is_503_unavailable(
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    path = write_config(tmp_path_factory.mktemp("outage"), TIMING + config_text())
    redis = start_redis()
    node = start_broker("--redis", redis.url, "--node-id", "lonely", "--config", str(path))
    try:
        assert (await post(node, "/publish", {"topic": "com.cl.up"})).status == 200
        redis.kill()
        for _ in range(200):  # bounded: /readyz turns 503 once the link is seen down
            if await asyncio.to_thread(ready_status, node) == 503:
                break
            await asyncio.sleep(0.05)  # between probes, not as synchronisation
        reply = await post(node, "/publish", {"topic": "com.cl.down"})
        assert (reply.status, reply.json()["error"]) == (503, "wamp.error.unavailable")
    finally:
        node.stop()
        redis.kill()


def ready_status(node: BrokerProcess) -> int:
    try:
        with urllib.request.urlopen(node.http_base + "/readyz", timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
