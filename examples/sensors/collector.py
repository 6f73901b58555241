"""The collector: aggregates sensor readings per device until a ``stop`` message arrives.

    python examples/sensors/collector.py [--url ws://127.0.0.1:8080/ws] [--realm realm1]

Subscribes to ``com.example.sensors.reading`` and ``com.example.sensors.stop``; on stop
(from anyone: ``wampc pub com.example.sensors.stop``) it prints one summary line per
device and exits::

    thermo-1: count=10 min=19.62 max=20.71 mean=20.15
"""

from __future__ import annotations

import argparse
import asyncio
import os
from dataclasses import dataclass

import client_sdk

READINGS = "com.example.sensors.reading"
STOP = "com.example.sensors.stop"


@dataclass
class Aggregate:
    """Running statistics of one device's readings."""

    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        self.low = min(self.low, value)
        self.high = max(self.high, value)

    def summary(self) -> str:
        mean = self.total / self.count
        return f"count={self.count} min={self.low:.2f} max={self.high:.2f} mean={mean:.2f}"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("WAMP_URL", "ws://127.0.0.1:8080/ws"))
    parser.add_argument("--realm", default=os.environ.get("WAMP_REALM", "realm1"))
    args = parser.parse_args()

    devices: dict[str, Aggregate] = {}
    stopped = asyncio.Event()

    def on_reading(event: client_sdk.Event) -> None:
        device, value = event.kwargs.get("device"), event.kwargs.get("value")
        if isinstance(device, str) and isinstance(value, int | float):
            devices.setdefault(device, Aggregate()).add(float(value))

    async with client_sdk.connect(args.url, args.realm) as session:
        await session.subscribe(READINGS, on_reading)
        await session.subscribe(STOP, lambda event: stopped.set())
        print(f"collecting from {READINGS}; publish to {STOP} to finish", flush=True)
        await stopped.wait()

    print(f"stop received: {len(devices)} device(s)", flush=True)
    for name in sorted(devices):
        print(f"{name}: {devices[name].summary()}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())
