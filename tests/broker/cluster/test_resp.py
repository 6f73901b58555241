"""The hot Redis connections read by our own protocol (``broker.cluster.resp``).

The outbox's command connection and a lane's pub/sub connection are opened by
redis-py and then read in ``data_received``: on asyncio and on uvloop (whose
transports are not ``asyncio.Transport`` subclasses) replies and messages arrive in
order, and a connection killed while idle ends its user at once, not at the next
timeout. Two nodes on ``--uvloop`` carry events and calls across.
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import pytest
import redis
import uvloop
from redis.asyncio import Redis
from redis.exceptions import ResponseError

import client_sdk
from broker.cluster.connect import PUBSUB_PROTOCOL
from broker.cluster.link import ClusterTiming, Lane, LinkLost, PubSubLink
from broker.cluster.outbox import Command, Outbox
from client_sdk import Event
from tests.support.processes import RedisProcess, start_broker, start_redis

from .conftest import call_until

LOOPS = ["asyncio", "uvloop"]


@pytest.fixture
def own_redis() -> Iterator[RedisProcess]:
    server = start_redis()
    yield server
    server.kill()


def _run(loop: str, main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    if loop == "uvloop":
        uvloop.run(main())
    else:
        asyncio.run(main())


def _kill_others(port: int, kind: str) -> int:
    """CLIENT KILL every connection of type ``kind`` but the killer's own."""
    client = redis.Redis(port=port, socket_timeout=2)
    try:
        me = client.client_id()
        killed = 0
        for info in client.client_list(_type=kind):
            if int(info["id"]) != me:
                kill = ("CLIENT", "KILL", "ID", info["id"])
                killed += int(client.execute_command(*kill))  # type: ignore[no-untyped-call]
        return killed
    finally:
        client.close()


async def _ends_at_once(port: int, kind: str, task: asyncio.Task[None]) -> None:
    """Kill the task's connection (the only other one of ``kind``): it ends, promptly."""
    assert _kill_others(port, kind) == 1
    started = time.monotonic()
    with pytest.raises(LinkLost, match="connection lost"):
        await asyncio.wait_for(task, 5)
    assert time.monotonic() - started < 2


@pytest.mark.parametrize("loop", LOOPS)
def test_the_writer_answers_every_command_in_order(loop: str, own_redis: RedisProcess) -> None:
    async def main() -> None:
        outbox = Outbox()
        cmd = Redis.from_url(own_redis.url)
        writer = asyncio.create_task(outbox.write(cmd))
        replies: list[tuple[int, Any]] = []
        done = asyncio.Event()
        count = 600
        try:

            def reply(n: int, result: Any) -> None:
                replies.append((n, result))
                if len(replies) == count:
                    done.set()

            for n in range(count):  # over several loop passes, so several batches
                command: Command = ("INCR", "n") if n % 7 else ("HGET", "n", "x")
                outbox.push(command, functools.partial(reply, n))
                if n % 50 == 0:
                    await asyncio.sleep(0)  # a loop pass: the batch so far goes
            await asyncio.wait_for(done.wait(), 10)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await cmd.aclose()
        assert [n for n, _ in replies] == list(range(count))
        assert replies[0][1] is None  # HGET before the key exists
        assert isinstance(replies[7][1], ResponseError)  # HGET on a string: WRONGTYPE
        incrs = [r for n, r in replies if n % 7]
        assert incrs == list(range(1, len(incrs) + 1))

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_an_idle_writer_whose_connection_is_killed_ends_at_once(
    loop: str, own_redis: RedisProcess
) -> None:
    async def main() -> None:
        outbox = Outbox(command_timeout=30.0)  # only the lost connection can end it in time
        cmd = Redis.from_url(own_redis.url)
        answered = asyncio.Event()
        outbox.push(("PING",), lambda _r: answered.set())
        writer = asyncio.create_task(outbox.write(cmd))
        try:
            await asyncio.wait_for(answered.wait(), 5)
            await _ends_at_once(own_redis.port, "normal", writer)
        finally:
            writer.cancel()
            await asyncio.gather(writer, return_exceptions=True)
            await cmd.aclose()

    _run(loop, main)


@pytest.mark.parametrize("loop", LOOPS)
def test_a_lane_gets_messages_in_order_and_ends_when_its_connection_is_killed(
    loop: str, own_redis: RedisProcess
) -> None:
    async def main() -> None:
        timing = ClusterTiming(probe_interval=60.0, probe_timeout=60.0)
        link = PubSubLink("resp-a", timing)
        client = Redis.from_url(own_redis.url, protocol=PUBSUB_PROTOCOL)
        publisher = Redis.from_url(own_redis.url)
        pubsub = client.pubsub()
        await pubsub.connect()  # type: ignore[no-untyped-call]
        lane = Lane(pubsub, b"wamp:probe:resp-a")
        got: list[tuple[bytes, bytes]] = []
        all_in = asyncio.Event()
        count = 300

        def dispatch(channel: bytes, data: bytes) -> None:
            got.append((channel, data))
            if len(got) == count:
                all_in.set()

        reader = asyncio.create_task(link.read(lane, dispatch))
        subscriber = asyncio.create_task(link.subscriber(lane))
        try:
            link.relink([lane], ())
            live = asyncio.Event()
            link.watch((False, b"wamp:ev:resp"), live.set)
            await asyncio.wait_for(live.wait(), 5)
            for n in range(count):
                await publisher.publish(b"wamp:ev:resp", b"%d" % n)
            await asyncio.wait_for(all_in.wait(), 10)
            assert got == [(b"wamp:ev:resp", b"%d" % n) for n in range(count)]
            await _ends_at_once(own_redis.port, "pubsub", reader)
        finally:
            for task in (reader, subscriber):
                task.cancel()
            await asyncio.gather(reader, subscriber, return_exceptions=True)
            await pubsub.aclose()  # type: ignore[no-untyped-call]
            await client.aclose()
            await publisher.aclose()

    _run(loop, main)


async def test_two_nodes_on_uvloop_carry_events_and_calls(own_redis: RedisProcess) -> None:
    nodes = [
        start_broker("--uvloop", "--redis", own_redis.url, "--node-id", name)
        for name in ("uv-a", "uv-b")
    ]
    try:
        async with asyncio.timeout(30):  # a hang (a link that never answers) fails
            sub = await client_sdk.connect(nodes[1].url, "realm1")
            pub = await client_sdk.connect(nodes[0].url, "realm1")
            got: asyncio.Queue[Event] = asyncio.Queue()
            await sub.subscribe("uv.events", got.put_nowait)
            await pub.register("uv.echo", lambda x: x)
            assert (await call_until(sub, "uv.echo", 7)).args == [7]
            for n in range(50):
                await pub.publish("uv.events", n)
            seen = [(await asyncio.wait_for(got.get(), 5)).args[0] for _ in range(50)]
            assert seen == list(range(50))
            await sub.leave()
            await pub.leave()
    finally:
        for node in nodes:
            node.stop()
