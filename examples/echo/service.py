"""The echo service: registers ``com.example.echo``, which returns its arguments unchanged.

Usage::

    python examples/echo/service.py [--url ws://127.0.0.1:8080/ws] [--realm realm1]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
from typing import Any

import client_sdk

PROCEDURE = "com.example.echo"


def echo(*args: Any, **kwargs: Any) -> Any:
    """Return what came in: one value as itself, several as a list."""
    if kwargs:
        return {"args": list(args), "kwargs": kwargs}
    return args[0] if len(args) == 1 else list(args)


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
        await client.register(PROCEDURE, echo)
        print(f"ready: {PROCEDURE} registered at {args.url}", flush=True)
        await stop.wait()


if __name__ == "__main__":
    asyncio.run(main())
