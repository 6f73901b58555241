"""URI rules: loose and strict URIs, pattern URIs, and Options/Details keys.

A *URI* names a topic, procedure or error: dot-separated components. *Loose* URIs
forbid whitespace, ``.`` and ``#`` inside components; *strict* URIs allow only
``[0-9a-z_]``. Pattern subscriptions and registrations add two forms:

- ``prefix``: any string prefix of a loose URI; a trailing dot is allowed.
- ``wildcard``: components may be empty (``com..update`` matches ``com.x.update``).

The ``wamp.`` prefix is reserved for the router (meta API, error URIs).
See protocol_spec/wamp.md, "URIs".
"""

from __future__ import annotations

import re
from typing import Final

__all__ = [
    "MATCH_EXACT",
    "MATCH_POLICIES",
    "MATCH_PREFIX",
    "MATCH_WILDCARD",
    "RESERVED_PREFIX",
    "is_reserved",
    "is_valid_key",
    "is_valid_uri",
    "wildcard_matches",
]

MATCH_EXACT: Final = "exact"
MATCH_PREFIX: Final = "prefix"
MATCH_WILDCARD: Final = "wildcard"
MATCH_POLICIES: Final = frozenset({MATCH_EXACT, MATCH_PREFIX, MATCH_WILDCARD})
RESERVED_PREFIX: Final = "wamp."

_LOOSE = re.compile(r"^([^\s.#]+\.)*([^\s.#]+)$")
_STRICT = re.compile(r"^([0-9a-z_]+\.)*([0-9a-z_]+)$")
_LOOSE_PREFIX = re.compile(r"^([^\s.#]+\.)*([^\s.#]*)$")
_STRICT_PREFIX = re.compile(r"^([0-9a-z_]+\.)*([0-9a-z_]*)$")
_LOOSE_WILDCARD = re.compile(r"^(([^\s.#]+\.)|\.)*([^\s.#]+)?$")
_STRICT_WILDCARD = re.compile(r"^(([0-9a-z_]+\.)|\.)*([0-9a-z_]+)?$")
_KEY = re.compile(r"^([a-z][a-z0-9_]{2,}|_[a-z0-9_]{3,})$")

_RULES: Final = {
    (MATCH_EXACT, False): _LOOSE,
    (MATCH_EXACT, True): _STRICT,
    (MATCH_PREFIX, False): _LOOSE_PREFIX,
    (MATCH_PREFIX, True): _STRICT_PREFIX,
    (MATCH_WILDCARD, False): _LOOSE_WILDCARD,
    (MATCH_WILDCARD, True): _STRICT_WILDCARD,
}


def is_valid_uri(uri: object, match: str = MATCH_EXACT, *, strict: bool = False) -> bool:
    """Tell whether ``uri`` is a valid URI (or pattern, for prefix/wildcard ``match``)."""
    if type(uri) is not str or not uri:
        return False
    rule = _RULES.get((match, strict))
    if rule is None:
        return False
    if match == MATCH_WILDCARD and "." not in uri:
        # A wildcard pattern needs at least two components to mean anything.
        return False
    return rule.fullmatch(uri) is not None  # fullmatch: "$" would accept a trailing "\n"


def is_valid_key(key: object) -> bool:
    """Tell whether ``key`` may be an Options/Details key.

    Spec keys match ``[a-z][a-z0-9_]{2,}``; implementation-specific keys
    ``_[a-z0-9_]{3,}``.
    """
    return type(key) is str and _KEY.fullmatch(key) is not None


def is_reserved(uri: str) -> bool:
    """Tell whether ``uri`` lies in the router-reserved ``wamp.`` namespace."""
    return uri.startswith(RESERVED_PREFIX)


def wildcard_matches(pattern: tuple[str, ...], components: list[str]) -> bool:
    """Match URI components against a split wildcard pattern (empty = any)."""
    if len(pattern) != len(components):
        return False
    for want, got in zip(pattern, components, strict=False):
        if want and want != got:
            return False
    return True
