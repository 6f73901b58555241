"""A blocking facade for scripts that do not use asyncio.

::

    from client_sdk import sync

    with sync.connect("ws://127.0.0.1:8080/ws", "realm1") as session:
        session.subscribe("com.example.chat", lambda event: print(event.args))
        name = input("your name: ")
        print(session.call("com.example.greet", name).value)

Each ``SyncSession`` runs an asyncio event loop in a background thread; every
method blocks until the router has answered. Handlers run in worker threads, so
they may call back into the session (blocking) without deadlocking: event handlers
in one thread (events stay in order), procedures in a small pool (they may run
concurrently). An INTERRUPT cannot stop a procedure already running in a thread;
the caller still gets ``wamp.error.canceled``. ``InvocationDetails.progress`` is a
coroutine, so threaded procedures stream progressive results by being generators
(their body then runs on the SDK's loop thread: keep it quick).

``SyncClient`` is the blocking twin of ``Client``: it reconnects, restores its
subscriptions and registrations, and resumes subscriptions made with
``resume=True`` (``on_gap`` runs in the event thread, in stream order)::

    with sync.SyncClient("ws://127.0.0.1:8080/ws", "realm1") as client:
        sub = client.subscribe("com.example.feed", print, resume=True, on_gap=print)
        ...
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import threading
from collections.abc import Callable, Coroutine, Iterator, Sequence
from types import TracebackType
from typing import Any, TypeVar, overload

from .auth import Authenticator
from .client import Client, ClientRegistration, ClientState, ClientSubscription
from .connection import connect as async_connect
from .pubsub import EventStream, Subscription
from .resume import GapHandler
from .rpc import ProcedureHandler, ProgressiveCall, Registration
from .session import Session
from .values import (
    CallOptions,
    CallResult,
    Event,
    Gap,
    InvokePolicy,
    MatchPolicy,
    PublishOptions,
)

__all__ = ["SyncClient", "SyncEventStream", "SyncSession", "connect"]

T = TypeVar("T")
F = TypeVar("F", bound=Callable[..., Any])


class _LoopThread:
    """An event loop running forever in a daemon thread."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_forever, name="wamp-sync-loop", daemon=True
        )
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        if threading.current_thread() is self.thread:
            coro.close()
            raise RuntimeError(
                "a blocking client_sdk.sync call was made on the SDK's own event loop"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)
        try:
            return future.result(timeout)
        except concurrent.futures.TimeoutError:
            future.cancel()
            raise TimeoutError(f"no answer within {timeout} s") from None
        except BaseException:
            future.cancel()
            raise

    def stop(self) -> None:
        if self.loop.is_closed():
            return
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        if not self.thread.is_alive():
            self.loop.close()


