"""Advanced Profile RPC with Autobahn|Python (and raw JSON where Autobahn has no option).

Cancel and timeout are checked from both sides: the caller's ERROR (also read from
the raw frames Autobahn decoded) and the callee's INTERRUPT (the frame, and the
handler's coroutine being cancelled). Nothing sleeps to synchronise: handlers block
on futures that only the test (or an INTERRUPT) resolves.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from autobahn.wamp.exception import ApplicationError
from autobahn.wamp.types import CallDetails, CallOptions, RegisterOptions

from tests.support.processes import BrokerProcess

from ._autobahn import Client, ClientPool
from ._raw import CALL, ERROR, INTERRUPT, INVOCATION, RESULT, YIELD, RawClient

TIMEOUT = 5


def details_opts(**options: Any) -> RegisterOptions:
    return RegisterOptions(details_arg="details", **options)


class Blocking:
    """A callee endpoint that blocks until released, and notices an INTERRUPT.

    ``invoked`` resolves with the call's details when the INVOCATION arrives;
    ``interrupted`` resolves when Autobahn cancels the handler (it does so on
    INTERRUPT); ``release`` lets the handler return normally.
    """

    def __init__(self, on_interrupt: Exception | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.invoked: asyncio.Future[CallDetails] = loop.create_future()
        self.interrupted: asyncio.Future[None] = loop.create_future()
        self.release: asyncio.Future[str] = loop.create_future()
        self.on_interrupt = on_interrupt

    async def __call__(self, *args: Any, details: CallDetails) -> str:
        self.invoked.set_result(details)
        try:
            return await self.release
        except asyncio.CancelledError:
            self.interrupted.set_result(None)
            if self.on_interrupt is not None:
                raise self.on_interrupt from None
            raise


def is_interrupt(mode: str) -> Any:
    return lambda f: f[0] == INTERRUPT and f[2].get("mode") == mode


# --- pattern_based_registration ----------------------------------------------------------
async def test_prefix_registration_receives_calls_with_the_concrete_procedure(
    clients: ClientPool,
) -> None:
    callee = await clients.connect("cbor")
    caller = await clients.connect("json")

    def handler(*args: Any, details: CallDetails) -> list[Any]:
        return [details.procedure, *args]

    await callee.register(handler, "com.interop.rpcprefix.", options=details_opts(match="prefix"))
    assert await caller.call("com.interop.rpcprefix.a.b", 1) == ["com.interop.rpcprefix.a.b", 1]
    assert await caller.call("com.interop.rpcprefix.c") == ["com.interop.rpcprefix.c"]
    with pytest.raises(ApplicationError) as info:
        await caller.call("com.interop.rpcother.c")
    assert info.value.error == "wamp.error.no_such_procedure"


async def test_wildcard_registration_receives_calls_with_the_concrete_procedure(
    clients: ClientPool,
) -> None:
    callee = await clients.connect("msgpack")
    caller = await clients.connect("cbor")

    def handler(details: CallDetails) -> str:
        return str(details.procedure)

    await callee.register(
        handler, "com.interop.rpcwild..get", options=details_opts(match="wildcard")
    )
    assert await caller.call("com.interop.rpcwild.item.get") == "com.interop.rpcwild.item.get"
    with pytest.raises(ApplicationError) as info:
        await caller.call("com.interop.rpcwild.a.b.get")
    assert info.value.error == "wamp.error.no_such_procedure"


async def test_registration_precedence_is_exact_then_longest_prefix_then_wildcard(
    clients: ClientPool,
) -> None:
    callees = {name: await clients.connect("json") for name in ("exact", "p1", "p2", "wild")}
    caller = await clients.connect("msgpack")
    await callees["exact"].register(lambda: "exact", "com.interop.prec.a.b")
    await callees["p1"].register(
        lambda: "short prefix", "com.interop.prec.", options=RegisterOptions(match="prefix")
    )
    await callees["p2"].register(
        lambda: "long prefix", "com.interop.prec.a.", options=RegisterOptions(match="prefix")
    )
    await callees["wild"].register(
        lambda: "wildcard", "com.interop..a.b", options=RegisterOptions(match="wildcard")
    )

    assert await caller.call("com.interop.prec.a.b") == "exact"
    assert await caller.call("com.interop.prec.a.c") == "long prefix"
    assert await caller.call("com.interop.prec.z.b") == "short prefix"
    assert await caller.call("com.interop.other.a.b") == "wildcard"

    await callees["exact"].leave()
    await asyncio.wait_for(callees["exact"].disconnected, TIMEOUT)
    assert await caller.call("com.interop.prec.a.b") == "long prefix"


async def test_wildcard_precedence_prefers_the_pattern_concrete_earliest_from_the_left(
    clients: ClientPool,
) -> None:
    callee = await clients.connect("cbor")
    caller = await clients.connect("json")
    for pattern in ("com.interop.wprec..x", "com.interop..y.x"):
        await callee.register(
            lambda p=pattern: p, pattern, options=RegisterOptions(match="wildcard")
        )
    assert await caller.call("com.interop.wprec.y.x") == "com.interop.wprec..x"


# --- shared_registration -----------------------------------------------------------------
async def _shared(clients: ClientPool, procedure: str, invoke: str, names: list[str]) -> Client:
    for i, name in enumerate(names):
        callee = await clients.connect(["json", "msgpack", "cbor"][i % 3])
        await callee.register(lambda n=name: n, procedure, options=RegisterOptions(invoke=invoke))
    return await clients.connect("json")


async def test_roundrobin_alternates_between_callees(clients: ClientPool) -> None:
    caller = await _shared(clients, "com.interop.shared.rr", "roundrobin", ["a", "b", "c"])
    results = [await caller.call("com.interop.shared.rr") for _ in range(6)]
    assert sorted(results[:3]) == ["a", "b", "c"]
    assert results[3:] == results[:3]


async def test_first_always_picks_the_earliest_registered_callee(clients: ClientPool) -> None:
    caller = await _shared(clients, "com.interop.shared.first", "first", ["a", "b", "c"])
    assert [await caller.call("com.interop.shared.first") for _ in range(4)] == ["a"] * 4


async def test_last_always_picks_the_latest_registered_callee(clients: ClientPool) -> None:
    caller = await _shared(clients, "com.interop.shared.last", "last", ["a", "b", "c"])
    assert [await caller.call("com.interop.shared.last") for _ in range(4)] == ["c"] * 4


async def test_random_uses_only_registered_callees(clients: ClientPool) -> None:
    caller = await _shared(clients, "com.interop.shared.random", "random", ["a", "b"])
    other = await clients.connect("cbor")
    await other.register(lambda: "unrelated", "com.interop.shared.random2")
    results = Counter([await caller.call("com.interop.shared.random") for _ in range(40)])
    assert set(results) <= {"a", "b"}
    assert sum(results.values()) == 40


async def test_shared_registration_survives_a_callee_leaving(clients: ClientPool) -> None:
    callee_a = await clients.connect("json")
    callee_b = await clients.connect("cbor")
    caller = await clients.connect("msgpack")
    opts = RegisterOptions(invoke="roundrobin")
    await callee_a.register(lambda: "a", "com.interop.shared.leave", options=opts)
    await callee_b.register(lambda: "b", "com.interop.shared.leave", options=opts)
    left: asyncio.Queue[int] = asyncio.Queue()
    await caller.subscribe(lambda sid, *rest: left.put_nowait(sid), "wamp.session.on_leave")

    callee_a.drop()
    while await asyncio.wait_for(left.get(), TIMEOUT) != callee_a.id:
        pass

    assert [await caller.call("com.interop.shared.leave") for _ in range(3)] == ["b"] * 3


async def test_single_registration_conflicts_with_any_second_callee(clients: ClientPool) -> None:
    first = await clients.connect("json")
    second = await clients.connect("msgpack")
    await first.register(lambda: 1, "com.interop.shared.single")
    for invoke in (None, "single", "roundrobin"):
        with pytest.raises(ApplicationError) as info:
            await second.register(
                lambda: 2, "com.interop.shared.single", options=RegisterOptions(invoke=invoke)
            )
        assert info.value.error == "wamp.error.procedure_already_exists", invoke


async def test_shared_registration_with_a_different_policy_is_refused(
    clients: ClientPool,
) -> None:
    first = await clients.connect("json")
    second = await clients.connect("cbor")
    await first.register(
        lambda: 1, "com.interop.shared.mismatch", options=RegisterOptions(invoke="roundrobin")
    )
    with pytest.raises(ApplicationError) as info:
        await second.register(
            lambda: 2, "com.interop.shared.mismatch", options=RegisterOptions(invoke="random")
        )
    assert info.value.error == "wamp.error.procedure_exists_with_different_invocation_policy"


# --- caller_identification ---------------------------------------------------------------
async def test_disclose_me_puts_caller_identity_in_invocation_details(
    broker: BrokerProcess, clients: ClientPool
) -> None:
    callee = await clients.connect("msgpack")
    seen: list[CallDetails] = []

    def handler(details: CallDetails) -> str:
        seen.append(details)
        return "ok"

    await callee.register(handler, "com.interop.callerid", options=details_opts())
    async with await RawClient.open(broker.url) as raw:
        await raw.hello(authid="raw-caller")
        disclosed = await raw.call("com.interop.callerid", disclose_me=True)
        assert (await raw.answer(disclosed))[0] == RESULT
        hidden = await raw.call("com.interop.callerid")
        assert (await raw.answer(hidden))[0] == RESULT

    assert (seen[0].caller, seen[0].caller_authid, seen[0].caller_authrole) == (
        raw.session_id,
        "raw-caller",
        "anonymous",
    )
    assert (seen[1].caller, seen[1].caller_authid, seen[1].caller_authrole) == (None, None, None)


# --- progressive_call_results ------------------------------------------------------------
@pytest.mark.parametrize(("caller_ser", "callee_ser"), [("json", "cbor"), ("msgpack", "json")])
async def test_progressive_results_reach_an_autobahn_caller_before_the_final_result(
    clients: ClientPool, caller_ser: str, callee_ser: str
) -> None:
    callee = await clients.connect(callee_ser)
    caller = await clients.connect(caller_ser)

    def count_to(n: int, details: CallDetails) -> str:
        assert details.progress is not None, "receive_progress was not passed on"
        for i in range(n):
            details.progress(i, step=b"\x00" * i)
        return "done"

    await callee.register(count_to, "com.interop.progress", options=details_opts())
    progress: list[Any] = []
    result = await caller.call(
        "com.interop.progress",
        3,
        options=CallOptions(on_progress=lambda *a, **kw: progress.append((a, kw))),
    )
    assert progress == [((i,), {"step": b"\x00" * i}) for i in range(3)]
    assert result == "done"
    results = caller.frames.of_type(RESULT)
    assert [f[2].get("progress", False) for f in results[-4:]] == [True, True, True, False]


async def test_progressive_yields_are_dropped_for_a_caller_that_did_not_ask(
    broker: BrokerProcess, clients: ClientPool
) -> None:
    caller = await clients.connect("cbor")
    async with await RawClient.open(broker.url) as raw:
        await raw.hello()
        await raw.register("com.interop.progress.raw")
        call = asyncio.ensure_future(caller.call("com.interop.progress.raw"))
        invocation = await raw.expect(lambda m: m[0] == INVOCATION)
        assert "receive_progress" not in invocation[3]
        await raw.send([YIELD, invocation[1], {"progress": True}, ["partial"]])
        await raw.send([YIELD, invocation[1], {}, ["final"]])
        assert await asyncio.wait_for(call, TIMEOUT) == "final"
    assert [f for f in caller.frames.of_type(RESULT) if f[2].get("progress")] == []


# --- call_canceling ----------------------------------------------------------------------
async def test_autobahn_cancel_gives_caller_canceled_and_interrupts_callee(
    clients: ClientPool,
) -> None:
    callee = await clients.connect("msgpack")
    caller = await clients.connect("json")
    blocking = Blocking()
    await callee.register(blocking, "com.interop.cancel.ab", options=details_opts())
    call = caller.call("com.interop.cancel.ab")
    await asyncio.wait_for(blocking.invoked, TIMEOUT)

    call.cancel()  # Autobahn sends CANCEL (no mode: the router's default killnowait)

    error = await caller.frames.wait_for(lambda f: f[0] == ERROR and f[1] == CALL)
    assert error[4] == "wamp.error.canceled"
    await asyncio.wait_for(blocking.interrupted, TIMEOUT)
    interrupt = await callee.frames.wait_for(lambda f: f[0] == INTERRUPT)
    assert interrupt[2]["mode"] == "killnowait"
    assert await caller.call("wamp.session.count") >= 2  # both sessions still work


async def test_cancel_skip_answers_the_caller_and_never_interrupts_the_callee(
    broker: BrokerProcess, clients: ClientPool
) -> None:
    callee = await clients.connect("cbor")
    blocking = Blocking()
    await callee.register(blocking, "com.interop.cancel.skip", options=details_opts())
    await callee.register(lambda: "pong", "com.interop.cancel.skip_ping")
    async with await RawClient.open(broker.url) as raw:
        await raw.hello()
        request = await raw.call("com.interop.cancel.skip")
        await asyncio.wait_for(blocking.invoked, TIMEOUT)
        await raw.cancel(request, mode="skip")
        error = await raw.answer(request)
        assert error[0] == ERROR and error[4] == "wamp.error.canceled"

        # The callee finishes anyway; its answer is dropped. A later call to the same
        # callee proves no INTERRUPT was queued before it, and no stray RESULT.
        blocking.release.set_result("too late")
        ping = await raw.call("com.interop.cancel.skip_ping")
        assert await raw.next_message() == [RESULT, ping, {}, ["pong"]]

    assert not blocking.interrupted.done()
    assert callee.frames.of_type(INTERRUPT) == []


async def test_cancel_kill_interrupts_the_callee_and_relays_its_error(
    broker: BrokerProcess, clients: ClientPool
) -> None:
    callee = await clients.connect("json")
    blocking = Blocking(ApplicationError("wamp.error.canceled", "stopped by callee"))
    await callee.register(blocking, "com.interop.cancel.kill", options=details_opts())
    async with await RawClient.open(broker.url) as raw:
        await raw.hello()
        request = await raw.call("com.interop.cancel.kill")
        await asyncio.wait_for(blocking.invoked, TIMEOUT)
        await raw.cancel(request, mode="kill")

        await callee.frames.wait_for(is_interrupt("kill"))
        await asyncio.wait_for(blocking.interrupted, TIMEOUT)
        error = await raw.answer(request)
        assert error[0] == ERROR and error[4] == "wamp.error.canceled"
        assert error[5] == ["stopped by callee"]  # the callee's ERROR, not the router's


async def test_cancel_kill_relays_a_result_the_callee_sent_anyway(broker: BrokerProcess) -> None:
    async with (
        await RawClient.open(broker.url) as raw_callee,
        await RawClient.open(broker.url) as raw,
    ):
        await raw_callee.hello()
        await raw_callee.register("com.interop.cancel.kill_result")
        await raw.hello()
        request = await raw.call("com.interop.cancel.kill_result")
        invocation = await raw_callee.expect(lambda m: m[0] == INVOCATION)
        await raw.cancel(request, mode="kill")
        interrupt = await raw_callee.expect(lambda m: m[0] == INTERRUPT)
        assert interrupt[1:] == [invocation[1], {"mode": "kill"}]
        await raw_callee.send([YIELD, invocation[1], {}, ["finished first"]])
        assert await raw.answer(request) == [RESULT, request, {}, ["finished first"]]


async def test_cancel_killnowait_answers_at_once_and_interrupts_the_callee(
    broker: BrokerProcess, clients: ClientPool
) -> None:
    callee = await clients.connect("msgpack")
    blocking = Blocking()
    await callee.register(blocking, "com.interop.cancel.knw", options=details_opts())
    async with await RawClient.open(broker.url) as raw:
        await raw.hello()
        request = await raw.call("com.interop.cancel.knw")
        await asyncio.wait_for(blocking.invoked, TIMEOUT)
        await raw.cancel(request, mode="killnowait")

        error = await raw.answer(request)
        assert error[0] == ERROR and error[4] == "wamp.error.canceled"
        await callee.frames.wait_for(is_interrupt("killnowait"))
        await asyncio.wait_for(blocking.interrupted, TIMEOUT)


# --- call_timeout ------------------------------------------------------------------------
@pytest.mark.parametrize(("caller_ser", "callee_ser"), [("json", "msgpack"), ("cbor", "json")])
async def test_call_timeout_errors_the_caller_and_interrupts_the_callee(
    clients: ClientPool, caller_ser: str, callee_ser: str
) -> None:
    callee = await clients.connect(callee_ser)
    caller = await clients.connect(caller_ser)
    blocking = Blocking()
    await callee.register(blocking, "com.interop.timeout", options=details_opts())

    # Autobahn passes CallOptions.timeout through unchanged; WAMP reads it as milliseconds.
    with pytest.raises(ApplicationError) as info:
        await caller.call("com.interop.timeout", options=CallOptions(timeout=200))

    assert info.value.error == "wamp.error.timeout"
    await asyncio.wait_for(blocking.interrupted, TIMEOUT)
    interrupt = await callee.frames.wait_for(lambda f: f[0] == INTERRUPT)
    assert interrupt[2]["mode"] in ("kill", "killnowait")
    invocation = callee.frames.of_type(INVOCATION)[-1]
    assert invocation[3].get("timeout") == 200


async def test_caller_dropping_its_connection_interrupts_the_callee(clients: ClientPool) -> None:
    callee = await clients.connect("cbor")
    caller = await clients.connect("msgpack")
    blocking = Blocking()
    await callee.register(blocking, "com.interop.cancel.caller_gone", options=details_opts())
    call = caller.call("com.interop.cancel.caller_gone")
    await asyncio.wait_for(blocking.invoked, TIMEOUT)

    caller.drop()

    await callee.frames.wait_for(is_interrupt("killnowait"))
    await asyncio.wait_for(blocking.interrupted, TIMEOUT)
    call.cancel()
