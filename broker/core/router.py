"""The router: the one place where every incoming message is dispatched.

Adapters call four methods: ``attach`` when a transport opens, ``receive`` for each
decoded message, ``protocol_violation`` when a frame cannot be decoded, and
``detach`` when the transport is gone. Dispatch is a table keyed by session state
and message type (``_TABLE``); a message with no entry for the current state is a
protocol violation (ABORT ``wamp.error.protocol_violation``, transport closed),
except while closing, when stray messages are ignored as the spec asks.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

from protocol_spec import errors
from protocol_spec.messages import (
    Abort,
    Authenticate,
    Challenge,
    Error,
    Goodbye,
    Hello,
    MessageType,
    Welcome,
)
from protocol_spec.uri import is_valid_uri

from .auth import Accept, AskChallenge, Deny, Outcome
from .dealer import Dealer
from .features import welcome_roles
from .ids import random_id
from .interfaces import Peer, Scheduler
from .meta import install_meta_api
from .pubsub import Broker, DeliveryFilter
from .realm import Realm, RealmSettings
from .session import Session, SessionState

__all__ = ["GOODBYE_TIMEOUT", "Router"]

log = logging.getLogger(__name__)

GOODBYE_TIMEOUT = 5.0
"""Seconds a peer gets to answer the router's GOODBYE before its transport is closed."""

Handler = Callable[["Router", Session, Any], None]
_ROLES = frozenset({"caller", "callee", "publisher", "subscriber"})


class Router:
    """Realms, the sessions attached to them, and the message dispatch."""

    def __init__(self, realms: Iterable[RealmSettings], scheduler: Scheduler) -> None:
        self.scheduler = scheduler
        self.realms: dict[str, Realm] = {}
        self.sessions: dict[int, Session] = {}
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
        if session.state >= SessionState.CLOSING:
            session.peer.close(1002, "protocol violation")
            return
        session.peer.send(Abort({"message": reason}, errors.PROTOCOL_VIOLATION))
        self._end(session, publish_testaments=True)
        session.peer.close(1002, "protocol violation")

    def detach(self, session: Session) -> None:
        """The transport is gone: end the session (testaments fire if no GOODBYE)."""
        self._end(session, publish_testaments=True)
        self.sessions.pop(session.id, None)

    def shutdown(self, reason: str = errors.CLOSE_SYSTEM_SHUTDOWN) -> list[Session]:
        """Send GOODBYE to every joined session; return the sessions told to go."""
        told = []
        for session in list(self.sessions.values()):
            if session.state == SessionState.ESTABLISHED:
                self._goodbye(session, reason, "the router is shutting down")
                told.append(session)
            elif session.state < SessionState.CLOSING:
                session.peer.send(Abort({"message": "router shutting down"}, reason))
                self._end(session, publish_testaments=False)
                session.peer.close(1001, "going away")
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
        self.scheduler.call_later(GOODBYE_TIMEOUT, lambda: peer.close(1000, "goodbye timeout"))

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
                session.pending_auth = authenticator
                self._apply(
                    session, realm, authenticator.hello(realm.name, session.id, msg.details)
                )
                return
        self._abort(session, errors.NO_AUTH_METHOD, "no acceptable authentication method")

    def _on_authenticate(self, session: Session, msg: Authenticate) -> None:
        realm = self.realms.get(session.requested_realm)
        authenticator, state = session.pending_auth
        if realm is None:
            self._abort(session, errors.NO_SUCH_REALM, "the realm went away")
            return
        self._apply(session, realm, authenticator.authenticate(state, msg.signature, msg.extra))

    def _apply(self, session: Session, realm: Realm, outcome: Outcome) -> None:
        if isinstance(outcome, Accept):
            self._welcome(session, realm, outcome)
        elif isinstance(outcome, AskChallenge):
            session.pending_auth = (session.pending_auth, outcome.state)
            session.state = SessionState.CHALLENGED
            session.peer.send(Challenge(outcome.authmethod, outcome.extra))
        elif isinstance(outcome, Deny):
            self._abort(session, outcome.reason, outcome.message)

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
        session.peer.send(Abort({"message": message}, reason))
        self._end(session, publish_testaments=False)
        session.peer.close(1000, "aborted")

    def _on_goodbye(self, session: Session, msg: Goodbye) -> None:
        if session.state == SessionState.ESTABLISHED:
            session.peer.send(Goodbye({}, errors.CLOSE_GOODBYE_AND_OUT))
            self._end(session, publish_testaments=False)
        session.state = SessionState.CLOSED
        session.peer.close(1000, "goodbye")

    def _on_client_abort(self, session: Session, msg: Abort) -> None:
        self._end(session, publish_testaments=True)
        session.peer.close(1000, "aborted by peer")

    def _on_error(self, session: Session, msg: Error) -> None:
        if msg.request_type != MessageType.INVOCATION:
            self.protocol_violation(session, "a client may send ERROR only for INVOCATION")
            return
        _dealer(session).invocation_error(session, msg)


def _broker(session: Session) -> Broker:
    realm = session.realm
    assert realm is not None  # invariant: ESTABLISHED sessions have a realm
    return realm.broker


def _dealer(session: Session) -> Dealer:
    realm = session.realm
    assert realm is not None  # invariant: ESTABLISHED sessions have a realm
    return realm.dealer


def _publish_testaments(broker: Broker, session: Session) -> None:
    for testament in session.testaments:
        try:
            delivery_filter = DeliveryFilter.from_options(testament.options)
        except ValueError:
            delivery_filter = None
        broker.deliver(
            testament.topic,
            random_id(),
            {},
            testament.args,
            testament.kwargs,
            None,
            delivery_filter,
        )
    session.testaments.clear()


_ESTABLISHED: dict[int, Handler] = {
    MessageType.PUBLISH: lambda r, s, m: _broker(s).publish(s, m),
    MessageType.SUBSCRIBE: lambda r, s, m: _broker(s).subscribe(s, m),
    MessageType.UNSUBSCRIBE: lambda r, s, m: _broker(s).unsubscribe(s, m),
    MessageType.CALL: lambda r, s, m: _dealer(s).call(s, m),
    MessageType.CANCEL: lambda r, s, m: _dealer(s).cancel(s, m),
    MessageType.REGISTER: lambda r, s, m: _dealer(s).register(s, m),
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
