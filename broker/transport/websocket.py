"""WebSocket transport on websockets' documented sans-I/O ``ServerProtocol``.

``WebSocketConnection`` is our own ``asyncio.Protocol``: it feeds the bytes it
receives to a ``websockets.server.ServerProtocol`` (the opening handshake,
frame parsing, unmasking, UTF-8 and size checks, ping/pong and the closing
handshake all happen there), hands every complete data message to its
``WebSocketPeer`` synchronously (no task, future or queue per message) and writes
what the protocol wants sent. Outgoing WAMP messages skip the protocol object:
each is framed once per serializer (``WebSocketPeer.frame``; recipients of an
EVENT share the bytes) and written straight to the transport.

The listener hands a connection over once it has read the request head of a
``GET`` for the WebSocket path (``HttpConnection``), with all bytes read so far.
Negotiation: the client's most preferred WAMP subprotocol is chosen; a client
offering none gets HTTP 400, a browser Origin not allowed HTTP 403, a node at
``max_sessions`` HTTP 503. A message over ``max_message_size`` closes with 1009.
"""

from __future__ import annotations

import asyncio
import logging
import struct
from collections.abc import Sequence
from http import HTTPStatus
from typing import cast

from websockets.exceptions import NegotiationError
from websockets.frames import Frame, Opcode
from websockets.http11 import Request
from websockets.protocol import State
from websockets.server import ServerProtocol
from websockets.typing import Origin, Subprotocol

from protocol_spec import errors
from protocol_spec.serializers import SUBPROTOCOLS, Serializer, by_subprotocol

from .peer import CLOSE_INTERNAL_ERROR, SessionHub, WampPeer, peer_address, reset_connection
from .settings import TransportSettings  # re-exported: its former home

__all__ = ["TransportSettings", "WebSocketConnection", "WebSocketPeer", "select_subprotocol"]

log = logging.getLogger(__name__)

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")
_TEXT = Opcode.TEXT
_BINARY = Opcode.BINARY
_CONT = Opcode.CONT
_SERVER_HEADER = "wamp-broker"
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

    def close(self, code: int = 1000, reason: str = "") -> None:
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
        self.connection.fail(CLOSE_INTERNAL_ERROR, "keepalive ping timeout")


class WebSocketConnection(asyncio.Protocol):
    """One WebSocket connection: the sans-I/O protocol under an ``asyncio.Protocol``."""

    __slots__ = ("_closer", "_fragments", "address", "hub", "peer", "transport", "ws")

    def __init__(self, hub: SessionHub) -> None:
        settings = hub.settings
        origins: list[Origin | None] | None = None
        if settings.allowed_origins:
            # clients that send no Origin (non-browsers) are not subject to the check
            origins = [None, *(Origin(o) for o in settings.allowed_origins)]
        self.ws = ServerProtocol(
            origins=origins,
            subprotocols=[Subprotocol(p) for p in SUBPROTOCOLS],
            select_subprotocol=select_subprotocol,
            max_size=settings.max_message_size,
            logger=_WS_LOGGER,
        )
        self.hub = hub
        self.transport: asyncio.Transport | None = None
        self.peer: WebSocketPeer | None = None
        self.address = "unknown"
        self._fragments: list[bytes] | None = None
        self._closer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol -----------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        self.transport = transport
        self.address = peer_address(transport)

    def data_received(self, data: bytes) -> None:
        ws = self.ws
        ws.receive_data(data)
        events = ws.events_received()
        peer = self.peer
        if peer is None:
            first = events[0] if events else None
            if ws.state is State.CONNECTING and isinstance(first, Request):
                del events[0]
                self._handshake(first)
                peer = self.peer
        else:
            peer.last_seen = asyncio.get_running_loop().time()
            peer.ping_sent = False
        for event in events:
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
            peer.mark_closing(ws.close_code or 1006)
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
        serializer = by_subprotocol(ws.subprotocol or "")
        self.peer = peer = WebSocketPeer(hub, serializer, self)
        peer.buffer = self.transport
        hub.open(peer)

    # --- output ---------------------------------------------------------------------------
    def _flush(self) -> None:
        transport = self.transport
        if transport is None:
            return
        for data in self.ws.data_to_send():
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
