"""Typed settings from a TOML file, the environment and command-line flags.

Precedence: flags > environment (``BROKER_*``) > TOML file > defaults. With no
file and no realm anywhere, the broker serves the development default: realm
``realm1`` open to anonymous clients, no roles (a warning is logged). Unknown
keys anywhere are a ``ConfigError`` naming the section and the key.

TOML layout (every key optional; protocol_spec/security.md explains each)::

    [server]
    host = "127.0.0.1"
    port = 8080
    path = "/ws"
    drain_timeout = 10.0        # seconds to wait for sessions on shutdown
    workers = 1                 # worker processes, or "auto" (one per CPU); > 1 needs Redis
    supervisor_port = 0         # with workers > 1: the supervisor's /metrics and /readyz
    allowed_origins = []        # browser Origins allowed (empty: any; also long-poll CORS)
    rawsocket = true            # RawSocket on this port too (first octet 0x7F)
    longpoll_path = "/lp"       # HTTP long-poll base path; "" disables long-poll

    [[listener]]                # extra RawSocket-only sockets (repeatable)
    type = "rawsocket"
    host = "127.0.0.1"          # a TCP port ...
    port = 8081
    # path = "/run/broker/wamp.sock"   # ... or a Unix socket (stale file replaced)
    # mode = 0o660                     # its permissions

    [tls]                       # serve wss:// (env: BROKER_TLS_CERT, BROKER_TLS_KEY)
    cert = "/etc/broker/cert.pem"
    key = "/etc/broker/key.pem"

    [limits]
    max_message_size = 4194304  # bytes; larger frames close the connection (1009)
    max_write_buffer = 4194304  # bytes waiting to be sent to one session before it is dropped
    ping_interval = 20.0        # seconds; 0 disables
    ping_timeout = 20.0
    open_timeout = 10.0         # seconds for the opening handshake
    hello_timeout = 10.0        # seconds from connection to WELCOME
    longpoll_session_timeout = 30.0  # seconds a long-poll session lives without a receive
    longpoll_receive_timeout = 10.0  # seconds a long-poll receive is held when idle
    max_sessions = 50000        # open connections per node
    message_rate = 50000.0      # messages/s per session (token bucket); 0 disables
    message_burst = 100000
    max_subscriptions = 10000   # per session
    max_registrations = 10000
    max_pending_calls = 10000

    [cluster]
    redis = "redis://127.0.0.1:6379/0"   # or rediss://, unix://, or Sentinel:
    # redis = "redis+sentinel://:password@host1:26379,host2:26379/mymaster/0"
    # redis = "redis+cluster://:password@host1:6379,host2:6379,host3:6379"  # Redis Cluster
    node_id = "node-a"
    heartbeat_interval = 1.0    # seconds between heartbeats / liveness checks
    node_timeout = 5.0          # heartbeat TTL: a silent node is dead after this
    probe_interval = 2.0        # seconds between pub/sub link probes
    probe_timeout = 2.0         # a probe not back by then: the link is rebuilt
    command_timeout = 1.0       # a Redis command not answered by then: Redis is hung
    peer = "127.0.0.1:0"        # direct links for call traffic (env BROKER_PEER); "off": via Redis
    # peer = "0.0.0.0:7070"     # nodes on other machines: listen on a reachable address
    # peer_advertise = "node-a.internal:7070"   # the address the other nodes dial
    # peer_retry = 10.0         # seconds before a link that could not be dialed is tried again
    # peer_tls_cert = "/etc/broker/peer.pem"    # mutual TLS on direct links: this node's
    # peer_tls_key = "/etc/broker/peer.key"     # certificate and key, and the CA of all
    # peer_tls_ca = "/etc/broker/peer-ca.pem"   # nodes (env BROKER_PEER_TLS_CERT/_KEY/_CA)

    [[realm]]
    name = "realm1"
    anonymous = true
    anonymous_role = "anonymous"
    disclose_publisher = "client"   # client | always | never
    disclose_caller = "client"

    [realm.auth.ticket]             # principals, jwt and/or dynamic
    principals = { alice = { ticket_hash = "pbkdf2_sha256$...", role = "user" } }
    dynamic = "com.example.authenticate"
    [realm.auth.ticket.jwt]
    algorithms = ["HS256"]
    secret_env = "JWT_SECRET"       # or secret = "...", or public_key_file = "..." (RS256)
    issuer = "https://issuer.example"
    audience = "broker"
    [realm.auth.wampcra.principals.bob]
    secret_env = "BOB_SECRET"       # or secret, or derived_key (with salt)
    salt = "salt123"
    iterations = 1000
    keylen = 32
    role = "user"
    [realm.auth.cryptosign.principals.carol]
    pubkeys = ["<64 hex digits>"]
    role = "user"

    [[realm.role]]                  # any role → the realm denies what is not permitted
    name = "user"
    permissions = [
        { uri = "com.example.", match = "prefix", allow = ["call", "subscribe"] },
    ]
    authorizer = "com.example.authorize"   # optional: decides URIs no permission matches
    authorizer_timeout = 5.0               # seconds; no answer in time → denied
    authorizer_cache = 300.0               # seconds a cacheable answer is kept; 0: never

    [[realm.history]]               # event history (wamp.subscription.get_events)
    uri = "com.example.ticker."
    match = "prefix"                # exact (default) | prefix | wildcard
    limit = 1000                    # events kept per topic
    ttl = 3600                      # seconds an event is kept (optional: no age limit)
    # and in [[realm]]: history_max_bytes = 67108864 (bytes of history per realm per node)

    [realm.http_api]                # the HTTP API and [[realm.webhook]]: keys in
                                    # broker/httpapi/settings.py
    [console]                       # the web console (broker/console); off unless enabled
    enabled = true
    path = "/console"               # served at http(s)://HOST:PORT/console/
    realm = "admin"                 # must be a configured realm with real authentication
    role = "admin"                  # granted the meta API (wamp.*: call, subscribe)
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from broker.cluster.connect import parse_redis_url
from broker.cluster.peers import PeerTLS
from broker.config_checks import ConfigError, check_keys, str_list, typed
from broker.config_peer import (
    PEER_TLS_KEYS,
    advertise,
    check_peer_workers,
    parse_peer,
    peer_override,
    peer_tls,
)
from broker.console.settings import ConsoleSettings, console_from_toml
from broker.core.settings import RealmSettings, SessionLimits
from broker.httpapi.settings import (
    HttpApiSettings,
    WebhookSettings,
)
from broker.realm_config import (
    http_apis_from_toml,
    protect_dynamic_authenticators,
    realm_from_toml,
)

__all__ = [
    "DEFAULT_REALM",
    "ConfigError",
    "ListenerSettings",
    "Settings",
    "TransportSettings",
    "load_settings",
    "settings_from_toml",
]

DEFAULT_REALM = "realm1"
DEFAULT_PEER = "127.0.0.1:0"
"""Direct links on loopback, a free port: nodes on one machine (workers) reach each other."""
LOG_LEVELS = ("debug", "info", "warning", "error", "critical")


@dataclass(frozen=True, slots=True)
class ListenerSettings:
    """An extra RawSocket-only listener: a TCP ``host``/``port`` or a Unix socket ``path``."""

    host: str = "127.0.0.1"
    port: int | None = None
    path: str | None = None
    """Unix socket path; a stale socket file left by a dead process is replaced."""
    mode: int = 0o660
    """Permissions of the Unix socket file."""

    @property
    def address(self) -> str:
        """``rs://host:port`` or ``rs://unix:/path``."""
        return f"rs://unix:{self.path}" if self.path else f"rs://{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class TransportSettings:
    """Limits and timings of the listeners, shared by every transport."""

    host: str = "127.0.0.1"
    port: int = 8080
    path: str = "/ws"
    max_message_size: int = 4 * 1024 * 1024
    max_write_buffer: int = 4 * 1024 * 1024
    """Bytes waiting in one session's outgoing buffer before it is a slow consumer."""
    ping_interval: float | None = 20.0
    ping_timeout: float | None = 20.0
    open_timeout: float = 10.0
    """Seconds for an opening handshake (HTTP request head, RawSocket handshake)."""
    close_timeout: float = 5.0
    hello_timeout: float = 10.0
    """Seconds from the transport opening to WELCOME (HELLO and authentication)."""
    max_sessions: int = 50_000
    """Open sessions per node; more are refused (HTTP 503, RawSocket error 4)."""
    message_rate: float = 50_000.0
    """Sustained messages per second per session (token bucket refill); 0 disables."""
    message_burst: int = 100_000
    """Token bucket size: messages a session may send above the rate at once."""
    allowed_origins: tuple[str, ...] = ()
    """Browser Origins allowed to connect (empty: any); clients sending no Origin pass."""
    tls_cert: str | None = None
    """PEM certificate chain file: serve wss:// when set (with ``tls_key``)."""
    tls_key: str | None = None
    rawsocket: bool = True
    """Serve RawSocket on the main port too (first octet 0x7F)."""
    longpoll_path: str | None = "/lp"
    """Base path of the HTTP long-poll transport; None disables it."""
    longpoll_session_timeout: float = 30.0
    """Seconds a long-poll session lives without a pending or recent ``receive``."""
    longpoll_receive_timeout: float = 10.0
    """Seconds a ``receive`` is held open when nothing is waiting (then an empty answer)."""
    listeners: tuple[ListenerSettings, ...] = ()

    @property
    def scheme(self) -> str:
        """``wss`` with TLS, ``ws`` without."""
        return "wss" if self.tls_cert else "ws"


