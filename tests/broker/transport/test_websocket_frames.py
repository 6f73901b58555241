"""WebSocket framing on the broker's read path: messages split across TCP segments,
fragmented messages with control frames between the fragments, random masks, and frames
RFC 6455 forbids (each ends with the right close code while others are served)."""

from __future__ import annotations

import json
import os
import socket
import struct
from collections.abc import Iterator

import pytest

from tests.support.processes import BrokerProcess, start_broker

HELLO = [1, "realm1", {"roles": {"caller": {}}}]


@pytest.fixture(scope="module")
def node() -> Iterator[BrokerProcess]:
    proc = start_broker()
    yield proc
    proc.stop()


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, mask: bool = True) -> bytes:
    """A client frame with a random masking key (or none, when ``mask`` is false)."""
    first = (0x80 if fin else 0) | opcode
    size = len(payload)
    if size < 126:
        head = bytes((first, (0x80 if mask else 0) | size))
    elif size < 65536:
        head = struct.pack("!BBH", first, (0x80 if mask else 0) | 126, size)
    else:
        head = struct.pack("!BBQ", first, (0x80 if mask else 0) | 127, size)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + bytes(b ^ key[i % 4] for i, b in enumerate(payload))


class Client:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        self.sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            b"Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self.sock.recv(4096)
        assert b" 101 " in self.buffer.split(b"\r\n", 1)[0]
        self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]

    def read_frame(self) -> tuple[int, bytes]:
        while True:
            buffer = self.buffer
            if len(buffer) >= 2:
                size, start = buffer[1] & 0x7F, 2
                if size == 126:
                    size, start = (
                        (struct.unpack("!H", buffer[2:4])[0] if len(buffer) >= 4 else 1 << 30),
                        4,
                    )
                elif size == 127:
                    size, start = (
                        (struct.unpack("!Q", buffer[2:10])[0] if len(buffer) >= 10 else 1 << 30),
                        10,
                    )
                if len(buffer) >= start + size:
                    self.buffer = buffer[start + size :]
                    return buffer[0] & 0x0F, buffer[start : start + size]
            chunk = self.sock.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buffer += chunk

    def message(self) -> list[object]:
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x1:
                decoded: list[object] = json.loads(payload)
                return decoded
            if opcode == 0x8:
                raise ConnectionError(f"close {struct.unpack('!H', payload[:2])[0]}")

    def close_code(self) -> int:
        while True:
            opcode, payload = self.read_frame()
            if opcode == 0x8:
                code: int = struct.unpack("!H", payload[:2])[0]
                return code


def test_messages_split_byte_by_byte_and_batched_arrive_whole(node: BrokerProcess) -> None:
    client = Client(node.port)
    hello = client_frame(0x1, json.dumps(HELLO).encode())
    for i in range(len(hello)):  # one TCP segment per byte (Nagle off)
        client.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        client.sock.sendall(hello[i : i + 1])
    assert client.message()[0] == 2
    calls = b"".join(
        client_frame(0x1, json.dumps([48, n, {}, "wamp.session.count"]).encode())
        for n in range(1, 6)
    )
    client.sock.sendall(calls)  # five frames in one segment
    assert [client.message()[1] for _ in range(5)] == [1, 2, 3, 4, 5]
    big = json.dumps([48, 6, {}, "wamp.session.count", ["x" * 70_000]]).encode()
    client.sock.sendall(client_frame(0x1, big))  # 64-bit length, several segments
    reply = client.message()  # wamp.session.count takes no arguments: an ERROR for call 6
    assert reply[:3] == [8, 48, 6]
    client.sock.close()


def test_fragmented_message_with_a_ping_between_fragments(node: BrokerProcess) -> None:
    client = Client(node.port)
    client.sock.sendall(client_frame(0x1, json.dumps(HELLO).encode()))
    assert client.message()[0] == 2
    text = json.dumps([48, 7, {}, "wamp.session.count"]).encode()
    client.sock.sendall(
        client_frame(0x1, text[:5], fin=False)
        + client_frame(0x9, b"are you there")
        + client_frame(0x0, text[5:12], fin=False)
        + client_frame(0x0, text[12:])
    )
    opcode, payload = client.read_frame()
    assert (opcode, payload) == (0xA, b"are you there")
    assert client.message()[1] == 7
    client.sock.close()


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        (client_frame(0x1, b"[1]", mask=False), 1002),  # client frames must be masked
        (bytes((0xC1, 0x83)) + b"\0\0\0\0[1]", 1002),  # reserved bit RSV1
        (client_frame(0x3, b"x"), 1002),  # reserved opcode
        (client_frame(0x1, b"\xff\xfe"), 1007),  # invalid UTF-8 in a text frame
        (client_frame(0x0, b"x"), 1002),  # continuation without a start
        (client_frame(0x1, b"[", fin=False) + client_frame(0x1, b"]"), 1002),
        (client_frame(0x9, b"p" * 126), 1002),  # control frame over 125 bytes
    ],
)
def test_frames_rfc6455_forbids_close_the_connection(
    node: BrokerProcess, frame: bytes, code: int
) -> None:
    client = Client(node.port)
    client.sock.sendall(client_frame(0x1, json.dumps(HELLO).encode()))
    assert client.message()[0] == 2
    client.sock.sendall(frame)
    assert client.close_code() == code
    client.sock.close()
    witness = Client(node.port)  # the broker serves others
    witness.sock.sendall(client_frame(0x1, json.dumps(HELLO).encode()))
    assert witness.message()[0] == 2
    witness.sock.close()
