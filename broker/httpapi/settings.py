"""Typed settings of a realm's HTTP API and webhooks, parsed from ``[realm.http_api]``.

TOML (inside a ``[[realm]]``; every key optional)::

    [realm.http_api]
    publish_path = "/publish"       # "" switches the route off
    call_path = "/call"
    openapi_path = "/openapi.json"  # the OpenAPI 3 description (protocol_spec/http-api.json)
    max_body = 65536                # bytes per request body (413 beyond)
    rate = 100.0                    # requests/s per key (token bucket; 429 beyond); 0: off
    burst = 200
    max_concurrent_calls = 16       # calls in flight per key (429 beyond)
    call_timeout = 30.0             # seconds when the request names no timeout
    signature_window = 300.0        # seconds a signed request's timestamp may be off

    [realm.http_api.keys.billing]   # Authorization: Bearer billing.<secret>
    key_hash = "pbkdf2_sha256$..."  # python -m broker.auth hash (of the secret part)
    authid = "billing-service"
    role = "publisher"

    [realm.http_api.signers.cron]   # Crossbar-style signed requests (?key=cron&...)
    secret_env = "CRON_SECRET"      # or secret = "..."
    authid = "cron"
    role = "publisher"

    [[realm.webhook]]
    name = "orders"                 # unique per realm; names the metrics label
    topic = "com.shop.order."
    match = "prefix"                # exact | prefix | wildcard
    url = "http://127.0.0.1:9000/hook"
    secret_env = "HOOK_SECRET"      # HMAC key of the X-Broker-Signature header
    role = "webhook"                # the role its subscription is authorised as
    timeout = 5.0                   # seconds per POST
    queue = 1000                    # events waiting; the oldest is dropped beyond
    max_attempts = 5                # then the event is dropped (counted)
    backoff_initial = 0.5
    backoff_max = 30.0
    concurrency = 1                 # POSTs in flight; 1 keeps publication order
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from broker.auth.secrets import is_ticket_hash
from protocol_spec.uri import is_valid_uri

__all__ = [
    "ApiKey",
    "HttpApiSettings",
    "SettingsError",
    "Signer",
    "WebhookSettings",
    "parse_http_api",
    "parse_webhooks",
]

_API_KEYS = {
    "publish_path",
    "call_path",
    "openapi_path",
    "max_body",
    "rate",
    "burst",
    "max_concurrent_calls",
    "call_timeout",
    "signature_window",
    "keys",
    "signers",
}
_WEBHOOK_KEYS = {
    "name",
    "topic",
    "match",
    "url",
    "secret",
    "secret_env",
    "role",
    "timeout",
    "queue",
    "max_attempts",
    "backoff_initial",
    "backoff_max",
    "concurrency",
}
_MATCHES = ("exact", "prefix", "wildcard")


class SettingsError(ValueError):
    """A ``[realm.http_api]`` or ``[[realm.webhook]]`` entry is invalid (config wraps it)."""


@dataclass(frozen=True, slots=True)
class ApiKey:
    """A bearer key: the salted hash of its secret part and the identity it grants."""

    key_hash: str
    authid: str
    role: str


@dataclass(frozen=True, slots=True)
class Signer:
    """A signed-request key: the shared HMAC secret and the identity it grants."""

    secret: str
    authid: str
    role: str


@dataclass(frozen=True, slots=True)
class HttpApiSettings:
    """One realm's HTTP API (routes, limits, credentials)."""

    realm: str
    publish_path: str = "/publish"
    call_path: str = "/call"
    openapi_path: str = "/openapi.json"
    max_body: int = 65536
    rate: float = 100.0
    burst: int = 200
    max_concurrent_calls: int = 16
    call_timeout: float = 30.0
    signature_window: float = 300.0
    keys: Mapping[str, ApiKey] | None = None
    signers: Mapping[str, Signer] | None = None


@dataclass(frozen=True, slots=True)
class WebhookSettings:
    """One webhook: events of ``topic`` (``match``) POSTed to ``url``."""

    realm: str
    name: str
    topic: str
    url: str
    match: str = "exact"
    secret: str = ""
    role: str = "webhook"
    timeout: float = 5.0
    queue: int = 1000
    max_attempts: int = 5
    backoff_initial: float = 0.5
    backoff_max: float = 30.0
    concurrency: int = 1


def _get(section: str, table: Mapping[str, Any], key: str, kind: Any, default: Any) -> Any:
    value = table.get(key, default)
    if isinstance(value, bool) and kind is not bool:
        raise SettingsError(f"[{section}] {key}: expected {kind}, got a boolean")
    if kind is float and isinstance(value, int):
        value = float(value)
    if not isinstance(value, kind):
        raise SettingsError(f"[{section}] {key}: expected {kind.__name__}")
    if kind in (int, float) and value < 0:
        raise SettingsError(f"[{section}] {key}: must not be negative")
    return value


def _secret(section: str, table: Mapping[str, Any], env: Mapping[str, str]) -> str:
    if "secret" in table and "secret_env" in table:
        raise SettingsError(f"[{section}] give secret or secret_env, not both")
    if "secret_env" in table:
        name = _get(section, table, "secret_env", str, "")
        value = env.get(name, "")
        if not value:
            raise SettingsError(f"[{section}] secret_env: environment variable {name} is not set")
        return value
    return str(_get(section, table, "secret", str, ""))


def _identity(section: str, entry: Any) -> tuple[str, str]:
    if not isinstance(entry, Mapping):
        raise SettingsError(f"[{section}] must be a table")
    authid = _get(section, entry, "authid", str, "")
    role = _get(section, entry, "role", str, "")
    if not authid or not role:
        raise SettingsError(f"[{section}] needs authid and role")
    return authid, role


