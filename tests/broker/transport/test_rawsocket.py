"""RawSocket (spec "RawSocket Transport") on the shared port, a RawSocket-only port and a
Unix socket: Autobahn|Python sessions with every serializer talk to WebSocket sessions of
the same realm; bad input ends with the spec's error octets or a close, never a hang."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import stat
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallDetails, CallOptions, PublishOptions, RegisterOptions

from tests.broker.interop._autobahn import Client, ClientPool
from tests.support.processes import BrokerProcess, start_broker

from ._clients import BareRawSocket, rawsocket_connect

TIMEOUT = 5
ABORT, ERROR, CALL, INTERRUPT = 3, 8, 48, 69


@dataclass
class Node:
    proc: BrokerProcess
    rs_port: int  # the RawSocket-only port
    unix_path: str


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Node]:
    tmp = tmp_path_factory.mktemp("rs")
    unix_path = str(tmp / "wamp.sock")
    config = tmp / "broker.toml"
    config.write_text(
        "[limits]\nmax_message_size = 65536\n\n"
        '[[listener]]\ntype = "rawsocket"\nhost = "127.0.0.1"\nport = 0\n\n'
        f'[[listener]]\ntype = "rawsocket"\npath = "{unix_path}"\nmode = 0o600\n\n'
        '[[realm]]\nname = "realm1"\n'
    )
    proc = start_broker("--config", str(config))
    output = proc.wait_for_output(r"listening on rs://127\.0\.0\.1:\d+ \(RawSocket only\)")
    match = re.search(r"listening on rs://127\.0\.0\.1:(\d+) \(RawSocket only\)", output)
    assert match is not None
    yield Node(proc, int(match[1]), unix_path)
    proc.stop()


@pytest.fixture
async def ws_clients(node: Node) -> AsyncIterator[ClientPool]:
    pool = ClientPool(node.proc.url)
    yield pool
    await pool.close_all()


@pytest.fixture
async def rs_clients() -> AsyncIterator[list[Client]]:
    made: list[Client] = []
    yield made
    await asyncio.gather(*(c.close() for c in made), return_exceptions=True)


class Blocking:
    """A callee endpoint that blocks until cancelled; records the interruption."""

    def __init__(self) -> None:
        loop = asyncio.get_running_loop()
        self.invoked: asyncio.Future[None] = loop.create_future()
        self.interrupted: asyncio.Future[None] = loop.create_future()

    async def __call__(self, details: CallDetails) -> str:
        self.invoked.set_result(None)
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            self.interrupted.set_result(None)
            raise
        return "never"


async def exercise(rs: Client, ws: Client, tag: str) -> None:
    """Pub/sub and RPC both ways between a RawSocket and a WebSocket session."""
    details = RegisterOptions(details_arg="details")

    def count_to(n: int, details: CallDetails) -> str:
        assert details.progress is not None
        for i in range(n):
            details.progress(i)
        return "done"

    def fail() -> None:
        raise ApplicationError(f"com.{tag}.oops", "bad", code=7)

    await ws.register(lambda a, b: a + b, f"com.{tag}.add")
    await ws.register(fail, f"com.{tag}.fail")
    await ws.register(count_to, f"com.{tag}.progress", options=details)
    blocking = Blocking()
    await ws.register(blocking, f"com.{tag}.block", options=details)
    await rs.register(lambda s: s.upper(), f"com.{tag}.upper")
    # RPC both ways, an application error, progressive results, binary payloads
    assert await rs.call(f"com.{tag}.add", 2, 3) == 5
    assert await ws.call(f"com.{tag}.upper", "abc") == "ABC"
    with pytest.raises(ApplicationError) as caught:
        await rs.call(f"com.{tag}.fail")
    assert caught.value.error == f"com.{tag}.oops" and caught.value.kwargs == {"code": 7}
    progress: list[Any] = []
    options = CallOptions(on_progress=lambda i: progress.append(i))
    assert await rs.call(f"com.{tag}.progress", 3, options=options) == "done"
    assert progress == [0, 1, 2]
    # cancel: the caller gets wamp.error.canceled, the WebSocket callee is interrupted
    call = rs.call(f"com.{tag}.block")
    await asyncio.wait_for(blocking.invoked, TIMEOUT)
    call.cancel()
    await rs.frames.wait_for(
        lambda f: f[0] == ERROR and f[1] == CALL and f[4] == "wamp.error.canceled"
    )
    await asyncio.wait_for(blocking.interrupted, TIMEOUT)
    # pub/sub both ways
    loop = asyncio.get_running_loop()
    to_ws: asyncio.Future[Any] = loop.create_future()
    to_rs: asyncio.Future[Any] = loop.create_future()
    await ws.subscribe(lambda x: to_ws.set_result(x), f"com.{tag}.to_ws")
    await rs.subscribe(lambda x: to_rs.set_result(x), f"com.{tag}.to_rs")
    ack = PublishOptions(acknowledge=True)
    await rs.publish(f"com.{tag}.to_ws", b"\x00\x01bytes", options=ack)
    await ws.publish(f"com.{tag}.to_rs", {"k": [1, 2.5, "x"]}, options=ack)
    assert await asyncio.wait_for(to_ws, TIMEOUT) == b"\x00\x01bytes"
    assert await asyncio.wait_for(to_rs, TIMEOUT) == {"k": [1, 2.5, "x"]}


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
async def test_autobahn_over_rawsocket_on_the_websocket_port(
    node: Node, ws_clients: ClientPool, rs_clients: list[Client], serializer: str
) -> None:
    ws = await ws_clients.connect("json" if serializer != "json" else "msgpack")
    rs = await rawsocket_connect(("127.0.0.1", node.proc.port), serializer)
    rs_clients.append(rs)
    assert await rs.call("wamp.session.count") >= 2
    info = await ws.call("wamp.session.get", rs.id)
    assert info["transport"]["type"] == "rawsocket"
    await exercise(rs, ws, f"shared.{serializer}")


async def test_autobahn_over_a_rawsocket_only_port(
    node: Node, ws_clients: ClientPool, rs_clients: list[Client]
) -> None:
    ws = await ws_clients.connect("cbor")
    rs = await rawsocket_connect(("127.0.0.1", node.rs_port), "msgpack")
    rs_clients.append(rs)
    await exercise(rs, ws, "tcp")


@pytest.mark.parametrize("serializer", ["json", "cbor"])
async def test_autobahn_over_a_unix_socket(
    node: Node, ws_clients: ClientPool, rs_clients: list[Client], serializer: str
) -> None:
    assert stat.S_ISSOCK(os.stat(node.unix_path).st_mode)
    assert stat.S_IMODE(os.stat(node.unix_path).st_mode) == 0o600
    ws = await ws_clients.connect("json")
    rs = await rawsocket_connect(node.unix_path, serializer)
    rs_clients.append(rs)
    await exercise(rs, ws, f"unix.{serializer}")


def test_stale_unix_socket_file_is_replaced(tmp_path: Path) -> None:
    path = tmp_path / "stale.sock"
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(path))
    dead.close()  # the file stays behind, nobody listens: stale
    config = tmp_path / "broker.toml"
    config.write_text(f'[[listener]]\npath = "{path}"\n')
    proc = start_broker("--config", str(config))
    try:
        proc.wait_for_output(r"removed stale socket file")
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
            probe.settimeout(5)
            probe.connect(str(path))
            probe.sendall(b"\x7f\xf1\x00\x00")
            assert probe.recv(4) == b"\x7f\xd1\x00\x00"  # json, 2 ** (9 + 13): 4 MiB
    finally:
        proc.stop()


# --- bad input ----------------------------------------------------------------------------
def test_handshake_reply_carries_the_serializer_and_the_routers_maximum(node: Node) -> None:
    for serializer in (1, 2, 3):
        client = BareRawSocket(node.proc.port, bytes((0x7F, 0xF0 | serializer, 0, 0)))
        # max_message_size 65536 = 2 ** (9 + 7)
        assert client.read_exactly(4) == bytes((0x7F, 0x70 | serializer, 0, 0))
        client.close()


@pytest.mark.parametrize(
    ("hello", "error"),
    [
        (b"\x7f\xf0\x00\x00", 0x10),  # serializer 0: illegal
        (b"\x7f\xf9\x00\x00", 0x10),  # serializer 9: unsupported
        (b"\x7f\xf1\x00\x01", 0x30),  # reserved octets used
        (b"\x7f\xf1\x80\x00", 0x30),
    ],
)
def test_bad_handshake_gets_the_spec_error_and_a_close(
    node: Node, hello: bytes, error: int
) -> None:
    client = BareRawSocket(node.proc.port, hello)
    assert client.read_exactly(4) == bytes((0x7F, error, 0, 0))
    assert client.closed_by_peer()
    client.close()


def test_wrong_magic_on_a_rawsocket_only_port_is_closed(node: Node) -> None:
    client = BareRawSocket(node.rs_port, b"GET / HTTP/1.1\r\n\r\n")
    assert client.closed_by_peer()
    assert client.buffer == b""  # no reply at all: not a RawSocket client
    client.close()


def test_ping_is_answered_with_a_pong_carrying_the_same_payload(node: Node) -> None:
    client = BareRawSocket(node.proc.port)
    assert client.join()[0] == 2
    client.send_frame(1, b"\x00ping-payload\xff")
    assert client.frame() == (2, b"\x00ping-payload\xff")
    client.send_json([48, 1, {}, "wamp.session.count"])
    assert client.message()[0] == 50
    client.close()


@pytest.mark.parametrize(
    ("header", "reason"),
    [
        (bytes((0x08, 0, 0, 2)), "reserved"),  # a reserved bit in the first octet
        (bytes((0x03, 0, 0, 2)), "reserved"),  # frame type 3 is reserved
        ((0x0001_0001).to_bytes(4, "big"), "maximum"),  # 65537 bytes > 65536
    ],
)
def test_bad_frame_header_aborts_the_session(node: Node, header: bytes, reason: str) -> None:
    client = BareRawSocket(node.proc.port)
    assert client.join()[0] == 2
    client.sock.sendall(header + b"[]")
    abort = client.message()
    assert abort[0] == ABORT and abort[2] == "wamp.error.protocol_violation"
    assert reason in abort[1]["message"]
    assert client.closed_by_peer()
    client.close()


async def test_truncated_frame_ends_only_that_connection(
    node: Node, rs_clients: list[Client]
) -> None:
    witness = await rawsocket_connect(("127.0.0.1", node.proc.port), "msgpack")
    rs_clients.append(witness)
    client = BareRawSocket(node.proc.port)
    assert client.join()[0] == 2
    client.sock.sendall(bytes((0, 0, 0, 100)) + b"[48, 1")  # promises 100, sends 6
    client.sock.shutdown(socket.SHUT_WR)
    assert await asyncio.to_thread(client.closed_by_peer)
    client.close()
    assert await witness.call("wamp.session.count") >= 1
    assert "Traceback" not in node.proc.output


def test_connection_limit_is_answered_with_error_4(tmp_path: Path) -> None:
    config = tmp_path / "broker.toml"
    config.write_text('[limits]\nmax_sessions = 1\n\n[[realm]]\nname = "realm1"\n')
    proc = start_broker("--config", str(config))
    try:
        first = BareRawSocket(proc.port)
        assert first.join()[0] == 2
        second = BareRawSocket(proc.port)
        assert second.read_exactly(4) == b"\x7f\x40\x00\x00"
        assert second.closed_by_peer()
        second.close()
        first.close()
    finally:
        proc.stop()


def test_message_over_the_clients_maximum_is_not_sent_to_that_client_only(node: Node) -> None:
    small = BareRawSocket(node.proc.port, b"\x7f\x11\x00\x00")  # json, receives <= 1 KiB
    large = BareRawSocket(node.proc.port, b"\x7f\xf1\x00\x00")  # json, 16 MiB
    for client in (small, large):
        assert client.join()[0] == 2
        client.send_json([32, 1, {}, "com.rs.sizes"])
        assert client.message()[0] == 33
    large.send_json([16, 2, {"exclude_me": False}, "com.rs.sizes", ["x" * 2000]])
    large.send_json([16, 3, {"exclude_me": False}, "com.rs.sizes", ["small"]])
    assert [large.message()[4] for _ in range(2)] == [["x" * 2000], ["small"]]
    assert small.message()[4] == ["small"]  # the big one was dropped for it alone
    small.close()
    large.close()
