"""HTTP long-poll (spec "HTTP Longpoll Transport") under /lp on the WebSocket port: a
stdlib HTTP client joins, subscribes, calls and is called with WebSocket peers in the
same realm; unknown IDs, oversized bodies, idle receives, expired and slow sessions end
with a clear HTTP status, and CORS answers only the configured origins."""

from __future__ import annotations

import asyncio
import http.client
import json
import struct
from collections.abc import AsyncIterator, Iterator
from typing import Any

import msgpack
import pytest
from autobahn.wamp.types import PublishOptions

from tests.broker.interop._autobahn import ClientPool
from tests.support.processes import BrokerProcess, start_broker

HELLO = [1, "realm1", {"roles": {"caller": {}, "callee": {}, "subscriber": {}, "publisher": {}}}]
GOOD_ORIGIN = "https://good.example"
Reply = tuple[int, dict[str, str], bytes]


@pytest.fixture(scope="module")
def node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    config = tmp_path_factory.mktemp("lp") / "broker.toml"
    config.write_text(
        f'[server]\nallowed_origins = ["{GOOD_ORIGIN}"]\n\n'
        "[limits]\nmax_message_size = 65536\nmax_write_buffer = 65536\n"
        "longpoll_receive_timeout = 1\nlongpoll_session_timeout = 2\n\n"
        '[[realm]]\nname = "realm1"\n'
    )
    proc = start_broker("--config", str(config))
    yield proc
    proc.stop()


@pytest.fixture
async def ws_clients(node: BrokerProcess) -> AsyncIterator[ClientPool]:
    pool = ClientPool(node.url)
    yield pool
    await pool.close_all()


