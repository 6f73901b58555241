"""A WAMP session as the router sees it: identity, state, and what it owns.

State machine (the router's dispatch table in ``router.py`` follows it)::

    CONNECTED --HELLO--> (auth) --WELCOME--> ESTABLISHED --GOODBYE--> CLOSED
        |                  |  \\--CHALLENGE--> CHALLENGED --AUTHENTICATE--> ESTABLISHED
        |                  \\--ABORT--> CLOSED
        \\-- anything else: ABORT protocol_violation --> CLOSED
    ESTABLISHED --router GOODBYE--> CLOSING --peer GOODBYE--> CLOSED
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum
from typing import TYPE_CHECKING, Any

from protocol_spec.messages import Error

from .ids import Counter
from .interfaces import Peer

if TYPE_CHECKING:
    from .interfaces import TimerHandle
    from .realm import Realm

__all__ = ["PendingCall", "Session", "SessionState", "Testament", "fail"]


class SessionState(IntEnum):
    """Where a session is in its life."""

    CONNECTED = 0
    CHALLENGED = 1
    ESTABLISHED = 2
    CLOSING = 3
    CLOSED = 4


@dataclass(slots=True)
class Testament:
    """An event to publish when the session ends without GOODBYE (testament_meta_api)."""

    topic: str
    args: list[Any] | None
    kwargs: dict[str, Any] | None
    options: dict[str, Any]
    scope: str  # "destroyed" or "detached"


class Session:
    """One client session; owned by the router, mutated only by the core."""

    __slots__ = (
        "_invocation_ids",
        "authextra",
        "authid",
        "authmethod",
        "authprovider",
        "authrole",
        "calls",
        "client_roles",
        "hello_details",
        "id",
        "invocations",
        "peer",
        "pending_auth",
        "realm",
        "registrations",
        "requested_realm",
        "state",
        "subscriptions",
        "testaments",
    )

    def __init__(self, session_id: int, peer: Peer) -> None:
        self.id = session_id
        self.peer = peer
        self.state = SessionState.CONNECTED
        self.realm: Realm | None = None
        self.requested_realm = ""
        self.authid = ""
        self.authrole = ""
        self.authmethod = ""
        self.authprovider = ""
        self.authextra: dict[str, Any] = {}
        self.client_roles: dict[str, Any] = {}
        self.hello_details: dict[str, Any] = {}
        self.pending_auth: Any = None
        self.subscriptions: set[int] = set()
        self.registrations: set[int] = set()
        # calls this session made, by CALL request id
        self.calls: dict[int, PendingCall] = {}
        # invocations this session is serving as callee, by INVOCATION request id
        self.invocations: dict[int, PendingCall] = {}
        self.testaments: list[Testament] = []
        self._invocation_ids = Counter()

    def next_invocation_id(self) -> int:
        """The next INVOCATION request ID for this callee (sequential from 1)."""
        return self._invocation_ids.next()

    def supports(self, role: str, feature: str) -> bool:
        """Tell whether the client announced ``feature`` for ``role`` in HELLO."""
        role_info = self.client_roles.get(role)
        if not isinstance(role_info, dict):
            return False
        features = role_info.get("features")
        return isinstance(features, dict) and features.get(feature) is True

    def info(self) -> dict[str, Any]:
        """The session's description for the meta API (wamp.session.get, on_join)."""
        return {
            "session": self.id,
            "authid": self.authid,
            "authrole": self.authrole,
            "authmethod": self.authmethod,
            "authprovider": self.authprovider,
            "authextra": self.authextra,
            "transport": self.peer.transport_info,
        }

    def __repr__(self) -> str:
        return f"<Session {self.id} {self.state.name} authid={self.authid!r}>"


class PendingCall:
    """A call in flight between a caller and a callee.

    Indexed twice: by the caller's CALL request ID in ``caller.calls`` and by the
    callee's INVOCATION request ID in ``callee.invocations``.
    """

    __slots__ = (
        "call_request",
        "callee",
        "caller",
        "canceled",
        "invocation_request",
        "receive_progress",
        "timer",
    )

    def __init__(
        self,
        caller: Session,
        call_request: int,
        callee: Session,
        invocation_request: int,
        receive_progress: bool,
    ) -> None:
        self.caller = caller
        self.call_request = call_request
        self.callee = callee
        self.invocation_request = invocation_request
        self.receive_progress = receive_progress
        self.timer: TimerHandle | None = None
        self.canceled = False  # the caller was already answered (skip / kill sent)


def fail(session: Session, request_type: int, request: int, uri: str, text: str) -> None:
    """Answer ``session``'s request with ERROR ``uri`` and one human-readable argument."""
    session.peer.send(Error(request_type, request, {}, uri, [text]))
