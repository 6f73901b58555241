"""``[console]``: where the console is served and which realm/role it logs in to.

The console's role is granted the meta API (``call`` and ``subscribe`` on ``wamp.``,
prefix) and nothing more, unless the realm configures that role itself: a configured
role keeps its own permissions, plus the meta API when none of its rules covers
``wamp.`` (a rule under ``wamp.`` written by the operator wins).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any

from broker.core.authorization import Authorization, Permission, Role
from broker.core.settings import RealmSettings
from protocol_spec.uri import MATCH_PREFIX, RESERVED_PREFIX

__all__ = ["META_PERMISSION", "ConsoleSettings", "console_from_toml"]

META_PERMISSION = Permission(RESERVED_PREFIX, MATCH_PREFIX, frozenset({"call", "subscribe"}))
"""What the console's role is granted: every meta procedure and meta event."""

_KEYS = {"enabled", "path", "realm", "role"}


@dataclass(frozen=True, slots=True)
class ConsoleSettings:
    """An enabled console: URL path (no trailing slash), realm and role it logs in to."""

    path: str = "/console"
    realm: str = "admin"
    role: str = "admin"


def _get(table: Mapping[str, Any], key: str, default: Any, kind: type) -> Any:
    value = table.get(key, default)
    if not isinstance(value, kind):
        raise ValueError(f"[console] {key} must be a {kind.__name__}")
    return value


def console_from_toml(
    table: Any, realms: tuple[RealmSettings, ...], wamp_path: str
) -> tuple[ConsoleSettings | None, tuple[RealmSettings, ...]]:
    """Parse ``[console]``; return the settings (None when off) and the realms with the grant.

    Raises ``ValueError`` (the caller turns it into ``ConfigError``) for unknown keys, a
    path that collides with the WAMP path or the health routes, a realm that is not
    configured, an open realm (no roles) or a role anonymous clients would get.
    """
    if not isinstance(table, Mapping):
        raise ValueError("[console] must be a table")
    unknown = set(table) - _KEYS
    if unknown:
        raise ValueError(f"[console] unknown key(s): {', '.join(sorted(unknown))}")
    if not _get(table, "enabled", False, bool):
        return None, realms
    path = "/" + _get(table, "path", "/console", str).strip("/")
    if path in ("/", wamp_path.rstrip("/"), "/healthz", "/readyz", "/metrics"):
        raise ValueError(f"[console] path {path!r} collides with another route")
    console = ConsoleSettings(
        path, _get(table, "realm", "admin", str), _get(table, "role", "admin", str)
    )
    realm = next((r for r in realms if r.name == console.realm), None)
    if realm is None:
        raise ValueError(f"[console] realm {console.realm!r} is not a configured [[realm]]")
    where = f"[console] realm {realm.name!r}"
    if realm.authorization is None:
        raise ValueError(f"{where} has no [[realm.role]]: open realms let anyone use the meta API")
    if realm.anonymous and realm.anonymous_role == console.role:
        raise ValueError(f"{where}: role {console.role!r} is what anonymous clients get")
    if not realm.authenticators:
        raise ValueError(f"{where} needs an authentication method (ticket or cryptosign)")
    granted = replace(realm, authorization=_grant(realm.authorization, console.role))
    return console, tuple(granted if r is realm else r for r in realms)


def _grant(authorization: Authorization, role_name: str) -> Authorization:
    """``authorization`` with the meta API granted to ``role_name`` (see the module doc)."""
    roles = dict(authorization.roles)
    role = roles.get(role_name)
    if role is None:
        roles[role_name] = Role(role_name, (META_PERMISSION,))
    elif role.rule_for(RESERVED_PREFIX + "session.list") is None:
        roles[role_name] = replace(role, permissions=(*role.permissions, META_PERMISSION))
    return Authorization(roles.values(), authorization.protected)