def _keys(section: str, table: Any) -> dict[str, ApiKey]:
    if not isinstance(table, Mapping):
        raise SettingsError(f"[{section}.keys] must be a table of key id → key")
    keys = {}
    for name, entry in table.items():
        where = f"{section}.keys.{name}"
        if not name or "." in name:
            raise SettingsError(f"[{where}] a key id is non-empty and has no '.'")
        authid, role = _identity(where, entry)
        unknown = set(entry) - {"key_hash", "authid", "role"}
        if unknown:
            raise SettingsError(f"[{where}]: unknown key(s) {', '.join(sorted(unknown))}")
        key_hash = _get(where, entry, "key_hash", str, "")
        if not is_ticket_hash(key_hash):
            raise SettingsError(f"[{where}] key_hash: a salted hash (python -m broker.auth hash)")
        keys[name] = ApiKey(key_hash, authid, role)
    return keys


def _signers(section: str, table: Any, env: Mapping[str, str]) -> dict[str, Signer]:
    if not isinstance(table, Mapping):
        raise SettingsError(f"[{section}.signers] must be a table of key → signer")
    signers = {}
    for name, entry in table.items():
        where = f"{section}.signers.{name}"
        authid, role = _identity(where, entry)
        unknown = set(entry) - {"secret", "secret_env", "authid", "role"}
        if unknown:
            raise SettingsError(f"[{where}]: unknown key(s) {', '.join(sorted(unknown))}")
        secret = _secret(where, entry, env)
        if not secret:
            raise SettingsError(f"[{where}] needs secret or secret_env")
        signers[name] = Signer(secret, authid, role)
    return signers


def _path(section: str, table: Mapping[str, Any], key: str, default: str) -> str:
    path = _get(section, table, key, str, default).rstrip("/")
    if path and not path.startswith("/"):
        raise SettingsError(f"[{section}] {key}: a path like {default}, or '' for none")
    return str(path)


def parse_http_api(realm: str, table: Any, env: Mapping[str, str]) -> HttpApiSettings:
    """Build one realm's ``HttpApiSettings``; raise ``SettingsError`` naming the key."""
    section = f"realm {realm}.http_api"
    if not isinstance(table, Mapping):
        raise SettingsError(f"[{section}] must be a table")
    unknown = set(table) - _API_KEYS
    if unknown:
        raise SettingsError(f"[{section}]: unknown key(s) {', '.join(sorted(unknown))}")
    return HttpApiSettings(
        realm=realm,
        publish_path=_path(section, table, "publish_path", "/publish"),
        call_path=_path(section, table, "call_path", "/call"),
        openapi_path=_path(section, table, "openapi_path", "/openapi.json"),
        max_body=_get(section, table, "max_body", int, 65536),
        rate=_get(section, table, "rate", float, 100.0),
        burst=max(1, _get(section, table, "burst", int, 200)),
        max_concurrent_calls=_get(section, table, "max_concurrent_calls", int, 16),
        call_timeout=_get(section, table, "call_timeout", float, 30.0),
        signature_window=_get(section, table, "signature_window", float, 300.0),
        keys=_keys(section, table.get("keys", {})),
        signers=_signers(section, table.get("signers", {}), env),
    )


def _webhook(realm: str, index: int, table: Any, env: Mapping[str, str]) -> WebhookSettings:
    section = f"realm {realm}.webhook #{index + 1}"
    if not isinstance(table, Mapping):
        raise SettingsError(f"[{section}] must be a table")
    unknown = set(table) - _WEBHOOK_KEYS
    if unknown:
        raise SettingsError(f"[{section}]: unknown key(s) {', '.join(sorted(unknown))}")
    name = _get(section, table, "name", str, "")
    topic = _get(section, table, "topic", str, "")
    url = _get(section, table, "url", str, "")
    match = _get(section, table, "match", str, "exact")
    if not name or not topic or not url:
        raise SettingsError(f"[{section}] needs name, topic and url")
    if match not in _MATCHES:
        raise SettingsError(f"[{section}] match: one of {', '.join(_MATCHES)}")
    if not is_valid_uri(topic, match):
        raise SettingsError(f"[{section}] topic: invalid URI {topic!r}")
    if not url.startswith(("http://", "https://")):
        raise SettingsError(f"[{section}] url: an http:// or https:// URL")
    return WebhookSettings(
        realm=realm,
        name=name,
        topic=topic,
        url=url,
        match=match,
        secret=_secret(section, table, env),
        role=_get(section, table, "role", str, "webhook"),
        timeout=_get(section, table, "timeout", float, 5.0),
        queue=max(1, _get(section, table, "queue", int, 1000)),
        max_attempts=max(1, _get(section, table, "max_attempts", int, 5)),
        backoff_initial=_get(section, table, "backoff_initial", float, 0.5),
        backoff_max=_get(section, table, "backoff_max", float, 30.0),
        concurrency=max(1, _get(section, table, "concurrency", int, 1)),
    )


def parse_webhooks(realm: str, tables: Any, env: Mapping[str, str]) -> tuple[WebhookSettings, ...]:
    """Build a realm's webhooks from its ``[[realm.webhook]]`` array."""
    if not isinstance(tables, list):
        raise SettingsError(f"[realm {realm}.webhook] must be an array of tables")
    hooks = tuple(_webhook(realm, i, t, env) for i, t in enumerate(tables))
    names = [h.name for h in hooks]
    if len(set(names)) != len(names):
        raise SettingsError(f"[realm {realm}.webhook] names must be unique")
    return hooks
