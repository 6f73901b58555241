"""Valid strings and unencodable values across two broker nodes sharing a real Redis.

Black-box: clients on node A, clients on node B, nothing of the cluster code imported.
A lone surrogate ABORTs its sender on its own node and never reaches the other node;
a value the cluster link or the far recipient cannot carry ends as an ERROR for the
caller, never as a silent call or a closed sender.
"""

from __future__ import annotations

import asyncio
import math
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError

from protocol_spec import errors
from tests.broker.interop._autobahn import ClientPool
from tests.support.processes import BrokerProcess, nodes_on_one_redis

from ._unicode_client import ERROR, INVOCATION, RawPeer

if shutil.which("redis-server") is None:  # pragma: no cover - the test command installs it
    pytest.skip("redis-server is not installed", allow_module_level=True)

TIMEOUT = 5.0
TIMING = """
[cluster]
heartbeat_interval = 0.25
node_timeout = 2.0
probe_interval = 0.5
probe_timeout = 1.0
"""


@pytest.fixture(scope="module")
def two_nodes(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[BrokerProcess]]:
    """Nodes ``ua`` and ``ub`` on one redis-server of their own."""
    config: Path = tmp_path_factory.mktemp("unicode") / "broker.toml"
    config.write_text(TIMING, encoding="utf-8")
    with nodes_on_one_redis(config, ("ua", "ub")) as nodes:
        yield nodes


@pytest.fixture
async def pool(two_nodes: list[BrokerProcess]) -> AsyncIterator[ClientPool]:
    clients = ClientPool(two_nodes[0].url)
    yield clients
    await clients.close_all()


async def call_until_registered(client: Any, procedure: str, *args: Any) -> Any:
    """Call, retrying only while the registration has not reached this node yet."""
    deadline = time.monotonic() + TIMEOUT
    while True:
        try:
            return await asyncio.wait_for(client.call(procedure, *args), TIMEOUT)
        except ApplicationError as exc:
            if exc.error != errors.NO_SUCH_PROCEDURE or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)  # between round trips, not as synchronisation


async def test_a_lone_surrogate_publisher_is_aborted_and_the_other_node_gets_the_next_event(
    two_nodes: list[BrokerProcess], pool: ClientPool
) -> None:
    a, b = two_nodes
    topic = "com.unicode.cluster.events"
    queues: list[asyncio.Queue[Any]] = []
    for serializer in ("json", "msgpack", "cbor"):
        client = await pool.connect(serializer, url=b.url)
        queue: asyncio.Queue[Any] = asyncio.Queue()
        await client.subscribe(lambda *args, q=queue: q.put_nowait(args), topic)
        queues.append(queue)
    good = await RawPeer.join(a.url, "cbor")
    deadline = time.monotonic() + TIMEOUT
    while queues[0].empty():  # until the subscription reached node A
        assert time.monotonic() < deadline, "subscription never reached the other node"
        await good.published(await good.publish(topic, ["warm-up"]))
        await asyncio.sleep(0.05)
    for queue in queues:
        assert await asyncio.wait_for(queue.get(), TIMEOUT) == ("warm-up",)
        while not queue.empty():
            assert queue.get_nowait() == ("warm-up",)
    bad = await RawPeer.join(a.url, "json")
    await bad.publish(topic, ["\udbff"], retain=True)
    abort, code = await bad.closed()
    assert abort is not None and abort[2] == errors.PROTOCOL_VIOLATION and code != 1011
    await good.published(await good.publish(topic, ["after"]))
    for queue in queues:
        assert await asyncio.wait_for(queue.get(), TIMEOUT) == ("after",)
    late = await RawPeer.join(b.url, "msgpack")
    await late.subscribe(topic, get_retained=True)
    reply = await late.published(await late.publish("com.unicode.cluster.ping", []))
    assert reply[0] != ERROR, reply  # subscribed with get_retained and still served
    await late.close()
    await good.close()


async def test_a_result_the_caller_cannot_carry_is_an_error_across_nodes(
    two_nodes: list[BrokerProcess], pool: ClientPool
) -> None:
    a, b = two_nodes
    procedure = "com.unicode.cluster.nan"
    callee = await pool.connect("msgpack", url=b.url)
    await callee.register(lambda: math.nan, procedure)
    caller = await pool.connect("json", url=a.url)
    with pytest.raises(ApplicationError) as failure:
        await call_until_registered(caller, procedure)
    assert failure.value.error == errors.INVALID_ARGUMENT
    other = await pool.connect("cbor", url=a.url)
    assert math.isnan(await call_until_registered(other, procedure))


async def test_arguments_the_cluster_cannot_carry_answer_the_caller_with_an_error(
    two_nodes: list[BrokerProcess], pool: ClientPool
) -> None:
    a, b = two_nodes
    procedure = "com.unicode.cluster.bigint"
    callee = await pool.connect("cbor", url=b.url)
    await callee.register(lambda *args: "called", procedure)
    caller = await pool.connect("cbor", url=a.url)
    assert await call_until_registered(caller, procedure, 1) == "called"
    with pytest.raises(ApplicationError):  # 2**70: no msgpack envelope can carry it
        await asyncio.wait_for(caller.call(procedure, 2**70), TIMEOUT)
    assert await caller.call(procedure, 2) == "called"  # caller and callee unharmed


async def test_a_remote_callee_yielding_a_lone_surrogate_is_aborted_and_the_caller_answered(
    two_nodes: list[BrokerProcess], pool: ClientPool
) -> None:
    a, b = two_nodes
    procedure = "com.unicode.cluster.lone"
    callee = await RawPeer.join(b.url, "json")
    await callee.register(procedure)
    caller = await pool.connect("msgpack", url=a.url)
    call = asyncio.ensure_future(call_until_registered(caller, procedure))
    invocation = await callee.expect(lambda m: m[0] == INVOCATION)
    await callee.send([70, invocation[1], {}, ["\udc00"]])
    abort, code = await callee.closed()
    assert abort is not None and abort[2] == errors.PROTOCOL_VIOLATION and code != 1011
    with pytest.raises(ApplicationError):
        await asyncio.wait_for(call, TIMEOUT)  # answered (callee gone), never silence
