"""Issue 11's chaos scenario, small: every fault, fewer subscribers, a shorter SIGSTOP.

The same code as ``python -m bench.history_chaos`` (``tests/support/chaos.py``, whose
docstring states the promises): 3 nodes behind HAProxy, 3 SDK subscribers resuming and
3 Autobahn subscribers, one publisher per node publishing numbered events with
acknowledge; SIGKILL and restart of a node, SIGKILL of Redis and restart from its AOF,
SIGSTOP of Redis for 2.5 s, a node's pub/sub connection killed. Twice: HAProxy checking
/healthz (sessions stay through Redis faults: router-side repair), and docker/haproxy.cfg
as shipped (/readyz: the sessions of a node marked down are cut, clients resume). About
20 s each.
"""

from __future__ import annotations

import shutil
from dataclasses import replace

import pytest

from tests.support.chaos import Plan, run

pytestmark = pytest.mark.skipif(shutil.which("haproxy") is None, reason="haproxy is not installed")

SMALL = Plan(sdk=3, autobahn=3, rate=25.0, between=30, stop_seconds=2.5, converge=15.0)


@pytest.mark.parametrize("haproxy", ["healthz", "docker"])
async def test_every_acknowledged_event_arrives_once_in_order_or_a_gap_is_told(
    haproxy: str,
) -> None:
    plan = replace(SMALL, haproxy=haproxy)
    result = await run(plan)
    print("\n" + "\n".join(result.lines()))
    assert result.broken == []
    acked = sum(p["acked"] for p in result.publishers)
    assert acked >= 3 * 5 * plan.between  # five stretches of traffic, three publishers
    fates = {s["fate"] for s in result.subscribers}
    assert {"resumed", "died"} <= fates
    if haproxy == "healthz":  # Autobahn sessions on c0 and c2 outlive every Redis fault
        assert "stayed" in fates
    assert any(p["unavailable"] for p in result.publishers)  # Redis was really away
