"""A long-lived client: reconnects, re-joins and restores what it had.

``Client`` keeps the *intent* of the application (subscriptions, registrations,
hooks) apart from the current ``Session``. Whenever a session ends unexpectedly it
reconnects after the delays of a ``Backoff`` (``protocol_spec.backoff.Backoff``,
exponential with jitter, re-exported as ``client_sdk.Backoff``; it lives in
protocol_spec so that the broker's Redis link can share it), joins again,
re-subscribes and re-registers everything, then runs the ``on_join`` hooks.

States (``client.state``; the table is ``states.CLIENT_TRANSITIONS``)::

    STOPPED ──start()──► CONNECTING ──WELCOME + restore──► JOINED
       ▲                    │  ▲                              │ session lost
       │                    ▼  │ delay elapsed                ▼
       └──stop()/fatal──── WAITING ◄───────────────────────────┘

Fatal errors (the router refused our credentials or realm) stop the client
instead of retrying; ``wait_joined`` raises them. Calls and publishes made while
not JOINED raise ``NotConnected`` at once, or wait up to ``wait_for_join``
seconds for the next join. Calls in flight when a connection drops fail with
``TransportLost`` (they are never retried: the callee may have run them).
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import random
import ssl as ssl_module
from collections.abc import Callable, Coroutine, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, overload

from protocol_spec import errors as wamp_errors
from protocol_spec.backoff import Backoff

from .auth import Authenticator
from .connection import connect
from .errors import ClientError, JoinError, NotConnected, SessionClosed
from .kept import ClientRegistration, ClientSubscription
from .pubsub import EventHandler, EventStream
from .resume import GapHandler
from .rpc import ProcedureHandler, ProgressiveCall
from .session import Session, log_setup_failure
from .states import CLIENT_TRANSITIONS, ClientEvent, ClientState, StateMachine
from .values import CallOptions, CallResult, InvokePolicy, MatchPolicy, PublishOptions

__all__ = ["FATAL_JOIN_ERRORS", "Client", "ClientRegistration", "ClientState", "ClientSubscription"]

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])

FATAL_JOIN_ERRORS = frozenset(
    {
        wamp_errors.AUTHENTICATION_FAILED,
        wamp_errors.AUTHORIZATION_FAILED,
        wamp_errors.NOT_AUTHORIZED,
        wamp_errors.NO_AUTH_METHOD,
        wamp_errors.NO_SUCH_REALM,
        wamp_errors.NO_SUCH_ROLE,
        wamp_errors.NO_SUCH_PRINCIPAL,
    }
)
"""ABORT reasons that stop the client instead of retrying (credentials will not get better)."""


_Kept = ClientSubscription | ClientRegistration
K = TypeVar("K", ClientSubscription, ClientRegistration)


JoinHook = Callable[[Session], object]
LeaveHook = Callable[[Session, SessionClosed], object]


class Client:
    """A WAMP client that stays connected: reconnects, re-joins, restores state.

    ``async with Client(url, realm) as client`` starts it and waits for the first
    join (up to ``first_join_timeout``); leaving the block stops it. Subscriptions,
    registrations and hooks may be declared before ``start()`` (decorators work).
    The connection parameters are those of ``connect``. ``backoff`` (a
    ``protocol_spec.backoff.Backoff``) sets the delay before each new attempt;
    ``max_attempts`` failed attempts in a row stop the client.
    """

    def __init__(
        self,
        url: str,
        realm: str,
        *,
        serializer: str = "msgpack",
        auth: Authenticator | Sequence[Authenticator] | None = None,
        backoff: Backoff | None = None,
        max_attempts: int | None = None,
        wait_for_join: float = 0.0,
        first_join_timeout: float | None = 30.0,
        join_timeout: float | None = 10.0,
        open_timeout: float | None = 10.0,
        ping_interval: float | None = 20.0,
        ssl: ssl_module.SSLContext | None = None,
        headers: Mapping[str, str] | None = None,
        rng: random.Random | None = None,
    ) -> None:
        self.url = url
        self.realm = realm
        self.backoff = backoff or Backoff()
        self.max_attempts = max_attempts
        self.wait_for_join = wait_for_join
        self.first_join_timeout = first_join_timeout
        self.last_error: BaseException | None = None
        self.attempts = 0
        self.joins = 0
        self._connect_args: dict[str, Any] = {
            "serializer": serializer,
            "auth": auth,
            "join_timeout": join_timeout,
            "open_timeout": open_timeout,
            "ping_interval": ping_interval,
            "ssl": ssl,
            "headers": headers,
        }
        self._rng = rng
        self._state = StateMachine(f"client {url}", CLIENT_TRANSITIONS, ClientState.STOPPED)
        self._session: Session | None = None
        self._task: asyncio.Task[None] | None = None
        self._joined = asyncio.Event()
        self._stopped = asyncio.Event()
        self._stopped.set()
        self._stopping = False
        self._kept: list[_Kept] = []  # restored, in declaration order, on every join
        self._streams: set[EventStream] = set()
        self._join_hooks: list[JoinHook] = []
        self._leave_hooks: list[LeaveHook] = []
        self._background: set[asyncio.Task[Any]] = set()

    # --- state ----------------------------------------------------------------

    @property
    def state(self) -> ClientState:
        """The current ``ClientState``."""
        return self._state.state

    @property
    def session(self) -> Session | None:
        """The joined session, or None while not JOINED."""
        return self._session if self._state.state is ClientState.JOINED else None

    def on_join(self, hook: JoinHook) -> JoinHook:
        """Add a hook run after every join (after restoring); usable as a decorator.

        ``hook(session)`` may be sync or async; its exceptions are logged.
        """
        self._join_hooks.append(hook)
        return hook

    def on_leave(self, hook: LeaveHook) -> LeaveHook:
        """Add a hook run when a session ends: ``hook(session, reason)``; usable as a decorator."""
        self._leave_hooks.append(hook)
        return hook

    def __repr__(self) -> str:
        return f"<Client {self.url} realm={self.realm!r} state={self._state.state.value}>"

    # --- life cycle -------------------------------------------------------------

    async def start(self) -> None:
        """Start connecting in the background (idempotent); see ``wait_joined``."""
        if self._task is not None and not self._task.done():
            return
        self._stopping = False
        self._stopped.clear()
        self.last_error = None
        self._task = asyncio.create_task(self._run(), name=f"wamp-client-{self.url}")

    async def wait_joined(self) -> Session:
        """Wait until JOINED and return the session (bound it with ``asyncio.timeout``).

        Raises the fatal error if the client stopped on one and ``NotConnected`` if
        it is stopped.
        """
        while True:
            session = self.session
            if session is not None and session.is_open:
                return session
            if self._task is None or self._task.done():
                if self.last_error is not None and isinstance(self.last_error, JoinError):
                    raise self.last_error
                raise NotConnected(
                    f"client for {self.url} is stopped (last error: {self.last_error})"
                )
            joined = asyncio.ensure_future(self._joined.wait())
            stopped = asyncio.ensure_future(self._stopped.wait())
            try:
                await asyncio.wait({joined, stopped}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                joined.cancel()
                stopped.cancel()

    async def wait_stopped(self) -> None:
        """Wait until the client has stopped (``stop()``, a fatal error or ``max_attempts``)."""
        await self._stopped.wait()

    async def stop(self) -> None:
        """Leave the session (GOODBYE) and stop reconnecting (idempotent)."""
        self._stopping = True
        task, session = self._task, self._session
        if session is not None:
            await session.leave()
        if task is not None and not task.done():
            if session is not None:  # let the loop see the end of the session and run the hooks
                await asyncio.wait({task}, timeout=5.0)
            task.cancel()
            await asyncio.wait({task})
        for stream in list(self._streams):
            stream._end(None)
        for bg in list(self._background):
            bg.cancel()
        self._state.fire(ClientEvent.STOP)
        self._stopped.set()

    async def __aenter__(self) -> Client:
        await self.start()
        try:
            async with asyncio.timeout(self.first_join_timeout):
                await self.wait_joined()
        except BaseException:
            await self.stop()
            raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def _run(self) -> None:
        failures = 0
        try:
            while not self._stopping:
                self._state.fire(ClientEvent.CONNECT)
                self.attempts += 1
                try:
                    session = await connect(self.url, self.realm, **self._connect_args)
                except JoinError as exc:
                    self.last_error = exc
                    if exc.reason in FATAL_JOIN_ERRORS:
                        log.error("client %s: join refused, giving up: %s", self.url, exc)
                        return
                    failures += 1
                except ClientError as exc:
                    self.last_error = exc
                    failures += 1
                else:
                    failures = 0
                    await self._serve(session)
                if self._stopping or (
                    self.max_attempts is not None and failures >= self.max_attempts
                ):
                    return
                delay = self.backoff.delay(max(failures - 1, 0), self._rng)
                log.info(
                    "client %s: reconnecting in %.2f s (last error: %s)",
                    self.url,
                    delay,
                    self.last_error,
                )
                self._state.fire(ClientEvent.WAIT)
                await asyncio.sleep(delay)
        finally:
            self._joined.clear()
            self._session = None
            self._state.fire(ClientEvent.STOP)
            self._stopped.set()

    async def _serve(self, session: Session) -> None:
        """Restore, announce and watch one session until it ends."""
        self._session = session
        self.joins += 1
        try:
            await self._restore(session)
            if session.is_open:
                self._state.fire(ClientEvent.JOINED)
                self._joined.set()
                for hook in list(self._join_hooks):
                    await _run_hook(hook, session)
            why = await session.wait_closed()
        except asyncio.CancelledError:
            await session.leave()
            raise
        finally:
            self._joined.clear()
            self._session = None
        self.last_error = why
        log.info("client %s: session %d ended: %s", self.url, session.id, why)
        for leave_hook in list(self._leave_hooks):
            await _run_hook(leave_hook, session, why)

    async def _restore(self, session: Session) -> None:
        jobs = [spec._apply(session) for spec in self._kept]
        for outcome in await asyncio.gather(*jobs, return_exceptions=True):
            if isinstance(outcome, BaseException) and not isinstance(outcome, SessionClosed):
                log.error("client %s: restoring after join failed: %s", self.url, outcome)

    # --- declaring subscriptions and registrations ----------------------------

    @overload
    def subscribe(
        self,
        topic: str,
        handler: None = None,
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
        resume: bool = False,
        on_gap: GapHandler | None = None,
    ) -> Callable[[F], F]: ...

    @overload
    def subscribe(
        self,
        topic: str,
        handler: EventHandler,
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
        resume: bool = False,
        on_gap: GapHandler | None = None,
    ) -> Coroutine[Any, Any, ClientSubscription]: ...

    def subscribe(
        self,
        topic: str,
        handler: EventHandler | None = None,
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
        resume: bool = False,
        on_gap: GapHandler | None = None,
    ) -> Callable[[F], F] | Coroutine[Any, Any, ClientSubscription]:
        """Keep ``handler`` subscribed to ``topic`` across reconnections.

        Awaited: subscribes now if joined (raising the router's error, in which case
        nothing is kept) and returns a ``ClientSubscription``. As a decorator: the
        subscription is declared and made at the next join (or now, in the background).

        ``resume=True``: each publication reaches ``handler`` once, and after a
        re-join the events published meanwhile are fetched from the router's event
        history (``wamp.subscription.get_events``) and delivered first, in order,
        with ``Event.replayed`` set; live events wait meanwhile. When that cannot
        be proven complete (no history, history trimmed, fetch failed) ``on_gap``
        receives a ``Gap`` and ``ClientSubscription.complete`` is False.
        """
        return self._keep(
            handler,
            lambda fn: ClientSubscription(
                topic, fn, match, get_retained, _client=self, resume=resume, on_gap=on_gap
            ),
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
    ) -> Coroutine[Any, Any, ClientRegistration]: ...

    def register(
        self,
        procedure: str,
        handler: ProcedureHandler | None = None,
        *,
        match: MatchPolicy = "exact",
        invoke: InvokePolicy = "single",
        details_arg: str | None = None,
    ) -> Callable[[F], F] | Coroutine[Any, Any, ClientRegistration]:
        """Keep ``handler`` registered as ``procedure`` across reconnections.

        Same forms and handler rules as ``Session.register``; awaited, it registers
        now if joined (raising the router's error, keeping nothing) and returns a
        ``ClientRegistration``.
        """
        return self._keep(
            handler,
            lambda fn: ClientRegistration(procedure, fn, match, invoke, details_arg, _client=self),
        )

    def _keep(
        self, handler: Callable[..., Any] | None, make: Callable[[Any], K]
    ) -> Callable[[F], F] | Coroutine[Any, Any, K]:
        """Both forms of subscribe/register: ``make(handler)`` is the spec to keep."""
        if handler is None:

            def decorate(fn: F) -> F:
                self._declare(make(fn))
                return fn

            return decorate
        return self._add(make(handler))

    async def _add(self, spec: K) -> K:
        """Apply ``spec`` now if joined (its error propagates, nothing kept), then keep it."""
        session = self.session
        if session is not None:
            await spec._apply(session)
        self._kept.append(spec)
        return spec

    def _declare(self, spec: _Kept) -> None:
        """Keep ``spec`` (decorator form) and apply it in the background if joined."""
        self._kept.append(spec)
        session = self.session
        if session is None:
            return
        task = asyncio.ensure_future(spec._apply(session))
        self._background.add(task)
        task.add_done_callback(self._background.discard)
        task.add_done_callback(log_setup_failure)

    async def _forget(self, spec: _Kept) -> None:
        spec.active = False
        if spec in self._kept:
            self._kept.remove(spec)
        try:
            await spec._release()
        except SessionClosed:
            pass

    def events(
        self,
        topic: str,
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
        maxsize: int = 1000,
        resume: bool = False,
        on_gap: GapHandler | None = None,
    ) -> EventStream:
        """Like ``Session.events``, but the stream survives reconnections.

        It ends when the client stops; overflow drops the oldest event (``dropped``
        counts them: size ``maxsize`` for the replay after a reconnection).
        ``resume`` and ``on_gap`` are those of ``subscribe``; ``stream.subscription``
        is the ``ClientSubscription`` once started.
        """
        stream = EventStream(maxsize=maxsize)

        async def attach(handler: EventHandler) -> ClientSubscription:
            return await self.subscribe(
                topic,
                handler,
                match=match,
                get_retained=get_retained,
                resume=resume,
                on_gap=on_gap,
            )

        stream.bind(attach, self._streams)
        return stream

    # --- operations on the current session ------------------------------------

    async def _current(self) -> Session:
        session = self.session
        if session is not None and session.is_open:
            return session
        if self.wait_for_join > 0 and self._task is not None and not self._task.done():
            try:
                async with asyncio.timeout(self.wait_for_join):
                    return await self.wait_joined()
            except TimeoutError:
                pass
        raise NotConnected(
            f"not connected to {self.url} (state {self._state.state.value}; last error: {self.last_error})"
        )

    async def publish(
        self, topic: str, *args: Any, options: PublishOptions | None = None, **kwargs: Any
    ) -> int | None:
        """``Session.publish`` on the current session (``NotConnected`` if there is none)."""
        session = await self._current()
        return await session.publish(topic, *args, options=options, **kwargs)

    async def call(
        self, procedure: str, *args: Any, options: CallOptions | None = None, **kwargs: Any
    ) -> CallResult:
        """``Session.call`` on the current session (``NotConnected`` if there is none)."""
        session = await self._current()
        return await session.call(procedure, *args, options=options, **kwargs)

    async def call_progress(
        self, procedure: str, *args: Any, options: CallOptions | None = None, **kwargs: Any
    ) -> ProgressiveCall:
        """``Session.call_progress`` on the current session, already started."""
        session = await self._current()
        progressive = session.call_progress(procedure, *args, options=options, **kwargs)
        await progressive.start()
        return progressive


async def _run_hook(hook: Callable[..., object], *args: Any) -> None:
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result
    except Exception:
        log.exception("client hook %r failed", hook)
