"""The byte pipe under a session: a WebSocket speaking one WAMP subprotocol.

A transport sends and receives *message objects* (``protocol_spec`` dataclasses) and
hides framing and serialization. ``recv`` raises ``TransportLost`` when the
connection ends and ``protocol_spec.ProtocolError`` when a frame is not a valid
message. Sessions only use this small interface, so tests and other transports
(RawSocket) can stand in.
"""

from __future__ import annotations

import logging
import ssl as ssl_module
from collections.abc import Mapping
from typing import Any, Protocol

from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidURI
from websockets.typing import Subprotocol

from protocol_spec import ProtocolError, Serializer
from protocol_spec import by_name as serializer_by_name
from protocol_spec import errors as wamp_errors

from .errors import ClientError, TransportLost

__all__ = ["Transport", "WebSocketTransport", "open_websocket"]

log = logging.getLogger(__name__)


class Transport(Protocol):
    """What a session needs from a connection."""

    serializer: Serializer

    async def send(self, message: Any) -> None:
        """Serialize and send one message; raise ``TransportLost`` if the connection is gone."""
        ...

    async def recv(self) -> Any:
        """Receive one decoded message; raise ``TransportLost`` or ``ProtocolError``."""
        ...

    async def close(self) -> None:
        """Close the connection (idempotent)."""
        ...


class WebSocketTransport:
    """A WAMP-over-WebSocket connection (text frames for JSON, binary otherwise)."""

    def __init__(self, connection: ClientConnection, serializer: Serializer) -> None:
        self.connection = connection
        self.serializer = serializer

    async def send(self, message: Any) -> None:
        """Serialize and send one message."""
        data = self.serializer.encode(message)
        try:
            await self.connection.send(data)
        except ConnectionClosed as exc:
            raise TransportLost(wamp_errors.NETWORK_FAILURE, _describe(exc)) from None

    async def recv(self) -> Any:
        """Receive and decode one message."""
        try:
            data = await self.connection.recv()
        except ConnectionClosed as exc:
            raise TransportLost(wamp_errors.NETWORK_FAILURE, _describe(exc)) from None
        if isinstance(data, str) == self.serializer.binary:
            raise ProtocolError(
                f"{'text' if isinstance(data, str) else 'binary'} frame on {self.serializer.subprotocol}"
            )
        return self.serializer.decode(data)

    async def close(self) -> None:
        """Close the WebSocket with code 1000 and wait (bounded) for the closing handshake."""
        await self.connection.close()


def _describe(exc: ConnectionClosed) -> str:
    rcvd = exc.rcvd
    if rcvd is None:
        return "connection closed abnormally"
    return f"connection closed with code {rcvd.code}" + (f" ({rcvd.reason})" if rcvd.reason else "")


async def open_websocket(
    url: str,
    serializer: str | Serializer = "msgpack",
    *,
    open_timeout: float | None = 10.0,
    max_size: int | None = 16 * 1024 * 1024,
    ping_interval: float | None = 20.0,
    ssl: ssl_module.SSLContext | None = None,
    headers: Mapping[str, str] | None = None,
) -> WebSocketTransport:
    """Open a WebSocket offering exactly one subprotocol: the chosen serializer's.

    Raises ``TransportLost`` when the router cannot be reached or refuses the
    handshake, and ``ClientError`` when it does not echo the subprotocol.
    """
    ser = serializer_by_name(serializer) if isinstance(serializer, str) else serializer
    kwargs: dict[str, Any] = {}
    if ssl is not None:
        kwargs["ssl"] = ssl
    try:
        connection = await ws_connect(
            url,
            subprotocols=[Subprotocol(ser.subprotocol)],
            open_timeout=open_timeout,
            max_size=max_size,
            ping_interval=ping_interval,
            additional_headers=dict(headers) if headers else None,
            compression=None,
            **kwargs,
        )
    except InvalidURI as exc:
        raise ClientError(f"invalid WebSocket URL {url!r}: {exc}") from None
    except (OSError, InvalidHandshake, TimeoutError) as exc:
        raise TransportLost(
            wamp_errors.NETWORK_FAILURE, f"cannot connect to {url}: {exc or type(exc).__name__}"
        ) from None
    if connection.subprotocol != ser.subprotocol:
        await connection.close()
        raise ClientError(
            f"router at {url} did not accept subprotocol {ser.subprotocol} "
            f"(answered {connection.subprotocol!r})"
        )
    return WebSocketTransport(connection, ser)
