"""The router: the one place where every incoming message is dispatched.

Adapters call four methods: ``attach`` when a transport opens, ``receive`` for each
decoded message, ``protocol_violation`` when a frame cannot be decoded, and
``detach`` when the transport is gone. Dispatch is a table keyed by session state
and message type (``_TABLE``); a message with no entry for the current state is a
protocol violation (ABORT ``wamp.error.protocol_violation``, transport closed),
except while closing, when stray messages are ignored as the spec asks.

Security lives here too: every PUBLISH, SUBSCRIBE, CALL and REGISTER is checked
against the realm's authorization (``Realm.guard``, built from
``RealmSettings.authorization``; none means the realm is open) and the per-session
``SessionLimits`` (``RealmSettings.limits``) before the broker or dealer sees it. An
authenticator answering ``Consult`` makes the router call a procedure through the
dealer as an internal caller; the session's later messages wait (bounded) until it
is decided.
A role's dynamic authorizer is called the same way when no rule of the role
decides an action (``Router.consult_authorizer``): the request and everything the
session sends after it wait for the answer, then run in order.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import replace
from typing import Any

from protocol_spec import errors
from protocol_spec.errors import LIMIT_EXCEEDED, CloseCode
from protocol_spec.messages import (
    Abort,
    Call,
    Error,
    Goodbye,
    MessageType,
    Publish,
    Register,
    Subscribe,
    Welcome,
)

from .auth import (
    Accept,
    InlineOffload,
    Offload,
    Reply,
)
from .auth_flow import AuthFlow, ConsultPeer
from .auth_guard import AuthGuard
from .authorization import (
    ALLOW_ALL,
    Decision,
    DynamicKey,
    Guard,
    parse_authorizer_reply,
)
from .dealer import Dealer
from .features import welcome_roles
from .ids import Counter, random_id
from .interfaces import Peer, Scheduler
from .meta import install_meta_api
from .pubsub import Broker, DeliveryFilter, Publication
from .realm import Realm
from .session import Session, SessionState, fail
from .settings import RealmSettings, SessionLimits

__all__ = [
    "GOODBYE_TIMEOUT",
    "Router",
    "SessionLimits",
]

log = logging.getLogger(__name__)

GOODBYE_TIMEOUT = 5.0
"""Seconds a peer gets to answer the router's GOODBYE before its transport is closed."""

MAX_BACKLOG = 1000
"""Messages a session may send while its authentication (or an authorizer) is deciding."""

Handler = Callable[["Router", Session, Any], None]


