"""Authorization: roles, permissions, and the decision "may role R do action A on URI U".

Sans-I/O and synchronous. A realm with no roles configured is *open* (every session
may do everything: the development default); a realm with roles denies whatever no
permission grants. Rules of a role are matched against the URI with the same
precedence the dealer uses to pick a registration: an ``exact`` rule beats the
longest matching ``prefix`` rule, which beats the most specific ``wildcard`` rule.
The winning rule alone decides (so a narrow rule with no actions carves a hole into
a broad grant).

The router-reserved ``wamp.`` namespace (the meta API) is privileged: a rule
matches a ``wamp.*`` URI only when the rule's own URI starts with ``wamp.``, so a
catch-all grant (prefix ``""``) never opens the meta API by accident.

Requests made with a pattern (SUBSCRIBE / REGISTER with ``match`` prefix or
wildcard) are decided on the pattern text itself; then, because a broad pattern
may cover URIs the role is denied, the broker checks every event delivered through
a pattern subscription (``may_receive``) and the dealer every call routed to a
pattern registration (``may_serve``). Decisions are cached per (role, action, URI).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from protocol_spec.uri import (
    MATCH_EXACT,
    MATCH_POLICIES,
    MATCH_PREFIX,
    RESERVED_PREFIX,
    is_valid_uri,
    wildcard_matches,
)

__all__ = [
    "ACTIONS",
    "Authorization",
    "Decision",
    "Permission",
    "Role",
]

ACTIONS = ("publish", "subscribe", "call", "register")
"""The actions a permission can allow."""

_CACHE_LIMIT = 50_000
"""Cached decisions kept per realm before the cache starts over (bounded memory)."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a check: allowed or not, and whether the identity must be disclosed."""

    allowed: bool
    disclose: bool = False


DENY = Decision(False)


@dataclass(frozen=True, slots=True)
class Permission:
    """One rule of a role: URI + match policy + allowed actions + disclosure.

    ``disclose``: when true, the caller (on call) or publisher (on publish) identity
    is disclosed to the callee / subscribers whatever the client asked.
    """

    uri: str
    match: str = MATCH_PREFIX
    allow: frozenset[str] = frozenset()
    disclose: bool = False

    def __post_init__(self) -> None:
        if self.match not in MATCH_POLICIES:
            raise ValueError(f"match must be one of {sorted(MATCH_POLICIES)}")
        unknown = set(self.allow) - set(ACTIONS)
        if unknown:
            raise ValueError(f"unknown action(s) {', '.join(sorted(unknown))}")
        if self.match == MATCH_EXACT and not is_valid_uri(self.uri):
            raise ValueError(f"invalid URI {self.uri!r}")
        if self.match != MATCH_EXACT and self.uri and not is_valid_uri(self.uri, self.match):
            raise ValueError(f"invalid {self.match} pattern {self.uri!r}")

    def matches(self, uri: str) -> bool:
        """Tell whether this rule covers ``uri`` (the ``wamp.`` namespace needs a wamp rule)."""
        if uri.startswith(RESERVED_PREFIX) and not self.uri.startswith(RESERVED_PREFIX):
            return False
        if self.match == MATCH_EXACT:
            return uri == self.uri
        if self.match == MATCH_PREFIX:
            return uri.startswith(self.uri)
        return wildcard_matches(tuple(self.uri.split(".")), uri.split("."))

    def rank(self) -> tuple[int, int, tuple[bool, ...]]:
        """Precedence among matching rules: higher wins."""
        if self.match == MATCH_EXACT:
            return (2, 0, ())
        if self.match == MATCH_PREFIX:
            return (1, len(self.uri), ())
        return (0, 0, tuple(bool(c) for c in self.uri.split(".")))


@dataclass(frozen=True, slots=True)
class Role:
    """A named set of permissions."""

    name: str
    permissions: tuple[Permission, ...] = ()

    def rule_for(self, uri: str) -> Permission | None:
        """The winning rule for ``uri``, if any rule matches."""
        best: Permission | None = None
        best_rank: tuple[int, int, tuple[bool, ...]] | None = None
        for perm in self.permissions:
            if perm.matches(uri):
                rank = perm.rank()
                if best_rank is None or rank > best_rank:
                    best, best_rank = perm, rank
        return best


class Authorization:
    """The roles of one realm and the cached decisions made with them."""

    __slots__ = ("_cache", "roles")

    def __init__(self, roles: Iterable[Role]) -> None:
        self.roles: Mapping[str, Role] = {role.name: role for role in roles}
        self._cache: dict[tuple[str, str, str], Decision] = {}

    def decide(self, authrole: str, action: str, uri: str) -> Decision:
        """May a session with ``authrole`` do ``action`` on ``uri`` (a URI or a pattern)?"""
        key = (authrole, action, uri)
        found = self._cache.get(key)
        if found is not None:
            return found
        decision = self._evaluate(authrole, action, uri)
        if len(self._cache) >= _CACHE_LIMIT:
            self._cache.clear()
        self._cache[key] = decision
        return decision

    def _evaluate(self, authrole: str, action: str, uri: str) -> Decision:
        role = self.roles.get(authrole)
        if role is None:
            return DENY
        rule = role.rule_for(uri)
        if rule is None or action not in rule.allow:
            return DENY
        return Decision(True, rule.disclose)

    def may_receive(self, authrole: str, topic: str) -> bool:
        """Per-event check for pattern subscriptions: may the role subscribe to ``topic``?"""
        return self.decide(authrole, "subscribe", topic).allowed

    def may_serve(self, authrole: str, procedure: str) -> bool:
        """Per-call check for pattern registrations: may the role register ``procedure``?"""
        return self.decide(authrole, "register", procedure).allowed
