"""/metrics: the exposition parses with Prometheus's own parser and counts real traffic."""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import pytest

import client_sdk
from broker.metrics import MAX_ERROR_URIS, TransportStats
from tests.support.processes import BrokerProcess

parser = pytest.importorskip("prometheus_client.parser")


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
    distributed = True
    available = False
    redis_rtt = 0.0042


def test_cluster_gauges_come_from_the_backend_when_there_is_one() -> None:
    from broker.config import load_settings
    from broker.metrics import render
    from broker.server import BrokerServer

    server = BrokerServer(load_settings(None, environ={}))
    assert "wamp_cluster_link_up" not in render(server)
    server.backend = _FakeBackend()  # type: ignore[attr-defined]
    families = _samples(render(server))
    assert _value(families["wamp_cluster_link_up"], "wamp_cluster_link_up", link="redis") == 0
    assert _value(families["wamp_redis_rtt_seconds"], "wamp_redis_rtt_seconds") == 0.0042
