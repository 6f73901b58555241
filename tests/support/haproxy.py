"""The HAProxy configuration the tests put in front of broker nodes on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Sequence

TEMPLATE = """
global
    maxconn 1024
defaults
    mode http
    timeout connect 2s
    timeout client 60s
    timeout server 60s
    timeout tunnel 120s
frontend wamp
    bind 127.0.0.1:{port}
    default_backend brokers
backend brokers
    balance leastconn
    option httpchk GET /healthz
{servers}
"""


def haproxy_cfg(port: int, node_ports: Sequence[int], check: str) -> str:
    """HAProxy on ``port`` balancing over the nodes on ``node_ports`` (``check``: its options)."""
    servers = "\n".join(
        f"    server n{i} 127.0.0.1:{node_port} check {check}"
        for i, node_port in enumerate(node_ports)
    )
    return TEMPLATE.format(port=port, servers=servers)
