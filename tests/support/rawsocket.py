"""A bare RawSocket (JSON) client for tests: the handshake, then one message out and the
next one back, on a plain or TLS socket."""

from __future__ import annotations

import json
import socket
import struct
from typing import Any

HELLO = [1, "realm1", {"roles": {"caller": {}}}]


def exchange(sock: socket.socket, message: list[Any]) -> list[Any]:
    """Send ``message``; return the next message the router sends."""
    payload = json.dumps(message).encode()
    sock.sendall(struct.pack("!I", len(payload)) + payload)
    data = b""
    while len(data) < 4 or len(data) < 4 + (struct.unpack("!I", data[:4])[0] & 0xFFFFFF):
        chunk = sock.recv(65536)
        assert chunk, "closed"
        data += chunk
    decoded: list[Any] = json.loads(data[4:])
    return decoded


def rawsocket_join(sock: socket.socket) -> list[Any]:
    """Handshake (JSON, 16 MiB), HELLO to realm1, and the router's answer."""
    sock.sendall(b"\x7f\xf1\x00\x00")
    reply = b""
    while len(reply) < 4:
        reply += sock.recv(4 - len(reply))
    assert reply[0] == 0x7F and reply[1] & 0x0F == 1
    return exchange(sock, HELLO)