class Router(AuthFlow):
    """Realms, the sessions attached to them, and the message dispatch."""

    def __init__(
        self,
        realms: Iterable[RealmSettings],
        scheduler: Scheduler,
        *,
        offload: Offload | None = None,
        guard: AuthGuard | None = None,
    ) -> None:
        self.scheduler = scheduler
        self.offload: Offload = offload if offload is not None else InlineOffload()
        self.guard = guard if guard is not None else AuthGuard()
        self.realms: dict[str, Realm] = {}
        self.sessions: dict[int, Session] = {}
        # sessions whose authentication waits for a consulted procedure → held messages
        self._backlog: dict[int, list[Any]] = {}
        self._consult_peer = ConsultPeer()
        self._consult_session = Session(random_id(), self._consult_peer)
        self._consult_session.authid = "router"
        self._consult_session.authrole = "router"
        self._consult_ids = Counter()
        # an authorizer's answer for the message being replayed, by session ID (one-shot)
        self._granted: dict[int, Decision] = {}
        for settings in realms:
            self.add_realm(settings)

    def add_realm(self, settings: RealmSettings) -> Realm:
        """Create a realm (with its meta API) from settings."""
        realm = Realm(settings, self.scheduler)
        install_meta_api(realm, self.kill)
        self.realms[settings.name] = realm
        return realm

    # --- adapter entry points -----------------------------------------------------------
    def attach(self, peer: Peer) -> Session:
        """A transport opened: create its session, waiting for HELLO."""
        session = Session(random_id(), peer)
        while session.id in self.sessions:  # practically never
            session.id = random_id()
        self.sessions[session.id] = session
        return session

    def receive(self, session: Session, message: Any) -> None:
        """Dispatch one decoded message from ``session``'s peer."""
        backlog = self._backlog.get(session.id)
        if backlog is not None:
            if len(backlog) >= MAX_BACKLOG:
                self.protocol_violation(
                    session, "too many messages while authentication or authorization was pending"
                )
            else:
                backlog.append(message)
            return
        handler = _TABLE[session.state].get(message.TYPE)
        if handler is not None:
            handler(self, session, message)
        elif session.state < SessionState.CLOSING:
            name = MessageType(message.TYPE).name
            self.protocol_violation(
                session, f"{name} is not allowed in session state {session.state.name}"
            )

    def protocol_violation(self, session: Session, reason: str) -> None:
        """ABORT the session with protocol_violation and close its transport."""
        self.abort(
            session,
            errors.PROTOCOL_VIOLATION,
            reason,
            CloseCode.PROTOCOL_ERROR,
            "protocol violation",
        )

    def detach(self, session: Session) -> None:
        """The transport is gone: end the session (testaments fire if no GOODBYE)."""
        self._end(session, publish_testaments=True)
        self.sessions.pop(session.id, None)
        self._backlog.pop(session.id, None)

    def abort(
        self,
        session: Session,
        reason: str,
        message: str,
        code: int = CloseCode.POLICY_VIOLATION,
        close_reason: str | None = None,
    ) -> None:
        """End a session for the transport (rate limit, HELLO timeout): ABORT, then close.

        The session's testaments are published. ``close_reason`` is the WebSocket close
        reason (default: ``message``). A session already closing is just closed.
        """
        close_reason = message if close_reason is None else close_reason
        if session.state >= SessionState.CLOSING:
            session.peer.close(code, close_reason)
            return
        self._abort_and_close(session, reason, message, code, close_reason, testaments=True)

    def shutdown(self, reason: str = errors.CLOSE_SYSTEM_SHUTDOWN) -> list[Session]:
        """Send GOODBYE to every joined session; return the sessions told to go."""
        told = []
        for session in list(self.sessions.values()):
            if session.state == SessionState.ESTABLISHED:
                self._goodbye(session, reason, "the router is shutting down")
                told.append(session)
            elif session.state < SessionState.CLOSING:
                message = "router shutting down"
                code = CloseCode.GOING_AWAY
                self._abort_and_close(session, reason, message, code, "going away")
        return told

    def kill(self, session: Session, reason: str, message: str | None) -> None:
        """End a joined session from the router side (meta API kill)."""
        if session.state == SessionState.ESTABLISHED:
            self._goodbye(session, reason, message)

    # --- session life -----------------------------------------------------------------------
    def _goodbye(self, session: Session, reason: str, message: str | None) -> None:
        details = {"message": message} if message else {}
        session.peer.send(Goodbye(details, reason))
        self._end(session, publish_testaments=False)
        session.state = SessionState.CLOSING
        peer = session.peer
        self.scheduler.call_later(
            GOODBYE_TIMEOUT, lambda: peer.close(CloseCode.NORMAL, "goodbye timeout")
        )

    def _end(self, session: Session, *, publish_testaments: bool) -> None:
        """Leave the realm (once), optionally publishing the session's testaments."""
        realm = session.realm
        was_joined = session.state == SessionState.ESTABLISHED
        session.state = SessionState.CLOSED
        if realm is None or not was_joined:
            return
        if publish_testaments and session.testaments:
            _publish_testaments(realm.broker, session)
        realm.leave(session)

    def consult_authorizer(
        self,
        session: Session,
        auth: Guard,
        action: str,
        uri: str,
        msg: Publish | Subscribe | Register | Call,
    ) -> Decision | None:
        """Decide an action no rule decides, for a role with an authorizer.

        Returns the answer being replayed or a cached one; otherwise calls the
        authorizer ``(session details, uri, action, options)``, holds the session's
        later messages (bounded, like authentication) and returns None: ``msg`` is
        dispatched again with the answer, then the held messages in order.
        """
        granted = self._granted.pop(session.id, None)
        if granted is not None:
            return granted
        realm = session.realm
        role = auth.authorizer_of(session.authrole)
        assert realm is not None and role is not None  # ESTABLISHED, decide() said consult
        options = dict(msg.options)
        match = "exact"
        if action in ("subscribe", "register"):
            match = options.get("match", "exact")
            match = match if type(match) is str else "exact"  # the role answers bad ones
            options["match"] = match
        key: DynamicKey = (session.authrole, session.authid, action, uri, match)
        cached = auth.cached(key)
        if cached is not None:
            return cached
        self._backlog[session.id] = []
        request = self._consult_ids.next()

        def done(reply: Reply) -> None:
            backlog = self._backlog.pop(session.id, None)
            if backlog is None or self.sessions.get(session.id) is not session:
                return  # the session went away meanwhile
            decision, cacheable = parse_authorizer_reply(reply, role.authorizer)
            if cacheable and role.authorizer_cache > 0:
                auth.remember(key, decision)
                self.scheduler.call_later(role.authorizer_cache, lambda: auth.forget(key, decision))
            if session.state == SessionState.ESTABLISHED:
                self._granted[session.id] = decision
                try:
                    _ESTABLISHED[msg.TYPE](self, session, msg)
                finally:
                    self._granted.pop(session.id, None)
            for message in backlog:
                if self.sessions.get(session.id) is not session:
                    break
                self.receive(session, message)

        self._consult_peer.waiting[request] = done
        timeout = max(1, int(role.authorizer_timeout * 1000))
        details = {**session.info(), "realm": realm.name}
        call = Call(request, {"timeout": timeout}, role.authorizer, [details, uri, action, options])
        realm.dealer.call(self._consult_session, call)
        return None

    def _welcome(self, session: Session, realm: Realm, accept: Accept) -> None:
        session.pending_auth = None
        session.authid = accept.authid
        session.authrole = accept.authrole
        session.authmethod = accept.authmethod
        session.authprovider = accept.authprovider
        session.authextra = accept.authextra
        session.state = SessionState.ESTABLISHED
        details = {
            "roles": welcome_roles(),
            "realm": realm.name,
            "authid": accept.authid,
            "authrole": accept.authrole,
            "authmethod": accept.authmethod,
            "authprovider": accept.authprovider,
            "authextra": accept.authextra,
        }
        session.peer.send(Welcome(session.id, details))
        realm.join(session)

    def _abort(self, session: Session, reason: str, message: str) -> None:
        self._abort_and_close(session, reason, message, CloseCode.NORMAL, "aborted")

    def _abort_and_close(
        self,
        session: Session,
        reason: str,
        message: str,
        code: int,
        close_reason: str,
        *,
        testaments: bool = False,
    ) -> None:
        """Send ABORT ``reason``, end the session, close the transport with ``code``."""
        session.peer.send(Abort({"message": message}, reason))
        self._end(session, publish_testaments=testaments)
        session.peer.close(code, close_reason)

    def _on_goodbye(self, session: Session, msg: Goodbye) -> None:
        if session.state == SessionState.ESTABLISHED:
            session.peer.send(Goodbye({}, errors.CLOSE_GOODBYE_AND_OUT))
            self._end(session, publish_testaments=False)
        session.state = SessionState.CLOSED
        session.peer.close(CloseCode.NORMAL, "goodbye")

    def _on_client_abort(self, session: Session, msg: Abort) -> None:
        self._end(session, publish_testaments=True)
        session.peer.close(CloseCode.NORMAL, "aborted by peer")

    def _on_error(self, session: Session, msg: Error) -> None:
        if msg.request_type != MessageType.INVOCATION:
            self.protocol_violation(session, "a client may send ERROR only for INVOCATION")
            return
        _dealer(session).invocation_error(session, msg)


