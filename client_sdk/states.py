"""Life cycles of ``Session`` and ``Client`` as transition tables (h11 style).

Each life cycle is an enum of states, an enum of events and one table
``(state, event) -> next state`` that you can read (and draw). A ``StateMachine``
moves along the table; an event the table does not list for the current state is a
bug in this SDK, never the router's fault, and raises ``InvalidTransition``.

Session::

    NEW ──join──► JOINING ──welcome──► JOINED ──leave──► CLOSING
                     │                    │                  │
                join_failed              end                end
                     ▼                    ▼                  │
                   CLOSED ◄───────────────┴──────────────────┘

Client::

    STOPPED ──connect──► CONNECTING ──joined──► JOINED
                           │    ▲                  │
                         wait   connect           wait
                           ▼    │                  │
                          WAITING ◄────────────────┘

    any state ──stop──► STOPPED
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Mapping
from typing import Generic, TypeVar

__all__ = [
    "CLIENT_TRANSITIONS",
    "SESSION_TRANSITIONS",
    "ClientEvent",
    "ClientState",
    "InvalidTransition",
    "SessionEvent",
    "SessionState",
    "StateMachine",
]

log = logging.getLogger(__name__)

S = TypeVar("S", bound=enum.Enum)
E = TypeVar("E", bound=enum.Enum)


class InvalidTransition(RuntimeError):
    """An event arrived in a state whose row of the table does not list it."""

    def __init__(self, name: str, state: enum.Enum, event: enum.Enum) -> None:
        super().__init__(f"{name}: event {event.value!r} is not allowed in state {state.value!r}")
        self.state = state
        self.event = event


class StateMachine(Generic[S, E]):
    """The current state of one life cycle, moved only along its transition table."""

    def __init__(self, name: str, table: Mapping[tuple[S, E], S], initial: S) -> None:
        self.name = name
        self._table = table
        self._state = initial

    @property
    def state(self) -> S:
        """The current state."""
        return self._state

    def can(self, event: E) -> bool:
        """True if ``event`` is allowed in the current state."""
        return (self._state, event) in self._table

    def fire(self, event: E) -> S:
        """Move along the table and return the new state.

        Raises ``InvalidTransition`` (a ``RuntimeError``) if the table has no entry
        for the current state and ``event``; the state is then unchanged.
        """
        new = self._table.get((self._state, event))
        if new is None:
            raise InvalidTransition(self.name, self._state, event)
        if new is not self._state:
            log.debug("%s: %s -(%s)-> %s", self.name, self._state.value, event.value, new.value)
            self._state = new
        return new


class SessionState(enum.Enum):
    """Where a ``Session`` is in its life cycle."""

    NEW = "new"
    JOINING = "joining"
    JOINED = "joined"
    CLOSING = "closing"
    CLOSED = "closed"


class SessionEvent(enum.Enum):
    """What moves a ``Session`` along ``SESSION_TRANSITIONS``."""

    JOIN = "join"
    """``join()`` sends HELLO."""
    WELCOME = "welcome"
    """The router accepted the session."""
    JOIN_FAILED = "join_failed"
    """ABORT, a protocol violation, a lost transport or a cancellation while joining."""
    LEAVE = "leave"
    """``leave()`` sends GOODBYE."""
    END = "end"
    """GOODBYE answered or received, ABORT, transport lost, protocol violation."""


SESSION_TRANSITIONS: Mapping[tuple[SessionState, SessionEvent], SessionState] = {
    (SessionState.NEW, SessionEvent.JOIN): SessionState.JOINING,
    (SessionState.JOINING, SessionEvent.WELCOME): SessionState.JOINED,
    (SessionState.JOINING, SessionEvent.JOIN_FAILED): SessionState.CLOSED,
    (SessionState.JOINED, SessionEvent.LEAVE): SessionState.CLOSING,
    (SessionState.JOINED, SessionEvent.END): SessionState.CLOSED,
    (SessionState.CLOSING, SessionEvent.END): SessionState.CLOSED,
}
"""The session's life cycle: ``(state, event) -> next state``."""


class ClientState(enum.Enum):
    """Where a ``Client`` is in its life cycle."""

    STOPPED = "stopped"
    CONNECTING = "connecting"
    JOINED = "joined"
    WAITING = "waiting"


class ClientEvent(enum.Enum):
    """What moves a ``Client`` along ``CLIENT_TRANSITIONS``."""

    CONNECT = "connect"
    """An attempt starts: open the transport and join."""
    JOINED = "joined"
    """The session joined and what the client keeps was restored."""
    WAIT = "wait"
    """The attempt failed or the session ended: wait for the backoff delay."""
    STOP = "stop"
    """``stop()``, a fatal join error, or ``max_attempts`` reached."""


CLIENT_TRANSITIONS: Mapping[tuple[ClientState, ClientEvent], ClientState] = {
    (ClientState.STOPPED, ClientEvent.CONNECT): ClientState.CONNECTING,
    (ClientState.WAITING, ClientEvent.CONNECT): ClientState.CONNECTING,
    (ClientState.CONNECTING, ClientEvent.JOINED): ClientState.JOINED,
    (ClientState.CONNECTING, ClientEvent.WAIT): ClientState.WAITING,
    (ClientState.JOINED, ClientEvent.WAIT): ClientState.WAITING,
    **{(state, ClientEvent.STOP): ClientState.STOPPED for state in ClientState},
}
"""The client's life cycle: ``(state, event) -> next state``."""
