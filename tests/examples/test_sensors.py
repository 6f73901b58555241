"""examples/sensors: two devices stream, the collector aggregates and stops on "stop"."""

from __future__ import annotations

import re
import subprocess
import sys

from tests.examples.conftest import Example, example_env, finish
from tests.support.processes import ROOT, BrokerProcess


def test_collector_aggregates_devices_until_stop(broker: BrokerProcess, example: Example) -> None:
    collector = example(broker, "sensors/collector.py")
    collector.wait_for_output("collecting from com.example.sensors.reading")

    devices = [
        example(broker, "sensors/device.py", "--device", name, "--count", "12", "--interval", "0")
        for name in ("thermo-1", "thermo-2")
    ]
    for device in devices:
        assert "sent 12 readings" in finish(device)
    # The stop comes from the command-line client, as the README shows.
    subprocess.run(
        [
            sys.executable,
            "-m",
            "client_sdk.cli",
            "--url",
            broker.url,
            "pub",
            "com.example.sensors.stop",
        ],
        cwd=ROOT,
        env=example_env(),
        check=True,
        timeout=15,
    )
    output = finish(collector)

    assert "stop received: 2 device(s)" in output
    for name in ("thermo-1", "thermo-2"):
        match = re.search(
            rf"^{name}: count=(\d+) min=([\d.]+) max=([\d.]+) mean=([\d.]+)$", output, re.M
        )
        assert match, output
        count, low, high, mean = int(match[1]), float(match[2]), float(match[3]), float(match[4])
        assert count == 12
        assert low <= mean <= high
