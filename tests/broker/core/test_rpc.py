"""The dealer role: registrations, routing, results, errors, cancel, timeout, cleanup."""

from __future__ import annotations

import pytest

from protocol_spec import errors
from protocol_spec.messages import (
    Call,
    Cancel,
    Error,
    Interrupt,
    Invocation,
    MessageType,
    Register,
    Registered,
    Result,
    Unregister,
    Unregistered,
    Yield,
)

from .harness import Client, World


def register(client: Client, procedure: str, request: int = 1, **options: object) -> int:
    client.send(Register(request, dict(options), procedure))
    return int(client.take_one(Registered).registration)


def test_call_is_invoked_and_the_result_returned(world: World) -> None:
    callee, caller = world.client(), world.client()
    reg_id = register(callee, "com.add")
    caller.send(Call(5, {}, "com.add", [2, 3], {"b": b"\x01"}))
    invocation = callee.take_one(Invocation)
    assert (invocation.registration, invocation.args, invocation.kwargs) == (
        reg_id,
        [2, 3],
        {"b": b"\x01"},
    )
    assert invocation.details == {}
    callee.send(Yield(invocation.request, {}, [5], {"note": "ok"}))
    result = caller.take_one(Result)
    assert (result.request, result.args, result.kwargs, result.details) == (
        5,
        [5],
        {"note": "ok"},
        {},
    )
    assert caller.session.calls == {} and callee.session.invocations == {}


def test_invocation_request_ids_are_sequential_per_callee(world: World) -> None:
    callee, caller = world.client(), world.client()
    register(callee, "com.p")
    for request in range(1, 4):
        caller.send(Call(request, {}, "com.p"))
    assert [m.request for m in callee.take()] == [1, 2, 3]


def test_callee_error_reaches_the_caller_with_uri_args_kwargs(world: World) -> None:
    callee, caller = world.client(), world.client()
    register(callee, "com.fail")
    caller.send(Call(1, {}, "com.fail"))
    invocation = callee.take_one(Invocation)
    callee.send(
        Error(MessageType.INVOCATION, invocation.request, {}, "com.app.oops", [1], {"k": 2})
    )
    error = caller.take_one(Error)
    assert (error.request_type, error.request, error.error, error.args, error.kwargs) == (
        MessageType.CALL,
        1,
        "com.app.oops",
        [1],
        {"k": 2},
    )


def test_unknown_procedure_and_invalid_uri(world: World) -> None:
    caller = world.client()
    caller.send(Call(1, {}, "com.nobody"))
    assert caller.take_one(Error).error == errors.NO_SUCH_PROCEDURE
    caller.send(Call(2, {}, "com..bad"))
    assert caller.take_one(Error).error == errors.INVALID_URI
    caller.send(Call(3, {}, "wamp.no.such.meta"))
    assert caller.take_one(Error).error == errors.NO_SUCH_PROCEDURE


def test_single_registration_is_unique(world: World) -> None:
    a, b = world.client(), world.client()
    register(a, "com.p")
    b.send(Register(1, {}, "com.p"))
    assert b.take_one(Error).error == errors.PROCEDURE_ALREADY_EXISTS
    a.send(Register(2, {}, "com.p"))
    assert a.take_one(Error).error == errors.PROCEDURE_ALREADY_EXISTS


def test_register_rejects_reserved_and_invalid_uris_and_options(world: World) -> None:
    a = world.client()
    cases = [
        ({}, "wamp.session.count", errors.INVALID_URI),
        ({}, "com..x", errors.INVALID_URI),
        ({"match": "regex"}, "com.x", errors.INVALID_ARGUMENT),
        ({"invoke": "sometimes"}, "com.x", errors.INVALID_ARGUMENT),
    ]
    for request, (options, uri, expected) in enumerate(cases, start=1):
        a.send(Register(request, options, uri))
        assert a.take_one(Error).error == expected


def test_unregister(world: World) -> None:
    a, b = world.client(), world.client()
    reg_id = register(a, "com.p")
    b.send(Unregister(1, reg_id))
    assert b.take_one(Error).error == errors.NO_SUCH_REGISTRATION
    a.send(Unregister(2, reg_id))
    assert a.take_one(Unregistered).request == 2
    b.send(Call(1, {}, "com.p"))
    assert b.take_one(Error).error == errors.NO_SUCH_PROCEDURE


