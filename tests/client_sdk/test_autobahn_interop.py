"""An SDK session and an Autobahn|Python session exchange events and calls through the broker."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlparse

import pytest

from client_sdk import ApplicationError, CallResult, Event, PublishOptions, connect
from tests.client_sdk.conftest import RouterProcess

pytest.importorskip("autobahn")

from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp import types as ab_types
from autobahn.wamp.exception import ApplicationError as AbApplicationError
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer


async def autobahn_session(url: str, serializer: str) -> Any:
    """Join realm1 with a plain Autobahn|Python ApplicationSession."""
    loop = asyncio.get_running_loop()
    joined: asyncio.Future[Any] = loop.create_future()
    disconnected: asyncio.Future[None] = loop.create_future()

    class Peer(ApplicationSession):  # type: ignore[misc]
        def onJoin(self, details: Any) -> None:
            if not joined.done():
                joined.set_result(self)

        def onDisconnect(self) -> None:
            if not disconnected.done():
                disconnected.set_result(None)
            if not joined.done():
                joined.set_exception(
                    ConnectionError("autobahn session disconnected before joining")
                )

    ser = JsonSerializer() if serializer == "json" else MsgPackSerializer()
    factory = WampWebSocketClientFactory(
        lambda: Peer(ab_types.ComponentConfig(realm="realm1")), url=url, serializers=[ser]
    )
    parsed = urlparse(url)
    await loop.create_connection(factory, parsed.hostname, parsed.port)
    peer = await asyncio.wait_for(joined, 10)
    peer.test_disconnected = disconnected
    return peer


@pytest.fixture(params=["json", "msgpack"])
async def autobahn_peer(
    request: pytest.FixtureRequest, broker: RouterProcess
) -> AsyncIterator[Any]:
    peer = await autobahn_session(broker.url, request.param)
    yield peer
    if peer.is_attached():
        peer.leave()
    await asyncio.wait_for(peer.test_disconnected, 10)


async def test_events_flow_both_ways(broker: RouterProcess, autobahn_peer: Any) -> None:
    async with connect(broker.url, "realm1", serializer="cbor") as sdk:
        from_autobahn: asyncio.Queue[Event] = asyncio.Queue()
        await sdk.subscribe("com.interop.to_sdk", from_autobahn.put_nowait)
        await autobahn_peer.publish(
            "com.interop.to_sdk",
            1,
            "two",
            key="v",
            options=ab_types.PublishOptions(acknowledge=True),
        )
        event = await asyncio.wait_for(from_autobahn.get(), 5)
        assert (event.args, event.kwargs) == ([1, "two"], {"key": "v"})

        from_sdk: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()
        await autobahn_peer.subscribe(
            lambda *a, **kw: from_sdk.put_nowait((a, kw)), "com.interop.to_autobahn"
        )
        await sdk.publish(
            "com.interop.to_autobahn", 3, b"\x01\x02", options=PublishOptions(acknowledge=True), k=4
        )
        args, kwargs = await asyncio.wait_for(from_sdk.get(), 5)
        assert args == (3, b"\x01\x02") and kwargs == {"k": 4}


async def test_calls_flow_both_ways(broker: RouterProcess, autobahn_peer: Any) -> None:
    async with connect(broker.url, "realm1") as sdk:
        await sdk.register("com.interop.sdk_add", lambda a, b: a + b)
        assert await autobahn_peer.call("com.interop.sdk_add", 2, 3) == 5

        def sdk_fail() -> None:
            raise ApplicationError("com.interop.error", "nope", code=7)

        await sdk.register("com.interop.sdk_fail", sdk_fail)
        with pytest.raises(AbApplicationError) as ab_error:
            await autobahn_peer.call("com.interop.sdk_fail")
        assert ab_error.value.error == "com.interop.error"
        assert ab_error.value.args == ("nope",) and ab_error.value.kwargs == {"code": 7}

        def ab_mul(a: int, b: int) -> int:
            return a * b

        def ab_fail() -> None:
            raise AbApplicationError("com.interop.ab_error", "from autobahn", why="test")

        await autobahn_peer.register(ab_mul, "com.interop.ab_mul")
        await autobahn_peer.register(ab_fail, "com.interop.ab_fail")
        result = await sdk.call("com.interop.ab_mul", 6, 7)
        assert isinstance(result, CallResult) and result.value == 42
        with pytest.raises(ApplicationError) as sdk_error:
            await sdk.call("com.interop.ab_fail")
        assert sdk_error.value.uri == "com.interop.ab_error"
        assert sdk_error.value.args == ("from autobahn",) and sdk_error.value.kwargs == {
            "why": "test"
        }


async def test_autobahn_caller_receives_sdk_progressive_results(
    broker: RouterProcess, autobahn_peer: Any
) -> None:
    async with connect(broker.url, "realm1") as sdk:

        async def steps(n: int) -> AsyncIterator[int]:
            for i in range(n):
                yield i

        await sdk.register("com.interop.steps", steps)
        progress: list[Any] = []
        await autobahn_peer.call(
            "com.interop.steps",
            3,
            options=ab_types.CallOptions(on_progress=lambda i: progress.append(i)),
        )
        assert progress == [0, 1, 2]
