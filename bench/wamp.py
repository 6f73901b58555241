"""A deliberately thin WAMP v2 client over ``websockets.asyncio.client`` with msgpack.

It speaks the wire format directly with plain lists (no SDK, no message classes) so the
load generator measures the router, not a client library. Only what the scenarios need:
HELLO/WELCOME, SUBSCRIBE, REGISTER, GOODBYE; the scenarios drive CALL/PUBLISH themselves.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, Final
from urllib.parse import urlsplit

import msgpack
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from bench.fastws import FastConnection, connect_fast

HELLO: Final = 1
WELCOME: Final = 2
ABORT: Final = 3
GOODBYE: Final = 6
ERROR: Final = 8
PUBLISH: Final = 16
PUBLISHED: Final = 17
SUBSCRIBE: Final = 32
SUBSCRIBED: Final = 33
EVENT: Final = 36
CALL: Final = 48
RESULT: Final = 50
REGISTER: Final = 64
REGISTERED: Final = 65
INVOCATION: Final = 68
YIELD: Final = 70

MSGPACK: Final = Subprotocol("wamp.2.msgpack")

ROLES: Final[dict[str, Any]] = {
    "caller": {"features": {}},
    "callee": {"features": {}},
    "publisher": {"features": {}},
    "subscriber": {"features": {}},
}

Conn = ClientConnection | FastConnection

packb = msgpack.packb
unpackb = msgpack.unpackb


class WampError(Exception):
    """The router answered with ABORT or ERROR, or something unexpected."""


def check_local(url: str) -> None:
    """The benchmarks only ever connect to the loopback interface."""
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit(f"refusing to connect to {host!r}: the benchmarks use 127.0.0.1 only")


class Session:
    """One joined WAMP session: the raw connection plus a request-id counter."""

    __slots__ = ("_req", "session_id", "ws")

    def __init__(self, ws: Conn, session_id: int) -> None:
        self.ws = ws
        self.session_id = session_id
        self._req = 0

    def next_id(self) -> int:
        self._req += 1
        return self._req

    async def send(self, msg: list[Any]) -> None:
        await self.ws.send(packb(msg))

    async def recv(self) -> list[Any]:
        msg: list[Any] = unpackb(await self.ws.recv())
        return msg

    async def _request(self, msg: list[Any], ok_code: int) -> list[Any]:
        request_id = msg[1]
        await self.send(msg)
        while True:
            reply = await self.recv()
            if reply[0] == ok_code and reply[1] == request_id:
                return reply
            if reply[0] == ERROR and reply[2] == request_id:
                raise WampError(f"{msg[0]} failed: {reply[4]!r}")
            if reply[0] in (ABORT, GOODBYE):
                raise WampError(f"session ended: {reply!r}")
            # anything else (an early EVENT, say) is not ours to handle here

    async def subscribe(self, topic: str) -> int:
        reply = await self._request([SUBSCRIBE, self.next_id(), {}, topic], SUBSCRIBED)
        return int(reply[2])

    async def register(self, procedure: str) -> int:
        reply = await self._request([REGISTER, self.next_id(), {}, procedure], REGISTERED)
        return int(reply[2])

    async def close(self) -> None:
        """GOODBYE (waiting up to 2 s for the router's GOODBYE), then close the socket."""
        try:
            await self.send([GOODBYE, {}, "wamp.close.close_realm"])
            async with asyncio.timeout(2.0):
                while (await self.recv())[0] != GOODBYE:
                    pass
        except Exception:
            pass
        await self.ws.close()


CLIENTS: Final = ("fast", "websockets")


async def small_socket(url: str, rcvbuf: int, timeout: float) -> socket.socket:
    """A TCP socket connected to ``url``'s host and port whose receive buffer was shrunk to
    ``rcvbuf`` bytes before connecting (so the advertised window is small too: a peer that
    stops reading pushes back on the sender after a few KiB)."""
    parts = urlsplit(url)
    port = parts.port or 80
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(parts.hostname, port, type=socket.SOCK_STREAM)
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        async with asyncio.timeout(timeout):
            await loop.sock_connect(sock, addr)
    except BaseException:
        sock.close()
        raise
    return sock


async def join(
    url: str,
    realm: str = "realm1",
    *,
    open_timeout: float = 10.0,
    client: str = "fast",
    rcvbuf: int = 0,
) -> Session:
    """Open a WebSocket (``wamp.2.msgpack``, no compression, no pings) and join ``realm``.

    ``client="fast"`` uses the lean connection of ``bench.fastws``; ``"websockets"`` uses
    ``websockets.asyncio.client`` (several times more client CPU per message).
    ``rcvbuf``: set ``SO_RCVBUF`` to this many bytes before connecting (0: the default).
    """
    ws: Conn
    sock = await small_socket(url, rcvbuf, open_timeout) if rcvbuf else None
    if client == "fast":
        ws = await connect_fast(url, [MSGPACK], open_timeout=open_timeout, sock=sock)
    else:
        ws = await connect(
            url,
            **({"sock": sock} if sock is not None else {}),
            subprotocols=[MSGPACK],
            compression=None,
            ping_interval=None,
            open_timeout=open_timeout,
            close_timeout=2,
            max_size=16 * 1024 * 1024,
        )
    try:
        if ws.subprotocol != MSGPACK:
            raise WampError(f"router did not accept wamp.2.msgpack (got {ws.subprotocol!r})")
        await ws.send(packb([HELLO, realm, {"roles": ROLES}]))
        async with asyncio.timeout(open_timeout):
            reply = unpackb(await ws.recv())
        if reply[0] != WELCOME:
            raise WampError(f"HELLO answered with {reply!r}")
        return Session(ws, int(reply[1]))
    except BaseException:
        await ws.close()
        raise
