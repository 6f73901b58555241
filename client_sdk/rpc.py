"""Caller and callee roles: calls, progressive results, cancellation, registrations.

Caller side: every CALL has a pending entry with a future; RESULT with
``progress`` goes to the call's progress sink, the final RESULT or ERROR settles
the future. Cancelling the awaiting task sends CANCEL (``CallOptions.cancel_mode``,
``kill`` by default) and forgets the call. When the router does not announce
``call_timeout``, ``CallOptions.timeout`` is enforced here (CANCEL + ``wamp.error.timeout``).

Callee side: each INVOCATION runs in its own task (started in arrival order).
INTERRUPT cancels that task and answers ``wamp.error.canceled``. Async generator
(or plain generator) handlers stream: when the caller asked ``receive_progress``
each item is sent at once as a progressive YIELD and the generator's end sends a
final YIELD with no payload; otherwise only the last item is sent, as the final
result. Handlers that return normally can still send progress through
``InvocationDetails.progress``.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import protocol_spec as wamp
from protocol_spec import errors as wamp_errors

from .errors import ApplicationError, SessionClosed
from .port import SessionPort
from .values import (
    CallOptions,
    CallResult,
    CancelMode,
    InvocationDetails,
    InvokePolicy,
    MatchPolicy,
    handler_options,
)

__all__ = ["Callee", "Caller", "ProcedureHandler", "ProgressiveCall", "Registration"]

log = logging.getLogger(__name__)

ProcedureHandler = Callable[..., Any]
"""A procedure: sync or async function, or (async) generator function, taking the call's args."""

INTERNAL_ERROR_MESSAGE = "the procedure failed with an internal error"
_NOTHING: Any = object()


@dataclass(slots=True)
class _PendingCall:
    future: asyncio.Future[CallResult]
    on_progress: Callable[[CallResult], object] | None
    cancel_mode: CancelMode
    timer: asyncio.TimerHandle | None = None

    def settle(self, outcome: CallResult | BaseException) -> None:
        """Stop the client-side deadline and resolve the future (once)."""
        if self.timer is not None:
            self.timer.cancel()
        if self.future.done():
            return
        if isinstance(outcome, BaseException):
            self.future.set_exception(outcome)
        else:
            self.future.set_result(outcome)


class Caller:
    """The caller role of one session."""

    def __init__(self, session: SessionPort) -> None:
        self._session = session
        self._calls: dict[int, _PendingCall] = {}

    async def begin(
        self,
        procedure: str,
        args: list[Any],
        kwargs: dict[str, Any],
        options: CallOptions,
        on_progress: Callable[[CallResult], object] | None = None,
    ) -> tuple[int, asyncio.Future[CallResult]]:
        """Send CALL; return its request ID and the future of its final result."""
        session = self._session
        wire_options = options.to_dict()
        sink = on_progress or options.on_progress
        if sink is not None:
            wire_options["receive_progress"] = True
        loop = asyncio.get_running_loop()
        request = session.next_request()
        pending = _PendingCall(loop.create_future(), sink, options.cancel_mode)
        self._calls[request] = pending
        try:
            await session.send(wamp.Call(request, wire_options, procedure, args, kwargs))
        except BaseException:
            self._calls.pop(request, None)
            raise
        if options.timeout is not None and "call_timeout" not in session.router_features("dealer"):
            pending.timer = loop.call_later(options.timeout, self._expire, request)
        return request, pending.future

    async def call(
        self, procedure: str, args: list[Any], kwargs: dict[str, Any], options: CallOptions
    ) -> CallResult:
        """Call and wait for the final result; cancellation sends CANCEL."""
        request, future = await self.begin(procedure, args, kwargs, options)
        try:
            return await future
        except asyncio.CancelledError:
            self.cancel(request)
            raise

    def cancel(self, request: int, mode: CancelMode | None = None) -> bool:
        """Forget a pending call and send CANCEL for it; False if it already ended."""
        pending = self._calls.pop(request, None)
        if pending is None:
            return False
        if pending.timer is not None:
            pending.timer.cancel()
        if not pending.future.done():
            pending.future.cancel()
        self._send_cancel(request, mode or pending.cancel_mode)
        return True

    def _send_cancel(self, request: int, mode: CancelMode) -> None:
        session = self._session
        if session.is_open:
            session.spawn(
                _send_quietly(session, wamp.Cancel(request, {"mode": mode})), "wamp-cancel"
            )

    def _expire(self, request: int) -> None:
        pending = self._calls.pop(request, None)
        if pending is None:
            return
        pending.settle(
            ApplicationError(
                wamp_errors.TIMEOUT, "the call timed out (deadline enforced by the client)"
            )
        )
        self._send_cancel(request, "kill")

    def on_result(self, msg: wamp.Result) -> None:
        """RESULT: a progressive result for the sink, or the final one."""
        pending = self._calls.get(msg.request)
        if pending is None:
            log.debug("RESULT for unknown call %d", msg.request)
            return
        result = CallResult(
            msg.args or [], msg.kwargs or {}, msg.details, bool(msg.details.get("progress"))
        )
        if result.progress:
            if pending.on_progress is not None:
                try:
                    outcome = pending.on_progress(result)
                except Exception:
                    log.exception("progress handler failed")
                else:
                    if inspect.isawaitable(outcome):
                        self._session.spawn(_await_quietly(outcome), "wamp-progress")
            return
        del self._calls[msg.request]
        pending.settle(result)

    def on_error(self, request: int, error: ApplicationError) -> None:
        """ERROR for a CALL: fail the call with ``error``."""
        pending = self._calls.pop(request, None)
        if pending is None:
            log.debug("ERROR for unknown call %d", request)
            return
        pending.settle(error)

    def close(self, why: SessionClosed) -> None:
        """The session ended: fail every pending call with ``why``."""
        calls, self._calls = self._calls, {}
        for pending in calls.values():
            pending.settle(why)


