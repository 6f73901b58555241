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
pattern registration (``may_serve``). ``Authorization`` is the frozen policy; the realm's
``Guard`` memoises its decisions per (role, action, URI).

Dynamic authorizer: a role may name an ``authorizer`` procedure (registered by a
trusted session). For that role, an action on a URI that no rule of the role
matches is not denied but *undecided* (``Decision.consult``): the router calls the
procedure and maps its answer with ``parse_authorizer_reply``; answers marked
cacheable are kept by the ``Guard`` (``cached`` / ``remember`` / ``forget``) per (role, authid,
action, URI, match). ``wamp.*`` URIs are never sent to an authorizer (static rules
only), and neither is registering (or serving through a pattern) a procedure the router
itself calls (``protected``: authorizers, dynamic authenticators), so an authorizer that
carelessly approves a registration can never let a client impersonate it. Per-event /
per-call checks of pattern subscriptions and registrations stay
synchronous: a rule of the role decides if one matches; otherwise the authorizer's
approval of the pattern covers every URI it matches (as in Crossbar).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from protocol_spec.uri import (
    MATCH_EXACT,
    MATCH_POLICIES,
    MATCH_PREFIX,
    RESERVED_PREFIX,
    is_valid_uri,
)

from .auth import Reply
from .matching import UriMap

__all__ = [
    "ACTIONS",
    "AUTHORIZER_CACHE_TTL",
    "AUTHORIZER_TIMEOUT",
    "Authorization",
    "Decision",
    "DynamicKey",
    "Guard",
    "Permission",
    "Role",
    "parse_authorizer_reply",
]

log = logging.getLogger(__name__)

ACTIONS = ("publish", "subscribe", "call", "register")
"""The actions a permission can allow."""

_CACHE_LIMIT = 50_000
"""Cached decisions a ``Guard`` keeps before its cache starts over (bounded memory)."""

AUTHORIZER_TIMEOUT = 5.0
"""Default seconds an authorizer has to answer before the action is denied."""
AUTHORIZER_CACHE_TTL = 300.0
"""Default seconds a cacheable authorizer answer is kept (0: never cached)."""

DynamicKey = tuple[str, str, str, str, str]
"""(authrole, authid, action, URI, match): what a cached authorizer answer applies to."""


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a check: allowed or not, and whether the identity must be disclosed."""

    allowed: bool
    disclose: bool = False
    consult: bool = False
    """No rule decides: ask the role's authorizer (``allowed`` is false meanwhile)."""


DENY = Decision(False)
CONSULT = Decision(False, consult=True)
ALLOW_ALL = Decision(True)


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


@dataclass(frozen=True, slots=True)
class Role:
    """A named set of permissions, and optionally an authorizer for what they leave open.

    ``authorizer``: procedure consulted for actions on URIs no permission matches
    (empty: those are denied). ``authorizer_timeout``: seconds it has to answer.
    ``authorizer_cache``: seconds a cacheable answer is kept (0: answers are never cached).
    """

    name: str
    permissions: tuple[Permission, ...] = ()
    authorizer: str = ""
    authorizer_timeout: float = AUTHORIZER_TIMEOUT
    authorizer_cache: float = AUTHORIZER_CACHE_TTL
    _rules: tuple[UriMap[Permission], ...] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_rules", _rule_maps(self.permissions))
        if self.authorizer:
            if not is_valid_uri(self.authorizer) or self.authorizer.startswith(RESERVED_PREFIX):
                raise ValueError(f"authorizer: invalid procedure URI {self.authorizer!r}")
        if not 0 < self.authorizer_timeout <= 3600:
            raise ValueError("authorizer_timeout must be > 0 and at most 3600 seconds")
        if not 0 <= self.authorizer_cache <= 86_400:
            raise ValueError("authorizer_cache must be between 0 and 86400 seconds")

    def rule_for(self, uri: str) -> Permission | None:
        """The winning rule for ``uri``: the router's own precedence (``UriMap.best``).

        Exact beats the longest prefix, which beats the wildcard most specific from the
        left. URIs under ``wamp.`` are covered only by rules written under ``wamp.``.
        """
        every, reserved = self._rules
        return (reserved if uri.startswith(RESERVED_PREFIX) else every).best(uri)


def _rule_maps(permissions: Iterable[Permission]) -> tuple[UriMap[Permission], ...]:
    """(every rule, the ``wamp.`` rules) keyed like the router's URIs; first duplicate wins."""
    every: UriMap[Permission] = UriMap()
    reserved: UriMap[Permission] = UriMap()
    for perm in permissions:
        targets = (every, reserved) if perm.uri.startswith(RESERVED_PREFIX) else (every,)
        for target in targets:
            if target.get(perm.uri, perm.match) is None:
                target.set(perm.uri, perm.match, perm)
    return every, reserved


