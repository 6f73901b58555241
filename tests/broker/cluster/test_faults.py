"""Node death, graceful shutdown, Redis outages and a deaf pub/sub link."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import pytest

import client_sdk
from client_sdk import ApplicationError, Event, PublishOptions
from tests.support.processes import BrokerProcess, RedisProcess, start_redis

from .conftest import DEATH_TIMEOUT, call_until, eventually, http_status, start_node

Connect = Callable[..., Awaitable[client_sdk.Session]]


@pytest.fixture
def pair(redis_own: RedisProcess, cluster_config: Path) -> Iterator[list[BrokerProcess]]:
    """Two nodes of their own (tests here kill nodes and Redis)."""
    started = [start_node(redis_own, cluster_config, f"f{i}") for i in range(2)]
    yield started
    for node in started:
        node.stop()


async def _registered(session: client_sdk.Session, procedure: str) -> bool:
    return (await session.call("wamp.registration.match", procedure)).args[0] is not None


async def test_call_pending_on_a_killed_node_fails_fast_and_its_testament_fires(
    pair: list[BrokerProcess], connect: Connect
) -> None:
    survivor, doomed = pair
    caller = await connect(survivor.url)
    left: asyncio.Queue[Event] = asyncio.Queue()
    testament: asyncio.Queue[Event] = asyncio.Queue()
    await caller.subscribe("wamp.session.on_leave", left.put_nowait)
    await caller.subscribe("fault.testament", testament.put_nowait)
    callee = await client_sdk.connect(doomed.url, "realm1")
    started = asyncio.Event()

    async def hang() -> None:
        started.set()
        await asyncio.sleep(60)

    await callee.register("fault.hang", hang)
    await callee.call("wamp.session.add_testament", "fault.testament", ["died"], {})
    await eventually(lambda: _registered(caller, "fault.hang"), what="registration propagated")
    pending = asyncio.create_task(caller.call("fault.hang"))
    await asyncio.wait_for(started.wait(), 5)
    doomed.kill()  # SIGKILL: no goodbye, no cleanup
    with pytest.raises(ApplicationError) as info:
        await asyncio.wait_for(pending, DEATH_TIMEOUT)
    # the direct link between the nodes breaks with the node: the call fails at once,
    # before the heartbeat says the node is gone (protocol_spec/cluster.md, "Direct links")
    assert info.value.uri == "wamp.error.unavailable"
    event = await asyncio.wait_for(left.get(), DEATH_TIMEOUT)
    assert event.args[0] == callee.id
    assert (await asyncio.wait_for(testament.get(), DEATH_TIMEOUT)).args == ["died"]
    assert not await _registered(caller, "fault.hang")


async def test_killed_caller_node_interrupts_the_callee(
    pair: list[BrokerProcess], connect: Connect
) -> None:
    survivor, doomed = pair
    callee = await connect(survivor.url)
    started = asyncio.Event()
    interrupted = asyncio.Event()

    async def hang() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    await callee.register("fault.hang2", hang)
    caller = await client_sdk.connect(doomed.url, "realm1")
    call = asyncio.create_task(call_until(caller, "fault.hang2"))
    await asyncio.wait_for(started.wait(), 5)
    doomed.kill()
    await asyncio.wait_for(interrupted.wait(), DEATH_TIMEOUT)
    call.cancel()
    await asyncio.gather(call, return_exceptions=True)


async def test_graceful_shutdown_says_goodbye_and_unregisters_at_once(
    pair: list[BrokerProcess], connect: Connect
) -> None:
    staying, leaving = pair
    caller = await connect(staying.url)
    callee = await client_sdk.connect(leaving.url, "realm1")
    await callee.register("fault.bye", lambda: "hi")
    await eventually(lambda: _registered(caller, "fault.bye"), what="registration propagated")
    await asyncio.to_thread(leaving.stop)
    closed = await asyncio.wait_for(callee.wait_closed(), 5)
    assert "system_shutdown" in str(closed)
    # well before a heartbeat timeout would have noticed
    assert not await _registered(caller, "fault.bye")
    with pytest.raises(ApplicationError) as info:
        await caller.call("fault.bye")
    assert info.value.uri == "wamp.error.no_such_procedure"


async def test_redis_restart_during_traffic_then_cross_node_traffic_resumes(
    pair: list[BrokerProcess], redis_own: RedisProcess, connect: Connect
) -> None:
    a, b = pair
    pub = await connect(a.url)
    local_sub = await connect(a.url)
    remote_sub = await connect(b.url)
    local_events: asyncio.Queue[Event] = asyncio.Queue()
    remote_events: asyncio.Queue[Event] = asyncio.Queue()
    await local_sub.subscribe("fault.traffic", local_events.put_nowait)
    await remote_sub.subscribe("fault.traffic", remote_events.put_nowait)
    await remote_sub.register("fault.remote", lambda: "remote")
    await local_sub.register("fault.local", lambda: "local")
    await eventually(lambda: _registered(pub, "fault.remote"), what="registration propagated")
    stop = asyncio.Event()

    async def traffic() -> None:
        i = 0
        while not stop.is_set():
            await pub.publish("fault.traffic", i)
            i += 1
            await asyncio.sleep(0.005)  # a steady publish rate, not synchronisation

    background = asyncio.create_task(traffic())
    await asyncio.wait_for(remote_events.get(), 5)
    port = redis_own.port
    redis_own.kill()

    async def degraded() -> bool:
        return await asyncio.to_thread(http_status, a.http_base, "/readyz") == 503

    await eventually(degraded, timeout=DEATH_TIMEOUT, what="/readyz reports degraded")
    assert await asyncio.to_thread(http_status, a.http_base, "/healthz") == 200
    # local traffic keeps flowing
    while not local_events.empty():
        local_events.get_nowait()
    await asyncio.wait_for(local_events.get(), 5)
    assert (await pub.call("fault.local")).args == ["local"]
    # what needs another node fails clearly instead of hanging
    with pytest.raises(ApplicationError) as info:
        await pub.publish("fault.traffic", "acked", options=PublishOptions(acknowledge=True))
    assert info.value.uri == "wamp.error.unavailable"
    with pytest.raises(ApplicationError) as info:
        await asyncio.wait_for(pub.call("fault.remote"), 5)
    assert info.value.uri == "wamp.error.unavailable"

    restarted = start_redis(port=port)  # empty: nothing persisted
    try:

        async def ready() -> bool:
            statuses = [
                await asyncio.to_thread(http_status, node.http_base, "/readyz") for node in pair
            ]
            return statuses == [200, 200]

        await eventually(ready, timeout=DEATH_TIMEOUT, what="both nodes ready again")
        result = await call_until(pub, "fault.remote")
        assert result.args == ["remote"]
        while not remote_events.empty():
            remote_events.get_nowait()
        await pub.publish("fault.traffic", "after", options=PublishOptions(acknowledge=True))
        event = await asyncio.wait_for(remote_events.get(), 5)
        while event.args != ["after"]:
            event = await asyncio.wait_for(remote_events.get(), 5)
        # the directory converged: a second single registration is refused again
        with pytest.raises(ApplicationError) as info:
            await pub.register("fault.remote", lambda: "dup")
        assert info.value.uri == "wamp.error.procedure_already_exists"
    finally:
        stop.set()
        await background
        restarted.kill()


SUBSCRIBE_COMMAND = re.compile(rb"\r\nP?SUBSCRIBE\r\n", re.IGNORECASE)
"""A (P)SUBSCRIBE command as a RESP bulk string: not "subscribers" inside an envelope."""


class FreezingProxy:
    """A TCP proxy to Redis that can silently stop forwarding to pub/sub connections."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.frozen = False
        self.server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        assert self.server is not None
        return int(self.server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        state = {"pubsub": False}

        async def upstream() -> None:
            while data := await reader.read(65536):
                if SUBSCRIBE_COMMAND.search(data):
                    state["pubsub"] = True
                up_writer.write(data)
                await up_writer.drain()

        async def downstream() -> None:
            while data := await up_reader.read(65536):
                if self.frozen and state["pubsub"]:
                    continue  # the deaf link: bytes vanish, the socket stays open
                writer.write(data)
                await writer.drain()

        try:
            await asyncio.gather(upstream(), downstream(), return_exceptions=True)
        except asyncio.CancelledError:
            pass
        writer.close()
        up_writer.close()


@pytest.fixture
async def deaf_setup(
    redis_own: RedisProcess, tmp_path: Path
) -> AsyncIterator[tuple[FreezingProxy, list[BrokerProcess]]]:
    proxy = FreezingProxy(redis_own.port)
    await proxy.start()
    config = tmp_path / "deaf.toml"
    config.write_text(
        "[cluster]\nheartbeat_interval = 0.25\nnode_timeout = 2.0\n"
        "probe_interval = 0.3\nprobe_timeout = 0.6\n",
        encoding="utf-8",
    )
    from tests.support.processes import start_broker

    url = f"redis://127.0.0.1:{proxy.port}/0"
    # started from a thread: the proxy runs on this event loop and must keep serving
    deaf = await asyncio.to_thread(
        start_broker, "--redis", url, "--node-id", "deaf", "--config", str(config)
    )
    direct = await asyncio.to_thread(
        start_broker, "--redis", redis_own.url, "--node-id", "direct", "--config", str(config)
    )
    yield proxy, [deaf, direct]
    await asyncio.to_thread(deaf.stop)
    await asyncio.to_thread(direct.stop)
    assert proxy.server is not None
    proxy.server.close()


async def test_silently_deaf_pubsub_link_is_detected_and_rebuilt(
    deaf_setup: tuple[FreezingProxy, list[BrokerProcess]], connect: Connect
) -> None:
    proxy, (deaf, direct) = deaf_setup
    listener = await connect(deaf.url)
    got: asyncio.Queue[Event] = asyncio.Queue()
    await listener.subscribe("deaf.topic", got.put_nowait)
    pub = await connect(direct.url)
    await pub.publish("deaf.topic", 0, options=PublishOptions(acknowledge=True))
    await asyncio.wait_for(got.get(), 5)
    proxy.frozen = True  # existing pub/sub connections go deaf; new ones are fine
    await asyncio.to_thread(deaf.wait_for_output, "probe lost", 10)
    proxy.frozen = False

    async def hears_again() -> bool:
        await pub.publish("deaf.topic", 1, options=PublishOptions(acknowledge=True))
        try:
            await asyncio.wait_for(got.get(), 1.0)
        except TimeoutError:
            return False
        return True

    await eventually(hears_again, timeout=20, what="the rebuilt link delivers again")