@pytest.mark.parametrize(
    ("policy", "expected"),
    [("roundrobin", [1, 2, 0, 1]), ("first", [0, 0, 0, 0]), ("last", [2, 2, 2, 2])],
)
def test_shared_registration_policies(world: World, policy: str, expected: list[int]) -> None:
    callees = [world.client() for _ in range(3)]
    ids = {register(c, "com.shared", invoke=policy) for c in callees}
    assert len(ids) == 1
    caller = world.client()
    picked = []
    for request in range(1, 5):
        caller.send(Call(request, {}, "com.shared"))
        picked.extend(i for i, c in enumerate(callees) if c.take())
    assert picked == expected


def test_random_policy_only_picks_registered_callees(world: World) -> None:
    callees = [world.client() for _ in range(3)]
    for c in callees:
        register(c, "com.shared", invoke="random")
    caller = world.client()
    for request in range(1, 31):
        caller.send(Call(request, {}, "com.shared"))
    counts = [len(c.take()) for c in callees]
    assert sum(counts) == 30


def test_shared_registration_conflicts(world: World) -> None:
    a, b, c = world.client(), world.client(), world.client()
    register(a, "com.shared", invoke="roundrobin")
    b.send(Register(1, {"invoke": "random"}, "com.shared"))
    assert b.take_one(Error).error == errors.PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT
    c.send(Register(1, {}, "com.shared"))
    assert c.take_one(Error).error == errors.PROCEDURE_EXISTS_INVOCATION_POLICY_CONFLICT


def test_pattern_registration_precedence_and_procedure_detail(world: World) -> None:
    exact, prefix, longer, wild = (world.client() for _ in range(4))
    register(exact, "com.app.user.get")
    register(prefix, "com.app", match="prefix")
    register(longer, "com.app.user", match="prefix")
    register(wild, "com..user.get", match="wildcard")
    caller = world.client()
    expectations = [
        ("com.app.user.get", exact, None),
        ("com.app.user.set", longer, "com.app.user.set"),
        ("com.app.order", prefix, "com.app.order"),
        ("com.web.user.get", wild, "com.web.user.get"),
    ]
    for request, (uri, winner, detail) in enumerate(expectations, start=1):
        caller.send(Call(request, {}, uri))
        invocation = winner.take_one(Invocation)
        assert invocation.details.get("procedure") == detail


def test_caller_identification(world: World) -> None:
    callee, caller = world.client(), world.client(authid="carol")
    register(callee, "com.p")
    caller.send(Call(1, {"disclose_me": True}, "com.p"))
    details = callee.take_one(Invocation).details
    assert details == {
        "caller": caller.session.id,
        "caller_authid": "carol",
        "caller_authrole": "anonymous",
    }
    register(callee, "com.q", request=2, disclose_caller=True)
    caller.send(Call(2, {}, "com.q"))
    assert callee.take_one(Invocation).details["caller"] == caller.session.id


def test_progressive_results(world: World) -> None:
    callee, caller = world.client(), world.client()
    register(callee, "com.p")
    caller.send(Call(1, {"receive_progress": True}, "com.p"))
    invocation = callee.take_one(Invocation)
    assert invocation.details["receive_progress"] is True
    for n in range(3):
        callee.send(Yield(invocation.request, {"progress": True}, [n]))
    callee.send(Yield(invocation.request, {}, ["done"]))
    results = caller.take()
    assert [(r.args, r.details.get("progress", False)) for r in results] == [
        ([0], True),
        ([1], True),
        ([2], True),
        (["done"], False),
    ]


def test_progress_is_dropped_for_a_caller_that_did_not_ask(world: World) -> None:
    callee, caller = world.client(), world.client()
    register(callee, "com.p")
    caller.send(Call(1, {}, "com.p"))
    invocation = callee.take_one(Invocation)
    assert "receive_progress" not in invocation.details
    callee.send(Yield(invocation.request, {"progress": True}, [0]))
    assert caller.take() == []
    callee.send(Yield(invocation.request, {}, ["final"]))
    assert caller.take_one(Result).args == ["final"]


