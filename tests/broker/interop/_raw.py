"""A raw ``wamp.2.json`` WebSocket client that sends hand-built message lists.

Used where Autobahn|Python exposes no option (``disclose_me``, CANCEL modes, a YIELD
with ``progress``) and for protocol violations no real client would commit.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable
from itertools import count
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

__all__ = [
    "ABORT",
    "CALL",
    "CANCEL",
    "ERROR",
    "EVENT",
    "INTERRUPT",
    "INVOCATION",
    "PUBLISH",
    "PUBLISHED",
    "REGISTER",
    "REGISTERED",
    "RESULT",
    "SUBSCRIBE",
    "SUBSCRIBED",
    "WELCOME",
    "YIELD",
    "RawClient",
]

WELCOME, ABORT, GOODBYE, ERROR = 2, 3, 6, 8
PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, EVENT = 16, 17, 32, 33, 36
CALL, CANCEL, RESULT = 48, 49, 50
REGISTER, REGISTERED, INVOCATION, INTERRUPT, YIELD = 64, 65, 68, 69, 70

TIMEOUT = 5.0

CLIENT_ROLES: dict[str, Any] = {
    "publisher": {
        "features": {
            "publisher_exclusion": True,
            "publisher_identification": True,
            "subscriber_blackwhite_listing": True,
        }
    },
    "subscriber": {
        "features": {"pattern_based_subscription": True, "publisher_identification": True}
    },
    "caller": {
        "features": {
            "call_canceling": True,
            "call_timeout": True,
            "caller_identification": True,
            "progressive_call_results": True,
        }
    },
    "callee": {
        "features": {
            "call_canceling": True,
            "caller_identification": True,
            "pattern_based_registration": True,
            "progressive_call_results": True,
            "shared_registration": True,
        }
    },
}


def json_bytes(data: bytes) -> str:
    """How wamp.2.json carries a binary value."""
    return "\u0000" + base64.b64encode(data).decode("ascii")


class RawClient:
    """One WebSocket connection speaking wamp.2.json by hand."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.session_id = 0
        self.welcome_details: dict[str, Any] = {}
        self._requests = count(1)
        self._backlog: list[list[Any]] = []

    @classmethod
    async def open(cls, url: str) -> RawClient:
        ws = await ws_connect(url, subprotocols=["wamp.2.json"], open_timeout=TIMEOUT)  # type: ignore[list-item]
        assert ws.subprotocol == "wamp.2.json"
        return cls(ws)

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        await self.ws.close()

    def next_request(self) -> int:
        return next(self._requests)

    # --- wire ----------------------------------------------------------------------------
    async def send(self, message: list[Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def send_text(self, text: str) -> None:
        await self.ws.send(text)

    async def _recv(self, timeout: float) -> list[Any]:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        assert isinstance(data, str), "wamp.2.json must use text frames"
        message = json.loads(data)
        assert isinstance(message, list)
        return message

    async def expect(
        self, predicate: Callable[[list[Any]], bool], timeout: float = TIMEOUT
    ) -> list[Any]:
        """The first message matching ``predicate``; others are kept for later."""
        for i, message in enumerate(self._backlog):
            if predicate(message):
                return self._backlog.pop(i)

        async def read() -> list[Any]:
            while True:
                message = await self._recv(timeout)
                if predicate(message):
                    return message
                self._backlog.append(message)

        return await asyncio.wait_for(read(), timeout)

    async def next_message(self, timeout: float = TIMEOUT) -> list[Any]:
        """The next message in arrival order (backlog first)."""
        if self._backlog:
            return self._backlog.pop(0)
        return await self._recv(timeout)

    async def wait_closed(self, timeout: float = TIMEOUT) -> int | None:
        """Wait until the router closed the connection; return the close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except ConnectionClosed:
            pass
        await asyncio.wait_for(self.ws.wait_closed(), timeout)
        return self.ws.close_code

    # --- session -------------------------------------------------------------------------
    async def hello(self, realm: str = "realm1", **details: Any) -> list[Any]:
        """Send HELLO and return the WELCOME."""
        await self.send([1, realm, {"roles": CLIENT_ROLES, **details}])
        welcome = await self.next_message()
        assert welcome[0] == WELCOME, welcome
        self.session_id = welcome[1]
        self.welcome_details = welcome[2]
        return welcome

    async def publish(
        self,
        topic: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> list[Any]:
        """PUBLISH with acknowledge and return the PUBLISHED (or ERROR)."""
        request = self.next_request()
        await self.send(
            [PUBLISH, request, {"acknowledge": True, **options}, topic, args or [], kwargs or {}]
        )
        return await self.expect(
            lambda m: m[0] in (PUBLISHED, ERROR) and m[1 if m[0] == PUBLISHED else 2] == request
        )

    async def call(
        self,
        procedure: str,
        args: list[Any] | None = None,
        kwargs: dict[str, Any] | None = None,
        **options: Any,
    ) -> int:
        """Send CALL and return its request ID (the answer is read with ``answer``)."""
        request = self.next_request()
        await self.send([CALL, request, options, procedure, args or [], kwargs or {}])
        return request

    async def answer(self, request: int, timeout: float = TIMEOUT) -> list[Any]:
        """The final RESULT or the ERROR for a CALL."""
        return await self.expect(
            lambda m: (
                (m[0] == RESULT and m[1] == request and not m[2].get("progress"))
                or (m[0] == ERROR and m[1] == CALL and m[2] == request)
            ),
            timeout,
        )

    async def cancel(self, request: int, **options: Any) -> None:
        await self.send([CANCEL, request, options])

    async def register(self, procedure: str, **options: Any) -> int:
        """REGISTER and return the registration ID."""
        request = self.next_request()
        await self.send([REGISTER, request, options, procedure])
        reply = await self.expect(lambda m: m[0] in (REGISTERED, ERROR) and request in m[1:3])
        assert reply[0] == REGISTERED, reply
        return int(reply[2])
