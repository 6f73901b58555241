"""A Redis connection redis-py opened, its socket then read by a protocol of ours.

redis-py connects (TLS, AUTH, SELECT, HELLO, the Sentinel's master) and reads each
reply through an awaited coroutine: several calls, a task switch and a loop pass per
reply or pub/sub message. On the two hot connections, the command writer's
(``outbox``) and each pub/sub lane's (``link``), the transport is moved to a
``RespProtocol`` (``asyncio.BaseTransport.set_protocol``) once redis-py is done
connecting: ``data_received`` feeds hiredis and hands every reply to ``reply`` in the
same loop pass. redis-py keeps writing on the connection (its ``StreamWriter``
does not depend on the protocol) and hears the close (``connection_lost`` is passed
on), so closing it the usual way still works.
"""

from __future__ import annotations

import asyncio
from typing import Any

import hiredis
from redis.asyncio.connection import AbstractConnection
from redis.exceptions import ResponseError

__all__ = ["RespProtocol"]


class RespProtocol(asyncio.Protocol):
    """Replies parsed as they arrive; ``reply`` gets each, ``lost`` the end of the connection.

    An error reply is a ``ResponseError`` in its place; a protocol error (bytes that
    are not RESP) ends the connection.
    """

    def __init__(self, conn: AbstractConnection) -> None:
        stream = getattr(conn, "_writer", None)
        if not isinstance(stream, asyncio.StreamWriter):
            raise ConnectionError("the Redis connection has no stream to read")
        # asyncio's transport or uvloop's (not an ``asyncio.Transport`` subclass, the same API)
        transport: Any = stream.transport
        self.transport: asyncio.Transport = transport
        self.previous = transport.get_protocol()
        self.reader = hiredis.Reader(replyError=ResponseError)
        self.error: Exception | None = None
        transport.set_protocol(self)

    def reply(self, value: Any) -> None:
        """One reply (or pub/sub message), in order."""
        raise NotImplementedError

    def lost(self, exc: Exception) -> None:
        """The connection ended (closed, reset, or a protocol error)."""

    def data_received(self, data: bytes) -> None:
        reader = self.reader
        reader.feed(data)
        try:
            while (value := reader.gets()) is not False:
                self.reply(value)
        except Exception as exc:  # nothing after a fault can be trusted: end the connection
            self.error = exc
            self.transport.abort()

    def eof_received(self) -> bool:
        return False  # the transport closes, then connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        why = self.error or exc
        self.lost(ConnectionError(f"Redis connection lost: {why or 'closed by the server'}"))
        self.previous.connection_lost(exc)
