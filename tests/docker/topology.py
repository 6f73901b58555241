"""docker/compose.yaml and docker/haproxy.cfg, translated for a native run on 127.0.0.1.

The cluster the compose file describes (redis + broker nodes + HAProxy) is started
natively by ``test_topology``; everything a broker node gets here is *read from
compose.yaml* (its ``command`` and ``environment``), with only addresses rewritten:
the Redis host becomes the local redis-server, BROKER_HOST becomes 127.0.0.1 and
the port is chosen by the broker (port 0, read back from its log); direct links
(BROKER_PEER) listen on a free loopback port and advertise it (BROKER_PEER_ADVERTISE
emptied: compose's service names do not resolve here). HAProxy runs
docker/haproxy.cfg with its ``bind`` and ``server`` addresses rewritten the same way
and the Docker DNS resolver removed.
"""

from __future__ import annotations

import re
import resource
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from tests.support.processes import ROOT

DOCKER = ROOT / "docker"
COMPOSE = DOCKER / "compose.yaml"
HAPROXY_CFG = DOCKER / "haproxy.cfg"


def load_compose(path: Path = COMPOSE) -> dict[str, Any]:
    """The compose file with anchors and merge keys resolved (PyYAML does both)."""
    doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    assert isinstance(doc, dict) and isinstance(doc.get("services"), dict)
    return doc


def environment(service: dict[str, Any]) -> dict[str, str]:
    """A service's environment as a dict of strings (list or mapping form)."""
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {str(k): "" if v is None else str(v) for k, v in env.items()}


def command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command") or []
    return cmd.split() if isinstance(cmd, str) else [str(x) for x in cmd]


def option(args: list[str], name: str) -> str | None:
    """The value of ``--name VALUE`` or ``--name=VALUE`` in an argument list."""
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def cluster_nodes(doc: dict[str, Any], profile: str | None = None) -> dict[str, dict[str, Any]]:
    """Broker services that join the cluster (a ``--redis``/BROKER_REDIS), by name.

    Without ``profile``: the services ``docker compose up`` starts (no ``profiles``);
    with one: the services of that profile.
    """
    nodes = {}
    for name, service in doc["services"].items():
        profiles = service.get("profiles") or []
        if (profile is None and profiles) or (profile is not None and profile not in profiles):
            continue
        if option(command(service), "--redis") or environment(service).get("BROKER_REDIS"):
            nodes[name] = service
    return nodes


@dataclass(frozen=True)
class NativeBroker:
    """How to run one compose broker service as a local process."""

    service: str
    args: list[str]
    env: dict[str, str]

    @property
    def node_id(self) -> str | None:
        return option(self.args, "--node-id") or self.env.get("BROKER_NODE_ID")


def _rewrite_redis(url: str, local_redis: str) -> str:
    """Keep the compose URL's scheme, database (Sentinel: service) and options; swap the
    host:port list for the local server's (Sentinel: the local sentinels')."""
    wanted, local = urlsplit(url), urlsplit(local_redis)
    if wanted.scheme != local.scheme:
        raise ValueError(f"compose uses {wanted.scheme}://, the local server is {local.scheme}://")
    return urlunsplit((wanted.scheme, local.netloc, wanted.path, wanted.query, ""))


def native_broker(name: str, service: dict[str, Any], local_redis: str) -> NativeBroker:
    """The compose service's command and environment, addresses rewritten for loopback."""
    args = command(service)
    for i, arg in enumerate(args):
        if arg == "--redis" and i + 1 < len(args):
            args[i + 1] = _rewrite_redis(args[i + 1], local_redis)
        elif arg.startswith("--redis="):
            args[i] = "--redis=" + _rewrite_redis(arg.split("=", 1)[1], local_redis)
    for i, arg in enumerate(args):
        if arg == "--supervisor-port" and i + 1 < len(args):
            args[i + 1] = "0"  # a free port: several supervisors share 127.0.0.1 here
    env = environment(service)
    if env.get("BROKER_REDIS"):
        env["BROKER_REDIS"] = _rewrite_redis(env["BROKER_REDIS"], local_redis)
    env["BROKER_HOST"] = "127.0.0.1"
    env["BROKER_PORT"] = "0"
    if env.get("BROKER_PEER", "off").lower() != "off":
        env["BROKER_PEER"] = "127.0.0.1:0"
    if "BROKER_PEER_ADVERTISE" in env:
        env["BROKER_PEER_ADVERTISE"] = ""
    return NativeBroker(name, args, env)


@dataclass(frozen=True)
class HaproxyLayout:
    """What haproxy.cfg says about the frontend and the broker backend."""

    bind_ports: list[int]
    servers: dict[str, tuple[str, int]]  # server name -> (host, port)
    balance: str | None
    check_paths: list[str]


_BIND = re.compile(r"^(\s*bind\s+)(\S*):(\d+)(.*)$", re.M)
_SERVER = re.compile(r"^(\s*server\s+)(\S+)\s+([^\s:]+):(\d+)(.*)$", re.M)


def haproxy_layout(text: str) -> HaproxyLayout:
    balance = re.search(r"^\s*balance\s+(\S+)", text, re.M)
    return HaproxyLayout(
        bind_ports=[int(m[3]) for m in _BIND.finditer(text)],
        servers={m[2]: (m[3], int(m[4])) for m in _SERVER.finditer(text)},
        balance=balance[1] if balance else None,
        check_paths=re.findall(r"http-check\s+send\s+.*\buri\s+(\S+)", text)
        + re.findall(r"option\s+httpchk\s+GET\s+(\S+)", text),
    )


def native_haproxy_cfg(text: str, bind_port: int, server_ports: dict[str, int]) -> str:
    """haproxy.cfg for loopback: bind 127.0.0.1:PORT, servers at 127.0.0.1, no Docker DNS.

    ``maxconn`` is lowered to what this process's descriptor limit allows.
    """
    text = _BIND.sub(lambda m: f"{m[1]}127.0.0.1:{bind_port}{m[4]}", text)

    def server(m: re.Match[str]) -> str:
        return f"{m[1]}{m[2]} 127.0.0.1:{server_ports[m[2]]}{m[5]}"

    text = _SERVER.sub(server, text)
    text = re.sub(r"^resolvers\s+\S+\n(?:[ \t]+\S.*\n)*", "", text, flags=re.M)
    text = re.sub(r"\s+resolvers\s+\S+", "", text)
    # HAProxy needs ~2 descriptors per connection and refuses to start when maxconn
    # exceeds what this process may open (containers usually allow far more).
    fds = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if fds != resource.RLIM_INFINITY:
        cap = max(256, fds // 2 - 100)
        text = re.sub(
            r"^(\s*maxconn\s+)(\d+)", lambda m: f"{m[1]}{min(int(m[2]), cap)}", text, flags=re.M
        )
    return text