class SyncEventStream:
    """A blocking iterator over events (see ``Session.events`` for the buffer policy)."""

    def __init__(self, stream: EventStream, runner: _LoopThread) -> None:
        self._stream = stream
        self._runner = runner

    @property
    def dropped(self) -> int:
        """How many events were dropped because the buffer was full."""
        return self._stream.dropped

    def get(self, timeout: float | None = None) -> Event:
        """Wait for the next event; ``TimeoutError`` after ``timeout`` seconds, ``StopIteration`` at the end."""
        try:
            return self._runner.run(self._stream.__anext__(), timeout)
        except StopAsyncIteration:
            raise StopIteration from None

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        return self.get()

    def close(self) -> None:
        """Unsubscribe and end the iteration."""
        self._runner.run(self._stream.aclose())

    def __enter__(self) -> SyncEventStream:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class SyncSession:
    """The blocking twin of ``Session``: same methods, no ``await``."""

    def __init__(
        self, session: Session, runner: _LoopThread, *, procedure_threads: int = 8
    ) -> None:
        self.session = session
        self._runner = runner
        self._event_pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="wamp-events"
        )
        self._procedure_pool = concurrent.futures.ThreadPoolExecutor(
            procedure_threads, thread_name_prefix="wamp-procedures"
        )

    @property
    def id(self) -> int:
        """The session ID."""
        return self.session.id

    @property
    def is_open(self) -> bool:
        """True while the session is joined."""
        return self.session.is_open

    def publish(
        self, topic: str, *args: Any, options: PublishOptions | None = None, **kwargs: Any
    ) -> int | None:
        """Publish an event; see ``Session.publish``."""
        return self._runner.run(self.session.publish(topic, *args, options=options, **kwargs))

    def call(
        self, procedure: str, *args: Any, options: CallOptions | None = None, **kwargs: Any
    ) -> CallResult:
        """Call a procedure and block for its result; see ``Session.call``."""
        return self._runner.run(self.session.call(procedure, *args, options=options, **kwargs))

    def call_progress(
        self, procedure: str, *args: Any, options: CallOptions | None = None, **kwargs: Any
    ) -> Iterator[CallResult]:
        """Iterate over progressive results then the final one; see ``Session.call_progress``."""
        progressive: ProgressiveCall = self.session.call_progress(
            procedure, *args, options=options, **kwargs
        )
        try:
            while True:
                try:
                    yield self._runner.run(progressive.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            self._runner.loop.call_soon_threadsafe(progressive.cancel)

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
        handler: Callable[[Event], object],
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
    ) -> Subscription: ...

    def subscribe(
        self,
        topic: str,
        handler: Callable[[Event], object] | None = None,
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
    ) -> Callable[[F], F] | Subscription:
        """Subscribe a plain function (run in the event thread); also a decorator."""
        if handler is None:

            def decorate(fn: F) -> F:
                self.subscribe(topic, fn, match=match, get_retained=get_retained)
                return fn

            return decorate
        on_event = self._threaded_event_handler(handler)
        return self._runner.run(
            self.session.subscribe(topic, on_event, match=match, get_retained=get_retained)
        )

    def unsubscribe(self, subscription: Subscription) -> None:
        """Remove a subscription made with ``subscribe``."""
        self._runner.run(subscription.unsubscribe())

    def events(
        self,
        topic: str,
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
        maxsize: int = 1000,
    ) -> SyncEventStream:
        """A blocking iterator over the events of ``topic``, subscribed before it returns."""
        stream = self.session.events(topic, match=match, get_retained=get_retained, maxsize=maxsize)
        self._runner.run(stream.start())
        return SyncEventStream(stream, self._runner)

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
    ) -> Registration: ...

    def register(
        self,
        procedure: str,
        handler: ProcedureHandler | None = None,
        *,
        match: MatchPolicy = "exact",
        invoke: InvokePolicy = "single",
        details_arg: str | None = None,
    ) -> Callable[[F], F] | Registration:
        """Register a plain function (run in the procedure pool); also a decorator.

        Blocks until REGISTERED; the decorator form too, so the procedure is callable
        as soon as the decorated definition has run.
        """
        if handler is None:

            def decorate(fn: F) -> F:
                self.register(procedure, fn, match=match, invoke=invoke, details_arg=details_arg)
                return fn

            return decorate
        endpoint = self._threaded_procedure(handler)
        return self._runner.run(
            self.session.register(
                procedure, endpoint, match=match, invoke=invoke, details_arg=details_arg
            )
        )

    def unregister(self, registration: Registration) -> None:
        """Remove a registration made with ``register``."""
        self._runner.run(registration.unregister())

    def leave(self) -> None:
        """Leave the session, stop the loop thread and the worker threads (idempotent)."""
        if not self._runner.loop.is_closed():
            try:
                self._runner.run(self.session.leave())
            finally:
                self._runner.stop()
        self._event_pool.shutdown(wait=False)
        self._procedure_pool.shutdown(wait=False)

    close = leave

    def __enter__(self) -> SyncSession:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.leave()

    def _threaded_event_handler(
        self, handler: Callable[[Event], object]
    ) -> Callable[[Event], object]:
        return _in_thread(self._runner.loop, self._event_pool, handler)

    def _threaded_procedure(self, handler: ProcedureHandler) -> ProcedureHandler:
        return _procedure_in_thread(self._runner.loop, self._procedure_pool, handler)


