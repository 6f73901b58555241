"""Typed settings from a TOML file, the environment and command-line flags.

Precedence: flags > environment (``BROKER_*``) > TOML file > defaults. With no
file and no realm anywhere, the broker serves the development default: realm
``realm1`` open to anonymous clients (a warning is logged).

TOML layout (every key optional)::

    [server]
    host = "127.0.0.1"
    port = 8080
    path = "/ws"
    drain_timeout = 10.0        # seconds to wait for sessions on shutdown

    [limits]
    max_message_size = 4194304  # bytes; larger frames close the connection (1009)
    max_queue = 10000           # outbound messages queued per session before it is dropped
    ping_interval = 20.0        # seconds; 0 disables
    ping_timeout = 20.0
    open_timeout = 10.0         # seconds for the opening handshake

    [cluster]
    redis = "redis://127.0.0.1:6379/0"
    node_id = "node-a"

    [[realm]]
    name = "realm1"
    anonymous = true
    anonymous_role = "anonymous"
    disclose_publisher = "client"   # client | always | never
    disclose_caller = "client"
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from broker.core.realm import DISCLOSE_POLICIES, RealmSettings
from broker.transport.websocket import TransportSettings

__all__ = ["DEFAULT_REALM", "ConfigError", "Settings", "load_settings"]

DEFAULT_REALM = "realm1"
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


class ConfigError(ValueError):
    """The configuration is invalid; the message says where and why."""


@dataclass(frozen=True)
class Settings:
    """Everything the broker process needs to start."""

    transport: TransportSettings = field(default_factory=TransportSettings)
    realms: tuple[RealmSettings, ...] = ()
    log_level: str = "info"
    log_format: str = "text"
    drain_timeout: float = 10.0
    redis_url: str | None = None
    node_id: str | None = None
    development_default: bool = False


_SERVER_KEYS = {"host", "port", "path", "drain_timeout"}
_LIMIT_KEYS = {
    "max_message_size",
    "max_queue",
    "ping_interval",
    "ping_timeout",
    "open_timeout",
}
_CLUSTER_KEYS = {"redis", "node_id"}
_REALM_KEYS = {"name", "anonymous", "anonymous_role", "disclose_publisher", "disclose_caller"}
_TOP_KEYS = {"server", "limits", "cluster", "realm", "log"}


def _check_keys(section: str, table: Mapping[str, Any], allowed: set[str]) -> None:
    unknown = sorted(set(table) - allowed)
    if unknown:
        raise ConfigError(f"[{section}]: unknown key(s) {', '.join(unknown)}")


def _typed(section: str, key: str, value: Any, kind: type | tuple[type, ...]) -> Any:
    if isinstance(value, bool) and kind is not bool:
        raise ConfigError(f"[{section}] {key}: expected {kind}, got a boolean")
    if not isinstance(value, kind):
        raise ConfigError(f"[{section}] {key}: expected {kind}, got {type(value).__name__}")
    return value


def _realm(index: int, table: Mapping[str, Any]) -> RealmSettings:
    section = f"realm #{index + 1}"
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}] must be a table")
    _check_keys(section, table, _REALM_KEYS)
    if "name" not in table:
        raise ConfigError(f"[{section}] needs a name")
    name = _typed(section, "name", table["name"], str)
    for key in ("disclose_publisher", "disclose_caller"):
        if key in table and table[key] not in DISCLOSE_POLICIES:
            raise ConfigError(f"[{section}] {key}: one of {sorted(DISCLOSE_POLICIES)}")
    return RealmSettings(
        name=name,
        anonymous=_typed(section, "anonymous", table.get("anonymous", True), bool),
        anonymous_role=_typed(
            section, "anonymous_role", table.get("anonymous_role", "anonymous"), str
        ),
        disclose_publisher=table.get("disclose_publisher", "client"),
        disclose_caller=table.get("disclose_caller", "client"),
    )


def settings_from_toml(data: Mapping[str, Any]) -> Settings:
    """Build settings from a parsed TOML document; raise ``ConfigError`` when invalid."""
    _check_keys("top level", data, _TOP_KEYS)
    server = data.get("server", {})
    limits = data.get("limits", {})
    cluster = data.get("cluster", {})
    log_table = data.get("log", {})
    _check_keys("server", server, _SERVER_KEYS)
    _check_keys("limits", limits, _LIMIT_KEYS)
    _check_keys("cluster", cluster, _CLUSTER_KEYS)
    _check_keys("log", log_table, {"level", "format"})
    transport = TransportSettings()
    updates: dict[str, Any] = {}
    for key, kind in (("host", str), ("port", int), ("path", str)):
        if key in server:
            updates[key] = _typed("server", key, server[key], kind)
    for key in _LIMIT_KEYS:
        if key in limits:
            kinds: type | tuple[type, ...] = (
                int if key in ("max_message_size", "max_queue") else (int, float)
            )
            value = _typed("limits", key, limits[key], kinds)
            if value < 0:
                raise ConfigError(f"[limits] {key}: must not be negative")
            if key in ("ping_interval", "ping_timeout") and value == 0:
                value = None
            updates[key] = value
    transport = replace(transport, **updates)
    realms = tuple(_realm(i, t) for i, t in enumerate(data.get("realm", [])))
    names = [r.name for r in realms]
    if len(set(names)) != len(names):
        raise ConfigError("[realm]: realm names must be unique")
    return Settings(
        transport=transport,
        realms=realms,
        log_level=log_table.get("level", "info"),
        log_format=log_table.get("format", "text"),
        drain_timeout=float(
            _typed("server", "drain_timeout", server.get("drain_timeout", 10.0), (int, float))
        ),
        redis_url=cluster.get("redis"),
        node_id=cluster.get("node_id"),
    )


def load_settings(
    config_path: str | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
    redis_url: str | None = None,
    node_id: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge file, environment and flags into ``Settings``."""
    env = os.environ if environ is None else environ
    path = config_path or env.get("BROKER_CONFIG")
    if path:
        try:
            data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"invalid TOML in {path}: {exc}") from None
        settings = settings_from_toml(data)
    else:
        settings = Settings()
    transport = settings.transport
    env_port = env.get("BROKER_PORT")
    try:
        port_value = port if port is not None else (int(env_port) if env_port else None)
    except ValueError:
        raise ConfigError(f"BROKER_PORT must be a number, got {env_port!r}") from None
    transport = replace(
        transport,
        host=host or env.get("BROKER_HOST") or transport.host,
        port=port_value if port_value is not None else transport.port,
    )
    level = (log_level or env.get("BROKER_LOG_LEVEL") or settings.log_level).lower()
    if level not in LOG_LEVELS:
        raise ConfigError(f"log level must be one of {', '.join(LOG_LEVELS)}")
    fmt = (log_format or env.get("BROKER_LOG_FORMAT") or settings.log_format).lower()
    if fmt not in ("text", "json"):
        raise ConfigError("log format must be text or json")
    realms = settings.realms
    development = not realms
    if development:
        realms = (RealmSettings(name=DEFAULT_REALM),)
    return replace(
        settings,
        transport=transport,
        realms=realms,
        log_level=level,
        log_format=fmt,
        redis_url=redis_url or env.get("BROKER_REDIS") or settings.redis_url,
        node_id=node_id or env.get("BROKER_NODE_ID") or settings.node_id,
        development_default=development,
    )
