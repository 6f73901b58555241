"""The bare websockets floor: what the websockets library alone does on this machine.

One server (``websockets.asyncio.server``, msgpack subprotocol, no compression, no pings)
that answers just enough WAMP for the load generator's scenarios to run unchanged, while
doing the least possible work per message:

- HELLO -> WELCOME, SUBSCRIBE -> SUBSCRIBED, REGISTER -> REGISTERED, GOODBYE -> GOODBYE
  (set-up messages are decoded);
- a CALL frame is echoed back byte for byte (a bare echo server: the ``rpc`` scenario's
  round trips/s); it is never decoded: the type code is peeked from the frame's 2nd byte;
- a PUBLISH frame is handed, unchanged and undecoded, to ``broadcast()`` for every
  subscribed connection (the ``fanout`` scenario's deliveries/s).

Usage: ``python -m bench.floor --port 8090`` (prints ``listening on ws://127.0.0.1:8090/ws``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

import msgpack
from websockets.asyncio.server import ServerConnection, broadcast, serve
from websockets.exceptions import ConnectionClosed
from websockets.typing import Subprotocol

from bench.loadgen import parse_cpus

MSGPACK = Subprotocol("wamp.2.msgpack")
# A msgpack WAMP message is an array (0x90-0x9f for up to 15 elements) whose first
# element, the type code, is a positive fixint below 128: frame[1] is the code.
_CALL, _PUBLISH = 48, 16
WELCOME_DETAILS: dict[str, Any] = {
    "roles": {"broker": {"features": {}}, "dealer": {"features": {}}},
    "authid": "anonymous",
    "authrole": "anonymous",
    "authmethod": "anonymous",
}


class Floor:
    def __init__(self) -> None:
        self.subscribers: set[ServerConnection] = set()
        self.next_session = 0

    async def handler(self, ws: ServerConnection) -> None:
        subscribed = False
        send = ws.send
        try:
            async for frame in ws:
                if not isinstance(frame, bytes) or len(frame) < 2:
                    await ws.close(1003, "binary msgpack frames only")
                    return
                code = frame[1]
                if code == _CALL:
                    await send(frame)
                elif code == _PUBLISH:
                    broadcast(self.subscribers, frame)
                else:
                    msg = msgpack.unpackb(frame)
                    code = msg[0]
                    if code == 1:  # HELLO
                        self.next_session += 1
                        await send(msgpack.packb([2, self.next_session, WELCOME_DETAILS]))
                    elif code == 32:  # SUBSCRIBE
                        subscribed = True
                        self.subscribers.add(ws)
                        await send(msgpack.packb([33, msg[1], 1]))
                    elif code == 64:  # REGISTER
                        await send(msgpack.packb([65, msg[1], 1]))
                    elif code == 6:  # GOODBYE
                        await send(msgpack.packb([6, {}, "wamp.close.goodbye_and_out"]))
        except ConnectionClosed:
            pass
        finally:
            if subscribed:
                self.subscribers.discard(ws)


async def serve_floor(host: str, port: int) -> None:
    floor = Floor()
    stop = asyncio.get_running_loop().create_future()
    for sig in (signal.SIGTERM, signal.SIGINT):
        asyncio.get_running_loop().add_signal_handler(sig, stop.cancel)
    async with serve(
        floor.handler,
        host,
        port,
        subprotocols=[MSGPACK],
        compression=None,
        ping_interval=None,
        max_size=16 * 1024 * 1024,
    ) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        print(f"listening on ws://{host}:{bound}/ws", flush=True)
        try:
            await stop
        except asyncio.CancelledError:
            pass


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__.split("\n")[0])
    ap.add_argument("--host", default="127.0.0.1", choices=["127.0.0.1"])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--cpu", type=parse_cpus, default=[], help="pin the server, e.g. 0")
    ns = ap.parse_args()
    if ns.cpu:
        os.sched_setaffinity(0, ns.cpu)
    asyncio.run(serve_floor(ns.host, ns.port))


if __name__ == "__main__":
    main()
