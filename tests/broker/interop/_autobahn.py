"""Autobahn|Python (asyncio) sessions for the interop tests.

``connect`` joins ``realm1`` (or another realm) with one chosen serializer and returns
a joined ``Client``. Every client records the raw decoded frames it receives
(``client.frames``), so a test can check what the router put on the wire even where
Autobahn hides it (an INTERRUPT, the ERROR answering a CANCEL, the WELCOME roles).
``ClientPool`` closes every client it made, cleanly, at teardown.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any
from urllib.parse import urlparse

import autobahn.asyncio  # noqa: F401  (selects txaio's asyncio flavour)
from autobahn.asyncio.wamp import ApplicationSession
from autobahn.asyncio.websocket import WampWebSocketClientFactory
from autobahn.wamp.serializer import CBORSerializer, JsonSerializer, MsgPackSerializer
from autobahn.wamp.types import CloseDetails, ComponentConfig, SessionDetails

__all__ = ["SERIALIZERS", "Client", "ClientPool", "FrameLog", "connect"]

SERIALIZERS: dict[str, Callable[[], Any]] = {
    "json": JsonSerializer,
    "msgpack": MsgPackSerializer,
    "cbor": CBORSerializer,
}

TIMEOUT = 5.0


class FrameLog:
    """Every raw message (a list) a client decoded, in arrival order."""

    def __init__(self) -> None:
        self.frames: list[list[Any]] = []
        self._changed = asyncio.Event()

    def add(self, messages: list[Any]) -> None:
        self.frames.extend(messages)
        self._changed.set()

    def of_type(self, code: int) -> list[list[Any]]:
        """The frames received so far whose message type is ``code``."""
        return [f for f in self.frames if f and f[0] == code]

    async def wait_for(
        self, predicate: Callable[[list[Any]], bool], timeout: float = TIMEOUT
    ) -> list[Any]:
        """The first frame (already received or yet to come) matching ``predicate``."""

        async def scan() -> list[Any]:
            seen = 0
            while True:
                for frame in self.frames[seen:]:
                    if predicate(frame):
                        return frame
                seen = len(self.frames)
                self._changed.clear()
                await self._changed.wait()

        return await asyncio.wait_for(scan(), timeout)


class Client(ApplicationSession):
    """An ordinary Autobahn session that reports join, leave and disconnect as futures."""

    frames: FrameLog
    tcp: asyncio.Transport
    welcome: SessionDetails
    id: int  # the WAMP session ID the router assigned (kept after leaving)

    def __init__(
        self,
        config: ComponentConfig,
        authid: str | None,
        joined: asyncio.Future[Client],
    ) -> None:
        super().__init__(config)
        loop = asyncio.get_running_loop()
        self._wanted_authid = authid
        self._joined = joined
        self.left: asyncio.Future[CloseDetails] = loop.create_future()
        self.disconnected: asyncio.Future[None] = loop.create_future()

    def onConnect(self) -> None:
        self.join(self.config.realm, authmethods=["anonymous"], authid=self._wanted_authid)

    def onJoin(self, details: SessionDetails) -> None:
        self.welcome = details
        assert details.session is not None
        self.id = details.session
        if not self._joined.done():
            self._joined.set_result(self)

    def onLeave(self, details: CloseDetails) -> None:
        if not self.left.done():
            self.left.set_result(details)
        super().onLeave(details)

    def onDisconnect(self) -> None:
        if not self.disconnected.done():
            self.disconnected.set_result(None)
        if not self._joined.done():
            self._joined.set_exception(ConnectionError("disconnected before joining"))

    def drop(self) -> None:
        """Lose the connection abruptly: no GOODBYE, no WebSocket close handshake."""
        self.tcp.abort()

    async def close(self) -> None:
        """Leave with GOODBYE if still joined, and wait until the transport is gone."""
        if self.is_attached():
            self.leave()
        try:
            await asyncio.wait_for(asyncio.shield(self.disconnected), TIMEOUT)
        except TimeoutError:
            self.tcp.abort()


def recording_session(
    serializer: str, realm: str, authid: str | None = None
) -> tuple[Any, asyncio.Future[Client], Callable[[], Client]]:
    """(serializer, joined future, session factory) for one Autobahn client whose
    received frames are recorded in ``session.frames`` (any transport)."""
    loop = asyncio.get_running_loop()
    ser = SERIALIZERS[serializer]()
    log = FrameLog()
    inner = ser._serializer
    unserialize = inner.unserialize

    def recording(payload: bytes) -> list[Any]:
        messages: list[Any] = unserialize(payload)
        log.add(messages)
        return messages

    inner.unserialize = recording
    joined: asyncio.Future[Client] = loop.create_future()

    def make_session() -> Client:
        session = Client(ComponentConfig(realm=realm), authid, joined)
        session.frames = log
        return session

    return ser, joined, make_session


async def connect(
    url: str,
    serializer: str = "json",
    *,
    realm: str = "realm1",
    authid: str | None = None,
) -> Client:
    """Open a WebSocket to ``url`` with one serializer and join ``realm``."""
    ser, joined, make_session = recording_session(serializer, realm, authid)
    factory = WampWebSocketClientFactory(make_session, url=url, serializers=[ser])
    parsed = urlparse(url)
    assert parsed.hostname is not None and parsed.port is not None
    loop = asyncio.get_running_loop()
    transport, _protocol = await loop.create_connection(factory, parsed.hostname, parsed.port)
    try:
        client = await asyncio.wait_for(joined, TIMEOUT)
    except BaseException:
        transport.abort()
        raise
    client.tcp = transport
    return client


class ClientPool:
    """Makes clients for one test and closes them all at its end."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.clients: list[Client] = []

    async def connect(
        self,
        serializer: str = "json",
        *,
        url: str | None = None,
        realm: str = "realm1",
        authid: str | None = None,
    ) -> Client:
        client = await connect(url or self.url, serializer, realm=realm, authid=authid)
        self.clients.append(client)
        return client

    async def close_all(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        self.clients.clear()
