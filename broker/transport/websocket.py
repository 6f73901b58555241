"""WebSocket transport on websockets' documented sans-I/O ``ServerProtocol``.

``WebSocketConnection`` is our own ``asyncio.Protocol`` around a
``websockets.server.ServerProtocol``: the protocol does the opening handshake
(subprotocol, Origin, the 101 or the refusal), ping/pong, fragmentation, the size
limit, UTF-8 checks of fragmented text, and the closing handshake; we feed it bytes
(``receive_data``), take its events and write what it wants sent.

The read path cuts frames itself (``_frames``): a final, unfragmented, masked text
or binary frame within ``max_message_size`` — nearly every WAMP message — is
unmasked, checked (UTF-8 for text) and handed to the ``WebSocketPeer`` at once,
without a generator step or event object per frame. Every other frame goes whole
to the protocol, so it always sees frame boundaries; a header invalid by itself
(unmasked, reserved bits, oversized) goes to it with all that follows, and the
protocol fails the connection with the right code (1002, 1009).

Outgoing WAMP messages skip the protocol object: each is framed once per serializer
(``WebSocketPeer.frame``; recipients of an EVENT share the bytes) and queued on the
peer's ``CorkedWriter`` (one write per peer per loop iteration). Negotiation: the
client's most preferred WAMP subprotocol; a client offering none gets HTTP 400, a
browser Origin not allowed HTTP 403, a node at ``max_sessions`` HTTP 503.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import struct
from collections.abc import Sequence
from http import HTTPStatus
from typing import cast

from websockets.exceptions import NegotiationError
from websockets.frames import CloseCode as WsCloseCode
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol

from broker.config import TransportSettings  # re-exported: its former home
from protocol_spec import errors
from protocol_spec.errors import CloseCode
from protocol_spec.serializers import SUBPROTOCOLS, Serializer, by_subprotocol

from .peer import (
    CorkedWriter,
    SessionHub,
    WampPeer,
    peer_address,
    reset_connection,
)

__all__ = ["TransportSettings", "WebSocketConnection", "WebSocketPeer", "select_subprotocol"]

log = logging.getLogger(__name__)

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")
_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_SERVER_HEADER = "wamp-broker"
_MAX_HEAD = 16 * 1024
_NO_MASK = b"\x00\x00\x00\x00"
_SUBPROTOCOLS = [Subprotocol(p) for p in SUBPROTOCOLS]
_WS_LOGGER = logging.getLogger("websockets.server")


class WebSocketPeer(WampPeer):
    """The core's ``Peer`` for one WebSocket connection."""

    __slots__ = ("_first", "connection")

    kind = "websocket"

    def __init__(self, hub: SessionHub, serializer: Serializer, connection: WebSocketConnection):
        super().__init__(hub, serializer, connection.address)
        self.connection = connection
        self._first = 0x80 | (Opcode.BINARY if serializer.binary else Opcode.TEXT)

    def frame(self, payload: bytes) -> bytes:
        """An unmasked, unfragmented server frame (RFC 6455 §5.2) carrying ``payload``."""
        size = len(payload)
        if size < 126:
            return bytes((self._first, size)) + payload
        if size < 65536:
            return _H16.pack(self._first, 126, size) + payload
        return _H64.pack(self._first, 127, size) + payload

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """Start the closing handshake with ``code`` after what was already sent."""
        if self._closing is None:
            self._closing = (code, reason)
            self.connection.close(code, reason)

    def close_slow(self) -> None:
        """Close 1008 ``wamp.error.slow_consumer``; reset if not closed in time."""
        code, reason = self._closing or (1008, errors.SLOW_CONSUMER)
        self.connection.close(code, reason)

    def ping(self) -> None:
        self.connection.ping()

    def ping_failed(self) -> None:
        self.connection.fail(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")


class WebSocketConnection(asyncio.Protocol):
    """One WebSocket connection: the sans-I/O protocol under an ``asyncio.Protocol``."""

    __slots__ = (
        "_buf",
        "_closer",
        "_fragments",
        "_max_size",
        "_need",
        "_raw",
        "address",
        "hub",
        "peer",
        "transport",
        "writer",
        "ws",
    )

    def __init__(self, hub: SessionHub) -> None:
        settings = hub.settings
        self.ws = ServerProtocol(
            origins=_origins(settings.allowed_origins),
            subprotocols=_SUBPROTOCOLS,
            select_subprotocol=select_subprotocol,
            max_size=settings.max_message_size,
            logger=_WS_LOGGER,
        )
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.peer: WebSocketPeer | None = None
        self.address = "unknown"
        self._fragments: list[bytes] | None = None
        self._buf = bytearray()  # an incomplete frame (or request head)
        self._need = 0  # bytes ``_buf`` must hold before it is worth parsing again
        self._raw = False  # True once a bad header went to the protocol: all bytes follow
        self._max_size = settings.max_message_size
        self._closer: asyncio.TimerHandle | None = None
        self.writer: CorkedWriter | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        self.address = peer_address(transport)

    def data_received(self, data: bytes) -> None:
        peer = self.peer
        if peer is None:
            self._before_open(data)
            return
        peer.heard = True
        if self._raw:
            self._protocol_data(data)
            return
        buf = self._buf
        if buf:
            buf += data
            if len(buf) < self._need:
                return  # the frame waited for is still incomplete
            data = bytes(buf)
            buf.clear()
        self._frames(data, peer)

    def _before_open(self, data: bytes) -> None:
        """Feed the request head (only) to the protocol and answer it."""
        buf = self._buf
        buf += data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            if len(buf) > _MAX_HEAD and self.transport is not None:
                self.transport.close()
            return
        head, rest = bytes(buf[: end + 4]), bytes(buf[end + 4 :])
        buf.clear()
        ws = self.ws
        ws.receive_data(head)
        events = ws.events_received()
        if ws.state is State.CONNECTING and events and isinstance(events[0], Request):
            self._handshake(events[0])
        self._flush()
        if self.peer is not None and rest:
            self.data_received(rest)

    def _frames(self, data: bytes, peer: WebSocketPeer) -> None:
        """Take whole frames off ``data``: plain data frames here, the others to the protocol.

        A final, unfragmented, masked text or binary frame within ``max_message_size``
        (nearly every WAMP message) is unmasked and delivered here; any other complete
        frame (control, fragment, unknown opcode) goes whole to websockets'
        ``ServerProtocol``, which thus always sees frame boundaries. A header that is
        invalid by itself (unmasked, reserved bits, too large) goes to the protocol with
        everything after it, and the protocol fails the connection.
        """
        n, pos, need = len(data), 0, 0
        max_size = self._max_size
        while pos < n:
            if n - pos < 2:
                need = 2
                break
            b0, b1 = data[pos], data[pos + 1]
            size, head = b1 & 0x7F, 2
            if size == 126:
                head, size = 4, int.from_bytes(data[pos + 2 : pos + 4], "big")
            elif size == 127:
                head, size = 10, int.from_bytes(data[pos + 2 : pos + 10], "big")
            if n - pos < head:
                need = head
                break
            if not b1 & 0x80 or b0 & 0x70 or size > max_size or (b0 & 0x08 and size > 125):
                self._raw = True  # invalid by its header alone: the protocol fails it
                self._protocol_data(data[pos:])
                return
            end = pos + head + 4 + size
            if end > n:
                need = end - pos
                break
            if (b0 == 0x81 or b0 == 0x82) and self._fragments is None:
                payload = _unmask(data[pos + head + 4 : end], data[pos + head : pos + head + 4])
                pos = end
                if b0 == 0x82:
                    peer.receive(payload)
                    continue
                try:
                    text = payload.decode("utf-8")
                except UnicodeDecodeError:
                    self.fail(WsCloseCode.INVALID_DATA, "invalid UTF-8 in a text frame")
                    return
                peer.receive(text)
            else:
                self._protocol_data(data[pos:end])
                pos = end
        if pos < n:
            self._buf += data[pos:]
            self._need = need

    def _protocol_data(self, data: bytes) -> None:
        """Bytes for websockets' protocol: control frames, fragments, invalid frames."""
        ws = self.ws
        ws.receive_data(data)
        peer = self.peer
        for event in ws.events_received():
            if not isinstance(event, Frame):
                continue
            opcode = event.opcode
            if opcode is _BINARY or opcode is _TEXT:
                if event.fin:
                    if peer is not None:
                        peer.receive(bytes(event.data))
                else:
                    self._fragments = [bytes(event.data)]
            elif opcode is _CONT and self._fragments is not None:
                # the protocol checks continuation order and the total size (max_size)
                self._fragments.append(bytes(event.data))
                if event.fin:
                    message = b"".join(self._fragments)
                    self._fragments = None
                    if peer is not None:
                        peer.receive(message)
        if ws.state is not State.OPEN and peer is not None:
            peer.mark_closing(ws.close_code or WsCloseCode.ABNORMAL_CLOSURE)
        self._flush()

    def eof_received(self) -> bool | None:
        self.ws.receive_eof()
        self._flush()
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        if self._closer is not None:
            self._closer.cancel()
            self._closer = None
        if self.transport is not None:
            self.hub.transports.discard(self.transport)
        self.ws.receive_eof()
        peer = self.peer
        if peer is not None:
            self.hub.closed(peer, f"code {self.ws.close_code}")
            peer.connection = _CLOSED
            self.peer = None

    # --- handshake ------------------------------------------------------------------------
    def _handshake(self, request: Request) -> None:
        ws, hub = self.ws, self.hub
        if hub.full:
            response = ws.reject(
                HTTPStatus.SERVICE_UNAVAILABLE, "too many sessions on this node, retry later\n"
            )
        else:
            response = ws.accept(request)
        response.headers["Server"] = _SERVER_HEADER
        ws.send_response(response)
        if ws.state is not State.OPEN:
            return
        self._flush()  # the 101, from the handshake protocol
        # Frames go to a protocol object that starts OPEN: the handshake one keeps the
        # request and its headers alive (about 2 KiB per idle connection).
        self.ws = ServerProtocol(
            state=State.OPEN, max_size=hub.settings.max_message_size, logger=_WS_LOGGER
        )
        serializer = by_subprotocol(ws.subprotocol or "")
        self.peer = peer = WebSocketPeer(hub, serializer, self)
        assert self.transport is not None
        self.writer = peer.buffer = CorkedWriter(hub, self.transport)
        hub.open(peer)

    # --- output ---------------------------------------------------------------------------
    def _flush(self) -> None:
        transport = self.transport
        writes = self.ws.data_to_send()
        if transport is None or not writes:
            return
        if self.writer is not None:
            self.writer.flush()  # data frames written before go first
        for data in writes:
            if data:
                transport.write(data)
            else:  # end of stream: the server closes the TCP connection first
                transport.close()

    def close(self, code: int, reason: str) -> None:
        """Send a close frame; reset the connection if it is not closed in time."""
        if self.ws.state is State.OPEN:
            self.ws.send_close(code, _truncate(reason))
            self._flush()
        self._close_later()

    def fail(self, code: int, reason: str) -> None:
        """Fail the connection: close frame, then the TCP connection at once."""
        if self.peer is not None:
            self.peer.mark_closing(code, reason)
        self.ws.fail(code, reason)
        self._flush()
        self._close_later()

    def ping(self) -> None:
        """Send a keepalive ping."""
        if self.ws.state is State.OPEN:
            self.ws.send_ping(b"keepalive")
            self._flush()

    def _close_later(self) -> None:
        """Reset the connection if it is still open ``close_timeout`` from now."""
        transport = self.transport
        if self._closer is None and transport is not None:
            loop = asyncio.get_running_loop()
            self._closer = loop.call_later(
                self.hub.settings.close_timeout, reset_connection, transport
            )


class _ClosedConnection(WebSocketConnection):
    """Stands in for a connection that is gone, so a late ``close`` is a no-op."""

    def __init__(self) -> None:  # no protocol object needed
        pass

    def close(self, code: int, reason: str) -> None:
        return

    def fail(self, code: int, reason: str) -> None:
        return

    def ping(self) -> None:
        return


_CLOSED = _ClosedConnection()


@functools.cache
def _origins(allowed: tuple[str, ...]) -> list[Origin | None] | None:
    """The Origins the handshake accepts (one list shared by every connection)."""
    if not allowed:
        return None
    # clients that send no Origin (non-browsers) are not subject to the check
    return [None, *(Origin(o) for o in allowed)]


def _unmask(payload: bytes, key: bytes) -> bytes:
    """XOR ``payload`` with the repeated 4-octet masking ``key`` (RFC 6455 §5.3)."""
    size = len(payload)
    if key == _NO_MASK or not size:
        return payload
    mask = (key * (size // 4 + 1))[:size]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(mask, "big")).to_bytes(size, "big")


def _truncate(reason: str) -> str:
    """A close reason that fits a control frame (123 bytes of UTF-8)."""
    return reason.encode("utf-8")[:120].decode("utf-8", "ignore")


def select_subprotocol(
    protocol: ServerProtocol, offered: Sequence[Subprotocol]
) -> Subprotocol | None:
    """Pick the client's most preferred WAMP subprotocol; refuse clients offering none."""
    for name in offered:
        if name in SUBPROTOCOLS:
            return name
    raise NegotiationError(
        "no WAMP subprotocol offered; expected one of " + ", ".join(SUBPROTOCOLS)
    )
