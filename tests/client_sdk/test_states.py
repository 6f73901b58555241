"""The session and client life cycles follow their transition tables, and only them."""

from __future__ import annotations

import asyncio
import enum
import itertools
from collections.abc import Mapping

import pytest

import protocol_spec as wamp
from client_sdk import JoinError
from client_sdk.session import Session
from client_sdk.states import (
    CLIENT_TRANSITIONS,
    SESSION_TRANSITIONS,
    ClientEvent,
    ClientState,
    InvalidTransition,
    SessionEvent,
    SessionState,
    StateMachine,
)
from protocol_spec import errors

from .test_session_offline import ScriptedTransport, joined_session

TABLES = [
    pytest.param(SESSION_TRANSITIONS, SessionState, SessionEvent, id="session"),
    pytest.param(CLIENT_TRANSITIONS, ClientState, ClientEvent, id="client"),
]


@pytest.mark.parametrize(("table", "states", "events"), TABLES)
def test_every_listed_transition_moves_to_its_target(
    table: Mapping[tuple[enum.Enum, enum.Enum], enum.Enum],
    states: type[enum.Enum],
    events: type[enum.Enum],
) -> None:
    for (state, event), target in table.items():
        machine = StateMachine("m", table, state)
        assert machine.can(event)
        assert machine.fire(event) is target
        assert machine.state is target


@pytest.mark.parametrize(("table", "states", "events"), TABLES)
def test_an_unlisted_transition_raises_and_keeps_the_state(
    table: Mapping[tuple[enum.Enum, enum.Enum], enum.Enum],
    states: type[enum.Enum],
    events: type[enum.Enum],
) -> None:
    unlisted = [pair for pair in itertools.product(states, events) if pair not in table]
    assert unlisted  # each table forbids something
    for state, event in unlisted:
        machine = StateMachine("thing", table, state)
        assert not machine.can(event)
        with pytest.raises(InvalidTransition) as info:
            machine.fire(event)
        assert str(info.value) == (
            f"thing: event {event.value!r} is not allowed in state {state.value!r}"
        )
        assert info.value.state is state and info.value.event is event
        assert machine.state is state


def test_every_state_is_reachable_from_the_initial_one() -> None:
    for table, initial, states in [
        (SESSION_TRANSITIONS, SessionState.NEW, SessionState),
        (CLIENT_TRANSITIONS, ClientState.STOPPED, ClientState),
    ]:
        reached = {initial}
        frontier = [initial]
        while frontier:
            here = frontier.pop()
            for (state, _), target in table.items():
                if state is here and target not in reached:
                    reached.add(target)
                    frontier.append(target)
        assert reached == set(states)


def test_a_closed_session_accepts_no_event() -> None:
    assert not any(state is SessionState.CLOSED for state, _ in SESSION_TRANSITIONS)


async def test_joining_twice_is_an_invalid_transition() -> None:
    transport = ScriptedTransport()
    session = await joined_session(transport)
    with pytest.raises(RuntimeError, match="'join' is not allowed in state 'joined'"):
        await session.join()
    assert session.is_open
    assert "state=joined" in repr(session)


async def test_failed_join_ends_closed_and_cannot_join_again() -> None:
    transport = ScriptedTransport()
    session = Session(transport, "realm1")
    transport.feed(wamp.Abort({}, errors.NO_SUCH_REALM))
    with pytest.raises(JoinError):
        await asyncio.wait_for(session.join(), 2)
    assert "state=closed" in repr(session)
    with pytest.raises(InvalidTransition):
        await session.join()


async def test_leave_goes_through_closing_to_closed() -> None:
    transport = ScriptedTransport()
    session = await joined_session(transport)
    leave = asyncio.create_task(session.leave())
    goodbye = await transport.next_sent()
    assert isinstance(goodbye, wamp.Goodbye)
    assert "state=closing" in repr(session) and not session.is_open
    transport.feed(wamp.Goodbye({}, errors.CLOSE_GOODBYE_AND_OUT))
    await asyncio.wait_for(leave, 2)
    assert "state=closed" in repr(session)
    await asyncio.wait_for(session.leave(), 2)  # leaving a closed session does nothing