class SyncClient:
    """The blocking twin of ``Client``: stays connected, restores and resumes; no ``await``.

    Takes ``Client``'s arguments. ``with SyncClient(...) as client`` (or ``start()``)
    blocks until the first join (``first_join_timeout``, default 30 s) and raises
    the fatal join error, if any. Handlers and ``on_gap`` run in one event thread,
    in stream order; procedures in a pool, as with ``SyncSession``.
    """

    def __init__(self, url: str, realm: str, *, procedure_threads: int = 8, **options: Any) -> None:
        self._runner = _LoopThread()
        self.client = Client(url, realm, **options)
        self._event_pool = concurrent.futures.ThreadPoolExecutor(
            1, thread_name_prefix="wamp-events"
        )
        self._procedure_pool = concurrent.futures.ThreadPoolExecutor(
            procedure_threads, thread_name_prefix="wamp-procedures"
        )

    @property
    def state(self) -> ClientState:
        """The client's ``ClientState``."""
        return self.client.state

    def start(self) -> None:
        """Start and block until joined (raises like ``Client.__aenter__``)."""
        self._runner.run(self.client.__aenter__())

    def stop(self) -> None:
        """Leave, stop reconnecting, stop the loop thread and the workers (idempotent)."""
        if not self._runner.loop.is_closed():
            try:
                self._runner.run(self.client.stop())
            finally:
                self._runner.stop()
        self._event_pool.shutdown(wait=False)
        self._procedure_pool.shutdown(wait=False)

    def __enter__(self) -> SyncClient:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def publish(
        self, topic: str, *args: Any, options: PublishOptions | None = None, **kwargs: Any
    ) -> int | None:
        """``Client.publish``, blocking."""
        return self._runner.run(self.client.publish(topic, *args, options=options, **kwargs))

    def call(
        self, procedure: str, *args: Any, options: CallOptions | None = None, **kwargs: Any
    ) -> CallResult:
        """``Client.call``, blocking."""
        return self._runner.run(self.client.call(procedure, *args, options=options, **kwargs))

    def subscribe(
        self,
        topic: str,
        handler: Callable[[Event], object],
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
        resume: bool = False,
        on_gap: Callable[[Gap], object] | None = None,
    ) -> ClientSubscription:
        """``Client.subscribe`` with a plain handler (and ``on_gap``) run in the event thread."""
        loop, pool = self._runner.loop, self._event_pool
        gap_handler: GapHandler | None = None if on_gap is None else _in_thread(loop, pool, on_gap)
        return self._runner.run(
            self.client.subscribe(
                topic,
                _in_thread(loop, pool, handler),
                match=match,
                get_retained=get_retained,
                resume=resume,
                on_gap=gap_handler,
            )
        )

    def recovered(self, subscription: ClientSubscription, timeout: float | None = None) -> bool:
        """Block until ``subscription`` is not recovering; return its ``complete`` flag."""
        return self._runner.run(subscription.recovered(), timeout)

    def unsubscribe(self, subscription: ClientSubscription) -> None:
        """Stop keeping ``subscription``."""
        self._runner.run(subscription.unsubscribe())

    def events(
        self,
        topic: str,
        *,
        match: MatchPolicy = "exact",
        get_retained: bool = False,
        maxsize: int = 1000,
        resume: bool = False,
        on_gap: Callable[[Gap], object] | None = None,
    ) -> SyncEventStream:
        """``Client.events`` as a blocking iterator, subscribed before it returns."""
        gap_handler = (
            None if on_gap is None else _in_thread(self._runner.loop, self._event_pool, on_gap)
        )
        stream = self.client.events(
            topic,
            match=match,
            get_retained=get_retained,
            maxsize=maxsize,
            resume=resume,
            on_gap=gap_handler,
        )
        self._runner.run(stream.start())
        return SyncEventStream(stream, self._runner)

    def register(
        self,
        procedure: str,
        handler: ProcedureHandler,
        *,
        match: MatchPolicy = "exact",
        invoke: InvokePolicy = "single",
        details_arg: str | None = None,
    ) -> ClientRegistration:
        """``Client.register`` with a plain function run in the procedure pool."""
        endpoint = _procedure_in_thread(self._runner.loop, self._procedure_pool, handler)
        return self._runner.run(
            self.client.register(
                procedure, endpoint, match=match, invoke=invoke, details_arg=details_arg
            )
        )


def _procedure_in_thread(
    loop: asyncio.AbstractEventLoop, pool: concurrent.futures.Executor, handler: ProcedureHandler
) -> ProcedureHandler:
    """An async procedure running ``handler`` in ``pool``."""

    @functools.wraps(handler)
    async def endpoint(*args: Any, **kwargs: Any) -> Any:
        return await loop.run_in_executor(pool, functools.partial(handler, *args, **kwargs))

    return endpoint


def _in_thread(
    loop: asyncio.AbstractEventLoop,
    pool: concurrent.futures.Executor,
    fn: Callable[[T], object],
) -> Callable[[T], Coroutine[Any, Any, None]]:
    """An async handler running ``fn(value)`` in ``pool`` (one thread: in arrival order)."""

    async def run(value: T) -> None:
        await loop.run_in_executor(pool, fn, value)

    return run


def connect(
    url: str,
    realm: str,
    *,
    serializer: str = "msgpack",
    auth: Authenticator | Sequence[Authenticator] | None = None,
    join_timeout: float | None = 10.0,
    **options: Any,
) -> SyncSession:
    """Connect and join, blocking; returns a ``SyncSession`` (use it with ``with``).

    Takes the same arguments as ``client_sdk.connect``.
    """
    runner = _LoopThread()
    try:
        session = runner.run(
            _open(
                url, realm, serializer=serializer, auth=auth, join_timeout=join_timeout, **options
            )
        )
    except BaseException:
        runner.stop()
        raise
    return SyncSession(session, runner)


async def _open(url: str, realm: str, **options: Any) -> Session:
    return await async_connect(url, realm, **options)
