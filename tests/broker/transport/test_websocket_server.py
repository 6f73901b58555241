"""The WebSocket listener of a real broker process: HTTP routes, negotiation, limits, drain."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from protocol_spec import errors
from tests.support.processes import BrokerProcess, start_broker

HELLO = [1, "realm1", {"roles": {"subscriber": {}, "publisher": {}, "caller": {}, "callee": {}}}]


async def joined(url: str, protocol: str = "wamp.2.json") -> ClientConnection:
    ws = await connect(url, subprotocols=[protocol], max_size=None)  # type: ignore[list-item]
    await ws.send(json.dumps(HELLO))
    welcome = json.loads(await asyncio.wait_for(ws.recv(), 5))
    assert welcome[0] == 2
    return ws


def http_get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def test_healthz_answers_ok(broker: BrokerProcess) -> None:
    assert http_get(broker.http_base + "/healthz") == (200, "ok\n")


def test_unknown_path_is_404_with_a_hint(broker: BrokerProcess) -> None:
    status, body = http_get(broker.http_base + "/nope")
    assert status == 404 and "/ws" in body


async def test_client_without_wamp_subprotocol_is_refused(broker: BrokerProcess) -> None:
    with pytest.raises(InvalidStatus) as caught:
        await connect(broker.url)
    assert caught.value.response.status_code == 400
    with pytest.raises(InvalidStatus):
        await connect(broker.url, subprotocols=["chat"])  # type: ignore[list-item]


async def test_the_clients_preferred_subprotocol_is_chosen(broker: BrokerProcess) -> None:
    offered = ["wamp.2.msgpack", "wamp.2.json"]
    async with connect(broker.url, subprotocols=offered) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "wamp.2.msgpack"
        await ws.send(msgpack.packb(HELLO))
        welcome = msgpack.unpackb(await asyncio.wait_for(ws.recv(), 5))
        assert welcome[0] == 2
    async with connect(broker.url, subprotocols=offered[::-1]) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "wamp.2.json"


@pytest.fixture(scope="module")
def limited_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    config = tmp_path_factory.mktemp("cfg") / "broker.toml"
    config.write_text(
        '[limits]\nmax_message_size = 65536\nmax_write_buffer = 1048576\n\n[[realm]]\nname = "realm1"\n'
    )
    proc = start_broker("--config", str(config))
    yield proc
    proc.stop()


async def test_oversized_message_closes_with_1009(limited_broker: BrokerProcess) -> None:
    ws = await joined(limited_broker.url)
    await ws.send(json.dumps([16, 1, {}, "com.big", ["x" * 70_000]]))
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(ws.recv(), 5)
    assert ws.close_code == 1009
    other = await joined(limited_broker.url)  # the broker still serves others
    await other.close()


def _stalled_subscriber(url: str, topic: str) -> socket.socket:
    """A raw-socket WAMP subscriber that joins, subscribes, then never reads again."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    sock = socket.create_connection((host, int(port)))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.sendall(
        (
            f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
            "Sec-WebSocket-Protocol: wamp.2.json\r\n\r\n"
        ).encode()
    )
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        buffer += sock.recv(4096)
    assert b" 101 " in buffer.split(b"\r\n", 1)[0]
    for message in (HELLO, [32, 1, {}, topic]):
        payload = json.dumps(message).encode()
        mask = b"\x00\x00\x00\x00"
        sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + payload)
    return sock


async def test_slow_consumer_is_dropped_and_others_get_everything(
    limited_broker: BrokerProcess,
) -> None:
    topic = "com.firehose"
    reader = await joined(limited_broker.url)
    await reader.send(json.dumps([32, 1, {}, topic]))
    await reader.send(json.dumps([32, 2, {}, "wamp.session.on_leave"]))
    subscribed = [json.loads(await asyncio.wait_for(reader.recv(), 5)) for _ in range(2)]
    leave_sub = subscribed[1][2]
    stalled = _stalled_subscriber(limited_broker.url, topic)
    publisher = await joined(limited_broker.url)
    total, batch = 400, 16
    payload = "y" * 30_000
    received, left = 0, []
    # Publish in batches and wait for the healthy reader after each one, so only
    # the stalled subscriber falls behind (its write buffer limit is 1 MiB).
    for start in range(0, total, batch):
        for n in range(start, start + batch):
            await publisher.send(json.dumps([16, n + 1, {}, topic, [n, payload]]))
        while received < start + batch:
            message = json.loads(await asyncio.wait_for(reader.recv(), 10))
            if message[1] == leave_sub:
                left.append(message[4][0])
                continue
            assert message[0] == 36 and message[4][0] == received
            received += 1
    assert received == total
    limited_broker.wait_for_output(r"closing slow consumer", timeout=10)
    while not left:  # the stalled session leaves the realm once it is dropped
        message = json.loads(await asyncio.wait_for(reader.recv(), 15))
        if message[1] == leave_sub:
            left.append(message[4][0])
    assert len(left) == 1
    stalled.close()
    for ws in (reader, publisher):
        await ws.close()


async def test_sigterm_says_goodbye_and_exits_cleanly(tmp_path: Path) -> None:
    proc = start_broker()
    try:
        ws = await joined(proc.url)
        proc.signal(signal.SIGTERM)
        goodbye = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert goodbye[0] == 6 and goodbye[2] == errors.CLOSE_SYSTEM_SHUTDOWN
        await ws.send(json.dumps([6, {}, errors.CLOSE_GOODBYE_AND_OUT]))
        await asyncio.wait_for(ws.wait_closed(), 5)
        assert await asyncio.to_thread(proc.proc.wait, 10) == 0
    finally:
        proc.kill()


def test_bad_config_exits_2_with_a_clear_message(tmp_path: Path) -> None:
    import subprocess
    import sys

    config = tmp_path / "bad.toml"
    config.write_text("[server]\nprot = 80\n")
    result = subprocess.run(
        [sys.executable, "-m", "broker", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "unknown key(s) prot" in result.stderr


def test_json_log_format_prints_json_lines() -> None:
    proc = start_broker("--log-format", "json")
    try:
        line = next(line for line in proc.lines if "listening on" in line)
        entry = json.loads(line)
        assert entry["level"] == "info" and "listening on" in entry["message"]
    finally:
        proc.stop()


async def test_broker_runs_on_uvloop_when_asked() -> None:
    proc = start_broker("--uvloop")
    try:
        assert "running on uvloop" in proc.read_output()
        ws = await joined(proc.url, "wamp.2.json")
        await ws.send(json.dumps([48, 1, {}, "wamp.session.count"]))
        result = json.loads(await asyncio.wait_for(ws.recv(), 5))
        assert result[0] == 50 and result[3] == [1]
        await ws.close()
    finally:
        proc.stop()