# --- authorization and limits (checked before the broker / dealer see a request) --------
def _joined(session: Session) -> Realm:
    """The realm of an ESTABLISHED session."""
    realm = session.realm
    assert realm is not None  # invariant: ESTABLISHED sessions have a realm
    return realm


def _limits(session: Session) -> SessionLimits:
    return _joined(session).settings.limits


def _authorization(session: Session) -> Guard | None:
    return _joined(session).guard


def _broker(session: Session) -> Broker:
    return _joined(session).broker


def _dealer(session: Session) -> Dealer:
    return _joined(session).dealer


def _within_limit(session: Session, msg: Any, held: int, limit: int, what: str) -> bool:
    """Tell whether ``session`` may hold one more; else answer ``msg`` with LIMIT_EXCEEDED."""
    if held < limit:
        return True
    text = f"too many {what} for this session (limit {limit})"
    fail(session, msg.TYPE, msg.request, LIMIT_EXCEEDED, text)
    return False


def _authorize(
    router: Router, session: Session, action: str, uri: str, msg: Any, request_type: int
) -> Decision | None:
    """The authorization decision for one action, or None when the message is handled.

    None means: denied (ERROR sent, except for an unacknowledged PUBLISH, which has
    no reply and is just dropped) or waiting for the dynamic authorizer (the message
    is replayed when it answers). Realms without roles allow everything.
    """
    auth = _authorization(session)
    if auth is None:
        return ALLOW_ALL
    decision = auth.decide(session.authrole, action, uri)
    if decision.consult:
        found = router.consult_authorizer(session, auth, action, uri, msg)
        if found is None:
            return None
        decision = found
    if not decision.allowed:
        if request_type != MessageType.PUBLISH or msg.options.get("acknowledge") is True:
            text = f"session is not authorized to {_DENIED_VERBS[action]} {uri!r}"
            fail(session, request_type, msg.request, errors.NOT_AUTHORIZED, text)
        return None
    return decision


