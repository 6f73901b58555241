"""The router's authentication flow: HELLO, CHALLENGE/AUTHENTICATE, consults, derivations.

A mixin of ``Router`` (router.py), split out to keep each module readable. The
flow: HELLO picks the first of the client's ``authmethods`` the realm offers and
applies the authenticator's ``Outcome``; AUTHENTICATE first asks the router's
``AuthGuard`` whether the peer's address and the claimed authid may be checked now
(throttling, see auth_guard.py). ``Derive`` work runs on the ``Offload`` pool and
``Consult`` calls a dynamic authenticator; meanwhile the session's messages are
held (bounded by ``MAX_BACKLOG``) and replayed after the decision. Every failure
is the same ABORT, whether checked, throttled or refused for overload.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from protocol_spec import errors
from protocol_spec.errors import CloseCode
from protocol_spec.messages import Authenticate, Call, Challenge, Error, Hello, Message, Result
from protocol_spec.uri import is_valid_uri

from .auth import Accept, AskChallenge, Authenticator, Consult, Deny, Derive, Outcome, Reply
from .realm import Realm
from .session import Session, SessionState

if TYPE_CHECKING:
    from .auth import Offload
    from .auth_guard import AuthGuard
    from .ids import Counter
    from .interfaces import Scheduler

__all__ = ["AuthFlow"]

log = logging.getLogger(__name__)

_ROLES = frozenset({"caller", "callee", "publisher", "subscriber"})


class ConsultPeer:
    """The ``Peer`` of the router's internal caller: hands RESULT/ERROR to callbacks."""

    transport_info: dict[str, Any] = {"type": "internal"}

    def __init__(self) -> None:
        self.waiting: dict[int, Callable[[Reply], None]] = {}

    def send(self, message: Message, cache: Any = None) -> None:
        if isinstance(message, Result):
            reply = Reply(True, list(message.args or ()), dict(message.kwargs or {}))
        elif isinstance(message, Error):
            args, kwargs = list(message.args or ()), dict(message.kwargs or {})
            reply = Reply(False, args, kwargs, message.error)
        else:
            return
        callback = self.waiting.pop(message.request, None)
        if callback is not None:
            callback(reply)

    def close(self, code: int = CloseCode.NORMAL, reason: str = "") -> None:
        return


