"""Small helpers for the security tests: a raw JSON WAMP client and Autobahn joins.

``RawClient`` speaks ``wamp.2.json`` with hand-built lists so a test sees exactly
what the router answers (ERROR URIs, ABORT reasons, close codes). ``autobahn_join``
joins with a real Autobahn|Python session and any authmethod, answering the
CHALLENGE with a function the test supplies.
"""

from __future__ import annotations

import asyncio
import json
import ssl
from collections.abc import Callable
from itertools import count
from typing import Any
from urllib.parse import urlparse

import autobahn.asyncio  # noqa: F401  (selects txaio's asyncio flavour)
from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp.serializer import JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import ComponentConfig
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

HELLO, WELCOME, ABORT, CHALLENGE, AUTHENTICATE, GOODBYE, ERROR = 1, 2, 3, 4, 5, 6, 8
PUBLISH, PUBLISHED, SUBSCRIBE, SUBSCRIBED, EVENT = 16, 17, 32, 33, 36
CALL, RESULT, REGISTER, REGISTERED, INVOCATION, YIELD = 48, 50, 64, 65, 68, 70
TIMEOUT = 5.0
ROLES: dict[str, Any] = {
    "publisher": {"features": {}},
    "subscriber": {"features": {"pattern_based_subscription": True}},
    "caller": {"features": {}},
    "callee": {"features": {"pattern_based_registration": True}},
}


class Aborted(Exception):
    """The router answered HELLO/AUTHENTICATE with ABORT."""

    def __init__(self, reason: str, details: dict[str, Any]) -> None:
        super().__init__(reason, details)
        self.reason = reason
        self.details = details


class RawClient:
    """A wamp.2.json WebSocket client driven message by message."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.requests = count(1)
        self.welcome: list[Any] = []

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> RawClient:
        ws = await ws_connect(url, subprotocols=["wamp.2.json"], **kwargs)  # type: ignore[list-item]
        return cls(ws)

    async def send(self, message: list[Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def recv(self, timeout: float = TIMEOUT) -> list[Any]:
        data = await asyncio.wait_for(self.ws.recv(), timeout)
        message: list[Any] = json.loads(data)
        return message

    async def recv_type(self, code: int, timeout: float = TIMEOUT) -> list[Any]:
        """The next message of type ``code`` (others are skipped)."""
        while True:
            message = await self.recv(timeout)
            if message[0] == code:
                return message

    async def join(
        self,
        realm: str,
        *,
        authmethods: list[str] | None = None,
        authid: str | None = None,
        authextra: dict[str, Any] | None = None,
        sign: Callable[[dict[str, Any]], str] | None = None,
    ) -> list[Any]:
        """HELLO (and AUTHENTICATE via ``sign``); return WELCOME or raise ``Aborted``."""
        details: dict[str, Any] = {"roles": ROLES}
        if authmethods is not None:
            details["authmethods"] = authmethods
        if authid is not None:
            details["authid"] = authid
        if authextra is not None:
            details["authextra"] = authextra
        await self.send([HELLO, realm, details])
        reply = await self.recv()
        if reply[0] == CHALLENGE:
            assert sign is not None, reply
            await self.send([AUTHENTICATE, sign(reply[2]), {}])
            reply = await self.recv()
        if reply[0] == ABORT:
            raise Aborted(reply[2], reply[1])
        assert reply[0] == WELCOME, reply
        self.welcome = reply
        return reply

    async def request(self, message: list[Any], answer: int) -> list[Any]:
        """Send a request (its ID filled in at index 1); return the answer or ERROR."""
        request = next(self.requests)
        await self.send([message[0], request, *message[1:]])
        while True:
            reply = await self.recv()
            if reply[0] in (answer, ERROR) and reply[1 if reply[0] != ERROR else 2] == request:
                return reply

    async def close_reason(self, timeout: float = TIMEOUT) -> tuple[list[Any] | None, int | None]:
        """Read until the router closes: (the ABORT/GOODBYE seen, close code)."""
        last: list[Any] | None = None
        try:
            while True:
                message = await self.recv(timeout)
                if message[0] in (ABORT, GOODBYE):
                    last = message
        except ConnectionClosed:
            pass
        return last, self.ws.close_code

    async def close(self) -> None:
        await self.ws.close()


async def autobahn_join(
    url: str,
    realm: str,
    *,
    authmethods: list[str],
    authid: str | None = None,
    authextra: dict[str, Any] | None = None,
    on_challenge: Callable[[Any], str] | None = None,
    serializer: str = "json",
    ssl_context: ssl.SSLContext | None = None,
) -> Any:
    """Join with Autobahn|Python; return the joined session or raise ``Aborted``."""
    loop = asyncio.get_running_loop()
    joined: asyncio.Future[Any] = loop.create_future()

    class Session(ApplicationSession):  # type: ignore[misc]
        def onConnect(self) -> None:
            self.join(realm, authmethods=authmethods, authid=authid, authextra=authextra)

        def onChallenge(self, challenge: Any) -> str:
            assert on_challenge is not None
            return on_challenge(challenge)

        def onJoin(self, details: Any) -> None:
            self.details = details
            if not joined.done():
                joined.set_result(self)

        def onLeave(self, details: Any) -> None:
            if not joined.done():
                joined.set_exception(Aborted(details.reason, {"message": details.message}))
            self.disconnect()

        def onDisconnect(self) -> None:
            if not joined.done():
                joined.set_exception(ConnectionError("disconnected before joining"))

    ser = JsonSerializer() if serializer == "json" else MsgPackSerializer()
    factory = WampWebSocketClientFactory(
        lambda: Session(ComponentConfig(realm=realm)), url=url, serializers=[ser]
    )
    parsed = urlparse(url)
    await loop.create_connection(factory, parsed.hostname, parsed.port, ssl=ssl_context)
    return await asyncio.wait_for(joined, TIMEOUT)