@dataclass(frozen=True)
class Settings:
    """Everything the broker process needs to start."""

    # [realm.http_api] and [[realm.webhook]] (broker/httpapi/settings.py parses them)
    http_apis: tuple[HttpApiSettings, ...] = ()
    webhooks: tuple[WebhookSettings, ...] = ()

    transport: TransportSettings = field(default_factory=TransportSettings)
    realms: tuple[RealmSettings, ...] = ()
    log_level: str = "info"
    log_format: str = "text"
    drain_timeout: float = 10.0
    redis_url: str | None = None
    node_id: str | None = None
    # [cluster] timings in seconds (see broker.cluster.redis.ClusterTiming)
    cluster_timing: dict[str, float] = field(default_factory=dict)
    peer: str | None = DEFAULT_PEER
    """Where this node takes direct links for call traffic (``host:port``); None: off."""
    peer_advertise: str | None = None
    """The ``host:port`` the other nodes dial (default: the listening address)."""
    peer_tls: PeerTLS | None = None
    """Mutual TLS on direct links (``[cluster] peer_tls_*``); None: plain TCP."""
    development_default: bool = False
    session_limits: SessionLimits = field(default_factory=SessionLimits)
    workers: int = 1
    """Worker processes (``broker.supervisor``); 1 runs the broker in this process."""
    supervisor_port: int = 0
    """With ``workers > 1``: port of the supervisor's /metrics and /readyz (0: a free one)."""

    console: ConsoleSettings | None = None
    """The web console, when ``[console] enabled = true`` (see broker/console)."""


