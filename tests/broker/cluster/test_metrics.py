"""/metrics of a clustered node: link gauges, the probe's round-trip time, the link state."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client import parser

from tests.support.processes import BrokerProcess, RedisProcess, start_redis

from .conftest import start_node

Gauges = dict[tuple[str, tuple[tuple[str, str], ...]], float]

STATES = ("connecting", "up", "degraded", "deaf", "down")


@pytest.fixture(scope="module")
def node(redis_server: RedisProcess, cluster_config: Path) -> Iterator[BrokerProcess]:
    started = start_node(redis_server, cluster_config, "metrics0")
    yield started
    started.stop()


def _gauges(node: BrokerProcess) -> Gauges:
    """Every sample of the node's exposition, parsed by Prometheus's own parser."""
    with urllib.request.urlopen(node.http_base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def _link(gauges: Gauges, link: str) -> float:
    return gauges[("wamp_cluster_link_up", (("link", link),))]


def _states(gauges: Gauges) -> dict[str, float]:
    return {state: gauges[("wamp_cluster_state", (("state", state),))] for state in STATES}


def test_clustered_node_reports_redis_link_up_and_its_round_trip_time(
    node: BrokerProcess,
) -> None:
    gauges = _gauges(node)
    assert gauges[("wamp_cluster_link_up", (("link", "redis"),))] == 1
    rtt = gauges[("wamp_redis_rtt_seconds", ())]
    assert 0 < rtt < 1.0
    assert _link(gauges, "pubsub") == 1
    assert _states(gauges) == {s: (1 if s == "up" else 0) for s in STATES}
    assert gauges[("wamp_cluster_outbox_dropped_total", ())] == 0


def test_link_gauges_drop_to_zero_when_redis_dies_and_return_with_it(
    cluster_config: Path,
) -> None:
    redis = start_redis()
    node = start_node(redis, cluster_config, "metrics1")
    try:
        gauges = _gauges(node)
        assert (_link(gauges, "redis"), _link(gauges, "pubsub")) == (1, 1)
        seen = len(node.read_output().splitlines())
        redis.kill()
        node.wait_for_output("link to Redis lost", timeout=10, start=seen)
        gauges = _gauges(node)
        assert (_link(gauges, "redis"), _link(gauges, "pubsub")) == (0, 0)
        assert ("wamp_redis_rtt_seconds", ()) not in gauges
        assert _states(gauges) == {s: (1 if s == "degraded" else 0) for s in STATES}

        seen = len(node.read_output().splitlines())
        redis = start_redis(port=redis.port)
        node.wait_for_output("cluster: node metrics1 connected", timeout=10, start=seen)
        gauges = _gauges(node)
        assert (_link(gauges, "redis"), _link(gauges, "pubsub")) == (1, 1)
        assert _states(gauges)["up"] == 1
    finally:
        node.stop()
        redis.kill()
