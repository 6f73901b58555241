"""Routed RPC through a real broker process: results, errors, progress, cancellation."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from client_sdk import (
    ApplicationError,
    CallOptions,
    CallResult,
    InvocationDetails,
    Session,
)
from client_sdk.rpc import INTERNAL_ERROR_MESSAGE
from protocol_spec import errors

OpenSession = Callable[..., Awaitable[Session]]


@pytest.mark.parametrize("serializer", ["json", "msgpack", "cbor"])
async def test_call_returns_args_and_kwargs(open_session: OpenSession, serializer: str) -> None:
    callee, caller = await open_session(serializer), await open_session()

    def describe(*args: Any, **kwargs: Any) -> CallResult:
        return CallResult(list(args), {"seen": sorted(kwargs)})

    await callee.register(f"com.sdk.describe.{serializer}", describe)
    result = await caller.call(f"com.sdk.describe.{serializer}", 1, b"\xff", b=2, a=1)
    assert result.args == [1, b"\xff"] and result.kwargs == {"seen": ["a", "b"]}


async def test_sync_and_async_handlers_return_single_values(open_session: OpenSession) -> None:
    callee, caller = await open_session(), await open_session()

    async def slow_add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    await callee.register("com.sdk.add", lambda a, b: a + b)
    await callee.register("com.sdk.slow_add", slow_add)
    await callee.register("com.sdk.nothing", lambda: None)
    assert (await caller.call("com.sdk.add", 2, 3)).value == 5
    assert (await caller.call("com.sdk.slow_add", 2, 3)).value == 5
    assert (await caller.call("com.sdk.nothing")).args == []


async def test_application_error_travels_with_uri_args_and_kwargs(
    open_session: OpenSession,
) -> None:
    callee, caller = await open_session(), await open_session()

    def refuse(amount: int) -> None:
        raise ApplicationError("com.sdk.error.too_much", "limit exceeded", amount, limit=10)

    await callee.register("com.sdk.refuse", refuse)
    with pytest.raises(ApplicationError) as info:
        await caller.call("com.sdk.refuse", 99)
    assert info.value.uri == "com.sdk.error.too_much"
    assert info.value.args == ("limit exceeded", 99)
    assert info.value.kwargs == {"limit": 10}


async def test_unexpected_exception_becomes_a_generic_runtime_error(
    open_session: OpenSession, caplog: pytest.LogCaptureFixture
) -> None:
    callee, caller = await open_session(), await open_session()

    def buggy() -> None:
        raise KeyError("database password is hunter2")

    await callee.register("com.sdk.buggy", buggy)
    with pytest.raises(ApplicationError) as info:
        await caller.call("com.sdk.buggy")
    assert info.value.uri == errors.RUNTIME_ERROR
    assert info.value.args == (INTERNAL_ERROR_MESSAGE,)
    assert "hunter2" not in repr(info.value)
    assert "hunter2" in caplog.text  # logged locally, with the traceback


async def test_wrong_arguments_are_an_invalid_argument_error(open_session: OpenSession) -> None:
    callee, caller = await open_session(), await open_session()
    await callee.register("com.sdk.two_args", lambda a, b: a + b)
    with pytest.raises(ApplicationError) as info:
        await caller.call("com.sdk.two_args", 1)
    assert info.value.uri == errors.INVALID_ARGUMENT


async def test_unknown_procedure_and_duplicate_registration(open_session: OpenSession) -> None:
    callee, caller = await open_session(), await open_session()
    with pytest.raises(ApplicationError) as info:
        await caller.call("com.sdk.nobody")
    assert info.value.uri == errors.NO_SUCH_PROCEDURE
    await callee.register("com.sdk.once", lambda: 1)
    with pytest.raises(ApplicationError) as dup:
        await caller.register("com.sdk.once", lambda: 2)
    assert dup.value.uri == errors.PROCEDURE_ALREADY_EXISTS


async def test_unregister_removes_the_procedure(open_session: OpenSession) -> None:
    callee, caller = await open_session(), await open_session()
    registration = await callee.register("com.sdk.temp", lambda: 1)
    assert (await caller.call("com.sdk.temp")).value == 1
    await registration.unregister()
    assert not registration.active
    with pytest.raises(ApplicationError) as info:
        await caller.call("com.sdk.temp")
    assert info.value.uri == errors.NO_SUCH_PROCEDURE


async def test_decorator_registration_is_confirmed_by_flush(open_session: OpenSession) -> None:
    callee, caller = await open_session(), await open_session()

    @callee.register("com.sdk.square")
    def square(x: int) -> int:
        return x * x

    await callee.flush()
    assert square(3) == 9  # the decorator returns the function unchanged
    assert (await caller.call("com.sdk.square", 4)).value == 16


async def countdown(n: int) -> AsyncIterator[int]:
    for i in range(n, 0, -1):
        yield i


async def test_async_generator_streams_progressive_results(open_session: OpenSession) -> None:
    callee, caller = await open_session(), await open_session()
    await callee.register("com.sdk.countdown", countdown)
    results = [r async for r in caller.call_progress("com.sdk.countdown", 3)]
    assert [(r.args, r.progress) for r in results] == [
        ([3], True),
        ([2], True),
        ([1], True),
        ([], False),
    ]
    # A caller that did not ask for progress gets the last item as the result.
    assert (await caller.call("com.sdk.countdown", 3)).args == [1]


async def test_details_progress_and_on_progress_callback(open_session: OpenSession) -> None:
    callee, caller = await open_session(), await open_session()

    async def work(steps: int, details: InvocationDetails) -> str:
        for i in range(steps):
            await details.progress(i, of=steps)
        return "done"

    await callee.register("com.sdk.work", work, details_arg="details")
    seen: list[CallResult] = []
    result = await caller.call("com.sdk.work", 2, options=CallOptions(on_progress=seen.append))
    assert result.value == "done"
    assert [(r.args, r.kwargs) for r in seen] == [([0], {"of": 2}), ([1], {"of": 2})]


async def test_invocation_details_identify_the_caller_and_procedure(
    open_session: OpenSession,
) -> None:
    callee, caller = await open_session(), await open_session()
    seen: asyncio.Future[InvocationDetails] = asyncio.get_running_loop().create_future()

    def who(details: InvocationDetails) -> None:
        seen.set_result(details)

    await callee.register("com.sdk.who", who, match="prefix", details_arg="details")
    await caller.call("com.sdk.who.am.i", options=CallOptions(disclose_me=True))
    details = await asyncio.wait_for(seen, 5)
    assert details.procedure == "com.sdk.who.am.i"
    assert details.caller == caller.id


async def test_cancelling_the_awaiting_task_interrupts_the_callee(
    open_session: OpenSession,
) -> None:
    callee, caller = await open_session(), await open_session()
    started = asyncio.Event()
    interrupted = asyncio.Event()

    async def forever() -> None:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            interrupted.set()
            raise

    await callee.register("com.sdk.forever", forever)
    call = asyncio.create_task(caller.call("com.sdk.forever"))
    await asyncio.wait_for(started.wait(), 5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await call
    await asyncio.wait_for(interrupted.wait(), 5)
    # The caller session stays usable.
    await callee.register("com.sdk.after_cancel", lambda: "ok")
    assert (await caller.call("com.sdk.after_cancel")).value == "ok"


async def test_asyncio_timeout_around_call_cancels_it(open_session: OpenSession) -> None:
    callee, caller = await open_session(), await open_session()
    interrupted = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            interrupted.set()

    await callee.register("com.sdk.stuck", stuck)
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(0.2):
            await caller.call("com.sdk.stuck")
    await asyncio.wait_for(interrupted.wait(), 5)


async def test_router_timeout_answers_timeout_and_interrupts(open_session: OpenSession) -> None:
    callee, caller = await open_session(), await open_session()
    interrupted = asyncio.Event()

    async def stuck() -> None:
        try:
            await asyncio.Event().wait()
        finally:
            interrupted.set()

    await callee.register("com.sdk.stuck2", stuck)
    with pytest.raises(ApplicationError) as info:
        await asyncio.wait_for(caller.call("com.sdk.stuck2", options=CallOptions(timeout=0.2)), 5)
    assert info.value.uri in (errors.TIMEOUT, errors.CANCELED)
    await asyncio.wait_for(interrupted.wait(), 5)


async def test_leaving_a_progressive_call_early_cancels_it(open_session: OpenSession) -> None:
    callee, caller = await open_session(), await open_session()
    interrupted = asyncio.Event()

    async def ticker() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
                await asyncio.sleep(0.01)
        finally:
            interrupted.set()

    await callee.register("com.sdk.ticker", ticker)
    async with caller.call_progress("com.sdk.ticker") as results:
        async for result in results:
            if result.value == 2:
                break
    await asyncio.wait_for(interrupted.wait(), 5)


async def test_shared_registration_round_robin(open_session: OpenSession) -> None:
    one, two, caller = await open_session(), await open_session(), await open_session()
    await one.register("com.sdk.rr", lambda: "one", invoke="roundrobin")
    await two.register("com.sdk.rr", lambda: "two", invoke="roundrobin")
    answers = {(await caller.call("com.sdk.rr")).value for _ in range(4)}
    assert answers == {"one", "two"}


async def test_many_concurrent_calls(open_session: OpenSession) -> None:
    callee, caller = await open_session(), await open_session()

    async def echo(x: int) -> int:
        await asyncio.sleep(0)
        return x

    await callee.register("com.sdk.echo", echo)
    results = await asyncio.gather(*(caller.call("com.sdk.echo", i) for i in range(200)))
    assert [r.value for r in results] == list(range(200))