def post(
    port: int,
    path: str,
    body: bytes = b"",
    headers: dict[str, str] | None = None,
    method: str = "POST",
) -> Reply:
    """One HTTP request on a fresh connection (timeout 10 s)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body, headers=headers or {})
        response = conn.getresponse()
        return response.status, dict(response.getheaders()), response.read()
    finally:
        conn.close()


class LongPollClient:
    """A WAMP session over long-poll, driven by blocking HTTP requests in threads."""

    def __init__(self, port: int, protocol: str = "wamp.2.json") -> None:
        self.port = port
        status, _, body = post(port, "/lp/open?x=1", json.dumps({"protocols": [protocol]}).encode())
        assert status == 200
        opened = json.loads(body)
        assert opened["protocol"] == protocol
        self.id: str = opened["transport"]
        self.binary = "msgpack" in protocol
        self.batched = protocol.endswith(".batched")

    async def send(self, *messages: list[Any]) -> int:
        if self.binary:
            parts = [msgpack.packb(m) for m in messages]
            body = (
                b"".join(struct.pack("!I", len(p)) + p for p in parts) if self.batched else parts[0]
            )
        else:
            texts = [json.dumps(m).encode() for m in messages]
            body = b"".join(t + b"\x1e" for t in texts) if self.batched else texts[0]
        status, _, _ = await asyncio.to_thread(post, self.port, f"/lp/{self.id}/send", body)
        return status

    async def receive(self) -> tuple[int, list[list[Any]]]:
        status, _, body = await asyncio.to_thread(post, self.port, f"/lp/{self.id}/receive?x=2")
        if status != 200:
            return status, []
        if not self.batched:
            return status, [msgpack.unpackb(body) if self.binary else json.loads(body)]
        if not self.binary:
            return status, [json.loads(p) for p in body.split(b"\x1e") if p]
        found, pos = [], 0
        while pos < len(body):
            (size,) = struct.unpack_from("!I", body, pos)
            found.append(msgpack.unpackb(body[pos + 4 : pos + 4 + size]))
            pos += 4 + size
        return status, found

    async def next(self, kind: int) -> list[Any]:
        """Receive until a message of type ``kind`` arrives (at most 20 receives)."""
        for _ in range(20):
            status, messages = await self.receive()
            assert status in (200, 204)
            for message in messages:
                if message[0] == kind:
                    return message
        raise AssertionError(f"no message of type {kind}")


async def test_open_gives_unguessable_distinct_transport_ids(node: BrokerProcess) -> None:
    ids = {LongPollClient(node.port).id for _ in range(3)}
    assert len(ids) == 3 and all(len(i) >= 22 for i in ids)  # 128 random bits, base64url


async def test_longpoll_session_talks_to_websocket_peers(
    node: BrokerProcess, ws_clients: ClientPool
) -> None:
    ws = await ws_clients.connect("msgpack")
    await ws.register(lambda a, b: a * b, "com.lp.mul")
    lp = LongPollClient(node.port)
    assert await lp.send(HELLO) == 204
    welcome = await lp.next(2)
    info = await ws.call("wamp.session.get", welcome[1])
    assert info["transport"]["type"] == "longpoll"
    # call a WebSocket callee
    await lp.send([48, 1, {}, "com.lp.mul", [6, 7]])
    assert (await lp.next(50))[3] == [42]
    # subscribe, and receive what the WebSocket peer publishes
    await lp.send([32, 2, {}, "com.lp.news"])
    await lp.next(33)
    await ws.publish("com.lp.news", "hello", b"\x01\x02", options=PublishOptions(acknowledge=True))
    event = await lp.next(36)
    assert event[4] == ["hello", "\x00AQI="]  # bytes, as WAMP's JSON carries them
    # be called by the WebSocket peer
    await lp.send([64, 3, {}, "com.lp.echo"])
    registered = await lp.next(65)
    call = asyncio.ensure_future(ws.call("com.lp.echo", "ping"))
    invocation = await lp.next(68)
    assert invocation[2] == registered[2] and invocation[4] == ["ping"]
    await lp.send([70, invocation[1], {}, ["pong"]])
    assert await asyncio.wait_for(call, 5) == "pong"
    # goodbye, then close: the ID is gone
    await lp.send([6, {}, "wamp.close.goodbye_and_out"])
    assert (await lp.next(6))[0] == 6
    assert (await asyncio.to_thread(post, node.port, f"/lp/{lp.id}/close"))[0] in (204, 404)
    assert await lp.send([48, 9, {}, "com.lp.mul", [1, 1]]) == 404


async def test_batched_msgpack_longpoll(node: BrokerProcess) -> None:
    lp = LongPollClient(node.port, "wamp.2.msgpack.batched")
    await lp.send(HELLO, [48, 1, {}, "wamp.session.count"], [48, 2, {}, "wamp.session.count"])
    seen: list[list[Any]] = []
    while len([m for m in seen if m[0] == 50]) < 2:
        status, messages = await lp.receive()
        assert status in (200, 204)
        seen += messages
    assert seen[0][0] == 2 and [m[1] for m in seen if m[0] == 50] == [1, 2]
    assert (await asyncio.to_thread(post, node.port, f"/lp/{lp.id}/close"))[0] == 204


async def test_idle_receive_comes_back_empty_after_the_receive_timeout(
    node: BrokerProcess,
) -> None:
    lp = LongPollClient(node.port)
    await lp.send(HELLO)
    assert (await lp.next(2))[0] == 2
    status, messages = await lp.receive()  # nothing waits: held 1 s, then 204
    assert (status, messages) == (204, [])
    await asyncio.to_thread(post, node.port, f"/lp/{lp.id}/close")


def test_send_to_an_unknown_transport_is_404(node: BrokerProcess) -> None:
    for action in ("send", "receive", "close"):
        status, _, _ = post(node.port, f"/lp/AAAAAAAAAAAAAAAAAAAAAA/{action}", b"[]")
        assert status == 404
    assert post(node.port, "/lp/open", b'{"protocols": ["wamp.2.xml"]}')[0] == 400
    assert post(node.port, "/lp/open", b"not json")[0] == 400
    assert post(node.port, "/lp/open", method="GET")[0] == 405


def test_oversized_body_is_413_and_the_session_survives(node: BrokerProcess) -> None:
    lp = LongPollClient(node.port)
    status, _, _ = post(node.port, f"/lp/{lp.id}/send", b"x" * 70_000)
    assert status == 413
    assert post(node.port, f"/lp/{lp.id}/send", json.dumps(HELLO).encode())[0] == 204
    assert post(node.port, f"/lp/{lp.id}/close")[0] == 204


async def test_session_without_receive_expires(node: BrokerProcess) -> None:
    lp = LongPollClient(node.port)
    await lp.send(HELLO)
    session = (await lp.next(2))[1]
    # no receive from now on: the session ends after longpoll_session_timeout (2 s)
    pattern = rf"session {session} closed \(long-poll timed out\)"
    await asyncio.to_thread(node.wait_for_output, pattern, 10)
    assert await lp.send([48, 1, {}, "wamp.session.count"]) == 404


async def test_slow_longpoll_consumer_is_dropped(
    node: BrokerProcess, ws_clients: ClientPool
) -> None:
    ws = await ws_clients.connect("json")
    lp = LongPollClient(node.port)
    await lp.send(HELLO)
    await lp.next(2)
    await lp.send([32, 1, {}, "com.lp.flood"])
    await lp.next(33)
    start = len(node.lines)
    for n in range(40):  # 40 x 4 KiB > max_write_buffer (64 KiB), never received
        ws.publish("com.lp.flood", n, "y" * 4096)
    assert await ws.call("wamp.session.count") >= 1  # the publisher is served
    node.wait_for_output(r"closing slow consumer", timeout=10, start=start)
    assert (await lp.receive())[0] == 404


def test_cors_answers_configured_origins_only(node: BrokerProcess) -> None:
    preflight = {
        "Origin": GOOD_ORIGIN,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "content-type",
    }
    status, headers, _ = post(node.port, "/lp/open", method="OPTIONS", headers=preflight)
    assert status == 204
    assert headers["Access-Control-Allow-Origin"] == GOOD_ORIGIN
    assert "POST" in headers["Access-Control-Allow-Methods"]
    body = json.dumps({"protocols": ["wamp.2.json"]}).encode()
    status, headers, _ = post(node.port, "/lp/open", body, {"Origin": GOOD_ORIGIN})
    assert status == 200 and headers["Access-Control-Allow-Origin"] == GOOD_ORIGIN
    status, headers, _ = post(node.port, "/lp/open", body, {"Origin": "https://evil.example"})
    assert status == 403 and "Access-Control-Allow-Origin" not in headers