_SERVER_KEYS = {
    "host",
    "port",
    "path",
    "drain_timeout",
    "allowed_origins",
    "workers",
    "supervisor_port",
    "rawsocket",
    "longpoll_path",
}
_LISTENER_KEYS = {"type", "host", "port", "path", "mode"}
_TRANSPORT_LIMITS: dict[str, type | tuple[type, ...]] = {
    "max_message_size": int,
    "max_write_buffer": int,
    "ping_interval": (int, float),
    "ping_timeout": (int, float),
    "open_timeout": (int, float),
    "hello_timeout": (int, float),
    "max_sessions": int,
    "message_rate": (int, float),
    "message_burst": int,
    "longpoll_session_timeout": (int, float),
    "longpoll_receive_timeout": (int, float),
}
_SESSION_LIMITS = {"max_subscriptions", "max_registrations", "max_pending_calls"}
_POSITIVE = {
    "max_message_size",
    "max_write_buffer",
    "open_timeout",
    "hello_timeout",
    "max_sessions",
    "longpoll_session_timeout",
    "longpoll_receive_timeout",
}
_CLUSTER_TIMING_KEYS = {
    "heartbeat_interval",
    "node_timeout",
    "probe_interval",
    "probe_timeout",
    "command_timeout",
    "peer_retry",
}
_CLUSTER_KEYS = (
    {"redis", "node_id", "peer", "peer_advertise"}
    | {f"peer_tls_{part}" for part in PEER_TLS_KEYS}
    | _CLUSTER_TIMING_KEYS
)
_TOP_KEYS = {"server", "tls", "limits", "cluster", "realm", "log", "listener", "console"}


def _limits(limits: Mapping[str, Any]) -> tuple[dict[str, Any], SessionLimits]:
    check_keys("limits", limits, set(_TRANSPORT_LIMITS) | _SESSION_LIMITS)
    updates: dict[str, Any] = {}
    for key, kind in _TRANSPORT_LIMITS.items():
        if key in limits:
            value = typed("limits", key, limits[key], kind)
            if value < 0 or (value == 0 and key in _POSITIVE):
                raise ConfigError(f"[limits] {key}: must be positive")
            if key in ("ping_interval", "ping_timeout") and value == 0:
                value = None
            updates[key] = value
    session: dict[str, int] = {}
    for key in _SESSION_LIMITS:
        if key in limits:
            session[key] = typed("limits", key, limits[key], int)
            if session[key] < 1:
                raise ConfigError(f"[limits] {key}: must be at least 1")
    return updates, SessionLimits(**session)


