"""/metrics: the exposition parses with Prometheus's own parser and counts real traffic."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import urllib.request
from typing import Any

import pytest
from prometheus_client import REGISTRY, generate_latest, parser
from prometheus_client.metrics_core import GaugeMetricFamily

import client_sdk
from broker.config import load_settings
from broker.metrics import (
    MAX_ERROR_URIS,
    BrokerMetrics,
    ClusterMetrics,
    LabelCounts,
    TransportStats,
)
from broker.server import BrokerServer
from protocol_spec.messages import MessageType
from tests.support.processes import BrokerProcess


def _scrape(broker: BrokerProcess) -> tuple[str, str]:
    with urllib.request.urlopen(broker.http_base + "/metrics", timeout=5) as response:
        return response.headers["Content-Type"], response.read().decode()


def _samples(text: str) -> dict[str, list[Any]]:
    families: dict[str, list[Any]] = {}
    for family in parser.text_string_to_metric_families(text):
        families[family.name] = list(family.samples)
    return families


def _value(samples: list[Any], name: str, **labels: str) -> float:
    for sample in samples:
        if sample.name == name and all(sample.labels.get(k) == v for k, v in labels.items()):
            return float(sample.value)
    raise AssertionError(f"no sample {name}{labels} in {samples}")


async def test_metrics_after_traffic_parse_and_count(broker: BrokerProcess) -> None:
    async with (
        client_sdk.connect(broker.url, "realm1") as callee,
        client_sdk.connect(broker.url, "realm1", serializer="json") as caller,
    ):
        await callee.register("com.example.metrics.add", lambda a, b: a + b)
        got = asyncio.get_running_loop().create_future()
        await callee.subscribe("com.example.metrics.tick", lambda event: got.set_result(event))
        assert (await caller.call("com.example.metrics.add", 2, 3)).value == 5
        with pytest.raises(client_sdk.ApplicationError):
            await caller.call("com.example.metrics.missing")
        await caller.publish(
            "com.example.metrics.tick", 1, options=client_sdk.PublishOptions(acknowledge=True)
        )
        await asyncio.wait_for(got, 5)

        content_type, text = await asyncio.to_thread(_scrape, broker)

    assert content_type.startswith("text/plain; version=0.0.4")
    families = _samples(text)
    assert _value(families["wamp_sessions"], "wamp_sessions", realm="realm1") >= 2
    received = families["wamp_messages_received"]
    assert _value(received, "wamp_messages_received_total", type="call") >= 2
    assert _value(received, "wamp_messages_received_total", type="publish") >= 1
    sent = families["wamp_messages_sent"]
    assert _value(sent, "wamp_messages_sent_total", type="result") >= 1
    assert _value(sent, "wamp_messages_sent_total", type="welcome") >= 2
    assert _value(families["wamp_events_delivered"], "wamp_events_delivered_total") >= 1
    assert _value(families["wamp_calls"], "wamp_calls_total") >= 2
    latency = families["wamp_call_duration_seconds"]
    assert _value(latency, "wamp_call_duration_seconds_count") >= 2
    assert _value(latency, "wamp_call_duration_seconds_bucket", le="+Inf") >= 2
    errors = families["wamp_errors"]
    assert _value(errors, "wamp_errors_total", uri="wamp.error.no_such_procedure") >= 1
    assert _value(families["wamp_registrations"], "wamp_registrations", realm="realm1") >= 1
    assert "wamp_slow_consumer_disconnects" in families
    assert "wamp_redis_rtt_seconds" not in families  # no cluster backend here


def test_exposition_escapes_label_values_and_bounds_error_uris() -> None:
    stats = TransportStats()
    for i in range(MAX_ERROR_URIS + 5):
        stats.count_error(f'com.example.error_{i}"\\\n')
    assert len(stats.errors) == MAX_ERROR_URIS + 1
    assert stats.errors["other"] == 5
    stats.observe_call(0.003)
    stats.observe_call(100.0)
    assert stats.call_count == 2 and stats.call_buckets[-1] == 1


def test_metrics_endpoint_of_an_idle_broker_parses(broker: BrokerProcess) -> None:
    _content_type, text = _scrape(broker)
    families = _samples(text)
    assert _value(families["wamp_broker_info"], "wamp_broker_info") == 1
    untyped = [f.name for f in parser.text_string_to_metric_families(text) if f.type == "unknown"]
    assert untyped == []  # every sample belongs to a family announced by # TYPE
    assert "wamp_call_duration_seconds" in families


class _FakeBackend:
    """A cluster backend as the metrics see it: only the ``ClusterMetrics`` contract."""

    def __init__(self, report: ClusterMetrics) -> None:
        self.report = report

    def metrics(self) -> ClusterMetrics:
        return self.report


def _report(**changes: Any) -> ClusterMetrics:
    report: ClusterMetrics = {
        "links": {"redis": False, "pubsub": True},
        "redis_rtt": 0.0042,
        "state": "degraded",
        "outbox_dropped": 7,
        "peer_links": 2,
        "peer_failures": 3,
        "peer_fallbacks": 1,
    }
    report.update(changes)  # type: ignore[typeddict-item]
    return report


def _server_metrics(cluster: _FakeBackend | None) -> tuple[BrokerServer, BrokerMetrics]:
    server = BrokerServer(load_settings(None, environ={}))
    return server, BrokerMetrics("0.1.0", "n1", server.router, server.transport, cluster)


def test_cluster_gauges_come_from_the_backend_when_there_is_one() -> None:
    server, metrics = _server_metrics(_FakeBackend(_report()))
    assert "wamp_cluster_link_up" not in server.metrics.render()
    families = _samples(metrics.render())
    assert _value(families["wamp_cluster_link_up"], "wamp_cluster_link_up", link="redis") == 0
    assert _value(families["wamp_cluster_link_up"], "wamp_cluster_link_up", link="pubsub") == 1
    assert _value(families["wamp_redis_rtt_seconds"], "wamp_redis_rtt_seconds") == 0.0042
    states = families["wamp_cluster_state"]
    assert {s.labels["state"]: s.value for s in states} == {
        "connecting": 0,
        "up": 0,
        "degraded": 1,
        "deaf": 0,
        "down": 0,
    }
    dropped = families["wamp_cluster_outbox_dropped"]
    assert _value(dropped, "wamp_cluster_outbox_dropped_total") == 7
    assert _value(families["wamp_cluster_peer_links"], "wamp_cluster_peer_links") == 2
    failures = families["wamp_cluster_peer_failures"]
    assert _value(failures, "wamp_cluster_peer_failures_total") == 3
    fallbacks = families["wamp_cluster_peer_fallbacks"]
    assert _value(fallbacks, "wamp_cluster_peer_fallbacks") == 1


def test_unknown_redis_rtt_leaves_the_rtt_gauge_out() -> None:
    _server, metrics = _server_metrics(_FakeBackend(_report(redis_rtt=None, state="up")))
    families = _samples(metrics.render())
    assert "wamp_redis_rtt_seconds" not in families
    assert _value(families["wamp_cluster_state"], "wamp_cluster_state", state="up") == 1


# Every family /metrics exposed before it was written with prometheus_client:
# name -> (type, help, {sample name: label names}). Dashboards depend on these.
TODAYS_FAMILIES: dict[str, tuple[str, str, dict[str, tuple[str, ...]]]] = {
    "wamp_broker_info": (
        "gauge",
        "Build and node of this broker process.",
        {"wamp_broker_info": ("node_id", "version")},
    ),
    "wamp_sessions": (
        "gauge",
        "Joined sessions on this node, by realm.",
        {"wamp_sessions": ("realm",)},
    ),
    "wamp_subscriptions": (
        "gauge",
        "Subscriptions on this node, by realm.",
        {"wamp_subscriptions": ("realm",)},
    ),
    "wamp_registrations": (
        "gauge",
        "Registrations on this node, by realm.",
        {"wamp_registrations": ("realm",)},
    ),
    "wamp_connections": ("gauge", "Open WebSocket connections.", {"wamp_connections": ()}),
    "wamp_messages_received": (
        "counter",
        "WAMP messages received and decoded, by message type.",
        {"wamp_messages_received_total": ("type",)},
    ),
    "wamp_messages_sent": (
        "counter",
        "WAMP messages sent to peers, by message type.",
        {"wamp_messages_sent_total": ("type",)},
    ),
    "wamp_events_delivered": (
        "counter",
        "EVENT messages sent to subscribers.",
        {"wamp_events_delivered_total": ()},
    ),
    "wamp_calls": ("counter", "CALL messages received.", {"wamp_calls_total": ()}),
    "wamp_call_duration_seconds": (
        "histogram",
        "Time from a CALL to its final RESULT or ERROR, as seen by the router.",
        {
            "wamp_call_duration_seconds_bucket": ("le",),
            "wamp_call_duration_seconds_count": (),
            "wamp_call_duration_seconds_sum": (),
        },
    ),
    "wamp_errors": (
        "counter",
        "ERROR messages sent to peers, by error URI.",
        {"wamp_errors_total": ("uri",)},
    ),
    "wamp_slow_consumer_disconnects": (
        "counter",
        "Sessions closed because too much output waited for them (slow consumers).",
        {"wamp_slow_consumer_disconnects_total": ()},
    ),
    "wamp_cluster_link_up": (
        "gauge",
        "1 while a cluster link (e.g. Redis commands, Redis pub/sub) is up.",
        {"wamp_cluster_link_up": ("link",)},
    ),
    "wamp_redis_rtt_seconds": (
        "gauge",
        "Round-trip time of the last Redis probe.",
        {"wamp_redis_rtt_seconds": ()},
    ),
}

TODAYS_BUCKET_BOUNDS = [
    "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025", "0.05", "0.1",
    "0.25", "0.5", "1", "2.5", "5", "10", "30", "60", "+Inf",
]  # fmt: skip


def test_exposition_keeps_todays_names_types_help_and_labels() -> None:
    server, metrics = _server_metrics(_FakeBackend(_report()))
    stats = server.transport.stats
    stats.messages_in[MessageType.CALL] += 1
    stats.messages_out[MessageType.EVENT] += 1
    stats.count_error("com.example.error")
    stats.observe_call(0.01)
    got: dict[str, tuple[str, str, dict[str, tuple[str, ...]]]] = {}
    bounds: list[str] = []
    for family in parser.text_string_to_metric_families(metrics.render()):
        names: dict[str, tuple[str, ...]] = {}
        for sample in family.samples:
            names[sample.name] = tuple(sorted(sample.labels))
            if sample.name.endswith("_bucket"):
                bounds.append(sample.labels["le"])
        got[family.name] = (family.type, family.documentation, names)
    assert {name: got[name] for name in TODAYS_FAMILIES if name in got} == TODAYS_FAMILIES
    assert bounds == TODAYS_BUCKET_BOUNDS
    assert set(got) - set(TODAYS_FAMILIES) == {
        "wamp_cluster_state",
        "wamp_cluster_outbox_dropped",
        "wamp_cluster_peer_links",
        "wamp_cluster_peer_failures",
        "wamp_cluster_peer_fallbacks",
        "wamp_auth_failures",
    }


def test_components_contribute_counters_and_collectors_to_the_servers_registry() -> None:
    server, _metrics = _server_metrics(None)
    server.metrics.auth_failures.inc("realm1", "ticket")
    server.metrics.auth_failures.inc("realm1", "ticket")
    server.metrics.auth_failures.inc("realm1", "wampcra")
    server.metrics.register_collector(
        lambda: [GaugeMetricFamily("wamp_test_gauge", "A contributed gauge.", value=3)]
    )
    families = _samples(server.metrics.render())
    failures = families["wamp_auth_failures"]
    assert _value(failures, "wamp_auth_failures_total", realm="realm1", authmethod="ticket") == 2
    assert _value(failures, "wamp_auth_failures_total", realm="realm1", authmethod="wampcra") == 1
    assert _value(families["wamp_test_gauge"], "wamp_test_gauge") == 3
    with pytest.raises(ValueError):
        server.metrics.counter("wamp_auth_failures", "again", ("realm",))
    assert "wamp_auth_failures" not in _samples(
        generate_latest(REGISTRY).decode()
    )  # a private registry, not the process-wide one


def test_contributed_counters_bound_their_label_sets() -> None:
    counts = LabelCounts(("realm", "authmethod"), limit=3)
    for i in range(10):
        counts.inc("realm1", f"method{i}")
    assert len(counts.counts) == 4
    assert counts.counts[("other", "other")] == 7
    with pytest.raises(ValueError):
        counts.inc("realm1")


def test_metrics_imports_neither_the_server_nor_the_transport() -> None:
    code = (
        "import sys, broker.metrics; "
        "loaded = {'broker.server', 'broker.config', 'broker.transport.websocket'} & set(sys.modules); "
        "assert not loaded, loaded"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