class AuthFlow:
    """Authentication methods of ``Router`` (``self`` is always a ``Router``)."""

    if TYPE_CHECKING:  # provided by Router
        realms: dict[str, Realm]
        sessions: dict[int, Session]
        scheduler: Scheduler
        offload: Offload
        guard: AuthGuard
        _backlog: dict[int, list[Any]]
        _consult_peer: ConsultPeer
        _consult_session: Session
        _consult_ids: Counter

        def receive(self, session: Session, message: Any) -> None: ...
        def protocol_violation(self, session: Session, reason: str) -> None: ...
        def _abort(self, session: Session, reason: str, message: str) -> None: ...
        def _welcome(self, session: Session, realm: Realm, accept: Accept) -> None: ...

    def _on_hello(self, session: Session, msg: Hello) -> None:
        realm = self.realms.get(msg.realm) if is_valid_uri(msg.realm) else None
        if realm is None:
            self._abort(session, errors.NO_SUCH_REALM, f"no realm named {msg.realm!r}")
            return
        roles = msg.details.get("roles")
        if not isinstance(roles, dict) or not roles or not set(roles) <= _ROLES:
            self.protocol_violation(session, "HELLO.Details.roles must name the client's roles")
            return
        methods = msg.details.get("authmethods", ["anonymous"])
        if not isinstance(methods, list) or not all(isinstance(m, str) for m in methods):
            self.protocol_violation(session, "HELLO.Details.authmethods must be a list of strings")
            return
        session.client_roles = roles
        session.hello_details = msg.details
        session.requested_realm = realm.name
        for method in methods or ["anonymous"]:
            authenticator = realm.settings.authenticator(method)
            if authenticator is not None:
                session.pending_auth = (authenticator, None)
                self._apply(
                    session, realm, authenticator.hello(realm.name, session.id, msg.details)
                )
                return
        self._abort(session, errors.NO_AUTH_METHOD, "no acceptable authentication method")

    def _on_authenticate(self, session: Session, msg: Authenticate) -> None:
        """Check AUTHENTICATE, unless the guard throttles the peer's address or the authid.

        A throttled attempt waits for its slot (messages held) or is refused unchecked,
        after a delay, with the same ABORT as a failed check.
        """
        realm = self.realms.get(session.requested_realm)
        authenticator, state = session.pending_auth
        if realm is None:
            self._abort(session, errors.NO_SUCH_REALM, "the realm went away")
            return
        address, authid = _peer_address(session), _claimed_authid(session)
        admission = self.guard.admit(address, realm.name, authid)

        def check() -> None:
            self._apply(session, realm, authenticator.authenticate(state, msg.signature, msg.extra))

        if not admission.allowed:
            self.guard.refused(realm.name, authenticator.authmethod)
            self._later(session, admission.wait, lambda: self._abort(session, *_FAILED))
        elif admission.wait > 0.0:
            self._later(session, admission.wait, check)
        else:
            check()

    def _hold(self, session: Session) -> Callable[[Callable[[], None]], None]:
        """Hold ``session``'s messages; the returned ``release(step)`` runs step, replays them.

        ``release`` does nothing when the session went away or was aborted meanwhile.
        """
        self._backlog[session.id] = []

        def release(step: Callable[[], None]) -> None:
            backlog = self._backlog.pop(session.id, None)
            if backlog is None or not self._current(session):
                return  # gone, or aborted meanwhile (HELLO timeout): nothing to answer
            step()
            for message in backlog:
                if session.state is SessionState.CLOSED:
                    break  # while CLOSING the table still answers a held GOODBYE
                self.receive(session, message)

        return release

    def _current(self, session: Session) -> bool:
        """True while ``session`` is attached and not aborted or closed."""
        return self.sessions.get(session.id) is session and session.state < SessionState.CLOSING

    def _later(self, session: Session, delay: float, step: Callable[[], None]) -> None:
        """Run ``step`` for ``session`` after ``delay`` seconds, holding its messages."""
        release = self._hold(session)
        self.scheduler.call_later(delay, lambda: release(step))

    def _denied(self, session: Session, realm: Realm, deny: Deny) -> None:
        """Count a failed check; ABORT, held back while the address or authid is throttled."""
        method = session.pending_auth[0].authmethod if session.pending_auth else ""
        hold = self.guard.failed(
            _peer_address(session), realm.name, _claimed_authid(session), method
        )
        if hold > 0.0:
            self._later(session, hold, lambda: self._abort(session, deny.reason, deny.message))
        else:
            self._abort(session, deny.reason, deny.message)

    def _derive(self, session: Session, realm: Realm, derive: Derive) -> None:
        """Run a derivation on the offload pool; ABORT at once when the pool is full."""
        release = self._hold(session)

        def done(value: Any) -> None:
            def step() -> None:
                outcome: Outcome = Deny()
                if isinstance(value, BaseException):
                    log.error("internal error in a key derivation", exc_info=value)
                else:
                    try:
                        outcome = derive.resume(value)
                    except Exception:
                        log.exception("internal error in an authenticator's derivation handler")
                self._apply(session, realm, outcome)

            release(step)

        if not self.offload.submit(derive.work, done):
            self._backlog.pop(session.id, None)
            method = session.pending_auth[0].authmethod if session.pending_auth else ""
            self.guard.overload(realm.name, method)
            self._abort(session, *_FAILED)

    def _apply(self, session: Session, realm: Realm, outcome: Outcome) -> None:
        if isinstance(outcome, Accept):
            self._welcome(session, realm, outcome)
        elif isinstance(outcome, AskChallenge):
            authenticator: Authenticator = session.pending_auth[0]
            session.pending_auth = (authenticator, outcome.state)
            session.state = SessionState.CHALLENGED
            session.peer.send(Challenge(outcome.authmethod, outcome.extra))
        elif isinstance(outcome, Deny):
            self._denied(session, realm, outcome)
        elif isinstance(outcome, Derive):
            self._derive(session, realm, outcome)
        elif isinstance(outcome, Consult):
            self._consult(session, realm, outcome)

    def _consult(self, session: Session, realm: Realm, consult: Consult) -> None:
        """Call a dynamic authenticator; hold the session's messages until it answers."""
        target = self.realms.get(consult.realm or realm.name)
        if target is None:
            self._abort(session, *_FAILED)
            return
        if not self.guard.begin_consult():  # bounded: a flood cannot queue unbounded calls
            method = session.pending_auth[0].authmethod if session.pending_auth else ""
            self.guard.overload(realm.name, method)
            self._abort(session, *_FAILED)
            return
        release = self._hold(session)
        request = self._consult_ids.next()

        def done(reply: Reply) -> None:
            self.guard.end_consult()

            def step() -> None:
                try:
                    outcome = consult.resume(reply)
                except Exception:
                    log.exception("internal error in a dynamic authenticator's reply handler")
                    outcome = Deny()
                self._apply(session, realm, outcome)

            release(step)

        self._consult_peer.waiting[request] = done
        options = {"timeout": max(1, int(consult.timeout * 1000))}
        call = Call(request, options, consult.procedure, consult.args, consult.kwargs)
        target.dealer.call(self._consult_session, call)


_FAILED = (errors.AUTHENTICATION_FAILED, "authentication failed")


def _peer_address(session: Session) -> str:
    """The peer's host from ``transport_info["peer"]`` (``tcp4:HOST:PORT``); "" if none."""
    peer = session.peer.transport_info.get("peer")
    if not isinstance(peer, str) or not peer.startswith("tcp"):
        return ""
    return peer.partition(":")[2].rpartition(":")[0]


def _claimed_authid(session: Session) -> str:
    """The authid the client named in HELLO ("" if none)."""
    authid = session.hello_details.get("authid")
    return authid if isinstance(authid, str) else ""