def _listeners(tables: Any) -> tuple[ListenerSettings, ...]:
    """``[[listener]]`` entries: RawSocket-only TCP ports or Unix socket paths."""
    if not isinstance(tables, list):
        raise ConfigError("[listener] must be an array of tables ([[listener]])")
    found = []
    for index, table in enumerate(tables):
        section = f"listener #{index + 1}"
        check_keys(section, table, _LISTENER_KEYS)
        kind = typed(section, "type", table.get("type", "rawsocket"), str)
        if kind != "rawsocket":
            raise ConfigError(f'[{section}] type: only "rawsocket" is supported')
        path = table.get("path")
        port = table.get("port")
        if (path is None) == (port is None):
            raise ConfigError(f"[{section}] give a port (TCP) or a path (Unix socket)")
        if path is not None:
            typed(section, "path", path, str)
            mode = typed(section, "mode", table.get("mode", 0o660), int)
            if not 0 <= mode <= 0o777:
                raise ConfigError(f"[{section}] mode: expected permission bits like 0o660")
            found.append(ListenerSettings(path=path, mode=mode))
        else:
            port = typed(section, "port", port, int)
            if not 0 <= port <= 65535:
                raise ConfigError(f"[{section}] port: out of range")
            host = typed(section, "host", table.get("host", "127.0.0.1"), str)
            found.append(ListenerSettings(host=host, port=port))
    return tuple(found)


def _tls(table: Any, env: Mapping[str, str]) -> dict[str, Any]:
    check_keys("tls", table, {"cert", "key"})
    cert = env.get("BROKER_TLS_CERT") or table.get("cert")
    key = env.get("BROKER_TLS_KEY") or table.get("key")
    if cert is None and key is None:
        return {}
    if not isinstance(cert, str) or not isinstance(key, str):
        raise ConfigError("[tls] needs both cert and key (PEM file paths)")
    for name, path in (("cert", cert), ("key", key)):
        if not Path(path).is_file():
            raise ConfigError(f"[tls] {name}: no such file {path}")
    return {"tls_cert": cert, "tls_key": key}


def _transport(
    data: Mapping[str, Any], server: Mapping[str, Any], env: Mapping[str, str]
) -> tuple[TransportSettings, SessionLimits]:
    """``[server]``, ``[limits]``, ``[[listener]]`` and ``[tls]``: the transport's settings."""
    updates, session_limits = _limits(data.get("limits", {}))
    for key, kind in (("host", str), ("port", int), ("path", str)):
        if key in server:
            updates[key] = typed("server", key, server[key], kind)
    if "allowed_origins" in server:
        updates["allowed_origins"] = str_list(
            "server", "allowed_origins", server["allowed_origins"]
        )
    if "rawsocket" in server:
        updates["rawsocket"] = typed("server", "rawsocket", server["rawsocket"], bool)
    if "longpoll_path" in server:
        lp = typed("server", "longpoll_path", server["longpoll_path"], str).rstrip("/")
        if lp and (not lp.startswith("/") or lp == updates.get("path", "/ws")):
            raise ConfigError("[server] longpoll_path: a path like /lp, not the WebSocket path")
        updates["longpoll_path"] = lp or None
    updates["listeners"] = _listeners(data.get("listener", []))
    updates.update(_tls(data.get("tls", {}), env))
    transport = replace(TransportSettings(), **updates)
    return transport, session_limits


def _cluster_timing(cluster: Mapping[str, Any]) -> dict[str, float]:
    """The ``[cluster]`` timings given (seconds); the positive-only ones checked."""
    timing = {
        key: float(typed("cluster", key, cluster[key], (int, float)))
        for key in _CLUSTER_TIMING_KEYS
        if key in cluster
    }
    for key in ("command_timeout", "peer_retry"):
        if key in timing and not timing[key] > 0:
            raise ConfigError(f"[cluster] {key} must be positive")
    return timing


