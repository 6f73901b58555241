"""A raw WAMP client for any of the three serializers that can send any string.

Frames are built by ``tests.protocol_spec._unicode_wire.hostile_frame`` (lone surrogates
survive as JSON escapes or as invalid UTF-8); what the router sends back is decoded with
``protocol_spec``'s own decoders, so a frame the router could not encode would show up
as a decode failure here.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from itertools import count
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from protocol_spec.serializers import by_name
from tests.protocol_spec._unicode_wire import hostile_frame

__all__ = ["ABORT", "ERROR", "EVENT", "INVOCATION", "RESULT", "RawPeer"]

HELLO, WELCOME, ABORT, ERROR = 1, 2, 3, 8
PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, EVENT = 16, 17, 32, 33, 36
CALL, RESULT, REGISTER, REGISTERED, INVOCATION, YIELD = 48, 50, 64, 65, 68, 70
TIMEOUT = 5.0
ROLES: dict[str, Any] = {
    "publisher": {"features": {}},
    "subscriber": {"features": {}},
    "caller": {"features": {"progressive_call_results": True}},
    "callee": {"features": {"progressive_call_results": True}},
}


class RawPeer:
    """One WebSocket session speaking ``wamp.2.<serializer>`` by hand."""

    def __init__(self, ws: ClientConnection, serializer: str, utf8: bool) -> None:
        self.ws = ws
        self.serializer = serializer
        self.utf8 = utf8
        self._codec = by_name(serializer)
        self._requests = count(1)
        self._backlog: list[list[Any]] = []

    @classmethod
    async def join(cls, url: str, serializer: str = "json", *, utf8: bool = False) -> RawPeer:
        """Connect and join ``realm1``; ``utf8`` sends JSON as raw UTF-8, not escapes."""
        ws = await ws_connect(url, subprotocols=[f"wamp.2.{serializer}"], open_timeout=TIMEOUT)  # type: ignore[list-item]
        peer = cls(ws, serializer, utf8)
        await peer.send([HELLO, "realm1", {"roles": ROLES}])
        welcome = await peer.next()
        assert welcome[0] == WELCOME, welcome
        return peer

    def request(self) -> int:
        return next(self._requests)

    async def send(self, message: list[Any]) -> None:
        await self.ws.send(hostile_frame(self.serializer, message, utf8=self.utf8))

    async def next(self, timeout: float = TIMEOUT) -> list[Any]:
        if self._backlog:
            return self._backlog.pop(0)
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        message: list[Any] = self._codec.loads(data)
        return message

    async def expect(
        self, predicate: Callable[[list[Any]], bool], timeout: float = TIMEOUT
    ) -> list[Any]:
        """The first message matching ``predicate``; the others stay queued."""
        for i, message in enumerate(self._backlog):
            if predicate(message):
                return self._backlog.pop(i)

        async def read() -> list[Any]:
            while True:
                data = await self.ws.recv()
                message: list[Any] = self._codec.loads(data)
                if predicate(message):
                    return message
                self._backlog.append(message)

        return await asyncio.wait_for(read(), timeout)

    async def subscribe(self, topic: str, **options: Any) -> int:
        request = self.request()
        await self.send([SUBSCRIBE, request, options, topic])
        reply = await self.expect(lambda m: m[0] in (SUBSCRIBED, ERROR) and request in m[1:3])
        assert reply[0] == SUBSCRIBED, reply
        return int(reply[2])

    async def register(self, procedure: str) -> int:
        request = self.request()
        await self.send([REGISTER, request, {}, procedure])
        reply = await self.expect(lambda m: m[0] in (REGISTERED, ERROR) and request in m[1:3])
        assert reply[0] == REGISTERED, reply
        return int(reply[2])

    async def publish(self, topic: str, args: list[Any], **options: Any) -> int:
        request = self.request()
        await self.send([PUBLISH, request, {"acknowledge": True, **options}, topic, args])
        return request

    async def published(self, request: int) -> list[Any]:
        return await self.expect(
            lambda m: (m[0] == PUBLISHED and m[1] == request) or (m[0] == ERROR and m[2] == request)
        )

    async def call(self, procedure: str, args: list[Any]) -> int:
        request = self.request()
        await self.send([CALL, request, {}, procedure, args])
        return request

    async def answer(self, request: int, timeout: float = TIMEOUT) -> list[Any]:
        """The RESULT or the ERROR for CALL ``request``."""
        return await self.expect(
            lambda m: (
                (m[0] == RESULT and m[1] == request)
                or (m[0] == ERROR and m[1] == CALL and m[2] == request)
            ),
            timeout,
        )

    async def closed(self, timeout: float = TIMEOUT) -> tuple[list[Any] | None, int | None]:
        """Read until the router closes: (the ABORT seen, if any; the close code)."""
        abort = next((m for m in self._backlog if m[0] == ABORT), None)
        try:
            while True:
                message = await self.next(timeout)
                if message[0] == ABORT:
                    abort = message
        except ConnectionClosed:
            pass
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return abort, self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()
