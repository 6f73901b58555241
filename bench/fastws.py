"""A lean WebSocket client connection for the load generator (``--client fast``, the default).

The opening handshake is done by the websockets library's sans-I/O ``ClientProtocol``
(request, ``Sec-WebSocket-Accept`` check, subprotocol negotiation). After it, frames go
through a small codec on an ``asyncio.Protocol``: whole frames are sliced out of each
``data_received`` chunk in one loop, and a frame is sent with a single ``transport.write``.
This keeps the client several times cheaper per message than ``websockets.asyncio.client``
(``--client websockets``), so one client core can saturate a router on the other core.

Client frames are masked (RFC 6455 requires it) with an all-zero masking key, which leaves
the payload bytes unchanged; the server still does its full unmasking work. Fine for a
loopback benchmark, not for the open Internet.

The connection offers the subset of ``ClientConnection`` the scenarios use:
``await send(bytes)``, ``await recv()``, ``await close()``, ``subprotocol``.
"""

from __future__ import annotations

import asyncio
import collections
import socket
import struct
from typing import Any

from websockets.client import ClientProtocol
from websockets.exceptions import ConnectionClosedError, InvalidHandshake
from websockets.http11 import Response
from websockets.protocol import State
from websockets.typing import Subprotocol
from websockets.uri import parse_uri

_MASK = b"\x00\x00\x00\x00"
_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")
_RECV_HIGH = 4096  # queued messages before we stop reading from the socket
_RECV_LOW = 1024


def frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One final, masked (zero key) client frame."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, 0x80 | n)) + _MASK + payload
    if n < 65536:
        return _H16.pack(first, 0xFE, n) + _MASK + payload
    return _H64.pack(first, 0xFF, n) + _MASK + payload


