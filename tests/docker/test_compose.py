"""Static checks of docker/: the compose file, haproxy.cfg and the Dockerfile agree.

No Docker engine is needed. These checks are what ``test_topology`` relies on:
it starts exactly the nodes compose.yaml declares, as it declares them.
"""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

from broker.config import load_settings
from broker.server import BrokerServer
from tests.docker.topology import (
    COMPOSE,
    DOCKER,
    HAPROXY_CFG,
    cluster_nodes,
    command,
    environment,
    haproxy_layout,
    load_compose,
    native_broker,
    option,
)
from tests.support.processes import ROOT

LOCAL_REDIS = "redis://127.0.0.1:6390/0"


def test_compose_declares_redis_three_nodes_and_a_balancer() -> None:
    doc = load_compose()
    services = doc["services"]
    assert {"redis", "haproxy"} <= set(services)
    nodes = cluster_nodes(doc)
    assert sorted(nodes) == ["node1", "node2", "node3"]
    published = [str(p) for p in services["haproxy"].get("ports", [])]
    assert published == ["8080:8080"], "one published port for clients: the balancer's"
    for name, service in nodes.items():
        assert "ports" not in service, f"{name} must be reached through HAProxy only"


def test_every_node_joins_the_cluster_with_its_own_node_id() -> None:
    doc = load_compose()
    ids = []
    for name, service in cluster_nodes(doc).items():
        args = command(service)
        assert option(args, "--redis") == "redis://redis:6379/0"
        ids.append(option(args, "--node-id"))
        assert option(args, "--node-id") == name
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
        env = environment(service)
        assert env["BROKER_HOST"] == "0.0.0.0"
        assert env["BROKER_PORT"] == "8080"
    assert len(set(ids)) == len(ids) == 3


def test_native_topology_runs_each_node_as_compose_configures_it() -> None:
    doc = load_compose()
    for name, service in cluster_nodes(doc).items():
        native = native_broker(name, service, LOCAL_REDIS)
        compose_args = command(service)
        # Same arguments in the same order; only the Redis address differs.
        assert len(native.args) == len(compose_args)
        for ours, theirs in zip(native.args, compose_args, strict=True):
            assert ours == theirs or (theirs.startswith("redis://") and ours == LOCAL_REDIS)
        compose_env = environment(service)
        assert set(native.env) == set(compose_env)
        for key, value in compose_env.items():
            if key not in ("BROKER_HOST", "BROKER_PORT", "BROKER_REDIS", *PEER_ENV):
                assert native.env[key] == value
        assert native.node_id == name
        # The broker accepts this configuration.
        settings = load_settings(None, environ=native.env, **_flags(native.args))
        assert settings.node_id == name and settings.redis_url == LOCAL_REDIS


PEER_ENV = ("BROKER_PEER", "BROKER_PEER_ADVERTISE")


def test_nodes_link_directly_on_the_compose_network_only() -> None:
    """Each node takes direct links on 7070 and advertises its service name; unpublished."""
    doc = load_compose()
    for name, service in cluster_nodes(doc).items():
        env = environment(service)
        assert env["BROKER_PEER"] == "0.0.0.0:7070"
        assert env["BROKER_PEER_ADVERTISE"] == f"{name}:7070"
        settings = load_settings(None, environ=env, **_flags(command(service)))
        assert (settings.peer, settings.peer_advertise) == ("0.0.0.0:7070", f"{name}:7070")
        assert "ports" not in service
        native = native_broker(name, service, LOCAL_REDIS)
        assert native.env["BROKER_PEER"] == "127.0.0.1:0"
        assert load_settings(None, environ=native.env).peer_advertise is None
    for name, service in cluster_nodes(doc, "sentinel").items():
        # workers: a free port each, advertised under the container's hostname
        assert environment(service)["BROKER_PEER"] == "0.0.0.0:0"
        assert service["hostname"] == name
        assert "BROKER_PEER_ADVERTISE" not in environment(service)
        assert "7070" not in [str(p).split(":")[-1] for p in service.get("ports", [])]


def _flags(args: list[str]) -> dict[str, str | None]:
    return {"redis_url": option(args, "--redis"), "node_id": option(args, "--node-id")}


def test_single_node_profile_runs_without_redis() -> None:
    single = load_compose()["services"]["single"]
    assert single["profiles"] == ["single"]
    assert option(command(single), "--redis") is None
    assert "BROKER_REDIS" not in environment(single)
    assert "depends_on" not in single
    assert [str(p) for p in single["ports"]] == ["8081:8080"]


def test_haproxy_balances_leastconn_over_exactly_the_compose_nodes() -> None:
    doc = load_compose()
    layout = haproxy_layout(HAPROXY_CFG.read_text())
    assert layout.balance == "leastconn"
    assert layout.bind_ports == [8080]
    nodes = cluster_nodes(doc)
    assert layout.servers == {
        name: (name, int(environment(service)["BROKER_PORT"])) for name, service in nodes.items()
    }
    text = HAPROXY_CFG.read_text()
    assert re.search(r"^\s*timeout tunnel\s", text, re.M), "WebSockets need a tunnel timeout"
    assert "option redispatch" in text
    mounted = doc["services"]["haproxy"]["volumes"]
    assert "./haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro" in mounted


def test_health_checks_probe_endpoints_the_broker_serves() -> None:
    routes = BrokerServer(load_settings(None, environ={})).transport.http_routes
    layout = haproxy_layout(HAPROXY_CFG.read_text())
    assert layout.check_paths, "haproxy.cfg must check nodes over HTTP"
    assert "/readyz" in layout.check_paths, "route sessions only to nodes linked to the cluster"
    for path in layout.check_paths:
        assert path in routes, f"haproxy checks {path}, which the broker does not serve"
    dockerfile = (DOCKER / "Dockerfile").read_text()
    probe = re.search(r"HEALTHCHECK.*?(/\w+)'", dockerfile, re.S)
    assert probe and probe[1] in routes


def test_dockerfile_is_slim_non_root_with_broker_entrypoint() -> None:
    text = (DOCKER / "Dockerfile").read_text()
    assert re.findall(r"^FROM (\S+)", text, re.M)[-1] == "python:3.11-slim"
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert 'ENTRYPOINT ["broker"]' in text
    healthcheck = re.search(r"^HEALTHCHECK .*?CMD (.*)$", text, re.M | re.S)
    assert healthcheck and "urllib.request" in healthcheck[1] and "curl" not in healthcheck[1]
    for source in re.findall(r"^COPY (?!--from)(\S+)", text, re.M):
        assert (ROOT / source).exists(), f"COPY {source}: not in the build context"


@pytest.mark.skipif(
    shutil.which("docker-compose") is None, reason="docker-compose not installed (see .ci)"
)
def test_docker_compose_config_accepts_the_file() -> None:
    for extra in ([], ["--profile", "single"]):
        result = subprocess.run(
            ["docker-compose", "-f", str(COMPOSE), *extra, "config", "-q"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
