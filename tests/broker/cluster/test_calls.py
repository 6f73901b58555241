"""Routed calls across broker nodes: results, errors, progress, cancel, timeout, policies."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

import client_sdk
from client_sdk import ApplicationError, CallOptions, CallResult
from tests.support.processes import BrokerProcess

from .conftest import autobahn_session, call_until, eventually

Connect = Callable[..., Awaitable[client_sdk.Session]]


async def test_call_reaches_callee_on_another_node_with_args_and_kwargs(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    callee = await connect(nodes[0].url)
    await callee.register("rpc.echo", lambda *a, **k: CallResult(list(a), k))
    caller = await connect(nodes[1].url)
    result = await call_until(caller, "rpc.echo", 1, b"\x01", x={"y": [1]})
    assert result.args == [1, b"\x01"] and result.kwargs == {"x": {"y": [1]}}


async def test_application_error_travels_back_across_nodes(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    callee = await connect(nodes[1].url)

    def fail() -> None:
        raise ApplicationError("com.example.oops", "bad", code=7)

    await callee.register("rpc.fail", fail)
    caller = await connect(nodes[2].url)
    await eventually(lambda: _registered(caller, "rpc.fail"), what="registration propagated")
    with pytest.raises(ApplicationError) as info:
        await caller.call("rpc.fail")
    assert info.value.uri == "com.example.oops"
    assert info.value.args == ("bad",) and info.value.kwargs == {"code": 7}


async def test_progressive_results_cross_nodes_in_order(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    callee = await connect(nodes[0].url)

    async def count(n: int) -> AsyncIterator[int]:
        for i in range(n):
            yield i

    await callee.register("rpc.count", count)
    caller = await connect(nodes[2].url)
    await call_until(caller, "rpc.count", 0)
    results = [r async for r in caller.call_progress("rpc.count", 5)]
    assert [r.args for r in results if r.progress] == [[0], [1], [2], [3], [4]]
    assert not results[-1].progress


async def test_cancel_interrupts_the_callee_on_another_node(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    callee = await connect(nodes[1].url)
    started = asyncio.Event()
    interrupted = asyncio.Event()

    async def slow() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    await callee.register("rpc.slow", slow)
    caller = await connect(nodes[0].url)
    await call_until(caller, "wamp.session.count")
    await eventually(lambda: _registered(caller, "rpc.slow"), what="registration propagated")
    task = asyncio.create_task(caller.call("rpc.slow"))
    await asyncio.wait_for(started.wait(), 5)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    await asyncio.wait_for(interrupted.wait(), 5)


async def _registered(session: client_sdk.Session, procedure: str) -> bool:
    result = await session.call("wamp.registration.match", procedure)
    return result.args[0] is not None


async def test_router_timeout_for_a_remote_callee(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    callee = await connect(nodes[2].url)
    interrupted = asyncio.Event()

    async def never() -> None:
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            interrupted.set()
            raise

    await callee.register("rpc.never", never)
    caller = await connect(nodes[1].url)
    await eventually(lambda: _registered(caller, "rpc.never"), what="registration propagated")
    with pytest.raises(ApplicationError) as info:
        await caller.call("rpc.never", options=CallOptions(timeout=0.3))
    assert info.value.uri == "wamp.error.timeout"
    await asyncio.wait_for(interrupted.wait(), 5)


async def test_single_registration_is_unique_across_nodes(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    first = await connect(nodes[0].url)
    await first.register("rpc.unique", lambda: "first")
    second = await connect(nodes[1].url)
    with pytest.raises(ApplicationError) as info:
        await second.register("rpc.unique", lambda: "second")
    assert info.value.uri == "wamp.error.procedure_already_exists"
    shared = await connect(nodes[2].url)
    with pytest.raises(ApplicationError) as info:
        await shared.register("rpc.unique", lambda: "third", invoke="roundrobin")
    assert info.value.uri == "wamp.error.procedure_already_exists"


async def test_shared_registration_round_robins_over_callees_of_all_nodes(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    for index, node in enumerate(nodes):
        session = await connect(node.url)
        await session.register("rpc.shared", lambda i=index: i, invoke="roundrobin")
    conflicting = await connect(nodes[1].url)
    with pytest.raises(ApplicationError) as info:
        await conflicting.register("rpc.shared", lambda: None, invoke="random")
    assert info.value.uri == "wamp.error.procedure_exists_with_different_invocation_policy"
    caller = await connect(nodes[0].url)

    async def three_callees() -> bool:
        result = await caller.call("wamp.registration.match", "rpc.shared")
        reg = result.args[0]
        if reg is None:
            return False
        callees = await caller.call("wamp.registration.count_callees", reg)
        return bool(callees.args[0] == 3)

    await eventually(three_callees, what="three callees known on node 0")
    served = {(await caller.call("rpc.shared")).args[0] for _ in range(6)}
    assert served == {0, 1, 2}


async def test_pattern_precedence_holds_across_nodes(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    exact = await connect(nodes[0].url)
    prefix = await connect(nodes[1].url)
    wildcard = await connect(nodes[2].url)
    await exact.register("prec.a.b", lambda: "exact")
    await prefix.register("prec.a", lambda: "prefix", match="prefix")
    await wildcard.register("prec..b", lambda: "wildcard", match="wildcard")
    caller = await connect(nodes[1].url)

    async def all_known() -> bool:
        found = [
            (await caller.call("wamp.registration.lookup", uri, {"match": m})).args[0]
            for uri, m in (("prec.a.b", "exact"), ("prec.a", "prefix"), ("prec..b", "wildcard"))
        ]
        return None not in found

    await eventually(all_known, what="three registrations known on node 1")
    assert (await caller.call("prec.a.b")).args == ["exact"]
    assert (await caller.call("prec.a.c")).args == ["prefix"]
    assert (await caller.call("prec.x.b")).args == ["wildcard"]


async def test_calls_from_one_caller_reach_a_remote_callee_in_order(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    seen: list[int] = []
    callee = await connect(nodes[2].url)
    await callee.register("rpc.order", lambda i: seen.append(i))
    caller = await connect(nodes[0].url)
    await eventually(lambda: _registered(caller, "rpc.order"), what="registration propagated")
    await asyncio.gather(*(caller.call("rpc.order", i) for i in range(200)))
    assert seen == list(range(200))


async def test_autobahn_callee_serves_sdk_caller_on_another_node(
    nodes: list[BrokerProcess], connect: Connect
) -> None:
    peer = await autobahn_session(nodes[0].url, "msgpack")
    await peer.register(lambda a, b: a * b, "rpc.autobahn.mul")
    caller = await connect(nodes[1].url, serializer="json")
    result = await call_until(caller, "rpc.autobahn.mul", 6, 7)
    assert result.args == [42]
    sdk_callee = await connect(nodes[2].url)
    await sdk_callee.register("rpc.sdk.hello", lambda name: f"hello {name}")
    answer: Any = None
    for _ in range(100):
        try:
            answer = await peer.call("rpc.sdk.hello", "autobahn")
            break
        except Exception as exc:  # not yet propagated: no_such_procedure
            if "no_such_procedure" not in str(getattr(exc, "error", exc)):
                raise
            await asyncio.sleep(0.05)
    assert answer == "hello autobahn"
    peer.leave()
