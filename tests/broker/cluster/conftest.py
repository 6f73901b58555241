"""Fixtures for cluster tests: a real redis-server and real broker nodes on free ports.

Timings are shortened through the TOML file the nodes read (``[cluster]``), so a
dead node is noticed in about 2.5 s instead of 6 s.
"""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest

import client_sdk
from tests.support.processes import (
    CLUSTER_TIMING,
    BrokerProcess,
    RedisProcess,
    start_broker,
    start_redis,
)

if shutil.which("redis-server") is None:  # pragma: no cover - the test command installs it
    pytest.skip("redis-server is not installed", allow_module_level=True)

TIMING = CLUSTER_TIMING

HISTORY = """
[[realm]]
name = "realm1"

[[realm.history]]
uri = "hist."
match = "prefix"
limit = 10
"""
"""realm1 keeping the last 10 events of every ``hist.`` topic (append to ``TIMING``)."""

DEATH_TIMEOUT = 10.0
"""Seconds a test waits for the others to notice a dead node (expected: ~2.5 s)."""


@pytest.fixture
def redis_own() -> Iterator[RedisProcess]:
    """A redis-server of the test's own (tests that kill or stop Redis)."""
    server = start_redis()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def cluster_config(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("cluster") / "broker.toml"
    path.write_text(TIMING, encoding="utf-8")
    return path


def start_node(redis: RedisProcess, config: Path, name: str) -> BrokerProcess:
    """A broker node joined to ``redis`` under node ID ``name``."""
    return start_broker("--redis", redis.url, "--node-id", name, "--config", str(config))


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisProcess]:
    server = start_redis()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def nodes(redis_server: RedisProcess, cluster_config: Path) -> Iterator[list[BrokerProcess]]:
    """Three broker nodes sharing one Redis, shared by a module's tests."""
    started = [start_node(redis_server, cluster_config, f"n{i}") for i in range(3)]
    yield started
    for node in started:
        node.stop()


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Awaitable[client_sdk.Session]]]:
    """A factory of SDK sessions (``await connect(url)``), all left at teardown."""
    sessions: list[client_sdk.Session] = []

    async def factory(url: str, **kwargs: Any) -> client_sdk.Session:
        session = await client_sdk.connect(url, "realm1", **kwargs)
        sessions.append(session)
        return session

    yield factory
    for session in sessions:
        if session.is_open:
            try:
                await asyncio.wait_for(session.leave(), 5)
            except Exception:  # the node may be gone already
                pass


async def eventually(
    check: Callable[[], Awaitable[bool]], timeout: float = 5.0, what: str = "condition"
) -> None:
    """Re-evaluate ``check`` (which awaits a real round trip) until true or timeout."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout} s")
        await asyncio.sleep(0.05)  # between round trips, not as synchronisation


async def call_until(
    session: client_sdk.Session, procedure: str, *args: Any, **kwargs: Any
) -> client_sdk.CallResult:
    """Call, retrying only while the registration has not reached this node yet."""
    deadline = time.monotonic() + 5.0
    while True:
        try:
            return await session.call(procedure, *args, **kwargs)
        except client_sdk.ApplicationError as exc:
            if exc.uri != "wamp.error.no_such_procedure" or time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.05)


def http_status(base: str, path: str) -> int:
    """GET ``base + path``; the HTTP status code."""
    try:
        with urllib.request.urlopen(base + path, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def autobahn_session(url: str, serializer: str = "json") -> Any:
    """Join realm1 with a plain Autobahn|Python ApplicationSession."""
    from autobahn.asyncio.wamp import ApplicationSession
    from autobahn.asyncio.websocket import WampWebSocketClientFactory
    from autobahn.wamp import types as ab_types
    from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer

    loop = asyncio.get_running_loop()
    joined: asyncio.Future[Any] = loop.create_future()

    class Peer(ApplicationSession):  # type: ignore[misc]
        def onJoin(self, details: Any) -> None:
            if not joined.done():
                joined.set_result(self)

        def onDisconnect(self) -> None:
            if not joined.done():
                joined.set_exception(ConnectionError("autobahn session disconnected"))

    ser = JsonSerializer() if serializer == "json" else MsgPackSerializer()
    factory = WampWebSocketClientFactory(
        lambda: Peer(ab_types.ComponentConfig(realm="realm1")), url=url, serializers=[ser]
    )
    parsed = urlparse(url)
    await loop.create_connection(factory, parsed.hostname, parsed.port)
    return await asyncio.wait_for(joined, 10)
