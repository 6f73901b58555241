"""RawSocket transport (WAMP spec "RawSocket Transport"): TCP, TLS or a Unix socket.

Handshake: the client sends four octets ``0x7F``, ``LLLL SSSS`` (it accepts messages
up to ``2 ** (9 + LLLL)`` bytes, serializer ``SSSS``: 1 JSON, 2 MessagePack, 3 CBOR)
and two reserved zero octets. The router answers ``0x7F``, its own length exponent
with the chosen serializer, ``0``, ``0`` — or an error: ``0x7F``, ``EEEE 0000``,
``0``, ``0`` (``HandshakeError``) and closes. After it, every message travels in a
frame with a 4-octet header: five reserved zero bits, a 3-bit type (0 WAMP message,
1 PING, 2 PONG) and a 24-bit big-endian payload length. A PING is answered with a
PONG carrying the same payload; a frame over the router's maximum, a reserved bit
or type, ends the session (ABORT ``wamp.error.protocol_violation``, then close).
"""

from __future__ import annotations

import asyncio
import enum
import logging
from typing import Final, cast

from protocol_spec.errors import CloseCode
from protocol_spec.serializers import SERIALIZERS, Serializer

from .peer import CorkedWriter, SessionHub, WampPeer, peer_address, reset_connection

__all__ = [
    "MAGIC",
    "FrameType",
    "HandshakeError",
    "RawSocketConnection",
    "RawSocketPeer",
    "length_exponent",
]

log = logging.getLogger(__name__)

MAGIC: Final = 0x7F
MAX_EXPONENT: Final = 15  # 2 ** 24 bytes: the most a 24-bit length can say
_BY_ID: Final = {s.rawsocket_id: s for s in SERIALIZERS}


class HandshakeError(enum.IntEnum):
    """Error codes of the handshake reply (upper nibble of its second octet)."""

    SERIALIZER_UNSUPPORTED = 1
    LENGTH_UNACCEPTABLE = 2
    RESERVED_BITS_USED = 3
    CONNECTION_LIMIT = 4


class FrameType(enum.IntEnum):
    """The 3-bit frame type of the frame header."""

    MESSAGE = 0
    PING = 1
    PONG = 2


def length_exponent(max_size: int) -> int:
    """The largest ``LLLL`` whose ``2 ** (9 + LLLL)`` does not exceed ``max_size``."""
    exponent = 0
    while exponent < MAX_EXPONENT and 2 ** (10 + exponent) <= max_size:
        exponent += 1
    return exponent


def _header(kind: int, size: int) -> bytes:
    return bytes((kind, (size >> 16) & 0xFF, (size >> 8) & 0xFF, size & 0xFF))


