"""HTTP API publishes/s (keep-alive) vs WebSocket publishes/s on one node; webhook deliveries/s.

Starts one broker process (127.0.0.1, port 0) with an HTTP API key and a webhook
to a local receiver, then measures, in the same run:

- ``http``: ``POST /publish`` over ``--connections`` keep-alive connections, each
  sending its next request when the answer came (one request in flight per
  connection); every publish is acknowledged (``{"publication": id}``);
- ``ws-ack``: the same number of WebSocket sessions (msgpack, ``bench.wamp``)
  publishing with ``acknowledge: true``, one in flight each: the like-for-like case;
- ``ws``: unacknowledged WebSocket publishes, windowed (the fire-and-forget ceiling);
- ``webhook``: a batch of events POSTed one by one by the webhook worker to a local
  asyncio receiver answering 200 (keep-alive), counted until all arrived.

    python -m bench.http_publish --duration 5 --connections 8

Every loop is bounded in time (``--duration``) and in count.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.wamp import PUBLISH, PUBLISHED, join
from broker.auth.secrets import hash_ticket
from tests.support.processes import start_broker

SECRET = "bench-secret"
_BATCH = 1000


class Receiver(asyncio.Protocol):
    """A minimal keep-alive HTTP receiver: counts requests, answers 204 to each."""

    count = 0
    done: asyncio.Event | None = None
    target = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport: asyncio.Transport = transport  # type: ignore[assignment]
        self.buffer = b""

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            head = self.buffer[:end].decode("latin-1").lower()
            length = 0
            for line in head.split("\r\n"):
                if line.startswith("content-length:"):
                    length = int(line.split(":", 1)[1])
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length :]
            Receiver.count += 1
            self.transport.write(b"HTTP/1.1 204 No Content\r\nContent-Length: 0\r\n\r\n")
            if Receiver.count >= Receiver.target and Receiver.done is not None:
                Receiver.done.set()


async def http_worker(port: int, deadline: float, limit: int) -> int:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    body = json.dumps({"topic": "com.bench.http", "args": [1]}).encode()
    request = (
        b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Authorization: Bearer bench.{SECRET}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    done = 0
    while done < limit and time.monotonic() < deadline:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        answer = await reader.readexactly(length)
        if not head.startswith(b"HTTP/1.1 200"):
            raise RuntimeError(f"publish failed: {head!r} {answer!r}")
        done += 1
    writer.close()
    return done


async def ws_worker(url: str, deadline: float, limit: int, ack: bool) -> int:
    session = await join(url)
    done = 0
    options = {"acknowledge": True} if ack else {}
    try:
        while done < limit and time.monotonic() < deadline:
            if ack:
                request = session.next_id()
                await session.send([PUBLISH, request, options, "com.bench.ws", [1]])
                while (await session.recv())[0] != PUBLISHED:
                    pass
                done += 1
            else:
                for _ in range(100):  # a window of 100 unacknowledged publishes
                    await session.send([PUBLISH, session.next_id(), {}, "com.bench.ws", [1]])
                done += 100
    finally:
        await session.close()
    return done


async def measure(name: str, workers: list[Any], duration: float) -> dict[str, Any]:
    started = time.monotonic()
    counts = await asyncio.gather(*workers)
    elapsed = time.monotonic() - started
    total = sum(counts)
    return {
        "case": name,
        "count": total,
        "seconds": round(elapsed, 2),
        "per_s": int(total / elapsed),
    }


async def webhook_case(port: int, events: int) -> dict[str, Any]:
    Receiver.done = asyncio.Event()
    Receiver.target = events
    started = time.monotonic()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    for first in range(0, events, _BATCH):
        batch = [{"topic": "com.bench.hook", "args": [i]} for i in range(first, first + _BATCH)]
        body = json.dumps(batch[: events - first]).encode()
        writer.write(
            b"POST /publish HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer bench.{SECRET}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
        await reader.readexactly(length)
    writer.close()
    await asyncio.wait_for(Receiver.done.wait(), 120)
    elapsed = time.monotonic() - started
    return {
        "case": "webhook",
        "count": Receiver.count,
        "seconds": round(elapsed, 2),
        "per_s": int(Receiver.count / elapsed),
    }


def config(hook_port: int, concurrency: int) -> str:
    return f"""
[limits]
message_rate = 0.0
[[realm]]
name = "realm1"
anonymous = true
[realm.http_api]
rate = 0.0
max_body = 1000000
[realm.http_api.keys.bench]
key_hash = "{hash_ticket(SECRET, iterations=1000)}"
authid = "bench"
role = "anonymous"
[[realm.webhook]]
name = "bench"
topic = "com.bench.hook"
url = "http://127.0.0.1:{hook_port}/hook"
queue = 1000000
concurrency = {concurrency}
"""


async def main(ns: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    receiver = await loop.create_server(Receiver, "127.0.0.1", 0)
    hook_port = receiver.sockets[0].getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "broker.toml"
        path.write_text(config(hook_port, ns.webhook_concurrency), encoding="utf-8")
        broker = await asyncio.to_thread(start_broker, "--config", str(path))
        try:
            limit = 10_000_000
            results = []
            for name in ("http", "ws-ack", "ws"):
                deadline = time.monotonic() + ns.duration
                if name == "http":
                    workers = [
                        http_worker(broker.port, deadline, limit) for _ in range(ns.connections)
                    ]
                else:
                    workers = [
                        ws_worker(broker.url, deadline, limit, name == "ws-ack")
                        for _ in range(ns.connections)
                    ]
                results.append(await measure(name, workers, ns.duration))
            results.append(await webhook_case(broker.port, ns.webhook_events))
            for result in results:
                extra = {"connections": ns.connections}
                if result["case"] == "webhook":
                    extra = {"concurrency": ns.webhook_concurrency}
                print(json.dumps({**result, **extra}))
        finally:
            broker.stop()
            receiver.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--webhook-events", type=int, default=5000)
    parser.add_argument("--webhook-concurrency", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