async def _send_quietly(session: SessionPort, message: Any) -> None:
    try:
        await session.send(message)
    except SessionClosed:
        pass


async def _await_quietly(awaitable: Any) -> None:
    try:
        await awaitable
    except Exception:
        log.exception("progress handler failed")


_CANCELLED: Any = object()


class ProgressiveCall:
    """A call with progressive results: an async iterator of ``CallResult``.

    Yields each progressive result (``progress=True``), then the final result
    (``progress=False``), then stops; an ERROR is raised as ``ApplicationError``.
    The CALL goes out on ``async with`` entry or the first iteration. Cancelling the
    iterating task, calling ``cancel()`` or leaving the ``async with`` block before
    the final result sends CANCEL. Progressive results are buffered without bound
    until consumed (their rate is the callee's).
    """

    def __init__(
        self,
        caller: Caller,
        procedure: str,
        args: list[Any],
        kwargs: dict[str, Any],
        options: CallOptions,
    ) -> None:
        self.procedure = procedure
        self._caller = caller
        self._args = args
        self._kwargs = kwargs
        self._options = options
        self._queue: asyncio.Queue[Any] = asyncio.Queue()
        self._request: int | None = None
        self._started = False
        self._finished = False

    async def start(self) -> None:
        """Send the CALL now (idempotent)."""
        if self._started:
            return
        self._started = True
        request, future = await self._caller.begin(
            self.procedure, self._args, self._kwargs, self._options, on_progress=self._progress
        )
        self._request = request
        future.add_done_callback(self._done)

    def _progress(self, result: CallResult) -> None:
        self._queue.put_nowait(result)
        if self._options.on_progress is not None:
            self._options.on_progress(result)

    def _done(self, future: asyncio.Future[CallResult]) -> None:
        if future.cancelled():
            self._queue.put_nowait(_CANCELLED)
        else:
            self._queue.put_nowait(future.exception() or future.result())

    def __aiter__(self) -> AsyncIterator[CallResult]:
        return self

    async def __anext__(self) -> CallResult:
        if self._finished:
            raise StopAsyncIteration
        await self.start()
        try:
            item = await self._queue.get()
        except asyncio.CancelledError:
            self.cancel()
            raise
        if item is _CANCELLED:
            self._finished = True
            raise StopAsyncIteration
        if isinstance(item, BaseException):
            self._finished = True
            raise item
        if not item.progress:
            self._finished = True
        result: CallResult = item
        return result

    async def result(self) -> CallResult:
        """Consume the remaining results and return the final one."""
        final = CallResult()
        async for item in self:
            final = item
        return final

    def cancel(self, mode: CancelMode | None = None) -> bool:
        """Send CANCEL unless the call has ended; the iteration then stops."""
        if self._finished or self._request is None:
            self._finished = True
            return False
        self._finished = True
        return self._caller.cancel(self._request, mode)

    async def __aenter__(self) -> ProgressiveCall:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.cancel()