class Authorization:
    """The roles of one realm: a policy that never changes once built.

    Part of the frozen ``RealmSettings``; the decisions made with it are cached by the
    realm's ``Guard``, not here. ``protected``: procedures the router itself calls
    (authorizers, dynamic authenticators): only a static rule may let a role register or
    serve them, never an authorizer's answer.
    """

    __slots__ = ("protected", "roles")

    roles: Mapping[str, Role]
    protected: frozenset[str]

    def __init__(self, roles: Iterable[Role], protected: Iterable[str] = ()) -> None:
        self.roles = MappingProxyType({role.name: role for role in roles})
        self.protected = frozenset(protected) | {
            role.authorizer for role in self.roles.values() if role.authorizer
        }

    def protecting(self, procedures: Iterable[str]) -> Authorization:
        """The same roles with ``procedures`` added to ``protected``."""
        return Authorization(self.roles.values(), self.protected | frozenset(procedures))

    def decide(self, authrole: str, action: str, uri: str) -> Decision:
        """May a session with ``authrole`` do ``action`` on ``uri`` (a URI or a pattern)?"""
        role = self.roles.get(authrole)
        if role is None:
            return DENY
        rule = role.rule_for(uri)
        if rule is None:
            if (
                role.authorizer
                and not uri.startswith(RESERVED_PREFIX)
                and not (action == "register" and uri in self.protected)
            ):
                return CONSULT
            return DENY
        if action not in rule.allow:
            return DENY
        return Decision(True, rule.disclose)

    def may_receive(self, authrole: str, topic: str) -> bool:
        """Per-event check for pattern subscriptions: may the role subscribe to ``topic``?

        Undecided by the rules (role with an authorizer): the authorizer approved the
        pattern subscription itself, and that approval covers the topics it matches.
        """
        decision = self.decide(authrole, "subscribe", topic)
        return decision.allowed or decision.consult

    def may_serve(self, authrole: str, procedure: str) -> bool:
        """Per-call check for pattern registrations: may the role register ``procedure``?

        Undecided by the rules: covered by the authorizer's approval of the pattern.
        """
        decision = self.decide(authrole, "register", procedure)
        return decision.allowed or decision.consult

    def authorizer_of(self, authrole: str) -> Role | None:
        """The role ``authrole`` if it names an authorizer."""
        role = self.roles.get(authrole)
        return role if role is not None and role.authorizer else None


class Guard:
    """A realm's authorization at run time: its policy and the decisions made with it.

    One per ``Realm`` (the policy is shared, frozen, by the settings). Decisions of the
    rules are memoised per (role, action, URI); cacheable answers of a dynamic
    authorizer are kept per (role, authid, action, URI, match) until the router's timer
    calls ``forget``. Both caches are bounded.
    """

    __slots__ = ("_answers", "_memo", "policy")

    def __init__(self, policy: Authorization) -> None:
        self.policy = policy
        self._memo: dict[tuple[str, str, str], Decision] = {}
        self._answers: dict[DynamicKey, Decision] = {}

    def decide(self, authrole: str, action: str, uri: str) -> Decision:
        """``Authorization.decide``, memoised."""
        key = (authrole, action, uri)
        found = self._memo.get(key)
        if found is not None:
            return found
        decision = self.policy.decide(authrole, action, uri)
        if len(self._memo) >= _CACHE_LIMIT:
            self._memo.clear()
        self._memo[key] = decision
        return decision

    def may_receive(self, authrole: str, topic: str) -> bool:
        """``Authorization.may_receive``, memoised."""
        decision = self.decide(authrole, "subscribe", topic)
        return decision.allowed or decision.consult

    def may_serve(self, authrole: str, procedure: str) -> bool:
        """``Authorization.may_serve``, memoised."""
        decision = self.decide(authrole, "register", procedure)
        return decision.allowed or decision.consult

    def authorizer_of(self, authrole: str) -> Role | None:
        """The role ``authrole`` if it names an authorizer."""
        return self.policy.authorizer_of(authrole)

    # --- the dynamic authorizer's cacheable answers ----------------------------------------
    def cached(self, key: DynamicKey) -> Decision | None:
        """A cached authorizer answer for (authrole, authid, action, URI, match), if any."""
        return self._answers.get(key)

    def remember(self, key: DynamicKey, decision: Decision) -> None:
        """Cache an authorizer answer (the caller arranges its expiry with ``forget``)."""
        if len(self._answers) >= _CACHE_LIMIT:
            self._answers.clear()
        self._answers[key] = decision

    def forget(self, key: DynamicKey, decision: Decision | None = None) -> None:
        """Drop a cached answer (only if it is still ``decision``, when given)."""
        if decision is None or self._answers.get(key) is decision:
            self._answers.pop(key, None)

    def forget_all(self) -> None:
        """Drop every cached authorizer answer."""
        self._answers.clear()


def parse_authorizer_reply(reply: Reply, procedure: str) -> tuple[Decision, bool]:
    """Map an authorizer's answer to (decision, cacheable).

    RESULT with ``true``/``false``, or ``{"allow": bool, "disclose": bool, "cache":
    bool}`` (``disclose`` and ``cache`` optional, default false). Anything else,
    an ERROR, a timeout or no registration: deny, never cached.
    """
    if not reply.ok:
        log.info("authorizer %s did not answer (%s): denied", procedure, reply.error)
        return DENY, False
    answer: Any = reply.args[0] if reply.args else None
    if answer is None and "allow" in reply.kwargs:
        answer = reply.kwargs
    if type(answer) is bool:
        return (Decision(True) if answer else DENY), False
    if isinstance(answer, dict):
        allow = answer.get("allow")
        disclose = answer.get("disclose", False)
        cache = answer.get("cache", False)
        unknown = set(answer) - {"allow", "disclose", "cache"}
        if type(allow) is bool and type(disclose) is bool and type(cache) is bool and not unknown:
            # a fresh object per answer: a cache entry expires only if it is still this one
            return Decision(allow, disclose and allow), cache
    log.warning(
        "authorizer %s answered %r (expected a bool or {allow, disclose, cache}): denied",
        procedure,
        answer,
    )
    return DENY, False
