"""Clients for the transport tests: Autobahn|Python over RawSocket, and a bare RawSocket.

``rawsocket_connect`` joins a realm with Autobahn's asyncio RawSocket client over TCP
(``rs://host:port``) or a Unix socket (``rs://unix:/path``) and returns the same
``Client`` the interop tests use over WebSocket, so one test mixes both.
``BareRawSocket`` speaks the framing by hand, so a test can send what no client
library would (reserved bits, a lying length, a PING).
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from typing import Any

from autobahn.asyncio.rawsocket import WampRawSocketClientFactory

from tests.broker.interop._autobahn import TIMEOUT, Client, recording_session

__all__ = ["BareRawSocket", "rawsocket_connect"]


async def rawsocket_connect(
    address: tuple[str, int] | str, serializer: str = "json", realm: str = "realm1"
) -> Client:
    """Join ``realm`` with Autobahn over RawSocket: ``(host, port)`` or a Unix socket path."""
    loop = asyncio.get_running_loop()
    ser, joined, make_session = recording_session(serializer, realm)
    factory = WampRawSocketClientFactory(make_session, serializer=ser)
    if isinstance(address, str):
        transport, _ = await loop.create_unix_connection(factory, address)
    else:
        transport, _ = await loop.create_connection(factory, *address)
    try:
        client = await asyncio.wait_for(joined, TIMEOUT)
    except BaseException:
        transport.abort()
        raise
    client.tcp = transport  # type: ignore[assignment]
    return client


class BareRawSocket:
    """A blocking RawSocket client on a plain socket (bounded by a socket timeout)."""

    def __init__(self, port: int, hello: bytes | None = b"\x7f\xf1\x00\x00") -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.buffer = b""
        if hello is not None:
            self.sock.sendall(hello)

    def read_exactly(self, size: int) -> bytes:
        while len(self.buffer) < size:
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError(f"closed after {len(self.buffer)} of {size} bytes")
            self.buffer += chunk
        data, self.buffer = self.buffer[:size], self.buffer[size:]
        return data

    def closed_by_peer(self) -> bool:
        """True when the broker closes the connection (EOF or reset) before 10 s."""
        try:
            while True:
                chunk = self.sock.recv(65536)
                if not chunk:
                    return True
                self.buffer += chunk
        except ConnectionResetError:
            return True

    def send_frame(self, kind: int, payload: bytes) -> None:
        self.sock.sendall(struct.pack("!I", (kind << 24) | len(payload)) + payload)

    def send_json(self, message: list[Any]) -> None:
        self.send_frame(0, json.dumps(message).encode())

    def frame(self) -> tuple[int, bytes]:
        header = struct.unpack("!I", self.read_exactly(4))[0]
        return header >> 24, self.read_exactly(header & 0xFFFFFF)

    def message(self) -> list[Any]:
        """The next WAMP message (answering PINGs on the way)."""
        while True:
            kind, payload = self.frame()
            if kind == 0:
                decoded: list[Any] = json.loads(payload)
                return decoded
            if kind == 1:
                self.send_frame(2, payload)

    def join(self, realm: str = "realm1") -> list[Any]:
        assert self.read_exactly(4)[0] == 0x7F
        self.send_json([1, realm, {"roles": {"caller": {}, "subscriber": {}, "publisher": {}}}])
        return self.message()

    def close(self) -> None:
        self.sock.close()
