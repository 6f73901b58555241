"""Keepalive: idle peers are pinged; peers that stop answering are closed (1011)."""

from __future__ import annotations

import json
import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import BrokerProcess, start_broker

HELLO = [1, "realm1", {"roles": {"caller": {}, "subscriber": {}}}]


@pytest.fixture(scope="module")
def pinging_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    config: Path = tmp_path_factory.mktemp("cfg") / "broker.toml"
    config.write_text("[limits]\nping_interval = 1\nping_timeout = 1\n")
    proc = start_broker("--config", str(config))
    yield proc
    proc.stop()


class RawClient:
    """A WebSocket client on a plain socket, so a test decides when (and if) to answer pings."""

    def __init__(self, url: str) -> None:
        host, port = url.split("//")[1].split("/")[0].split(":")
        self.sock = socket.create_connection((host, int(port)), timeout=10)
        self.sock.sendall(
            (
                f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
                "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
            ).encode()
        )
        self.buffer = b""
        while b"\r\n\r\n" not in self.buffer:
            self.buffer += self._recv()
        self.buffer = self.buffer.split(b"\r\n\r\n", 1)[1]

    def _recv(self) -> bytes:
        chunk = self.sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed by the broker")
        return chunk

    def send(self, opcode: int, payload: bytes) -> None:
        assert len(payload) < 126
        self.sock.sendall(bytes([0x80 | opcode, 0x80 | len(payload)]) + b"\0\0\0\0" + payload)

    def send_json(self, message: list[object]) -> None:
        self.send(0x1, json.dumps(message).encode())

    def frame(self) -> tuple[int, bytes]:
        while True:
            if len(self.buffer) >= 2:
                opcode, size = self.buffer[0] & 0x0F, self.buffer[1] & 0x7F
                start = 2
                if size == 126:
                    size, start = struct.unpack("!H", self.buffer[2:4])[0], 4
                if len(self.buffer) >= start + size:
                    payload = self.buffer[start : start + size]
                    self.buffer = self.buffer[start + size :]
                    return opcode, payload
            self.buffer += self._recv()

    def next_ping(self) -> bytes:
        while True:
            opcode, payload = self.frame()
            if opcode == 0x9:
                return payload


def test_idle_peer_that_answers_pings_stays_connected(pinging_broker: BrokerProcess) -> None:
    client = RawClient(pinging_broker.url)
    client.send_json(HELLO)
    assert json.loads(client.frame()[1])[0] == 2
    for _ in range(3):  # three ping rounds, each answered: ping_interval + timeout passes
        client.send(0xA, client.next_ping())
    client.send_json([48, 1, {}, "wamp.session.count"])
    opcode, payload = client.frame()
    while opcode != 0x1:
        if opcode == 0x9:
            client.send(0xA, payload)
        opcode, payload = client.frame()
    assert json.loads(payload)[0] == 50
    client.sock.close()


def test_peer_that_stops_answering_is_closed_with_1011(pinging_broker: BrokerProcess) -> None:
    client = RawClient(pinging_broker.url)
    client.send_json(HELLO)
    assert json.loads(client.frame()[1])[0] == 2
    client.next_ping()  # not answered
    opcode, payload = client.frame()
    while opcode == 0x9:
        opcode, payload = client.frame()
    assert opcode == 0x8
    assert struct.unpack("!H", payload[:2])[0] == 1011
    assert b"keepalive" in payload
    client.sock.close()


def test_peer_that_never_says_hello_is_aborted(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text("[limits]\nhello_timeout = 1\n")
    proc = start_broker("--config", str(config))
    try:
        client = RawClient(proc.url)
        opcode, payload = client.frame()
        assert opcode == 0x1
        abort = json.loads(payload)
        assert abort[0] == 3 and abort[2] == "wamp.error.timeout"
        client.sock.close()
    finally:
        proc.stop()