class Registration:
    """A procedure registered by this session; ``await reg.unregister()``."""

    def __init__(
        self,
        owner: Callee,
        id: int,
        procedure: str,
        handler: ProcedureHandler,
        match: str,
        invoke: str,
        details_arg: str | None,
    ) -> None:
        self.id = id
        self.procedure = procedure
        self.handler = handler
        self.match = match
        self.invoke = invoke
        self.details_arg = details_arg
        self.active = True
        self._owner = owner
        try:
            self._signature: inspect.Signature | None = inspect.signature(handler)
        except (TypeError, ValueError):
            self._signature = None

    async def unregister(self) -> None:
        """Remove the registration (idempotent)."""
        if self.active:
            await self._owner.unregister(self)

    def check_arguments(self, args: list[Any], kwargs: dict[str, Any]) -> str | None:
        """Return why ``args``/``kwargs`` do not fit the handler's signature, or None."""
        if self._signature is None:
            return None
        try:
            self._signature.bind(*args, **kwargs)
        except TypeError as exc:
            return f"{self.procedure}: {exc}"
        return None

    def __repr__(self) -> str:
        return f"<Registration {self.id} {self.match} {self.procedure!r} active={self.active}>"


class Callee:
    """The callee role of one session."""

    def __init__(self, session: SessionPort) -> None:
        self._session = session
        self._by_id: dict[int, Registration] = {}
        self._running: dict[int, asyncio.Task[Any]] = {}
        self._interrupted: set[int] = set()

    async def register(
        self,
        procedure: str,
        handler: ProcedureHandler,
        match: MatchPolicy,
        invoke: InvokePolicy,
        details_arg: str | None,
    ) -> Registration:
        """Send REGISTER and install the handler when REGISTERED arrives."""
        session = self._session
        options = handler_options(handler, match)
        if invoke != "single":
            options["invoke"] = invoke

        def install(reply: wamp.Registered) -> Registration:
            reg = Registration(
                self, reply.registration, procedure, handler, match, invoke, details_arg
            )
            self._by_id[reg.id] = reg
            return reg

        result: Registration = await session.request(
            wamp.Register(session.next_request(), options, procedure), install
        )
        return result

    async def unregister(self, reg: Registration) -> None:
        """Send UNREGISTER for ``reg``."""
        reg.active = False
        if self._by_id.pop(reg.id, None) is None:
            return
        session = self._session
        if session.is_open:
            await session.request(wamp.Unregister(session.next_request(), reg.id))

    def on_invocation(self, msg: wamp.Invocation) -> None:
        """INVOCATION: run the handler in a task of its own."""
        reg = self._by_id.get(msg.registration)
        if reg is None:
            self._session.spawn(
                self._error(
                    msg.request, wamp_errors.NO_SUCH_REGISTRATION, ["no such registration"]
                ),
                "wamp-invocation-error",
            )
            return
        request = msg.request
        task = self._session.spawn(self._run(reg, msg), f"wamp-invocation-{reg.procedure}")
        self._running[request] = task

        def forget(_: asyncio.Task[Any]) -> None:
            self._running.pop(request, None)
            self._interrupted.discard(request)  # an INTERRUPT the handler swallowed

        task.add_done_callback(forget)

    def on_interrupt(self, msg: wamp.Interrupt) -> None:
        """INTERRUPT: cancel the invocation's task (it answers ``wamp.error.canceled``)."""
        task = self._running.get(msg.request)
        if task is not None and not task.done():
            self._interrupted.add(msg.request)
            task.cancel()

    def on_revoked(self, details: dict[str, Any]) -> None:
        """The router removed a registration (UNREGISTERED with request 0)."""
        reg_id = details.get("registration")
        reg = self._by_id.pop(reg_id, None) if isinstance(reg_id, int) else None
        if reg is not None:
            reg.active = False
        log.info("router revoked registration %s (%s)", reg_id, details.get("reason"))

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for running invocations to answer."""
        running = set(self._running.values())
        current = asyncio.current_task()
        if current is not None:
            running.discard(current)
        if running:
            await asyncio.wait(running, timeout=grace)

    def close(self) -> None:
        """The session ended: stop running invocations, deactivate registrations."""
        for reg in self._by_id.values():
            reg.active = False
        self._by_id.clear()
        for task in list(self._running.values()):
            task.cancel()
        self._running.clear()

    async def _run(self, reg: Registration, msg: wamp.Invocation) -> None:
        request = msg.request
        try:
            await self._serve(reg, msg)
        except asyncio.CancelledError:
            if request not in self._interrupted:
                raise
            self._interrupted.discard(request)
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            await self._error(request, wamp_errors.CANCELED, ["the call was canceled"])
        except ApplicationError as exc:
            await self._error(request, exc.uri, list(exc.args), exc.kwargs)
        except Exception:
            log.exception("procedure %s (invocation %d) failed", reg.procedure, request)
            await self._error(request, wamp_errors.RUNTIME_ERROR, [INTERNAL_ERROR_MESSAGE])

    async def _serve(self, reg: Registration, msg: wamp.Invocation) -> None:
        args = list(msg.args or [])
        kwargs = dict(msg.kwargs or {})
        request = msg.request

        async def send_progress(p_args: list[Any], p_kwargs: dict[str, Any]) -> None:
            await self._session.send(wamp.Yield(request, {"progress": True}, p_args, p_kwargs))

        details = InvocationDetails(request, reg.id, msg.details, send_progress)
        if reg.details_arg:
            kwargs[reg.details_arg] = details
        problem = reg.check_arguments(args, kwargs)
        if problem is not None:
            await self._error(request, wamp_errors.INVALID_ARGUMENT, [problem])
            return
        result = reg.handler(*args, **kwargs)
        if inspect.isawaitable(result):
            result = await result
        if inspect.isasyncgen(result) or inspect.isgenerator(result):
            result = await self._stream(request, result, details.receive_progress)
        await self._yield(request, {}, result)

    async def _stream(self, request: int, items: Any, progress: bool) -> Any:
        """Send each item as a progressive YIELD (or keep the last); return the final value."""
        last: Any = None
        if inspect.isasyncgen(items):
            async for item in items:
                last = await self._item(request, item, progress)
        else:
            for item in items:
                last = await self._item(request, item, progress)
        return None if progress else last

    async def _item(self, request: int, item: Any, progress: bool) -> Any:
        if progress:
            await self._yield(request, {"progress": True}, item)
        return item

    async def _yield(self, request: int, options: dict[str, Any], value: Any) -> None:
        if isinstance(value, CallResult):
            args, kwargs = value.args, value.kwargs
        else:
            args, kwargs = ([] if value is None else [value]), {}
        try:
            await self._session.send(wamp.Yield(request, options, args, kwargs))
        except SessionClosed:
            log.debug("session closed before YIELD %d could be sent", request)
        except (TypeError, ValueError, OverflowError) as exc:
            log.error("result of invocation %d cannot be serialized: %s", request, exc)
            raise ApplicationError(
                wamp_errors.RUNTIME_ERROR,
                "the procedure returned a value that cannot be serialized",
            ) from None

    async def _error(
        self, request: int, uri: str, args: list[Any], kwargs: dict[str, Any] | None = None
    ) -> None:
        message = wamp.Error(wamp.MessageType.INVOCATION, request, {}, uri, args, kwargs or {})
        try:
            await self._session.send(message)
        except SessionClosed:
            log.debug("session closed before ERROR %d could be sent", request)
        except (TypeError, ValueError, OverflowError):
            log.error("error payload of invocation %d cannot be serialized", request)
            await self._error(request, uri, ["the error payload cannot be serialized"])
