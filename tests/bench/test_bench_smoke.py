"""Smoke test of the benchmark load generator against a real broker process.

A functional check only: the scenarios run for a tiny bounded count, print one JSON line
with the documented keys, and every call gets its result and every subscriber every event.
No timing is asserted (speed targets live in bench/, not in tests).
"""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any

import pytest

from tests.support.processes import ROOT, BrokerProcess

COMMON_KEYS = {
    "scenario",
    "target",
    "url",
    "params",
    "unit",
    "throughput",
    "latency_ms",
    "elapsed_s",
    "sent",
    "errors",
    "broker",
    "machine",
}
LATENCY_KEYS = {"p50", "p90", "p99", "max", "mean", "samples"}
BROKER_KEYS = {"pids", "cpu_s", "cpu_util", "rss_kib", "rss_mib", "peak_rss_kib", "peak_rss_mib"}


def loadgen(broker: BrokerProcess, *args: str) -> dict[str, Any]:
    cmd = [
        sys.executable,
        "-m",
        "bench.loadgen",
        *args,
        "--url",
        broker.url,
        "--pid",
        str(broker.proc.pid),
        "--target",
        "smoke",
        "--warmup",
        "0",
        "--duration",
        "10",
        "--timeout",
        "5",
    ]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    assert len(lines) == 1, done.stdout
    record: dict[str, Any] = json.loads(lines[0])
    assert COMMON_KEYS <= record.keys()
    assert record["target"] == "smoke"
    assert record["errors"] == 0
    assert record["latency_ms"] is not None
    assert LATENCY_KEYS <= record["latency_ms"].keys()
    assert record["broker"] is not None
    assert BROKER_KEYS <= record["broker"].keys()
    assert broker.proc.pid in record["broker"]["pids"]
    assert record["broker"]["rss_kib"] > 0
    assert record["broker"]["peak_rss_kib"] >= record["broker"]["rss_kib"]
    return record


@pytest.mark.timeout(60)
def test_rpc_every_call_gets_its_result(broker: BrokerProcess) -> None:
    record = loadgen(broker, "rpc", "--callers", "4", "--count", "200")
    assert record["scenario"] == "rpc"
    assert record["unit"] == "calls/s"
    assert record["sent"] == 200
    assert record["received"] == record["sent"]
    assert record["latency_ms"]["samples"] == 200


@pytest.mark.timeout(60)
def test_fanout_every_subscriber_gets_every_event(broker: BrokerProcess) -> None:
    record = loadgen(broker, "fanout", "--subscribers", "5", "--count", "100", "--window", "8")
    assert record["scenario"] == "fanout"
    assert record["unit"] == "events/s"
    assert record["published"] == 100
    assert record["expected"] == 500
    assert record["delivered"] == record["expected"]
    assert record["short_subscribers"] == 0
    assert record["latency_ms"]["samples"] == 500


@pytest.mark.timeout(60)
def test_fanout_with_a_stalled_subscriber_the_others_get_every_event(
    broker: BrokerProcess,
) -> None:
    record = loadgen(
        broker, "fanout", "--subscribers", "5", "--stalled", "1", "--count", "100", "--window", "8"
    )
    assert record["params"]["stalled"] == 1
    assert record["stalled"] == 1
    # The stalled subscriber is not counted: the 5 healthy ones got all 100 events each.
    assert record["published"] == 100
    assert record["expected"] == 500
    assert record["delivered"] == record["expected"]
    assert record["short_subscribers"] == 0
    # 100 small events are far below max_write_buffer: the router keeps it connected.
    assert record["stalled_dropped"] == 0