def settings_from_toml(
    data: Mapping[str, Any], environ: Mapping[str, str] | None = None
) -> Settings:
    """Build settings from a parsed TOML document; raise ``ConfigError`` when invalid."""
    env = os.environ if environ is None else environ
    check_keys("top level", data, _TOP_KEYS)
    server = data.get("server", {})
    cluster = data.get("cluster", {})
    log_table = data.get("log", {})
    check_keys("server", server, _SERVER_KEYS)
    check_keys("cluster", cluster, _CLUSTER_KEYS)
    check_keys("log", log_table, {"level", "format"})
    transport, session_limits = _transport(data, server, env)
    realm_tables = data.get("realm", [])
    if not isinstance(realm_tables, list):
        raise ConfigError("[realm] must be an array of tables ([[realm]])")
    realms = tuple(realm_from_toml(i, t, session_limits, env) for i, t in enumerate(realm_tables))
    names = [r.name for r in realms]
    if len(set(names)) != len(names):
        raise ConfigError("[realm]: realm names must be unique")
    realms = protect_dynamic_authenticators(realms)
    try:
        console, realms = console_from_toml(data.get("console", {}), realms, transport.path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    http_apis, webhooks = http_apis_from_toml(realm_tables, env)
    return Settings(
        console=console,
        http_apis=http_apis,
        webhooks=webhooks,
        transport=transport,
        realms=realms,
        log_level=log_table.get("level", "info"),
        log_format=log_table.get("format", "text"),
        drain_timeout=float(
            typed("server", "drain_timeout", server.get("drain_timeout", 10.0), (int, float))
        ),
        redis_url=cluster.get("redis"),
        node_id=cluster.get("node_id"),
        peer=parse_peer(
            typed("cluster", "peer", cluster.get("peer", DEFAULT_PEER), str), "[cluster] peer"
        ),
        peer_advertise=advertise(cluster.get("peer_advertise"), "[cluster] peer_advertise"),
        peer_tls=peer_tls(cluster, env),
        cluster_timing=_cluster_timing(cluster),
        session_limits=session_limits,
        workers=parse_workers(server.get("workers", 1), "[server] workers"),
        supervisor_port=typed("server", "supervisor_port", server.get("supervisor_port", 0), int),
    )


def parse_workers(value: Any, where: str = "--workers") -> int:
    """A worker count: a positive integer or ``"auto"`` (the number of CPUs)."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return os.cpu_count() or 1
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f'{where}: expected a positive integer or "auto", got {value!r}')
    return value


def _check_scale(settings: Settings) -> Settings:
    """Refuse a Redis URL that does not parse, and workers without Redis."""
    if settings.redis_url:
        try:
            parse_redis_url(settings.redis_url)
        except ValueError as exc:
            raise ConfigError(f"redis URL: {exc}") from None
        check_peer_workers(settings.workers, settings.peer, settings.peer_advertise)
    elif settings.workers > 1:
        raise ConfigError(
            f"{settings.workers} workers need a Redis URL (--redis, BROKER_REDIS or "
            "[cluster] redis): workers share the realms through Redis; without one the "
            "broker runs as one process"
        )
    return settings


def _from_file(path: str | None, env: Mapping[str, str]) -> Settings:
    """The settings of the TOML file at ``path``; the defaults when there is none."""
    if not path:
        return Settings(transport=replace(TransportSettings(), **_tls({}, env)))
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"invalid TOML in {path}: {exc}") from None
    return settings_from_toml(data, env)


def load_settings(
    config_path: str | None = None,
    *,
    host: str | None = None,
    port: int | None = None,
    log_level: str | None = None,
    log_format: str | None = None,
    redis_url: str | None = None,
    node_id: str | None = None,
    workers: str | None = None,
    supervisor_port: int | None = None,
    peer: str | None = None,
    environ: Mapping[str, str] | None = None,
) -> Settings:
    """Merge file, environment and flags into ``Settings``."""
    env = os.environ if environ is None else environ
    settings = _from_file(config_path or env.get("BROKER_CONFIG"), env)
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
        realms = (RealmSettings(name=DEFAULT_REALM, limits=settings.session_limits),)
    worker_text = workers or env.get("BROKER_WORKERS")
    flag = "--workers" if workers else "BROKER_WORKERS"
    count = parse_workers(worker_text, flag) if worker_text else settings.workers
    merged = replace(
        settings,
        transport=transport,
        realms=realms,
        log_level=level,
        log_format=fmt,
        redis_url=redis_url or env.get("BROKER_REDIS") or settings.redis_url,
        node_id=node_id or env.get("BROKER_NODE_ID") or settings.node_id,
        development_default=development,
        workers=count,
        supervisor_port=settings.supervisor_port if supervisor_port is None else supervisor_port,
        peer=peer_override(peer, env, settings.peer),
        peer_advertise=advertise(
            env.get("BROKER_PEER_ADVERTISE") or settings.peer_advertise, "BROKER_PEER_ADVERTISE"
        ),
        peer_tls=peer_tls({}, env) if settings.peer_tls is None else settings.peer_tls,
    )
    return _check_scale(merged)