class FastConnection(asyncio.Protocol):
    """A client WebSocket connection; see the module docstring."""

    def __init__(self, protocol: ClientProtocol) -> None:
        self._hs: ClientProtocol | None = protocol
        self._handshake: asyncio.Future[Response] = asyncio.get_running_loop().create_future()
        self.transport: asyncio.Transport | None = None
        self.subprotocol: Subprotocol | None = None
        self._buf = bytearray()
        self._frag = bytearray()
        self._fragmenting = False
        self._queue: collections.deque[bytes] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._paused_reading = False
        self._write_ready: asyncio.Future[None] | None = None
        self._closed: BaseException | None = None

    # -- asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        assert self._hs is not None
        self._hs.send_request(self._hs.connect())
        for chunk in self._hs.data_to_send():
            transport.write(chunk)

    def data_received(self, data: bytes) -> None:
        if self._hs is not None:
            self._handshake_data(data)
            return
        buf = self._buf
        if buf:
            buf += data
            data = bytes(buf)
            buf.clear()
        n = len(data)
        pos = 0
        queue = self._queue
        got = False
        while n - pos >= 2:
            b0 = data[pos]
            ln = data[pos + 1]
            if ln & 0x80:
                self._fail("masked frame from the server")
                return
            if ln < 126:
                hl = 2
            elif ln == 126:
                if n - pos < 4:
                    break
                ln = (data[pos + 2] << 8) | data[pos + 3]
                hl = 4
            else:
                if n - pos < 10:
                    break
                ln = int.from_bytes(data[pos + 2 : pos + 10], "big")
                hl = 10
            end = pos + hl + ln
            if end > n:
                break
            payload = data[pos + hl : end]
            pos = end
            opcode = b0 & 0x0F
            if opcode == 0x2 or opcode == 0x1:
                if b0 & 0x80:
                    queue.append(payload)
                    got = True
                else:
                    self._fragmenting = True
                    self._frag += payload
            elif opcode == 0x0:
                self._frag += payload
                if b0 & 0x80:
                    queue.append(bytes(self._frag))
                    self._frag.clear()
                    self._fragmenting = False
                    got = True
            elif opcode == 0x9:  # ping
                self._write(frame(payload, 0xA))
            elif opcode == 0x8:  # close: answer and drop the connection
                self._write(frame(payload[:2], 0x8))
                self._closed = ConnectionClosedError(None, None)
                assert self.transport is not None
                self.transport.close()
                break
        if pos < n:
            self._buf += data[pos:]
        if got:
            waiter = self._waiter
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
            if len(queue) > _RECV_HIGH and not self._paused_reading and self.transport:
                self._paused_reading = True
                self.transport.pause_reading()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closed is None:
            self._closed = ConnectionClosedError(None, None)
        if not self._handshake.done():
            self._handshake.set_exception(exc or ConnectionError("closed during handshake"))
        for fut in (self._waiter, self._write_ready):
            if fut is not None and not fut.done():
                fut.set_result(None)

    def pause_writing(self) -> None:
        if self._write_ready is None or self._write_ready.done():
            self._write_ready = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._write_ready is not None and not self._write_ready.done():
            self._write_ready.set_result(None)

    # -- the part of ClientConnection the scenarios use

    async def send(self, payload: bytes) -> None:
        if self._closed is not None:
            raise self._closed
        self._write(frame(payload))
        ready = self._write_ready
        if ready is not None and not ready.done():
            await ready

    async def recv(self) -> bytes:
        queue = self._queue
        while not queue:
            if self._closed is not None:
                raise self._closed
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None
        if self._paused_reading and len(queue) < _RECV_LOW and self.transport:
            self._paused_reading = False
            self.transport.resume_reading()
        return queue.popleft()

    async def recv_batch(self) -> list[bytes]:
        """Every message received so far (at least one; waits for it)."""
        if not self._queue:
            await self.recv_wait()
        batch = list(self._queue)
        self._queue.clear()
        if self._paused_reading and self.transport:
            self._paused_reading = False
            self.transport.resume_reading()
        return batch

    async def recv_wait(self) -> None:
        while not self._queue:
            if self._closed is not None:
                raise self._closed
            self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
            self._waiter = None

    async def close(self, code: int = 1000) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self._write(frame(code.to_bytes(2, "big"), 0x8))
        # Wait briefly for the server's close frame / TCP close, then drop the socket.
        try:
            async with asyncio.timeout(2.0):
                while self._closed is None:
                    await self.recv()
        except (TimeoutError, ConnectionClosedError):
            pass
        self.transport.close()

    # -- internals

    def _write(self, data: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(data)

    def _fail(self, reason: str) -> None:
        self._closed = ConnectionClosedError(None, None)
        if self.transport is not None:
            self.transport.abort()

    def _handshake_data(self, data: bytes) -> None:
        hs = self._hs
        assert hs is not None
        hs.receive_data(data)
        for event in hs.events_received():
            if isinstance(event, Response):
                self._hs = None
                if hs.state is not State.OPEN:
                    exc = hs.handshake_exc or InvalidHandshake("handshake failed")
                    self._handshake.set_exception(exc)
                    return
                self.subprotocol = hs.subprotocol
                self._handshake.set_result(event)
                return


async def connect_fast(
    url: str,
    subprotocols: list[Subprotocol],
    open_timeout: float = 10.0,
    sock: socket.socket | None = None,
    **_options: Any,
) -> FastConnection:
    """Open a ``FastConnection`` to ``url`` (``ws://`` only) offering ``subprotocols``
    (over ``sock`` when given: an already connected TCP socket)."""
    uri = parse_uri(url)
    protocol = ClientProtocol(uri, subprotocols=subprotocols, max_size=None)
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(open_timeout):
        if sock is not None:
            _, conn = await loop.create_connection(lambda: FastConnection(protocol), sock=sock)
        else:
            _, conn = await loop.create_connection(
                lambda: FastConnection(protocol), uri.host, uri.port
            )
        try:
            await conn._handshake
        except BaseException:
            if conn.transport is not None:
                conn.transport.abort()
            raise
    return conn