_DENIED_VERBS = {
    "publish": "publish to",
    "subscribe": "subscribe to",
    "register": "register",
    "call": "call",
}


def _disclosing(msg: Any, decision: Decision) -> Any:
    """``msg`` with ``disclose_me`` forced on when the role's rule says to disclose."""
    if decision.disclose and msg.options.get("disclose_me") is not True:
        return replace(msg, options={**msg.options, "disclose_me": True})
    return msg


def _publish(router: Router, session: Session, msg: Publish) -> None:
    decision = _authorize(router, session, "publish", msg.topic, msg, MessageType.PUBLISH)
    if decision is not None:
        _broker(session).publish(session, _disclosing(msg, decision))


def _subscribe(router: Router, session: Session, msg: Subscribe) -> None:
    if _authorize(router, session, "subscribe", msg.topic, msg, MessageType.SUBSCRIBE) is None:
        return
    held, limit = len(session.subscriptions), _limits(session).max_subscriptions
    if _within_limit(session, msg, held, limit, "subscriptions"):
        _broker(session).subscribe(session, msg)


def _register(router: Router, session: Session, msg: Register) -> None:
    if _authorize(router, session, "register", msg.procedure, msg, MessageType.REGISTER) is None:
        return
    held, limit = len(session.registrations), _limits(session).max_registrations
    if _within_limit(session, msg, held, limit, "registrations"):
        _dealer(session).register(session, msg)


def _call(router: Router, session: Session, msg: Call) -> None:
    decision = _authorize(router, session, "call", msg.procedure, msg, MessageType.CALL)
    if decision is None:
        return
    msg = _disclosing(msg, decision)
    held, limit = len(session.calls), _limits(session).max_pending_calls
    if _within_limit(session, msg, held, limit, "pending calls"):
        _dealer(session).call(session, msg)


def _publish_testaments(broker: Broker, session: Session) -> None:
    # spec: without session resumption, detached-scope testaments go before destroyed ones
    ordered = sorted(session.testaments, key=lambda t: t.scope != "detached")
    for testament in ordered:
        # validated by wamp.session.add_testament
        delivery_filter = DeliveryFilter.from_options(testament.options)
        broker.deliver(
            Publication(
                testament.topic, random_id(), {}, testament.args, testament.kwargs, delivery_filter
            )
        )
    session.testaments.clear()


_ESTABLISHED: dict[int, Handler] = {
    MessageType.PUBLISH: _publish,
    MessageType.SUBSCRIBE: _subscribe,
    MessageType.UNSUBSCRIBE: lambda r, s, m: _broker(s).unsubscribe(s, m),
    MessageType.CALL: _call,
    MessageType.CANCEL: lambda r, s, m: _dealer(s).cancel(s, m),
    MessageType.REGISTER: _register,
    MessageType.UNREGISTER: lambda r, s, m: _dealer(s).unregister(s, m),
    MessageType.YIELD: lambda r, s, m: _dealer(s).yield_(s, m),
    MessageType.ERROR: Router._on_error,
    MessageType.GOODBYE: Router._on_goodbye,
}

_TABLE: dict[SessionState, dict[int, Handler]] = {
    SessionState.CONNECTED: {
        MessageType.HELLO: Router._on_hello,
        MessageType.ABORT: Router._on_client_abort,
    },
    SessionState.CHALLENGED: {
        MessageType.AUTHENTICATE: Router._on_authenticate,
        MessageType.ABORT: Router._on_client_abort,
    },
    SessionState.ESTABLISHED: _ESTABLISHED,
    SessionState.CLOSING: {MessageType.GOODBYE: Router._on_goodbye},
    SessionState.CLOSED: {},
}
