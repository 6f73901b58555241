"""How one realm behaves: the frozen settings broker.config builds from TOML and flags.

Values only: nothing here changes once the broker runs. What the realm learns while
running (cached authorization decisions, authorizer answers) lives on the ``Realm``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .auth import AnonymousAuthenticator, Authenticator
from .authorization import Authorization
from .history import HistorySettings

__all__ = ["DISCLOSE_POLICIES", "RealmSettings", "SessionLimits"]

DISCLOSE_POLICIES = frozenset({"client", "always", "never"})


@dataclass(frozen=True, slots=True)
class SessionLimits:
    """What one session may hold at once; exceeding a limit gets ERROR ``LIMIT_EXCEEDED``."""

    max_subscriptions: int = 10_000
    max_registrations: int = 10_000
    max_pending_calls: int = 10_000


@dataclass(frozen=True, slots=True)
class RealmSettings:
    """How one realm behaves; built by broker.config from TOML/flags.

    ``disclose_publisher`` / ``disclose_caller``: ``client`` honours the client's
    ``disclose_me`` option, ``always`` and ``never`` override it. ``authorization``:
    the realm's roles; None leaves the realm open (every session may do everything).
    ``limits``: what each session of the realm may hold at once.
    """

    name: str
    anonymous: bool = True
    anonymous_role: str = "anonymous"
    disclose_publisher: str = "client"
    disclose_caller: str = "client"
    authenticators: tuple[Authenticator, ...] = ()
    authorization: Authorization | None = None
    limits: SessionLimits = SessionLimits()
    history: HistorySettings = field(default_factory=HistorySettings)

    def authenticator(self, method: str) -> Authenticator | None:
        """The authenticator for ``method`` in this realm, if offered."""
        for auth in self.authenticators:
            if auth.authmethod == method:
                return auth
        if method == "anonymous" and self.anonymous:
            return AnonymousAuthenticator(self.anonymous_role)
        return None
