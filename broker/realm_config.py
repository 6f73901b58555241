"""The ``[[realm]]`` tables: authentication, authorization, history and the HTTP API.

broker/config.py reads everything else and calls ``realm_from_toml`` per realm; the TOML
reference is in its module docstring.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from broker.config_checks import ConfigError, check_keys, str_list, typed
from broker.core.auth import Authenticator
from broker.core.authorization import (
    ACTIONS,
    AUTHORIZER_CACHE_TTL,
    AUTHORIZER_TIMEOUT,
    Authorization,
    Permission,
    Role,
)
from broker.core.history import DEFAULT_MAX_BYTES, HistoryRule, HistorySettings
from broker.core.settings import DISCLOSE_POLICIES, RealmSettings, SessionLimits
from broker.httpapi.settings import (
    HttpApiSettings,
    SettingsError,
    WebhookSettings,
    parse_http_api,
    parse_webhooks,
)
from protocol_spec.uri import is_reserved, is_valid_uri

__all__ = [
    "http_apis_from_toml",
    "protect_dynamic_authenticators",
    "read_secret",
    "realm_from_toml",
]


_REALM_KEYS = {
    "name",
    "anonymous",
    "anonymous_role",
    "disclose_publisher",
    "disclose_caller",
    "auth",
    "role",
    "history",
    "history_max_bytes",
    "http_api",
    "webhook",
}

_HISTORY_KEYS = {"uri", "match", "limit", "ttl"}

_ROLE_KEYS = {"name", "permissions", "authorizer", "authorizer_timeout", "authorizer_cache"}


def read_secret(section: str, table: Mapping[str, Any], key: str, env: Mapping[str, str]) -> Any:
    """``key`` given inline, or ``key_env`` naming an environment variable."""
    env_key = f"{key}_env"
    if key in table and env_key in table:
        raise ConfigError(f"[{section}] give {key} or {env_key}, not both")
    if env_key in table:
        name = typed(section, env_key, table[env_key], str)
        value = env.get(name)
        if not value:
            raise ConfigError(f"[{section}] {env_key}: environment variable {name} is not set")
        return value
    if key in table:
        return typed(section, key, table[key], str)
    return None


# --- realms: authentication ---------------------------------------------------------------
def _principals(section: str, table: Mapping[str, Any]) -> Mapping[str, Any]:
    principals = table.get("principals", {})
    if not isinstance(principals, Mapping):
        raise ConfigError(f"[{section}] principals must be a table of authid → principal")
    for authid, principal in principals.items():
        if not authid:
            raise ConfigError(f"[{section}] principals: an authid must not be empty")
        if not isinstance(principal, Mapping):
            raise ConfigError(f"[{section}.principals.{authid}] must be a table")
    return principals


def _ticket(section: str, table: Mapping[str, Any], env: Mapping[str, str]) -> Authenticator:
    from broker.auth.secrets import is_ticket_hash
    from broker.auth.ticket import TicketAuthenticator, TicketPrincipal

    check_keys(section, table, {"principals", "jwt", "dynamic", "dynamic_realm", "dynamic_timeout"})
    principals: dict[str, TicketPrincipal] = {}
    for authid, entry in _principals(section, table).items():
        where = f"{section}.principals.{authid}"
        if "ticket" in entry:
            raise ConfigError(
                f"[{where}] store ticket_hash, never the ticket "
                "(make one with: python -m broker.auth hash)"
            )
        check_keys(where, entry, {"ticket_hash", "role"})
        ticket_hash = typed(where, "ticket_hash", entry.get("ticket_hash"), str)
        if not is_ticket_hash(ticket_hash):
            raise ConfigError(f"[{where}] ticket_hash: expected pbkdf2_sha256$ITER$SALT$HASH")
        principals[authid] = TicketPrincipal(
            ticket_hash, typed(where, "role", entry.get("role"), str)
        )
    jwt = _jwt(f"{section}.jwt", table["jwt"], env) if "jwt" in table else None
    dynamic = table.get("dynamic")
    if dynamic is not None:
        typed(section, "dynamic", dynamic, str)
    timeout = typed(section, "dynamic_timeout", table.get("dynamic_timeout", 10.0), (int, float))
    if not principals and jwt is None and dynamic is None:
        raise ConfigError(f"[{section}] needs principals, jwt or dynamic")
    return TicketAuthenticator(
        principals,
        jwt=jwt,
        dynamic=dynamic,
        dynamic_realm=typed(section, "dynamic_realm", table.get("dynamic_realm", ""), str),
        dynamic_timeout=float(timeout),
    )


def _jwt(section: str, table: Any, env: Mapping[str, str]) -> Any:
    from broker.auth.jwt_ticket import JwtSettings, JwtVerifier

    keys = {"algorithms", "secret", "secret_env", "public_key", "public_key_file", "issuer"}
    keys |= {"audience", "role_claim", "authid_claim", "leeway"}
    check_keys(section, table, keys)
    public_key = table.get("public_key")
    if "public_key_file" in table:
        path = typed(section, "public_key_file", table["public_key_file"], str)
        try:
            public_key = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"[{section}] cannot read public_key_file {path}: {exc.strerror}"
            ) from None
    try:
        settings = JwtSettings(
            algorithms=str_list(section, "algorithms", table.get("algorithms", ["HS256"])),
            secret=read_secret(section, table, "secret", env),
            public_key=public_key,
            issuer=table.get("issuer"),
            audience=table.get("audience"),
            role_claim=typed(section, "role_claim", table.get("role_claim", "role"), str),
            authid_claim=typed(section, "authid_claim", table.get("authid_claim", "sub"), str),
            leeway=float(typed(section, "leeway", table.get("leeway", 0), (int, float))),
        )
        return JwtVerifier(settings)
    except ValueError as exc:
        raise ConfigError(f"[{section}] {exc}") from None


def _wampcra(section: str, table: Mapping[str, Any], env: Mapping[str, str]) -> Authenticator:
    from broker.auth.wampcra import WampCraAuthenticator, WampCraPrincipal

    check_keys(section, table, {"principals"})
    principals: dict[str, WampCraPrincipal] = {}
    keys = {"secret", "secret_env", "derived_key", "salt", "iterations", "keylen", "role"}
    for authid, entry in _principals(section, table).items():
        where = f"{section}.principals.{authid}"
        check_keys(where, entry, keys)
        role = typed(where, "role", entry.get("role"), str)
        salt = entry.get("salt")
        if salt is not None:
            typed(where, "salt", salt, str)
        iterations = typed(where, "iterations", entry.get("iterations", 1000), int)
        keylen = typed(where, "keylen", entry.get("keylen", 32), int)
        if not 1 <= iterations <= 10_000_000 or not 1 <= keylen <= 1024:
            raise ConfigError(f"[{where}] iterations or keylen out of range")
        secret = read_secret(where, entry, "secret", env)
        derived = entry.get("derived_key")
        if (secret is None) == (derived is None):
            raise ConfigError(f"[{where}] give exactly one of secret, secret_env, derived_key")
        if derived is not None:
            if salt is None:
                raise ConfigError(f"[{where}] derived_key needs the salt it was derived with")
            key = typed(where, "derived_key", derived, str).encode("ascii")
            principals[authid] = WampCraPrincipal(key, role, salt, iterations, keylen)
        else:
            principals[authid] = WampCraPrincipal.from_secret(
                secret, role, salt, iterations, keylen
            )
    if not principals:
        raise ConfigError(f"[{section}] needs at least one principal")
    return WampCraAuthenticator(principals)


def _cryptosign(section: str, table: Mapping[str, Any], env: Mapping[str, str]) -> Authenticator:
    from broker.auth.cryptosign import (
        CryptosignAuthenticator,
        CryptosignPrincipal,
        parse_public_key,
    )

    check_keys(section, table, {"principals"})
    principals: dict[str, CryptosignPrincipal] = {}
    for authid, entry in _principals(section, table).items():
        where = f"{section}.principals.{authid}"
        check_keys(where, entry, {"pubkeys", "role"})
        try:
            keys = tuple(
                parse_public_key(k) for k in str_list(where, "pubkeys", entry.get("pubkeys"))
            )
        except ValueError as exc:
            raise ConfigError(f"[{where}] pubkeys: {exc}") from None
        if not keys:
            raise ConfigError(f"[{where}] pubkeys must not be empty")
        role = typed(where, "role", entry.get("role"), str)
        principals[authid] = CryptosignPrincipal(authid, role, keys)
    try:
        return CryptosignAuthenticator(principals)
    except ValueError as exc:
        raise ConfigError(f"[{section}] {exc}") from None


_AUTH_BUILDERS = {"ticket": _ticket, "wampcra": _wampcra, "cryptosign": _cryptosign}


def _authenticators(section: str, table: Any, env: Mapping[str, str]) -> tuple[Authenticator, ...]:
    check_keys(f"{section}.auth", table, set(_AUTH_BUILDERS))
    return tuple(
        _AUTH_BUILDERS[method](f"{section}.auth.{method}", sub, env)
        for method, sub in table.items()
        if _check_table(f"{section}.auth.{method}", sub)
    )


def _check_table(section: str, table: Any) -> bool:
    if not isinstance(table, Mapping):
        raise ConfigError(f"[{section}] must be a table")
    return True


# --- realms: event history ------------------------------------------------------------------
def _history(section: str, table: Mapping[str, Any]) -> HistorySettings:
    """``[[realm.history]]`` rules and ``history_max_bytes`` of one realm."""
    entries = table.get("history", [])
    if not isinstance(entries, list):
        raise ConfigError(f"[{section}.history] must be an array of tables ([[realm.history]])")
    rules: list[HistoryRule] = []
    for index, entry in enumerate(entries):
        where = f"{section} history #{index + 1}"
        check_keys(where, entry, _HISTORY_KEYS)
        if "uri" not in entry or "limit" not in entry:
            raise ConfigError(f"[{where}] needs uri and limit (events kept per topic)")
        ttl = entry.get("ttl")
        try:
            rules.append(
                HistoryRule(
                    uri=typed(where, "uri", entry["uri"], str),
                    match=typed(where, "match", entry.get("match", "exact"), str),
                    limit=typed(where, "limit", entry["limit"], int),
                    ttl=None if ttl is None else float(typed(where, "ttl", ttl, (int, float))),
                )
            )
        except ValueError as exc:
            raise ConfigError(f"[{where}] {exc}") from None
    keys = [(rule.match, rule.uri) for rule in rules]
    if len(set(keys)) != len(keys):
        raise ConfigError(f"[{section}.history] two rules for the same uri and match")
    max_bytes = typed(
        section, "history_max_bytes", table.get("history_max_bytes", DEFAULT_MAX_BYTES), int
    )
    if max_bytes <= 0:
        raise ConfigError(f"[{section}] history_max_bytes: must be a positive number of bytes")
    return HistorySettings(tuple(rules), max_bytes)


# --- realms: authorization ------------------------------------------------------------------
def _roles(section: str, entries: Any) -> Authorization:
    if not isinstance(entries, list):
        raise ConfigError(f"[{section}.role] must be an array of tables ([[realm.role]])")
    roles: list[Role] = []
    for index, entry in enumerate(entries):
        where = f"{section}.role #{index + 1}"
        check_keys(where, entry, _ROLE_KEYS)
        name = typed(where, "name", entry.get("name"), str)
        where = f"{section} role {name}"
        perms = entry.get("permissions", [])
        if not isinstance(perms, list):
            raise ConfigError(f"[{where}] permissions must be an array of tables")
        permissions = tuple(
            _permission(f"{where} permission #{i + 1}", p) for i, p in enumerate(perms)
        )
        roles.append(Role(name, permissions, **_authorizer(where, entry)))
    names = [r.name for r in roles]
    if len(set(names)) != len(names):
        raise ConfigError(f"[{section}.role] role names must be unique")
    authorization = Authorization(roles)
    for role in roles:
        if role.authorizer and not any(
            authorization.decide(other.name, "register", role.authorizer).allowed for other in roles
        ):
            raise ConfigError(
                f"[{section} role {role.name}] authorizer {role.authorizer!r}: no role of the "
                "realm may register it; give the trusted backend's role a permission with "
                'allow = ["register"] for it'
            )
    return authorization


def _authorizer(where: str, entry: Mapping[str, Any]) -> dict[str, Any]:
    """The ``authorizer*`` keys of a role, checked (Role's keyword arguments)."""
    if "authorizer" not in entry:
        extra = sorted(set(entry) & {"authorizer_timeout", "authorizer_cache"})
        if extra:
            raise ConfigError(f"[{where}] {', '.join(extra)} needs authorizer")
        return {}
    procedure = typed(where, "authorizer", entry["authorizer"], str)
    if not is_valid_uri(procedure) or is_reserved(procedure):
        raise ConfigError(
            f"[{where}] authorizer: {procedure!r} is not a valid procedure URI outside wamp.*"
        )
    timeout = typed(
        where,
        "authorizer_timeout",
        entry.get("authorizer_timeout", AUTHORIZER_TIMEOUT),
        (int, float),
    )
    if not 0 < timeout <= 3600:
        raise ConfigError(f"[{where}] authorizer_timeout: seconds, more than 0 and at most 3600")
    cache = typed(
        where, "authorizer_cache", entry.get("authorizer_cache", AUTHORIZER_CACHE_TTL), (int, float)
    )
    if not 0 <= cache <= 86_400:
        raise ConfigError(f"[{where}] authorizer_cache: seconds, from 0 (no cache) to 86400")
    return {
        "authorizer": procedure,
        "authorizer_timeout": float(timeout),
        "authorizer_cache": float(cache),
    }


def _permission(where: str, entry: Any) -> Permission:
    check_keys(where, entry, {"uri", "match", "allow", "disclose"})
    allow = str_list(where, "allow", entry.get("allow", []))
    unknown = set(allow) - set(ACTIONS)
    if unknown:
        raise ConfigError(
            f"[{where}] allow: unknown action(s) {', '.join(sorted(unknown))}; "
            f"use {', '.join(ACTIONS)}"
        )
    try:
        return Permission(
            uri=typed(where, "uri", entry.get("uri"), str),
            match=typed(where, "match", entry.get("match", "prefix"), str),
            allow=frozenset(allow),
            disclose=typed(where, "disclose", entry.get("disclose", False), bool),
        )
    except ValueError as exc:
        raise ConfigError(f"[{where}] {exc}") from None


def realm_from_toml(
    index: int, table: Any, limits: SessionLimits, env: Mapping[str, str]
) -> RealmSettings:
    section = f"realm #{index + 1}"
    check_keys(section, table, _REALM_KEYS)
    if "name" not in table:
        raise ConfigError(f"[{section}] needs a name")
    name = typed(section, "name", table["name"], str)
    section = f"realm {name}"
    for key in ("disclose_publisher", "disclose_caller"):
        if key in table and table[key] not in DISCLOSE_POLICIES:
            raise ConfigError(f"[{section}] {key}: one of {sorted(DISCLOSE_POLICIES)}")
    authorization = _roles(section, table["role"]) if "role" in table else None
    authenticators = _authenticators(section, table.get("auth", {}), env)
    return RealmSettings(
        name=name,
        anonymous=typed(section, "anonymous", table.get("anonymous", True), bool),
        anonymous_role=typed(
            section, "anonymous_role", table.get("anonymous_role", "anonymous"), str
        ),
        disclose_publisher=table.get("disclose_publisher", "client"),
        disclose_caller=table.get("disclose_caller", "client"),
        authenticators=authenticators,
        authorization=authorization,
        limits=limits,
        history=_history(section, table),
    )


def protect_dynamic_authenticators(
    realms: tuple[RealmSettings, ...],
) -> tuple[RealmSettings, ...]:
    """Only static rules may let a role register a dynamic authenticator (not an authorizer).

    Returns the realms with each dynamic authenticator's procedure added to the
    ``protected`` procedures of the realm it calls into.
    """
    protected: dict[str, set[str]] = {}
    for realm in realms:
        for authenticator in realm.authenticators:
            procedure = getattr(authenticator, "dynamic", None)
            if isinstance(procedure, str):
                target = getattr(authenticator, "dynamic_realm", "") or realm.name
                protected.setdefault(target, set()).add(procedure)
    return tuple(
        replace(realm, authorization=realm.authorization.protecting(protected[realm.name]))
        if realm.authorization is not None and realm.name in protected
        else realm
        for realm in realms
    )


def http_apis_from_toml(
    realm_tables: list[Any], env: Mapping[str, str]
) -> tuple[tuple[HttpApiSettings, ...], tuple[WebhookSettings, ...]]:
    """Every realm's ``[realm.http_api]`` and ``[[realm.webhook]]`` (broker.httpapi)."""
    apis: list[HttpApiSettings] = []
    hooks: list[WebhookSettings] = []
    try:
        for table in realm_tables:
            if "http_api" in table:
                apis.append(parse_http_api(table["name"], table["http_api"], env))
            hooks.extend(parse_webhooks(table["name"], table.get("webhook", []), env))
    except SettingsError as exc:
        raise ConfigError(str(exc)) from None
    return tuple(apis), tuple(hooks)


# --- the whole file -------------------------------------------------------------------------