def test_callee_leaving_fails_its_pending_calls_at_once(world: World) -> None:
    callee, caller = world.client(), world.client()
    register(callee, "com.p")
    caller.send(Call(1, {}, "com.p"))
    caller.send(Call(2, {}, "com.p"))
    callee.take()
    callee.leave_abruptly()
    errors_seen = caller.take()
    assert [(e.request, e.error) for e in errors_seen] == [
        (1, errors.CANCELED),
        (2, errors.CANCELED),
    ]
    assert caller.session.calls == {}


def test_caller_leaving_interrupts_the_callee(world: World) -> None:
    callee, caller = world.client(), world.client()
    register(callee, "com.p")
    caller.send(Call(1, {}, "com.p"))
    invocation = callee.take_one(Invocation)
    caller.leave_abruptly()
    interrupt = callee.take_one(Interrupt)
    assert (interrupt.request, interrupt.options["mode"]) == (invocation.request, "killnowait")
    callee.send(Yield(invocation.request, {}, ["late"]))  # ignored, no crash
    assert callee.session.invocations == {}


@pytest.mark.parametrize("mode", ["killnowait", "skip"])
def test_cancel_answers_the_caller_at_once(world: World, mode: str) -> None:
    callee, caller = world.client(), world.client()
    register(callee, "com.p")
    caller.send(Call(1, {}, "com.p"))
    invocation = callee.take_one(Invocation)
    caller.send(Cancel(1, {"mode": mode}))
    assert caller.take_one(Error).error == errors.CANCELED
    if mode == "skip":
        assert callee.take() == []
    else:
        assert callee.take_one(Interrupt).options["mode"] == "killnowait"
    callee.send(Yield(invocation.request, {}, ["late"]))
    assert caller.take() == []  # the late result is dropped


def test_cancel_kill_waits_for_the_callee_answer(world: World) -> None:
    callee, caller = world.client(), world.client()
    register(callee, "com.p")
    caller.send(Call(1, {}, "com.p"))
    invocation = callee.take_one(Invocation)
    caller.send(Cancel(1, {"mode": "kill"}))
    assert callee.take_one(Interrupt).options["mode"] == "kill"
    assert caller.take() == []
    callee.send(Error(MessageType.INVOCATION, invocation.request, {}, errors.CANCELED))
    assert caller.take_one(Error).error == errors.CANCELED


def test_cancel_falls_back_to_skip_for_callees_without_call_canceling(world: World) -> None:
    callee = world.client(roles={"callee": {"features": {}}})
    caller = world.client()
    register(callee, "com.p")
    caller.send(Call(1, {}, "com.p"))
    callee.take()
    caller.send(Cancel(1, {"mode": "kill"}))
    assert caller.take_one(Error).error == errors.CANCELED
    assert callee.take() == []


def test_router_enforces_call_timeout(world: World) -> None:
    callee, caller = world.client(), world.client()
    register(callee, "com.slow")
    caller.send(Call(1, {"timeout": 1500}, "com.slow"))
    invocation = callee.take_one(Invocation)
    assert invocation.details["timeout"] == 1500
    world.clock.advance(1.4)
    assert caller.take() == []
    world.clock.advance(0.2)
    assert caller.take_one(Error).error == errors.TIMEOUT
    interrupt = callee.take_one(Interrupt)
    assert interrupt.request == invocation.request
    assert interrupt.options["reason"] == errors.TIMEOUT


def test_answered_call_cancels_its_timer(world: World) -> None:
    callee, caller = world.client(), world.client()
    register(callee, "com.p")
    caller.send(Call(1, {"timeout": 1000}, "com.p"))
    invocation = callee.take_one(Invocation)
    callee.send(Yield(invocation.request, {}))
    caller.take()
    assert world.clock.pending == 0


def test_bad_timeout_and_duplicate_request_ids(world: World) -> None:
    callee, caller = world.client(), world.client()
    register(callee, "com.p")
    caller.send(Call(1, {"timeout": "soon"}, "com.p"))
    assert caller.take_one(Error).error == errors.INVALID_ARGUMENT
    caller.send(Call(2, {}, "com.p"))
    caller.send(Call(2, {}, "com.p"))
    assert caller.take_one(Error).error == errors.INVALID_ARGUMENT
