"""/metrics of a clustered node: the Redis link gauge and the probe's round-trip time."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.processes import BrokerProcess, RedisProcess

from .conftest import start_node

parser = pytest.importorskip("prometheus_client.parser")


@pytest.fixture(scope="module")
def node(redis_server: RedisProcess, cluster_config: Path) -> Iterator[BrokerProcess]:
    started = start_node(redis_server, cluster_config, "metrics0")
    yield started
    started.stop()


def _gauges(node: BrokerProcess) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the node's exposition, parsed by Prometheus's own parser."""
    with urllib.request.urlopen(node.http_base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): float(sample.value)
        for family in parser.text_string_to_metric_families(text)
        for sample in family.samples
    }


def test_clustered_node_reports_redis_link_up_and_its_round_trip_time(
    node: BrokerProcess,
) -> None:
    gauges = _gauges(node)
    assert gauges[("wamp_cluster_link_up", (("link", "redis"),))] == 1
    rtt = gauges[("wamp_redis_rtt_seconds", ())]
    assert 0 < rtt < 1.0
