"""A sensor device: publishes readings to ``com.example.sensors.reading``.

    python examples/sensors/device.py --device thermo-1 [--count 10] [--interval 1.0]

Each event carries keyword arguments ``device``, ``seq`` and ``value`` (a temperature
that wanders around 20 °C). Publishes are acknowledged, so when the device exits every
reading has reached the broker.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random

import client_sdk

TOPIC = "com.example.sensors.reading"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", required=True, help="this device's name")
    parser.add_argument("--count", type=int, default=10, help="readings to send (0: forever)")
    parser.add_argument("--interval", type=float, default=1.0, help="seconds between readings")
    parser.add_argument("--seed", type=int, default=None, help="random seed (reproducible values)")
    parser.add_argument("--url", default=os.environ.get("WAMP_URL", "ws://127.0.0.1:8080/ws"))
    parser.add_argument("--realm", default=os.environ.get("WAMP_REALM", "realm1"))
    args = parser.parse_args()

    rng = random.Random(args.seed)
    value = 20.0
    ack = client_sdk.PublishOptions(acknowledge=True)
    async with client_sdk.connect(args.url, args.realm) as session:
        seq = 0
        while args.count == 0 or seq < args.count:
            value = round(value + rng.uniform(-0.5, 0.5), 2)
            await session.publish(TOPIC, options=ack, device=args.device, seq=seq, value=value)
            seq += 1
            if args.interval > 0:
                await asyncio.sleep(args.interval)
    print(f"{args.device}: sent {seq} readings", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
