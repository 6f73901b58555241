"""``[cluster]`` settings of direct links between nodes: the peer address, the advertised
address and TLS (``peer``, ``peer_advertise``, ``peer_tls_*``), from the file, the
environment and flags (broker/cluster/peers.py uses them; broker/config.py merges them)."""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from broker.cluster.peers import PeerTLS, parse_peer_address
from broker.config_checks import ConfigError, typed

__all__ = [
    "PEER_TLS_KEYS",
    "advertise",
    "check_peer_workers",
    "parse_peer",
    "peer_override",
    "peer_tls",
]

PEER_TLS_KEYS = ("cert", "key", "ca")
"""``peer_tls_<part>`` keys of ``[cluster]`` (and ``BROKER_PEER_TLS_<PART>``)."""


def parse_peer(value: str, where: str = "--peer") -> str | None:
    """A peer listening address ``host:port``, or None for ``off``."""
    if value.strip().lower() in ("off", "none", ""):
        return None
    return _address(value, where, ' (or "off")')


def advertise(value: Any, where: str) -> str | None:
    """An advertised address ``host:port``, or None when not given."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        raise ConfigError(f"{where} must be a string host:port")
    return _address(value, where)


def peer_tls(cluster: Mapping[str, Any], env: Mapping[str, str]) -> PeerTLS | None:
    """``[cluster] peer_tls_cert/_key/_ca`` (each overridden by ``BROKER_PEER_TLS_*``):
    all three or none; the files must load (a key matching the certificate)."""
    paths: dict[str, str] = {}
    for part in PEER_TLS_KEYS:
        value = env.get(f"BROKER_PEER_TLS_{part.upper()}") or cluster.get(f"peer_tls_{part}")
        if value:
            paths[part] = typed("cluster", f"peer_tls_{part}", value, str)
    if not paths:
        return None
    missing = [f"peer_tls_{part}" for part in PEER_TLS_KEYS if part not in paths]
    if missing:
        raise ConfigError(
            f"[cluster] TLS on direct links needs peer_tls_cert, peer_tls_key and "
            f"peer_tls_ca (missing: {', '.join(missing)})"
        )
    for part, path in paths.items():
        if not Path(path).is_file():
            raise ConfigError(f"[cluster] peer_tls_{part}: no such file {path}")
    tls = PeerTLS(paths["cert"], paths["key"], paths["ca"])
    try:
        tls.contexts()
    except (ssl.SSLError, OSError, ValueError) as exc:
        raise ConfigError(f"[cluster] peer_tls_*: cannot load the certificates: {exc}") from None
    return tls


def _address(value: str, where: str, hint: str = "") -> str:
    """``value`` stripped, once it parses as ``host:port``; else ``ConfigError``."""
    try:
        parse_peer_address(value, where)
    except ValueError as exc:
        raise ConfigError(f"{exc}{hint}") from None
    return value.strip()


def peer_override(flag: str | None, env: Mapping[str, str], setting: str | None) -> str | None:
    """--peer, else BROKER_PEER, else the file's (or the default) peer address."""
    if flag is not None:
        return parse_peer(flag, "--peer")
    if env.get("BROKER_PEER") is not None:
        return parse_peer(env["BROKER_PEER"], "BROKER_PEER")
    return setting


def check_peer_workers(workers: int, peer: str | None, advertised: str | None) -> None:
    """Workers take one free peer port each: a fixed port or address cannot be shared."""
    if workers <= 1 or peer is None:
        return
    if parse_peer_address(peer)[1] != 0 or advertised:
        raise ConfigError(
            f"{workers} workers cannot share one peer address: give [cluster] peer "
            "port 0 (each worker takes a free one and advertises it) and no peer_advertise, "
            'or "off"'
        )
