"""A socket-level fuzzer against a running broker process.

Bounded (``CASES`` connections, a few seconds): random bytes as text and binary
frames, valid-looking messages with wrong field types, messages out of order,
huge frames, and garbage instead of an HTTP handshake. Properties:

- every bad session ends: ABORT with a reason then close, or a close code
  (1009 for a frame over the size limit), never a hang;
- the broker never logs an internal error or a traceback;
- a witness session joined before the storm keeps working during and after it;
- the broker's resident memory returns near its baseline afterwards.
"""

from __future__ import annotations

import asyncio
import json
import random
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.support.processes import BrokerProcess, start_broker

CASES = 600
CONCURRENCY = 25
SEED = 20240611
ROLES = {"publisher": {}, "subscriber": {}, "caller": {}, "callee": {}}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[BrokerProcess]:
    config: Path = tmp_path_factory.mktemp("fuzz") / "broker.toml"
    config.write_text(
        '[limits]\nmax_message_size = 65536\nhello_timeout = 3.0\nopen_timeout = 2.0\n\n[[realm]]\nname = "realm1"\n'
    )
    proc = start_broker("--config", str(config))
    yield proc
    proc.stop()


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


# --- case generators ------------------------------------------------------------------------
def wrong_types(rng: random.Random) -> list[Any]:
    """A real message type with one field of the wrong type (the decoder must refuse it)."""
    junk = rng.choice([None, True, -1, 2**60, 1.5, "x", [], {"a": 1}, [[1]], "wamp..x"])
    templates: list[list[Any]] = [
        [1, "realm1", {"roles": ROLES}],
        [16, 1, {}, "com.topic", []],
        [32, 1, {}, "com.topic"],
        [48, 1, {}, "com.proc", [], {}],
        [64, 1, {}, "com.proc"],
        [70, 1, {}, []],
        [8, 68, 1, {}, "com.error"],
        [5, "signature", {}],
    ]
    message = list(rng.choice(templates))
    index = rng.randrange(1, len(message))
    if type(junk) is type(message[index]):  # make sure the type is really wrong
        junk = "not-an-int" if isinstance(message[index], int) else 12345
    message[index] = junk
    return message


def out_of_order(rng: random.Random) -> list[list[Any]]:
    """Messages a client may not send in the state it is in."""
    hello = [1, "realm1", {"roles": ROLES}]
    return rng.choice(
        [
            [[16, 1, {}, "com.early", []]],
            [[5, "sig", {}]],
            [[2, 1, {"roles": {}}]],  # WELCOME from a client
            [hello, hello],  # HELLO twice
            [hello, [4, "ticket", {}]],  # CHALLENGE from a client
            [hello, [36, 1, 1, {}]],  # EVENT from a client
            [hello, [50, 1, {}]],  # RESULT from a client
            [[999, 1, 2, 3]],
            [[], [1]],
        ]
    )


def random_frame(rng: random.Random) -> str | bytes:
    data = rng.randbytes(rng.randrange(0, 300))
    if rng.random() < 0.5:
        return data.decode("latin-1")  # text frame of arbitrary characters
    return data


async def read_until_closed(ws: ClientConnection) -> tuple[list[Any] | None, int | None]:
    """(the ABORT received, if any; the close code) — within a hard deadline."""
    abort: list[Any] | None = None
    try:
        async with asyncio.timeout(8):
            async for data in ws:
                try:
                    message = json.loads(data) if isinstance(data, str) else msgpack.unpackb(data)
                except ValueError:
                    continue
                if isinstance(message, list) and message and message[0] == 3:
                    abort = message
    except ConnectionClosed:
        pass
    return abort, ws.close_code


async def ws_case(url: str, rng: random.Random, kind: str) -> dict[str, Any]:
    protocol = rng.choice(["wamp.2.json", "wamp.2.msgpack"])
    encode: Any = json.dumps if protocol == "wamp.2.json" else msgpack.packb
    async with ws_connect(url, subprotocols=[protocol], max_size=None) as ws:  # type: ignore[list-item]
        try:
            if kind == "bytes":
                await ws.send(random_frame(rng))
            elif kind == "types":
                if rng.random() < 0.5:
                    await ws.send(encode([1, "realm1", {"roles": ROLES}]))
                await ws.send(encode(wrong_types(rng)))
            elif kind == "order":
                for message in out_of_order(rng):
                    await ws.send(encode(message))
            else:  # huge
                await ws.send(
                    encode([16, 1, {}, "com.huge", ["x" * rng.randrange(70_000, 400_000)]])
                )
        except ConnectionClosed:
            pass
        abort, code = await read_until_closed(ws)
    return {"kind": kind, "abort": abort, "code": code}


