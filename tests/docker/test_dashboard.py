"""docker/: the Grafana dashboard queries metrics the broker really exports, and the
Prometheus config is valid and scrapes every node of the compose file.

The metric check runs a real cluster node (real redis-server), makes traffic that
touches every family (calls, an error, events), scrapes ``/metrics`` and parses it with
prometheus_client's parser. The config check is ``promtool check config`` when
promtool is installed (Debian: ``apt-get install prometheus``), and always a static
check of what compose.yaml relies on.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import parser

import client_sdk
from tests.docker.topology import DOCKER, cluster_nodes, load_compose
from tests.support.processes import BrokerProcess, start_broker, start_redis

DASHBOARD = DOCKER / "grafana" / "dashboards" / "broker.json"
PROMETHEUS = DOCKER / "prometheus" / "prometheus.yml"
PROVIDER = DOCKER / "grafana" / "provisioning" / "dashboards" / "broker.yaml"
PROMETHEUS_LABELS = {"instance", "job", "le"}
"""Labels Prometheus adds at scrape time (instance, job) or histograms carry (le)."""


def dashboard_queries() -> list[tuple[str, str]]:
    """(PromQL expression, legend format) of every panel target."""
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    return [
        (target["expr"], target.get("legendFormat", ""))
        for panel in doc["panels"]
        for target in panel.get("targets", [])
    ]


def _names(expr: str) -> set[str]:
    return set(re.findall(r"\bwamp_[a-z0-9_]+\b", expr))


def _labels(expr: str, legend: str) -> set[str]:
    grouped = re.findall(r"\bby\s*\(([^)]*)\)", expr)
    labels = {label.strip() for group in grouped for label in group.split(",") if label.strip()}
    return (labels | set(re.findall(r"\{\{\s*(\w+)\s*\}\}", legend))) - PROMETHEUS_LABELS


@pytest.fixture(scope="module")
def cluster_node() -> Iterator[BrokerProcess]:
    redis = start_redis()
    node = start_broker("--redis", redis.url, "--node-id", "dash1")
    yield node
    node.stop()
    redis.kill()


async def _traffic(url: str) -> None:
    async with (
        client_sdk.connect(url, "realm1") as callee,
        client_sdk.connect(url, "realm1") as caller,
    ):
        await callee.register("com.example.dash.echo", lambda x: x)
        got = asyncio.get_running_loop().create_future()
        await callee.subscribe("com.example.dash.tick", lambda event: got.set_result(event))
        assert (await caller.call("com.example.dash.echo", 1)).value == 1
        with pytest.raises(client_sdk.ApplicationError):
            await caller.call("com.example.dash.missing")
        await caller.publish(
            "com.example.dash.tick", 1, options=client_sdk.PublishOptions(acknowledge=True)
        )
        await asyncio.wait_for(got, 5)


def _scrape(node: BrokerProcess) -> dict[str, dict[str, set[str]]]:
    """Sample name → label name → values seen, from the node's /metrics."""
    with urllib.request.urlopen(node.http_base + "/metrics", timeout=5) as response:
        text = response.read().decode()
    samples: dict[str, dict[str, set[str]]] = {}
    for family in parser.text_string_to_metric_families(text):
        for sample in family.samples:
            labels = samples.setdefault(sample.name, {})
            for key, value in sample.labels.items():
                labels.setdefault(key, set()).add(value)
    return samples


async def test_every_metric_the_dashboard_queries_is_exported(
    cluster_node: BrokerProcess,
) -> None:
    await _traffic(cluster_node.url)
    exported = await asyncio.to_thread(_scrape, cluster_node)
    queries = dashboard_queries()
    assert len(queries) >= 12
    queried: set[str] = set()
    for expr, legend in queries:
        names = _names(expr)
        assert names, f"no broker metric in {expr!r}"
        missing = names - set(exported)
        assert not missing, f"{expr!r} queries {sorted(missing)}, not in /metrics"
        labels = set().union(*(exported[name] for name in names))
        assert _labels(expr, legend) <= labels, f"{expr!r} groups by labels the metric lacks"
        queried |= names
    wanted = {
        "wamp_sessions",
        "wamp_messages_received_total",
        "wamp_messages_sent_total",
        "wamp_call_duration_seconds_bucket",
        "wamp_errors_total",
        "wamp_slow_consumer_disconnects_total",
        "wamp_cluster_link_up",
        "wamp_redis_rtt_seconds",
    }
    assert wanted <= queried


def test_a_dashboard_metric_that_does_not_exist_is_caught() -> None:
    assert _names("rate(wamp_made_up_total[1m])") == {"wamp_made_up_total"}
    assert _labels("sum by (uri, instance) (x)", "{{type}}") == {"uri", "type"}


def _prometheus_config() -> dict[str, Any]:
    doc = yaml.safe_load(PROMETHEUS.read_text(encoding="utf-8"))
    assert isinstance(doc, dict)
    return doc


def test_prometheus_scrapes_every_node_of_the_compose_file() -> None:
    """The static check (also what stands in where promtool cannot be installed)."""
    doc = _prometheus_config()
    assert set(doc) <= {"global", "scrape_configs", "rule_files", "alerting"}
    jobs = doc["scrape_configs"]
    assert [job["job_name"] for job in jobs] == ["wamp-broker"]
    job = jobs[0]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for group in job["static_configs"] for t in group["targets"]]
    nodes = cluster_nodes(load_compose())
    assert sorted(targets) == sorted(f"{name}:8080" for name in nodes)
    interval = doc["global"]["scrape_interval"]
    assert re.fullmatch(r"\d+(ms|s|m)", interval)


def test_compose_mounts_the_monitoring_files_where_they_are_read() -> None:
    services = load_compose()["services"]
    prometheus, grafana = services["prometheus"], services["grafana"]
    assert "./prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in prometheus["command"]
    assert "./grafana/dashboards:/var/lib/grafana/dashboards:ro" in grafana["volumes"]
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    provider = yaml.safe_load(PROVIDER.read_text(encoding="utf-8"))
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    datasource = yaml.safe_load(
        (DOCKER / "grafana/provisioning/datasources/prometheus.yaml").read_text(encoding="utf-8")
    )
    assert datasource["datasources"][0]["url"] == "http://prometheus:9090"
    doc = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    uids = {t["datasource"]["uid"] for p in doc["panels"] for t in p["targets"]}
    assert uids == {datasource["datasources"][0]["uid"]}


@pytest.mark.skipif(shutil.which("promtool") is None, reason="promtool not installed")
def test_promtool_accepts_the_prometheus_config(tmp_path: Path) -> None:
    result = subprocess.run(
        ["promtool", "check", "config", "--syntax-only", str(PROMETHEUS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
