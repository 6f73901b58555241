"""A market-data feed: publishes quotes to ``com.example.ticker.<SYMBOL>``.

    python examples/ticker/feed.py [--symbols ACME,GLOBEX] [--count 100] [--interval 0.1]

Each quote is one event with keyword arguments ``symbol``, ``seq`` and ``price`` (a
random walk). Subscribers pick symbols by topic, or all of them with a prefix
subscription to ``com.example.ticker.``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random

import client_sdk

PREFIX = "com.example.ticker."


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--symbols", default="ACME,GLOBEX", help="comma-separated symbols")
    parser.add_argument("--count", type=int, default=100, help="rounds of quotes (0: forever)")
    parser.add_argument("--interval", type=float, default=0.1, help="seconds between rounds")
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--url", default=os.environ.get("WAMP_URL", "ws://127.0.0.1:8080/ws"))
    parser.add_argument("--realm", default=os.environ.get("WAMP_REALM", "realm1"))
    args = parser.parse_args()

    rng = random.Random(args.seed)
    prices = {symbol: 100.0 for symbol in args.symbols.split(",") if symbol}
    ack = client_sdk.PublishOptions(acknowledge=True)
    async with client_sdk.connect(args.url, args.realm) as session:
        seq = 0
        while args.count == 0 or seq < args.count:
            for symbol in prices:
                prices[symbol] = round(max(0.01, prices[symbol] * rng.uniform(0.99, 1.01)), 2)
                await session.publish(
                    PREFIX + symbol, options=ack, symbol=symbol, seq=seq, price=prices[symbol]
                )
            seq += 1
            if args.interval > 0:
                await asyncio.sleep(args.interval)
    print(f"published {seq * len(prices)} quotes", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
