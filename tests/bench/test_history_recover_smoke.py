"""Smoke test of ``bench.history_recover``: every case recovers every missed event.

A functional check only, with a few hundred events and one run (no timing asserted):
the JSON line of each case says all events arrived, through the parent/child runner.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.support.processes import ROOT

EVENTS = 300


@pytest.mark.timeout(120)
def test_each_case_recovers_every_missed_event() -> None:
    cmd = [sys.executable, "-m", "bench.history_recover", "--events", str(EVENTS), "--runs", "1"]
    done = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=110)
    assert done.returncode == 0, done.stdout + done.stderr
    records = {
        record["case"]: record
        for record in (
            json.loads(line) for line in done.stdout.splitlines() if line.startswith("{")
        )
    }
    assert set(records) == {"repair", "sdk-memory", "sdk-redis"}
    assert records["repair"]["recovered"] == EVENTS
    assert records["repair"]["total_s"] > 0
    for case in ("sdk-memory", "sdk-redis"):
        assert records[case]["replayed"] == EVENTS and records[case]["gaps"] == []
    assert "| repair | total_s (median) |" in done.stdout
