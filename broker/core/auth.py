"""Authentication outcomes and the authenticator interface the router calls.

An authenticator handles one ``authmethod``. On HELLO it accepts, denies, or asks
a CHALLENGE (keeping per-session state); on AUTHENTICATE it accepts or denies.
The router tries the client's ``authmethods`` in the client's order and uses the
first one the realm offers. Implementations live in broker/auth/ (security issue);
the core ships the anonymous one.

Either step may also answer ``Consult``: the router then calls a WAMP procedure
(a dynamic authenticator registered by a trusted session) and feeds the reply to
``Consult.resume``, which returns the next outcome. Nothing else from the session
is processed meanwhile.

``Derive`` is the same for CPU-bound work (PBKDF2 of a ticket, ~50 ms): the router
hands ``work`` to its ``Offload`` port (a bounded thread pool in the server; run
inline in sans-I/O tests) and feeds the result to ``resume`` back on the loop. A full
pool fails the attempt at once with the usual ABORT.

``AuthGuard`` (auth_guard.py) throttles failed attempts per peer address and per authid.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from protocol_spec import errors

from .ids import random_id

__all__ = [
    "Accept",
    "AnonymousAuthenticator",
    "AskChallenge",
    "Authenticator",
    "Consult",
    "Deny",
    "Derive",
    "InlineOffload",
    "Offload",
    "Outcome",
    "Reply",
]


@dataclass(frozen=True, slots=True)
class Accept:
    """Authentication succeeded: the identity the session gets (sent in WELCOME)."""

    authid: str
    authrole: str
    authmethod: str
    authprovider: str = "static"
    authextra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AskChallenge:
    """Send CHALLENGE(method, extra); ``state`` comes back to ``authenticate``."""

    authmethod: str
    extra: dict[str, Any]
    state: Any


@dataclass(frozen=True, slots=True)
class Deny:
    """Authentication failed: ABORT with ``reason``; ``message`` must leak nothing."""

    reason: str = errors.AUTHENTICATION_FAILED
    message: str = "authentication failed"


@dataclass(frozen=True, slots=True)
class Reply:
    """What a consulted procedure answered: RESULT (``ok``) or ERROR (``error`` URI)."""

    ok: bool
    args: list[Any]
    kwargs: dict[str, Any]
    error: str = ""


@dataclass(frozen=True, slots=True)
class Consult:
    """Call ``procedure`` in ``realm`` (this realm when empty); ``resume`` maps the reply.

    ``timeout`` is in seconds; a timeout, a missing procedure or an ERROR all reach
    ``resume`` as a ``Reply`` with ``ok=False``.
    """

    procedure: str
    args: list[Any]
    kwargs: dict[str, Any]
    resume: Callable[[Reply], Outcome]
    realm: str = ""
    timeout: float = 10.0


@dataclass(frozen=True, slots=True)
class Derive:
    """Run ``work`` off the event loop (it must be thread-safe); ``resume`` maps its result.

    ``work`` should hold no router state: it runs in a worker thread. If it raises,
    the attempt is denied.
    """

    work: Callable[[], Any]
    resume: Callable[[Any], Outcome]


Outcome = Accept | AskChallenge | Deny | Consult | Derive


class Offload(Protocol):
    """Runs CPU-bound authentication work away from the router's thread, bounded."""

    def submit(self, work: Callable[[], Any], done: Callable[[Any], None]) -> bool:
        """Start ``work``; later call ``done`` on the router's thread with its result.

        ``done`` gets the exception instead when ``work`` raised. Returns False
        (and never calls ``done``) when too much work is already waiting.
        """
        ...


class InlineOffload:
    """An ``Offload`` that runs the work at once, on the caller's thread (sans-I/O tests)."""

    def submit(self, work: Callable[[], Any], done: Callable[[Any], None]) -> bool:
        """Run ``work`` now and hand its result (or exception) to ``done``."""
        try:
            result = work()
        except Exception as exc:  # handed to done, which denies
            result = exc
        done(result)
        return True


class Authenticator(Protocol):
    """Handles one authmethod for a realm."""

    @property
    def authmethod(self) -> str:
        """The method name clients put in HELLO.Details.authmethods."""
        ...

    def hello(self, realm: str, session_id: int, details: dict[str, Any]) -> Outcome:
        """React to HELLO."""
        ...

    def authenticate(self, state: Any, signature: str, extra: dict[str, Any]) -> Outcome:
        """Check AUTHENTICATE against the state kept from ``hello``."""
        ...


class AnonymousAuthenticator:
    """Lets anyone in with a random authid and a configured role."""

    authmethod = "anonymous"

    def __init__(self, role: str = "anonymous") -> None:
        self.role = role

    def hello(self, realm: str, session_id: int, details: dict[str, Any]) -> Outcome:
        authid = details.get("authid")
        if not isinstance(authid, str) or not authid:
            authid = f"anonymous-{random_id():x}"
        return Accept(authid=authid, authrole=self.role, authmethod="anonymous")

    def authenticate(self, state: Any, signature: str, extra: dict[str, Any]) -> Outcome:
        return Deny(errors.AUTHENTICATION_FAILED, "anonymous takes no AUTHENTICATE")
