"""A joined WAMP session over one transport (``connection.connect`` opens one).

The session owns the request-ID counter, the table of pending requests and one
reader task that dispatches every incoming message by type (one table, no
isinstance chain). The four client roles live in ``pubsub`` (publisher,
subscriber) and ``rpc`` (caller, callee); the session wires them together and is
their ``SessionPort`` (``port``). The opening handshake is in ``joining``.

Life cycle (the table is ``states.SESSION_TRANSITIONS``)::

    connect() ──HELLO──► [CHALLENGE ⇄ AUTHENTICATE]* ──WELCOME──► joined
    joined ──leave()/GOODBYE⇄GOODBYE──► closed (clean)
    joined ──ABORT / transport lost / protocol violation──► closed (pending requests fail)
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, TypeVar, overload

import protocol_spec as wamp
from protocol_spec import ProtocolError, Serializer
from protocol_spec import errors as wamp_errors

from .auth import Authenticator
from .errors import ApplicationError, ProtocolViolation, SessionClosed, TransportLost
from .joining import ROLES, abort_quietly, auth_list, handshake, hello_details, opt_str
from .port import ReplyHandler
from .pubsub import EventHandler, EventStream, Subscriber, Subscription
from .rpc import Callee, Caller, ProcedureHandler, ProgressiveCall, Registration
from .states import SESSION_TRANSITIONS, SessionEvent, SessionState, StateMachine
from .transport import Transport
from .values import CallOptions, CallResult, InvokePolicy, MatchPolicy, PublishOptions

__all__ = ["ROLES", "Session", "hello_details", "log_setup_failure"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

_REPLY_OF: dict[int, int] = {
    wamp.MessageType.PUBLISH: wamp.MessageType.PUBLISHED,
    wamp.MessageType.SUBSCRIBE: wamp.MessageType.SUBSCRIBED,
    wamp.MessageType.UNSUBSCRIBE: wamp.MessageType.UNSUBSCRIBED,
    wamp.MessageType.REGISTER: wamp.MessageType.REGISTERED,
    wamp.MessageType.UNREGISTER: wamp.MessageType.UNREGISTERED,
}

_READING = frozenset({SessionState.JOINED, SessionState.CLOSING})
"""The states in which the reader task dispatches incoming messages."""


@dataclass(slots=True)
class _Request:
    kind: int
    future: asyncio.Future[Any]
    on_reply: ReplyHandler | None = None


class Session:
    """A joined WAMP session: publish, subscribe, call, register.

    Obtain one with ``connect`` (or ``Client``). Methods that talk to the router are
    coroutines; they raise ``SessionClosed`` once the session has ended. Handlers run
    on the session's event loop: sync handlers inline (keep them quick), async
    handlers as tasks started in arrival order.
    """

    def __init__(
        self,
        transport: Transport,
        realm: str,
        *,
        auth: Authenticator | Sequence[Authenticator] | None = None,
    ) -> None:
        self.realm = realm
        self.id = 0
        self.details: dict[str, Any] = {}
        self._transport = transport
        self._auth = auth_list(auth)
        self._request_id = 0
        self._requests: dict[int, _Request] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self._setup: list[asyncio.Task[Any]] = []
        self._reader: asyncio.Task[None] | None = None
        self._state = StateMachine("session", SESSION_TRANSITIONS, SessionState.NEW)
        self._closing_reason: str | None = None
        self._reply_goodbye = False
        self._closed: asyncio.Future[SessionClosed] = asyncio.get_running_loop().create_future()
        self._subscriber = Subscriber(self)
        self._caller = Caller(self)
        self._callee = Callee(self)
        self._dispatch: dict[type[Any], Callable[[Any], None]] = {
            wamp.Event: self._subscriber.on_event,
            wamp.Result: self._caller.on_result,
            wamp.Invocation: self._callee.on_invocation,
            wamp.Interrupt: self._callee.on_interrupt,
            wamp.Error: self._on_error,
            wamp.Published: self._on_reply,
            wamp.Subscribed: self._on_reply,
            wamp.Unsubscribed: self._reply_or_revoked(self._subscriber.on_revoked),
            wamp.Registered: self._on_reply,
            wamp.Unregistered: self._reply_or_revoked(self._callee.on_revoked),
            wamp.Goodbye: self._on_goodbye,
            wamp.Abort: self._on_abort,
        }

    # --- identity ---------------------------------------------------------------

    @property
    def serializer(self) -> Serializer:
        """The negotiated serializer."""
        return self._transport.serializer

    @property
    def authid(self) -> str | None:
        """The authid the router assigned (WELCOME.Details.authid)."""
        return opt_str(self.details.get("authid"))

    @property
    def authrole(self) -> str | None:
        """The authrole the router assigned."""
        return opt_str(self.details.get("authrole"))

    @property
    def authmethod(self) -> str | None:
        """The authentication method the router accepted."""
        return opt_str(self.details.get("authmethod"))

    @property
    def is_open(self) -> bool:
        """True while the session is joined and not closing."""
        return self._state.state is SessionState.JOINED

    def router_features(self, role: str) -> frozenset[str]:
        """The features the router announced for ``role`` ("broker" or "dealer") in WELCOME."""
        roles = self.details.get("roles")
        info = roles.get(role) if isinstance(roles, dict) else None
        features = info.get("features") if isinstance(info, dict) else None
        if not isinstance(features, dict):
            return frozenset()
        return frozenset(k for k, v in features.items() if v is True)

    def __repr__(self) -> str:
        return f"<Session {self.id} realm={self.realm!r} state={self._state.state.value}>"

    # --- joining ----------------------------------------------------------------

    async def join(self) -> None:
        """Send HELLO, answer CHALLENGEs and wait for WELCOME; start dispatching.

        Raises ``JoinError`` on ABORT, ``ProtocolViolation`` if the router
        misbehaves and ``TransportLost`` if the connection drops. The transport is
        closed on failure, including cancellation (wrap in ``asyncio.timeout`` to
        bound the wait; ``connect`` does).
        """
        self._state.fire(SessionEvent.JOIN)  # InvalidTransition (RuntimeError) if called twice
        try:
            welcome = await handshake(self._transport, self.realm, self._auth)
        except ProtocolError as exc:
            await abort_quietly(self._transport, str(exc))
            await self._fail_join()
            raise ProtocolViolation(str(exc)) from None
        except BaseException:
            await self._fail_join()
            raise
        self.id = welcome.session
        self.details = welcome.details
        self._state.fire(SessionEvent.WELCOME)
        self._reader = asyncio.create_task(self._read(), name=f"wamp-session-{self.id}-reader")
        log.info("joined realm %s as session %d (authid=%s)", self.realm, self.id, self.authid)

    async def _fail_join(self) -> None:
        self._state.fire(SessionEvent.JOIN_FAILED)
        await self._close_transport()
        if not self._closed.done():
            self._closed.set_result(SessionClosed(wamp_errors.CLOSE_NORMAL, "join failed"))

    # --- leaving ----------------------------------------------------------------

    async def leave(
        self,
        reason: str = wamp_errors.CLOSE_NORMAL,
        message: str | None = None,
        *,
        grace: float = 5.0,
    ) -> None:
        """Leave the realm: finish running invocations, GOODBYE, close the transport.

        Running invocations get up to ``grace`` seconds to answer, then GOODBYE is
        sent and the router's GOODBYE awaited (again up to ``grace``). Idempotent:
        leaving a closed session does nothing.
        """
        if not self._state.can(SessionEvent.LEAVE):
            if self._state.state is SessionState.CLOSING:
                await asyncio.wait({self._closed}, timeout=grace)
            return
        await self._callee.drain(grace)
        if not self._state.can(SessionEvent.LEAVE):
            return
        self._state.fire(SessionEvent.LEAVE)
        self._closing_reason = reason
        details: dict[str, Any] = {"message": message} if message else {}
        try:
            await self._transport.send(wamp.Goodbye(details, reason))
            await asyncio.wait_for(asyncio.shield(self._closed), grace)
        except (TransportLost, TimeoutError):
            pass
        self._finish(SessionClosed(reason, message))
        await self._close_transport()
        if self._reader is not None:
            await asyncio.wait({self._reader}, timeout=grace)

    async def wait_closed(self) -> SessionClosed:
        """Wait until the session ends; return why (a ``SessionClosed`` or ``TransportLost``)."""
        return await asyncio.shield(self._closed)

    @property
    def close_reason(self) -> SessionClosed | None:
        """Why the session ended, or None while it is open."""
        return self._closed.result() if self._closed.done() else None

    async def __aenter__(self) -> Session:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.leave()

    # --- publish / subscribe ----------------------------------------------------

    async def publish(
        self, topic: str, *args: Any, options: PublishOptions | None = None, **kwargs: Any
    ) -> int | None:
        """Publish an event with positional ``args`` and keyword ``kwargs``.

        ``options`` is the one reserved keyword. Without ``acknowledge`` the
        coroutine returns once the message is sent (None); with it, it returns the
        publication ID and raises ``ApplicationError`` if the router refuses.
        """
        return await self._subscriber.publish(
            topic, list(args), kwargs, options or PublishOptions()
        )

    @overload
    def subscribe(
        self,
        topic: str,
        handler: None = None,
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
    ) -> Callable[[F], F]: ...

    @overload
    def subscribe(
        self,
        topic: str,
        handler: EventHandler,
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
    ) -> Coroutine[Any, Any, Subscription]: ...

    def subscribe(
        self,
        topic: str,
        handler: EventHandler | None = None,
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
    ) -> Callable[[F], F] | Coroutine[Any, Any, Subscription]:
        """Subscribe ``handler`` (sync or async, called with an ``Event``) to ``topic``.

        ``await session.subscribe(topic, handler)`` returns a ``Subscription``. As a
        decorator (``@session.subscribe(topic)``) the subscription is made in the
        background; ``await session.flush()`` waits for it and raises its error.
        """
        if handler is None:
            return self._decorator(
                lambda fn: self._subscriber.subscribe(topic, fn, match, get_retained)
            )
        return self._subscriber.subscribe(topic, handler, match, get_retained)

    def events(
        self,
        topic: str,
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
        maxsize: int = 1000,
    ) -> EventStream:
        """An async iterator over the events of ``topic`` with a bounded buffer.

        Use ``async with session.events(t) as stream: async for event in stream``.
        The subscription is made on entry (or first iteration) and removed on exit.
        On overflow the *oldest* buffered event is dropped and ``stream.dropped``
        counts the losses. Iteration stops when the session leaves cleanly and raises
        ``SessionClosed``/``TransportLost`` when it ends abnormally.
        """
        return self._subscriber.events(topic, match, get_retained, maxsize)

    # --- call / register --------------------------------------------------------

    async def call(
        self, procedure: str, *args: Any, options: CallOptions | None = None, **kwargs: Any
    ) -> CallResult:
        """Call ``procedure`` with ``args``/``kwargs`` and return its ``CallResult``.

        ``options`` is the one reserved keyword (``CallOptions(timeout=5)`` for a
        router-side deadline in seconds). Raises ``ApplicationError`` with the
        error's URI, args and kwargs. Cancelling the awaiting task (or
        ``asyncio.timeout`` around it) sends CANCEL (mode ``kill`` by default).
        """
        return await self._caller.call(procedure, list(args), kwargs, options or CallOptions())

    def call_progress(
        self, procedure: str, *args: Any, options: CallOptions | None = None, **kwargs: Any
    ) -> ProgressiveCall:
        """Call with ``receive_progress`` and iterate over the results.

        ``async for result in session.call_progress(p, ...)`` yields each
        progressive ``CallResult`` (``progress=True``) then the final one, then
        stops. Leaving an ``async with`` block early, or cancelling the iterating
        task, cancels the call.
        """
        return ProgressiveCall(
            self._caller, procedure, list(args), kwargs, options or CallOptions()
        )

    @overload
    def register(
        self,
        procedure: str,
        handler: None = None,
        *,
        match: MatchPolicy = "exact",
        invoke: InvokePolicy = "single",
        details_arg: str | None = None,
    ) -> Callable[[F], F]: ...

    @overload
    def register(
        self,
        procedure: str,
        handler: ProcedureHandler,
        *,
        match: MatchPolicy = "exact",
        invoke: InvokePolicy = "single",
        details_arg: str | None = None,
    ) -> Coroutine[Any, Any, Registration]: ...

    def register(
        self,
        procedure: str,
        handler: ProcedureHandler | None = None,
        *,
        match: MatchPolicy = "exact",
        invoke: InvokePolicy = "single",
        details_arg: str | None = None,
    ) -> Callable[[F], F] | Coroutine[Any, Any, Registration]:
        """Register ``handler`` as ``procedure``; it is called with the call's args and kwargs.

        The handler may be sync, async, or an async generator (each item is a
        progressive result, see ``rpc``). Its return value ``v`` becomes
        ``args=[v]`` (a ``CallResult`` sets args/kwargs exactly). Raising
        ``ApplicationError(uri, *args, **kwargs)`` answers with that error; any
        other exception answers ``wamp.error.runtime_error`` without details (the
        traceback is logged here). ``details_arg`` names a keyword parameter that
        receives ``InvocationDetails``. ``await session.register(p, fn)`` returns a
        ``Registration``; ``@session.register(p)`` registers in the background
        (``await session.flush()`` to wait for it).
        """
        if handler is None:
            return self._decorator(
                lambda fn: self._callee.register(procedure, fn, match, invoke, details_arg)
            )
        return self._callee.register(procedure, handler, match, invoke, details_arg)

    async def flush(self) -> None:
        """Wait until the decorator-form subscriptions/registrations are confirmed.

        Raises the first failure among them.
        """
        pending, self._setup = self._setup, []
        if pending:
            results = await asyncio.gather(*pending, return_exceptions=True)
            for result in results:
                if isinstance(result, BaseException):
                    raise result

    def _decorator(self, start: Callable[[Any], Awaitable[Any]]) -> Callable[[F], F]:
        def decorate(fn: F) -> F:
            task = asyncio.ensure_future(start(fn))
            self._setup.append(task)
            task.add_done_callback(log_setup_failure)
            return fn

        return decorate

    # --- the SessionPort the roles use (see ``port``) ------------------------

    def next_request(self) -> int:
        """A fresh request ID (1 … 2**53, then around again)."""
        self._request_id = self._request_id % wamp.MAX_ID + 1
        return self._request_id

    async def send(self, message: Any) -> None:
        """Send one WAMP message; ``SessionClosed`` once the session has ended.

        Part of the ``SessionPort`` of the roles; applications use ``publish``,
        ``call`` and the other methods instead.
        """
        self._check_open()
        await self._transport.send(message)

    async def request(self, message: Any, on_reply: ReplyHandler | None = None) -> Any:
        """Send a request (PUBLISH/SUBSCRIBE/…) and wait for its reply or ERROR.

        Returns ``on_reply(reply)`` (run as the reply is dispatched, before any
        later message) or the reply. Part of the ``SessionPort`` of the roles.
        """
        self._check_open()
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._requests[message.request] = _Request(message.TYPE, future, on_reply)
        try:
            await self._transport.send(message)
            return await future
        finally:
            self._requests.pop(message.request, None)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str) -> asyncio.Task[Any]:
        """Run ``coro`` as a task referenced by the session until it finishes."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _check_open(self) -> None:
        if self._state.state is not SessionState.JOINED:
            if self._closed.done():
                raise self._closed.result()
            raise SessionClosed(wamp_errors.CLOSE_NORMAL, f"session is {self._state.state.value}")

    # --- incoming messages --------------------------------------------------------

    async def _read(self) -> None:
        try:
            while self._state.state in _READING:
                msg = await self._transport.recv()
                handler = self._dispatch.get(type(msg))
                if handler is None:
                    raise ProtocolError(
                        f"unexpected {type(msg).__name__.upper()} in an established session"
                    )
                handler(msg)
        except TransportLost as exc:
            self._finish(exc)
        except ProtocolError as exc:
            log.warning("session %d: router broke the protocol: %s", self.id, exc)
            await abort_quietly(self._transport, str(exc))
            self._finish(SessionClosed(wamp_errors.PROTOCOL_VIOLATION, str(exc)))
        except Exception:
            log.exception("session %d: internal error while dispatching", self.id)
            await abort_quietly(
                self._transport, "internal client error", reason=wamp_errors.CLOSE_NORMAL
            )
            self._finish(SessionClosed(wamp_errors.CLOSE_NORMAL, "internal client error"))
        if self._reply_goodbye:
            try:
                await self._transport.send(wamp.Goodbye({}, wamp_errors.CLOSE_GOODBYE_AND_OUT))
            except TransportLost:
                pass
        await self._close_transport()

    def _on_reply(self, msg: Any) -> None:
        request = self._requests.pop(msg.request, None)
        if request is None or request.future.done():
            log.debug("session %d: reply to unknown request %d", self.id, msg.request)
            return
        if _REPLY_OF.get(request.kind) != msg.TYPE:
            raise ProtocolError(
                f"{type(msg).__name__.upper()} answers a request of type {request.kind}"
            )
        result = request.on_reply(msg) if request.on_reply else msg
        request.future.set_result(result)

    def _reply_or_revoked(
        self, on_revoked: Callable[[dict[str, Any]], None]
    ) -> Callable[[Any], None]:
        """UNSUBSCRIBED/UNREGISTERED: a reply, or with request 0 the router revoking."""

        def dispatch(msg: wamp.Unsubscribed | wamp.Unregistered) -> None:
            if msg.request == 0:
                on_revoked(msg.details or {})
            else:
                self._on_reply(msg)

        return dispatch

    def _on_error(self, msg: wamp.Error) -> None:
        error = ApplicationError(msg.error, *(msg.args or ()), **(msg.kwargs or {}))
        if msg.request_type == wamp.MessageType.CALL:
            self._caller.on_error(msg.request, error)
            return
        request = self._requests.pop(msg.request, None)
        if request is None or request.future.done():
            log.debug("session %d: ERROR for unknown request %d", self.id, msg.request)
            return
        request.future.set_exception(error)

    def _on_goodbye(self, msg: wamp.Goodbye) -> None:
        message = opt_str(msg.details.get("message"))
        if self._state.state is SessionState.CLOSING:
            self._finish(SessionClosed(self._closing_reason or msg.reason, message))
            return
        log.info("session %d: router said GOODBYE (%s)", self.id, msg.reason)
        self._reply_goodbye = True  # the reader answers before closing the transport
        self._finish(SessionClosed(msg.reason, message))

    def _on_abort(self, msg: wamp.Abort) -> None:
        message = opt_str(msg.details.get("message"))
        log.warning(
            "session %d: router aborted (%s%s)",
            self.id,
            msg.reason,
            f": {message}" if message else "",
        )
        self._finish(SessionClosed(msg.reason, message))

    # --- ending ----------------------------------------------------------------

    async def _close_transport(self) -> None:
        try:
            await self._transport.close()
        except Exception:
            log.debug("error while closing the transport", exc_info=True)

    def _finish(self, why: SessionClosed) -> None:
        """End the session once: fail pending work, stop invocations, end streams."""
        if self._closed.done():
            return
        self._state.fire(SessionEvent.END)
        self._closed.set_result(why)
        for request in self._requests.values():
            if not request.future.done():
                request.future.set_exception(why)
        self._requests.clear()
        self._caller.close(why)
        self._callee.close()
        self._subscriber.close(why, clean=self._closing_reason is not None)
        log.info("session %d closed: %s", self.id, why)


def log_setup_failure(task: asyncio.Task[Any]) -> None:
    """Done-callback of a background subscribe/register: log its failure."""
    if not task.cancelled() and task.exception() is not None:
        log.error("background subscribe/register failed: %s", task.exception())