class RawSocketPeer(WampPeer):
    """The core's ``Peer`` for one RawSocket connection."""

    __slots__ = ("connection", "peer_max")

    kind = "rawsocket"

    def __init__(
        self,
        hub: SessionHub,
        serializer: Serializer,
        connection: RawSocketConnection,
        peer_max: int,
    ) -> None:
        super().__init__(hub, serializer, connection.address)
        self.connection = connection
        self.peer_max = peer_max
        # peers announcing the same maximum share frames (a larger one may not fit all)
        self.cache_key = f"{self.kind}:{serializer.name}:{peer_max}"

    def frame(self, payload: bytes) -> bytes:
        """The 4-octet header (a WAMP message) and the payload."""
        size = len(payload)
        if size > self.peer_max:
            raise ValueError(f"{size} bytes is over the peer's maximum of {self.peer_max}")
        return _header(0, size) + payload

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Close after what was already sent (RawSocket has no close frame)."""
        if self._closing is None:
            self._closing = (code, reason)
        self.connection.close()

    def close_slow(self) -> None:
        self.connection.close()

    def ping(self) -> None:
        self.connection.send_frame(FrameType.PING, b"keepalive")


class RawSocketConnection(asyncio.Protocol):
    """One RawSocket connection: handshake, then frames to and from its peer."""

    def __init__(self, hub: SessionHub) -> None:
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.peer: RawSocketPeer | None = None
        self.address = "unknown"
        self._buffer = bytearray()
        self._max = 2 ** (9 + length_exponent(hub.settings.max_message_size))
        self._timer: asyncio.TimerHandle | None = None
        self.writer: CorkedWriter | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        self.hub.transports.add(transport)
        self.address = peer_address(transport)
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.hub.settings.open_timeout, transport.close)

    def data_received(self, data: bytes) -> None:
        buffer = self._buffer
        buffer += data
        peer = self.peer
        if peer is None:
            if len(buffer) < 4 or self.transport is None or self.transport.is_closing():
                return
            if not self._handshake(bytes(buffer[:4])):
                return
            del buffer[:4]
            peer = self.peer
            assert peer is not None
        else:
            peer.heard = True
        self._frames(peer)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self.transport is not None:
            self.hub.transports.discard(self.transport)
        peer = self.peer
        if peer is not None:
            self.hub.closed(peer, "rawsocket closed")
            self.peer = None

    # --- handshake and frames -------------------------------------------------------------
    def _handshake(self, hello: bytes) -> bool:
        """Answer the client's four octets; True when the session is open."""
        transport = self.transport
        assert transport is not None
        if hello[0] != MAGIC:
            log.info("rawsocket from %s: wrong magic octet 0x%02x", self.address, hello[0])
            transport.close()
            return False
        serializer = _BY_ID.get(hello[1] & 0x0F)
        error: HandshakeError | None = None
        if hello[2] or hello[3]:
            error = HandshakeError.RESERVED_BITS_USED
        elif serializer is None:
            error = HandshakeError.SERIALIZER_UNSUPPORTED
        elif self.hub.full:
            error = HandshakeError.CONNECTION_LIMIT
        if error is not None or serializer is None:
            code = error or HandshakeError.SERIALIZER_UNSUPPORTED
            log.info("rawsocket from %s refused: %s", self.address, code.name.lower())
            transport.write(bytes((MAGIC, code << 4, 0, 0)))
            transport.close()
            return False
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        exponent = length_exponent(self._max)
        transport.write(bytes((MAGIC, (exponent << 4) | serializer.rawsocket_id, 0, 0)))
        peer_max = 2 ** (9 + (hello[1] >> 4))
        self.peer = peer = RawSocketPeer(self.hub, serializer, self, peer_max)
        self.writer = peer.buffer = CorkedWriter(self.hub, transport)
        self.hub.open(peer)
        return True

    def _frames(self, peer: RawSocketPeer) -> None:
        """Take every complete frame off the buffer."""
        buffer = self._buffer
        pos, end = 0, len(buffer)
        limit = self._max
        while end - pos >= 4 and peer.session is not None and not peer.closing:
            kind = buffer[pos]
            size = int.from_bytes(buffer[pos + 1 : pos + 4], "big")
            if kind > FrameType.PONG:
                peer.protocol_violation(f"RawSocket frame header 0x{kind:02x}: reserved bits")
                break
            if size > limit:
                peer.protocol_violation(f"RawSocket frame of {size} bytes (maximum {limit})")
                break
            if end - pos - 4 < size:
                break
            payload = bytes(buffer[pos + 4 : pos + 4 + size])
            pos += 4 + size
            if kind == FrameType.MESSAGE:
                peer.receive(payload)
            elif kind == FrameType.PING:
                self.send_frame(FrameType.PONG, payload)
        if peer.closing:
            buffer.clear()
        elif pos:
            del buffer[:pos]

    # --- output ---------------------------------------------------------------------------
    def send_frame(self, kind: FrameType, payload: bytes) -> None:
        """Write a PING or PONG frame."""
        transport = self.transport
        if transport is not None and not transport.is_closing():
            if self.writer is not None:
                self.writer.flush()
            transport.write(_header(kind, len(payload)) + payload)

    def close(self) -> None:
        """Close after the buffered bytes; reset if they are not taken in time."""
        transport = self.transport
        if transport is None or self._timer is not None:
            return
        if self.writer is not None:
            self.writer.flush()
        transport.close()
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.hub.settings.close_timeout, reset_connection, transport)
