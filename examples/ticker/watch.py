"""Many subscribers of the ticker feed: one process, N sessions, a prefix subscription each.

    python examples/ticker/watch.py [--subscribers 50] [--quotes 200]

Every session subscribes to ``com.example.ticker.`` with ``match="prefix"`` (all
symbols). The broker encodes each quote once and fans it out to every session. The
script exits when each session received ``--quotes`` quotes (0: run until Ctrl-C) and
prints what they saw.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal

import client_sdk

PREFIX = "com.example.ticker."


async def watch(
    url: str, realm: str, quotes: int, ready: asyncio.Barrier, last: dict[str, float]
) -> int:
    """One subscriber session; returns how many quotes it received."""
    received = 0
    done = asyncio.Event()

    def on_quote(event: client_sdk.Event) -> None:
        nonlocal received
        received += 1
        last[event.kwargs["symbol"]] = event.kwargs["price"]
        if received == quotes:
            done.set()

    async with client_sdk.connect(url, realm) as session:
        await session.subscribe(PREFIX, on_quote, match="prefix")
        await ready.wait()
        await done.wait()
    return received


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=50)
    parser.add_argument("--quotes", type=int, default=200, help="quotes each subscriber awaits")
    parser.add_argument("--url", default=os.environ.get("WAMP_URL", "ws://127.0.0.1:8080/ws"))
    parser.add_argument("--realm", default=os.environ.get("WAMP_REALM", "realm1"))
    args = parser.parse_args()

    ready = asyncio.Barrier(args.subscribers + 1)
    last: dict[str, float] = {}
    tasks = [
        asyncio.create_task(watch(args.url, args.realm, args.quotes, ready, last))
        for _ in range(args.subscribers)
    ]
    await ready.wait()
    print(f"subscribed: {args.subscribers} sessions on {PREFIX}*", flush=True)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, lambda: [t.cancel() for t in tasks])
    counts = await asyncio.gather(*tasks)
    print(f"{len(counts)} subscribers received {sum(counts)} quotes", flush=True)
    for symbol in sorted(last):
        print(f"last {symbol} {last[symbol]:.2f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