def http_garbage_case(url: str, rng: random.Random) -> bool:
    """Garbage instead of an HTTP upgrade: the broker must close the TCP connection."""
    host, port = url.split("//")[1].split("/")[0].split(":")
    with socket.create_connection((host, int(port)), timeout=8) as sock:
        payload = rng.choice(
            [
                rng.randbytes(200),
                b"GET /ws HTTP/1.1\r\n" + b"X: " + b"y" * 20_000 + b"\r\n\r\n",
                b"\x16\x03\x01\x00\xa5\x01",
                b"POST /ws HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            ]
        )
        try:
            sock.sendall(payload)
            while sock.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
    return True


async def witness_roundtrip(url: str) -> None:
    """A joined publisher and subscriber exchange one event (the broker still routes)."""
    async with (
        ws_connect(url, subprotocols=["wamp.2.json"]) as sub,
        ws_connect(  # type: ignore[list-item]
            url,
            subprotocols=["wamp.2.json"],  # type: ignore[list-item]
        ) as pub,
    ):
        for ws in (sub, pub):
            await ws.send(json.dumps([1, "realm1", {"roles": ROLES}]))
            assert json.loads(await asyncio.wait_for(ws.recv(), 5))[0] == 2
        await sub.send(json.dumps([32, 1, {}, "com.witness"]))
        assert json.loads(await asyncio.wait_for(sub.recv(), 5))[0] == 33
        await pub.send(json.dumps([16, 1, {}, "com.witness", ["alive"]]))
        event = json.loads(await asyncio.wait_for(sub.recv(), 5))
        assert event[0] == 36 and event[4] == ["alive"]


async def test_socket_fuzzing_never_crashes_or_leaks(target: BrokerProcess) -> None:
    rng = random.Random(SEED)
    pid = target.proc.pid
    await witness_roundtrip(target.url)
    # warm-up of the same shape, so the baseline includes buffers a storm legitimately grows
    kinds = ["bytes", "types", "order", "huge"]
    await asyncio.gather(*(ws_case(target.url, rng, rng.choice(kinds)) for _ in range(40)))
    baseline = rss_kib(pid)

    results: list[dict[str, Any]] = []
    semaphore = asyncio.Semaphore(CONCURRENCY)

    async def one(index: int) -> None:
        case_rng = random.Random(SEED + index)
        async with semaphore:
            if index % 20 == 0:
                await asyncio.to_thread(http_garbage_case, target.url, case_rng)
                results.append({"kind": "http", "abort": None, "code": None})
            else:
                results.append(await ws_case(target.url, case_rng, case_rng.choice(kinds)))
            if index % 100 == 0:
                await witness_roundtrip(target.url)

    await asyncio.gather(*(one(i) for i in range(CASES)))
    await witness_roundtrip(target.url)

    assert len(results) == CASES
    for result in results:
        if result["kind"] == "http":
            continue
        code = result["code"]
        if result["kind"] == "huge":
            assert code == 1009, result
        elif code not in (1007,):  # 1007: invalid UTF-8 in a text frame, refused by websockets
            abort = result["abort"]
            assert abort is not None, result
            assert abort[2].startswith("wamp.error.") and abort[1].get("message"), result
            assert code is not None and code != 1011, result
    output = target.read_output()
    assert "Traceback" not in output
    assert "internal error" not in output
    after = rss_kib(pid)
    assert after < baseline + 40 * 1024, (baseline, after)
    by_kind: dict[str, int] = {}
    for result in results:
        by_kind[result["kind"]] = by_kind.get(result["kind"], 0) + 1
    print(f"socket fuzz: {CASES} cases {by_kind}; RSS {baseline} → {after} KiB")
