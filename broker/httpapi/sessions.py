"""HTTP principals as internal WAMP sessions: the same core paths as any WebSocket client.

Each principal (realm, authid, role) gets one session on this node, attached to the
router like a transport's session (``Router.attach``) and joined through a real
HELLO with the ``x_http_api`` authmethod. That authenticator (added to each realm
by the server) admits only session IDs this module attached and registered a
moment before, with exactly the identity the HTTP credentials map to; a WAMP
client naming the method gets ``authentication_failed``. PUBLISH and CALL then go
through ``Router.receive``: authorization (deny by default), option handling,
cluster distribution and the meta API see an ordinary session.

Meta API: these sessions appear in ``wamp.session.list``/``get`` (transport type
``http-api``) and announce ``on_join``/``on_leave``. A session lives while
requests use it and leaves after ``IDLE_TIMEOUT`` seconds without one, so a
steady stream of requests costs one join, not one per request.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from broker.core.auth import Accept, Deny, Outcome
from broker.core.ids import Counter
from broker.core.router import Router
from broker.core.session import Session, SessionState
from protocol_spec import errors
from protocol_spec.errors import CloseCode
from protocol_spec.messages import Abort, Goodbye, Hello, Message

__all__ = ["AUTHMETHOD", "IDLE_TIMEOUT", "HttpGate", "Principal", "PrincipalSession", "Sessions"]

log = logging.getLogger(__name__)

AUTHMETHOD = "x_http_api"
"""The authmethod (and authprovider) of HTTP API and webhook sessions."""
IDLE_TIMEOUT = 60.0
"""Seconds a principal's session stays joined without a request."""

_FEATURES = {"features": {"progressive_call_results": True, "call_timeout": True}}
_ROLES: dict[str, Any] = {
    "publisher": {"features": {"publisher_exclusion": True}},
    "caller": _FEATURES,
    "subscriber": {"features": {"pattern_based_subscription": True}},
}


@dataclass(frozen=True, slots=True)
class Principal:
    """Who an HTTP request acts as: the identity its credentials map to."""

    authid: str
    role: str


class HttpGate:
    """The ``x_http_api`` authenticator: admits only sessions this module announced."""

    authmethod = AUTHMETHOD

    def __init__(self) -> None:
        self.expected: dict[int, Principal] = {}

    def hello(self, realm: str, session_id: int, details: dict[str, Any]) -> Outcome:
        """Accept a session announced by ``Sessions``; deny anyone else."""
        principal = self.expected.pop(session_id, None)
        if principal is None:
            return Deny(errors.AUTHENTICATION_FAILED, "authentication failed")
        return Accept(principal.authid, principal.role, AUTHMETHOD, AUTHMETHOD)

    def authenticate(self, state: Any, signature: str, extra: dict[str, Any]) -> Outcome:
        """Never reached: ``hello`` accepts or denies."""
        return Deny(errors.AUTHENTICATION_FAILED, "authentication failed")


Handler = Callable[[Message], None]


class PrincipalSession:
    """The ``Peer`` of one principal's session; replies go to per-request handlers."""

    transport_info: dict[str, Any] = {"type": "http-api"}

    def __init__(self, router: Router, principal: Principal) -> None:
        self.router = router
        self.principal = principal
        self.session: Session = router.attach(self)
        self.handlers: dict[int, Handler] = {}
        self.on_event: Handler | None = None  # webhooks: EVENT messages
        self.requests = Counter()
        self.joined = False
        self.closed = False
        self.last_used = 0.0
        self.refusal = ""

    def join(self, gate: HttpGate, realm: str) -> bool:
        """HELLO through the gate; True once WELCOME came (synchronously)."""
        gate.expected[self.session.id] = self.principal
        try:
            self.router.receive(
                self.session,
                Hello(realm, {"roles": _ROLES, "authmethods": [AUTHMETHOD]}),
            )
        finally:
            gate.expected.pop(self.session.id, None)
        self.joined = self.session.state == SessionState.ESTABLISHED
        return self.joined

    def send(self, message: Message, cache: Any = None) -> None:
        """Route a reply to the handler of its request (or an EVENT to ``on_event``)."""
        request = getattr(message, "request", None)
        if isinstance(request, int) and request in self.handlers:
            self.handlers[request](message)
            return
        if isinstance(message, Abort):
            self.refusal = message.reason
        elif isinstance(message, Goodbye):
            self.closed = True  # killed through the meta API, or router shutdown
            self._fail_all()
            asyncio.get_running_loop().call_soon(self._answer_goodbye)
        elif self.on_event is not None:
            self.on_event(message)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        """The router ended the session: fail what waits, detach."""
        if self.closed and self.session.id not in self.router.sessions:
            return
        self.closed = True
        self._fail_all()
        self.router.detach(self.session)

    def _answer_goodbye(self) -> None:
        if self.session.state == SessionState.CLOSING:
            self.router.receive(self.session, Goodbye({}, errors.CLOSE_GOODBYE_AND_OUT))

    def leave(self) -> None:
        """GOODBYE and detach (idle or server close)."""
        if not self.closed and self.session.state == SessionState.ESTABLISHED:
            self.router.receive(self.session, Goodbye({}, errors.CLOSE_CLOSE_REALM))
        self.close()

    def _fail_all(self) -> None:
        handlers, self.handlers = self.handlers, {}
        gone = Abort({"message": "session closed"}, errors.CLOSE_SYSTEM_SHUTDOWN)
        for handler in handlers.values():
            handler(gone)


class Sessions:
    """One joined session per principal on this node; idle ones leave."""

    def __init__(self, router: Router, realm: str, gate: HttpGate) -> None:
        self.router = router
        self.realm = realm
        self.gate = gate
        self.by_principal: dict[Principal, PrincipalSession] = {}
        self._sweeper: asyncio.TimerHandle | None = None

    def get(self, principal: Principal) -> PrincipalSession | None:
        """The joined session of ``principal`` (joined now if needed); None if refused."""
        loop = asyncio.get_running_loop()
        current = self.by_principal.get(principal)
        if current is None or current.closed:
            current = PrincipalSession(self.router, principal)
            if not current.join(self.gate, self.realm):
                log.warning("HTTP principal %s refused: %s", principal.authid, current.refusal)
                current.close()
                return None
            self.by_principal[principal] = current
            if self._sweeper is None:
                self._sweeper = loop.call_later(IDLE_TIMEOUT / 2, self._sweep)
        current.last_used = loop.time()
        return current

    def _sweep(self) -> None:
        loop = asyncio.get_running_loop()
        for principal, held in list(self.by_principal.items()):
            if held.closed or (not held.handlers and loop.time() - held.last_used > IDLE_TIMEOUT):
                del self.by_principal[principal]
                held.leave()
        self._sweeper = (
            loop.call_later(IDLE_TIMEOUT / 2, self._sweep) if self.by_principal else None
        )

    def close(self) -> None:
        """Every session leaves (server shutdown)."""
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        for held in self.by_principal.values():
            held.leave()
        self.by_principal.clear()
