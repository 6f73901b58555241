"""The mirror applies typed envelopes to the core (no Redis: the sans-I/O router directly).

A remote callee's answers reach the caller as RESULT/ERROR straight from the inbox
envelope, and what the dealer sends a remote callee leaves as a typed envelope.
"""

from __future__ import annotations

from broker.cluster.mirror import Mirror
from protocol_spec import cluster as wire
from protocol_spec.messages import Call, Error, Result
from tests.broker.core.harness import World

CALLEE = wire.CalleeRecord(
    node="b",
    realm="realm1",
    uri="com.remote.add",
    match="exact",
    invoke="single",
    session=4242,
    features={"progressive_call_results": True, "call_canceling": True},
    reg=777,
    seq=1,
)


def _world() -> tuple[World, Mirror, list[tuple[bytes, wire.InboxMessage]]]:
    world = World()
    shipped: list[tuple[bytes, wire.InboxMessage]] = []
    mirror = Mirror(
        world.router, "a", lambda channel, data: shipped.append((channel, wire.decode_inbox(data)))
    )
    mirror.control(wire.CalleeAdded("b", CALLEE))
    return world, mirror, shipped


def test_a_call_to_a_remote_callee_leaves_as_an_invocation_envelope_to_its_node() -> None:
    world, _mirror, shipped = _world()
    caller = world.client()
    caller.send(Call(1, {}, "com.remote.add", [1, 2]))
    [(channel, msg)] = shipped
    assert channel == b"wamp:{ctl}:inbox:b"
    assert isinstance(msg, wire.InboxInvocation)
    assert (msg.node, msg.realm, msg.session, msg.registration) == ("a", "realm1", 4242, 777)
    assert msg.args == [1, 2]
    assert wire.decode_inbox(msg.pack()) == msg


def test_remote_progress_then_result_reach_the_caller_as_results() -> None:
    world, mirror, shipped = _world()
    caller = world.client()
    caller.send(Call(1, {"receive_progress": True}, "com.remote.add", [1, 2]))
    key = shipped[0][1].request
    mirror.inbox(wire.InboxResult("b", "realm1", 4242, key, {"progress": True}, ["half"], None))
    mirror.inbox(wire.InboxResult("b", "realm1", 4242, key, {}, [3], {"k": 1}))
    first, final = caller.take()
    assert first == Result(1, {"progress": True}, ["half"], None)
    assert final == Result(1, {}, [3], {"k": 1})


def test_a_remote_error_reaches_the_caller_with_its_uri_and_payload() -> None:
    world, mirror, shipped = _world()
    caller = world.client()
    caller.send(Call(1, {}, "com.remote.add", []))
    key = shipped[0][1].request
    mirror.inbox(wire.InboxError("b", "realm1", 4242, key, {"x": 1}, "com.app.oops", ["no"], None))
    error = caller.take_one(Error)
    assert (error.request, error.error, error.args, error.details) == (
        1,
        "com.app.oops",
        ["no"],
        {"x": 1},
    )


def test_an_answer_for_an_unknown_callee_is_ignored() -> None:
    world, mirror, shipped = _world()
    caller = world.client()
    caller.send(Call(1, {}, "com.remote.add", []))
    key = shipped[0][1].request
    mirror.inbox(wire.InboxResult("c", "realm1", 4242, key, {}, [1], None))  # another node
    mirror.inbox(wire.InboxResult("b", "nowhere", 4242, key, {}, [1], None))  # no such realm
    assert caller.take() == []
