"""The hello service: registers ``com.example.hello.greet`` (name → "Hello NAME!").

    python examples/hello/service.py [--url ws://127.0.0.1:8080/ws] [--realm realm1]

It uses ``client_sdk.Client``, which reconnects and re-registers on its own, and
runs until Ctrl-C / SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import client_sdk

PROCEDURE = "com.example.hello.greet"


def greet(name: str) -> str:
    """The procedure: one positional argument, a name."""
    return f"Hello {name}!"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("WAMP_URL", "ws://127.0.0.1:8080/ws"))
    parser.add_argument("--realm", default=os.environ.get("WAMP_REALM", "realm1"))
    args = parser.parse_args()

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)

    async with client_sdk.Client(args.url, args.realm) as client:
        await client.register(PROCEDURE, greet)
        print(f"ready: {PROCEDURE} registered at {args.url}", flush=True)
        await stop.wait()
    print("bye", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
